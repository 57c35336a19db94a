"""Admission of a Shoot that enables the extension, with Gardener's rules and words.

Mirrors ``pkg/admission/validator/cache`` of the Go extension: the providerConfig (decoding, defaults, every
rule of :mod:`api.validation`, and on update the immutable fields), every worker on containerd, and each
``secretReferenceName`` followed through ``spec.resources`` to a usable Secret. Two deliberate differences:
every error is reported at once (Go stops at the first "hard" error such as a missing Secret or a
non-containerd worker), and each of those errors carries a field path too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api import field
from api import shoot as shootlib
from api.credentials import credential_errors, extract_credentials
from api.field import FieldError, Path, ValidationFailed
from api.secrets import Credentials, SecretData
from api.v1alpha3 import RegistryConfig
from api.validation import decode_and_default, validate_registry_config, validate_registry_config_update

SecretGetter = Callable[[str, str], SecretData | None]  # (namespace, name) -> Secret or None


@dataclass
class ShootValidation:
    """The outcome of validating a Shoot: the decoded, defaulted config (when it decoded) and the errors."""

    config: RegistryConfig | None
    errors: list[FieldError]
    extension_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _validate_workers(shoot: dict[str, Any]) -> list[FieldError]:
    errs = []
    for i, worker in enumerate(shootlib.workers(shoot)):
        cri = worker.get("cri") if isinstance(worker, dict) else None
        name = cri.get("name") if isinstance(cri, dict) else None
        if name is not None and name != "containerd":  # Gardener defaults a missing CRI to containerd
            errs.append(field.invalid(Path("spec", "provider", "workers").index(i).child("cri", "name"), name,
                                      "container runtime needs to be containerd when the registry-cache "
                                      "extension is enabled"))
    return errs


def referenced_secret_name(shoot: dict[str, Any], reference: str) -> str | None:
    """``spec.resources[name=reference].resourceRef.name`` when it refers to a Secret."""
    for res in shootlib.resources(shoot):
        if res.get("name") == reference:
            ref = res.get("resourceRef")
            if isinstance(ref, dict) and ref.get("kind") == "Secret" and isinstance(ref.get("name"), str):
                return ref["name"]
            return None
    return None


def check_credentials(shoot: dict[str, Any], config: RegistryConfig, path: Path, get_secret: SecretGetter | None,
                      namespace: str | None = None, name_prefix: str = "",
                      require_immutable: bool = True) -> tuple[dict[str, Credentials], list[FieldError]]:
    """Follow every ``secretReferenceName`` through ``spec.resources`` to its Secret and check it.

    ``get_secret(namespace, name)`` is asked for ``name_prefix + resourceRef.name`` in ``namespace`` (the
    Shoot's by default; the seed namespace and ``ref-`` for gardenlet's copies). Returns the credentials per
    upstream and the errors, Gardener's words, each on the cache's ``secretReferenceName``.
    """
    credentials: dict[str, Credentials] = {}
    errs: list[FieldError] = []
    if namespace is None:
        namespace = (shoot.get("metadata") or {}).get("namespace") or ""
    for i, cache in enumerate(config.caches):
        reference = cache.secret_reference_name
        if reference is None:
            continue
        p = path.child("caches").index(i).child("secretReferenceName")
        secret_name = referenced_secret_name(shoot, reference)
        if secret_name is None:
            errs.append(field.invalid(p, reference,
                                      f"failed to find referenced resource with name {reference} and kind Secret"))
            continue
        name = name_prefix + secret_name
        secret = get_secret(namespace, name) if get_secret else None
        if secret is None:
            where = f"{namespace}/{name}" if namespace else name
            errs.append(field.invalid(p, reference, f"failed to get secret {where} for secretReferenceName "
                                                    f'{reference}: secrets "{name}" not found'))
            continue
        problems = credential_errors(secret, cache.upstream, p, reference, require_immutable=require_immutable)
        if problems:
            errs += problems
        else:
            credentials[cache.upstream] = extract_credentials(secret, cache.upstream)
    return credentials, errs


def _referenced(shoot: dict[str, Any], config: RegistryConfig) -> list[tuple[str, str | None]]:
    return [(c.secret_reference_name, referenced_secret_name(shoot, c.secret_reference_name))
            for c in config.caches if c.secret_reference_name is not None]


def validate_shoot(shoot: dict[str, Any], old_shoot: dict[str, Any] | None = None,
                   get_secret: SecretGetter | None = None) -> ShootValidation:
    """Validate the registry-cache part of a Shoot as the admission webhook does, on create or update.

    ``get_secret(namespace, name)`` returns a referenced Secret or None when it does not exist.
    """
    entry = shootlib.find_registry_cache_extension(shoot)
    if entry is None:
        return ShootValidation(None, [])
    path = entry.path.child("providerConfig")
    errs = shootlib.identity_errors(shoot) + _validate_workers(shoot)
    if entry.provider_config is None:
        errs.append(field.required(path, "providerConfig is required for the registry-cache extension"))
        return ShootValidation(None, errs, entry.path)
    try:
        config = decode_and_default(entry.provider_config, path)
    except ValidationFailed as exc:
        return ShootValidation(None, errs + exc.errors, entry.path)
    if old_shoot is not None:
        old_entry = shootlib.find_registry_cache_extension(old_shoot)
        if old_entry is not None and old_entry.provider_config is not None:
            try:
                old_config = decode_and_default(old_entry.provider_config, path)
            except ValidationFailed:
                old_config = None  # the old object was stored before; nothing to compare against
            if old_config is not None:
                if old_config == config and _referenced(old_shoot, old_config) == _referenced(shoot, config):
                    return ShootValidation(config, errs, entry.path)  # nothing of ours changed
                errs += validate_registry_config_update(old_config, config, path)
    errs += validate_registry_config(config, path)
    errs += check_credentials(shoot, config, path, get_secret)[1]
    return ShootValidation(config, errs, entry.path)


def resolve_credentials(shoot: dict[str, Any], config: RegistryConfig, get_secret: SecretGetter,
                        namespace: str, config_path: Path | None = None,
                        name_prefix: str = "") -> dict[str, Credentials]:
    """Credentials per upstream for every cache with a ``secretReferenceName``, read from ``namespace``
    (in the seed: gardenlet's copies, ``name_prefix`` ``ref-``, whose immutability is not the user's to set).
    Raises :class:`ValidationFailed` naming the reference when it cannot be followed or the Secret is unusable.
    """
    credentials, errors = check_credentials(shoot, config, config_path or Path("providerConfig"), get_secret,
                                            namespace=namespace, name_prefix=name_prefix,
                                            require_immutable=not name_prefix)
    if errors:
        raise ValidationFailed(errors)
    return credentials
