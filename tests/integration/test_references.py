"""Referenced Secrets on the real API server: deletion refused while in use (a cache's credentials, a mirror
host's CA bundle), the finalizer as the safety net, Shoot admission, and rotation by command."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys

import pytest
import yaml

from extension.component import certs
from extension.constants import PROTECTION_FINALIZER
from extension.constants import WEBHOOK_CONFIGURATION_NAME as CONFIGURATION_NAME
from extension.runtime.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for

NS = "garden-refs"
PASSWORDS = ["pw-one-secret", "pw-two-secret", "pw-three-secret"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube(control_plane.api_client(), field_manager="kubectl-test")
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return k


@pytest.fixture(scope="module")
def operator(control_plane, kube, tmp_path_factory):
    port = free_port()
    with OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("refs") / "op.log", "--standalone",
                         "--webhooks", "--webhook-port", str(port), "--webhook-address", "127.0.0.1",
                         "--webhook-client-ca", str(control_plane.webhook_client_ca_file)) as op:
        wait_for("the webhook configuration", lambda: kube.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME),
                 log=op.log)
        yield op
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        kube.delete(kind, CONFIGURATION_NAME)  # whatever the shutdown left


def secret(name, username="robot", password=PASSWORDS[0], immutable=True):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "type": "Opaque",
            "immutable": immutable,
            "data": {"username": base64.b64encode(username.encode()).decode(),
                     "password": base64.b64encode(password.encode()).decode()}}


def shoot(name, secret_name, upstream=None, reference="creds", **cache):
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": name, "namespace": NS},
            "spec": {"extensions": [{"type": "registry-cache", "providerConfig": {
                "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                "caches": [{"upstream": upstream or f"{name}.example", "secretReferenceName": reference, **cache}]}}],
                     "resources": [{"name": reference, "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                        "name": secret_name}}],
                     "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}


CA_PEM = certs.generate_ca("refs-mirror-ca").cert_pem


def ca_secret(name):
    """A registry-mirror host's CA bundle Secret, as Gardener's validation wants it."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "type": "Opaque",
            "immutable": True, "data": {"bundle.crt": base64.b64encode(CA_PEM.encode()).decode()}}


