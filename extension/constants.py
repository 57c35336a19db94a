"""Every name the parts of the extension share: labels, annotations, finalizers, object names, ports, paths.

One home, imported by the controller, the webhooks, the standalone bridge, the node agent, the CLI and the
templates (as ``c``, e.g. ``{{ c.MANAGED_BY_LABEL }}``). No imports beyond :mod:`api.names` and
:mod:`api.shoot`, so that a node can import it without pulling in the controller.

Names computed from an upstream (``registry-<upstream>``, the ``upstream-host`` label) are Gardener's
functions and live in :mod:`api.names`.
"""

from __future__ import annotations

import enum

from api import shoot as _shoot
from api.names import CA_BUNDLE_FILE
from api.shoot import EXTENSION_TYPE, MIRROR_EXTENSION_TYPE

# --- the Extension contract (Gardener) ------------------------------------------------------------------
EXTENSION_NAME = EXTENSION_TYPE  # the Extension object is named after its type
EXTENSION_TYPES = _shoot.EXTENSION_TYPES  # registry-cache and registry-mirror: what the controller serves
MIRROR_EXTENSION_NAME = MIRROR_EXTENSION_TYPE


def finalizer_for(extension_type: str) -> str:
    """Gardener's finalizer of an extension controller: ``extensions.gardener.cloud/<type>``."""
    return f"extensions.gardener.cloud/{extension_type}"


FINALIZER = finalizer_for(EXTENSION_TYPE)
MIRROR_FINALIZER = finalizer_for(MIRROR_EXTENSION_TYPE)
OPERATION_ANNOTATION = "gardener.cloud/operation"
OPERATION_RECONCILE = "reconcile"
OPERATION_MIGRATE = "migrate"
OPERATION_RESTORE = "restore"
OPERATION_WAIT_FOR_STATE = "wait-for-state"
# gardenlet labels the seed namespace of a shoot with the extensions it uses, one label per type;
# gardener-apiserver labels Shoots with the same keys (the bridge does without Gardener): the Shoot webhooks
# select on them
def extension_namespace_label(extension_type: str) -> str:
    return f"extensions.extensions.gardener.cloud/{extension_type}"


extension_shoot_label = extension_namespace_label
EXTENSION_NAMESPACE_LABEL = extension_namespace_label(EXTENSION_TYPE)
MIRROR_NAMESPACE_LABEL = extension_namespace_label(MIRROR_EXTENSION_TYPE)
EXTENSION_SHOOT_LABEL = EXTENSION_NAMESPACE_LABEL
MIRROR_SHOOT_LABEL = MIRROR_NAMESPACE_LABEL
# gardenlet copies every Secret of spec.resources into the seed namespace as ref-<resourceRef.name>
REFERENCED_RESOURCE_PREFIX = "ref-"
# Gardener's finalizer on Secrets that a Shoot's spec.resources lists
PROTECTION_FINALIZER = "gardener.cloud/reference-protection"


class State(str, enum.Enum):
    """``status.lastOperation.state``."""

    PROCESSING = "Processing"
    SUCCEEDED = "Succeeded"
    ERROR = "Error"
    FAILED = "Failed"


ERR_CONFIGURATION_PROBLEM = "ERR_CONFIGURATION_PROBLEM"
ERR_INFRA_DEPENDENCIES = "ERR_INFRA_DEPENDENCIES"
ERR_INFRA_UNAUTHORIZED = "ERR_INFRA_UNAUTHORIZED"
# status.conditions, one per cache with credentials: "UpstreamCredentialsValid-<upstream>"
UPSTREAM_CREDENTIALS_CONDITION = "UpstreamCredentialsValid"
DEFAULT_UPSTREAM_CHECK_INTERVAL_SECONDS = 300.0
# status.conditions: the caches' health (their StatefulSets and Pods in the shoot), as Gardener's health checks
# report an extension's workloads; checked every HEALTH_CHECK_INTERVAL_SECONDS
SYSTEM_COMPONENTS_HEALTHY_CONDITION = "SystemComponentsHealthy"
HEALTH_CHECK_INTERVAL_SECONDS = 10.0

