"""Which Shoots use which Secret, and which Shoot claims which upstream, kept current by watching Shoots.

A Secret is *in use* when a Shoot in its namespace lists it in ``spec.resources`` and that entry is named by
a cache of the Shoot's ``registry-cache`` extension as ``secretReferenceName`` (its credentials) or by a
mirror host of its ``registry-mirror`` extension as ``caBundleSecretReferenceName`` (its CA bundle). The
admission webhook answers from this index (no listing of Shoots per request) and the protection controller
keeps the ``gardener.cloud/reference-protection`` finalizer on exactly the Secrets in use.

An upstream is *claimed* by a Shoot whose ``registry-cache`` caches it or whose ``registry-mirror`` mirrors it. In
standalone mode all Shoots configure the same nodes, so one upstream has one owner: the oldest claim
(creationTimestamp, then namespace and name). The Shoot webhook refuses a Shoot that claims an upstream another
Shoot already holds; the bridge refuses to deliver a claim that is not the oldest (a race the webhook lost).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from api import shoot as shootlib

log = logging.getLogger(__name__)



@dataclass(frozen=True, order=True)
class Use:
    shoot: str  # the Shoot's name (same namespace as the Secret)
    resource: str  # the spec.resources entry
    upstreams: tuple[str, ...]  # the caches that use it (secretReferenceName)
    # the mirror hosts that use it (caBundleSecretReferenceName), as (upstream, host)
    mirrors: tuple[tuple[str, str], ...] = ()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _cache_references(shoot: dict[str, Any]) -> dict[str, list[str]]:
    """spec.resources entry -> the upstreams of the caches naming it as secretReferenceName."""
    entry = shootlib.find_registry_cache_extension(shoot)
    config = entry.provider_config if entry else None
    out: dict[str, list[str]] = {}
    for cache in _list(config.get("caches") if isinstance(config, dict) else None):
        if isinstance(cache, dict) and isinstance(cache.get("secretReferenceName"), str):
            out.setdefault(cache["secretReferenceName"], []).append(str(cache.get("upstream", "")))
    return out


def _mirror_references(shoot: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """spec.resources entry -> the (upstream, host) of the mirror hosts naming it as caBundleSecretReferenceName."""
    entry = shootlib.find_registry_mirror_extension(shoot)
    config = entry.provider_config if entry else None
    out: dict[str, list[tuple[str, str]]] = {}
    for mirror in _list(config.get("mirrors") if isinstance(config, dict) else None):
        if not isinstance(mirror, dict):
            continue
        for host in _list(mirror.get("hosts")):
            if isinstance(host, dict) and isinstance(host.get("caBundleSecretReferenceName"), str):
                out.setdefault(host["caBundleSecretReferenceName"], []).append(
                    (str(mirror.get("upstream", "")), str(host.get("host", ""))))
    return out


@dataclass(frozen=True, order=True)
class Claim:
    """A Shoot's claim on an upstream; claims order oldest first."""

    created: str  # the Shoot's creationTimestamp (RFC 3339, UTC: sorts as text); "~" (last) when unknown
    namespace: str
    shoot: str
    extension_type: str  # registry-cache or registry-mirror

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.shoot


def upstream_claims(shoot: dict[str, Any], still_counts: bool = True) -> dict[str, str]:
    """Upstream -> the extension type that claims it in this Shoot (read leniently from the raw providerConfigs,
    as :func:`secret_uses`; a cache wins over a mirror of the same upstream, which validation refuses anyway)."""
    if not still_counts:
        return {}
    out: dict[str, str] = {}
    for extension_type, finder, key in ((shootlib.MIRROR_EXTENSION_TYPE, shootlib.find_registry_mirror_extension,
                                         "mirrors"),
                                        (shootlib.EXTENSION_TYPE, shootlib.find_registry_cache_extension, "caches")):
        entry = finder(shoot)
        config = entry.provider_config if entry else None
        for item in _list(config.get(key) if isinstance(config, dict) else None):
            if isinstance(item, dict) and isinstance(item.get("upstream"), str):
                out[item["upstream"]] = extension_type
    return out


