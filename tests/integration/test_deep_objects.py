"""One object nested deeper than the controller decodes never stops the others (issue 17, item 3).

The API server stores objects nested up to 10,000 levels deep; Python's json gives up at about 1,000 with
RecursionError. Before: a Shoot nested 3,000 levels deep, stored before the controller started, made every
start die (the index's list of Shoots, then kopf's own Shoot list), and one made deep while it ran ended it.
Here such objects lie in every path the controller reads them (its start's lists of Shoots and Extensions,
the Shoot watch), and ordinary Shoots are still reconciled; the bad ones are named in a log line and in a
Warning Event on them.
"""

from __future__ import annotations

import json

import pytest

from extension.constants import UNDECODABLE_EVENT_REASON
from extension.runtime.jsondecode import MAX_DEPTH, decode_object
from extension.runtime.kube import KINDS, Kube

from .operator_process import OperatorProcess, wait_for
from .test_bridge import free_port
from .test_controller import uniq

LEVELS = 3_000


@pytest.fixture(scope="module")
def kube(control_plane):
    return Kube(control_plane.api_client(), field_manager="deep-test")


def nested(levels: int) -> str:
    """JSON nested ``levels`` deep, as text (json.dumps would recurse as far)."""
    return '{"a":' * (levels - 1) + '{"a":1' + "}" * levels


def send(kube: Kube, method: str, path: str, body: str, content_type: str = "application/json") -> dict:
    """A request with a body given as text; the answer (a skeleton: it nests as deep)."""
    api = kube.api
    _, url, headers, _, _ = api.param_serialize(method=method, resource_path=path, header_params={
        "Content-Type": content_type, "Accept": "application/json"}, auth_settings=["BearerToken"])
    response = api.rest_client.pool_manager.request(method, url, body=body.encode(), headers=headers)
    assert response.status < 300, response.data[:500]
    return decode_object(response.data)[0]


def shoot(name: str, namespace: str, caches: list[str] | None = None, deep: str | None = None) -> str:
    extensions = [{"type": "registry-cache", "providerConfig": {
        "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
        "caches": [{"upstream": u} for u in caches]}}] if caches else []
    spec = json.dumps({"extensions": extensions, "provider": {"type": "local", "workers": [
        {"name": "worker", "cri": {"name": "containerd"}}]}})
    if deep is not None:
        spec = spec[:-1] + ', "deep": ' + deep + "}"
    return json.dumps({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                       "metadata": {"name": name, "namespace": namespace}})[:-1] + ', "spec": ' + spec + "}"


def extension_succeeded(kube: Kube, namespace: str) -> bool:
    ext = kube.get("Extension", "registry-cache", namespace) or {}
    return ((ext.get("status") or {}).get("lastOperation") or {}).get("state") == "Succeeded"


def events_on(kube: Kube, namespace: str, name: str) -> list[dict]:
    return [e for e in kube.list("Event", namespace)
            if e["involvedObject"].get("name") == name and e.get("reason") == UNDECODABLE_EVENT_REASON]


def test_a_deeply_nested_shoot_does_not_stop_the_others(kube, control_plane, tmp_path):
    project = uniq("deep")
    garden = f"garden-{project}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": garden}})
    # stored before the controller starts: in its first lists
    deep = send(kube, "POST", KINDS["Shoot"].path(garden), shoot("deep", garden, deep=nested(LEVELS)))
    seed_ns = f"shoot--{project}--other"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": seed_ns}})
    deep_ext = send(kube, "POST", KINDS["Extension"].path(seed_ns), json.dumps({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
        "metadata": {"name": "registry-cache", "namespace": seed_ns},
        "spec": {"type": "registry-cache"}})[:-2] + ', "providerConfig": ' + nested(LEVELS) + "}}")
    send(kube, "POST", KINDS["Shoot"].path(garden), shoot("first", garden, [f"a.{project}.example"]))

    log = tmp_path / "controller.log"
    with OperatorProcess(control_plane.kubeconfig, log, "--standalone", "--webhooks", "--webhook-port",
                         str(free_port()), "--webhook-address", "127.0.0.1") as op:
        wait_for("the Shoot stored before the start to be reconciled",
                 lambda: extension_succeeded(kube, f"shoot--{project}--first"), timeout=60, log=op.log)
        # after the start: a new ordinary Shoot, and one made deep while the controller watches
        send(kube, "POST", KINDS["Shoot"].path(garden), shoot("made-deep", garden))
        send(kube, "PATCH", KINDS["Shoot"].path(garden, "made-deep"), '{"spec": {"deep": ' + nested(LEVELS) + "}}",
             "application/merge-patch+json")
        kube.apply(json.loads(shoot("second", garden, [f"b.{project}.example"])))
        wait_for("a Shoot created after the deep ones to be reconciled",
                 lambda: extension_succeeded(kube, f"shoot--{project}--second"), timeout=60, log=op.log)
        wait_for("the Shoot made deep to be named",
                 lambda: f"Shoot {garden}/made-deep " in op.log() and events_on(kube, garden, "made-deep"),
                 timeout=30, log=op.log)
        assert op.proc is not None and op.proc.poll() is None, op.log()[-3000:]
        text = op.log()
    assert "RecursionError" not in text
    assert (f"Shoot {garden}/deep (uid {deep['metadata']['uid']}, resourceVersion "
            f"{deep['metadata']['resourceVersion']}) is skipped: its JSON nests deeper than {MAX_DEPTH} levels") in text
    assert f"Extension {seed_ns}/registry-cache (uid {deep_ext['metadata']['uid']}" in text
    [event] = events_on(kube, garden, "deep")
    assert event["type"] == "Warning" and event["involvedObject"]["uid"] == deep["metadata"]["uid"]
    assert event["involvedObject"]["kind"] == "Shoot" and str(MAX_DEPTH) in event["message"]
    assert events_on(kube, seed_ns, "registry-cache")

    # once more (the same replica or another): nothing new is said about objects that did not change; and the
    # deep objects go as any other
    with OperatorProcess(control_plane.kubeconfig, log, "--standalone") as op:
        wait_for("the restart to list", lambda: op.log().count("Shoot watch synced") >= 2, timeout=60, log=op.log)
        assert len(events_on(kube, garden, "deep")) == 1
        for name in ("deep", "made-deep", "first", "second"):
            assert kube.delete("Shoot", name, garden)
        assert kube.delete("Extension", "registry-cache", seed_ns)
        wait_for("the Shoots to be gone", lambda: kube.list("Shoot", garden) == [], timeout=60, log=op.log)
