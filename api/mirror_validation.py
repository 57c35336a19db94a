"""Validation of a ``MirrorConfig``, with Gardener's rules and words (``pkg/apis/mirror/validation``).

The rules of the config alone and of a CA bundle Secret; what admission checks of the Shoot around it
(workers, the referenced Secrets, the caches of the same Shoot) is in :mod:`api.admission`.
"""

from __future__ import annotations

from typing import Any

from api import field
from api.decode import decode_config
from api.field import FieldError, Path
from api.gostrings import go_quote
from api.mirror_v1alpha1 import (
    API_VERSION,
    CAPABILITIES,
    KIND_CONFIG,
    MirrorConfig,
    MirrorConfiguration,
    set_defaults,
)
from api.pem import certificate_error
from api.secrets import SecretData
from api.shoot import MIRROR_EXTENSION_TYPE
from api.validation import validate_upstream, validate_upstream_not_ca_bundle_file, validate_url

CA_BUNDLE_KEY = "bundle.crt"


def decode_mirror_config(raw: Any, path: Path | None = None) -> MirrorConfig:
    """Decode a ``MirrorConfig`` providerConfig strictly (errors with field paths below ``path``)."""
    return decode_config(raw, path, MirrorConfig, API_VERSION, KIND_CONFIG, MIRROR_EXTENSION_TYPE)


def decode_and_default_mirror(raw: Any, path: Path) -> MirrorConfig:
    return set_defaults(decode_mirror_config(raw, path))


def _validate_capabilities(path: Path, capabilities: list[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    found: set[str] = set()
    for i, capability in enumerate(capabilities):
        if capability not in CAPABILITIES:
            errs.append(field.not_supported(path, capability, sorted(CAPABILITIES)))
        if capability in found:
            errs.append(field.duplicate(path.index(i), capability))
        else:
            found.add(capability)
    return errs


def _validate_mirror(mirror: MirrorConfiguration, path: Path) -> list[FieldError]:
    errs = validate_upstream(path.child("upstream"), mirror.upstream)
    errs += validate_upstream_not_ca_bundle_file(path.child("upstream"), mirror.upstream)  # beyond Gardener
    if not mirror.hosts:
        errs.append(field.required(path.child("hosts"), "at least one host must be provided"))
    hosts: set[str] = set()
    for i, host in enumerate(mirror.hosts):
        host_path = path.child("hosts").index(i)
        errs += validate_url(host_path.child("host"), host.host, allow_path=True)
        if host.host in hosts:
            errs.append(field.duplicate(host_path.child("host"), host.host))
        else:
            hosts.add(host.host)
        errs += _validate_capabilities(host_path.child("capabilities"), host.capabilities)
    return errs


def validate_mirror_config(config: MirrorConfig, path: Path) -> list[FieldError]:
    """``ValidateMirrorConfig``: at least one mirror, unique upstreams; per mirror a valid upstream, at least one
    host, each an http(s) URL (a path allowed, no ``.``/``..`` segments), unique, with known capabilities. Beyond
    Gardener, as for caches: the upstream ``ca-bundle.pem`` is refused (the caches' CA bundle file on nodes)."""
    mirrors_path = path.child("mirrors")
    errs: list[FieldError] = []
    if not config.mirrors:
        errs.append(field.required(mirrors_path, "at least one mirror must be provided"))
    upstreams: set[str] = set()
    for i, mirror in enumerate(config.mirrors):
        errs += _validate_mirror(mirror, mirrors_path.index(i))
        if mirror.upstream in upstreams:
            errs.append(field.duplicate(mirrors_path.index(i).child("upstream"), mirror.upstream))
        else:
            upstreams.add(mirror.upstream)
    return errs


def validate_ca_bundle_secret(secret: SecretData, path: Path, reference_name: str) -> list[FieldError]:
    """``ValidateMirrorHostCABundleSecret``: immutable, only the key ``bundle.crt``, a PEM certificate in it."""
    errs: list[FieldError] = []
    key = go_quote(f"{secret.namespace}/{secret.name}")
    if not secret.immutable:
        errs.append(field.invalid(path, reference_name, f"the referenced CA bundle secret {key} should be immutable"))
    bundle = secret.data.get(CA_BUNDLE_KEY)
    if bundle is None:
        errs.append(field.invalid(path, reference_name, f'missing "{CA_BUNDLE_KEY}" data entry in the referenced '
                                                        f"CA bundle secret {key}"))
    elif certificate_error(bundle) is not None:
        errs.append(field.invalid(path, reference_name, "the CA bundle is not a valid PEM-encoded certificate"))
    if len(secret.data) > 1:
        errs.append(field.invalid(path, reference_name, f"the referenced CA bundle secret {key} should only have a "
                                                        f'single data entry with key "{CA_BUNDLE_KEY}"'))
    return errs
