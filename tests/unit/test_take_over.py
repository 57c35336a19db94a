"""The take-over of a cache another controller delivered (Gardener's extension, in a switch): which StatefulSets
are replaced, in which order, and which are left alone (extension/component/registrycache.py, _take_over). Shown
end to end on the local cluster by tests/e2e/scenarios.py::test_switch_from_gardeners_extension_and_back_keeps_every_blob;
here the requests, against a fake shoot that refuses a StatefulSet's changed claim templates as the API server does.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from extension import constants as c
from extension.component.objects import RenderOptions
from extension.component.registrycache import RegistryCaches
from extension.errors import ConfigurationError
from extension.runtime.kube import ApiError

from .test_prune import NS, OWNER, FakeKube

SELECTOR = {"matchLabels": {"app": "registry-a", "upstream-host": "a.example.com"}}


class ApiServer(FakeKube):
    """A StatefulSet's volumeClaimTemplates cannot change (422); every request recorded."""

    def __init__(self, objects: list[dict[str, Any]]):
        super().__init__(objects)
        self.requests: list[tuple[Any, ...]] = []

    def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        key = (obj["kind"], NS, obj["metadata"]["name"])
        live = self.objects.get(key)
        if live is not None and obj["kind"] == "StatefulSet" and \
                live["spec"]["volumeClaimTemplates"] != obj["spec"]["volumeClaimTemplates"]:
            raise ApiError("PATCH", "/apis/apps/v1/statefulsets/registry-a", 422,
                           {"reason": "Invalid", "message": "spec: Forbidden: updates to statefulset spec for fields "
                                                            "other than 'replicas', ... are forbidden"})
        self.requests.append(("apply", obj["kind"]))
        self.objects[key] = copy.deepcopy(obj)
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "2"}}

    def get(self, kind: str, name: str, namespace: str | None = None, **_: Any) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def delete(self, kind: str, name: str, namespace: str | None = None, propagation: str = "Background",
               uid: str | None = None) -> bool:
        self.requests.append(("delete", kind, name, propagation, uid))
        return self.objects.pop((kind, namespace, name), None) is not None

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        self.requests.append(("patch", kind, name))
        self.objects[(kind, namespace, name)]["metadata"]["labels"].update(patch["metadata"]["labels"])
        return self.objects[(kind, namespace, name)]


def statefulset(labels: dict[str, str], selector: dict[str, Any] = SELECTOR,
                claim_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "StatefulSet", "metadata": {"name": "registry-a", "namespace": NS, "uid": "gardeners",
                                                "labels": labels},
            "spec": {"selector": selector, "volumeClaimTemplates": [
                {"metadata": {"name": c.VOLUME_NAME, "labels": claim_labels or SELECTOR["matchLabels"]}}]}}


def claim(name: str) -> dict[str, Any]:
    return {"kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS,
                                                          "labels": dict(SELECTOR["matchLabels"])}}


OURS = statefulset({c.OWNER_LABEL: OWNER}, claim_labels={**SELECTOR["matchLabels"], c.OWNER_LABEL: OWNER})


def take_over(shoot: ApiServer) -> dict[str, Any]:
    caches = RegistryCaches(FakeKube(), shoot, OWNER, RenderOptions())  # type: ignore[arg-type]
    try:
        shoot.apply(OURS)
    except ApiError as exc:
        return caches._take_over(copy.deepcopy(OURS), exc)
    raise AssertionError("the fake API server took the changed claim templates")


def test_gardeners_statefulset_is_replaced_with_its_pods_and_claims_orphaned():
    shoot = ApiServer([statefulset(dict(SELECTOR["matchLabels"])), claim("cache-volume-registry-a-0"),
                       claim("cache-volume-registry-a-1"), claim("cache-volume-registry-ab-0"),
                       claim("data-registry-a-0")])
    applied = take_over(shoot)
    assert applied["metadata"]["labels"][c.OWNER_LABEL] == OWNER
    # the claims first (a stop after the delete would find no StatefulSet to take them from), then the orphaning
    # delete of exactly Gardener's StatefulSet, then ours
    assert shoot.requests == [
        ("patch", "PersistentVolumeClaim", "cache-volume-registry-a-0"),
        ("patch", "PersistentVolumeClaim", "cache-volume-registry-a-1"),
        ("delete", "StatefulSet", "registry-a", "Orphan", "gardeners"),
        ("apply", "StatefulSet")]
    assert shoot.get("PersistentVolumeClaim", "cache-volume-registry-ab-0", NS)["metadata"]["labels"].get(
        c.OWNER_LABEL) is None  # another cache's


@pytest.mark.parametrize("labels, selector, error", [
    ({c.OWNER_LABEL: "shoot--other--b"}, SELECTOR, ApiError),  # another Extension's: never replaced
    ({}, {"matchLabels": {"app": "database"}}, ConfigurationError),  # not a registry cache at all
])
def test_a_statefulset_that_is_no_foreign_cache_is_left_alone(labels, selector, error):
    shoot = ApiServer([statefulset(labels, selector), claim("cache-volume-registry-a-0")])
    with pytest.raises(error) as refused:
        take_over(shoot)
    assert shoot.requests == [], shoot.requests
    if error is ConfigurationError:
        assert "StatefulSet kube-system/registry-a is there and is no registry cache" in str(refused.value)
