"""The parts of a ``core.gardener.cloud/v1beta1`` Shoot this extension reads, as plain functions on dicts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from api import field
from api.field import FieldError, Path

EXTENSION_TYPE = "registry-cache"
MIRROR_EXTENSION_TYPE = "registry-mirror"
EXTENSION_TYPES = (EXTENSION_TYPE, MIRROR_EXTENSION_TYPE)  # what this controller registers for
SHOOT_API_VERSION = "core.gardener.cloud/v1beta1"
SHOOT_KIND = "Shoot"


@dataclass(frozen=True)
class ExtensionEntry:
    index: int
    provider_config: Any
    path: Path  # spec.extensions[i]


def _spec(shoot: dict[str, Any]) -> dict[str, Any]:
    spec = shoot.get("spec") if isinstance(shoot, dict) else None
    return spec if isinstance(spec, dict) else {}


def extensions_of_type(shoot: dict[str, Any], extension_type: str) -> Iterator[ExtensionEntry]:
    """Every enabled entry of ``spec.extensions`` of one type."""
    extensions = _spec(shoot).get("extensions") or []
    if not isinstance(extensions, list):
        return
    for i, ext in enumerate(extensions):
        if isinstance(ext, dict) and ext.get("type") == extension_type and ext.get("disabled") is not True:
            yield ExtensionEntry(i, ext.get("providerConfig"), Path("spec", "extensions").index(i))


def find_extension(shoot: dict[str, Any], extension_type: str) -> ExtensionEntry | None:
    return next(extensions_of_type(shoot, extension_type), None)


def registry_cache_extensions(shoot: dict[str, Any]) -> Iterator[ExtensionEntry]:
    """Every enabled ``registry-cache`` entry of ``spec.extensions``."""
    return extensions_of_type(shoot, EXTENSION_TYPE)


def find_registry_cache_extension(shoot: dict[str, Any]) -> ExtensionEntry | None:
    return find_extension(shoot, EXTENSION_TYPE)


def find_registry_mirror_extension(shoot: dict[str, Any]) -> ExtensionEntry | None:
    return find_extension(shoot, MIRROR_EXTENSION_TYPE)


def resources(shoot: dict[str, Any]) -> list[dict[str, Any]]:
    items = _spec(shoot).get("resources") or []
    return [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []


def resource_index(shoot: dict[str, Any], name: str) -> int | None:
    for i, res in enumerate(_spec(shoot).get("resources") or []):
        if isinstance(res, dict) and res.get("name") == name:
            return i
    return None


def workers(shoot: dict[str, Any]) -> list[Any]:
    provider = _spec(shoot).get("provider")
    items = provider.get("workers") if isinstance(provider, dict) else None
    return items if isinstance(items, list) else []


def wants_vpa(shoot: dict[str, Any]) -> bool:
    """Gardener's ``ShootWantsVerticalPodAutoscaler``: ``spec.kubernetes.verticalPodAutoscaler.enabled``."""
    kubernetes = _spec(shoot).get("kubernetes")
    vpa = kubernetes.get("verticalPodAutoscaler") if isinstance(kubernetes, dict) else None
    return isinstance(vpa, dict) and vpa.get("enabled") is True


PURPOSE_TESTING = "testing"


def purpose(shoot: dict[str, Any]) -> str:
    """Gardener's ``GetPurpose``: ``spec.purpose``, ``evaluation`` when unset."""
    value = _spec(shoot).get("purpose")
    return value if isinstance(value, str) and value else "evaluation"


def is_hibernated(shoot: dict[str, Any]) -> bool:
    hibernation = _spec(shoot).get("hibernation")
    return isinstance(hibernation, dict) and hibernation.get("enabled") is True


def technical_namespace(project: str, name: str) -> str:
    """The seed namespace of a shoot: ``shoot--<project>--<name>``."""
    return f"shoot--{project}--{name}"


GARDEN_NAMESPACE = "garden"
PROJECT_NAMESPACE_PREFIX = "garden-"
CONSECUTIVE_HYPHENS = "name may not contain two consecutive hyphens"  # Gardener's words


def project_of_namespace(namespace: str) -> str:
    """Gardener's project namespaces are ``garden-<project>`` (``garden`` is the project ``garden``)."""
    if namespace == GARDEN_NAMESPACE:
        return GARDEN_NAMESPACE
    return namespace[len(PROJECT_NAMESPACE_PREFIX):] if namespace.startswith(PROJECT_NAMESPACE_PREFIX) else namespace


def identity_errors(shoot: dict[str, Any]) -> list[FieldError]:
    """What keeps the seed namespace ``shoot--<project>--<name>`` of a Shoot from being its own.

    Gardener refuses ``--`` in Shoot and project names (so ``garden-dev/x--y`` and ``garden-dev--x/y`` cannot
    both become ``shoot--dev--x--y``). Without Gardener the project is read from the namespace, so the namespace
    must be a project namespace (``garden`` or ``garden-<project>``) and ``garden-garden`` is refused too (the
    project ``garden`` lives in ``garden``).
    """
    meta = shoot.get("metadata") if isinstance(shoot, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    errs: list[FieldError] = []
    name, namespace = meta.get("name"), meta.get("namespace")
    if isinstance(name, str) and "--" in name:
        errs.append(field.invalid(Path("metadata", "name"), name, CONSECUTIVE_HYPHENS))
    if isinstance(namespace, str):
        path = Path("metadata", "namespace")
        project = project_of_namespace(namespace)
        if namespace != GARDEN_NAMESPACE and not namespace.startswith(PROJECT_NAMESPACE_PREFIX):
            errs.append(field.invalid(path, namespace, "must be a project namespace: garden or garden-<project>"))
        elif namespace == PROJECT_NAMESPACE_PREFIX + GARDEN_NAMESPACE:
            errs.append(field.invalid(path, namespace, "the project garden has the namespace garden"))
        elif not project:
            errs.append(field.invalid(path, namespace, "the project name after garden- is empty"))
        elif "--" in project:
            errs.append(field.invalid(path, namespace, f'project "{project}" (from the namespace garden-<project>): '
                                                       f"{CONSECUTIVE_HYPHENS}"))
    return errs
