"""Admission of a Shoot that enables the extensions, with Gardener's rules and words.

``registry-cache`` as ``pkg/admission/validator/cache`` of the Go extension: the providerConfig (decoding,
defaults, every rule of :mod:`api.validation`, and on update the immutable fields), every worker on
containerd, and each ``secretReferenceName`` followed through ``spec.resources`` to a usable Secret.
``registry-mirror`` as ``pkg/admission/validator/mirror``: the providerConfig (:mod:`api.mirror_validation`),
every worker on containerd, each ``caBundleSecretReferenceName`` followed to an immutable Secret holding only
a PEM ``bundle.crt``, and no upstream both mirrored and cached. Two deliberate differences: every error is
reported at once (Go stops at the first "hard" error such as a missing Secret or a non-containerd worker),
and each of those errors carries a field path too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api import field
from api import shoot as shootlib
from api.credentials import UpstreamAuth, credential_errors, upstream_auth
from api.field import FieldError, Path, ValidationFailed
from api.mirror_v1alpha1 import MirrorConfig
from api.mirror_validation import (
    CA_BUNDLE_KEY,
    decode_and_default_mirror,
    validate_ca_bundle_secret,
    validate_mirror_config,
)
from api.secrets import SecretData
from api.v1alpha3 import RegistryConfig
from api.validation import decode_and_default, validate_registry_config, validate_registry_config_update

SecretGetter = Callable[[str, str], SecretData | None]  # (namespace, name) -> Secret or None


def _unique(errors: list[FieldError]) -> list[FieldError]:
    """``field.ErrorList.ToAggregate``: what the webhook answers has each error once (by its text), first kept."""
    seen: set[str] = set()
    out = []
    for err in errors:
        if str(err) not in seen:
            seen.add(str(err))
            out.append(err)
    return out


@dataclass
class ShootValidation:
    """The outcome of validating a Shoot: the decoded, defaulted config (when it decoded) and the errors."""

    config: RegistryConfig | None
    errors: list[FieldError]
    extension_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _validate_workers(shoot: dict[str, Any], extension_type: str = shootlib.EXTENSION_TYPE) -> list[FieldError]:
    errs = []
    for i, worker in enumerate(shootlib.workers(shoot)):
        cri = worker.get("cri") if isinstance(worker, dict) else None
        name = cri.get("name") if isinstance(cri, dict) else None
        if name is not None and name != "containerd":  # Gardener defaults a missing CRI to containerd
            errs.append(field.invalid(Path("spec", "provider", "workers").index(i).child("cri", "name"), name,
                                      f"container runtime needs to be containerd when the {extension_type} "
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
                      require_immutable: bool = True,
                      read_secrets: bool = True) -> tuple[dict[str, UpstreamAuth], list[FieldError]]:
    """Follow every ``secretReferenceName`` through ``spec.resources`` to its Secret and check it (not
    ``read_secrets``: only that ``spec.resources`` has the entry).

    ``get_secret(namespace, name)`` is asked for ``name_prefix + resourceRef.name`` in ``namespace`` (the
    Shoot's by default; the seed namespace and ``ref-`` for gardenlet's copies). Returns the credentials (a
    username and password, or the credential provider plugin that gets them) per upstream and the errors,
    Gardener's words, each on the cache's ``secretReferenceName``.
    """
    credentials: dict[str, UpstreamAuth] = {}
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
        if not read_secrets:
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
            credentials[cache.upstream] = upstream_auth(secret, cache.upstream)
    return credentials, errs


def _referenced(shoot: dict[str, Any], config: RegistryConfig) -> list[tuple[str, str | None]]:
    return [(c.secret_reference_name, referenced_secret_name(shoot, c.secret_reference_name))
            for c in config.caches if c.secret_reference_name is not None]


def validate_shoot(shoot: dict[str, Any], old_shoot: dict[str, Any] | None = None,
                   get_secret: SecretGetter | None = None, read_secrets: bool = True) -> ShootValidation:
    """Validate the registry-cache part of a Shoot as the admission webhook does, on create or update.

    ``get_secret(namespace, name)`` returns a referenced Secret or None when it does not exist; not
    ``read_secrets``: the referenced Secrets are not looked at (only that ``spec.resources`` names them).
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
        return ShootValidation(None, _unique(errs + exc.errors), entry.path)
    if old_shoot is not None:
        old_entry = shootlib.find_registry_cache_extension(old_shoot)
        if old_entry is not None and old_entry.provider_config is not None:
            try:
                old_config = decode_and_default(old_entry.provider_config, path)
            except ValidationFailed:
                old_config = None  # the old object was stored before; nothing to compare against
            if old_config is not None:
                if old_config == config and _referenced(old_shoot, old_config) == _referenced(shoot, config):
                    return ShootValidation(config, _unique(errs), entry.path)  # nothing of ours changed
                errs += validate_registry_config_update(old_config, config, path)
    errs += validate_registry_config(config, path)
    errs += check_credentials(shoot, config, path, get_secret, read_secrets=read_secrets)[1]
    return ShootValidation(config, _unique(errs), entry.path)


