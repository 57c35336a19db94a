"""Standalone mode: the bridge plays gardenlet for Shoots on the same API server."""

from __future__ import annotations

import base64
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from extension.constants import WEBHOOK_CONFIGURATION_NAME as CONFIGURATION_NAME
from extension.runtime.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube(control_plane):
    return Kube(control_plane.api_client(), field_manager="kubectl-test")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standalone(control_plane, kube, tmp_path_factory):
    """Standalone with the webhooks (the references policy admitted the Secrets the bridge copies)."""
    with OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("bridge") / "op.log", "--standalone",
                         "--webhooks", "--webhook-port", str(free_port()), "--webhook-address", "127.0.0.1",
                         "--webhook-client-ca", str(control_plane.webhook_client_ca_file)) as op:
        wait_for("the webhooks", lambda: kube.get("MutatingWebhookConfiguration", CONFIGURATION_NAME), log=op.log)
        yield op
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        kube.delete(kind, CONFIGURATION_NAME)  # whatever the shutdown left


def example_shoot(name: str, project: str) -> dict:
    shoot = yaml.safe_load((REPO / "examples" / "shoot.yaml").read_text())
    shoot["metadata"] = {"name": name, "namespace": f"garden-{project}"}
    for cache in shoot["spec"]["extensions"][0]["providerConfig"]["caches"]:
        cache["upstream"] = f"{cache['upstream'].split(':')[0]}.{name}.example"  # unique per test
        cache.pop("remoteURL", None)
    return shoot


def test_shoot_lifecycle(kube, standalone):
    project, name = "bridge", "lifecycle"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"garden-{project}"}})
    secret = yaml.safe_load((REPO / "examples" / "quay-credentials-v1.yaml").read_text())
    secret["metadata"]["namespace"] = f"garden-{project}"
    kube.apply(secret)
    shoot = example_shoot(name, project)
    kube.apply(shoot)
    seed_ns = f"shoot--{project}--{name}"

    ext = wait_for("the Extension to succeed", lambda: ((e := kube.get("Extension", "registry-cache", seed_ns))
                   or {}).get("status", {}).get("lastOperation", {}).get("state") == "Succeeded" and e,
                   log=standalone.log)
    assert len(ext["status"]["providerStatus"]["caches"]) == 4
    assert ext["spec"]["providerConfig"] == shoot["spec"]["extensions"][0]["providerConfig"]
    cluster = kube.get("Cluster", seed_ns)
    assert cluster["spec"]["shoot"]["metadata"]["name"] == name
    copy_ = kube.get("Secret", "ref-quay-credentials-v1", seed_ns)
    assert base64.b64decode(copy_["data"]["username"]) == b"example+robot"
    assert "registry-cache.gardener.cloud/bridge" in kube.get("Shoot", name, f"garden-{project}")["metadata"]["finalizers"]

    # every Shoot change asks for a reconcile
    changed = copy.deepcopy(shoot)
    changed["spec"]["extensions"][0]["providerConfig"]["caches"].pop(1)
    kube.apply(changed)
    wait_for("three caches", lambda: len(((kube.get("Extension", "registry-cache", seed_ns) or {}).get("status", {})
                                          .get("providerStatus") or {}).get("caches", [])) == 3, log=standalone.log)

    # dropping the extension from the Shoot removes the Extension and the caches
    dropped = copy.deepcopy(changed)
    dropped["spec"]["extensions"] = []
    kube.apply(dropped)
    wait_for("the Extension to go", lambda: kube.get("Extension", "registry-cache", seed_ns) is None, log=standalone.log)
    assert kube.list("StatefulSet", "kube-system", label_selector=f"registry-cache.gardener.cloud/owner={seed_ns}") == []
    wait_for("the Shoot finalizer to go", lambda: "registry-cache.gardener.cloud/bridge" not in (
        kube.get("Shoot", name, f"garden-{project}")["metadata"].get("finalizers") or []), log=standalone.log)

    # enabling it again and deleting the Shoot cleans up behind it
    kube.apply(changed)
    wait_for("back", lambda: ((kube.get("Extension", "registry-cache", seed_ns) or {}).get("status", {})
                              .get("lastOperation", {}).get("state") == "Succeeded"), log=standalone.log)
    kube.delete("Shoot", name, f"garden-{project}")
    wait_for("the Shoot to be gone", lambda: kube.get("Shoot", name, f"garden-{project}") is None, log=standalone.log)
    assert kube.get("Extension", "registry-cache", seed_ns) is None
    assert kube.get("Cluster", seed_ns) is None
    assert kube.get("Secret", "ref-quay-credentials-v1", seed_ns) is None
    assert kube.list("Service", "kube-system", label_selector=f"registry-cache.gardener.cloud/owner={seed_ns}") == []


def test_local_up_command(tmp_path):
    """The README's first command in its control-plane-only mode (--no-node; with the node it is
    tests/e2e/test_local_up.py), as a user runs it (with --no-wait so that it returns)."""
    done = subprocess.run([sys.executable, "-m", "extension.cli", "local-up", "--no-node", "--no-wait", "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Extension shoot--dev--crazy-botany/registry-cache: Create Succeeded" in out \
        or "Extension shoot--dev--crazy-botany/registry-cache: Reconcile Succeeded" in out
    assert "/etc/containerd/certs.d/my-registry.io:5000/hosts.toml:" in out
    assert 'server = "http://my-registry.io:5000"' in out
    assert out.count("StatefulSet  registry-") == 4
    assert "export KUBECONFIG=" in out
    assert "not-a-real-password" not in out + (tmp_path / "controller.log").read_text()