# --- the objects delivered to the shoot ---------------------------------------------------------------
SHOOT_NAMESPACE = "kube-system"  # where the caches run in the shoot
FIELD_MANAGER = "registry-cache"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "registry-cache"
# what the registry-mirror Extension delivers (its node-config ConfigMap): apart from the caches' objects, so
# that neither prunes the other's
MIRROR_MANAGED_BY = "registry-mirror"
APP_NAME_LABEL = "app.kubernetes.io/name"
APP_NAME = "registry-cache"
# The seed namespace whose Extension delivered an object: pruning and deletion touch only its own objects,
# even when several shoots share one cluster (standalone mode).
OWNER_LABEL = "registry-cache.gardener.cloud/owner"
# On every delivered object: a hash of the object as rendered, without this annotation. An object that carries the
# hash of what is rendered now and that no other field manager changed is as delivered: it is not sent again.
RENDERED_HASH_ANNOTATION = "registry-cache.gardener.cloud/rendered-hash"
GC_REFERENCE_LABEL = "resources.gardener.cloud/garbage-collectable-reference"
HA_LABEL = "high-availability-config.resources.gardener.cloud/type"
# a Service per replica of a cache with high availability (with the front): the address at which the other replica's
# front fetches the blobs this one owns (extension/front/server.py); its label value is the ordinal
REPLICA_LABEL = "registry-cache.gardener.cloud/replica"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"  # the StatefulSet controller's, on each of its Pods
HA_REPLICAS = 2
NETWORK_POLICY_NAME = "gardener.cloud--allow-registry-cache"
CONTAINER_NAME = "registry-cache"
VOLUME_NAME = "cache-volume"  # the claim template: PVCs are <VOLUME_NAME>-<statefulset>-<ordinal>
CACHE_PATH = "/var/lib/registry"  # where the volume is mounted: distribution's storage (and the front's spool)
SERVER_PORT = 5000
DEBUG_PORT = 5001  # /debug/health and /metrics
# distribution 3.1.1 pinned by digest, as Gardener's extension v0.24.0 pins it (imagevector/images.yaml; its copy
# in europe-docker.pkg.dev/gardener-project/releases/3rd/registry has the same digest): official images are
# rebuilt under the same tag. hack/registry-bins.sh builds the same version for the tests.
DEFAULT_IMAGE = ("docker.io/library/registry:3.1.1"
                 "@sha256:1be55279f18a2fe1a74edf2664cac61c1bea305b7b4642dab412e7affdcb3e33")
# The coalescing front (extension/front) in the cache Pod, when the controller is given an image for it
# (`run --front-image`, the product's own image: the front is Python): it serves SERVER_PORT (TLS with the
# cache's certificate) and makes concurrent GETs of one blob one GET to distribution, which then listens on the
# Pod's loopback only, on BACKEND_PORT, without TLS. The debug port stays distribution's.
FRONT_CONTAINER_NAME = "front"
FRONT_COMMAND = ("python", "-m", "extension.front")
BACKEND_PORT = 5002
FRONT_CERTS_PATH = "/etc/registry-cache-front/certs"
FRONT_HEALTH_PATH = "/healthz"
# Stopping a cache Pod without failing a pull: the Pod's endpoints leave the Service (EndpointSlice, then
# kube-proxy on every node) a few seconds after it is marked terminating, and until then connections still come.
# So whatever serves the cache's port keeps serving that long after the Pod is told to stop: the front for
# FRONT_SHUTDOWN_DELAY_SECONDS after its SIGTERM (then it stops accepting and drains), distribution by a preStop
# pause before its SIGTERM (then it drains for DRAIN_SECONDS, its http.draintimeout). Behind a front,
# distribution's pause is the longer: it keeps serving the front's requests until the front stops accepting.
FRONT_SHUTDOWN_DELAY_SECONDS = 5
DRAIN_SECONDS = 25
CACHE_PRESTOP_PAUSE_SECONDS = 5
CACHE_PRESTOP_PAUSE_BEHIND_FRONT_SECONDS = 10
# Service annotations, as Gardener's
SERVICE_UPSTREAM_ANNOTATION = "upstream"
SERVICE_REMOTE_URL_ANNOTATION = "remote-url"
SERVICE_SCHEME_ANNOTATION = "scheme"

# --- TLS, kept in Secrets of the seed namespace ---------------------------------------------------------
CA_NAME = "ca-extension-registry-cache"
CA_BUNDLE_SECRET = f"{CA_NAME}-bundle"  # key bundle.crt: what nodes trust; caSecretName of the status
TLS_SECRET_LABEL = "registry-cache.gardener.cloud/secret"  # value: ca | bundle | server

