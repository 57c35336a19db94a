"""Validation of a ``RegistryConfig``, with Gardener's rules and words (``pkg/apis/registry/validation``).

The rules of the config alone; what admission checks of the Shoot around it (workers, referenced Secrets,
the update rules on a Shoot) is in :mod:`api.admission`.
"""

from __future__ import annotations

from typing import Any

from api import field, names
from api.decode import decode_registry_config
from api.duration import format_duration, parse_duration
from api.field import FieldError, Path
from api.urls import host_port_errors, is_dns1123_label, is_dns1123_subdomain, url_errors
from api.v1alpha3 import DEFAULT_TTL, RegistryCache, RegistryConfig, set_defaults

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


def validate_upstream_not_ca_bundle_file(path: Path, upstream: str) -> list[FieldError]:
    """Beyond Gardener, for caches and mirrors alike: nodes keep the caches' CA bundle as
    ``/etc/containerd/certs.d/ca-bundle.pem``, where the upstream ``ca-bundle.pem`` would have its directory."""
    if upstream != names.CA_BUNDLE_FILE:
        return []
    return [field.invalid(path, upstream, f"must not be {names.CA_BUNDLE_FILE}: nodes keep the caches' CA bundle in "
                                          "containerd's hosts directory under that name, where this upstream's "
                                          "directory would be")]


def _validate_cache(cache: RegistryCache, path: Path) -> list[FieldError]:
    errs = validate_upstream(path.child("upstream"), cache.upstream)
    errs += validate_upstream_not_ca_bundle_file(path.child("upstream"), cache.upstream)
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
    resources: dict[str, str] = {}  # generated resource (StatefulSet, Secret) name -> upstream
    for i, cache in enumerate(config.caches):
        errs += _validate_cache(cache, caches_path.index(i))
        if cache.upstream in upstreams:
            errs.append(field.duplicate(caches_path.index(i).child("upstream"), cache.upstream))
        else:
            upstreams.add(cache.upstream)
            # Beyond Gardener (which has the same hole): distinct upstreams whose generated names collide
            # (a.io and a-io, b.io:5000 and b.io-5000) would share one StatefulSet, its Secrets and, without
            # serviceNameSuffix, its Service: one cache would silently serve the other's upstream.
            resource = names.resource_name(cache.upstream)
            if resource in resources:
                errs.append(field.duplicate(caches_path.index(i).child("upstream"), cache.upstream,
                                            f'generates the same resource name {resource} as upstream '
                                            f'"{resources[resource]}"'))
            else:
                resources[resource] = cache.upstream
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
    old_by_upstream: dict[str, RegistryCache] = {}
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


def decode_and_default(raw: Any, path: Path) -> RegistryConfig:
    return set_defaults(decode_registry_config(raw, path))
