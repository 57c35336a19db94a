#!/usr/bin/env bash
# Ensure promtool (Prometheus' rule and config checker) exists and print the path of the binary.
#
#   promtool=$(hack/promtool-bin.sh | tail -n1)     # -> .../promtool-v0.316.0/promtool
#
# The LAST line of stdout is the binary's path; all progress goes to stderr.
#
# Built with `go install github.com/prometheus/prometheus/cmd/promtool@<version>` (module mode, straight from
# the Go module proxy; Prometheus' go.mod has no replace directives) with this machine's Go toolchain
# (GOTOOLCHAIN=local) into a temporary GOBIN, then moved into
#   ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/promtool-<version>/promtool
# with the build tags remove_all_sd,enable_kubernetes_sd: of the service discoveries only Kubernetes' (what
# manifests/monitoring/prometheus.yml uses), which keeps the cloud SDKs out of the build. A stamp file records
# what it was built from; when it matches, the script prints the path without touching Go. Concurrent runs are
# serialised with flock(1) when available (hack/lib/bincache.sh).
#
# Environment:
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

# Pinned. Prometheus v3.16.0 is the Go module version v0.316.0; it needs Go >= 1.26.7 (its go.mod).
PROMETHEUS_VERSION=v0.316.0
BUILD_TAGS=remove_all_sd,enable_kubernetes_sd

log() { printf 'promtool-bin: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

cache_root="${REGISTRY_CACHE_BIN_CACHE:-${HOME}/.cache/registry-cache/bin}"
out="${cache_root}/promtool-${PROMETHEUS_VERSION}"
pkg="github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}"

# Bump when the build recipe below changes in a way that should force a rebuild.
recipe="v1 CGO_ENABLED=0 -trimpath -s -w tags=${BUILD_TAGS}"

binaries=(promtool)
stamp_of() { printf '%s %s\n' "${pkg}" "${recipe}"; }

# shellcheck source=lib/bincache.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/bincache.sh"

# bincache prints the directory; this script prints the binary.
print_bin() { printf '%s\n' "${out}/promtool"; }
bincache_print_if_cached() { if bincache_all_up_to_date; then print_bin; exit 0; fi; }
bincache_print_if_cached
bincache_setup_go
bincache_lock  # (exits printing the path if another run built it meanwhile)

build_one() { # binary name
  local name="$1" tmp ldflags t0
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  # As Prometheus' promu stamps it (`promtool --version`).
  ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION}"
  ldflags+=" -X github.com/prometheus/common/version.Branch=release"
  log "building ${pkg} (tags ${BUILD_TAGS}) with $("${GO}" env GOVERSION) ..."
  t0=${SECONDS}
  # Run outside any module so that `go install pkg@version` uses Prometheus' own go.mod.
  (cd "${tmp}" && GOBIN="${tmp}/bin" "${GO}" install -trimpath -tags "${BUILD_TAGS}" -ldflags="${ldflags}" \
    "${pkg}" >&2) || die "building promtool failed (see the go output above)"
  [[ -x "${tmp}/bin/promtool" ]] || die "go install did not produce ${tmp}/bin/promtool"
  "${tmp}/bin/promtool" --version >/dev/null 2>&1 || die "built promtool does not run"
  bincache_publish "${tmp}/bin/promtool" "${name}" "${t0}"
}

bincache_build_missing >/dev/null
print_bin
