"""The prune of a removed cache: its StatefulSet goes before its volume claim (extension/component/registrycache.py).

A claim deleted while its StatefulSet is still there stays Terminating under the StatefulSet controller ("pvc is
being deleted"), which then makes a new claim of the same name (a second volume) for a Pod it still starts. Shown
on the one-node cluster by tests/e2e/scenarios.py (no second claim provisioned, none left); here the order of
the requests, against a fake shoot that records them.
"""

from __future__ import annotations

from typing import Any

import pytest

from extension import constants as c
from extension.component import registrycache
from extension.component.objects import RenderOptions
from extension.component.registrycache import RegistryCaches
from extension.errors import ReconcileError

OWNER = "shoot--local--a"
NS = c.SHOOT_NAMESPACE


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


class FakeKube:
    """Objects by (kind, namespace, name); every delete recorded with the StatefulSets there at that moment.
    ``finalized``: StatefulSets a finalizer keeps after their DELETE (deletionTimestamp set, still listed)."""

    def __init__(self, objects: list[dict[str, Any]] = (), finalized: set[str] = frozenset()):
        self.objects = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
        self.finalized = set(finalized)
        self.deletes: list[tuple[str, str, set[str]]] = []

    def statefulsets(self) -> set[str]:
        return {name for kind, _, name in self.objects if kind == "StatefulSet"}

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
             **_: Any) -> list[dict[str, Any]]:
        return [o for (k, ns, _), o in sorted(self.objects.items()) if k == kind and ns == namespace
                and _matches(o, label_selector)]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def delete(self, kind: str, name: str, namespace: str | None = None, propagation: str = "Background") -> bool:
        self.deletes.append((kind, name, self.statefulsets()))
        key = (kind, namespace, name)
        if key not in self.objects:
            return False
        if kind == "StatefulSet" and name in self.finalized:
            self.objects[key]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
        else:
            del self.objects[key]
        return True

    def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        return obj


def delivered(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": NS, "labels": {
        c.MANAGED_BY_LABEL: c.MANAGED_BY, c.OWNER_LABEL: OWNER}}}


def claim(statefulset: str) -> dict[str, Any]:
    # made by the StatefulSet controller from the claim template: the owner label only
    return {"kind": "PersistentVolumeClaim", "metadata": {
        "name": f"{c.VOLUME_NAME}-{statefulset}-0", "namespace": NS, "labels": {c.OWNER_LABEL: OWNER}}}


def caches(shoot: FakeKube) -> RegistryCaches:
    return RegistryCaches(FakeKube(), shoot, OWNER, RenderOptions())  # type: ignore[arg-type]


def test_a_removed_cache_loses_its_statefulset_before_its_volume_claim():
    shoot = FakeKube([delivered("StatefulSet", "registry-a"), delivered("Service", "registry-a"),
                      delivered("StatefulSet", "registry-b"), delivered("Service", "registry-b"),
                      claim("registry-a"), claim("registry-b")])
    rc = caches(shoot)
    keep = {("StatefulSet", "registry-a"), ("Service", "registry-a")}
    rc._prune(rc.view.objects(OWNER), keep, frozenset({"registry-a"}), dry_run=False)

    kinds = [(kind, name) for kind, name, _ in shoot.deletes]
    assert ("PersistentVolumeClaim", "cache-volume-registry-a-0") not in kinds  # its cache is kept
    assert kinds.index(("StatefulSet", "registry-b")) < kinds.index(("PersistentVolumeClaim",
                                                                     "cache-volume-registry-b-0")), kinds
    [(_, _, left)] = [d for d in shoot.deletes if d[0] == "PersistentVolumeClaim"]
    assert "registry-b" not in left, "the claim was deleted while its StatefulSet was still there"
    assert shoot.statefulsets() == {"registry-a"}


def test_destroy_deletes_every_claim_after_the_statefulsets():
    shoot = FakeKube([delivered("StatefulSet", "registry-a"), delivered("Secret", "registry-a-config-1"),
                      claim("registry-a")])
    caches(shoot).destroy()
    assert [(kind, left) for kind, _, left in shoot.deletes if kind == "PersistentVolumeClaim"] == \
        [("PersistentVolumeClaim", set())]
    assert not shoot.list("PersistentVolumeClaim", NS) and not shoot.statefulsets()


def test_a_statefulset_that_does_not_go_keeps_its_claim_for_the_retry(monkeypatch):
    monkeypatch.setattr(registrycache, "STATEFULSET_GONE_TIMEOUT_SECONDS", 0.0)
    shoot = FakeKube([delivered("StatefulSet", "registry-a"), claim("registry-a")], finalized={"registry-a"})
    with pytest.raises(ReconcileError, match="registry-a .*still being deleted"):
        caches(shoot).destroy()
    assert [kind for kind, _, _ in shoot.deletes] == ["StatefulSet"]
    assert shoot.get("PersistentVolumeClaim", "cache-volume-registry-a-0", NS) is not None

    shoot.finalized.clear()
    del shoot.objects[("StatefulSet", NS, "registry-a")]  # the finalizer is done: the next reconcile
    caches(shoot).destroy()
    assert shoot.get("PersistentVolumeClaim", "cache-volume-registry-a-0", NS) is None