# --- caches only nodes can read (standalone, `run --node-auth`) --------------------------------------
# Per cache, in the seed namespace: generated credentials and their htpasswd line (reused across reconciles).
NODE_AUTH_SECRET_LABEL = "registry-cache.gardener.cloud/node-auth"  # value: the upstream's resource name
NODE_AUTH_USERNAME = "registry-cache-node"
NODE_AUTH_REALM = "registry-cache"
HTPASSWD_KEY = "htpasswd"  # in the cache's config Secret, next to config.yml
HTPASSWD_PATH = "/etc/distribution/htpasswd"  # where the cache reads it (the config Secret's mount)

# --- the upstream's credentials: a credential helper instead of proxy.username/password -----------------
# distribution's proxy with proxy.username/password asks its upstream for the token realm at start (GET
# <remoteurl>/v2/) and exits while the upstream cannot be reached; with proxy.exec naming a
# docker-credential-helper it asks nothing at start and runs the helper when a request needs credentials.
# Every cache gets one: a script in its config Secret, mounted executable next to config.yml (the image needs
# a /bin/sh: the official registry:3 image is Alpine's), that answers with the credentials of the file
# UPSTREAM_CREDENTIALS_KEY beside it (rendered JSON, one line), or with none when there is no such file.
CREDENTIAL_HELPER_KEY = "credential-helper"
CREDENTIAL_HELPER_PATH = f"/etc/distribution/{CREDENTIAL_HELPER_KEY}"
CREDENTIAL_HELPER_MODE = 0o755
UPSTREAM_CREDENTIALS_KEY = "upstream-credentials"
# Files of the config Secret that hold credentials (the upstream's, a plugin's arguments and environment): readable
# by the cache's group (fsGroup) only, not by every user of the container.
CREDENTIALS_FILE_MODE = 0o440

# --- short-lived upstream credentials: a kubelet credential provider plugin per cache (api/credential_provider.py)
# An init container copies the plugin's binary from its image into an emptyDir mounted at BIN_DIR; the cache's
# credential helper (its own template) runs it with a CredentialProviderRequest, keeps its answer for the
# cacheDuration in STATE_DIR (an emptyDir in memory) and asks it again before that time is up.
CREDENTIAL_PROVIDER_INIT_CONTAINER = "credential-provider"
CREDENTIAL_PROVIDER_BIN_VOLUME = "credential-provider-bin"
CREDENTIAL_PROVIDER_STATE_VOLUME = "credential-provider-state"
CREDENTIAL_PROVIDER_BIN_DIR = "/credential-provider/bin"
CREDENTIAL_PROVIDER_STATE_DIR = "/credential-provider/state"
CREDENTIAL_PROVIDER_CONFIG_KEY = "credential-provider.conf"  # the plugin's args and env (sourced by the helper)
CREDENTIAL_PROVIDER_PARSER_KEY = "credential-provider.awk"  # reads the plugin's CredentialProviderResponse
# distribution's proxy.exec.lifetime for such a cache: how long it keeps an answer of the helper before it asks
# again. Short, so that what the helper renews reaches distribution soon; the helper answers from memory.
CREDENTIAL_PROVIDER_LIFETIME_SECONDS = 5
CREDENTIAL_PROVIDER_TIMEOUT_SECONDS = 30  # a plugin run (the kubelet allows a minute; distribution waits on it)
CREDENTIAL_PROVIDER_HEARTBEAT_SECONDS = 60  # while in use, a line in the cache's log at least this often
# The helper's lines in the cache's log (logfmt): component=<this>, event renewed | cached | failed, reason on
# failures; the controller reads them (extension/controller/providers.py).
CREDENTIAL_PROVIDER_LOG_COMPONENT = "registry-cache-credential-provider"
# In the shoot's kube-system: ONE Secret for every Extension (each owns its keys by server-side apply with
# a field manager of its own), so that the node agent may read exactly this Secret by name (RBAC
# resourceNames) and no other. Key: the cache's resource name; value: the Authorization header nodes send.
NODE_AUTH_SHOOT_SECRET = "registry-cache-node-auth"