def secret_uses(shoot: dict[str, Any], still_counts: bool = True) -> dict[str, Use]:
    """Secret name -> how this Shoot uses it, for the Secrets its caches (credentials) and its mirror hosts (CA
    bundles) reference.

    Read leniently from the raw providerConfigs: a Shoot that does not validate still protects its Secrets.
    """
    if not still_counts:
        return {}
    caches, mirrors = _cache_references(shoot), _mirror_references(shoot)
    if not caches and not mirrors:
        return {}
    out: dict[str, Use] = {}
    for res in shootlib.resources(shoot):
        ref = res.get("resourceRef") or {}
        name = res.get("name")
        if (name in caches or name in mirrors) and ref.get("kind") == "Secret" and isinstance(ref.get("name"), str):
            out[ref["name"]] = Use(shoot["metadata"]["name"], name, tuple(caches.get(name, ())),
                                   tuple(mirrors.get(name, ())))
    return out


def counts(shoot: dict[str, Any], cleanup_finalizer: str | None) -> bool:
    """A Shoot being deleted stops counting once its extension is cleaned up (the bridge's finalizer is
    gone); without a bridge, once it is deleted."""
    meta = shoot.get("metadata") or {}
    if not meta.get("deletionTimestamp") or cleanup_finalizer is None:
        return True
    return cleanup_finalizer in (meta.get("finalizers") or [])


class ReferenceIndex:
    """(namespace, Secret name) -> {Shoot name: Use}, and upstream -> the Shoots claiming it. Thread-safe."""

    def __init__(self, cleanup_finalizer: str | None = None):
        self._by_secret: dict[tuple[str, str], dict[str, Use]] = {}
        self._by_shoot: dict[tuple[str, str], set[str]] = {}
        self._claims: dict[str, dict[tuple[str, str], Claim]] = {}  # upstream -> {(namespace, shoot): claim}
        self._claimed_by: dict[tuple[str, str], set[str]] = {}  # (namespace, shoot) -> its upstreams
        self._lock = threading.Lock()
        self.cleanup_finalizer = cleanup_finalizer
        self.primed = threading.Event()

    def update(self, shoot: dict[str, Any]) -> set[tuple[str, str]]:
        """Take a Shoot's current state; returns the (namespace, Secret) keys whose users changed."""
        meta = shoot["metadata"]
        ns, name = meta["namespace"], meta["name"]
        still = counts(shoot, self.cleanup_finalizer)
        uses = secret_uses(shoot, still)
        claims = upstream_claims(shoot, still)
        created = meta.get("creationTimestamp") or "~"
        changed: set[tuple[str, str]] = set()
        with self._lock:
            for upstream in self._claimed_by.pop((ns, name), set()):
                holders = self._claims.get(upstream, {})
                holders.pop((ns, name), None)
                if not holders:
                    self._claims.pop(upstream, None)
            for upstream, extension_type in claims.items():
                self._claims.setdefault(upstream, {})[(ns, name)] = Claim(created, ns, name, extension_type)
            if claims:
                self._claimed_by[(ns, name)] = set(claims)
            before = self._by_shoot.get((ns, name), set())
            for secret in before - set(uses):
                users = self._by_secret.get((ns, secret), {})
                users.pop(name, None)
                if not users:
                    self._by_secret.pop((ns, secret), None)
                changed.add((ns, secret))
            for secret, use in uses.items():
                users = self._by_secret.setdefault((ns, secret), {})
                if users.get(name) != use:
                    users[name] = use
                    changed.add((ns, secret))
            if uses:
                self._by_shoot[(ns, name)] = set(uses)
            else:
                self._by_shoot.pop((ns, name), None)
        return changed

    def remove(self, namespace: str, name: str) -> set[tuple[str, str]]:
        return self.update({"metadata": {"namespace": namespace, "name": name}, "spec": {}})

    def prime(self, shoots: Iterable[dict[str, Any]]) -> None:
        for shoot in shoots:
            self.update(shoot)
        self.primed.set()

    def users(self, namespace: str, secret: str) -> list[Use]:
        with self._lock:
            return sorted(self._by_secret.get((namespace, secret), {}).values())

    def secrets(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._by_secret)

    def claims(self, upstream: str) -> list[Claim]:
        """Every Shoot's claim on ``upstream``, oldest first (the first one owns it)."""
        with self._lock:
            return sorted(self._claims.get(upstream, {}).values())

    def held_by_others(self, shoot: dict[str, Any], upstreams: Iterable[str] | None = None,
                       older_only: bool = False) -> dict[str, Claim]:
        """Upstream -> the other Shoot's claim, for each of this Shoot's upstreams (or ``upstreams``) that another
        Shoot claims; with ``older_only`` only claims that come before this Shoot's own (the bridge: the oldest
        claim owns the upstream)."""
        meta = shoot.get("metadata") or {}
        me = Claim(meta.get("creationTimestamp") or "~", meta.get("namespace") or "", meta.get("name") or "", "")
        wanted = upstream_claims(shoot) if upstreams is None else upstreams
        out: dict[str, Claim] = {}
        with self._lock:
            for upstream in wanted:
                others = sorted(c for c in self._claims.get(upstream, {}).values() if c.key != me.key)
                if others and (not older_only or others[0] < me):
                    out[upstream] = others[0]
        return out


