#!/usr/bin/env bash
# Ensure containerd 2.x, its ctr and its runc shim (built from their Go module) exist and print the directory that
# holds them.
#
#   dir=$(hack/containerd-bins.sh | tail -n1)     # -> $dir/containerd, $dir/ctr, $dir/containerd-shim-runc-v2
#
# The LAST line of stdout is the directory; all progress goes to stderr.
#
# containerd 2.1 and later read `dial_timeout` per host in hosts.toml; Debian's containerd (1.6) does not.
# The failover test (tests/e2e/test_failover.py) measures both. Built with
# `go install github.com/containerd/containerd/v2/cmd/{containerd,ctr}@<version>` (module mode, straight
# from the Go module proxy, nothing vendored, no replace directives) with CGO_ENABLED=0: no btrfs or
# devmapper snapshotters, which the tests disable anyway (they unpack with the native snapshotter). Into
#   ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/containerd-<version>/
# with a stamp per binary; when both stamps match, the script prints the directory without touching Go.
# A first build takes about 5 minutes on 2 cores (most of it downloading and compiling the modules).
#
# Environment:
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   CONTAINERD2_VERSION       the version to build (default below)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

CONTAINERD2_VERSION="${CONTAINERD2_VERSION:-v2.2.9}"

log() { printf 'containerd-bins: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac
[[ "${CONTAINERD2_VERSION}" =~ ^v2\.[0-9]+\.[0-9]+$ ]] || die "CONTAINERD2_VERSION must be v2.X.Y, got ${CONTAINERD2_VERSION}"

cache_root="${REGISTRY_CACHE_BIN_CACHE:-${HOME}/.cache/registry-cache/bin}"
out="${cache_root}/containerd-${CONTAINERD2_VERSION}"
recipe="v1 CGO_ENABLED=0 -trimpath -s -w"
module=github.com/containerd/containerd/v2

binaries=(containerd ctr containerd-shim-runc-v2)  # the shim: the nodes run containers with it
stamp_of() { printf '%s/cmd/%s@%s %s\n' "${module}" "$1" "${CONTAINERD2_VERSION}" "${recipe}"; }

# shellcheck source=lib/bincache.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/bincache.sh"
bincache_print_if_cached
bincache_setup_go
bincache_lock

build_one() { # binary name
  local name="$1" tmp pkg ldflags t0
  pkg="${module}/cmd/${name}@${CONTAINERD2_VERSION}"
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  # As containerd's Makefile stamps it (`containerd --version`).
  ldflags="-s -w -X ${module}/version.Version=${CONTAINERD2_VERSION} -X ${module}/version.Package=${module}"
  log "building ${pkg} with $("${GO}" env GOVERSION) ..."
  t0=${SECONDS}
  (cd "${tmp}" && GOBIN="${tmp}/bin" "${GO}" install -trimpath -ldflags="${ldflags}" "${pkg}" >&2) \
    || die "building ${name} failed (see the go output above)"
  [[ -x "${tmp}/bin/${name}" ]] || die "go install did not produce ${tmp}/bin/${name}"
  local version_flag=--version
  [[ "${name}" == containerd-shim-runc-v2 ]] && version_flag=-v  # (the shim's flags are Go's flag package)
  "${tmp}/bin/${name}" "${version_flag}" >/dev/null 2>&1 || die "built ${name} does not run"
  bincache_publish "${tmp}/bin/${name}" "${name}" "${t0}"
}

bincache_build_missing
