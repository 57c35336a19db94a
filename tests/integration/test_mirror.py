"""The registry-mirror Extension against a real API server: the controller publishing the mirrors for the node
agent (which writes hosts.toml and the CA bundle beside it), the OperatingSystemConfig webhook of Gardener mode,
and the standalone bridge keeping both extension types of a Shoot. The monitoring and the VPA:
tests/integration/test_monitoring_controller.py.
"""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

import pytest
import yaml

from extension.component import certs
from extension.constants import MIRROR_FINALIZER, WEBHOOK_CONFIGURATION_NAME
from extension.local.controlplane import apply_manifests, wait_for_crds_established
from extension.nodeagent.agent import NodeAgent
from extension.runtime.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
MIRROR_API = "mirror.extensions.gardener.cloud/v1alpha1"
CACHE_API = "registry.extensions.gardener.cloud/v1alpha3"
OWNER = "registry-cache.gardener.cloud/owner"
CA = certs.generate_ca("private-mirror-ca")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube(control_plane.api_client(), field_manager="gardenlet-test")
    apply_manifests(k.api, [REPO / "manifests" / "seed-crds"])
    wait_for_crds_established(k.api, ["operatingsystemconfigs.extensions.gardener.cloud"], timeout=30)
    return k


@pytest.fixture(scope="module")
def operator(kube, control_plane, tmp_path_factory):
    """The controller in standalone mode (the shoot is the seed) with the OperatingSystemConfig webhooks."""
    port = free_port()
    with OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("mirror") / "op.log", "--standalone",
                         "--webhooks", "--webhook-port", str(port), "--webhook-address", "127.0.0.1",
                         "--webhook-client-ca", str(control_plane.webhook_client_ca_file)) as op:
        osc_hooks = {"operatingsystemconfigs.registry-cache.extensions.gardener.cloud",
                     "operatingsystemconfigs.registry-mirror.extensions.gardener.cloud"}
        wait_for("the mutating webhooks", lambda: osc_hooks <= {w["name"] for w in (kube.get(
            "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME) or {}).get("webhooks", [])}, log=op.log)
        wait_for("the validating webhooks", lambda: kube.get("ValidatingWebhookConfiguration",
                                                             WEBHOOK_CONFIGURATION_NAME), log=op.log)
        yield op
    kube.delete("ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME)  # whatever the shutdown left


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def ca_secret(name: str, namespace: str, immutable: bool | None = True) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            **({"immutable": immutable} if immutable is not None else {}),
            "data": {"bundle.crt": base64.b64encode(CA.cert_pem.encode()).decode()}}


def mirror_config(upstream: str, private: bool = True) -> dict:
    hosts = [{"host": f"https://mirror.{upstream}", "capabilities": ["pull", "resolve"]}]
    if private:
        hosts.append({"host": f"https://private.{upstream}:8443/v2/x", "caBundleSecretReferenceName": "ca",
                      "overridePath": True})
    return {"apiVersion": MIRROR_API, "kind": "MirrorConfig", "mirrors": [{"upstream": upstream, "hosts": hosts}]}


class Seed:
    """gardenlet's side of one shoot."""

    def __init__(self, kube: Kube, name: str, labels: dict[str, str] | None = None):
        self.kube, self.name, self.ns = kube, name, f"shoot--it--{name}"
        self.shoot_spec: dict = {"resources": [{"name": "ca", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                              "name": "ca-v1"}}],
                                 "provider": {"type": "local", "workers": [{"name": "w",
                                                                           "cri": {"name": "containerd"}}]}}
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns, "labels": labels or {}}})
        self.apply_cluster()

    def apply_cluster(self) -> None:
        self.kube.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
                         "metadata": {"name": self.ns},
                         "spec": {"seed": {}, "cloudProfile": {}, "shoot": {
                             "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                             "metadata": {"name": self.name, "namespace": "garden-it"}, "spec": self.shoot_spec}}})

    def extension(self, extension_type: str, config: dict) -> None:
        self.kube.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                         "metadata": {"name": extension_type, "namespace": self.ns},
                         "spec": {"type": extension_type, "providerConfig": config}})

    def get(self, extension_type: str) -> dict | None:
        return self.kube.get("Extension", extension_type, self.ns)

    def reconcile(self, extension_type: str) -> None:
        self.kube.patch("Extension", extension_type, {"metadata": {"annotations": {
            "gardener.cloud/operation": "reconcile"}}}, self.ns)

    def wait(self, extension_type: str, log, state: str = "Succeeded", since: str | None = None) -> dict:
        def done():
            ext = self.get(extension_type) or {}
            status = ext.get("status") or {}
            last = status.get("lastOperation") or {}
            if last.get("state") == state and status.get("observedGeneration") == ext["metadata"]["generation"] \
                    and "gardener.cloud/operation" not in (ext["metadata"].get("annotations") or {}) \
                    and (since is None or last.get("lastUpdateTime", "") >= since):
                return ext
            return None
        return wait_for(f"{extension_type} in {self.ns} to be {state}", done, timeout=60, log=log)

    def delete(self, extension_type: str, log) -> None:
        self.kube.delete("Extension", extension_type, self.ns)
        wait_for(f"{extension_type} in {self.ns} to be gone", lambda: self.get(extension_type) is None, timeout=60,
                 log=log)


