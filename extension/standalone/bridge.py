"""Standalone mode: gardenlet's part for this extension alone, for clusters without Gardener.

For every Shoot that enables ``registry-cache`` or ``registry-mirror`` the bridge keeps, in the seed (here: the
same API server): the namespace ``shoot--<project>--<name>`` (labelled with the extension types it uses, as
gardenlet labels it), the Cluster named like it, ``ref-<secret>`` copies of the Secrets in ``spec.resources``,
and per type the Extension named after it with the providerConfig, annotated ``gardener.cloud/operation:
reconcile`` whenever the Shoot changes; and on the Shoot Gardener's label per type it uses
(``extensions.extensions.gardener.cloud/<type>: "true"``), which the Shoot webhooks select on. It removes an
Extension when the Shoot drops its type, and all of them when the Shoot is deleted (a finalizer on the Shoot
waits for the Extensions' cleanup); the then empty namespace is left in place.

Gardener's guarantees are kept, for both types: a Shoot whose name or project has ``--`` (or that is not in a
project namespace) is refused, so that seed namespaces never collide; a namespace, Cluster or Extension (of
either type) of another Shoot is never taken over (refused, said in the Shoot's ``status.lastErrors``).

Secrets are copied and Extensions delivered only while the admission policies for Shoots are in force
(:mod:`.policies`: the author of ``spec.resources`` may read every Secret listed there; only cluster operators
enable or change the extensions, since every Shoot configures the same nodes); otherwise nothing new is delivered
and nothing delivered before is removed. An upstream has one owner across all Shoots and both types: a Shoot
whose upstream an older Shoot claims (a race the Shoot webhook lost) is refused. A sync that fails (the API server
away) is retried with backoff, as the controller retries.
Under a real Gardener this is off: gardenlet does all of it.
"""

from __future__ import annotations

import logging
from typing import Any

from api import shoot as shootlib
from extension.constants import (
    BRIDGE_FINALIZER,
    BRIDGE_LABEL,
    BRIDGE_SHOOT_ANNOTATION,
    BRIDGE_TASK_ID,
    ERR_CONFIGURATION_PROBLEM,
    EXTENSION_TYPES,
    OPERATION_ANNOTATION,
    OPERATION_RECONCILE,
    REFERENCED_RESOURCE_PREFIX,
    SHOOT_GENERATION_ANNOTATION,
    extension_namespace_label,
    extension_shoot_label,
)
from extension.controller.reconciler import now_rfc3339
from extension.references import ReferenceIndex, claim_refusal
from extension.runtime.kube import ApiError, Kube, Undecodable
from extension.runtime.retry import Backoff
from extension.standalone.policies import PolicyCheck

log = logging.getLogger(__name__)


def shoot_key(shoot: dict[str, Any]) -> str:
    meta = shoot.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class Refused(Exception):
    """The bridge will not act for this Shoot; the message says why (written to the Shoot's status)."""