def mirror_shoot(name, secret_name, reference="ca"):
    """A Shoot with only the registry-mirror extension: one private mirror whose CA bundle is ``secret_name``."""
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": name, "namespace": NS},
            "spec": {"extensions": [{"type": "registry-mirror", "providerConfig": {
                "apiVersion": "mirror.extensions.gardener.cloud/v1alpha1", "kind": "MirrorConfig",
                "mirrors": [{"upstream": f"{name}.example", "hosts": [
                    {"host": f"https://mirror.{name}.example", "caBundleSecretReferenceName": reference}]}]}}],
                     "resources": [{"name": reference, "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                        "name": secret_name}}],
                     "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}


def dry_run_delete_refused(kube, name) -> bool:
    try:
        kube.request("DELETE", f"/api/v1/namespaces/{NS}/secrets/{name}", query=[("dryRun", "All")])
    except ApiError as exc:
        return exc.status == 403
    return False


def protected(kube, name):
    obj = kube.get("Secret", name, NS)
    return obj is not None and PROTECTION_FINALIZER in (obj["metadata"].get("finalizers") or [])


def test_delete_refused_while_in_use_then_allowed_after_the_swap(kube, operator):
    kube.create(secret("del-v1"))
    kube.create(secret("del-v2", password=PASSWORDS[1]))
    kube.create(shoot("del", "del-v1"))
    wait_for("the finalizer", lambda: protected(kube, "del-v1"), log=operator.log)
    # the API server takes the webhook's configuration from a watch: a moment after the registration it may
    # still hold the one of an earlier test's controller, whose call fails and is ignored (the finalizer holds)
    wait_for("the webhook to answer", lambda: dry_run_delete_refused(kube, "del-v1"), log=operator.log)
    with pytest.raises(ApiError) as info:
        kube.delete("Secret", "del-v1", NS)
    assert info.value.status == 403
    message = info.value.message
    assert f'Secret {NS}/del-v1 is still in use by Shoot "del" (spec.resources entry "creds"' in message
    assert "Point the spec.resources entry at a new Secret first" in message
    assert kube.get("Secret", "del-v1", NS)["metadata"].get("deletionTimestamp") is None
    # an unrelated Secret goes as always
    kube.create(secret("unrelated"))
    assert kube.delete("Secret", "unrelated", NS)
    # swap, then the old one can go
    kube.patch("Shoot", "del", [{"op": "replace", "path": "/spec/resources/0/resourceRef/name", "value": "del-v2"}],
               NS, merge=False)
    wait_for("v1 released", lambda: not protected(kube, "del-v1"), log=operator.log)
    assert protected(kube, "del-v2")
    kube.delete("Secret", "del-v1", NS)
    wait_for("v1 gone", lambda: kube.get("Secret", "del-v1", NS) is None)


def test_a_mirrors_ca_bundle_secret_is_in_use_too(kube, operator):
    """A registry-mirror host's caBundleSecretReferenceName protects its Secret as a cache's secretReferenceName
    does: the DELETE is refused naming the Shoot, the entry and the host, until the Shoot points elsewhere."""
    kube.create(ca_secret("mca-v1"))
    kube.create(ca_secret("mca-v2"))
    kube.create(mirror_shoot("mca", "mca-v1"))
    wait_for("the finalizer", lambda: protected(kube, "mca-v1"), log=operator.log)
    assert kube.get("Secret", "mca-v1", NS)["metadata"]["labels"]["registry-cache.gardener.cloud/referenced"] == "true"
    with pytest.raises(ApiError) as info:
        kube.delete("Secret", "mca-v1", NS)
    assert info.value.status == 403
    assert (f'Secret {NS}/mca-v1 is still in use by Shoot "mca" (spec.resources entry "ca", used as '
            "caBundleSecretReferenceName by the registry mirror https://mirror.mca.example for mca.example). "
            "Point the spec.resources entry at a new Secret first, wait for the Shoot to reconcile") in info.value.message
    assert kube.get("Secret", "mca-v1", NS)["metadata"].get("deletionTimestamp") is None
    kube.patch("Shoot", "mca", [{"op": "replace", "path": "/spec/resources/0/resourceRef/name", "value": "mca-v2"}],
               NS, merge=False)
    wait_for("v1 released", lambda: not protected(kube, "mca-v1"), log=operator.log)
    assert protected(kube, "mca-v2")
    kube.delete("Secret", "mca-v1", NS)
    wait_for("v1 gone", lambda: kube.get("Secret", "mca-v1", NS) is None)
    kube.delete("Shoot", "mca", NS)
    wait_for("the Shoot gone, v2 released", lambda: kube.get("Shoot", "mca", NS) is None
             and not protected(kube, "mca-v2"), timeout=60, log=operator.log)


def _deleted_or_refused(kube, name):
    try:
        kube.delete("Secret", name, NS)
        return "deleted"
    except ApiError as exc:
        if exc.status == 403 and "secrets.registry-cache.extensions.gardener.cloud" in exc.message:
            return "refused"
        raise


@pytest.mark.parametrize("use", ["credentials", "mirror-ca-bundle"])
def test_finalizer_holds_the_secret_without_the_webhook(kube, operator, use):
    name = "fin" if use == "credentials" else "fin-mirror"
    kube.create(secret(f"{name}-v1") if use == "credentials" else ca_secret(f"{name}-v1"))
    kube.create(shoot(name, f"{name}-v1") if use == "credentials" else mirror_shoot(name, f"{name}-v1"))
    wait_for("the finalizer", lambda: protected(kube, f"{name}-v1"), log=operator.log)
    config = kube.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME)
    kube.delete("ValidatingWebhookConfiguration", CONFIGURATION_NAME)  # the webhook is down
    try:
        # accepted now (once the API server has noticed the configuration is gone: its webhook informer may lag
        # behind under load), but only marks it for deletion
        wait_for("the DELETE to pass without the webhook", lambda: _deleted_or_refused(kube, f"{name}-v1") == "deleted",
                 timeout=15, log=operator.log)
        held = kube.get("Secret", f"{name}-v1", NS)
        assert held is not None and held["metadata"].get("deletionTimestamp")
        # once no Shoot uses it any more, it goes
        kube.delete("Shoot", name, NS)
        wait_for(f"{name}-v1 gone", lambda: kube.get("Secret", f"{name}-v1", NS) is None, timeout=60, log=operator.log)
    finally:
        config.pop("metadata")
        kube.apply({"metadata": {"name": CONFIGURATION_NAME}, **config})


def test_shoot_admission(kube, operator):
    kube.create(secret("adm-v1"))
    kube.create(secret("adm-mutable", immutable=False))
    bad = shoot("adm-bad", "adm-v1", upstream="https://adm.example", volume={"size": "0"})
    bad["spec"]["provider"]["workers"][0]["cri"]["name"] = "docker"
    with pytest.raises(ApiError) as info:
        kube.create(bad)
    lines = info.value.message.split("denied the request: ", 1)[1].splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "spec.provider.workers[0].cri.name", "spec.extensions[0].providerConfig.caches[0].upstream",
        "spec.extensions[0].providerConfig.caches[0].volume.size"]
    with pytest.raises(ApiError) as info:
        kube.create(shoot("adm-missing", "adm-nope"))
    assert 'secretReferenceName: Invalid value: "creds": failed to get secret garden-refs/adm-nope' in info.value.message
    with pytest.raises(ApiError) as info:
        kube.create(shoot("adm-mutable", "adm-mutable"))
    assert 'the referenced secret "garden-refs/adm-mutable" should be immutable' in info.value.message
    kube.create(shoot("adm-good", "adm-v1"))  # admitted
    for _ in range(10):  # the bridge adds its finalizer meanwhile: retry on a conflict
        good = kube.get("Shoot", "adm-good", NS)
        good["spec"]["extensions"][0]["providerConfig"]["caches"][0]["volume"] = {"size": "20Gi"}
        with pytest.raises(ApiError) as info:  # update rules: the size is immutable (default 10Gi)
            kube.request("PUT", f"/apis/core.gardener.cloud/v1beta1/namespaces/{NS}/shoots/adm-good", body=good)
        if not info.value.conflict:
            break
    assert 'volume.size: Invalid value: "20Gi": field is immutable' in info.value.message
    other = shoot("adm-other", "whatever")
    other["spec"]["extensions"] = [{"type": "shoot-dns-service"}]
    other["spec"]["provider"]["workers"][0]["cri"]["name"] = "docker"
    kube.create(other)  # Shoots without the extension pass untouched


def run_cli(kubeconfig, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "extension.cli", *args, "--kubeconfig", str(kubeconfig)],
                          input=stdin, capture_output=True, text=True, timeout=180)