def resolve_credentials(shoot: dict[str, Any], config: RegistryConfig, get_secret: SecretGetter,
                        namespace: str, config_path: Path | None = None,
                        name_prefix: str = "") -> dict[str, UpstreamAuth]:
    """Credentials (or the credential provider plugin) per upstream for every cache with a
    ``secretReferenceName``, read from ``namespace``
    (in the seed: gardenlet's copies, ``name_prefix`` ``ref-``, whose immutability is not the user's to set).
    Raises :class:`ValidationFailed` naming the reference when it cannot be followed or the Secret is unusable.
    """
    credentials, errors = check_credentials(shoot, config, config_path or Path("providerConfig"), get_secret,
                                            namespace=namespace, name_prefix=name_prefix,
                                            require_immutable=not name_prefix)
    if errors:
        raise ValidationFailed(errors)
    return credentials


# --- registry-mirror ---------------------------------------------------------------------------------------


@dataclass
class MirrorValidation:
    """The outcome of validating the ``registry-mirror`` part of a Shoot."""

    config: MirrorConfig | None
    errors: list[FieldError]
    extension_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _ca_bundle_references(config: MirrorConfig, path: Path) -> list[tuple[str, str, str, Path]]:
    """(upstream, host, caBundleSecretReferenceName, its field path) of every host with a CA bundle."""
    out = []
    for i, mirror in enumerate(config.mirrors):
        for j, host in enumerate(mirror.hosts):
            if host.ca_bundle_secret_reference_name is not None:
                out.append((mirror.upstream, host.host, host.ca_bundle_secret_reference_name,
                            path.child("mirrors").index(i).child("hosts").index(j).child("caBundleSecretReferenceName")))
    return out


def check_ca_bundles(shoot: dict[str, Any], config: MirrorConfig, path: Path,
                     get_secret: SecretGetter | None, read_secrets: bool = True) -> list[FieldError]:
    """Follow every ``caBundleSecretReferenceName`` through ``spec.resources`` to its Secret in the Shoot's
    namespace and check it (``ValidateMirrorHostCABundleSecret``); Gardener's words, on the reference's path."""
    errs: list[FieldError] = []
    namespace = (shoot.get("metadata") or {}).get("namespace") or ""
    for _upstream, _host, reference, p in _ca_bundle_references(config, path):
        secret_name = referenced_secret_name(shoot, reference)
        if secret_name is None:
            errs.append(field.invalid(p, reference,
                                      f"failed to find referenced resource with name {reference} and kind Secret"))
            continue
        if not read_secrets:
            continue
        secret = get_secret(namespace, secret_name) if get_secret else None
        if secret is None:
            where = f"{namespace}/{secret_name}" if namespace else secret_name
            errs.append(field.invalid(p, reference, f"failed to get secret {where} for caBundleSecretReferenceName "
                                                    f'{reference}: secrets "{secret_name}" not found'))
            continue
        errs += validate_ca_bundle_secret(secret, p, reference)
    return errs


