#!/usr/bin/env bash
# Ensure the node's Kubernetes binaries exist and print the directory that holds them:
# kubelet, kube-controller-manager, kube-scheduler and kube-proxy, built from the same k8s.io/kubernetes
# module and version as kube-apiserver (hack/control-plane-bins.sh), plus `pause`, the sandbox program of
# the cluster's pause image (hack/go/pause, no dependencies).
#
#   dir=$(hack/node-bins.sh | tail -n1)     # -> $dir/kubelet, $dir/kube-proxy, ...
#
# The LAST line of stdout is the directory; all progress goes to stderr.
#
# Same cache as hack/control-plane-bins.sh:
#   ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/<k8s version>/
# A stamp file per binary records what it was built from (its wrapper module and the recipe); when every
# stamp matches, the script prints the directory without touching Go (well under a second). Each wrapper
# module in hack/go/<binary> is copied to a temporary directory, `go mod tidy` writes go.sum there and
# `go build` makes the binary, so nothing is written into the repository. With kube-apiserver already in
# Go's build cache each binary takes about 1-2 minutes on 2 cores; cold, the first one takes longer.
#
# Concurrent runs are safe: the lock is the one of hack/control-plane-bins.sh (same cache directory), and
# binaries are renamed into place atomically.
#
# Environment:
#   REGISTRY_CACHE_BIN_CACHE  cache root (default: $HOME/.cache/registry-cache/bin)
#   GO                        go binary to use (default: `go` from PATH, else /usr/local/go/bin/go)
set -euo pipefail

log() { printf 'node-bins: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wrappers="${script_dir}/go"
binaries=(kubelet kube-controller-manager kube-scheduler kube-proxy pause)

for b in "${binaries[@]}"; do
  [[ -f "${wrappers}/${b}/go.mod" && -f "${wrappers}/${b}/main.go" ]] \
    || die "wrapper module ${wrappers}/${b} (go.mod + main.go) not found"
done

# The version of kube-apiserver is the version of the node.
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "${wrappers}/kube-apiserver/go.mod")"
[[ "${k8s_version}" =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || die "cannot parse the k8s.io/kubernetes version from ${wrappers}/kube-apiserver/go.mod"
k8s_minor="${BASH_REMATCH[1]}"
for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do
  v="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "${wrappers}/${b}/go.mod")"
  [[ "${v}" == "${k8s_version}" ]] || die "${wrappers}/${b}/go.mod requires k8s.io/kubernetes ${v}, kube-apiserver ${k8s_version}: keep them equal"
done

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
bincache_setup_go
bincache_lock

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

build_one() { # binary name
  local name="$1" tmp src t0 ldflags="-s -w" tags="" pkg
  tmp="$(mktemp -d "${out}/.build-${name}.XXXXXX")"
  tmp_dirs+=("${tmp}")
  src="${tmp}/src"
  mkdir -p "${src}"
  cp "${wrappers}/${name}/go.mod" "${wrappers}/${name}/main.go" "${src}/"
  if [[ "${name}" != pause ]]; then
    # Same version stamping and build tags as kubernetes' hack/lib/{version,golang}.sh (and as
    # hack/control-plane-bins.sh stamps kube-apiserver): the kubelet reports this version to the API server.
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldflags+=" -X ${pkg}.gitVersion=${k8s_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
      ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
    done
    tags="selinux,notest,grpcnotrace"
  fi
  log "building ${name} ${k8s_version} with $("${GO}" env GOVERSION) ..."
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
