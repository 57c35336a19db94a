#!/usr/bin/env bash
# Ensure the distribution registry (3.x, what Gardener's registry-cache ships) and crane
# (go-containerregistry) exist and print the directory that holds them.
#
#   dir=$(hack/registry-bins.sh | tail -n1)     # -> $dir/registry, $dir/crane
#
# The LAST line of stdout is the directory; all progress goes to stderr.
#
# Both are built with `go install <pkg>@<version>` (module mode, straight from the Go module proxy,
# nothing vendored, no wrapper module needed: neither main module has replace directives) with this
# machine's Go toolchain (GOTOOLCHAIN=local) into a temporary GOBIN, then moved into
#   ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/registry-<distribution version>/
# A stamp file per binary records what it was built from (package, version, recipe); when every stamp
# matches, the script prints the directory without touching Go (well under a second).
# A first build takes about a minute or two on 2 cores; later builds reuse Go's module and build caches.
#
# Concurrent runs are serialised with flock(1) when available; binaries are renamed into place
# atomically, so a reader never sees a half-written file.
#
# Environment:
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

# Pinned versions. distribution v3.1.1 is the image Gardener's registry-cache extension runs
# (registry:3.1.1 pinned by digest; DEFAULT_IMAGE in extension/constants.py).
DISTRIBUTION_VERSION=v3.1.1
CRANE_VERSION=v0.22.1

log() { printf 'registry-bins: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

cache_root="${REGISTRY_CACHE_BIN_CACHE:-${HOME}/.cache/registry-cache/bin}"
out="${cache_root}/registry-${DISTRIBUTION_VERSION}"

# Bump when the build recipe below changes in a way that should force a rebuild.
recipe="v1 CGO_ENABLED=0 -trimpath -s -w"

pkg_of() {
  case "$1" in
    registry) printf '%s' "github.com/distribution/distribution/v3/cmd/registry@${DISTRIBUTION_VERSION}" ;;
    crane) printf '%s' "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}" ;;
  esac
}

binaries=(registry crane)

stamp_of() { printf '%s %s\n' "$(pkg_of "$1")" "${recipe}"; }

# shellcheck source=lib/bincache.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/bincache.sh"
bincache_print_if_cached
bincache_setup_go
bincache_lock

build_one() { # binary name
  local name="$1" tmp pkg ldflags t0
  pkg="$(pkg_of "${name}")"
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  ldflags="-s -w"
  case "${name}" in
    registry)
      # As distribution's Makefile stamps it (`registry --version`).
      ldflags+=" -X github.com/distribution/distribution/v3/version.version=${DISTRIBUTION_VERSION}"
      ldflags+=" -X github.com/distribution/distribution/v3/version.mainpkg=github.com/distribution/distribution/v3"
      ;;
    crane)
      # crane reads its version from the build info of `go install pkg@version` by itself.
      ;;
  esac
  log "building ${pkg} with $("${GO}" env GOVERSION) ..."
  t0=${SECONDS}
  # Run outside any module so that `go install pkg@version` uses the pinned module's own go.mod.
  (cd "${tmp}" && GOBIN="${tmp}/bin" "${GO}" install -trimpath -ldflags="${ldflags}" "${pkg}" >&2) \
    || die "building ${name} failed (see the go output above)"
  [[ -x "${tmp}/bin/${name}" ]] || die "go install did not produce ${tmp}/bin/${name}"

  # Smoke test before publishing the binary.
  case "${name}" in
    registry) "${tmp}/bin/registry" --version >/dev/null 2>&1 || die "built registry does not run" ;;
    crane) "${tmp}/bin/crane" version >/dev/null 2>&1 || die "built crane does not run" ;;
  esac

  bincache_publish "${tmp}/bin/${name}" "${name}" "${t0}"
}

bincache_build_missing
