"""The admission webhooks' server side: their serving certificate and their configurations.

:mod:`.admission` serves them (HTTPS with a CA and certificate made here by ``cryptography``); :mod:`.shoot`,
:mod:`.secret` and :mod:`.osc` decide what they answer. This module owns the
``ValidatingWebhookConfiguration`` and the ``MutatingWebhookConfiguration``:

- ``validate-shoot`` (Shoot CREATE/UPDATE, ``failurePolicy: Fail``): the core validation, create and update
  rules, every worker on containerd, each referenced Secret present, immutable, with valid credentials.
  Only Shoots that use one of the extension types reach it, as Gardener's extension webhooks: object
  selectors on Gardener's label per type, ``extensions.extensions.gardener.cloud/registry-cache`` and
  ``.../registry-mirror`` (gardener-apiserver sets them; the standalone bridge keeps them), one entry per label
  such that a Shoot labelled for both is admitted once, and in standalone mode another entry for Shoots
  labelled for neither yet whose ``spec.extensions`` enable one (a CEL match condition). A controller that is
  down blocks only those Shoots. It is removed on a clean shutdown.
  Who may reference which Secret is not this webhook's to decide: in standalone mode a ValidatingAdmissionPolicy
  does it inside the API server (``manifests/policies``), under Gardener the ResourceReferenceManager.
- ``protect-secret`` (Secret DELETE, ``failurePolicy: Ignore``): refuses the DELETE of a Secret in use, naming
  the Shoot and the reference. In standalone mode an object selector on the label the protection controller
  sets on Secrets in use keeps every other Secret away; without it (``--webhooks garden``, where Gardener keeps
  the finalizer and nothing labels Secrets) every Secret DELETE reaches it and is answered from the index.
  When it is down the finalizer holds the Secret instead; it stays registered since it can never block
  anything else.
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.urls import is_ip_address
from extension.component import certs
from extension.constants import (
    EXTENSION_NAMESPACE_LABEL,
    EXTENSION_SHOOT_LABEL,
    EXTENSION_TYPE,
    EXTENSION_TYPES,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MIRROR_NAMESPACE_LABEL,
    MIRROR_SHOOT_LABEL,
    OSC_HOOK,
    OSC_MIRROR_HOOK,
    REFERENCED_LABEL,
    SECRET_HOOK,
    SHOOT_HOOK,
    WEBHOOK_CERT_SECRET,
    WEBHOOK_CONFIGURATION_NAME,
    extension_shoot_label,
)
from extension.runtime.kube import ApiError, Kube

SHOOT_WEBHOOK = "shoots.registry-cache.extensions.gardener.cloud"


# CEL: a Shoot whose spec.extensions enable registry-cache or registry-mirror (before the bridge has labelled it)
USES_EXTENSION = ("has(object.spec) && has(object.spec.extensions) && object.spec.extensions.exists(e, "
                  f"has(e.type) && e.type in [{', '.join(repr(t) for t in EXTENSION_TYPES)}] && "
                  "!(has(e.disabled) && e.disabled == true))")


def _not_labelled(extension_type: str) -> dict[str, Any]:
    """The complement of ``matchLabels: {<the type's label>: "true"}``."""
    return {"key": extension_shoot_label(extension_type), "operator": "NotIn", "values": ["true"]}


def shoot_selections(standalone: bool) -> list[tuple[str, dict[str, Any]]]:
    """(name prefix, selection) of the Shoot webhooks: Shoots labelled as using either extension type (Gardener
    labels Shoots per type; a Shoot labelled for both matches only the first entry, so that it is admitted
    once), and in standalone mode those labelled for neither yet that enable one."""
    out: list[tuple[str, dict[str, Any]]] = [
        ("", {"objectSelector": {"matchLabels": {EXTENSION_SHOOT_LABEL: "true"}}}),
        ("mirror-", {"objectSelector": {"matchLabels": {MIRROR_SHOOT_LABEL: "true"},
                                        "matchExpressions": [_not_labelled(EXTENSION_TYPE)]}})]
    if standalone:
        out.append(("new-", {
            "objectSelector": {"matchExpressions": [_not_labelled(t) for t in EXTENSION_TYPES]},
            "matchConditions": [{"name": "uses-the-extensions", "expression": USES_EXTENSION}]}))
    return out


@dataclass
class ServingCert:
    directory: Path
    ca_pem: str

    @property
    def certfile(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def keyfile(self) -> Path:
        return self.directory / "tls.key"


WEBHOOK_VALIDITY = dt.timedelta(days=3650)


def _server_cert(ca: certs.KeyPair, hostnames: list[str]) -> certs.KeyPair:
    ips = [h for h in hostnames if is_ip_address(h)]
    dns = [h for h in hostnames if not is_ip_address(h)]
    return certs.generate_server_cert(ca, (dns or ips)[0], dns, ips, validity=WEBHOOK_VALIDITY)


def _files(ca: certs.KeyPair, pair: certs.KeyPair) -> ServingCert:
    directory = Path(tempfile.mkdtemp(prefix="registry-cache-webhook-"))
    cert = ServingCert(directory, ca.cert_pem)
    cert.certfile.write_text(pair.cert_pem)
    cert.keyfile.write_text(pair.key_pem)
    cert.keyfile.chmod(0o600)
    return cert


def make_serving_cert(hostnames: list[str]) -> ServingCert:
    """A CA and a server certificate for the webhook server's names/addresses, in a private temp dir."""
    ca = certs.generate_ca("registry-cache-webhook-ca", validity=WEBHOOK_VALIDITY)
    return _files(ca, _server_cert(ca, hostnames))


def shared_serving_cert(kube: Kube, namespace: str, hostnames: list[str]) -> ServingCert:
    """The serving certificate every replica behind one webhook Service uses (the configurations carry one CA
    bundle): kept in Secret :data:`WEBHOOK_CERT_SECRET` of ``namespace``, made by the first replica. A server
    certificate that does not cover ``hostnames`` (another Service) or is due is issued again by the same CA,
    so that replicas still serving the old one stay trusted."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def text(secret: dict[str, Any], key: str) -> str:
        return base64.b64decode((secret.get("data") or {}).get(key, "")).decode()

    ips = [h for h in hostnames if is_ip_address(h)]
    dns = [h for h in hostnames if not is_ip_address(h)]
    for _ in range(5):
        secret = kube.get("Secret", WEBHOOK_CERT_SECRET, namespace)
        if secret is None:
            ca = certs.generate_ca("registry-cache-webhook-ca", validity=WEBHOOK_VALIDITY)
            pair = _server_cert(ca, hostnames)
            try:
                kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": {"name": WEBHOOK_CERT_SECRET, "namespace": namespace,
                                          "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
                             "data": {"ca.crt": b64(ca.cert_pem), "ca.key": b64(ca.key_pem),
                                      "tls.crt": b64(pair.cert_pem), "tls.key": b64(pair.key_pem)}})
            except ApiError as exc:
                if exc.conflict:
                    continue  # another replica made it meanwhile: take that one
                raise
            return _files(ca, pair)
        ca = certs.KeyPair(text(secret, "ca.crt"), text(secret, "ca.key"))
        pair = certs.KeyPair(text(secret, "tls.crt"), text(secret, "tls.key"))
        if certs.needs_renewal(pair) or not certs.covers(pair, ca, dns, ips):
            pair = _server_cert(ca, hostnames)
            try:
                kube.patch("Secret", WEBHOOK_CERT_SECRET, {
                    "metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
                    "data": {"tls.crt": b64(pair.cert_pem), "tls.key": b64(pair.key_pem)}}, namespace)
            except ApiError as exc:
                if exc.conflict:
                    continue
                raise
        return _files(ca, pair)
    raise RuntimeError(f"Secret {namespace}/{WEBHOOK_CERT_SECRET} keeps changing")


def other_replica_serving(kube: Kube, namespace: str, service: str, me: str) -> bool:
    """Whether a Pod other than ``me`` is a ready endpoint of the webhook Service (its EndpointSlices): then the
    webhook configurations stay when this replica stops. When that cannot be told, they stay too."""
    try:
        slices = kube.list("EndpointSlice", namespace, label_selector=f"kubernetes.io/service-name={service}")
    except ApiError:
        return True
    return any((endpoint.get("conditions") or {}).get("ready") and
               ((endpoint.get("targetRef") or {}).get("name") != me)
               for piece in slices for endpoint in piece.get("endpoints") or ())


def mutating_configuration(ca_pem: str, client: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The MutatingWebhookConfiguration: the OperatingSystemConfig webhooks, one per extension type as Gardener
    registers them (only shoot namespaces that use the type, gardenlet's label; Fail, so that no node
    configuration goes out without the caches and mirrors while we are up). Removed on a clean shutdown: then
    nodes pull from the upstreams."""
    ca_bundle = base64.b64encode(ca_pem.encode()).decode()
    webhooks: list[dict[str, Any]] = []
    for name, hook, label in (("operatingsystemconfigs.registry-cache.extensions.gardener.cloud", OSC_HOOK,
                               EXTENSION_NAMESPACE_LABEL),
                              ("operatingsystemconfigs.registry-mirror.extensions.gardener.cloud",
                               OSC_MIRROR_HOOK, MIRROR_NAMESPACE_LABEL)):
        webhooks.append({
            "name": name,
            "clientConfig": {**client(hook), "caBundle": ca_bundle},
            "rules": [{"apiGroups": ["extensions.gardener.cloud"], "apiVersions": ["v1alpha1"],
                       "resources": ["operatingsystemconfigs"], "operations": ["CREATE", "UPDATE"],
                       "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {label: "true"}},
            "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Equivalent",
            "reinvocationPolicy": "IfNeeded", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
        })
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION_NAME, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "webhooks": webhooks}


def configuration(ca_pem: str, client: Callable[[str], dict[str, Any]], shoot_hook: bool = True,
                  secret_hook: bool = True, standalone: bool = False) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration; ``client(hook_id)`` gives each webhook's clientConfig."""
    ca_bundle = base64.b64encode(ca_pem.encode()).decode()
    webhooks = []
    if shoot_hook:
        for prefix, selection in shoot_selections(standalone):
            webhooks.append({
                "name": prefix + SHOOT_WEBHOOK,
                "clientConfig": {**client(SHOOT_HOOK), "caBundle": ca_bundle},
                "rules": [{"apiGroups": ["core.gardener.cloud"], "apiVersions": ["v1beta1"], "resources": ["shoots"],
                           "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
                **selection,
                "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Equivalent",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
            })
    if secret_hook:
        webhooks.append({
            "name": "secrets.registry-cache.extensions.gardener.cloud",
            "clientConfig": {**client(SECRET_HOOK), "caBundle": ca_bundle},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
                       "operations": ["DELETE"], "scope": "Namespaced"}],
            # standalone: only Secrets in use (the protection controller labels them); otherwise nothing labels
            # them, so every Secret DELETE comes (answered from the index, failures ignored)
            **({"objectSelector": {"matchLabels": {REFERENCED_LABEL: "true"}}} if standalone else {}),
            "failurePolicy": "Ignore", "sideEffects": "None", "matchPolicy": "Equivalent",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 5,
        })
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION_NAME, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "webhooks": webhooks}


def url_client(base: str) -> Callable[[str], dict[str, Any]]:
    return lambda hook: {"url": f"{base.rstrip('/')}/{hook}"}


def service_client(namespace: str, name: str, port: int = 443) -> Callable[[str], dict[str, Any]]:
    return lambda hook: {"service": {"namespace": namespace, "name": name, "port": port, "path": f"/{hook}"}}
