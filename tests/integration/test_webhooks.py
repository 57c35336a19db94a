"""The webhooks in their own modes and failure cases, each with its own controller process: --webhooks garden
alone (as in a real garden), a controller killed with -9, registration retried."""

from __future__ import annotations

import base64
import signal
import threading

import pytest

from extension.constants import WEBHOOK_CONFIGURATION_NAME as CONFIGURATION_NAME
from extension.runtime.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for
from .test_references import free_port

NS = "garden-hooks"


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube(control_plane.api_client(), field_manager="kubectl-test")
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    yield k
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        k.delete(kind, CONFIGURATION_NAME)


def secret(name):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "type": "Opaque",
            "immutable": True, "data": {"username": base64.b64encode(b"robot").decode(),
                                        "password": base64.b64encode(b"pw").decode()}}


def shoot(name, secret_name, labelled=True):
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": NS,
                         # gardener-apiserver sets this label on Shoots that use the extension
                         "labels": {"extensions.extensions.gardener.cloud/registry-cache": "true"} if labelled else {}},
            "spec": {"extensions": [{"type": "registry-cache", "providerConfig": {
                "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                "caches": [{"upstream": f"{name}.example", "secretReferenceName": "creds"}]}}],
                "resources": [{"name": "creds", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                "name": secret_name}}],
                "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}


def test_garden_mode_alone_refuses_deleting_a_secret_in_use(kube, control_plane, tmp_path):
    """--webhooks garden without --standalone: nothing labels Secrets in use there, and the webhook's object
    selector on that label let every DELETE through."""
    kube.create(secret("garden-v1"))
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--webhooks", "garden", "--webhook-port",
                         str(free_port()), "--webhook-address", "127.0.0.1",
                         "--webhook-client-ca", str(control_plane.webhook_client_ca_file)) as op:
        wait_for("the webhooks", lambda: kube.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME), log=op.log)
        kube.create(shoot("garden", "garden-v1"))

        def refused():
            try:
                kube.request("DELETE", f"/api/v1/namespaces/{NS}/secrets/garden-v1", query=[("dryRun", "All")])
            except ApiError as exc:
                return exc.status == 403 and exc
            return False
        error = wait_for("the refusal", refused, log=op.log)
        assert f'Secret {NS}/garden-v1 is still in use by Shoot "garden"' in error.message
        assert kube.get("Secret", "garden-v1", NS)["metadata"].get("labels") is None  # nothing was labelled
        kube.create(secret("unrelated"))
        assert kube.delete("Secret", "unrelated", NS)  # a Secret not in use goes
    kube.delete("ValidatingWebhookConfiguration", CONFIGURATION_NAME)


def test_a_killed_controller_blocks_only_shoots_that_use_the_extension(kube, control_plane, tmp_path):
    """failurePolicy Fail on every Shoot without a selector: after kill -9 no Shoot could be changed."""
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--webhooks", "garden", "--webhook-port",
                         str(free_port()), "--webhook-address", "127.0.0.1",
                         "--webhook-client-ca", str(control_plane.webhook_client_ca_file)).start()
    try:
        wait_for("the webhooks", lambda: kube.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME), log=op.log)
        assert op.proc is not None
        op.proc.send_signal(signal.SIGKILL)
        op.wait_exit(10)
    finally:
        op.stop()
    config = kube.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME)
    shoot_hook = next(w for w in config["webhooks"] if w["name"].startswith("shoots."))
    assert shoot_hook["objectSelector"] == {"matchLabels": {"extensions.extensions.gardener.cloud/registry-cache": "true"}}
    unrelated = shoot("unrelated", "whatever", labelled=False)
    unrelated["spec"]["extensions"] = [{"type": "shoot-dns-service"}]
    kube.create(unrelated)  # not blocked
    with pytest.raises(ApiError) as info:
        kube.create(shoot("blocked", "whatever"))
    assert "failed calling webhook" in info.value.message
    kube.delete("ValidatingWebhookConfiguration", CONFIGURATION_NAME)


def test_a_shoot_using_only_registry_mirror_reaches_the_shoot_webhook(kube, control_plane, tmp_path):
    """Gardener labels Shoots per extension type: a Shoot labelled for registry-mirror alone is validated (its
    CA bundle Secret must be there) as one labelled for registry-cache is, in garden mode too."""
    from .test_mirror import ca_secret, mirror_config

    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--webhooks", "garden", "--webhook-port",
                         str(free_port()), "--webhook-address", "127.0.0.1",
                         "--webhook-client-ca", str(control_plane.webhook_client_ca_file)) as op:
        wait_for("the webhooks", lambda: kube.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME), log=op.log)
        mirror = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                  "metadata": {"name": "mirror-only", "namespace": NS,
                               "labels": {"extensions.extensions.gardener.cloud/registry-mirror": "true"}},
                  "spec": {"extensions": [{"type": "registry-mirror",
                                           "providerConfig": mirror_config("mirror-only.example")}],
                           "resources": [{"name": "ca", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                        "name": "mirror-ca"}}],
                           "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}

        def refusal():  # a dry run until the API server calls the webhook (its informer may lag)
            try:
                kube.request("POST", f"/apis/core.gardener.cloud/v1beta1/namespaces/{NS}/shoots", body=mirror,
                             query=[("dryRun", "All")])
            except ApiError as exc:
                return exc.message
            return None
        message = wait_for("the refusal", refusal, log=op.log)
        assert "caBundleSecretReferenceName" in message and f"failed to get secret {NS}/mirror-ca" in message, message
        kube.create(ca_secret("mirror-ca", NS))
        kube.create(mirror)  # admitted now
        kube.delete("Shoot", "mirror-only", NS)
    kube.delete("ValidatingWebhookConfiguration", CONFIGURATION_NAME)


def test_registration_is_retried_until_the_api_server_takes_it():
    from extension.manager import register_with_retries

    calls: list[str] = []

    def apply(configuration):
        calls.append(configuration["metadata"]["name"])
        if len(calls) < 3:
            raise ApiError("PATCH", "/apis/admissionregistration.k8s.io/v1/x", 503, {"reason": "ServiceUnavailable"})

    configs = [{"kind": "ValidatingWebhookConfiguration", "metadata": {"name": "a"}},
               {"kind": "MutatingWebhookConfiguration", "metadata": {"name": "b"}}]
    assert register_with_retries(apply, configs, threading.Event(), base=0.01)
    assert calls == ["a", "a", "a", "b"]
    stop = threading.Event()
    stop.set()
    assert not register_with_retries(lambda c: (_ for _ in ()).throw(OSError("down")), configs, stop, base=0.01)
