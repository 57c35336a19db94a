"""The actuator of a ``registry-mirror`` Extension: no workloads, only configuration for the nodes.

Gardener's mirror actuator does nothing at all: its OperatingSystemConfig webhook reads the Extension's
providerConfig and the CA bundles whenever a node configuration is made. Here the same webhook does that under
Gardener (:mod:`extension.webhook.osc`); for the node agent of standalone mode this actuator publishes the same
registry entries and CA bundle files in a ConfigMap of the shoot (:mod:`extension.component.registrymirror`),
and removes it on Delete. Decoding and validation are the admission's (:mod:`api.mirror_validation`); the CA
bundles are read from gardenlet's ``ref-`` copies, as Gardener's ensurer reads them.
"""

from __future__ import annotations

import logging
from typing import Any

from api.admission import resolve_ca_bundles
from api.field import ValidationFailed
from api.mirror_v1alpha1 import MirrorConfig
from api.mirror_validation import decode_and_default_mirror, validate_mirror_config
from api.shoot import MIRROR_EXTENSION_TYPE
from extension.component.objects import RenderOptions
from extension.component.registrymirror import RegistryMirrors
from extension.constants import REFERENCED_RESOURCE_PREFIX
from extension.controller.actuator import Actuator, Outcome, ShootTarget, decode_provider_config
from extension.errors import ConfigurationError, WouldWrite
from extension.runtime.kube import Kube

log = logging.getLogger(__name__)


class MirrorActuator:
    extension_type = MIRROR_EXTENSION_TYPE
    what = "registry mirrors"

    def __init__(self, seed: Kube, shoot_target: ShootTarget, options: RenderOptions,
                 readers: Actuator | None = None):
        self.seed = seed
        self.shoot_target = shoot_target
        self.options = options
        # the Cluster and Secret readers (the caches' actuator: its seed cache)
        self._cluster = readers or Actuator(seed, shoot_target, options)
        self._records: dict[str, tuple[str, str]] = {}  # namespace -> (hash, resourceVersion) of its ConfigMap

    def decode(self, extension: dict[str, Any]) -> MirrorConfig:
        return decode_provider_config(extension, MIRROR_EXTENSION_TYPE, decode_and_default_mirror,
                                      validate_mirror_config)

    def _mirrors(self, namespace: str) -> RegistryMirrors:
        return RegistryMirrors(self.shoot_target(namespace), namespace, self.options)

    def reconcile(self, extension: dict[str, Any], dry_run: bool = False) -> Outcome:
        """Publish the mirrors' node configuration; sent only when it is not as delivered. ``dry_run``: raise
        WouldWrite instead of writing."""
        namespace = extension["metadata"]["namespace"]
        _, shoot_spec = self._cluster.cluster_shoot(namespace)
        config = self.decode(extension)
        try:
            bundles = resolve_ca_bundles(shoot_spec, config, self._cluster.get_secret, namespace,
                                         name_prefix=REFERENCED_RESOURCE_PREFIX)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        self._records[namespace] = self._mirrors(namespace).deploy(config, bundles, self._records.get(namespace),
                                                                   dry_run)
        upstreams = ", ".join(m.upstream for m in config.mirrors)
        return Outcome(None, f"The registry mirrors are configured for the nodes ({upstreams})")

    def in_sync(self, extension: dict[str, Any]) -> bool:
        """Whether the node configuration is as delivered (reads only: the Cluster and CA bundles from the seed
        cache, the ConfigMap's metadata)."""
        namespace = extension["metadata"]["namespace"]
        try:
            self.reconcile(extension, dry_run=True)
            return True
        except WouldWrite as exc:
            log.info("%s: not as delivered (%s)", namespace, exc.what)
        except Exception as exc:  # noqa: BLE001 - the reconcile that follows reports it
            log.info("%s: cannot tell whether the mirrors are as delivered: %s", namespace, exc)
        self._records.pop(namespace, None)
        return False

    def forget(self, namespace: str) -> None:
        self._records.pop(namespace, None)

    def restore(self, extension: dict[str, Any]) -> Outcome:
        return self.reconcile(extension)

    def delete(self, extension: dict[str, Any]) -> None:
        self._records.pop(extension["metadata"]["namespace"], None)
        self._mirrors(extension["metadata"]["namespace"]).destroy()

    def migrate(self, extension: dict[str, Any]) -> None:
        log.info("%s: migrate: the mirrors stay configured on the nodes", extension["metadata"]["namespace"])
