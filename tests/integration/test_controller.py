"""The Extension controller against a real kube-apiserver: the Gardener contract, end to end.

Each test plays gardenlet: it creates the shoot namespace, the Cluster, the ``ref-`` Secret copies and the
Extension, then watches what ``registry-cache run`` (a separate process) does. Caches are delivered to
``kube-system`` of the same API server (or of a second one); each test uses its own upstream names.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import yaml

from extension.constants import FINALIZER
from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for

API = "registry.extensions.gardener.cloud/v1alpha3"
OWNER = "registry-cache.gardener.cloud/owner"


@pytest.fixture(scope="module")
def kube(control_plane):
    return Kube(control_plane.api_client(), field_manager="gardenlet-test")


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log) as op:
        yield op


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def provider_config(*caches):
    return {"apiVersion": API, "kind": "RegistryConfig", "caches": list(caches)}


def secret_manifest(ns, name, username, password):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "type": "Opaque",
            "data": {"username": base64.b64encode(username.encode()).decode(),
                     "password": base64.b64encode(password.encode()).decode()}}


class Seed:
    """gardenlet's side of one shoot: namespace, Cluster, ref- copies, Extension."""

    def __init__(self, kube: Kube, name: str):
        self.kube, self.name = kube, name
        self.ns = f"shoot--it--{name}"
        self.resources: list[dict] = []
        self.hibernated = False

    def shoot(self):
        return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                "metadata": {"name": self.name, "namespace": "garden-it"},
                "spec": {"resources": self.resources, "hibernation": {"enabled": self.hibernated},
                         "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}

    def apply_cluster(self):
        self.kube.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
                         "metadata": {"name": self.ns}, "spec": {"shoot": self.shoot(), "seed": {}, "cloudProfile": {}}})

    def create(self, *caches, cluster=True):
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}})
        if cluster:
            self.apply_cluster()
        return self.kube.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                                 "metadata": {"name": "registry-cache", "namespace": self.ns},
                                 "spec": {"type": "registry-cache", "providerConfig": provider_config(*caches)}})

    def add_credentials(self, reference, secret_name, username, password):
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}})
        self.kube.apply(secret_manifest(self.ns, f"ref-{secret_name}", username, password))
        self.resources = [r for r in self.resources if r["name"] != reference] + [
            {"name": reference, "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret_name}}]
        self.apply_cluster()

    def ext(self):
        return self.kube.get("Extension", "registry-cache", self.ns)

    def set_caches(self, *caches):
        self.kube.patch("Extension", "registry-cache", {"spec": {"providerConfig": provider_config(*caches)}}, self.ns)

    def annotate(self, operation):
        self.kube.patch("Extension", "registry-cache",
                        {"metadata": {"annotations": {"gardener.cloud/operation": operation}}}, self.ns)

    def state(self):
        ext = self.ext()
        return ((ext or {}).get("status") or {}).get("lastOperation", {}).get("state")

    def wait_done(self, op, log, timeout=30.0):
        """Wait for a finished operation of this type whose observedGeneration is current."""
        def done():
            ext = self.ext()
            status = (ext or {}).get("status") or {}
            last = status.get("lastOperation") or {}
            if last.get("type") == op and last.get("state") in ("Succeeded", "Error") and \
                    status.get("observedGeneration") == ext["metadata"]["generation"] and \
                    "gardener.cloud/operation" not in (ext["metadata"].get("annotations") or {}):
                return ext
            return None
        return wait_for(f"{op} of {self.ns}", done, timeout, log=log)

    def owned(self, kind, kube=None):
        return sorted(o["metadata"]["name"] for o in (kube or self.kube).list(
            kind, "kube-system", label_selector=f"{OWNER}={self.ns}"))


def config_yml(kube, secret_name):
    secret = kube.get("Secret", secret_name, "kube-system")
    return yaml.safe_load(base64.b64decode(secret["data"]["config.yml"]))


def upstream_credentials(kube, secret_name):
    """What the cache's credential helper answers with (the config Secret's credentials file)."""
    secret = kube.get("Secret", secret_name, "kube-system")
    return json.loads(base64.b64decode(secret["data"]["upstream-credentials"]))


def test_create_three_caches(kube, operator):
    seed = Seed(kube, uniq("create"))
    ups = [f"{u}.{seed.name}.example" for u in ("docker", "ghcr", "quay")]
    seed.create({"upstream": ups[0], "volume": {"size": "20Gi"}}, {"upstream": ups[1]},
                {"upstream": ups[2], "http": {"tls": False}})
    ext = seed.wait_done("Create", operator.log)
    status = ext["status"]
    assert status["lastOperation"]["state"] == "Succeeded" and status["lastOperation"]["progress"] == 100
    assert status.get("lastError") is None and FINALIZER in ext["metadata"]["finalizers"]
    provider = status["providerStatus"]
    assert provider["apiVersion"] == API and provider["kind"] == "RegistryStatus"
    assert provider["caSecretName"] == "ca-extension-registry-cache-bundle"
    services = {s["metadata"]["annotations"]["upstream"]: s for s in kube.list("Service", "kube-system",
                                                                                 label_selector=f"{OWNER}={seed.ns}")}
    assert [c["upstream"] for c in provider["caches"]] == ups
    for cache in provider["caches"]:
        scheme = "http" if cache["upstream"] == ups[2] else "https"
        assert cache["endpoint"] == f"{scheme}://{services[cache['upstream']]['spec']['clusterIP']}:5000"
        assert cache["remoteURL"] == f"https://{cache['upstream']}"
    names = [f"registry-{u.replace('.', '-')}" for u in ups]
    assert seed.owned("StatefulSet") == sorted(names)
    assert len([s for s in seed.owned("Secret") if "-config-" in s]) == 3
    assert len([s for s in seed.owned("Secret") if "-tls-" in s]) == 2
    sts = kube.get("StatefulSet", names[0], "kube-system")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    # the CA bundle is in the seed namespace, the CA's key never leaves it
    bundle = kube.get("Secret", "ca-extension-registry-cache-bundle", seed.ns)
    assert set(bundle["data"]) == {"bundle.crt"}
    # what the node agent reads: the registry entries and the same bundle
    [node_config] = kube.list("ConfigMap", "kube-system", label_selector=f"{OWNER}={seed.ns}")
    entries = yaml.safe_load(node_config["data"]["registries.yaml"])["registries"]
    assert [(e["upstream"], e["hosts"][0]["url"]) for e in entries] == [
        (c["upstream"], c["endpoint"]) for c in provider["caches"]]
    assert node_config["data"]["ca-bundle.pem"] == base64.b64decode(bundle["data"]["bundle.crt"]).decode()


def test_add_and_remove_a_cache(kube, operator):
    seed = Seed(kube, uniq("addrm"))
    a, b = f"a.{seed.name}.example", f"b.{seed.name}.example"
    seed.create({"upstream": a})
    seed.wait_done("Create", operator.log)
    seed.set_caches({"upstream": a}, {"upstream": b})
    ext = seed.wait_done("Reconcile", operator.log)
    assert [c["upstream"] for c in ext["status"]["providerStatus"]["caches"]] == [a, b]
    assert len(seed.owned("StatefulSet")) == 2
    seed.set_caches({"upstream": b})
    ext = seed.wait_done("Reconcile", operator.log)
    ext = wait_for("cache a removed", lambda: (e := seed.ext())["status"]["observedGeneration"] == 3 and e)
    assert [c["upstream"] for c in ext["status"]["providerStatus"]["caches"]] == [b]
    assert seed.owned("StatefulSet") == [f"registry-{b.replace('.', '-')}"]
    assert not [s for s in seed.owned("Secret") if s.startswith(f"registry-{a.replace('.', '-')}")]
    assert [s["metadata"]["annotations"]["upstream"] for s in kube.list(
        "Service", "kube-system", label_selector=f"{OWNER}={seed.ns}")] == [b]


def test_tls_off_and_on(kube, operator):
    seed = Seed(kube, uniq("tls"))
    up = f"x.{seed.name}.example"
    name = f"registry-{up.replace('.', '-')}"
    seed.create({"upstream": up})
    seed.wait_done("Create", operator.log)
    assert [s for s in seed.owned("Secret") if s.startswith(f"{name}-tls-")]
    seed.set_caches({"upstream": up, "http": {"tls": False}})
    ext = wait_for("TLS off", lambda: (e := seed.ext())["status"].get("observedGeneration") == 2
                   and e["status"]["lastOperation"]["state"] == "Succeeded" and e)
    assert ext["status"]["providerStatus"]["caches"][0]["endpoint"].startswith("http://")
    assert "caSecretName" not in ext["status"]["providerStatus"]
    assert not [s for s in seed.owned("Secret") if s.startswith(f"{name}-tls-")]
    assert "tls" not in config_yml(kube, next(s for s in seed.owned("Secret") if "-config-" in s))["http"]
    assert kube.get("Service", name, "kube-system")["metadata"]["annotations"]["scheme"] == "http"
    seed.set_caches({"upstream": up, "http": {"tls": True}})
    ext = wait_for("TLS on", lambda: (e := seed.ext())["status"].get("observedGeneration") == 3
                   and e["status"]["lastOperation"]["state"] == "Succeeded" and e)
    assert ext["status"]["providerStatus"]["caches"][0]["endpoint"].startswith("https://")
    volumes = kube.get("StatefulSet", name, "kube-system")["spec"]["template"]["spec"]["volumes"]
    assert {v["name"] for v in volumes} == {"config-volume", "certs-volume"}


def test_swap_credentials_by_reference(kube, operator):
    seed = Seed(kube, uniq("creds"))
    up = f"quay.{seed.name}.example"
    name = f"registry-{up.replace('.', '-')}"
    seed.add_credentials("quay", "quay-v1", "robot+v1", "password-one")
    seed.create({"upstream": up, "secretReferenceName": "quay"})
    seed.wait_done("Create", operator.log)
    [config_v1] = [s for s in seed.owned("Secret") if "-config-" in s]
    assert upstream_credentials(kube, config_v1)["Username"] == "robot+v1"
    # gardenlet's part of a rotation: copy the new Secret, point spec.resources at it, annotate
    seed.add_credentials("quay", "quay-v2", "robot+v2", "password-two")
    seed.annotate("reconcile")
    wait_for("the new config Secret", lambda: [s for s in seed.owned("Secret") if "-config-" in s] != [config_v1],
             log=operator.log)
    seed.wait_done("Reconcile", operator.log)
    [config_v2] = [s for s in seed.owned("Secret") if "-config-" in s]
    assert config_yml(kube, config_v2)["proxy"] == {"remoteurl": f"https://{up}", "ttl": "168h0m0s",
                                                     "exec": {"command": "/etc/distribution/credential-helper"}}
    assert upstream_credentials(kube, config_v2) == {"Username": "robot+v2", "Secret": "password-two"}
    assert kube.get("Secret", config_v1, "kube-system") is None
    volumes = kube.get("StatefulSet", name, "kube-system")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "config-volume")["secret"]["secretName"] == config_v2
    assert "password-one" not in operator.log() and "password-two" not in operator.log()


def test_reconcile_annotation_and_status_only_updates(kube, operator):
    seed = Seed(kube, uniq("annot"))
    seed.create({"upstream": f"a.{seed.name}.example"})
    first = seed.wait_done("Create", operator.log)["status"]["lastOperation"]["lastUpdateTime"]
    # a status-only change is no reason to reconcile
    kube.patch("Extension", "registry-cache", {"status": {"conditions": [{
        "type": "Test", "status": "True", "reason": "Test", "message": "status only",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "lastUpdateTime": "2026-01-01T00:00:00Z"}]}},
               seed.ns, subresource="status")
    import time
    time.sleep(2)
    assert seed.ext()["status"]["lastOperation"]["type"] == "Create"
    time.sleep(1)  # lastUpdateTime has second resolution
    seed.annotate("reconcile")
    ext = seed.wait_done("Reconcile", operator.log)
    assert "gardener.cloud/operation" not in (ext["metadata"].get("annotations") or {})
    assert ext["status"]["lastOperation"]["lastUpdateTime"] > first


def test_hibernation(kube, operator):
    seed = Seed(kube, uniq("hib"))
    a, b = f"a.{seed.name}.example", f"b.{seed.name}.example"
    seed.create({"upstream": a})
    seed.wait_done("Create", operator.log)
    seed.hibernated = True
    seed.apply_cluster()
    seed.set_caches({"upstream": a}, {"upstream": b})
    ext = seed.wait_done("Reconcile", operator.log)
    assert ext["status"]["lastOperation"]["state"] == "Succeeded"
    assert "hibernated" in ext["status"]["lastOperation"]["description"]
    assert len(seed.owned("StatefulSet")) == 1  # nothing delivered while hibernated
    seed.hibernated = False
    seed.apply_cluster()
    seed.annotate("reconcile")
    wait_for("both caches after waking up", lambda: len(seed.owned("StatefulSet")) == 2, log=operator.log)


def test_delete_leaves_nothing(kube, operator):
    seed = Seed(kube, uniq("del"))
    seed.add_credentials("c", "c-v1", "u", "p")
    seed.create({"upstream": f"a.{seed.name}.example", "secretReferenceName": "c", "highAvailability": {"enabled": True}},
                {"upstream": f"b.{seed.name}.example"})
    seed.wait_done("Create", operator.log)
    assert seed.owned("PodDisruptionBudget")
    kube.delete("Extension", "registry-cache", seed.ns)
    wait_for("the Extension to be gone", lambda: seed.ext() is None, log=operator.log)
    for kind in ("StatefulSet", "Secret", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert seed.owned(kind) == [], kind
    assert kube.list("Secret", seed.ns, label_selector="registry-cache.gardener.cloud/secret") == []


def test_migrate_then_restore(kube, operator):
    seed = Seed(kube, uniq("mig"))
    seed.create({"upstream": f"a.{seed.name}.example"})
    seed.wait_done("Create", operator.log)
    seed.annotate("migrate")
    ext = wait_for("Migrate succeeded", lambda: (e := seed.ext())["status"]["lastOperation"]["type"] == "Migrate"
                   and e["status"]["lastOperation"]["state"] == "Succeeded" and e, log=operator.log)
    assert FINALIZER not in (ext["metadata"].get("finalizers") or [])
    assert len(seed.owned("StatefulSet")) == 1  # the caches keep running in the shoot
    seed.annotate("restore")
    ext = seed.wait_done("Restore", operator.log)
    assert ext["status"]["lastOperation"]["state"] == "Succeeded"
    assert FINALIZER in ext["metadata"]["finalizers"]
    assert len(seed.owned("StatefulSet")) == 1


def test_broken_provider_config_reports_and_recovers(kube, operator):
    seed = Seed(kube, uniq("broken"))
    up = f"a.{seed.name}.example"
    seed.create({"upstream": "https://" + up, "volume": {"size": "0"}})
    ext = wait_for("Error", lambda: (e := seed.ext()).get("status", {}).get("lastOperation", {}).get("state") == "Error"
                   and e, log=operator.log)
    error = ext["status"]["lastError"]
    assert "spec.providerConfig.caches[0].upstream" in error["description"]
    assert "spec.providerConfig.caches[0].volume.size" in error["description"]
    assert error["codes"] == ["ERR_CONFIGURATION_PROBLEM"]
    assert ext["status"]["lastOperation"]["progress"] == 50
    assert ext["status"]["observedGeneration"] == ext["metadata"]["generation"]
    seed.set_caches({"upstream": up})
    ext = wait_for("recovered", lambda: (e := seed.ext())["status"]["lastOperation"]["state"] == "Succeeded" and e,
                   log=operator.log)
    assert ext["status"].get("lastError") is None
    assert len(seed.owned("StatefulSet")) == 1


def test_missing_cluster_and_missing_secret_are_retried(kube, operator):
    seed = Seed(kube, uniq("missing"))
    seed.resources = [{"name": "c", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": "c-v1"}}]
    seed.create({"upstream": f"a.{seed.name}.example", "secretReferenceName": "c"}, cluster=False)
    ext = wait_for("Error", lambda: (e := seed.ext()).get("status", {}).get("lastError") and e, log=operator.log)
    assert f"Cluster {seed.ns} not found" in ext["status"]["lastError"]["description"]
    seed.apply_cluster()
    ext = wait_for("the Secret error", lambda: "ref-c-v1" in ((e := seed.ext())["status"].get("lastError") or {})
                   .get("description", "") and e, timeout=40, log=operator.log)
    assert "spec.providerConfig.caches[0].secretReferenceName" in ext["status"]["lastError"]["description"]
    seed.add_credentials("c", "c-v1", "user", "pass")
    wait_for("retried to success", lambda: seed.state() == "Succeeded", timeout=60, log=operator.log)


def test_every_credential_format_renders_the_same_proxy_credentials(kube, operator):
    import json
    seed = Seed(kube, uniq("formats"))
    user, password = "org+robot", "p@ss: {w0rd} #1"
    ups = {fmt: f"{fmt}.{seed.name}.example" for fmt in ("opaque", "dockerconfigjson", "dockercfg", "kep")}
    b64 = lambda text: base64.b64encode(text.encode()).decode()
    auth = b64(f"{user}:{password}")
    secrets = {
        "opaque": ("Opaque", {"username": b64(user), "password": b64(password)}),
        "dockerconfigjson": ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b64(json.dumps(
            {"auths": {f"https://{ups['dockerconfigjson']}": {"auth": auth}}}))}),
        "dockercfg": ("kubernetes.io/dockercfg", {".dockercfg": b64(json.dumps(
            {ups["dockercfg"]: {"username": user, "password": password, "email": "x@example.com"}}))}),
        "kep": ("Opaque", {"serverAddress": b64(ups["kep"]), "username": b64(user), "password": b64(password)}),
    }
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": seed.ns}})
    for fmt, (type_, data) in secrets.items():
        kube.apply({"apiVersion": "v1", "kind": "Secret", "type": type_, "data": data,
                    "metadata": {"name": f"ref-{fmt}-v1", "namespace": seed.ns}})
        seed.resources.append({"name": fmt, "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": f"{fmt}-v1"}})
    seed.create(*[{"upstream": ups[fmt], "secretReferenceName": fmt} for fmt in secrets])
    ext = seed.wait_done("Create", operator.log)
    assert ext["status"]["lastOperation"]["state"] == "Succeeded", ext["status"].get("lastError")
    configs = [s for s in seed.owned("Secret") if "-config-" in s]
    assert len(configs) == 4
    for name in configs:
        assert upstream_credentials(kube, name) == {"Username": user, "Secret": password}, name
    assert password not in operator.log()


def test_two_shoots_on_one_cluster_never_take_over_each_others_caches(kube, operator):
    first, second = Seed(kube, uniq("owner-a")), Seed(kube, uniq("owner-b"))
    shared = f"shared.{first.name}.example"
    first.create({"upstream": shared})
    first.wait_done("Create", operator.log)
    second.create({"upstream": shared})
    ext = wait_for("the conflict", lambda: ((e := second.ext()).get("status") or {}).get("lastError") and e,
                   log=operator.log)
    name = f"registry-{shared.replace('.', '-')}"
    assert f"Service kube-system/{name} (of {first.ns})" in ext["status"]["lastError"]["description"]
    assert ext["status"]["lastError"]["codes"] == ["ERR_CONFIGURATION_PROBLEM"]
    assert kube.get("Service", name, "kube-system")["metadata"]["labels"][OWNER] == first.ns  # untouched
    second.set_caches({"upstream": shared, "serviceNameSuffix": "other"})  # the Service name is free now,
    ext = wait_for("still refused", lambda: (e := second.ext())["status"].get("observedGeneration") == 2 and e)
    assert f"StatefulSet kube-system/{name} (of {first.ns})" in ext["status"]["lastError"]["description"]


def test_update_rules_are_enforced_from_what_was_delivered(kube, operator):
    """Under the Gardener chart (--webhooks seed) no Shoot webhook of ours checks updates: the volume size
    change ended in the API server's StatefulSet message, and GC turned on again after ttl 0s was applied
    silently. The actuator checks against the objects it delivered, in Gardener's words."""
    seed = Seed(kube, uniq("rules"))
    a, b = f"a.{seed.name}.example", f"b.{seed.name}.example"
    seed.create({"upstream": a, "volume": {"size": "10Gi"}}, {"upstream": b, "garbageCollection": {"ttl": "0s"}})
    seed.wait_done("Create", operator.log)
    seed.set_caches({"upstream": a, "volume": {"size": "20Gi", "storageClassName": "fast"}},
                    {"upstream": b, "garbageCollection": {"ttl": "1h"}})
    ext = seed.wait_done("Reconcile", operator.log)
    error = ext["status"]["lastError"]
    assert error["codes"] == ["ERR_CONFIGURATION_PROBLEM"]
    assert error["description"] == (
        'spec.providerConfig.caches[0].volume.size: Invalid value: "20Gi": field is immutable; '
        'spec.providerConfig.caches[0].volume.storageClassName: Invalid value: "fast": field is immutable; '
        'spec.providerConfig.caches[1].garbageCollection.ttl: Invalid value: "1h0m0s": garbage collection cannot '
        'be enabled (ttl > 0) once it is disabled (ttl = 0)')
    config = next(s for s in seed.owned("Secret") if s.startswith(f"registry-{b.replace('.', '-')}-config-"))
    assert config_yml(kube, config)["proxy"]["ttl"] == "0s"  # nothing applied
    # the same values as delivered (written differently) and a new cache are fine
    seed.set_caches({"upstream": a, "volume": {"size": "10240Mi"}}, {"upstream": b, "garbageCollection": {"ttl": "0"}},
                    {"upstream": f"c.{seed.name}.example", "volume": {"size": "5Gi"}})
    ext = seed.wait_done("Reconcile", operator.log)
    assert ext["status"]["lastOperation"]["state"] == "Succeeded", ext["status"].get("lastError")