def test_rotation_by_command_v1_v2_v3(kube, operator, control_plane):
    kube.create(secret("rot-v1", username="robot+v1", password=PASSWORDS[0]))
    kube.create(shoot("rot", "rot-v1", upstream="rot.example"))
    seed_ns = "shoot--refs--rot"
    wait_for("the first reconcile", lambda: ((kube.get("Extension", "registry-cache", seed_ns) or {}).get("status", {})
             .get("lastOperation", {}).get("state") == "Succeeded"), log=operator.log)
    for version, password in ((2, PASSWORDS[1]), (3, PASSWORDS[2])):
        done = run_cli(control_plane.kubeconfig, "credentials", "rotate", "--shoot", f"{NS}/rot", "--reference",
                       "creds", "--username", f"robot+v{version}", "--password-stdin", stdin=password + "\n")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"created Secret {NS}/rot-v{version}" in done.stdout
        assert f"deleted Secret {NS}/rot-v{version - 1}" in done.stdout
        assert password not in done.stdout + done.stderr
    names = sorted(s["metadata"]["name"] for s in kube.list("Secret", NS) if s["metadata"]["name"].startswith("rot-"))
    assert names == ["rot-v3"]
    [config] = [s for s in kube.list("Secret", "kube-system", label_selector=f"registry-cache.gardener.cloud/owner={seed_ns}")
                if "-config-" in s["metadata"]["name"]]
    assert json.loads(base64.b64decode(config["data"]["upstream-credentials"])) == \
        {"Username": "robot+v3", "Secret": PASSWORDS[2]}


