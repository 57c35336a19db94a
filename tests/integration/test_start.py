"""What a start of the controller asks the API server for (issue 22): each kind it watches is listed once. Counted by
the API server itself (``apiserver_request_total`` of kube-apiserver's /metrics: every client's LISTs, kopf's
included when it was there), on a control plane of its own so that nothing else lists meanwhile.

Before: the Shoots were listed by the Shoot watch and again by the bridge's pass when the leader started (and by
kopf's own watch before that), and kopf listed every CustomResourceDefinition."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from extension.local.controlplane import apiserver_requests
from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for
from .test_bridge import free_port

PROJECT = "start"


@pytest.fixture(scope="module")
def start_control_plane(control_plane_bin_dir, tmp_path_factory):
    from .conftest import own_control_plane
    with own_control_plane("start", control_plane_bin_dir, tmp_path_factory, policies=True) as cp:
        yield cp


def lists(kube: Kube) -> Counter:
    """kube-apiserver's LIST requests so far, by resource."""
    return Counter(apiserver_requests(kube))


def shoot(name: str) -> dict:
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": f"garden-{PROJECT}"},
            "spec": {"extensions": [{"type": "registry-cache", "providerConfig": {
                "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                "caches": [{"upstream": f"{name}.{PROJECT}.example"}]}}],
                "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}


def succeeded(kube: Kube, name: str) -> bool:
    ext = kube.get("Extension", "registry-cache", f"shoot--{PROJECT}--{name}") or {}
    return ((ext.get("status") or {}).get("lastOperation") or {}).get("state") == "Succeeded"


@pytest.mark.parametrize("election", [False, True], ids=["one-replica", "leader-election"])
def test_each_kind_is_listed_once_at_start(start_control_plane, tmp_path, election):
    kube = Kube(start_control_plane.api_client(), field_manager="kubectl-test")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"garden-{PROJECT}"}})
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "registry-cache"}})
    names = [f"s{i}" for i in range(3)]
    for name in names:
        kube.apply(shoot(name))
    args = ["--standalone", "--webhooks", "--webhook-port", str(free_port()), "--webhook-address", "127.0.0.1",
            "--webhook-client-ca", str(start_control_plane.webhook_client_ca_file)]
    if election:
        args += ["--leader-election", "--leader-election-namespace", "registry-cache"]
    log = tmp_path / "op.log"
    for start in ("first", "again"):  # the Shoots new to it, then everything in place
        before = lists(kube)
        with OperatorProcess(start_control_plane.kubeconfig, log, *args) as op:
            wait_for("every Extension Succeeded", lambda: all(succeeded(kube, n) for n in names), timeout=90,
                     log=op.log)
            wait_for("the bridge's pass", lambda: op.log().count("watches synced") == (1 if start == "first" else 2),
                     log=op.log)
            listed = lists(kube) - before
            if start == "again":  # gone before the next case makes Shoots of the same names (the controller's
                for name in names:  # finalizer: deleted while it runs)
                    kube.delete("Shoot", name, f"garden-{PROJECT}")
                wait_for("the Shoots gone", lambda: all(kube.get("Shoot", n, f"garden-{PROJECT}") is None
                                                        for n in names), timeout=90, log=op.log)
        assert listed["shoots"] == 1, (start, dict(listed))
        assert listed["extensions"] == 1, (start, dict(listed))
        assert listed["customresourcedefinitions"] == 0, (start, dict(listed))
