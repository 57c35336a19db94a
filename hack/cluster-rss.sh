#!/usr/bin/env bash
# The memory a running local cluster (extension/local) uses: the resident set of the processes in each node's
# network namespace (containerd, kubelet, kube-proxy, the image registry, the Pods) and of the control plane on the
# host (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), in MiB. Shared pages count once per process.
#   sudo hack/cluster-rss.sh      # while a cluster runs (registry-cache local-up, or the e2e session)
set -euo pipefail
rss() { local s=0 r; for p in "$@"; do r=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || true); s=$((s + ${r:-0})); done; echo $((s / 1024)); }
total=0
for ns in $(ip netns list | awk '{print $1}' | grep '^rc-node-' | sort); do
  mib=$(rss $(ip netns pids "$ns"))
  echo "node namespace $ns: $mib MiB"
  total=$((total + mib))
done
cp=$(rss $(pgrep -f 'kube-apiserver|/etcd |kube-controller-manager|kube-scheduler' || true))
echo "control plane: $cp MiB"
echo "total: $((total + cp)) MiB"
