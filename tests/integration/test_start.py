"""What a start of the controller asks the API server for (issue 22): each kind it watches is listed once. Counted by
the API server itself (``apiserver_request_total`` of kube-apiserver's /metrics: every client's LISTs, kopf's
included when it was there), on a control plane of its own so that nothing else lists meanwhile.

Before: the Shoots were listed by the Shoot watch and again by the bridge's pass when the leader started (and by
kopf's own watch before that), and kopf listed every CustomResourceDefinition."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for
from .test_bridge import free_port

PROJECT = "start"


@pytest.fixture(scope="module")
def own_control_plane(control_plane_bin_dir, tmp_path_factory):
    from extension.local.controlplane import apply_manifests, wait_for_crds_established

    from .conftest import CRD_DIR, POLICY_DIR, _start, _stop, crd_names
    cp = _start("start", control_plane_bin_dir, tmp_path_factory)
    try:
        api = cp.api_client()
        apply_manifests(api, [CRD_DIR])
        wait_for_crds_established(api, crd_names(), timeout=60)
        apply_manifests(api, [POLICY_DIR])
        yield cp
    finally:
        _stop(cp)


def lists(kube: Kube) -> Counter:
    """kube-apiserver's LIST requests so far, by resource."""
    method, url, headers, _, _ = kube.api.param_serialize(method="GET", resource_path="/metrics",
                                                          header_params={"Accept": "text/plain"},
                                                          auth_settings=["BearerToken"])
    response = kube.api.call_api(method, url, header_params=headers)
    response.read()
    out: Counter = Counter()
    for line in response.data.decode().splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="LIST"' in line:
            out[re.search(r'resource="([^"]*)"', line).group(1)] += float(line.rpartition(" ")[2])
    return out


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
def test_each_kind_is_listed_once_at_start(own_control_plane, tmp_path, election):
    kube = Kube(own_control_plane.api_client(), field_manager="kubectl-test")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"garden-{PROJECT}"}})
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "registry-cache"}})
    names = [f"s{i}" for i in range(3)]
    for name in names:
        kube.apply(shoot(name))
    args = ["--standalone", "--webhooks", "--webhook-port", str(free_port()), "--webhook-address", "127.0.0.1",
            "--webhook-client-ca", str(own_control_plane.webhook_client_ca_file)]
    if election:
        args += ["--leader-election", "--leader-election-namespace", "registry-cache"]
    log = tmp_path / "op.log"
    for start in ("first", "again"):  # the Shoots new to it, then everything in place
        before = lists(kube)
        with OperatorProcess(own_control_plane.kubeconfig, log, *args) as op:
            wait_for("every Extension Succeeded", lambda: all(succeeded(kube, n) for n in names), timeout=90,
                     log=op.log)
            wait_for("the bridge's pass", lambda: op.log().count("watches synced") == (1 if start == "first" else 2),
                     log=op.log)
            listed = lists(kube) - before
        assert listed["shoots"] == 1, (start, dict(listed))
        assert listed["extensions"] == 1, (start, dict(listed))
        assert listed["customresourcedefinitions"] == 0, (start, dict(listed))
    for name in names:
        kube.delete("Shoot", name, f"garden-{PROJECT}")
