"""Credential failures are visible: ``registry-cache run`` (a separate process) against a real API server,
with a cache whose upstream is a token-auth registry on this machine (distribution 3 and a token server,
``tests/e2e/tokenauth.py``). What a user sees, on the Extension and on the metrics endpoint:

- valid credentials: condition ``UpstreamCredentialsValid-<upstream>`` True, the HTTP status in the message,
  ``registry_cache_upstream_credentials_valid{namespace,upstream} 1``;
- the upstream's robot password rotated (the old one revoked): the periodic check turns it False (401),
  code ERR_INFRA_UNAUTHORIZED, the metric 0 (and the alert in manifests/monitoring/ fires);
- the new password swapped into the Secret and reconciled: True again;
- the upstream away: Unknown (UpstreamUnreachable), not bad credentials; no credentials sample, reachable 0.

Never the credentials in the status, the log or the metrics.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.e2e.dataplane import REGISTRY_BINS
from tests.e2e.tokenauth import TokenUpstream

from .operator_process import OperatorProcess, wait_for
from .test_controller import Seed, kube

USER = "robot-visible"


@pytest.fixture(scope="module")
def registry_bin() -> Path:
    env = dict(os.environ)
    if not shutil.which("go") and Path("/usr/local/go/bin/go").is_file():
        env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    res = subprocess.run([str(REGISTRY_BINS)], capture_output=True, text=True, env=env, timeout=1800)
    if res.returncode != 0:
        if "no Go toolchain found" in res.stderr:
            pytest.skip("distribution is not built and there is no Go toolchain to build it (hack/registry-bins.sh)")
        pytest.fail(f"hack/registry-bins.sh failed:\n{res.stderr[-3000:]}", pytrace=False)
    return Path(res.stdout.strip().splitlines()[-1]) / "registry"


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()
    except OSError:  # not serving yet (a controller starting)
        return ""


def _sample(text: str, name: str, namespace: str, upstream: str) -> str | None:
    prefix = f'{name}{{namespace="{namespace}",upstream="{upstream}"}} '
    return next((line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)), None)


def test_credential_failures_are_visible(control_plane, kube, registry_bin, tmp_path):
    password = uuid.uuid4().hex
    up = TokenUpstream(registry_bin, tmp_path / "upstream", USER, password, same_origin=True)
    up.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seed = Seed(kube, f"creds-{uuid.uuid4().hex[:6]}")
    seed.add_credentials("private", f"private-v1-{seed.name}", USER, password)
    kind = f"UpstreamCredentialsValid-{up.host}"

    def condition():
        ext = seed.ext() or {}
        return next((c for c in (ext.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)

    def controller():
        return OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--metrics-address", f"127.0.0.1:{port}",
                               "--upstream-check-interval", "1", upstream_check=True)

    try:
        with controller() as op:
            seed.create({"upstream": up.host, "remoteURL": up.url, "secretReferenceName": "private",
                         "http": {"tls": False}})
            seed.wait_done("Create", op.log)
            cond = condition()  # written with the operation's success, checked during the reconcile
            assert cond and cond["status"] == "True" and cond["reason"] == "CredentialsAccepted", cond
            assert f"upstream {up.host}" in cond["message"] and ": 200" in cond["message"], cond
            assert _sample(_metrics(port), "registry_cache_upstream_credentials_valid", seed.ns, up.host) == "1.0"
        generation = seed.ext()["metadata"]["generation"]

        # a restarted controller (no reconcile needed) keeps checking; the robot's password rotated at the
        # upstream: the periodic check notices
        with controller() as op:
            wait_for("the restarted controller's metrics", lambda: _sample(
                _metrics(port), "registry_cache_upstream_credentials_valid", seed.ns, up.host) == "1.0", timeout=30,
                log=op.log)
            new_password = up.revoke()
            cond = wait_for("the condition to turn False", lambda: (c := condition()) and c["status"] == "False"
                            and c, timeout=30, log=op.log)
            assert cond["reason"] == "CredentialsRefused" and cond["codes"] == ["ERR_INFRA_UNAUTHORIZED"], cond
            assert ": 401" in cond["message"] and "GET token" in cond["message"], cond
            assert _sample(_metrics(port), "registry_cache_upstream_credentials_valid", seed.ns, up.host) == "0.0"
            assert seed.state() == "Succeeded"  # the caches are delivered; the condition says what is wrong
            assert seed.ext()["metadata"]["generation"] == generation

            # the new password into the Secret, reconciled: valid again
            seed.add_credentials("private", f"private-v1-{seed.name}", USER, new_password)
            seed.annotate("reconcile")
            wait_for("the condition to turn True", lambda: (c := condition()) and c["status"] == "True", timeout=30,
                     log=op.log)

            # the upstream away: unknown, not bad credentials
            up.stop()
            cond = wait_for("the condition to turn Unknown", lambda: (c := condition()) and c["status"] == "Unknown"
                            and c, timeout=30, log=op.log)
            assert cond["reason"] == "UpstreamUnreachable" and cond["codes"] == ["ERR_INFRA_DEPENDENCIES"], cond
            text = _metrics(port)
            assert _sample(text, "registry_cache_upstream_credentials_valid", seed.ns, up.host) is None
            assert _sample(text, "registry_cache_upstream_reachable", seed.ns, up.host) == "0.0"

            ext = seed.ext()
            for secret in (password, new_password):
                assert secret not in str(ext) and secret not in op.log() and secret not in text
    finally:
        up.stop()


def test_a_plugin_cache_is_delivered_and_what_its_pod_shows_is_named(control_plane, kube, tmp_path):
    """A cache whose credentials Secret names a credential provider plugin: delivered (its StatefulSet with the
    init container that copies the plugin, accepted by the real API server), the controller contacts nothing for it
    and runs no plugin; its condition says nothing is known while no Pod reports; a Pod whose init container cannot
    copy the plugin (as the kubelet reports it) makes it False, CredentialProviderMissing, and the metric the alert
    reads 0. The plugin's secret environment is in no object but the config Secret, nor in the log."""
    from tests.e2e.shortlived import provider_secret

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seed = Seed(kube, f"plugin-{uuid.uuid4().hex[:6]}")
    secret_value = "identity-" + uuid.uuid4().hex
    manifest = provider_secret(f"plugin-v1-{seed.name}", "https://tokens.invalid/credentials", "robot", secret_value)
    manifest["metadata"] = {"name": f"ref-plugin-v1-{seed.name}", "namespace": seed.ns}
    seed.add_credentials("plugin", f"plugin-v1-{seed.name}", "unused", "unused")  # the namespace, the reference
    kube.delete("Secret", f"ref-plugin-v1-{seed.name}", seed.ns)
    kube.apply({**manifest, "immutable": False, "data": {}, "stringData": manifest["stringData"]})
    upstream = "10.255.255.1:5000"  # nowhere: nothing may ask it
    kind = f"UpstreamCredentialsValid-{upstream}"

    def condition():
        ext = seed.ext() or {}
        return next((c for c in (ext.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)

    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--metrics-address", f"127.0.0.1:{port}",
                         "--upstream-check-interval", "1", upstream_check=True) as op:
        seed.create({"upstream": upstream, "secretReferenceName": "plugin", "http": {"tls": False}})
        ext = seed.wait_done("Create", op.log)
        assert ext["status"]["lastOperation"]["state"] == "Succeeded", ext["status"]
        owned = f"registry-cache.gardener.cloud/owner={seed.ns}"
        [sts] = kube.list("StatefulSet", "kube-system", label_selector=owned)
        pod_spec = sts["spec"]["template"]["spec"]
        assert [(c["name"], c["image"], c["command"]) for c in pod_spec["initContainers"]] == [
            ("credential-provider", "registry.local/plugin:v1",
             ["cp", "/bin/test-credential-provider", "/credential-provider/bin/test-credential-provider"])]
        cond = wait_for("a condition for the plugin cache", condition, timeout=30, log=op.log)
        assert (cond["status"], cond["reason"]) == ("Unknown", "CredentialProviderNotAsked"), cond

        name = sts["metadata"]["name"]
        labels = sts["spec"]["template"]["metadata"]["labels"]
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-0", "namespace": "kube-system",
                                                                      "labels": labels},
                     "spec": {"initContainers": pod_spec["initContainers"], "containers": pod_spec["containers"],
                              "volumes": [*pod_spec["volumes"], {"name": "cache-volume", "emptyDir": {}}]}})
        try:
            kube.patch("Pod", f"{name}-0", {"status": {"phase": "Pending", "initContainerStatuses": [{
                "name": "credential-provider", "image": "registry.local/plugin:v1", "imageID": "", "ready": False,
                "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message":
                    "cp: can't stat '/bin/test-credential-provider': No such file or directory\n"}}}]}},
                "kube-system", subresource="status")
            cond = wait_for("the condition to name the missing plugin", lambda: (c := condition())
                            and c["status"] == "False" and c, timeout=30, log=op.log)
            assert cond["reason"] == "CredentialProviderMissing" and cond["codes"] == ["ERR_CONFIGURATION_PROBLEM"]
            assert "cp: can't stat '/bin/test-credential-provider': No such file or directory" in cond["message"]
            assert _sample(_metrics(port), "registry_cache_upstream_credentials_valid", seed.ns, upstream) == "0.0"
            assert _sample(_metrics(port), "registry_cache_upstream_reachable", seed.ns, upstream) is None
        finally:
            kube.delete("Pod", f"{name}-0", "kube-system")
        for obj in [seed.ext(), *kube.list("StatefulSet", "kube-system", label_selector=owned),
                    *kube.list("Service", "kube-system", label_selector=owned)]:
            assert secret_value not in str(obj)
        assert secret_value not in op.log()
        assert [s for s in kube.list("Secret", "kube-system", label_selector=owned)
                if "credential-provider.conf" in (s.get("data") or {})]
