"""The actuator: what Reconcile, Delete, Migrate and Restore of a ``registry-cache`` Extension do.

Orchestration only, in the Go extension's order: read the Cluster (skip a hibernated shoot), decode and
validate the providerConfig, resolve credentials through ``spec.resources`` to the ``ref-`` Secrets, and
hand them to the component (:mod:`extension.component.registrycache`), which delivers the caches to the
shoot and returns the ``RegistryStatus``. As Gardener's: a VerticalPodAutoscaler per cache only when the
Shoot wants VPA (``spec.kubernetes.verticalPodAutoscaler.enabled``, and the shoot serves the kind), and the
monitoring only when the Shoot's purpose is not ``testing``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from api import shoot as shootlib
from api.admission import resolve_credentials
from api.field import Path, ValidationFailed
from api.secrets import Credentials, SecretData, secret_from_manifest
from api.v1alpha3 import RegistryConfig, RegistryStatus
from api.validation import decode_and_default, remote_url, validate_registry_config, validate_registry_config_update
from extension.component.objects import RenderOptions
from extension.component.registrycache import MONITORING_OPERATOR, OPTIONAL_KINDS, RegistryCaches
from extension.constants import EXTENSION_TYPE, REFERENCED_RESOURCE_PREFIX
from extension.controller.upstreams import UpstreamChecks
from extension.errors import ConfigurationError, ReconcileError
from extension.kube import Kube
from extension.upstreamcheck import Target

log = logging.getLogger(__name__)

PROVIDER_CONFIG_PATH = Path("spec", "providerConfig")

ShootTarget = Callable[[str], Kube]  # seed namespace -> client of that shoot's API server
SERVED_TTL_SECONDS = 300.0  # how long what a cluster serves (its CRDs) is taken as known


@dataclass(frozen=True)
class Outcome:
    """What a Create, Reconcile or Restore did: the provider status to report (None: none), and its words."""

    provider_status: dict[str, Any] | None
    description: str


class ExtensionActuator(Protocol):
    """What the Extension controller drives, per extension type."""

    extension_type: str
    what: str  # for the status' words: "registry caches"

    def reconcile(self, extension: dict[str, Any]) -> Outcome: ...
    def restore(self, extension: dict[str, Any]) -> Outcome: ...
    def delete(self, extension: dict[str, Any]) -> None: ...
    def migrate(self, extension: dict[str, Any]) -> None: ...


class ServedKinds:
    """Which of some kinds a cluster serves, per client, asked again after :data:`SERVED_TTL_SECONDS`."""

    def __init__(self, kinds: tuple[str, ...]):
        self.kinds = kinds
        self._known: dict[int, tuple[float, frozenset[str]]] = {}

    def __call__(self, kube: Kube) -> frozenset[str]:
        now = time.monotonic()
        known = self._known.get(id(kube))
        if known is None or now - known[0] > SERVED_TTL_SECONDS:
            known = (now, frozenset(k for k in self.kinds if kube.has_kind(k)))
            self._known[id(kube)] = known
        return known[1]


class Actuator:
    """``options`` are the controller's: the image, the shoot namespace. ``monitoring``: where the monitoring of
    the caches goes (:data:`~extension.component.registrycache.MONITORING_GARDENER` under Gardener, else
    :data:`~extension.component.registrycache.MONITORING_OPERATOR`: where the shoot serves the kinds)."""

    extension_type = EXTENSION_TYPE
    what = "registry caches"

    def __init__(self, seed: Kube, shoot_target: ShootTarget, options: RenderOptions,
                 checkpoint: Callable[[str], None] = lambda point: None,
                 monitoring: str | None = MONITORING_OPERATOR, upstreams: UpstreamChecks | None = None):
        self.seed = seed
        self.upstreams = upstreams  # told which upstreams each Extension pulls from with credentials
        self.shoot_target = shoot_target
        self.options = options
        self.monitoring = monitoring
        self._checkpoint = checkpoint  # a test seam, see RegistryCaches
        self._served = ServedKinds(OPTIONAL_KINDS)
        self._seed_served = ServedKinds(("PrometheusRule", "ScrapeConfig"))

    # --- helpers --------------------------------------------------------------------------------------
    def _caches(self, namespace: str, shoot_spec: dict[str, Any] | None = None) -> RegistryCaches:
        shoot = self.shoot_target(namespace)
        served = self._served(shoot)
        vpa = shoot_spec is not None and shootlib.wants_vpa(shoot_spec) and "VerticalPodAutoscaler" in served
        if shoot_spec is not None and shootlib.wants_vpa(shoot_spec) and not vpa:
            log.warning("%s: the Shoot wants VPA, but its cluster serves no VerticalPodAutoscaler", namespace)
        seed_served = self._seed_served(self.seed) if self.monitoring and self.monitoring != MONITORING_OPERATOR \
            else frozenset()
        return RegistryCaches(self.seed, shoot, namespace, replace(self.options, vpa=vpa),
                              checkpoint=self._checkpoint, served=served, monitoring=self.monitoring,
                              seed_served=seed_served)

    def cluster_shoot(self, namespace: str) -> dict[str, Any]:
        cluster = self.seed.get("Cluster", namespace)
        if cluster is None:
            raise ReconcileError(f"Cluster {namespace} not found: gardenlet (or the standalone bridge) creates it "
                                 "for every shoot namespace")
        shoot = (cluster.get("spec") or {}).get("shoot")
        if not isinstance(shoot, dict):
            raise ReconcileError(f"Cluster {namespace} has no spec.shoot")
        return shoot

    def decode(self, extension: dict[str, Any]) -> RegistryConfig:
        raw = (extension.get("spec") or {}).get("providerConfig")
        if raw is None:
            raise ConfigurationError("spec.providerConfig: Required value: providerConfig is required for the "
                                     "registry-cache extension")
        try:
            config = decode_and_default(raw, PROVIDER_CONFIG_PATH)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        errors = validate_registry_config(config, PROVIDER_CONFIG_PATH)
        if errors:
            raise ConfigurationError("; ".join(str(e) for e in errors))
        return config

    def get_secret(self, namespace: str, name: str) -> SecretData | None:
        obj = self.seed.get("Secret", name, namespace)
        return secret_from_manifest(obj) if obj else None

    # --- operations -----------------------------------------------------------------------------------
    def _resolve(self, extension: dict[str, Any]) \
            -> tuple[dict[str, Any], RegistryConfig, Mapping[str, Credentials]] | None:
        """The Shoot, the validated config and the credentials per upstream; None when the shoot is hibernated."""
        namespace = extension["metadata"]["namespace"]
        shoot_spec = self.cluster_shoot(namespace)
        if shootlib.is_hibernated(shoot_spec):
            return None
        config = self.decode(extension)
        try:
            credentials = resolve_credentials(shoot_spec, config, self.get_secret, namespace,
                                              PROVIDER_CONFIG_PATH, name_prefix=REFERENCED_RESOURCE_PREFIX)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        return shoot_spec, config, credentials

    def _set_targets(self, namespace: str, config: RegistryConfig, credentials: Mapping[str, Credentials]) -> None:
        if self.upstreams is not None:
            self.upstreams.set_targets(namespace, [Target(c.upstream, remote_url(c), credentials[c.upstream])
                                                   for c in config.caches if c.upstream in credentials])

    def reconcile(self, extension: dict[str, Any]) -> Outcome:
        """Deliver the caches (nothing while the shoot is hibernated); hand the upstreams with credentials to
        the credential checks."""
        namespace = extension["metadata"]["namespace"]
        resolved = self._resolve(extension)
        if resolved is None:
            log.info("%s: shoot is hibernated, nothing to do", namespace)
            return Outcome(None, "The shoot is hibernated: the registry caches are left as they are")
        shoot_spec, config, credentials = resolved
        status: RegistryStatus = self._caches(namespace, shoot_spec).deploy(
            config, credentials, check_update=check_update,
            monitor=shootlib.purpose(shoot_spec) != shootlib.PURPOSE_TESTING)
        self._set_targets(namespace, config, credentials)
        return Outcome(status.to_wire(), "The registry caches are delivered")

    def learn_upstreams(self, extension: dict[str, Any]) -> None:
        """Tell the upstream checks what an Extension that needs no reconcile pulls from (after a restart of
        the controller): reads the Cluster and the referenced Secrets, changes nothing."""
        resolved = self._resolve(extension)
        if resolved is not None:
            self._set_targets(extension["metadata"]["namespace"], resolved[1], resolved[2])

    def delete(self, extension: dict[str, Any]) -> None:
        """Remove everything this Extension delivered to the shoot, its volumes included."""
        self._caches(extension["metadata"]["namespace"]).destroy()
        if self.upstreams is not None:
            self.upstreams.forget(extension["metadata"]["namespace"])

    def migrate(self, extension: dict[str, Any]) -> None:
        """Keep the objects in the shoot: the control plane moves, the caches keep serving."""
        log.info("%s: migrate: keeping the caches in the shoot", extension["metadata"]["namespace"])
        if self.upstreams is not None:
            self.upstreams.forget(extension["metadata"]["namespace"])  # checked by the controller it moves to

    def restore(self, extension: dict[str, Any]) -> Outcome:
        return self.reconcile(extension)


def check_update(delivered: RegistryConfig, config: RegistryConfig) -> None:
    """The update rules (volume size and class immutable, garbage collection not enabled again once disabled),
    checked against what was delivered: under Gardener (``--webhooks seed``) no Shoot webhook of ours enforced
    them. Gardener's words, on the Extension's field paths."""
    errors = validate_registry_config_update(delivered, config, PROVIDER_CONFIG_PATH)
    if errors:
        raise ConfigurationError("; ".join(str(e) for e in errors))
