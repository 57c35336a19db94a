"""The extension's CA and per-cache server certificates, kept in Secrets of the seed namespace.

Like Gardener's secrets manager for this extension: the CA ``ca-extension-registry-cache`` (730 days), a
bundle Secret ``ca-extension-registry-cache-bundle`` (key ``bundle.crt``, what nodes trust; its name is the
``caSecretName`` of the provider status) and per TLS cache ``registry-<upstream>-tls`` (90 days, for the
Service's DNS names and cluster IP). Certificates are reused across reconciles and renewed before expiry or
when their names change. While a renewed CA takes over, the bundle holds the old CA too.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from extension.component import certs
from extension.constants import CA_BUNDLE_SECRET, CA_NAME, MANAGED_BY, MANAGED_BY_LABEL, TLS_SECRET_LABEL
from extension.errors import WouldWrite
from extension.runtime.kube import Kube

log = logging.getLogger(__name__)



def _decode(secret: dict, key: str) -> str:
    return base64.b64decode((secret.get("data") or {}).get(key, "")).decode()


def _secret(namespace: str, name: str, role: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {TLS_SECRET_LABEL: role, MANAGED_BY_LABEL: MANAGED_BY}},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@dataclass(frozen=True)
class ServerCertRequest:
    upstream: str
    secret_name: str  # registry-<upstream>-tls
    common_name: str
    dns_names: list[str]
    ip_addresses: list[str]


@dataclass
class TLSMaterial:
    ca: certs.KeyPair
    bundle_secret_name: str
    bundle: str  # the PEM certificates nodes trust
    server: dict[str, certs.KeyPair]
    versions: dict[str, str] = field(default_factory=dict)  # Secret name -> resourceVersion, as read or written
    renew_at: dt.datetime | None = None  # when the first of them is due for renewal


class SecretStore(Protocol):
    """Where the Secrets of a seed namespace are read from (the seed cache: by resourceVersion, not read again
    while unchanged)."""

    def labelled(self, namespace: str, label: str) -> dict[str, dict[str, Any]]: ...

    def remember(self, written: dict[str, Any]) -> None: ...

    def removed(self, namespace: str, name: str) -> None: ...


def ensure(seed: Kube, namespace: str, requests: list[ServerCertRequest], store: SecretStore | None = None,
           dry_run: bool = False) -> TLSMaterial:
    """The CA, the bundle and one server certificate per request, reusing what the Secrets hold. ``dry_run``:
    raise :class:`WouldWrite` instead of writing."""
    existing = store.labelled(namespace, TLS_SECRET_LABEL) if store is not None else {
        s["metadata"]["name"]: s for s in seed.list("Secret", namespace, label_selector=TLS_SECRET_LABEL)}
    versions = {name: str(s["metadata"].get("resourceVersion", "")) for name, s in existing.items()}

    def write(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if dry_run:
            raise WouldWrite(f"Secret {namespace}/{name}")
        written = seed.apply(obj)
        versions[name] = str(written["metadata"].get("resourceVersion", ""))
        if store is not None:
            store.remember(written)

    ca_secret = existing.get(CA_NAME)
    ca = None
    if ca_secret is not None:
        ca = certs.KeyPair(_decode(ca_secret, "ca.crt"), _decode(ca_secret, "ca.key"))
    previous_ca_pem = None
    if ca is None or certs.needs_renewal(ca):
        if ca is not None:
            previous_ca_pem = ca.cert_pem
            log.info("renewing CA %s in %s", CA_NAME, namespace)
        if dry_run:
            raise WouldWrite(f"Secret {namespace}/{CA_NAME}")
        ca = certs.generate_ca()
        write(_secret(namespace, CA_NAME, "ca", {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}))
    bundle = ca.cert_pem + (previous_ca_pem or "")
    current_bundle = _decode(existing[CA_BUNDLE_SECRET], "bundle.crt") if CA_BUNDLE_SECRET in existing else None
    if previous_ca_pem is None and current_bundle and ca.cert_pem in current_bundle:
        bundle = current_bundle  # keep an old CA that is still being phased out
    if bundle != current_bundle:
        write(_secret(namespace, CA_BUNDLE_SECRET, "bundle", {"bundle.crt": bundle}))

    server: dict[str, certs.KeyPair] = {}
    for req in requests:
        secret = existing.get(req.secret_name)
        pair = certs.KeyPair(_decode(secret, "tls.crt"), _decode(secret, "tls.key")) if secret else None
        if pair is None or certs.needs_renewal(pair) or not certs.covers(pair, ca, req.dns_names, req.ip_addresses):
            if dry_run:
                raise WouldWrite(f"Secret {namespace}/{req.secret_name}")
            pair = certs.generate_server_cert(ca, req.common_name, req.dns_names, req.ip_addresses)
            write(_secret(namespace, req.secret_name, "server", {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem}))
        server[req.upstream] = pair
    wanted = {CA_NAME, CA_BUNDLE_SECRET} | {r.secret_name for r in requests}
    for name, secret in existing.items():
        if name not in wanted and secret["metadata"].get("labels", {}).get(TLS_SECRET_LABEL) == "server":
            if dry_run:
                raise WouldWrite(f"Secret {namespace}/{name} (to delete)")
            seed.delete("Secret", name, namespace)  # the certificate of a cache that is gone
            versions.pop(name, None)
            if store is not None:
                store.removed(namespace, name)
    renew_at = min(certs.renewal_time(p) for p in [ca, *server.values()])
    return TLSMaterial(ca, CA_BUNDLE_SECRET, bundle, server,
                       {n: v for n, v in versions.items() if n in wanted}, renew_at)


def remove_all(seed: Kube, namespace: str, store: SecretStore | None = None, dry_run: bool = False) -> None:
    existing = store.labelled(namespace, TLS_SECRET_LABEL) if store is not None else {
        s["metadata"]["name"]: s for s in seed.list("Secret", namespace, label_selector=TLS_SECRET_LABEL)}
    for name in existing:
        if dry_run:
            raise WouldWrite(f"Secret {namespace}/{name} (to delete)")
        seed.delete("Secret", name, namespace)
        if store is not None:
            store.removed(namespace, name)


def ca_bundle(seed: Kube, namespace: str) -> str | None:
    secret = seed.get("Secret", CA_BUNDLE_SECRET, namespace)
    return _decode(secret, "bundle.crt") if secret else None