def test_rotation_refuses_bad_credentials_and_keeps_everything(kube, operator, control_plane):
    kube.create(secret("keep-v1"))
    kube.create(shoot("keep", "keep-v1"))
    done = run_cli(control_plane.kubeconfig, "credentials", "rotate", "--shoot", f"{NS}/keep", "--reference", "creds",
                   "--username", "has space", "--password-stdin", stdin="pw\n")
    assert done.returncode != 0 and "contains whitespace" in done.stderr
    assert kube.get("Secret", "keep-v2", NS) is None
    assert kube.get("Shoot", "keep", NS)["spec"]["resources"][0]["resourceRef"]["name"] == "keep-v1"


def test_no_password_in_logs(operator):
    log = operator.log()
    for password in PASSWORDS:
        assert password not in log


def test_operatingsystemconfig_gets_the_caches_and_the_ca_bundle(kube, operator, control_plane):
    """Gardener mode's node side: the mutating webhook puts the caches into every OperatingSystemConfig of
    a shoot namespace that uses the extension, so that gardener-node-agent writes hosts.toml."""
    from pathlib import Path

    from extension.local.controlplane import apply_manifests, wait_for_crds_established
    api = control_plane.api_client()
    apply_manifests(api, [Path(__file__).resolve().parents[2] / "manifests" / "seed-crds"])
    wait_for_crds_established(api, ["operatingsystemconfigs.extensions.gardener.cloud"], timeout=30)
    wait_for("the mutating webhook", lambda: kube.get("MutatingWebhookConfiguration", CONFIGURATION_NAME),
             log=operator.log)
    kube.create(secret("osc-v1"))
    kube.create(shoot("osc", "osc-v1", upstream="osc.example"))
    seed_ns = "shoot--refs--osc"
    ext = wait_for("the Extension", lambda: ((e := kube.get("Extension", "registry-cache", seed_ns)) or {})
                   .get("status", {}).get("lastOperation", {}).get("state") == "Succeeded" and e, log=operator.log)
    endpoint = ext["status"]["providerStatus"]["caches"][0]["endpoint"]
    osc = {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
           "metadata": {"name": "worker-original", "namespace": seed_ns},
           "spec": {"type": "gardenlinux", "purpose": "reconcile", "criConfig": {"name": "containerd", "containerd": {
               "registries": [{"upstream": "quay.io", "server": "https://quay.io",
                               "hosts": [{"url": "https://mirror.example"}]}]}},
                    "files": [{"path": "/etc/motd", "permissions": 420,
                               "content": {"inline": {"encoding": "", "data": "hello"}}}]}}
    created = kube.create(osc)
    registries = created["spec"]["criConfig"]["containerd"]["registries"]
    assert [r["upstream"] for r in registries] == ["quay.io", "osc.example"]
    assert registries[1] == {"upstream": "osc.example", "server": "https://osc.example",
                             "hosts": [{"url": endpoint, "capabilities": ["pull", "resolve"],
                                        "caCerts": ["/etc/containerd/certs.d/ca-bundle.pem"]}],
                             "readinessProbe": True}
    bundle = next(f for f in created["spec"]["files"] if f["path"] == "/etc/containerd/certs.d/ca-bundle.pem")
    expected = kube.get("Secret", "ca-extension-registry-cache-bundle", seed_ns)["data"]["bundle.crt"]
    assert bundle["content"]["inline"] == {"encoding": "b64", "data": expected}
    assert any(f["path"] == "/etc/motd" for f in created["spec"]["files"])
    # an OSC in a namespace without the extension is not touched (namespace selector)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shoot--refs--other"}})
    plain = kube.create({**osc, "metadata": {"name": "worker", "namespace": "shoot--refs--other"}})
    assert [r["upstream"] for r in plain["spec"]["criConfig"]["containerd"]["registries"]] == ["quay.io"]


