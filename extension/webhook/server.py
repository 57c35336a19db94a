"""The admission webhooks' server side: their serving certificate and their configurations.

kopf serves them (HTTPS with a CA and certificate made here by ``cryptography``); :mod:`.shoot`,
:mod:`.secret` and :mod:`.osc` decide what they answer. This module owns the
``ValidatingWebhookConfiguration`` and the ``MutatingWebhookConfiguration``:

- ``validate-shoot`` (Shoot CREATE/UPDATE, ``failurePolicy: Fail``): the core validation, create and update
  rules, every worker on containerd, each referenced Secret present, immutable, with valid credentials.
  Only Shoots that use the extension reach it, as Gardener's extension webhooks: an object selector on
  Gardener's label ``extensions.extensions.gardener.cloud/registry-cache`` (gardener-apiserver sets it; the
  standalone bridge keeps it), and in standalone mode a second entry for Shoots not labelled yet whose
  ``spec.extensions`` enable it (a CEL match condition). A controller that is down blocks only those Shoots.
  It is removed on a clean shutdown.
- ``admit-shoot-resources`` (standalone only, mutating, same selection): the requesting user may ``get`` every
  Secret of ``spec.resources`` (SubjectAccessReviews), recorded for the bridge (:mod:`.references`).
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
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OSC_HOOK,
    REFERENCED_LABEL,
    SECRET_HOOK,
    SHOOT_HOOK,
    SHOOT_MUTATING_HOOK,
    WEBHOOK_CONFIGURATION_NAME,
)

SHOOT_WEBHOOK = "shoots.registry-cache.extensions.gardener.cloud"
# CEL: a Shoot whose spec.extensions enable registry-cache (before the bridge has labelled it)
USES_EXTENSION = (f"has(object.spec) && has(object.spec.extensions) && object.spec.extensions.exists(e, "
                  f"has(e.type) && e.type == '{EXTENSION_TYPE}' && !(has(e.disabled) && e.disabled == true))")


def shoot_selections(standalone: bool) -> list[tuple[str, dict[str, Any]]]:
    """(name prefix, selection) of the Shoot webhooks: Shoots labelled as using the extension, and in standalone
    mode those not labelled yet that enable it."""
    out: list[tuple[str, dict[str, Any]]] = [
        ("", {"objectSelector": {"matchLabels": {EXTENSION_SHOOT_LABEL: "true"}}})]
    if standalone:
        out.append(("new-", {
            "objectSelector": {"matchExpressions": [{"key": EXTENSION_SHOOT_LABEL, "operator": "DoesNotExist"}]},
            "matchConditions": [{"name": "uses-registry-cache", "expression": USES_EXTENSION}]}))
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


def make_serving_cert(hostnames: list[str]) -> ServingCert:
    """A CA and a server certificate for the webhook server's names/addresses, in a private temp dir."""
    ca = certs.generate_ca("registry-cache-webhook-ca", validity=dt.timedelta(days=3650))
    ips = [h for h in hostnames if is_ip_address(h)]
    dns = [h for h in hostnames if not is_ip_address(h)]
    pair = certs.generate_server_cert(ca, (dns or ips)[0], dns, ips, validity=dt.timedelta(days=3650))
    directory = Path(tempfile.mkdtemp(prefix="registry-cache-webhook-"))
    cert = ServingCert(directory, ca.cert_pem)
    cert.certfile.write_text(pair.cert_pem)
    cert.keyfile.write_text(pair.key_pem)
    cert.keyfile.chmod(0o600)
    return cert


def mutating_configuration(ca_pem: str, client: Callable[[str], dict[str, Any]], osc_hook: bool = True,
                           shoot_hook: bool = False) -> dict[str, Any]:
    """The MutatingWebhookConfiguration: the OperatingSystemConfig webhook (only shoot namespaces that use this
    extension; Fail, so that no node configuration goes out without the caches while we are up) and, in
    standalone mode, the Shoot webhook that records who may read the referenced Secrets. Removed on a clean
    shutdown: then nodes pull from the upstreams."""
    ca_bundle = base64.b64encode(ca_pem.encode()).decode()
    webhooks: list[dict[str, Any]] = []
    if osc_hook:
        webhooks.append({
            "name": "operatingsystemconfigs.registry-cache.extensions.gardener.cloud",
            "clientConfig": {**client(OSC_HOOK), "caBundle": ca_bundle},
            "rules": [{"apiGroups": ["extensions.gardener.cloud"], "apiVersions": ["v1alpha1"],
                       "resources": ["operatingsystemconfigs"], "operations": ["CREATE", "UPDATE"],
                       "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {EXTENSION_NAMESPACE_LABEL: "true"}},
            "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Equivalent",
            "reinvocationPolicy": "IfNeeded", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
        })
    if shoot_hook:
        for prefix, selection in shoot_selections(standalone=True):
            webhooks.append({
                "name": f"{prefix}resources.{SHOOT_WEBHOOK}",
                "clientConfig": {**client(SHOOT_MUTATING_HOOK), "caBundle": ca_bundle},
                "rules": [{"apiGroups": ["core.gardener.cloud"], "apiVersions": ["v1beta1"], "resources": ["shoots"],
                           "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
                **selection,
                "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Equivalent",
                "reinvocationPolicy": "Never", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
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
