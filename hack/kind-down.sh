#!/usr/bin/env bash
# Delete the kind cluster of hack/kind-up.sh.
#
#   hack/kind-down.sh
#
# Environment:
#   KIND_CLUSTER_NAME   cluster name (default: registry-cache)
set -euo pipefail

log() { printf 'kind-down: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

CLUSTER="${KIND_CLUSTER_NAME:-registry-cache}"
command -v kind >/dev/null 2>&1 || die "kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "no cluster ${CLUSTER}: nothing to do"
  exit 0
fi
kind delete cluster --name "$CLUSTER"
