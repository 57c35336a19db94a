#!/usr/bin/env bash
# Run registry-cache in a kind cluster: a cluster whose containerd reads /etc/containerd/certs.d, the image
# built from the Dockerfile and loaded into it, manifests/default applied with that image (the CRDs, the Shoot
# admission policies, the controller in standalone mode with its RBAC and guard policy, the node agent), and the
# rollout waited for. The same as `helm install registry-cache charts/registry-cache --set mode=standalone`.
#
#   hack/kind-up.sh            # then: kubectl --context kind-registry-cache apply -f examples/...
#   hack/kind-down.sh          # removes the cluster
#
# Idempotent: an existing cluster of that name is reused; the image is rebuilt and re-applied (its tag is
# derived from the image ID, so a changed image rolls the controller and the node agent).
#
# Needs: a Docker engine (docker CLI + a reachable daemon), kind, kubectl. The Docker engine needs network
# access to pull python:3.11-slim and the Python packages while building.
#
# Environment:
#   KIND_CLUSTER_NAME   cluster name (default: registry-cache); the kubectl context is kind-<name>
#   KIND_NODE_IMAGE     node image for `kind create cluster --image` (default: kind's own default)
#   IMAGE_REPO          image repository (default: registry-cache); the tag is dev-<image id>
#   REGISTRY_IMAGE      the cache image preloaded into the nodes (default: DEFAULT_IMAGE of extension/constants.py);
#                       set to "" to skip
#   ROLLOUT_TIMEOUT     how long to wait for the rollout (default: 300s)
set -euo pipefail

log() { printf 'kind-up: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-registry-cache}"
CONTEXT="kind-${CLUSTER}"
IMAGE_REPO="${IMAGE_REPO:-registry-cache}"
REGISTRY_IMAGE="${REGISTRY_IMAGE-docker.io/library/registry:3.1.1@sha256:1be55279f18a2fe1a74edf2664cac61c1bea305b7b4642dab412e7affdcb3e33}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-300s}"

# --- what is needed -----------------------------------------------------------------------------------------
command -v docker >/dev/null 2>&1 \
  || die "docker is not installed: kind runs its nodes as Docker containers (https://docs.docker.com/engine/install/)"
if ! docker_info="$(docker info --format '{{.ServerVersion}}' 2>&1)"; then
  die "no Docker engine is reachable (\`docker info\` failed): $(printf '%s' "$docker_info" | tr '\n' ' ')"
fi
command -v kind >/dev/null 2>&1 \
  || die "kind is not installed: \`go install sigs.k8s.io/kind@latest\` or https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
command -v kubectl >/dev/null 2>&1 \
  || die "kubectl is not installed: https://kubernetes.io/docs/tasks/tools/"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed (used to write the kustomize overlay)"
log "docker engine ${docker_info}, $(kind version), kubectl $(kubectl version --client -o json 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])' 2>/dev/null || echo '?')"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- the cluster --------------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "cluster ${CLUSTER} exists: reusing it"
else
  # containerd reads per-registry hosts.toml from /etc/containerd/certs.d (kind's node images from v0.27 on
  # do this by default; the patch makes older ones do it too). The node agent writes there.
  cat >"$WORK/kind.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
nodes:
- role: control-plane
EOF
  args=(create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 120s)
  [[ -n "${KIND_NODE_IMAGE:-}" ]] && args+=(--image "$KIND_NODE_IMAGE")
  log "creating cluster ${CLUSTER}"
  kind "${args[@]}"
fi
kubectl --context "$CONTEXT" cluster-info >/dev/null \
  || die "the cluster ${CLUSTER} does not answer on context ${CONTEXT}"
# Standalone mode's admission policies (who may reference which Secret, who may configure the nodes; the limits of
# the controller's own writes) are ValidatingAdmissionPolicies, GA since Kubernetes 1.30.
kubectl --context "$CONTEXT" get --raw /apis/admissionregistration.k8s.io/v1 | grep -q '"validatingadmissionpolicies"' \
  || die "the cluster ${CLUSTER} serves no admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes >= 1.30 needed; set KIND_NODE_IMAGE)"

# --- the image ----------------------------------------------------------------------------------------------
log "building the image from ${REPO}/Dockerfile"
docker build -t "${IMAGE_REPO}:build" "$REPO"
image_id="$(docker image inspect --format '{{.Id}}' "${IMAGE_REPO}:build")"
image_id="${image_id#sha256:}"
IMAGE="${IMAGE_REPO}:dev-${image_id:0:12}"
docker tag "${IMAGE_REPO}:build" "$IMAGE"
log "loading ${IMAGE} into the nodes"
kind load docker-image --name "$CLUSTER" "$IMAGE"

if [[ -n "$REGISTRY_IMAGE" ]]; then
  # The caches' own image, so that a cache for docker.io does not need itself to start.
  if docker image inspect "$REGISTRY_IMAGE" >/dev/null 2>&1 || docker pull "$REGISTRY_IMAGE"; then
    kind load docker-image --name "$CLUSTER" "$REGISTRY_IMAGE" \
      || log "warning: could not load ${REGISTRY_IMAGE}; the nodes will pull it"
  else
    log "warning: could not pull ${REGISTRY_IMAGE}; the nodes will pull it themselves"
  fi
fi

# --- the manifests ------------------------------------------------------------------------------------------
# An overlay in a temp dir that sets the image (kustomize wants a relative path to the base).
mkdir -p "$WORK/overlay"
base="$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
  "$REPO/manifests/default" "$WORK/overlay")"
cat >"$WORK/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ${base}
images:
- name: registry-cache
  newName: ${IMAGE%:*}
  newTag: ${IMAGE##*:}
patches:
# the cache Pods' coalescing front runs the same image (--front-image, the argument after it)
- target:
    kind: Deployment
    name: registry-cache-controller
  patch: |-
    - op: test
      path: /spec/template/spec/containers/0/args/12
      value: --front-image
    - op: replace
      path: /spec/template/spec/containers/0/args/13
      value: ${IMAGE}
EOF
log "applying manifests/default with image ${IMAGE}"
kubectl --context "$CONTEXT" apply --server-side --field-manager registry-cache-kind-up -k "$WORK/overlay"
kubectl --context "$CONTEXT" wait --for condition=established --timeout=60s \
  crd/extensions.extensions.gardener.cloud crd/clusters.extensions.gardener.cloud crd/shoots.core.gardener.cloud
kubectl --context "$CONTEXT" -n registry-cache rollout status deployment/registry-cache-controller --timeout="$ROLLOUT_TIMEOUT"
kubectl --context "$CONTEXT" -n kube-system rollout status daemonset/registry-cache-node-agent --timeout="$ROLLOUT_TIMEOUT"

log "ready: kubectl context ${CONTEXT}, image ${IMAGE}"
echo "$IMAGE"
