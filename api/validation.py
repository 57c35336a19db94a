"""Validation of ``RegistryConfig`` and of a Shoot using it, with Gardener's rules and words.

Mirrors ``pkg/apis/registry/validation`` and ``pkg/admission/validator/cache`` of the Go extension, with
two deliberate differences: every error is reported at once (Go stops at the first "hard" error such as a
missing Secret or a non-containerd worker), and each of those errors carries a field path too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from api import field, names, shoot as shootlib
from api.decode import decode_registry_config
from api.duration import format_duration
from api.field import FieldError, Path, ValidationFailed
from api.credentials import credential_errors, extract_credentials
from api.secrets import Credentials, SecretData
from api.urls import host_port_errors, is_dns1123_label, is_dns1123_subdomain, url_errors
from api.v1alpha3 import DEFAULT_TTL, RegistryCache, RegistryConfig, set_defaults
from api.duration import parse_duration

SERVICE_NAME_SUFFIX_MAX_LENGTH = names.MAX_SERVICE_NAME_SUFFIX_LENGTH
_DEFAULT_TTL_NS = parse_duration(DEFAULT_TTL)


def gc_ttl_ns(cache: RegistryCache) -> int:
    """``GarbageCollectionTTL``: the TTL, 168h when garbageCollection is unset."""
    return cache.garbage_collection.ttl.nanoseconds if cache.garbage_collection else _DEFAULT_TTL_NS


def gc_enabled(cache: RegistryCache) -> bool:
    return gc_ttl_ns(cache) > 0


def tls_enabled(cache: RegistryCache) -> bool:
    """``TLSEnabled``: true unless ``http.tls`` is set to false."""
    return cache.http is None or cache.http.tls


def ha_enabled(cache: RegistryCache) -> bool:
    return cache.high_availability is not None and cache.high_availability.enabled


def remote_url(cache: RegistryCache) -> str:
    return cache.remote_url if cache.remote_url is not None else names.default_remote_url(cache.upstream)


def validate_upstream(path: Path, upstream: str) -> list[FieldError]:
    return [field.invalid(path, upstream, msg) for msg in host_port_errors(upstream)]


def validate_url(path: Path, url: str, allow_path: bool = False) -> list[FieldError]:
    return [field.invalid(path, url, msg) for msg in url_errors(url, allow_path)]


def _validate_cache(cache: RegistryCache, path: Path) -> list[FieldError]:
    errs = validate_upstream(path.child("upstream"), cache.upstream)
    if cache.remote_url is not None:
        errs += validate_url(path.child("remoteURL"), cache.remote_url)
    if cache.volume is not None:
        if cache.volume.size is not None and cache.volume.size.sign() <= 0:
            errs.append(field.invalid(path.child("volume", "size"), str(cache.volume.size),
                                      "must be greater than 0"))
        if cache.volume.storage_class_name is not None:
            scn = cache.volume.storage_class_name
            errs += [field.invalid(path.child("volume", "storageClassName"), scn, m)
                     for m in is_dns1123_subdomain(scn)]
    if cache.garbage_collection is not None and cache.garbage_collection.ttl.nanoseconds < 0:
        errs.append(field.invalid(path.child("garbageCollection", "ttl"), str(cache.garbage_collection.ttl),
                                  "ttl must be a non-negative duration"))
    if cache.proxy is not None:
        if cache.proxy.http_proxy is not None:
            errs += validate_url(path.child("proxy", "httpProxy"), cache.proxy.http_proxy)
        if cache.proxy.https_proxy is not None:
            errs += validate_url(path.child("proxy", "httpsProxy"), cache.proxy.https_proxy)
    if cache.service_name_suffix is not None:
        suffix = cache.service_name_suffix
        errs += [field.invalid(path.child("serviceNameSuffix"), suffix, m) for m in is_dns1123_label(suffix)]
        if len(suffix.encode()) > SERVICE_NAME_SUFFIX_MAX_LENGTH:
            errs.append(field.too_long(path.child("serviceNameSuffix"), SERVICE_NAME_SUFFIX_MAX_LENGTH))
    return errs


def validate_registry_config(config: RegistryConfig, path: Path) -> list[FieldError]:
    """``ValidateRegistryConfig``."""
    caches_path = path.child("caches")
    errs: list[FieldError] = []
    if not config.caches:
        errs.append(field.required(caches_path, "at least one cache must be provided"))
    upstreams: set[str] = set()
    allocated: dict[str, str] = {}  # generated service name -> upstream
    for i, cache in enumerate(config.caches):
        errs += _validate_cache(cache, caches_path.index(i))
        if cache.upstream in upstreams:
            errs.append(field.duplicate(caches_path.index(i).child("upstream"), cache.upstream))
        else:
            upstreams.add(cache.upstream)
        if cache.service_name_suffix is None:
            allocated[names.service_name(cache.upstream, None)] = cache.upstream
    suffixes: set[str] = set()
    for i, cache in enumerate(config.caches):
        suffix = cache.service_name_suffix
        if suffix is None:
            continue
        suffix_path = caches_path.index(i).child("serviceNameSuffix")
        if suffix in suffixes:
            errs.append(field.duplicate(suffix_path, suffix))
        else:
            suffixes.add(suffix)
        name = names.service_name(cache.upstream, suffix)
        if name in allocated:
            errs.append(field.invalid(suffix_path, suffix, f'cannot collide with "{allocated[name]}" upstream'))
    return errs


def validate_registry_config_update(old: RegistryConfig, new: RegistryConfig, path: Path) -> list[FieldError]:
    """``ValidateRegistryConfigUpdate``: volume size and class immutable, no re-enabling of GC."""
    errs: list[FieldError] = []
    old_by_upstream = {}
    for cache in old.caches:
        old_by_upstream.setdefault(cache.upstream, cache)
    for i, new_cache in enumerate(new.caches):
        old_cache = old_by_upstream.get(new_cache.upstream)
        if old_cache is None:
            continue
        p = path.child("caches").index(i)
        old_size = old_cache.volume.size if old_cache.volume else None
        new_size = new_cache.volume.size if new_cache.volume else None
        if old_size != new_size:
            errs.append(field.invalid(p.child("volume", "size"), str(new_size) if new_size else None,
                                      "field is immutable"))
        old_class = old_cache.volume.storage_class_name if old_cache.volume else None
        new_class = new_cache.volume.storage_class_name if new_cache.volume else None
        if old_class != new_class:
            errs.append(field.invalid(p.child("volume", "storageClassName"), new_class, "field is immutable"))
        if not gc_enabled(old_cache) and gc_enabled(new_cache):
            errs.append(field.invalid(p.child("garbageCollection", "ttl"), format_duration(gc_ttl_ns(new_cache)),
                                      "garbage collection cannot be enabled (ttl > 0) once it is disabled (ttl = 0)"))
    return errs


SecretGetter = Callable[[str, str], Optional[SecretData]]  # (namespace, name) -> Secret or None


@dataclass
class ShootValidation:
    """The outcome of validating a Shoot: the decoded, defaulted config (when it decoded) and the errors."""

    config: RegistryConfig | None
    errors: list[FieldError]
    extension_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def decode_and_default(raw: Any, path: Path) -> RegistryConfig:
    return set_defaults(decode_registry_config(raw, path))


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
    errs = _validate_workers(shoot)
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
