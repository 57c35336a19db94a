#!/usr/bin/env bash
# Ensure helm v3 exists and print the path of the binary.
#
#   helm=$(hack/helm-bin.sh | tail -n1)     # -> .../helm-v3.22.0/helm
#
# The LAST line of stdout is the binary's path; all progress goes to stderr.
#
# Built with `go install helm.sh/helm/v3/cmd/helm@<version>` (module mode, straight from the Go module
# proxy; helm's go.mod has no replace directives) with this machine's Go toolchain (GOTOOLCHAIN=local)
# into a temporary GOBIN, then moved into
#   ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/helm-<version>/helm
# A stamp file records what it was built from; when it matches, the script prints the path without
# touching Go. Concurrent runs are serialised with flock(1) when available (hack/lib/bincache.sh).
#
# Environment:
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

# Pinned. helm v3.22.0 needs Go >= 1.26.0 (its go.mod). Its Makefile derives the default Kubernetes version
# of `helm template`/`helm lint` (.Capabilities.KubeVersion, deprecation checks) from the client-go in its
# go.mod (v0.37.0 -> 1.37); without these ldflags helm would assume 1.20.
HELM_VERSION=v3.22.0
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=37

log() { printf 'helm-bin: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

cache_root="${REGISTRY_CACHE_BIN_CACHE:-${HOME}/.cache/registry-cache/bin}"
out="${cache_root}/helm-${HELM_VERSION}"
pkg="helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"

# Bump when the build recipe below changes in a way that should force a rebuild.
recipe="v1 CGO_ENABLED=0 -trimpath -s -w version-ldflags k8s-${HELM_K8S_MAJOR}.${HELM_K8S_MINOR}"

binaries=(helm)
stamp_of() { printf '%s %s\n' "${pkg}" "${recipe}"; }

# shellcheck source=lib/bincache.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/bincache.sh"

# bincache prints the directory; this script prints the binary.
print_bin() { printf '%s\n' "${out}/helm"; }
bincache_print_if_cached() { if bincache_all_up_to_date; then print_bin; exit 0; fi; }
bincache_print_if_cached
bincache_setup_go
bincache_lock  # (exits printing the path if another run built it meanwhile)

build_one() { # binary name
  local name="$1" tmp ldflags t0
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  # As helm's Makefile stamps it (`helm version`); without it helm reports v3.x-dev style defaults.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local p
  for p in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/${p}.k8sVersionMajor=${HELM_K8S_MAJOR}"
    ldflags+=" -X helm.sh/helm/v3/${p}.k8sVersionMinor=${HELM_K8S_MINOR}"
  done
  log "building ${pkg} with $("${GO}" env GOVERSION) ..."
  t0=${SECONDS}
  # Run outside any module so that `go install pkg@version` uses helm's own go.mod.
  (cd "${tmp}" && GOBIN="${tmp}/bin" "${GO}" install -trimpath -ldflags="${ldflags}" "${pkg}" >&2) \
    || die "building helm failed (see the go output above)"
  [[ -x "${tmp}/bin/helm" ]] || die "go install did not produce ${tmp}/bin/helm"
  "${tmp}/bin/helm" version --short >/dev/null 2>&1 || die "built helm does not run"
  bincache_publish "${tmp}/bin/helm" "${name}" "${t0}"
}

bincache_build_missing >/dev/null
print_bin