def test_a_shoot_may_reference_only_secrets_its_author_may_read(kube, operator, control_plane):
    """Gardener's ResourceReferenceManager, as the references policy (CEL's authorizer in the API server): the
    requesting user may get each Secret that spec.resources gains. Otherwise a Shoot author could have
    credentials they cannot read sent to a remoteURL of their choosing. The bridge copies what was admitted."""
    kube.create(secret("sar-readable"))
    kube.create(secret("sar-hidden", password="hidden-password"))
    kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles", body={
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "shoot-author", "namespace": NS},
                "rules": [{"apiGroups": ["core.gardener.cloud"], "resources": ["shoots"],
                           "verbs": ["get", "create", "update", "patch"]},
                          {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                           "resourceNames": ["sar-readable"]}]})
    kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "shoot-author", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shoot-author"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})
    kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-node-configuration"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "registry-cache:node-configuration"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", "alice")
    alice = Kube(api, field_manager="alice")
    with pytest.raises(ApiError) as info:
        alice.create(shoot("sar-bad", "sar-hidden", remoteURL="https://attacker.example"))
    assert "shoot cannot reference a resource you are not allowed to read" in info.value.message
    assert f'user "alice" may not get every Secret of {NS}/sar-hidden' in info.value.message
    assert kube.get("Shoot", "sar-bad", NS) is None
    alice.create(shoot("sar-good", "sar-readable"))
    wait_for("the copy", lambda: kube.get("Secret", "ref-sar-readable", "shoot--refs--sar-good"), log=operator.log)
    # pointing the admitted Shoot at the hidden Secret is refused too
    with pytest.raises(ApiError) as info:
        alice.patch("Shoot", "sar-good", [{"op": "replace", "path": "/spec/resources/0/resourceRef/name",
                                           "value": "sar-hidden"}], NS, merge=False)
    assert "shoot cannot reference a resource you are not allowed to read" in info.value.message
    assert "hidden-password" not in operator.log()


def test_rotation_survives_the_api_server_going_away(kube, operator, control_plane, tmp_path):
    """A refused connection halfway through a rotation ended in a traceback: now each step is tried again
    until the API server is back, and the rotation finishes."""
    import threading
    import time
    from urllib.parse import urlsplit

    from .tcp_proxy import TcpProxy

    kube.create(secret("away-v1", username="robot+v1"))
    kube.create(shoot("away", "away-v1", upstream="away.example"))
    seed_ns = "shoot--refs--away"
    wait_for("the first reconcile", lambda: ((kube.get("Extension", "registry-cache", seed_ns) or {}).get("status", {})
             .get("lastOperation", {}).get("state") == "Succeeded"), log=operator.log)
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    proxy = TcpProxy(server.hostname, server.port).start()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    proxied = tmp_path / "kubeconfig"
    proxied.write_text(yaml.safe_dump(config))

    def cut_after_the_swap():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = kube.get("Shoot", "away", NS)
            if current["spec"]["resources"][0]["resourceRef"]["name"] == "away-v2":
                proxy.cut()
                time.sleep(4)
                proxy.restore()
                return
            time.sleep(0.05)
    cutter = threading.Thread(target=cut_after_the_swap)
    cutter.start()
    done = run_cli(proxied, "credentials", "rotate", "--shoot", f"{NS}/away", "--reference", "creds",
                   "--username", "robot+v2", "--password-stdin", "--timeout", "120", stdin=PASSWORDS[1] + "\n")
    cutter.join()
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the API server cannot be reached" in done.stdout
    assert f"deleted Secret {NS}/away-v1" in done.stdout
    assert kube.get("Secret", "away-v1", NS) is None


def test_rotation_against_an_unreachable_api_server_is_a_clear_error(tmp_path, control_plane):
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    done = run_cli(path, "credentials", "rotate", "--shoot", f"{NS}/x", "--reference", "creds", "--username", "u",
                   "--password-stdin", stdin="p\n")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the API server could not be reached for GET "), done.stderr
