#!/usr/bin/env bash
# Ensure a kube-apiserver and an etcd binary exist and print the directory that
# holds them (envtest / KUBEBUILDER_ASSETS layout).
#
#   dir=$(hack/control-plane-bins.sh | tail -n1)
#
# The LAST line of stdout is the directory; all progress goes to stderr.
#
# Resolution order:
#   1. $KUBEBUILDER_ASSETS, if it holds executable kube-apiserver and etcd.
#   2. The build cache ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/<k8s version>/
#      if both binaries are there and were built from the current wrapper
#      modules (checked via a stamp file per binary) -> returns in well under a second.
#   3. Otherwise the missing/outdated binaries are built with the local Go
#      toolchain from the wrapper modules in hack/go/{kube-apiserver,etcd}
#      (versions are pinned in their go.mod files). The wrapper module is copied
#      to a temporary directory, `go mod tidy` generates go.sum there and
#      `go build` produces the binary, which is then mv'ed into the cache, so
#      nothing is written into the repository. A first build takes several
#      minutes (kube-apiserver is big); later builds reuse Go's build cache.
#
# Concurrent runs are safe: builds are serialised with flock(1) on a lock file
# in the cache directory (when flock is available) and every binary is built
# in a temp dir inside the cache dir and renamed into place atomically.
#
# Environment:
#   KUBEBUILDER_ASSETS        use these binaries if complete (see above)
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

log() { printf 'control-plane-bins: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

has_bins() { # dir -> both binaries present and executable
  [[ -f "$1/kube-apiserver" && -x "$1/kube-apiserver" && -f "$1/etcd" && -x "$1/etcd" ]]
}

# --- 1. envtest convention ----------------------------------------------------
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if has_bins "${KUBEBUILDER_ASSETS}"; then
    printf '%s\n' "${KUBEBUILDER_ASSETS}"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} lacks executable kube-apiserver/etcd; using the build cache instead"
fi

# --- 2. cache lookup ----------------------------------------------------------
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wrappers="${script_dir}/go"
binaries=(kube-apiserver etcd)

for b in "${binaries[@]}"; do
  [[ -f "${wrappers}/${b}/go.mod" && -f "${wrappers}/${b}/main.go" ]] \
    || die "wrapper module ${wrappers}/${b} (go.mod + main.go) not found"
done

k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "${wrappers}/kube-apiserver/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" { print $3 }' "${wrappers}/etcd/go.mod")"
[[ "${k8s_version}" =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || die "cannot parse the k8s.io/kubernetes version from ${wrappers}/kube-apiserver/go.mod"
k8s_minor="${BASH_REMATCH[1]}"
[[ -n "${etcd_version}" ]] || die "cannot parse the go.etcd.io/etcd/server/v3 version from ${wrappers}/etcd/go.mod"

cache_root="${REGISTRY_CACHE_BIN_CACHE:-${HOME}/.cache/registry-cache/bin}"
out="${cache_root}/${k8s_version}"

# Bump when the build recipe below changes in a way that should force a rebuild.
recipe="v1 CGO_ENABLED=0 -trimpath -s -w"

stamp_of() { # binary name -> hash of its wrapper module + recipe
  { cat "${wrappers}/$1/go.mod" "${wrappers}/$1/main.go"; printf '%s\n' "${recipe}"; } \
    | sha256sum | cut -d' ' -f1
}

# shellcheck source=lib/bincache.sh
source "${script_dir}/lib/bincache.sh"
bincache_print_if_cached

# --- 3. build -----------------------------------------------------------------
bincache_setup_go
bincache_lock

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

build_one() { # binary name
  local name="$1" tmp src t0 ldflags tags pkg
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  src="${tmp}/src"
  mkdir -p "${src}"
  cp "${wrappers}/${name}/go.mod" "${wrappers}/${name}/main.go" "${src}/"

  ldflags="-s -w"
  tags=""
  case "${name}" in
    kube-apiserver)
      # Same version stamping and build tags as kubernetes' hack/lib/{version,golang}.sh.
      for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=" -X ${pkg}.gitVersion=${k8s_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
        ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
      done
      tags="selinux,notest,grpcnotrace"
      log "building kube-apiserver ${k8s_version} with $("${GO}" env GOVERSION) (first build: several minutes) ..."
      ;;
    etcd)
      log "building etcd ${etcd_version} with $("${GO}" env GOVERSION) ..."
      ;;
  esac

  t0=${SECONDS}
  (
    cd "${src}"
    "${GO}" mod tidy >&2
    "${GO}" build -trimpath ${tags:+-tags="${tags}"} -ldflags="${ldflags}" -o "${tmp}/${name}" . >&2
  ) || die "building ${name} failed (see the go output above)"

  # Smoke test before publishing the binary.
  "${tmp}/${name}" --version >/dev/null 2>&1 || die "built ${name} does not run (${tmp}/${name} --version failed)"

  bincache_publish "${tmp}/${name}" "${name}" "${t0}"
}

bincache_build_missing
