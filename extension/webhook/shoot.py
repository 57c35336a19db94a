"""The Shoot webhook's decision: the admission errors of a Shoot that enables the extensions.

The same validation as ``registry-cache validate`` (:func:`api.admission.admit_shoot`: ``registry-cache`` with
the update rules on UPDATE, and ``registry-mirror``); each error starts with its field path. Shoots without
either extension pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.admission import admit_shoot
from api.secrets import SecretData, SecretFormatError, secret_from_manifest


def shoot_errors(new: dict[str, Any], old: dict[str, Any] | None,
                 get_secret: Callable[[str, str], dict[str, Any] | None]) -> list[str]:
    """The admission errors for a Shoot, each starting with its field path; empty when admitted."""

    def secret(namespace: str, name: str) -> SecretData | None:
        obj = get_secret(namespace, name)
        if obj is None:
            return None
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Secret")
        try:
            return secret_from_manifest(obj)
        except SecretFormatError:
            return SecretData(namespace, name, obj.get("immutable"), {})

    return [str(e) for e in admit_shoot(new, old, secret).errors]