class Bridge:
    def __init__(self, kube: Kube, index: ReferenceIndex | None = None, policies: PolicyCheck | None = None):
        self.kube = kube  # its own field manager: registry-cache-bridge
        self.index = index  # the upstreams' claims (None: not checked)
        self.policies = policies if policies is not None else PolicyCheck(kube)
        self.backoff = Backoff()

    @staticmethod
    def seed_namespace(shoot: dict[str, Any]) -> str:
        meta = shoot["metadata"]
        return shootlib.technical_namespace(shootlib.project_of_namespace(meta["namespace"]), meta["name"])

    # --- entry points with retries ------------------------------------------------------------------------
    def handle(self, shoot: dict[str, Any]) -> str:
        """:meth:`sync`, retried with backoff when it fails (the API server away, a conflict)."""
        key = shoot_key(shoot)
        try:
            result = self.sync(shoot)
        except ApiError as exc:
            delay = self.backoff.failed(key)
            log.warning("bridge: %s: %s; retrying in %.0fs", key, exc.describe(), delay)
            return "retrying"
        self.backoff.succeeded(key)
        if result != "nothing":
            log.info("bridge: %s: %s", key, result)
        return result

    def retry_due(self) -> None:
        for key in self.backoff.due():
            namespace, name = key.split("/", 1)
            try:
                shoot = self.kube.get("Shoot", name, namespace)
            except Undecodable:  # nested too deep (named already): skipped until it changes
                self.backoff.succeeded(key)
                continue
            except ApiError as exc:
                log.warning("bridge: %s: %s", key, exc.describe())
                self.backoff.failed(key)
                continue
            if shoot is None:
                self.backoff.succeeded(key)
            else:
                self.handle(shoot)

    @staticmethod
    def concerns(shoot: dict[str, Any]) -> bool:
        """Whether :meth:`sync` has anything to do with this Shoot: it enables an extension type, or carries the
        bridge's finalizer or one of Gardener's extension labels (to be removed). Any other Shoot is "nothing"."""
        meta = shoot.get("metadata") or {}
        labels = meta.get("labels") or {}
        return any(shootlib.find_extension(shoot, t) is not None or extension_shoot_label(t) in labels
                   for t in EXTENSION_TYPES) or BRIDGE_FINALIZER in (meta.get("finalizers") or [])

    # --- one Shoot ------------------------------------------------------------------------------------------
    def sync(self, shoot: dict[str, Any]) -> str:
        """Bring the seed side in line with the Shoot. Returns what it did, for logs and tests."""
        meta = shoot["metadata"]
        wanted = [t for t in EXTENSION_TYPES if shootlib.find_extension(shoot, t) is not None]
        if meta.get("deletionTimestamp") or not wanted:
            self._label(shoot, [])
            if BRIDGE_FINALIZER not in (meta.get("finalizers") or []):
                return "nothing"
            return "cleaned-up" if self.cleanup(shoot) else "waiting-for-extension"
        try:
            problems = [str(e) for e in shootlib.identity_errors(shoot)]
            if problems:
                raise Refused("; ".join(problems))
            ns = self.seed_namespace(shoot)
            self._check_owner(ns, shoot)
            unsafe = self.policies.refusal()
            if unsafe:
                raise Refused(unsafe)
            self._check_claims(shoot)
        except Refused as exc:
            log.warning("bridge: %s: refused: %s", shoot_key(shoot), exc)
            self._report(shoot, str(exc))
            return "refused"
        self._label(shoot, wanted)
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": ns, "labels": {BRIDGE_LABEL: "true", "gardener.cloud/role": "shoot",
                                                             **{extension_namespace_label(t): "true"
                                                                for t in wanted}},
                                      "annotations": {BRIDGE_SHOOT_ANNOTATION: shoot_key(shoot)}}})
        self.kube.apply(self._cluster(ns, shoot))
        self._sync_references(ns, shoot)
        for extension_type in EXTENSION_TYPES:
            if extension_type in wanted:
                self._sync_extension(ns, shoot, extension_type)
            elif self.kube.get("Extension", extension_type, ns) is not None:
                self.kube.delete("Extension", extension_type, ns)  # the Shoot dropped this type
                log.info("%s: Extension %s removed (no longer in the Shoot)", ns, extension_type)
        self._report(shoot, None)
        return "synced"

    def _label(self, shoot: dict[str, Any], wanted: list[str]) -> None:
        """Gardener's extension label per type on the Shoot, for the types in use (the Shoot webhooks select on
        them) and, while an extension is enabled, the bridge's finalizer. One patch, only when something
        changes."""
        meta = shoot["metadata"]
        labels = meta.get("labels") or {}
        finalizers = list(meta.get("finalizers") or [])
        patch: dict[str, Any] = {}
        if wanted and BRIDGE_FINALIZER not in finalizers:
            patch["finalizers"] = finalizers + [BRIDGE_FINALIZER]
        changed = {extension_shoot_label(t): "true" if t in wanted else None for t in EXTENSION_TYPES
                   if (labels.get(extension_shoot_label(t)) == "true") != (t in wanted)}
        if changed:
            patch["labels"] = changed
        if patch:
            patch["resourceVersion"] = meta["resourceVersion"]
            updated = self.kube.patch("Shoot", meta["name"], {"metadata": patch}, meta["namespace"])
            shoot["metadata"] = updated["metadata"]

    def _check_owner(self, ns: str, shoot: dict[str, Any]) -> None:
        """Raise :class:`Refused` when the namespace, Cluster or Extension belongs to another Shoot."""
        me = shoot_key(shoot)
        owners: list[str] = []
        namespace = self.kube.get("Namespace", ns)
        if namespace is not None:
            labels = namespace["metadata"].get("labels") or {}
            owner = (namespace["metadata"].get("annotations") or {}).get(BRIDGE_SHOOT_ANNOTATION)
            if owner not in (None, me) or BRIDGE_LABEL not in labels:
                owners.append(f"namespace {ns} ({'of Shoot ' + owner if owner else 'not made by the bridge'})")
        cluster = self.kube.get("Cluster", ns)
        if cluster is not None:
            shoot_meta = (((cluster.get("spec") or {}).get("shoot") or {}).get("metadata") or {})
            owner = f"{shoot_meta.get('namespace')}/{shoot_meta.get('name')}"
            if owner != me:
                owners.append(f"Cluster {ns} (of Shoot {owner})")
        for extension_type in EXTENSION_TYPES:  # the Extension is named after its type
            extension = self.kube.get("Extension", extension_type, ns)
            if extension is not None:
                meta = extension["metadata"]
                owner = (meta.get("annotations") or {}).get(BRIDGE_SHOOT_ANNOTATION)
                if BRIDGE_LABEL not in (meta.get("labels") or {}) or owner not in (None, me):
                    owners.append(f"Extension {ns}/{extension_type} "
                                  f"({'of Shoot ' + owner if owner else 'not made by the bridge'})")
        if owners:
            raise Refused(f"the seed namespace {ns} of this Shoot is another's: " + "; ".join(owners)
                          + "; nothing of it is taken over")

    def _check_claims(self, shoot: dict[str, Any]) -> None:
        """Raise :class:`Refused` when an older Shoot claims one of this Shoot's upstreams."""
        if self.index is None:
            return
        held = self.index.held_by_others(shoot, older_only=True)
        if held:
            namespace = shoot["metadata"]["namespace"]
            raise Refused("; ".join(claim_refusal(upstream, claim, namespace)
                                    for upstream, claim in sorted(held.items())) + "; nothing is delivered")

    def _report(self, shoot: dict[str, Any], problem: str | None) -> None:
        """The bridge's entry in the Shoot's ``status.lastErrors`` (Gardener's shape), set or cleared."""
        meta = shoot["metadata"]
        errors = [e for e in ((shoot.get("status") or {}).get("lastErrors") or [])
                  if isinstance(e, dict) and e.get("taskID") != BRIDGE_TASK_ID]
        ours = [e for e in ((shoot.get("status") or {}).get("lastErrors") or [])
                if isinstance(e, dict) and e.get("taskID") == BRIDGE_TASK_ID]
        if problem is None and not ours:
            return
        if problem is not None and ours and ours[0].get("description") == problem:
            return
        if problem is not None:
            errors.append({"taskID": BRIDGE_TASK_ID, "description": f"registry-cache: {problem}",
                           "codes": [ERR_CONFIGURATION_PROBLEM], "lastUpdateTime": now_rfc3339()})
        self.kube.patch("Shoot", meta["name"], {"status": {"lastErrors": errors or None}}, meta["namespace"],
                        subresource="status")

    def _cluster(self, ns: str, shoot: dict[str, Any]) -> dict[str, Any]:
        shoot_copy = {k: v for k, v in shoot.items() if k != "status"}
        shoot_copy["metadata"] = {k: v for k, v in shoot["metadata"].items() if k != "managedFields"}
        return {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
                "metadata": {"name": ns, "labels": {BRIDGE_LABEL: "true"},
                             "annotations": {BRIDGE_SHOOT_ANNOTATION: shoot_key(shoot)}},
                "spec": {"shoot": shoot_copy,
                         "seed": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
                                  "metadata": {"name": "standalone"}},
                         "cloudProfile": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
                                          "metadata": {"name": "standalone"}}}}

    def _sync_references(self, ns: str, shoot: dict[str, Any]) -> None:
        """Copy the referenced Secrets (the policy admitted only authors who may read them)."""
        wanted: set[str] = set()
        for res in shootlib.resources(shoot):
            ref = res.get("resourceRef") or {}
            if ref.get("kind") != "Secret" or not isinstance(ref.get("name"), str) or not ref["name"]:
                continue
            source = self.kube.get("Secret", ref["name"], shoot["metadata"]["namespace"])
            if source is None:
                log.warning("%s: Secret %s/%s of spec.resources[%s] does not exist", ns,
                            shoot["metadata"]["namespace"], ref["name"], res.get("name"))
                continue
            name = REFERENCED_RESOURCE_PREFIX + ref["name"]
            wanted.add(name)
            self.kube.apply({"apiVersion": "v1", "kind": "Secret", "type": source.get("type", "Opaque"),
                             "metadata": {"name": name, "namespace": ns, "labels": {BRIDGE_LABEL: "true"}},
                             "data": source.get("data") or {}})
        for secret in self.kube.list("Secret", ns, label_selector=f"{BRIDGE_LABEL}=true"):
            if secret["metadata"]["name"] not in wanted:
                self.kube.delete("Secret", secret["metadata"]["name"], ns)

    def _sync_extension(self, ns: str, shoot: dict[str, Any], extension_type: str) -> None:
        entry = shootlib.find_extension(shoot, extension_type)
        assert entry is not None
        current = self.kube.get("Extension", extension_type, ns)
        generation = str(shoot["metadata"].get("generation", ""))
        annotations = {SHOOT_GENERATION_ANNOTATION: generation, BRIDGE_SHOOT_ANNOTATION: shoot_key(shoot)}
        if current is None or (current["metadata"].get("annotations") or {}).get(
                SHOOT_GENERATION_ANNOTATION) != generation:
            annotations[OPERATION_ANNOTATION] = OPERATION_RECONCILE
        elif current["metadata"].get("deletionTimestamp"):
            return  # being removed; recreated on the next change
        self.kube.apply({
            "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
            "metadata": {"name": extension_type, "namespace": ns, "labels": {BRIDGE_LABEL: "true"},
                         "annotations": annotations},
            "spec": {"type": extension_type, "providerConfig": entry.provider_config},
        })
        if OPERATION_ANNOTATION in annotations:
            log.info("%s: Extension %s asked to reconcile (shoot generation %s)", ns, extension_type, generation)

    def resync_shoot_of(self, namespace: str) -> None:
        """The Extension in ``namespace`` is gone: sync its Shoot again, so that its cleanup finishes."""
        cluster = self.kube.get("Cluster", namespace)
        shoot_meta = (((cluster or {}).get("spec") or {}).get("shoot") or {}).get("metadata") or {}
        if shoot_meta.get("name"):
            shoot = self.kube.get("Shoot", shoot_meta["name"], shoot_meta.get("namespace"))
            if shoot is not None:
                self.handle(shoot)

    def cleanup(self, shoot: dict[str, Any]) -> bool:
        """Delete the Extensions; once they are gone, the copies, the Cluster and the finalizer. False while an
        Extension is still being cleaned up by the controller. What belongs to another Shoot (or a Shoot that was
        refused) is left alone: only the finalizer goes."""
        ns = self.seed_namespace(shoot)
        try:
            if shootlib.identity_errors(shoot):
                raise Refused("refused Shoot")
            self._check_owner(ns, shoot)
        except Refused:
            ns = ""
        if ns:
            waiting = False
            for extension_type in EXTENSION_TYPES:
                if self.kube.get("Extension", extension_type, ns) is not None:
                    self.kube.delete("Extension", extension_type, ns)
                    waiting |= self.kube.get("Extension", extension_type, ns) is not None
            if waiting:
                return False
            for secret in self.kube.list("Secret", ns, label_selector=f"{BRIDGE_LABEL}=true"):
                self.kube.delete("Secret", secret["metadata"]["name"], ns)
            self.kube.delete("Cluster", ns)
        # The namespace stays (empty): without a namespace controller (the local control plane has none) a
        # deleted namespace would stay Terminating and block the same Shoot from being created again.
        meta = shoot["metadata"]
        current = self.kube.get("Shoot", meta["name"], meta["namespace"])
        if current is not None:
            finalizers = [f for f in (current["metadata"].get("finalizers") or []) if f != BRIDGE_FINALIZER]
            self.kube.patch("Shoot", meta["name"], {"metadata": {
                "finalizers": finalizers, "resourceVersion": current["metadata"]["resourceVersion"]}},
                meta["namespace"])
        log.info("%s: removed (shoot %s/%s)", ns or "nothing of another Shoot", meta["namespace"], meta["name"])
        return True
