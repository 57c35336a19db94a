"""Small builders shared by the unit tests."""

from __future__ import annotations

import copy
from typing import Any

from api.field import Path
from api.v1alpha3 import API_VERSION

PC = Path("spec", "extensions").index(0).child("providerConfig")


def config(*caches: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "RegistryConfig", "caches": list(caches)}


def shoot(provider_config: Any = None, resources: list[dict[str, Any]] | None = None,
          workers: list[dict[str, Any]] | None = None, extension_type: str = "registry-cache") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "extensions": [{"type": extension_type, "providerConfig": copy.deepcopy(provider_config)}],
        "provider": {"type": "local", "workers": workers if workers is not None else
                     [{"name": "w1", "cri": {"name": "containerd"}}]},
    }
    if resources is not None:
        spec["resources"] = resources
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": "crazy-botany", "namespace": "garden-dev"}, "spec": spec}


def resource(name: str, secret: str, kind: str = "Secret") -> dict[str, Any]:
    return {"name": name, "resourceRef": {"apiVersion": "v1", "kind": kind, "name": secret}}


def strs(errors) -> list[str]:
    return [str(e) for e in errors]