def _how(use: Use) -> str:
    how = []
    if use.upstreams:
        how.append(f"as secretReferenceName by the registry cache{'s' if len(use.upstreams) > 1 else ''} for "
                   f"{', '.join(use.upstreams)}")
    by_upstream: dict[str, list[str]] = {}
    for upstream, host in use.mirrors:
        by_upstream.setdefault(upstream, []).append(host)
    if by_upstream:
        how.append("as caBundleSecretReferenceName by the " + "; ".join(
            f"registry mirror{'s' if len(hosts) > 1 else ''} {' and '.join(hosts)} for {upstream}"
            for upstream, hosts in by_upstream.items()))
    return "used " + " and ".join(how)


def refusal_message(namespace: str, secret: str, users: list[Use], named: bool = True) -> str:
    """Why a DELETE is refused, and what to do instead. Not ``named``: the caller is not known to be the API
    server, so the answer says how many Shoots, not which (see :mod:`extension.webhook.server`)."""
    if not named:
        return (f"Secret {namespace}/{secret} is still in use by {len(users)} Shoot{'s' if len(users) > 1 else ''} "
                "of this namespace (spec.resources). Point the spec.resources entry at a new Secret first, wait for "
                "the Shoot to reconcile, then delete this one.")
    parts = [f'Shoot "{u.shoot}" (spec.resources entry "{u.resource}", {_how(u)})' for u in users]
    rotate = " (registry-cache credentials rotate does it)" if any(u.upstreams for u in users) else ""
    return (f"Secret {namespace}/{secret} is still in use by " + "; ".join(parts) + ". Point the spec.resources "
            f"entry at a new Secret first{rotate}, wait for the Shoot to reconcile, then delete this one.")


def claim_refusal(upstream: str, claim: Claim, namespace: str, named: bool = True) -> str:
    """Why a Shoot may not claim ``upstream``: another Shoot holds it. That Shoot is named only to callers who may
    know it (a Shoot of the same namespace, and an authenticated caller)."""
    kind = "cached" if claim.extension_type == shootlib.EXTENSION_TYPE else "mirrored"
    if named and claim.namespace == namespace:
        who = f'Shoot "{claim.shoot}" of this namespace'
    else:
        who = "a Shoot of this namespace" if claim.namespace == namespace else "a Shoot of another project"
    return (f"upstream {upstream} is already {kind} by {who}: without Gardener all Shoots share this cluster's "
            "nodes, and each upstream has one owner")
