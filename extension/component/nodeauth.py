"""Caches only nodes can read (standalone, ``registry-cache run --node-auth``): per cache generated
credentials, the htpasswd line the cache checks them with, and the Authorization header nodes send.

Any Pod that reaches a cache could otherwise pull the private images it holds. With node auth the cache
requires basic-auth credentials (distribution's htpasswd) that the controller generates per cache and keeps
in a Secret of the seed namespace (``registry-<upstream>-node-auth``, reused across reconciles, like the
TLS material in :mod:`.tls`); nodes get them as an ``Authorization`` header in that upstream's hosts.toml
through the node agent (one shared Secret in the shoot's kube-system, :data:`NODE_AUTH_SHOOT_SECRET`).

The password is 32 random bytes; the bcrypt cost is the minimum (4) on purpose: distribution checks the
hash on every request (each blob of a pull), and a 256-bit random password needs no key stretching.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import bcrypt

from api import names
from extension.constants import (
    FIELD_MANAGER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_AUTH_SECRET_LABEL,
    NODE_AUTH_SHOOT_SECRET,
    NODE_AUTH_USERNAME,
)
from extension.errors import WouldWrite
from extension.runtime.kube import Kube

if TYPE_CHECKING:
    from extension.component.tls import SecretStore

log = logging.getLogger(__name__)

BCRYPT_COST = 4


@dataclass(frozen=True)
class NodeCredentials:
    username: str
    password: str
    htpasswd: str  # "<username>:<bcrypt hash>\n", what the cache reads

    def __repr__(self) -> str:  # never the password, not even in a traceback's locals
        return f"NodeCredentials(username={self.username!r})"

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value nodes send to the cache."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def generate() -> NodeCredentials:
    password = secrets.token_urlsafe(32)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    return NodeCredentials(NODE_AUTH_USERNAME, password, f"{NODE_AUTH_USERNAME}:{hashed}\n")


def valid(creds: NodeCredentials) -> bool:
    """Whether the htpasswd line checks the password (a Secret edited by hand is replaced)."""
    user, _, hashed = creds.htpasswd.strip().partition(":")
    try:
        return user == creds.username and bcrypt.checkpw(creds.password.encode(), hashed.encode())
    except ValueError:
        return False


def secret_name(upstream: str) -> str:
    return f"{names.resource_name(upstream)}-node-auth"


def shoot_key(upstream: str) -> str:
    """The key of a cache's header in the shoot's node-auth Secret."""
    return names.resource_name(upstream)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _decode(secret: dict, key: str) -> str:
    return base64.b64decode((secret.get("data") or {}).get(key, "")).decode()


def _existing(seed: Kube, namespace: str, store: SecretStore | None) -> dict[str, dict]:
    if store is not None:
        return store.labelled(namespace, NODE_AUTH_SECRET_LABEL)
    return {s["metadata"]["name"]: s for s in seed.list("Secret", namespace, label_selector=NODE_AUTH_SECRET_LABEL)}


def ensure(seed: Kube, namespace: str, upstreams: Iterable[str], store: SecretStore | None = None,
           dry_run: bool = False) -> tuple[dict[str, NodeCredentials], dict[str, str]]:
    """Per upstream the node credentials, reusing what the seed's Secrets hold; removes those of caches
    that are gone. Also the resourceVersion of each Secret, as read or written. ``store``: where the Secrets are
    read (the seed cache); ``dry_run``: raise WouldWrite instead of writing."""
    wanted = {secret_name(u): u for u in upstreams}
    existing = _existing(seed, namespace, store)
    versions: dict[str, str] = {}
    out: dict[str, NodeCredentials] = {}
    for name, upstream in wanted.items():
        secret = existing.get(name)
        creds = None
        if secret is not None:
            try:
                creds = NodeCredentials(_decode(secret, "username"), _decode(secret, "password"),
                                        _decode(secret, "htpasswd"))
            except (ValueError, UnicodeDecodeError):
                creds = None
            if creds is not None and not valid(creds):
                log.warning("node credentials Secret %s/%s does not check out: replaced", namespace, name)
                creds = None
        if creds is None:
            if dry_run:
                raise WouldWrite(f"Secret {namespace}/{name}")
            creds = generate()
            secret = seed.apply({"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": name, "namespace": namespace,
                                              "labels": {NODE_AUTH_SECRET_LABEL: names.resource_name(upstream),
                                                         MANAGED_BY_LABEL: MANAGED_BY}},
                                 "type": "Opaque",
                                 "data": {"username": _b64(creds.username), "password": _b64(creds.password),
                                          "htpasswd": _b64(creds.htpasswd)}})
            if store is not None:
                store.remember(secret)
        versions[name] = str((secret or {}).get("metadata", {}).get("resourceVersion", ""))
        out[upstream] = creds
    for name in existing.keys() - wanted.keys():
        if dry_run:
            raise WouldWrite(f"Secret {namespace}/{name} (to delete)")
        seed.delete("Secret", name, namespace)  # a cache that is gone
        if store is not None:
            store.removed(namespace, name)
    return out, versions


def remove_all(seed: Kube, namespace: str, store: SecretStore | None = None) -> bool:
    """Delete the node credentials of every cache of the Extension; whether there were any."""
    secrets = _existing(seed, namespace, store)
    for name in secrets:
        seed.delete("Secret", name, namespace)
        if store is not None:
            store.removed(namespace, name)
    return bool(secrets)


def shoot_secret(namespace: str, headers: Mapping[str, str]) -> dict:
    """The shoot's node-auth Secret as one Extension applies it: only its own keys (cache resource name ->
    Authorization header); the keys of other Extensions belong to their field managers and stay."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": NODE_AUTH_SHOOT_SECRET, "namespace": namespace,
                         "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "type": "Opaque",
            "data": {key: _b64(value) for key, value in sorted(headers.items())}}


def field_manager(owner: str) -> str:
    """The field manager one Extension (seed namespace ``owner``) applies its keys of the shoot Secret with."""
    return f"{FIELD_MANAGER}-node-auth/{owner}"


def deliver(shoot: Kube, namespace: str, owner: str, credentials: Mapping[str, NodeCredentials]) -> dict:
    """Apply this Extension's keys of the shoot's node-auth Secret (server-side apply drops the keys it
    applied before and no longer applies); the Secret as written. (Through the shoot client's connections,
    counted with it and fenced as it is.)"""
    headers = {shoot_key(u): c.authorization for u, c in credentials.items()}
    return shoot.with_field_manager(field_manager(owner)).apply(shoot_secret(namespace, headers))


def withdraw(shoot: Kube, namespace: str, owner: str) -> None:
    """Remove this Extension's keys from the shoot's node-auth Secret, if it is there."""
    if shoot.get("Secret", NODE_AUTH_SHOOT_SECRET, namespace) is not None:
        deliver(shoot, namespace, owner, {})
