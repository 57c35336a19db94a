"""A Delete as the watch sees it (issue 11): the controller acts on it once, and nothing it keeps for the
Extension outlives it, in whichever order the API server's answer and the watch's events come."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from extension import metrics
from extension.constants import FINALIZER
from extension.controller.actuator import Outcome
from extension.controller.reconciler import Controller, Op

KEY = ("shoot--a--b", "registry-cache")


class ApiServer:
    """One Extension, written as the API server does: every write a new resourceVersion, whose state the watch
    delivers (``history``); a write that empties the finalizers of an object being deleted removes it instead,
    and answers with it at the resourceVersion last stored."""

    def __init__(self, ext: dict[str, Any]):
        self.obj: dict[str, Any] | None = ext
        self.history: list[dict[str, Any]] = []
        self.version = int(ext["metadata"]["resourceVersion"])
        self.on_removed: Callable[[dict[str, Any]], None] = lambda obj: None

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None,
              subresource: str | None = None) -> dict[str, Any]:
        assert self.obj is not None
        meta = patch.get("metadata") or {}
        if "finalizers" in meta:
            if not meta["finalizers"] and self.obj["metadata"].get("deletionTimestamp"):
                removed = copy.deepcopy(self.obj)
                del removed["metadata"]["finalizers"]
                self.obj = None
                self.on_removed(removed)
                return removed
            self.obj["metadata"]["finalizers"] = meta["finalizers"]
        if "status" in patch:
            self.obj.setdefault("status", {}).update(copy.deepcopy(patch["status"]))
        self.version += 1
        self.obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append(copy.deepcopy(self.obj))
        return copy.deepcopy(self.obj)


class Caches:
    extension_type = "registry-cache"
    what = "registry caches"

    def __init__(self) -> None:
        self.deleted = 0
        self.forgotten: list[str] = []

    def reconcile(self, ext: dict[str, Any]) -> Outcome:
        return Outcome({"caches": []}, "The registry caches are delivered")

    def delete(self, ext: dict[str, Any]) -> None:
        self.deleted += 1

    def forget(self, namespace: str) -> None:
        self.forgotten.append(namespace)

    def records(self) -> int:
        return 0


def deleting() -> dict[str, Any]:
    return {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
            "metadata": {"name": KEY[1], "namespace": KEY[0], "uid": "u1", "generation": 2, "resourceVersion": "10",
                         "finalizers": [FINALIZER], "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "registry-cache"},
            "status": {"observedGeneration": 2, "lastOperation": {"type": "Reconcile", "state": "Succeeded"}}}


def watched(server: ApiServer) -> tuple[Controller, Caches]:
    caches = Caches()
    controller = Controller(server, caches)  # type: ignore[arg-type]
    controller.informer.synced.set()
    assert server.obj is not None
    metrics.extension_state(*KEY, "registry-cache", error=False)  # as an earlier Reconcile left it
    controller.informer._event({"type": "ADDED", "object": copy.deepcopy(server.obj)}, "10")
    return controller, caches


def error_series() -> float | None:
    return REGISTRY.get_sample_value("registry_cache_extension_error",
                                     {"namespace": KEY[0], "name": KEY[1], "type": "registry-cache"})


def test_a_delete_is_carried_out_once_though_the_watch_brings_the_state_before_the_finalizer_went():
    server = ApiServer(deleting())
    controller, caches = watched(server)
    assert controller.process(KEY) == Op.DELETE
    assert server.obj is None and caches.deleted == 1
    for state in server.history:  # the status writes (Processing, Succeeded), our finalizer still on them
        controller.informer._event({"type": "MODIFIED", "object": state}, state["metadata"]["resourceVersion"])
    controller.check(KEY[0])  # a delivered object went meanwhile: looked at again, before the deletion is seen
    assert controller.process(KEY) is None
    assert caches.deleted == 1 and len(server.history) == 2
    controller.informer._event({"type": "DELETED", "object": server.history[-1]}, "13")
    assert set(controller.kept().values()) == {0} and caches.forgotten == [KEY[0]]
    assert error_series() is None


def test_nothing_is_kept_when_the_watch_tells_the_deletion_before_the_api_server_answers():
    server = ApiServer(deleting())
    controller, caches = watched(server)
    server.on_removed = lambda obj: controller.informer._event({"type": "DELETED", "object": obj}, "13")
    assert controller.process(KEY) == Op.DELETE
    assert caches.deleted == 1 and caches.forgotten == [KEY[0]]
    assert set(controller.kept().values()) == {0}
    assert error_series() is None
