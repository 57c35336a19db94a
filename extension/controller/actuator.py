"""The actuator: what Reconcile, Delete, Migrate and Restore of a ``registry-cache`` Extension do.

Orchestration only, in the Go extension's order: read the Cluster (skip a hibernated shoot), decode and
validate the providerConfig, resolve credentials through ``spec.resources`` to the ``ref-`` Secrets, and
hand them to the component (:mod:`extension.component.registrycache`), which delivers the caches to the
shoot and returns the ``RegistryStatus``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from api import shoot as shootlib
from api.admission import resolve_credentials
from api.field import Path, ValidationFailed
from api.secrets import Credentials, SecretData, secret_from_manifest
from api.v1alpha3 import RegistryConfig, RegistryStatus
from api.validation import decode_and_default, remote_url, validate_registry_config, validate_registry_config_update
from extension.component.objects import RenderOptions
from extension.component.registrycache import RegistryCaches
from extension.constants import REFERENCED_RESOURCE_PREFIX
from extension.controller.upstreams import UpstreamChecks
from extension.errors import ConfigurationError, ReconcileError
from extension.kube import Kube
from extension.upstreamcheck import Target

log = logging.getLogger(__name__)

PROVIDER_CONFIG_PATH = Path("spec", "providerConfig")

ShootTarget = Callable[[str], Kube]  # seed namespace -> client of that shoot's API server


class Actuator:
    """``options`` are the controller's: the image, the shoot namespace, whether VPAs are wanted."""

    def __init__(self, seed: Kube, shoot_target: ShootTarget, options: RenderOptions,
                 checkpoint: Callable[[str], None] = lambda point: None, upstreams: UpstreamChecks | None = None):
        self.seed = seed
        self.upstreams = upstreams  # told which upstreams each Extension pulls from with credentials
        self.shoot_target = shoot_target
        self.options = options
        self._checkpoint = checkpoint  # a test seam, see RegistryCaches
        self._vpa_served: dict[int, bool] = {}

    # --- helpers --------------------------------------------------------------------------------------
    def _caches(self, namespace: str) -> RegistryCaches:
        shoot = self.shoot_target(namespace)
        options = self.options
        if options.vpa:
            key = id(shoot)
            if key not in self._vpa_served:
                self._vpa_served[key] = shoot.has_kind("VerticalPodAutoscaler")
            options = replace(options, vpa=self._vpa_served[key])
        return RegistryCaches(self.seed, shoot, namespace, options, checkpoint=self._checkpoint)

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

    def _get_secret(self, namespace: str, name: str) -> SecretData | None:
        obj = self.seed.get("Secret", name, namespace)
        return secret_from_manifest(obj) if obj else None

    # --- operations -----------------------------------------------------------------------------------
    def _resolve(self, extension: dict[str, Any]) -> tuple[RegistryConfig, Mapping[str, Credentials]] | None:
        """The validated config and the credentials per upstream; None when the shoot is hibernated."""
        namespace = extension["metadata"]["namespace"]
        shoot_spec = self.cluster_shoot(namespace)
        if shootlib.is_hibernated(shoot_spec):
            return None
        config = self.decode(extension)
        try:
            credentials = resolve_credentials(shoot_spec, config, self._get_secret, namespace,
                                              PROVIDER_CONFIG_PATH, name_prefix=REFERENCED_RESOURCE_PREFIX)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        return config, credentials

    def _set_targets(self, namespace: str, config: RegistryConfig, credentials: Mapping[str, Credentials]) -> None:
        if self.upstreams is not None:
            self.upstreams.set_targets(namespace, [Target(c.upstream, remote_url(c), credentials[c.upstream])
                                                   for c in config.caches if c.upstream in credentials])

    def reconcile(self, extension: dict[str, Any]) -> RegistryStatus | None:
        """Deliver the caches; None when the shoot is hibernated (nothing done)."""
        namespace = extension["metadata"]["namespace"]
        resolved = self._resolve(extension)
        if resolved is None:
            log.info("%s: shoot is hibernated, nothing to do", namespace)
            return None
        config, credentials = resolved
        status = self._caches(namespace).deploy(config, credentials, check_update=check_update)
        self._set_targets(namespace, config, credentials)
        return status

    def learn_upstreams(self, extension: dict[str, Any]) -> None:
        """Tell the upstream checks what an Extension that needs no reconcile pulls from (after a restart of
        the controller): reads the Cluster and the referenced Secrets, changes nothing."""
        resolved = self._resolve(extension)
        if resolved is not None:
            self._set_targets(extension["metadata"]["namespace"], *resolved)

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

    def restore(self, extension: dict[str, Any]) -> RegistryStatus | None:
        return self.reconcile(extension)


def check_update(delivered: RegistryConfig, config: RegistryConfig) -> None:
    """The update rules (volume size and class immutable, garbage collection not enabled again once disabled),
    checked against what was delivered: under Gardener (``--webhooks seed``) no Shoot webhook of ours enforced
    them. Gardener's words, on the Extension's field paths."""
    errors = validate_registry_config_update(delivered, config, PROVIDER_CONFIG_PATH)
    if errors:
        raise ConfigurationError("; ".join(str(e) for e in errors))
