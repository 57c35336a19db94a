"""The Shoot webhook's decision: the admission errors of a Shoot that enables the extensions.

The same validation as ``registry-cache validate`` (:func:`api.admission.admit_shoot`: ``registry-cache`` with
the update rules on UPDATE, and ``registry-mirror``); each error starts with its field path. Shoots without
either extension pass untouched.

With an index of claims (standalone mode: every Shoot configures the same nodes) an upstream that another Shoot
already caches or mirrors is refused, across both extension types (:mod:`extension.references`).

Who may reference which Secret is not decided here: a ValidatingAdmissionPolicy does it inside the API server in
standalone mode (``manifests/policies``), Gardener's ResourceReferenceManager under Gardener. A caller that is
not known to be the API server (``authenticated`` false: no client certificate is required) learns nothing read
from a Secret or another Shoot: the referenced Secrets are not looked at and a claiming Shoot is not named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api import field
from api import shoot as shootlib
from api.admission import admit_shoot
from api.field import Path
from api.secrets import SecretData, SecretFormatError, secret_from_manifest
from extension.references import ReferenceIndex, claim_refusal, upstream_claims


def shoot_errors(new: dict[str, Any], old: dict[str, Any] | None,
                 get_secret: Callable[[str, str], dict[str, Any] | None],
                 claims: ReferenceIndex | None = None, authenticated: bool = True) -> list[str]:
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

    errors = [str(e) for e in admit_shoot(new, old, secret, read_secrets=authenticated).errors]
    if claims is not None:
        errors += claim_errors(new, old, claims, authenticated)
    return errors


def _upstream_paths(shoot: dict[str, Any]) -> dict[str, Path]:
    """Upstream -> the field path of its ``upstream`` in the Shoot (a cache's or a mirror's)."""
    out: dict[str, Path] = {}
    for entry, key in ((shootlib.find_registry_mirror_extension(shoot), "mirrors"),
                       (shootlib.find_registry_cache_extension(shoot), "caches")):
        config = entry.provider_config if entry else None
        items = config.get(key) if isinstance(config, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            if entry is not None and isinstance(item, dict) and isinstance(item.get("upstream"), str):
                out[item["upstream"]] = entry.path.child("providerConfig", key).index(i).child("upstream")
    return out


def claim_errors(new: dict[str, Any], old: dict[str, Any] | None, claims: ReferenceIndex,
                 authenticated: bool = True) -> list[str]:
    """An upstream this request adds to the Shoot (its create, or one it did not claim before) that another Shoot
    claims: refused. One the Shoot held already stays its own to keep or drop (the bridge settles a race)."""
    added = set(upstream_claims(new)) - set(upstream_claims(old) if old is not None else ())
    if not added:
        return []
    namespace = (new.get("metadata") or {}).get("namespace") or ""
    paths = _upstream_paths(new)
    return [str(field.forbidden(paths.get(upstream, Path("spec", "extensions")),
                                claim_refusal(upstream, claim, namespace, named=authenticated)))
            for upstream, claim in sorted(claims.held_by_others(new, added).items())]
