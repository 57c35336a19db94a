"""Resolving ``caches[].secretReferenceName`` through the Shoot's ``spec.resources`` to credentials."""

from __future__ import annotations

from typing import Any

from api.credentials import credential_errors, extract_credentials
from api.secrets import Credentials
from api.field import Path, ValidationFailed
from api.v1alpha3 import RegistryConfig
from api.validation import SecretGetter, referenced_secret_name
from api import field

# gardenlet copies every Secret of spec.resources into the seed namespace as ref-<resourceRef.name>.
REFERENCED_RESOURCE_PREFIX = "ref-"


def resolve_credentials(shoot: dict[str, Any], config: RegistryConfig, get_secret: SecretGetter,
                        namespace: str, config_path: Path | None = None,
                        name_prefix: str = "") -> dict[str, Credentials]:
    """Credentials per upstream for every cache with a ``secretReferenceName``.

    ``get_secret(namespace, name)`` is asked for the Secret that ``spec.resources`` names (in the seed,
    gardenlet's copy: ``name_prefix`` ``ref-``). Raises
    :class:`ValidationFailed` naming the reference when it cannot be followed or the Secret is unusable.
    """
    path = config_path or Path("providerConfig")
    out: dict[str, Credentials] = {}
    errors = []
    for i, cache in enumerate(config.caches):
        reference = cache.secret_reference_name
        if reference is None:
            continue
        p = path.child("caches").index(i).child("secretReferenceName")
        name = referenced_secret_name(shoot, reference)
        if name is None:
            errors.append(field.invalid(p, reference,
                                        f"failed to find referenced resource with name {reference} and kind Secret"))
            continue
        secret = get_secret(namespace, name)
        if secret is None:
            errors.append(field.not_found(p, reference, f"the Secret {namespace}/{name_prefix}{name} that "
                                                        f"spec.resources entry {reference!r} refers to does not exist"))
            continue
        problems = credential_errors(secret, cache.upstream, p, reference, require_immutable=not name_prefix)
        if problems:
            errors += problems
            continue
        out[cache.upstream] = extract_credentials(secret, cache.upstream)
    if errors:
        raise ValidationFailed(errors)
    return out