def resolve_ca_bundles(shoot: dict[str, Any], config: MirrorConfig, get_secret: SecretGetter, namespace: str,
                       name_prefix: str = "") -> dict[tuple[str, str], bytes]:
    """The CA bundle (``bundle.crt``) per (upstream, host) of every host with a ``caBundleSecretReferenceName``,
    read from ``namespace`` (in the seed: gardenlet's ``ref-`` copies), as Gardener's ensurer reads them.
    Raises :class:`ValidationFailed` naming the reference when it cannot be followed."""
    bundles: dict[tuple[str, str], bytes] = {}
    errs: list[FieldError] = []
    for upstream, host, reference, p in _ca_bundle_references(config, Path("spec", "providerConfig")):
        secret_name = referenced_secret_name(shoot, reference)
        if secret_name is None:
            errs.append(field.invalid(p, reference,
                                      f"failed to find referenced resource with name {reference} and kind Secret"))
            continue
        secret = get_secret(namespace, name_prefix + secret_name)
        if secret is None:
            errs.append(field.invalid(p, reference, f"failed to read referenced secret {name_prefix}{secret_name} "
                                                    f"for reference {reference}"))
        elif CA_BUNDLE_KEY not in secret.data:
            errs.append(field.invalid(p, reference, f"failed to find '{CA_BUNDLE_KEY}' key in the CA bundle secret "
                                                    f"'{namespace}/{name_prefix}{secret_name}'"))
        else:
            bundles[(upstream, host)] = secret.data[CA_BUNDLE_KEY]
    if errs:
        raise ValidationFailed(errs)
    return bundles


def _cache_upstreams(shoot: dict[str, Any]) -> set[str]:
    """The upstreams of the Shoot's registry-cache extension, when it decodes (else its own errors say why)."""
    entry = shootlib.find_registry_cache_extension(shoot)
    if entry is None or entry.provider_config is None:
        return set()
    try:
        config = decode_and_default(entry.provider_config, entry.path.child("providerConfig"))
    except ValidationFailed:
        return set()
    return {cache.upstream for cache in config.caches}


def _validate_against_caches(config: MirrorConfig, cached: set[str], path: Path) -> list[FieldError]:
    """``validateMirrorConfigAgainstRegistryCache``: an upstream is either mirrored or cached, not both."""
    return [field.invalid(path.child("mirrors").index(i).child("upstream"), mirror.upstream,
                          f"upstream host '{mirror.upstream}' is also configured as a registry cache upstream")
            for i, mirror in enumerate(config.mirrors) if mirror.upstream in cached]


def validate_mirror_shoot(shoot: dict[str, Any], get_secret: SecretGetter | None = None,
                          read_secrets: bool = True) -> MirrorValidation:
    """Validate the ``registry-mirror`` part of a Shoot as Gardener's mirror admission does (the same on create
    and update: the mirror has no immutable fields)."""
    entry = shootlib.find_registry_mirror_extension(shoot)
    if entry is None:
        return MirrorValidation(None, [])
    path = entry.path.child("providerConfig")
    errs = _validate_workers(shoot, shootlib.MIRROR_EXTENSION_TYPE)
    if entry.provider_config is None:
        errs.append(field.required(path, "providerConfig is required for the registry-mirror extension"))
        return MirrorValidation(None, errs, entry.path)
    try:
        config = decode_and_default_mirror(entry.provider_config, path)
    except ValidationFailed as exc:
        return MirrorValidation(None, _unique(errs + exc.errors), entry.path)
    errs += validate_mirror_config(config, path)
    errs += check_ca_bundles(shoot, config, path, get_secret, read_secrets)
    errs += _validate_against_caches(config, _cache_upstreams(shoot), path)
    return MirrorValidation(config, _unique(errs), entry.path)


# --- both ----------------------------------------------------------------------------------------------------


@dataclass
class Admission:
    """Both extensions of a Shoot: what admission, ``registry-cache validate`` and ``render`` see."""

    cache: ShootValidation
    mirror: MirrorValidation

    @property
    def errors(self) -> list[FieldError]:
        return self.cache.errors + self.mirror.errors

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def enabled(self) -> bool:
        """Whether the Shoot enables either extension."""
        return self.cache.extension_path is not None or self.mirror.extension_path is not None


def admit_shoot(shoot: dict[str, Any], old_shoot: dict[str, Any] | None = None,
                get_secret: SecretGetter | None = None, read_secrets: bool = True) -> Admission:
    """Validate both extensions of a Shoot as the admission webhooks do, on create or update (not
    ``read_secrets``: without looking at the referenced Secrets)."""
    return Admission(validate_shoot(shoot, old_shoot, get_secret, read_secrets),
                     validate_mirror_shoot(shoot, get_secret, read_secrets))
