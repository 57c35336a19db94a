#!/usr/bin/env bash
# Ensure the tests' kubelet credential provider plugin exists and print the directory that holds it:
# test-credential-provider, from the wrapper module hack/go/test-credential-provider (k8s.io/kubelet's
# credentialprovider/v1 types), a static binary the cache Pod's init container copies in the one-node cluster.
#
#   dir=$(hack/test-credential-provider-bin.sh | tail -n1)     # -> $dir/test-credential-provider
#
# The LAST line of stdout is the directory; all progress goes to stderr.
#
# Cached in ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/test-credential-provider/ with a stamp
# (the hash of the module and the recipe); when it matches, the script prints the directory without touching Go.
# The module is copied to a temporary directory where `go mod tidy` writes go.sum, so nothing is written into the
# repository. Modules come from Go's module cache, else from the Go module proxy.
#
# Environment:
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

log() { printf 'test-credential-provider-bin: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="${script_dir}/go/test-credential-provider"
[[ -f "${module}/go.mod" && -f "${module}/main.go" ]] || die "wrapper module ${module} (go.mod + main.go) not found"

cache_root="${REGISTRY_CACHE_BIN_CACHE:-${HOME}/.cache/registry-cache/bin}"
out="${cache_root}/test-credential-provider"
binaries=(test-credential-provider)
recipe="v1 CGO_ENABLED=0 -trimpath -s -w"

stamp_of() {
  { cat "${module}/go.mod" "${module}/main.go"; printf '%s\n' "${recipe}"; } | sha256sum | cut -d' ' -f1
}

# shellcheck source=lib/bincache.sh
source "${script_dir}/lib/bincache.sh"
bincache_print_if_cached
bincache_setup_go
bincache_lock

build_one() {
  local name="$1" tmp t0=${SECONDS}
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  cp "${module}/go.mod" "${module}/main.go" "${tmp}/"
  log "building ${name} (go mod tidy, go build) ..."
  (cd "${tmp}" && "${GO}" mod tidy >&2 && "${GO}" build -trimpath -ldflags "-s -w" -o "${tmp}/${name}.bin" .) >&2
  bincache_publish "${tmp}/${name}.bin" "${name}" "${t0}"
}

bincache_build_missing
