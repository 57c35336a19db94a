"""Resolving ``caches[].secretReferenceName`` through the Shoot's ``spec.resources`` to credentials."""

from __future__ import annotations

from typing import Any

from api.field import Path, ValidationFailed
from api.secrets import Credentials
from api.v1alpha3 import RegistryConfig
from api.validation import SecretGetter, check_credentials

# gardenlet copies every Secret of spec.resources into the seed namespace as ref-<resourceRef.name>.
REFERENCED_RESOURCE_PREFIX = "ref-"


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
