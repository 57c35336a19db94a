"""Keeps ``gardener.cloud/reference-protection`` on exactly the Secrets in use (the caches' credentials, the
mirror hosts' CA bundles: :mod:`extension.references`).

The safety net behind the admission webhook: while a Secret is in use it carries the finalizer (and the
label the webhook's object selector matches), so a DELETE that gets past a webhook that is down leaves it
Terminating until the last reference is gone; then the finalizer is removed and the deletion completes.
"""

from __future__ import annotations

import logging

from extension.constants import PROTECTION_FINALIZER, REFERENCED_LABEL
from extension.references import ReferenceIndex
from extension.runtime.kube import ApiError, Kube
from extension.runtime.retry import Backoff

log = logging.getLogger(__name__)


class Protection:
    def __init__(self, kube: Kube, index: ReferenceIndex):
        self.kube = kube
        self.index = index
        self.backoff = Backoff()

    def handle(self, namespace: str, name: str) -> None:
        """:meth:`sync`, retried with backoff when it fails (the API server away, a conflict)."""
        key = f"{namespace}/{name}"
        try:
            result = self.sync(namespace, name)
        except ApiError as exc:
            delay = self.backoff.failed(key)
            log.warning("Secret %s: %s; retrying in %.0fs", key, exc.describe(), delay)
            return
        if result == "conflict":
            self.backoff.failed(key)
        else:
            self.backoff.succeeded(key)

    def retry_due(self) -> None:
        for key in self.backoff.due():
            namespace, name = key.split("/", 1)
            self.handle(namespace, name)

    def sync(self, namespace: str, name: str, attempts: int = 3) -> str:
        """Add or remove the finalizer and label of one Secret; returns what it did."""
        for _ in range(attempts):
            secret = self.kube.get("Secret", name, namespace)
            if secret is None:
                return "gone"
            meta = secret["metadata"]
            in_use = bool(self.index.users(namespace, name))
            finalizers = list(meta.get("finalizers") or [])
            labelled = (meta.get("labels") or {}).get(REFERENCED_LABEL) == "true"
            protected = PROTECTION_FINALIZER in finalizers
            if in_use == protected and in_use == labelled:
                return "unchanged"
            if in_use:
                patch = {"finalizers": finalizers + ([] if protected else [PROTECTION_FINALIZER]),
                         "labels": {REFERENCED_LABEL: "true"}}
            else:
                patch = {"finalizers": [f for f in finalizers if f != PROTECTION_FINALIZER],
                         "labels": {REFERENCED_LABEL: None}}
            patch["resourceVersion"] = meta["resourceVersion"]
            try:
                self.kube.patch("Secret", name, {"metadata": patch}, namespace)
            except ApiError as exc:
                if exc.conflict:
                    continue  # changed meanwhile: look again
                if exc.not_found:
                    return "gone"
                raise
            log.info("Secret %s/%s: %s", namespace, name, "protected" if in_use else "released")
            return "protected" if in_use else "released"
        return "conflict"

    def resync(self) -> None:
        """Every Secret in use, and every Secret still marked from before (e.g. across a restart)."""
        keys = self.index.secrets()
        for secret in self.kube.list("Secret", None, label_selector=f"{REFERENCED_LABEL}=true"):
            keys.add((secret["metadata"]["namespace"], secret["metadata"]["name"]))
        for namespace, name in sorted(keys):
            try:
                self.sync(namespace, name)
            except ApiError as exc:
                log.warning("Secret %s/%s: %s", namespace, name, exc)
