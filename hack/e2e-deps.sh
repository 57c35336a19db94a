#!/usr/bin/env bash
# Install what the data-path e2e tests (tests/e2e) need from the system's package manager:
# containerd and ctr (Debian package `containerd`), iptables (the failover test's blackholed address, the
# node's egress counting and kube-proxy), and for the one-node cluster (extension/local) runc, the CNI plugins
# (`containernetworking-plugins`: bridge, host-local, loopback, portmap), conntrack and a static busybox
# (`busybox-static`: /bin/sh in the cluster's cache image, for the credential helper of a cache without
# credentials). The registry and crane are built by hack/registry-bins.sh, containerd 2.x by
# hack/containerd-bins.sh, Kubernetes by hack/control-plane-bins.sh and hack/node-bins.sh, not here.
#
#   hack/e2e-deps.sh            # quiet and instant when everything is present
#
# Installs with apt-get (after `apt-get update`), non-interactively, as root. Never starts or enables
# the system's containerd service: the tests run their own containerd with a private config, root,
# state and socket in a temp dir. Exits non-zero with a message naming what is missing when it cannot
# install (not root, no apt-get, the package cannot be fetched).
set -euo pipefail

log() { printf 'e2e-deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

# what -> the Debian package that has it
declare -A package_of=([containerd]=containerd [ctr]=containerd [runc]=runc [iptables]=iptables
                       [conntrack]=conntrack [cni-bridge]=containernetworking-plugins
                       [busybox-static]=busybox-static)
have() {
  case "$1" in
    cni-bridge) [[ -x /usr/lib/cni/bridge || -x /opt/cni/bin/bridge ]] ;;
    busybox-static) dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ;;
    *) command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]] ;;
  esac
}
missing=()
packages=()
for tool in containerd ctr runc iptables conntrack cni-bridge busybox-static; do
  if ! have "${tool}"; then
    missing+=("${tool}")
    [[ " ${packages[*]:-} " == *" ${package_of[${tool}]} "* ]] || packages+=("${package_of[${tool}]}")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

log "missing: ${missing[*]}; installing the Debian packages ${packages[*]}"
[[ "$(id -u)" -eq 0 ]] || die "${missing[*]} not found and not running as root: install the Debian packages ${packages[*]} (apt-get install) or run this script as root"
command -v apt-get >/dev/null 2>&1 || die "${missing[*]} not found and no apt-get on this machine: install them (${packages[*]}) by other means"

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the package's postinst from starting the system containerd service where
# invoke-rc.d honours it (containers, chroots); the tests never use that service.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "${policy}" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"${policy}" && chmod +x "${policy}" && created_policy=1
fi
cleanup() { if [[ ${created_policy} -eq 1 ]]; then rm -f -- "${policy}"; fi; }
trap cleanup EXIT

apt_log="$(mktemp)"
trap 'cleanup; rm -f -- "${apt_log}"' EXIT
if ! apt-get update -qq >"${apt_log}" 2>&1; then
  cat "${apt_log}" >&2
  die "apt-get update failed (see above)"
fi
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >"${apt_log}" 2>&1; then
  cat "${apt_log}" >&2
  die "apt-get install ${packages[*]} failed (see above)"
fi

for tool in "${missing[@]}"; do
  have "${tool}" || die "${tool} still not found after installing ${package_of[${tool}]}"
done
log "installed ${packages[*]} ($(containerd --version 2>/dev/null | head -n1))"