def test_mirror_extension_configures_the_nodes_through_the_node_agent(kube, operator, tmp_path):
    seed = Seed(kube, uniq("mirror"))
    upstream = f"{seed.name}.example"
    kube.apply(ca_secret("ref-ca-v1", seed.ns, immutable=None))  # gardenlet's copy
    seed.extension("registry-mirror", mirror_config(upstream))
    ext = seed.wait("registry-mirror", operator.log)
    assert MIRROR_FINALIZER in ext["metadata"]["finalizers"]
    assert "providerStatus" not in ext["status"] and "registry mirrors are configured" in \
        ext["status"]["lastOperation"]["description"]
    [published] = kube.list("ConfigMap", "kube-system", label_selector=f"{OWNER}={seed.ns}")
    assert published["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "registry-mirror"
    [entry] = yaml.safe_load(published["data"]["registries.yaml"])["registries"]
    ca_path = f"/etc/containerd/certs.d/{upstream}/private.{upstream}-8443-v2-x-ca-bundle.pem"
    assert entry == {"upstream": upstream, "server": f"https://{upstream}", "hosts": [
        {"url": f"https://mirror.{upstream}", "capabilities": ["pull", "resolve"]},
        {"url": f"https://private.{upstream}:8443/v2/x", "capabilities": ["pull"], "caCerts": [ca_path],
         "overridePath": True}]}

    # the node agent (reading every published ConfigMap; no cache of other tests answers here)
    root = tmp_path / "certs.d"
    agent = NodeAgent.for_kube(kube, "kube-system", root, prober=lambda url, ca: False)
    assert agent.sync().ok
    assert (root / upstream / f"private.{upstream}-8443-v2-x-ca-bundle.pem").read_text() == CA.cert_pem
    hosts_toml = (root / upstream / "hosts.toml").read_text()
    assert 'override_path = true' in hosts_toml and str(root / upstream) in hosts_toml

    # the private mirror goes: so does its CA bundle, on the node too
    seed.extension("registry-mirror", mirror_config(upstream, private=False))
    seed.wait("registry-mirror", operator.log, since=ext["status"]["lastOperation"]["lastUpdateTime"])
    assert agent.sync().ok
    assert not list((root / upstream).glob("*-ca-bundle.pem")) and (root / upstream / "hosts.toml").is_file()

    # a CA bundle reference that cannot be followed: Error, with Gardener's words; fixed: Succeeded
    broken = mirror_config(upstream)
    broken["mirrors"][0]["hosts"][1]["caBundleSecretReferenceName"] = "nope"
    seed.extension("registry-mirror", broken)
    failed = seed.wait("registry-mirror", operator.log, state="Error")
    assert "failed to find referenced resource with name nope and kind Secret" in failed["status"]["lastError"][
        "description"]
    seed.extension("registry-mirror", mirror_config(upstream))
    seed.wait("registry-mirror", operator.log)

    seed.delete("registry-mirror", operator.log)
    assert kube.list("ConfigMap", "kube-system", label_selector=f"{OWNER}={seed.ns}") == []
    assert agent.sync().ok and not (root / upstream).exists()


def test_operatingsystemconfig_gets_the_mirrors_and_their_ca_bundles(kube, operator):
    seed = Seed(kube, uniq("osc"), labels={"extensions.extensions.gardener.cloud/registry-mirror": "true"})
    upstream = f"{seed.name}.example"
    osc = {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
           "metadata": {"name": "worker", "namespace": seed.ns},
           "spec": {"type": "gardenlinux", "purpose": "reconcile", "criConfig": {"name": "containerd", "containerd": {
               "registries": [{"upstream": "quay.io", "server": "https://quay.io",
                               "hosts": [{"url": "https://cache.example"}]}]}}}}
    with pytest.raises(ApiError) as refused:  # as Gardener's ensurer: no Extension, no node configuration
        kube.create(osc)
    assert f"failed to get extension '{seed.ns}/registry-mirror'" in refused.value.message

    kube.apply(ca_secret("ref-ca-v1", seed.ns, immutable=None))
    seed.extension("registry-mirror", mirror_config(upstream))
    created = kube.create(osc)
    registries = created["spec"]["criConfig"]["containerd"]["registries"]
    assert [r["upstream"] for r in registries] == ["quay.io", upstream]
    ca_path = f"/etc/containerd/certs.d/{upstream}/private.{upstream}-8443-v2-x-ca-bundle.pem"
    assert registries[1]["hosts"][1] == {"url": f"https://private.{upstream}:8443/v2/x", "capabilities": ["pull"],
                                         "caCerts": [ca_path], "overridePath": True}
    [file] = [f for f in created["spec"]["files"] if f["path"] == ca_path]
    assert base64.b64decode(file["content"]["inline"]["data"]).decode() == CA.cert_pem
    assert file["permissions"] == 0o644
    kube.delete("OperatingSystemConfig", "worker", seed.ns)


def test_shoot_admission_refuses_an_upstream_both_mirrored_and_cached(kube, operator):
    ns = "garden-mirroradm"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    name = uniq("adm")
    upstream = f"{name}.example"
    shoot = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": name, "namespace": ns},
             "spec": {"extensions": [
                 {"type": "registry-cache", "providerConfig": {"apiVersion": CACHE_API, "kind": "RegistryConfig",
                                                               "caches": [{"upstream": upstream}]}},
                 {"type": "registry-mirror", "providerConfig": mirror_config(upstream)}],
                 "resources": [{"name": "ca", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": "ca-v1"}}],
                 "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}
    with pytest.raises(ApiError) as refused:
        kube.create(shoot)
    message = refused.value.message
    assert (f"spec.extensions[1].providerConfig.mirrors[0].upstream: Invalid value: \"{upstream}\": upstream host "
            f"'{upstream}' is also configured as a registry cache upstream") in message, message
    assert ("spec.extensions[1].providerConfig.mirrors[0].hosts[1].caBundleSecretReferenceName: Invalid value: "
            '"ca": failed to get secret garden-mirroradm/ca-v1') in message, message
    kube.create(ca_secret("ca-v1", ns))
    shoot["spec"]["extensions"][0]["providerConfig"]["caches"][0]["upstream"] = f"other.{upstream}"
    kube.create(shoot)  # admitted now
    kube.delete("Shoot", name, ns)
    wait_for("the Shoot to be gone", lambda: kube.get("Shoot", name, ns) is None, timeout=90, log=operator.log)


def test_the_bridge_keeps_both_extension_types(kube, operator):
    project, name = "mirrorbridge", uniq("both")
    ns, seed_ns = f"garden-{project}", f"shoot--{project}--{name}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.apply(ca_secret("ca-v1", ns))
    upstream = f"{name}.example"
    shoot = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": name, "namespace": ns},
             "spec": {"extensions": [
                 {"type": "registry-mirror", "providerConfig": mirror_config(upstream)},
                 {"type": "registry-cache", "providerConfig": {"apiVersion": CACHE_API, "kind": "RegistryConfig",
                                                               "caches": [{"upstream": f"cache.{upstream}"}]}}],
                 "resources": [{"name": "ca", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": "ca-v1"}}],
                 "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}
    kube.apply(shoot)
    for extension_type in ("registry-mirror", "registry-cache"):
        wait_for(f"{extension_type} to succeed", lambda t=extension_type: (
            ((kube.get("Extension", t, seed_ns) or {}).get("status") or {}).get("lastOperation") or {}).get(
            "state") == "Succeeded", timeout=60, log=operator.log)
    labels = kube.get("Namespace", seed_ns)["metadata"]["labels"]
    assert labels["extensions.extensions.gardener.cloud/registry-mirror"] == "true"
    assert labels["extensions.extensions.gardener.cloud/registry-cache"] == "true"
    assert kube.get("Secret", "ref-ca-v1", seed_ns) is not None

    # the Shoot drops the mirror: its Extension and label go, the cache stays
    shoot["spec"]["extensions"] = shoot["spec"]["extensions"][1:]
    kube.apply(shoot)
    wait_for("the mirror Extension to go", lambda: kube.get("Extension", "registry-mirror", seed_ns) is None,
             timeout=60, log=operator.log)
    assert "extensions.extensions.gardener.cloud/registry-mirror" not in \
        kube.get("Namespace", seed_ns)["metadata"]["labels"]
    assert kube.list("ConfigMap", "kube-system", label_selector=f"{OWNER}={seed_ns},"
                                                                f"app.kubernetes.io/managed-by=registry-mirror") == []
    assert kube.get("Extension", "registry-cache", seed_ns) is not None

    kube.delete("Shoot", name, ns)
    wait_for("the Shoot to be gone", lambda: kube.get("Shoot", name, ns) is None, timeout=90, log=operator.log)
    assert kube.get("Extension", "registry-cache", seed_ns) is None and kube.get("Cluster", seed_ns) is None


def test_a_shoot_using_only_registry_mirror_goes_through_the_shoot_webhooks(kube, operator, control_plane):
    """A Shoot that uses registry-mirror alone reaches the Shoot webhooks (first by the entry for Shoots not
    labelled yet, then by its registry-mirror label); its author must be allowed to read the CA bundle Secret
    (the references policy, for the mirrors' Secrets too) and to configure the nodes (a ClusterRoleBinding), and
    the bridge copies the Secret."""
    project, name = "mirroronly", uniq("only")
    ns, seed_ns = f"garden-{project}", f"shoot--{project}--{name}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.apply(ca_secret("ca-v1", ns))
    kube.apply(ca_secret("ca-hidden", ns))
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    kube.request("POST", f"{rbac}/namespaces/{ns}/roles", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "author", "namespace": ns},
        "rules": [{"apiGroups": ["core.gardener.cloud"], "resources": ["shoots"],
                   "verbs": ["get", "create", "update", "patch"]},
                  {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["ca-v1"]}]})
    kube.request("POST", f"{rbac}/namespaces/{ns}/rolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "author", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "author"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]})
    kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bob-node-configuration"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "registry-cache:node-configuration"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]})
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", "bob")
    bob = Kube(api, field_manager="bob")
    upstream = f"{name}.example"
    shoot = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": name, "namespace": ns},
             "spec": {"extensions": [{"type": "registry-mirror", "providerConfig": mirror_config(upstream)}],
                      "resources": [{"name": "ca", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                   "name": "ca-hidden"}}],
                      "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}
    with pytest.raises(ApiError) as refused:
        bob.create(shoot)
    assert "shoot cannot reference a resource you are not allowed to read" in refused.value.message
    assert f'user "bob" may not get every Secret of {ns}/ca-hidden' in refused.value.message

    shoot["spec"]["resources"][0]["resourceRef"]["name"] = "ca-v1"
    bob.create(shoot)
    wait_for("the CA bundle copied", lambda: kube.get("Secret", "ref-ca-v1", seed_ns), timeout=30, log=operator.log)
    wait_for("registry-mirror to succeed", lambda: (
        ((kube.get("Extension", "registry-mirror", seed_ns) or {}).get("status") or {}).get("lastOperation") or {}).get(
        "state") == "Succeeded", timeout=60, log=operator.log)
    labels = kube.get("Shoot", name, ns)["metadata"]["labels"]
    assert labels == {"extensions.extensions.gardener.cloud/registry-mirror": "true"}

    # labelled now: the registry-mirror entry takes it; the hidden Secret is refused as before, and so is an
    # invalid mirror (the CA bundle reference dropped)
    with pytest.raises(ApiError) as refused:
        bob.patch("Shoot", name, [{"op": "replace", "path": "/spec/resources/0/resourceRef/name",
                                   "value": "ca-hidden"}], ns, merge=False)
    assert f'user "bob" may not get every Secret of {ns}/ca-hidden' in refused.value.message
    with pytest.raises(ApiError) as refused:
        bob.patch("Shoot", name, [{"op": "remove", "path": "/spec/resources"}], ns, merge=False)
    assert "caBundleSecretReferenceName" in refused.value.message, refused.value.message

    kube.delete("Shoot", name, ns)
    wait_for("the Shoot to be gone", lambda: kube.get("Shoot", name, ns) is None, timeout=90, log=operator.log)
    assert kube.get("Extension", "registry-mirror", seed_ns) is None
