"""Standalone mode: gardenlet's part for this extension alone, for clusters without Gardener.

For every Shoot that enables ``registry-cache`` or ``registry-mirror`` the bridge keeps, in the seed (here: the
same API server): the namespace ``shoot--<project>--<name>`` (labelled with the extension types it uses, as
gardenlet labels it), the Cluster named like it, ``ref-<secret>`` copies of the Secrets in ``spec.resources``,
and per type the Extension named after it with the providerConfig, annotated ``gardener.cloud/operation:
reconcile`` whenever the Shoot changes. It removes an Extension when the Shoot drops its type, and all of them
when the Shoot is deleted (a finalizer on the Shoot waits for the Extensions' cleanup); the then empty
namespace is left in place.
Under a real Gardener this is off: gardenlet does all of it.
"""

from __future__ import annotations

import logging
from typing import Any

from api import shoot as shootlib
from extension.constants import (
    BRIDGE_FINALIZER,
    BRIDGE_LABEL,
    EXTENSION_TYPES,
    OPERATION_ANNOTATION,
    OPERATION_RECONCILE,
    REFERENCED_RESOURCE_PREFIX,
    SHOOT_GENERATION_ANNOTATION,
    extension_namespace_label,
)
from extension.kube import Kube

log = logging.getLogger(__name__)