# --- nodes ------------------------------------------------------------------------------------------------
CERTS_DIR = "/etc/containerd/certs.d"
CA_BUNDLE_PATH = f"{CERTS_DIR}/{CA_BUNDLE_FILE}"
CAPABILITIES = ("pull", "resolve")  # of a cache; a mirror host has its own (default ["pull"])
CA_BUNDLE_FILE_PERMISSIONS = 0o644
# a mirror host's CA bundle: CERTS_DIR/<upstream, ':' as '-'>/<host, sanitized><suffix> (Gardener's ensurer)
MIRROR_CA_BUNDLE_SUFFIX = "-ca-bundle.pem"
# containerd 2.1+ reads dial_timeout per host in hosts.toml: how long a dial to the cache may take before
# containerd tries the next host (the upstream). Its own default is 30 s per request, so a cache that is
# away (a blackholed address) turns a 2 s pull into minutes: every request of a pull (manifest, config,
# each layer) tries the cache first. Spegel writes 200ms; 100ms keeps a pull's fallback under a second
# (measured: tests/e2e/test_failover.py) and is still far above a connect within a cluster (one round
# trip, well under 10 ms). Go duration syntax.
DEFAULT_DIAL_TIMEOUT = "100ms"
# Our additions to a host of Gardener's registry entry shape, in the node-config ConfigMap only (Gardener's
# OperatingSystemConfig RegistryHost has url, capabilities and caCerts, nothing else).
HOST_DIAL_TIMEOUT_FIELD = "dialTimeout"
HOST_NODE_AUTH_FIELD = "nodeAuth"  # the key of this host's entry in the node-auth Secret
# standalone: the ConfigMaps the node agent reads
NODE_CONFIG_NAME = "registry-cache-node-config"
NODE_CONFIG_LABEL = "registry-cache.gardener.cloud/node-config"
NODE_CONFIG_REGISTRIES_KEY = "registries.yaml"
NODE_CONFIG_CA_BUNDLE_KEY = "ca-bundle.pem"
NODE_CONFIG_FILES_KEY = "files.yaml"  # {"files": [OperatingSystemConfig files]}: the mirrors' CA bundles
MIRROR_NODE_CONFIG_NAME = "registry-mirror-node-config"

# --- standalone mode (gardenlet's part) -------------------------------------------------------------------
BRIDGE_FINALIZER = "registry-cache.gardener.cloud/bridge"
BRIDGE_LABEL = "registry-cache.gardener.cloud/bridge"
SHOOT_GENERATION_ANNOTATION = "registry-cache.gardener.cloud/shoot-generation"
REFERENCED_LABEL = "registry-cache.gardener.cloud/referenced"  # Secrets in use; the webhook selects on it
# On the namespace, Cluster and Extension the bridge keeps for a Shoot: which Shoot (namespace/name) they are of.
# The bridge never takes over objects of another Shoot.
BRIDGE_SHOOT_ANNOTATION = "registry-cache.gardener.cloud/shoot"
BRIDGE_TASK_ID = "registry-cache-bridge"  # its entry in a Shoot's status.lastErrors
# The ValidatingAdmissionPolicies (and their bindings, of the same names) the bridge acts only under
# (manifests/policies/shoots.yaml): who may reference which Secret, who may configure the nodes' registries.
SHOOT_REFERENCES_POLICY = "shoot-references.registry-cache.extensions.gardener.cloud"
SHOOT_NODE_CONFIGURATION_POLICY = "shoot-node-configuration.registry-cache.extensions.gardener.cloud"
SHOOT_POLICIES = (SHOOT_REFERENCES_POLICY, SHOOT_NODE_CONFIGURATION_POLICY)

# --- Events --------------------------------------------------------------------------------------------
# a Warning Event on an object the controller skips because its JSON nests too deep to decode
# (extension/runtime/jsondecode.py, extension/runtime/kube.py)
UNDECODABLE_EVENT_REASON = "NestedTooDeep"

# --- leader election (a Lease in the controller's namespace, as controller-runtime's) ---------------------
LEADER_ELECTION_ID = "registry-cache-leader-election"

# --- the Extension controller: its name in controller-runtime's metrics (label controller) and its work queue's
# (labels name and controller of workqueue_*), one for both extension types
CONTROLLER_NAME = "extension"

# --- admission webhooks -------------------------------------------------------------------------------
WEBHOOK_CONFIGURATION_NAME = "registry-cache.extensions.gardener.cloud"
# with --webhook-service: the webhook server's CA and certificate, shared by the replicas behind that Service
WEBHOOK_CERT_SECRET = "registry-cache-webhook-tls"
SHOOT_HOOK = "validate-shoot"
SECRET_HOOK = "protect-secret"
OSC_HOOK = "mutate-osc"
OSC_MIRROR_HOOK = "mutate-osc-mirror"

__all__ = [name for name in dir() if name.isupper() or name in ("State", "finalizer_for",
                                                                "extension_namespace_label",
                                                                "extension_shoot_label")]
