"""The local control plane itself: API server, CRDs, Shoot/Extension/Cluster round trips, two at once, clean stop."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from extension.local.controlplane import (
    CONTEXT_NAME,
    ControlPlaneError,
    LocalControlPlane,
    apply_manifests,
    load_manifests,
)

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crds"
EXAMPLE_SHOOT = REPO / "examples" / "shoot.yaml"


def _ensure_namespace(api, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as e:
        if e.status != 409:
            raise


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A PID can be reused; it is ours only if it still runs one of our binaries.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"kube-apiserver" not in cmdline and b"etcd" not in cmdline


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    # --cache-dir: keep kubectl's discovery cache (one directory per host:port) out of ~/.kube/cache.
    cache_dir = kubeconfig.parent / "kubectl-cache"
    return subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_api_server_answers(control_plane, api_client):
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1" and version.minor.startswith("34"), version
    names = {ns.metadata.name for ns in client.CoreV1Api(api_client).list_namespace().items}
    assert {"default", "kube-system"} <= names
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert control_plane.running


def test_kubeconfig_is_admin(control_plane, kubeconfig):
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["current-context"] == CONTEXT_NAME
    assert config["clusters"][0]["cluster"]["server"] == control_plane.server
    assert "certificate-authority-data" in config["clusters"][0]["cluster"]
    # kubectl verifies the server against the kubeconfig's CA (no --insecure) and sees system:masters.
    out = _kubectl(kubeconfig, "auth", "can-i", "*", "*", "--all-namespaces")
    assert out.returncode == 0 and out.stdout.strip() == "yes", out


def test_crds_established(api_client):
    expected = {o["metadata"]["name"] for o in load_manifests([CRD_DIR])}
    assert expected == {"extensions.extensions.gardener.cloud", "clusters.extensions.gardener.cloud",
                        "shoots.core.gardener.cloud"}
    for name in expected:
        crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True", (name, conditions)
        assert conditions.get("NamesAccepted") == "True", (name, conditions)
        assert conditions.get("NonStructuralSchema") is None, (name, conditions)


def test_shoot_created_and_listed_with_kubectl(control_plane, api_client, kubeconfig):
    shoot = yaml.safe_load(EXAMPLE_SHOOT.read_text())
    namespace = shoot["metadata"]["namespace"]
    _ensure_namespace(api_client, namespace)
    applied = apply_manifests(api_client, [EXAMPLE_SHOOT])
    assert [o["metadata"]["name"] for o in applied] == [shoot["metadata"]["name"]]

    got = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "core.gardener.cloud", "v1beta1", namespace, "shoots", shoot["metadata"]["name"])
    # The providerConfig is a raw object: kept exactly as written (nothing pruned, nothing defaulted).
    assert got["spec"]["extensions"] == shoot["spec"]["extensions"]
    assert got["spec"]["resources"] == shoot["spec"]["resources"]
    assert got["spec"]["provider"] == shoot["spec"]["provider"]

    out = _kubectl(kubeconfig, "get", "shoots", "-A")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAMESPACE", "NAME", "PROVIDER", "PURPOSE"], lines[0]
    assert any(line.split()[:3] == [namespace, "crazy-botany", "local"] for line in lines[1:]), out.stdout


def test_full_gardener_shoot_is_accepted_by_kubectl_strict_validation(api_client, kubeconfig, tmp_path):
    """Fields outside the typed subset (region, kubernetes, networking, machine, ...) are kept, not rejected."""
    shoot = {
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "Shoot",
        "metadata": {"name": "full", "namespace": "garden-dev"},
        "spec": {
            "cloudProfile": {"kind": "CloudProfile", "name": "local"},
            "region": "local",
            "kubernetes": {"version": "1.34.1", "kubelet": {"serializeImagePulls": False}},
            "networking": {"type": "calico", "nodes": "10.10.0.0/16"},
            "hibernation": {"enabled": True, "schedules": [{"start": "00 20 * * 1,2,3,4,5"}]},
            "purpose": "evaluation",
            "provider": {
                "type": "local",
                "infrastructureConfig": {"apiVersion": "local.provider.extensions.gardener.cloud/v1alpha1"},
                "workers": [{
                    "name": "worker", "minimum": 1, "maximum": 2,
                    "machine": {"type": "local", "image": {"name": "gardenlinux"}},
                    "cri": {"name": "containerd", "containers": []},
                }],
            },
            "extensions": [{"type": "registry-cache", "disabled": False,
                            "providerConfig": {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3",
                                               "kind": "RegistryConfig", "caches": [{"upstream": "ghcr.io"}]}}],
        },
    }
    _ensure_namespace(api_client, "garden-dev")
    path = tmp_path / "full-shoot.yaml"
    path.write_text(yaml.safe_dump(shoot))
    out = _kubectl(kubeconfig, "create", "--validate=strict", "-f", str(path))
    assert out.returncode == 0, out.stderr
    got = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "core.gardener.cloud", "v1beta1", "garden-dev", "shoots", "full")
    assert got["spec"] == shoot["spec"]

    out = _kubectl(kubeconfig, "get", "shoot", "-n", "garden-dev", "full", "--no-headers")
    assert out.returncode == 0 and out.stdout.split()[:4] == ["full", "local", "evaluation", "true"], out


def test_shoot_schema_rejects_extension_without_type(api_client):
    _ensure_namespace(api_client, "garden-dev")
    body = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": "broken", "namespace": "garden-dev"},
            "spec": {"extensions": [{"providerConfig": {}}]}}
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "core.gardener.cloud", "v1beta1", "garden-dev", "shoots", body)
    assert exc.value.status == 422
    assert "spec.extensions[0].type" in exc.value.body


def test_extension_status_subresource(api_client, kubeconfig):
    namespace = "shoot--dev--crazy-botany"
    _ensure_namespace(api_client, namespace)
    objects = client.CustomObjectsApi(api_client)
    group, version, plural = "extensions.gardener.cloud", "v1alpha1", "extensions"
    provider_config = {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                       "caches": [{"upstream": "docker.io", "volume": {"size": "10Gi"}}]}
    created = objects.create_namespaced_custom_object(group, version, namespace, plural, {
        "apiVersion": f"{group}/{version}", "kind": "Extension",
        "metadata": {"name": "registry-cache", "namespace": namespace},
        "spec": {"type": "registry-cache", "providerConfig": provider_config},
        # ignored on create: status is a subresource
        "status": {"observedGeneration": 42},
    })
    assert created["spec"]["providerConfig"] == provider_config
    assert "status" not in created or "observedGeneration" not in created.get("status", {})
    generation = created["metadata"]["generation"]

    status = {
        "lastOperation": {"type": "Reconcile", "state": "Succeeded", "progress": 100,
                          "description": "registry caches are ready", "lastUpdateTime": "2025-01-01T00:00:00Z"},
        "observedGeneration": generation,
        "providerStatus": {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryStatus",
                           "caches": [{"upstream": "docker.io", "endpoint": "https://10.4.0.12:5000",
                                       "remoteURL": "https://registry-1.docker.io"}],
                           "caSecretName": "ca-extension-registry-cache-bundle"},
        "lastError": {"description": "earlier failure", "codes": ["ERR_CONFIGURATION_PROBLEM"],
                      "lastUpdateTime": "2025-01-01T00:00:00Z"},
    }
    patched = objects.patch_namespaced_custom_object_status(group, version, namespace, plural, "registry-cache",
                                                            {"status": status})
    assert patched["status"] == status
    assert patched["metadata"]["generation"] == generation  # status writes do not bump the generation

    # lastError cleared with a JSON merge patch (null removes the field).
    patched = objects.patch_namespaced_custom_object_status(group, version, namespace, plural, "registry-cache",
                                                            {"status": {"lastError": None}})
    assert "lastError" not in patched["status"]

    # An incomplete lastOperation is refused like by Gardener's CRD.
    with pytest.raises(ApiException) as exc:
        objects.patch_namespaced_custom_object_status(group, version, namespace, plural, "registry-cache",
                                                      {"status": {"lastOperation": {"state": None}}})
    assert exc.value.status == 422

    # A spec change bumps the generation and leaves the status alone.
    updated = objects.patch_namespaced_custom_object(group, version, namespace, plural, "registry-cache",
                                                     {"spec": {"class": "shoot"}, "status": {"observedGeneration": 0}})
    assert updated["metadata"]["generation"] == generation + 1
    assert updated["status"]["observedGeneration"] == generation

    out = _kubectl(kubeconfig, "get", "extensions.extensions.gardener.cloud", "-n", namespace, "--no-headers")
    assert out.returncode == 0 and out.stdout.split()[:3] == ["registry-cache", "registry-cache", "Succeeded"], out


def test_extension_requires_type(api_client):
    _ensure_namespace(api_client, "shoot--dev--typeless")
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "extensions.gardener.cloud", "v1alpha1", "shoot--dev--typeless", "extensions",
            {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
             "metadata": {"name": "registry-cache"}, "spec": {}})
    assert exc.value.status == 422 and "spec.type" in exc.value.body


def test_cluster_is_cluster_scoped_with_raw_objects(api_client):
    shoot = yaml.safe_load(EXAMPLE_SHOOT.read_text())
    body = {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "shoot--dev--crazy-botany"},
            "spec": {"shoot": shoot, "seed": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
                                               "metadata": {"name": "local"}},
                     "cloudProfile": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
                                      "metadata": {"name": "local"}}}}
    assert apply_manifests(api_client, []) == []
    created = client.CustomObjectsApi(api_client).create_cluster_custom_object(
        "extensions.gardener.cloud", "v1alpha1", "clusters", body)
    assert "namespace" not in created["metadata"]
    assert created["spec"] == body["spec"]


def test_apply_manifests_is_idempotent_server_side_apply(api_client, tmp_path):
    manifest = tmp_path / "objs.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ssa-test\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n  namespace: ssa-test\ndata:\n  a: '1'\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\ndata:\n  b: '2'\n")
    first = apply_manifests(api_client, [manifest], namespace="ssa-test")
    second = apply_manifests(api_client, [manifest], namespace="ssa-test")
    assert [o["metadata"]["name"] for o in first] == ["ssa-test", "one", "two"]
    # Re-applying unchanged ConfigMaps is a no-op (the Namespace is left out: its defaulted fields
    # make the API server write it again).
    assert [o["metadata"]["resourceVersion"] for o in first[1:]] == [
        o["metadata"]["resourceVersion"] for o in second[1:]]
    cm = client.CoreV1Api(api_client).read_namespaced_config_map("two", "ssa-test")
    assert cm.data == {"b": "2"}
    assert {m.manager for m in cm.metadata.managed_fields} == {"registry-cache"}
    assert {m.operation for m in cm.metadata.managed_fields} == {"Apply"}


def test_load_manifests_follows_kustomization():
    kinds = {o["kind"] for o in load_manifests([CRD_DIR])}
    assert kinds == {"CustomResourceDefinition"}


def test_two_control_planes_at_once(control_plane, second_control_plane, api_client):
    assert control_plane.running and second_control_plane.running
    assert control_plane.port != second_control_plane.port
    assert control_plane.etcd_port != second_control_plane.etcd_port
    assert control_plane.workdir != second_control_plane.workdir
    _ensure_namespace(api_client, "only-in-seed")
    other = second_control_plane.api_client()
    try:
        names = {ns.metadata.name for ns in client.CoreV1Api(other).list_namespace().items}
        assert "default" in names and "only-in-seed" not in names
        # no CRDs in the second one
        crds = client.ApiextensionsV1Api(other).list_custom_resource_definition().items
        assert crds == []
    finally:
        other.close()


def test_stop_leaves_no_process_behind(control_plane_bin_dir):
    cp = LocalControlPlane(bin_dir=control_plane_bin_dir, name="throwaway")
    with cp:
        workdir = cp.workdir
        pids = cp.pids
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert not any(_process_gone(pid) for pid in pids.values())
        assert cp.etcd_log.stat().st_size > 0 or cp.apiserver_log.stat().st_size > 0
    assert all(_process_gone(pid) for pid in pids.values()), pids
    assert not workdir.exists()  # the temp dir it created is gone
    assert not cp.running
    cp.stop()  # idempotent
    cp.stop()


def test_failed_start_reports_log_tail_and_cleans_up(control_plane_bin_dir, tmp_path):
    cp = LocalControlPlane(workdir=tmp_path / "cp", bin_dir=control_plane_bin_dir, name="broken",
                           apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError) as exc:
        cp.start()
    message = str(exc.value)
    assert "kube-apiserver exited" in message
    assert "no-such-flag" in message  # from the log tail
    assert all(_process_gone(pid) for pid in cp.pids.values()), cp.pids
    assert (tmp_path / "cp" / "kube-apiserver.log").is_file()  # a given workdir is kept