class Bridge:
    def __init__(self, kube: Kube):
        self.kube = kube  # its own field manager: registry-cache-bridge

    @staticmethod
    def seed_namespace(shoot: dict[str, Any]) -> str:
        meta = shoot["metadata"]
        return shootlib.technical_namespace(shootlib.project_of_namespace(meta["namespace"]), meta["name"])

    def sync(self, shoot: dict[str, Any]) -> str:
        """Bring the seed side in line with the Shoot. Returns what it did, for logs and tests."""
        meta = shoot["metadata"]
        wanted = [t for t in EXTENSION_TYPES if shootlib.find_extension(shoot, t) is not None]
        if meta.get("deletionTimestamp") or not wanted:
            if BRIDGE_FINALIZER not in (meta.get("finalizers") or []):
                return "nothing"
            return "cleaned-up" if self.cleanup(shoot) else "waiting-for-extension"
        if BRIDGE_FINALIZER not in (meta.get("finalizers") or []):
            self.kube.patch("Shoot", meta["name"], {"metadata": {
                "finalizers": list(meta.get("finalizers") or []) + [BRIDGE_FINALIZER],
                "resourceVersion": meta["resourceVersion"]}}, meta["namespace"])
        ns = self.seed_namespace(shoot)
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": ns, "labels": {BRIDGE_LABEL: "true", "gardener.cloud/role": "shoot",
                                                             **{extension_namespace_label(t): "true"
                                                                for t in wanted}}}})
        self.kube.apply(self._cluster(ns, shoot))
        self._sync_references(ns, shoot)
        for extension_type in EXTENSION_TYPES:
            if extension_type in wanted:
                self._sync_extension(ns, shoot, extension_type)
            elif self.kube.get("Extension", extension_type, ns) is not None:
                self.kube.delete("Extension", extension_type, ns)  # the Shoot dropped this type
                log.info("%s: Extension %s removed (no longer in the Shoot)", ns, extension_type)
        return "synced"

    def _cluster(self, ns: str, shoot: dict[str, Any]) -> dict[str, Any]:
        shoot_copy = {k: v for k, v in shoot.items() if k != "status"}
        shoot_copy["metadata"] = {k: v for k, v in shoot["metadata"].items() if k != "managedFields"}
        return {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
                "metadata": {"name": ns, "labels": {BRIDGE_LABEL: "true"}},
                "spec": {"shoot": shoot_copy,
                         "seed": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
                                  "metadata": {"name": "standalone"}},
                         "cloudProfile": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
                                          "metadata": {"name": "standalone"}}}}

    def _sync_references(self, ns: str, shoot: dict[str, Any]) -> None:
        wanted: set[str] = set()
        for res in shootlib.resources(shoot):
            ref = res.get("resourceRef") or {}
            if ref.get("kind") != "Secret" or not ref.get("name"):
                continue
            source = self.kube.get("Secret", ref["name"], shoot["metadata"]["namespace"])
            if source is None:
                log.warning("%s: Secret %s/%s of spec.resources[%s] does not exist", ns,
                            shoot["metadata"]["namespace"], ref["name"], res.get("name"))
                continue
            name = REFERENCED_RESOURCE_PREFIX + ref["name"]
            wanted.add(name)
            self.kube.apply({"apiVersion": "v1", "kind": "Secret", "type": source.get("type", "Opaque"),
                             "metadata": {"name": name, "namespace": ns, "labels": {BRIDGE_LABEL: "true"}},
                             "data": source.get("data") or {}})
        for secret in self.kube.list("Secret", ns, label_selector=f"{BRIDGE_LABEL}=true"):
            if secret["metadata"]["name"] not in wanted:
                self.kube.delete("Secret", secret["metadata"]["name"], ns)

    def _sync_extension(self, ns: str, shoot: dict[str, Any], extension_type: str) -> None:
        entry = shootlib.find_extension(shoot, extension_type)
        assert entry is not None
        current = self.kube.get("Extension", extension_type, ns)
        generation = str(shoot["metadata"].get("generation", ""))
        annotations = {SHOOT_GENERATION_ANNOTATION: generation}
        if current is None or (current["metadata"].get("annotations") or {}).get(
                SHOOT_GENERATION_ANNOTATION) != generation:
            annotations[OPERATION_ANNOTATION] = OPERATION_RECONCILE
        elif current["metadata"].get("deletionTimestamp"):
            return  # being removed; recreated on the next change
        self.kube.apply({
            "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
            "metadata": {"name": extension_type, "namespace": ns, "labels": {BRIDGE_LABEL: "true"},
                         "annotations": annotations},
            "spec": {"type": extension_type, "providerConfig": entry.provider_config},
        })
        if OPERATION_ANNOTATION in annotations:
            log.info("%s: Extension %s asked to reconcile (shoot generation %s)", ns, extension_type, generation)

    def resync_shoot_of(self, namespace: str) -> None:
        """The Extension in ``namespace`` is gone: sync its Shoot again, so that its cleanup finishes."""
        cluster = self.kube.get("Cluster", namespace)
        shoot_meta = (((cluster or {}).get("spec") or {}).get("shoot") or {}).get("metadata") or {}
        if shoot_meta.get("name"):
            shoot = self.kube.get("Shoot", shoot_meta["name"], shoot_meta.get("namespace"))
            if shoot is not None:
                log.info("bridge: %s/%s: %s", shoot_meta.get("namespace"), shoot_meta["name"], self.sync(shoot))

    def cleanup(self, shoot: dict[str, Any]) -> bool:
        """Delete the Extensions; once they are gone, the copies, the Cluster and the finalizer. False while an
        Extension is still being cleaned up by the controller."""
        ns = self.seed_namespace(shoot)
        waiting = False
        for extension_type in EXTENSION_TYPES:
            if self.kube.get("Extension", extension_type, ns) is not None:
                self.kube.delete("Extension", extension_type, ns)
                waiting |= self.kube.get("Extension", extension_type, ns) is not None
        if waiting:
            return False
        for secret in self.kube.list("Secret", ns, label_selector=f"{BRIDGE_LABEL}=true"):
            self.kube.delete("Secret", secret["metadata"]["name"], ns)
        self.kube.delete("Cluster", ns)
        # The namespace stays (empty): without a namespace controller (the local control plane has none) a
        # deleted namespace would stay Terminating and block the same Shoot from being created again.
        meta = shoot["metadata"]
        current = self.kube.get("Shoot", meta["name"], meta["namespace"])
        if current is not None:
            finalizers = [f for f in (current["metadata"].get("finalizers") or []) if f != BRIDGE_FINALIZER]
            self.kube.patch("Shoot", meta["name"], {"metadata": {
                "finalizers": finalizers, "resourceVersion": current["metadata"]["resourceVersion"]}},
                meta["namespace"])
        log.info("%s: removed (shoot %s/%s)", ns, meta["namespace"], meta["name"])
        return True
