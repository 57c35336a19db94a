"""The OperatingSystemConfig webhooks: Gardener's ensurers of the two extension types.

Under Gardener, gardener-node-agent writes ``/etc/containerd/certs.d/<upstream>/hosts.toml`` on every node
from the OperatingSystemConfig's ``criConfig.containerd.registries``, and the files of ``spec.files``. These
webhooks upsert, as the Go extension's ensurers do:

- ``registry-cache``: one entry per cache (from the Extension's provider status) and the CA bundle file nodes
  trust; skipped for a shoot being deleted or hibernated, and until the Extension reports its caches;
- ``registry-mirror``: one entry per mirrored upstream (from the Extension's providerConfig) and the CA bundle
  file of each private mirror beside its ``hosts.toml`` (from gardenlet's ``ref-`` copies); skipped for a shoot
  being deleted. A missing Extension or CA bundle Secret refuses the request, as Gardener's ensurer does; so
  does a providerConfig that does not validate (Gardener's ensurer relies on admission for that).
"""

from __future__ import annotations

import logging
from typing import Any

from api import shoot as shootlib
from api.admission import resolve_ca_bundles
from api.field import Path, ValidationFailed
from api.mirror_validation import decode_and_default_mirror, validate_mirror_config
from api.secrets import secret_from_manifest
from api.v1alpha3 import RegistryStatus
from extension.component import tls
from extension.component.containerd import ca_file, containerd_registries, mirror_files, mirror_registries
from extension.constants import CA_BUNDLE_PATH, EXTENSION_NAME, MIRROR_EXTENSION_NAME, REFERENCED_RESOURCE_PREFIX
from extension.errors import ConfigurationError
from extension.runtime.kube import Kube

log = logging.getLogger(__name__)

PROVIDER_CONFIG_PATH = Path("spec", "providerConfig")


def _upsert(items: list[Any], item: dict[str, Any], key: str) -> None:
    for i, existing in enumerate(items):
        if isinstance(existing, dict) and existing.get(key) == item[key]:
            items[i] = item
            return
    items.append(item)


def osc_patch(osc: dict[str, Any], entries: list[dict[str, Any]], files: list[dict[str, Any]] | str | None
              ) -> dict[str, Any] | None:
    """What an OperatingSystemConfig webhook changes, as Gardener's ensurers do: upsert containerd registry entries
    (by upstream) and files (by path); everything else stays. ``files`` may be the caches' CA bundle (PEM text).
    None: no change."""
    if isinstance(files, str):
        files = [ca_file(CA_BUNDLE_PATH, files)]
    spec = osc.get("spec") or {}
    cri = spec.get("criConfig") or {}
    containerd = cri.get("containerd") or {}
    registries = list(containerd.get("registries") or [])
    for entry in entries:
        _upsert(registries, entry, "upstream")
    new_files = list(spec.get("files") or [])
    for file in files or []:
        _upsert(new_files, file, "path")
    new_spec = {"criConfig": {**cri, "containerd": {**containerd, "registries": registries}}, "files": new_files}
    if new_spec["criConfig"] == spec.get("criConfig") and new_files == (spec.get("files") or []):
        return None
    return new_spec


def _cluster_shoot(seed: Kube, namespace: str) -> dict[str, Any]:
    cluster = seed.get("Cluster", namespace) or {}
    return (cluster.get("spec") or {}).get("shoot") or {}


def ensure(seed: Kube, osc: dict[str, Any]) -> dict[str, Any] | None:
    """The new ``criConfig`` and ``files`` for the caches of an OperatingSystemConfig in a shoot namespace of
    ``seed``, or None when nothing is to change."""
    namespace = osc["metadata"]["namespace"]
    shoot = _cluster_shoot(seed, namespace)
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


def ensure_mirror(seed: Kube, osc: dict[str, Any]) -> dict[str, Any] | None:
    """The new ``criConfig`` and ``files`` for the mirrors, or None when nothing is to change. Raises
    :class:`ConfigurationError` when the Extension, its providerConfig or a CA bundle cannot be read (Gardener's
    ensurer fails the request then)."""
    namespace = osc["metadata"]["namespace"]
    shoot = _cluster_shoot(seed, namespace)
    if (shoot.get("metadata") or {}).get("deletionTimestamp"):
        return None
    ext = seed.get("Extension", MIRROR_EXTENSION_NAME, namespace)
    if ext is None:
        raise ConfigurationError(f"failed to get extension '{namespace}/{MIRROR_EXTENSION_NAME}': not found")
    raw = (ext.get("spec") or {}).get("providerConfig")
    if raw is None:
        raise ConfigurationError(f"extension '{namespace}/{MIRROR_EXTENSION_NAME}' does not have a "
                                 ".spec.providerConfig specified")
    try:
        config = decode_and_default_mirror(raw, PROVIDER_CONFIG_PATH)
        # as the actuator does: an upstream or host the Shoot's admission would have refused (``..``, ``/``) would
        # name a CA file outside /etc/containerd/certs.d, and gardener-node-agent writes files where they say
        errors = validate_mirror_config(config, PROVIDER_CONFIG_PATH)
        if errors:
            raise ValidationFailed(errors)

        def get_secret(ns: str, name: str):
            obj = seed.get("Secret", name, ns)
            return secret_from_manifest({"apiVersion": "v1", "kind": "Secret", **obj}) if obj else None

        bundles = resolve_ca_bundles(shoot, config, get_secret, namespace, name_prefix=REFERENCED_RESOURCE_PREFIX)
    except ValidationFailed as exc:
        raise ConfigurationError(f"extension '{namespace}/{MIRROR_EXTENSION_NAME}': {exc}") from None
    return osc_patch(osc, mirror_registries(config), mirror_files(config, bundles))
