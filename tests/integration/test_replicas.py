"""A cache with high availability behind the front, against a real kube-apiserver: a Service per replica, whose
cluster IPs the fronts get by ordinal (``--peers``), so that each blob is fetched by the replica that owns it
(extension/front/server.py; the fetches counted on the three-node cluster by hack/bench_nodes.py). Turned off,
the replicas' Services go with it."""

from __future__ import annotations

import pytest

from extension.runtime.kube import Kube

from .operator_process import OperatorProcess
from .test_controller import Seed, uniq

FRONT_IMAGE = "registry-cache:test"
REPLICA = "registry-cache.gardener.cloud/replica"


@pytest.fixture(scope="module")
def replicas_control_plane(control_plane_bin_dir, tmp_path_factory):
    from .conftest import own_control_plane
    with own_control_plane("replicas", control_plane_bin_dir, tmp_path_factory) as cp:
        yield cp


def test_each_replica_has_a_service_and_the_fronts_know_them_by_ordinal(replicas_control_plane, tmp_path):
    kube = Kube(replicas_control_plane.api_client(), field_manager="gardenlet-test")
    with OperatorProcess(replicas_control_plane.kubeconfig, tmp_path / "operator.log",
                         "--front-image", FRONT_IMAGE) as op:
        seed = Seed(kube, uniq("ha"))
        upstream = f"a.{seed.name}.example"
        name = f"registry-{upstream.replace('.', '-')}"
        seed.create({"upstream": upstream, "highAvailability": {"enabled": True}})
        seed.wait_done("Create", op.log)
        services = {s["metadata"]["name"]: s for s in kube.list("Service", "kube-system",
                                                                label_selector=f"{REPLICA}")}
        assert sorted(services) == [f"{name}-replica-0", f"{name}-replica-1"]
        ips = [services[f"{name}-replica-{n}"]["spec"]["clusterIP"] for n in (0, 1)]
        sts = kube.get("StatefulSet", name, "kube-system")
        front = sts["spec"]["template"]["spec"]["containers"][1]
        assert front["image"] == FRONT_IMAGE
        assert f"--peers={ips[0]}:5000,{ips[1]}:5000" in front["args"]
        for n in (0, 1):
            assert services[f"{name}-replica-{n}"]["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == \
                f"{name}-{n}"

        # a reconcile keeps them (the same cluster IPs, nothing rolled)
        seed.annotate("reconcile")
        seed.wait_done("Reconcile", op.log)
        assert kube.get("StatefulSet", name, "kube-system")["metadata"]["generation"] == sts["metadata"]["generation"]

        seed.set_caches({"upstream": upstream})
        seed.wait_done("Reconcile", op.log)
        assert kube.list("Service", "kube-system", label_selector=REPLICA) == []
        front = kube.get("StatefulSet", name, "kube-system")["spec"]["template"]["spec"]["containers"][1]
        assert not [a for a in front["args"] if a.startswith("--peers")]
