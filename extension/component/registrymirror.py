"""The registry mirrors of one ``registry-mirror`` Extension: configuration for nodes, no workloads.

Under Gardener the mirrors reach the nodes through the OperatingSystemConfig webhook
(:mod:`extension.webhook.osc`); in standalone mode the node agent reads them from a ConfigMap in the shoot,
which :class:`RegistryMirrors` delivers and removes. :func:`plan` is pure: the same registry entries and CA
bundle files for both ways.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from api.mirror_v1alpha1 import MirrorConfig
from extension import constants as c
from extension.component.objects import RenderedObject, RenderOptions, render_mirror_node_config
from extension.component.registrycache import as_delivered, rendered_hash, with_hash
from extension.component.shootview import live_record
from extension.errors import WouldWrite
from extension.runtime.kube import Kube

log = logging.getLogger(__name__)


def plan(config: MirrorConfig, ca_bundles: Mapping[tuple[str, str], bytes], options: RenderOptions) -> RenderedObject:
    """Pure: the node agent's ConfigMap of a defaulted config; ``ca_bundles`` per (upstream, host)."""
    return render_mirror_node_config(config, ca_bundles, options)


class RegistryMirrors:
    """The mirrors of the Extension in seed namespace ``owner``, delivered to ``shoot`` for the node agent."""

    def __init__(self, shoot: Kube, owner: str, options: RenderOptions):
        self.shoot, self.owner = shoot, owner
        self.options = replace(options, owner=owner)

    def _selector(self) -> str:
        return f"{c.MANAGED_BY_LABEL}={c.MIRROR_MANAGED_BY},{c.OWNER_LABEL}={self.owner}"

    def deploy(self, config: MirrorConfig, ca_bundles: Mapping[tuple[str, str], bytes],
               recorded: tuple[str, str] | None = None, dry_run: bool = False) -> tuple[str, str]:
        """Apply the ConfigMap unless it is as delivered (its metadata read: the hash it was rendered from, the
        version the last apply left, no other field manager), prune what this Extension published before under
        another name; (hash, resourceVersion) of it. ``dry_run``: raise WouldWrite instead of writing."""
        wanted = plan(config, ca_bundles, self.options)
        digest = rendered_hash(wanted.obj)
        meta = self.shoot.get("ConfigMap", wanted.name, self.options.namespace, metadata_only=True)
        live = live_record(meta) if meta is not None else None
        if as_delivered(live, digest, recorded) and live is not None:
            return digest, live.version
        if dry_run:
            raise WouldWrite(f"ConfigMap {self.options.namespace}/{wanted.name}")
        applied = self.shoot.apply(with_hash(wanted.obj, digest))
        self._prune(keep={wanted.name})
        return digest, str(applied["metadata"].get("resourceVersion", ""))

    def destroy(self) -> None:
        self._prune(keep=set())

    def _prune(self, keep: set[str]) -> None:
        namespace = self.options.namespace
        for obj in self.shoot.list("ConfigMap", namespace, label_selector=self._selector()):
            name = obj["metadata"]["name"]
            if name not in keep:
                log.info("pruning ConfigMap %s/%s", namespace, name)
                self.shoot.delete("ConfigMap", name, namespace)
