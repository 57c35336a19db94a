"""The OperatingSystemConfig webhook: Gardener's ensurer for this extension.

Under Gardener, gardener-node-agent writes ``hosts.toml`` on every node from the OperatingSystemConfig's
``criConfig.containerd.registries``. This webhook upserts one entry per cache (from the Extension's provider
status) and the CA bundle file nodes trust, as the Go extension's ensurer does. Skipped for a shoot being
deleted or hibernated, and until the Extension reports its caches.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from api import shoot as shootlib
from api.v1alpha3 import RegistryStatus
from extension.component import tls
from extension.component.containerd import containerd_registries
from extension.constants import CA_BUNDLE_PATH, EXTENSION_NAME
from extension.kube import Kube

log = logging.getLogger(__name__)

CA_BUNDLE_FILE_PERMISSIONS = 0o644


def osc_patch(osc: dict[str, Any], entries: list[dict[str, Any]], ca_bundle: str | None) -> dict[str, Any] | None:
    """What the OperatingSystemConfig webhook changes, as Gardener's ensurer does: upsert one containerd
    registry entry per cache (by upstream) and the CA bundle file; everything else stays. None: no change."""
    spec = osc.get("spec") or {}
    cri = spec.get("criConfig") or {}
    containerd = cri.get("containerd") or {}
    registries = list(containerd.get("registries") or [])
    for entry in entries:
        for i, existing in enumerate(registries):
            if isinstance(existing, dict) and existing.get("upstream") == entry["upstream"]:
                registries[i] = entry
                break
        else:
            registries.append(entry)
    files = list(spec.get("files") or [])
    if ca_bundle:
        file = {"path": CA_BUNDLE_PATH, "permissions": CA_BUNDLE_FILE_PERMISSIONS,
                "content": {"inline": {"encoding": "b64", "data": base64.b64encode(ca_bundle.encode()).decode()}}}
        for i, existing in enumerate(files):
            if isinstance(existing, dict) and existing.get("path") == CA_BUNDLE_PATH:
                files[i] = file
                break
        else:
            files.append(file)
    new_spec = {"criConfig": {**cri, "containerd": {**containerd, "registries": registries}}, "files": files}
    if new_spec["criConfig"] == spec.get("criConfig") and files == (spec.get("files") or []):
        return None
    return new_spec


def ensure(seed: Kube, osc: dict[str, Any]) -> dict[str, Any] | None:
    """The new ``criConfig`` and ``files`` of an OperatingSystemConfig in a shoot namespace of ``seed``, or
    None when nothing is to change."""
    namespace = osc["metadata"]["namespace"]
    cluster = seed.get("Cluster", namespace) or {}
    shoot = (cluster.get("spec") or {}).get("shoot") or {}
    if (shoot.get("metadata") or {}).get("deletionTimestamp") or shootlib.is_hibernated(shoot):
        return None
    ext = seed.get("Extension", EXTENSION_NAME, namespace) or {}
    provider_status = (ext.get("status") or {}).get("providerStatus")
    if not provider_status:
        log.warning("OperatingSystemConfig %s/%s: the registry-cache Extension reports no caches yet; unchanged",
                    namespace, osc["metadata"].get("name"))
        return None
    status = RegistryStatus.model_validate(provider_status)
    ca_bundle = tls.ca_bundle(seed, namespace) if status.ca_secret_name else None
    return osc_patch(osc, containerd_registries(status), ca_bundle)
