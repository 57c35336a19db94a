"""Gardener's registry-cache e2e scenarios (its ``test/e2e/cache/*.go``), once, for any cluster.

A test module imports the tests from here and provides the fixture ``cluster``: an :class:`E2ECluster` for
its kind of cluster (``test_node.py``: the one-node cluster from processes on this machine; ``test_kind.py``:
kind, where Docker exists). Every scenario drives Shoots in ``garden-local`` as a user does (kubectl against
the standalone controller) and checks what really happened:

- the Extension reconciles (Succeeded for the Shoot's generation, providerStatus with these upstreams);
- the cache Pods are Ready, their volume claims bound;
- the node has ``<certs.d>/<upstream>/hosts.toml`` exactly as the controller means it (and the CA bundle
  for TLS caches), and loses it when the cache goes;
- a Pod with a fresh image of the upstream runs; the image's blobs are in the cache volume's storage; the
  upstream's request log shows the cache fetched them and the node did not (no fallback);
- nothing tried to leave the machine (where the cluster can tell).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

import pytest
import yaml

from api import names
from api.v1alpha3 import RegistryStatus
from extension.nodeagent import ca_certificates
from extension.render import hosts_toml_for_status

PROJECT_NAMESPACE = "garden-local"
WORKLOAD_NAMESPACE = "registry-cache-e2e"
API_VERSION = "registry.extensions.gardener.cloud/v1alpha3"
OWNER = "registry-cache.gardener.cloud/owner"
OPERATION = "gardener.cloud/operation"
EXTENSION = "extensions.extensions.gardener.cloud"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 300, interval: float = 1,
             details: Callable[[], str] | None = None) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = details() if details else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}\n{extra}")


# --- what a cluster offers the scenarios -----------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    ref: str
    repository: str
    digest: str
    blobs: frozenset[str]


class Upstream(Protocol):
    host: str        # the cache's `upstream`
    remote_url: str  # the cache's `remoteURL`

    def push(self, repository: str, tag: str) -> Image: ...
    def mark(self) -> int: ...
    def fetched(self, since: int) -> list[Any]: ...  # requests with .path, .status, .agent
    def users_of_blob_fetches(self, since: int) -> set[str]: ...  # who the cache authenticated as
    def revoke_all_but(self, users: dict[str, str]) -> None: ...


class E2ECluster:
    """kubectl against the cluster; subclasses add the nodes, upstreams and storage."""

    name = "cluster"
    certs_dir = "/etc/containerd/certs.d"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        raise NotImplementedError

    # generic helpers
    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        ns = ["-n", namespace] if namespace else []
        done = self.kubectl("get", resource, name, *ns, "-o", "json", "--ignore-not-found", check=False)
        if done.returncode != 0:
            raise AssertionError(f"kubectl get {resource} {name}: {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    def select(self, resource: str, namespace: str, selector: str) -> list[dict]:
        return json.loads(self.kubectl("get", resource, "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]

    def apply(self, *objs: dict) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "e2e", "-f", "-",
                     input=yaml.safe_dump_all(objs, sort_keys=False))

    def patch(self, resource: str, name: str, patch: dict, namespace: str | None = None, check: bool = True,
              kind: str = "merge") -> subprocess.CompletedProcess:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("patch", resource, name, *ns, "--type", kind, "-p", json.dumps(patch), check=check)

    def delete(self, resource: str, name: str, namespace: str | None = None, wait: bool = True) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("delete", resource, name, *ns, "--ignore-not-found", f"--wait={str(wait).lower()}",
                     "--timeout=300s", timeout=330)

    # what subclasses provide
    def nodes(self) -> list[str]:
        raise NotImplementedError

    def node_file(self, node: str, path: str) -> str | None:
        raise NotImplementedError

    def upstream(self, role: str) -> Upstream:
        """``public`` (anonymous), ``second`` (anonymous) or ``private`` (needs :meth:`credentials`)."""
        raise NotImplementedError

    def credentials(self) -> tuple[str, str]:
        """Valid credentials of the private upstream (the ones it knows now)."""
        raise NotImplementedError

    def new_credentials(self) -> tuple[str, str]:
        """Make the private upstream also accept a new user; returns it."""
        raise NotImplementedError

    def revoke_credentials(self, keep: tuple[str, str]) -> None:
        raise NotImplementedError

    def cache_holds(self, upstream: str, image: Image) -> bool:
        raise NotImplementedError

    def egress(self) -> Any | None:
        """What tried to leave the machine (``None``: this cluster cannot tell)."""
        return None

    def containerd_log(self) -> str | None:
        return None

    def logs(self) -> str:
        return ""

    def timings(self) -> dict[str, float]:
        return {}


# --- Shoots, as a user writes them ------------------------------------------------------------------------

def seed_namespace(shoot: str) -> str:
    return f"shoot--local--{shoot}"


def shoot_manifest(name: str, caches: list[dict] | None, resources: list[dict] | None = None,
                   hibernated: bool = False) -> dict:
    spec: dict[str, Any] = {
        "cloudProfile": {"name": "local"}, "region": "local",
        "kubernetes": {"version": "1.34.4"},
        "provider": {"type": "local", "workers": [{"name": "local", "machine": {"type": "local"},
                                                   "cri": {"name": "containerd"}, "minimum": 1, "maximum": 1}]},
        "hibernation": {"enabled": hibernated},
        "extensions": [],
        "resources": resources or [],
    }
    if caches is not None:
        spec["extensions"] = [{"type": "registry-cache", "providerConfig": {
            "apiVersion": API_VERSION, "kind": "RegistryConfig", "caches": caches}}]
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": PROJECT_NAMESPACE}, "spec": spec}


def cache(up: Upstream, **extra: Any) -> dict:
    return {"upstream": up.host, "remoteURL": up.remote_url, "volume": {"size": "1Gi"}, **extra}


def wait_reconciled(c: E2ECluster, shoot: str, upstreams: list[str], timeout: float = 300,
                    extra: Callable[[dict], bool] = lambda ext: True) -> dict:
    ns = seed_namespace(shoot)

    def done() -> dict | None:
        ext = c.get(EXTENSION, "registry-cache", ns)
        if ext is None:
            return None
        status = ext.get("status") or {}
        caches = ((status.get("providerStatus") or {}).get("caches")) or []
        ok = (status.get("lastOperation", {}).get("state") == "Succeeded"
              and status.get("observedGeneration") == ext["metadata"]["generation"]
              and OPERATION not in (ext["metadata"].get("annotations") or {})
              and sorted(x["upstream"] for x in caches) == sorted(upstreams))
        return ext if ok and extra(ext) else None

    return wait_for(f"Extension {ns}/registry-cache to reconcile {upstreams}", done, timeout=timeout,
                    details=c.logs)


def wait_caches_ready(c: E2ECluster, upstreams: list[str], timeout: float = 240) -> None:
    """Each cache's StatefulSet has its Pod Ready (so its volume claim is bound and the volume writable)."""
    for upstream in upstreams:
        name = names.resource_name(upstream)

        def ready() -> bool:
            sts = c.get("statefulset", name, "kube-system")
            status = (sts or {}).get("status") or {}
            return bool(sts) and status.get("readyReplicas") == 1 and \
                status.get("updatedReplicas") == 1 and status.get("currentRevision") == status.get("updateRevision")

        wait_for(f"cache {name} Ready", ready, timeout=timeout,
                 details=lambda: c.kubectl("describe", "pod", "-n", "kube-system", f"{name}-0", check=False).stdout
                 + c.logs())
        pvc = c.get("pvc", f"cache-volume-{name}-0", "kube-system")
        assert pvc and pvc["status"].get("phase") == "Bound", pvc


def wait_applied(c: E2ECluster, ext: dict, timeout: float = 120) -> None:
    """Every node has each upstream's hosts.toml as the controller means it, and the CA bundle for TLS
    caches (WaitUntilRegistryCacheConfigurationsAreApplied, VerifyHostsTOMLFilesCreatedForAllNodes)."""
    status = RegistryStatus.model_validate(ext["status"]["providerStatus"])
    wanted = hosts_toml_for_status(status, ca_path=f"{c.certs_dir}/ca-bundle.pem")
    bundle = None
    if status.ca_secret_name:
        secret = c.get("secret", status.ca_secret_name, ext["metadata"]["namespace"])
        bundle = base64.b64decode(secret["data"]["bundle.crt"]).decode()
    for node in c.nodes():
        for upstream, text in wanted.items():
            path = f"{c.certs_dir}/{upstream}/hosts.toml"
            wait_for(f"{path} on {node}", lambda: c.node_file(node, path) == text, timeout=timeout,
                     details=lambda: f"on the node: {c.node_file(node, path)!r}\nwanted: {text!r}\n" + c.logs())
        if bundle:
            path = f"{c.certs_dir}/ca-bundle.pem"
            wait_for(f"{path} on {node} with the CA of {ext['metadata']['namespace']}",
                     lambda: all(x in (c.node_file(node, path) or "") for x in ca_certificates(bundle)),
                     timeout=timeout, details=c.logs)


def wait_removed(c: E2ECluster, upstreams: list[str], timeout: float = 120) -> None:
    for node in c.nodes():
        for upstream in upstreams:
            path = f"{c.certs_dir}/{upstream}/hosts.toml"
            wait_for(f"{path} to be removed from {node}", lambda: c.node_file(node, path) is None,
                     timeout=timeout, details=c.logs)


def run_pod(c: E2ECluster, image: str, name: str | None = None, timeout: float = 180) -> str:
    name = name or f"pull-{uuid.uuid4().hex[:6]}"
    c.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": WORKLOAD_NAMESPACE},
             "spec": {"containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent"}],
                      "terminationGracePeriodSeconds": 1}})
    wait_for(f"Pod {name} ({image}) to be Ready", lambda: any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in ((c.get("pod", name, WORKLOAD_NAMESPACE) or {}).get("status") or {}).get("conditions", [])),
        timeout=timeout,
        details=lambda: c.kubectl("describe", "pod", name, "-n", WORKLOAD_NAMESPACE, check=False).stdout)
    return name


def verify_registry_cache(c: E2ECluster, up: Upstream, repository: str) -> Image:
    """VerifyRegistryCache, and more: a Pod with a fresh image of the upstream runs; the cache volume holds
    the image; the upstream served its blobs to the cache and nothing to the node (no fallback)."""
    image = up.push(repository, uuid.uuid4().hex[:8])
    mark = up.mark()
    pod = run_pod(c, image.ref)
    try:
        wait_for(f"{image.ref} in the storage of the cache for {up.host}", lambda: c.cache_holds(up.host, image),
                 timeout=60)
        requests = up.fetched(mark)
        by_cache = {r.path for r in requests if r.status == 200 and r.agent.startswith("Go-http-client/")}
        assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= by_cache, \
            "the cache did not fetch the blobs:\n" + "\n".join(map(str, requests))
        by_node = [r for r in requests if r.agent.startswith("containerd/")]
        assert not by_node, "the node fell back to the upstream:\n" + "\n".join(map(str, by_node))
        assert_no_egress(c)
    finally:
        c.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
    return image


def assert_no_egress(c: E2ECluster) -> None:
    egress = c.egress()
    if egress is not None:
        assert egress.packets == 0 and not egress.connections, str(egress)


def delete_shoot(c: E2ECluster, name: str) -> None:
    c.delete("shoot", name, PROJECT_NAMESPACE, wait=False)  # the bridge's finalizer waits for the cleanup
    wait_for(f"Shoot {name} to be gone", lambda: c.get("shoot", name, PROJECT_NAMESPACE) is None, timeout=300,
             details=c.logs)


def assert_nothing_left(c: E2ECluster, shoot: str, upstreams: list[str]) -> None:
    owned = f"{OWNER}={seed_namespace(shoot)}"
    for resource in ("statefulsets", "services", "secrets", "configmaps", "networkpolicies",
                     "poddisruptionbudgets"):
        assert c.select(resource, "kube-system", owned) == [], f"{resource} of {shoot} left in kube-system"
    for upstream in upstreams:
        name = names.resource_name(upstream)
        wait_for(f"the volume claim of {name} to be gone",
                 lambda: c.get("pvc", f"cache-volume-{name}-0", "kube-system") is None, timeout=120)
        wait_for(f"the Pod of {name} to be gone", lambda: c.get("pod", f"{name}-0", "kube-system") is None,
                 timeout=120)
    wait_for("every volume of the shoot to be released and deleted", lambda: not [
        pv for pv in json.loads(c.kubectl("get", "pv", "-o", "json").stdout)["items"]
        if (pv["spec"].get("claimRef") or {}).get("name", "").startswith("cache-volume-")
        and any(names.resource_name(u) in pv["spec"]["claimRef"]["name"] for u in upstreams)], timeout=120)


@pytest.fixture
def shoots(cluster):
    """Shoots a test made: deleted at the end whatever happened, so that the next scenario starts clean."""
    made: list[str] = []
    yield made
    for name in made:
        try:
            delete_shoot(cluster, name)
        except AssertionError as exc:  # the test's own failure is the one to report
            print(f"cleanup of Shoot {name} failed: {exc}")


# --- the scenarios -----------------------------------------------------------------------------------------

def test_create_enable_add_remove_disable_delete(cluster, shoots):
    """create_enable_add_remove_disable_delete.go"""
    public, second = cluster.upstream("public"), cluster.upstream("second")
    name = "e2e-cache-def"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, None))

    cluster.apply(shoot_manifest(name, [cache(public)]))
    ext = wait_reconciled(cluster, name, [public.host])
    wait_caches_ready(cluster, [public.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, public, "e2e/enable")

    cluster.apply(shoot_manifest(name, [cache(public), cache(second)]))
    ext = wait_reconciled(cluster, name, [public.host, second.host])
    wait_caches_ready(cluster, [public.host, second.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, second, "e2e/add")

    cluster.apply(shoot_manifest(name, [cache(public)]))
    ext = wait_reconciled(cluster, name, [public.host])
    wait_removed(cluster, [second.host])
    wait_applied(cluster, ext)
    assert cluster.get("statefulset", names.resource_name(second.host), "kube-system") is None
    wait_for("the removed cache's volume claim to go",
             lambda: cluster.get("pvc", f"cache-volume-{names.resource_name(second.host)}-0", "kube-system") is None,
             timeout=120)

    cluster.apply(shoot_manifest(name, None))
    wait_for("the Extension to go", lambda: cluster.get(EXTENSION, "registry-cache", seed_namespace(name)) is None,
             details=cluster.logs)
    wait_removed(cluster, [public.host])
    assert_nothing_left(cluster, name, [public.host, second.host])

    delete_shoot(cluster, name)
    shoots.remove(name)


def test_create_disable_tls_enable_tls_delete(cluster, shoots):
    """create_disable_tls_enable_tls_delete.go"""
    up = cluster.upstream("public")
    name = "e2e-cache-tls"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(up, http={"tls": False})]))
    ext = wait_reconciled(cluster, name, [up.host])
    assert ext["status"]["providerStatus"]["caches"][0]["endpoint"].startswith("http://")
    assert "caSecretName" not in ext["status"]["providerStatus"]
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/tls-off")

    cluster.apply(shoot_manifest(name, [cache(up, http={"tls": True})]))
    ext = wait_reconciled(cluster, name, [up.host], extra=lambda e: e["status"]["providerStatus"]["caches"][0]
                          ["endpoint"].startswith("https://"))
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/tls-on")

    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    assert_nothing_left(cluster, name, [up.host])


def test_private_upstream_with_credentials_and_rotation(cluster, shoots):
    """create_enable_for_private_registry_delete.go, then the rotation of Gardener's docs: v2 created, the
    Shoot points at it, the reconcile rolls the cache, v1 deleted and revoked at the upstream; pulls keep
    going through the cache with v2 (the upstream's log names the user)."""
    up = cluster.upstream("private")
    user1, password1 = cluster.credentials()
    name = "e2e-cache-prv"
    shoots.append(name)

    def secret(version: int, user: str, password: str) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                "metadata": {"name": f"{name}-credentials-v{version}", "namespace": PROJECT_NAMESPACE},
                "stringData": {"username": user, "password": password}}

    def resources(version: int) -> list[dict]:
        return [{"name": "private-credentials",
                 "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": f"{name}-credentials-v{version}"}}]

    private_cache = cache(up, secretReferenceName="private-credentials")
    cluster.apply(secret(1, user1, password1))
    cluster.apply(shoot_manifest(name, [private_cache], resources(1)))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    mark = up.mark()
    verify_registry_cache(cluster, up, "e2e/private-v1")
    assert up.users_of_blob_fetches(mark) == {user1}
    # the node has no credentials: without the cache it could not pull at all
    config_secrets = cluster.select("secrets", "kube-system", f"{OWNER}={seed_namespace(name)}")
    assert not [s for s in config_secrets if password1 in json.dumps(s.get("metadata", {}))]

    # rotation
    user2, password2 = cluster.new_credentials()
    cluster.apply(secret(2, user2, password2))
    sts_before = cluster.get("statefulset", names.resource_name(up.host), "kube-system")
    cluster.apply(shoot_manifest(name, [private_cache], resources(2)))
    ext = wait_reconciled(cluster, name, [up.host], extra=lambda e:
                          cluster.get("statefulset", names.resource_name(up.host), "kube-system")["spec"]
                          != sts_before["spec"])
    wait_caches_ready(cluster, [up.host])
    cluster.delete("secret", f"{name}-credentials-v1", PROJECT_NAMESPACE)
    cluster.revoke_credentials(keep=(user2, password2))
    wait_applied(cluster, ext)
    mark = up.mark()
    verify_registry_cache(cluster, up, "e2e/private-v2")
    assert up.users_of_blob_fetches(mark) == {user2}

    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    assert_nothing_left(cluster, name, [up.host])
    cluster.delete("secret", f"{name}-credentials-v2", PROJECT_NAMESPACE)


def test_create_enabled_hibernate_reconcile_delete(cluster, shoots):
    """create_enabled_hibernate_reconcile_delete.go: hibernated, the Extension is left alone (its caches
    stay); gardenlet's reconcile annotation is taken; woken up, the caches serve again."""
    up = cluster.upstream("public")
    name = "e2e-cache-hib"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(up)]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/before-hibernation")

    cluster.apply(shoot_manifest(name, [cache(up)], hibernated=True))
    wait_reconciled(cluster, name, [up.host], extra=lambda e: "hibernated" in e["status"]["lastOperation"]["description"])
    assert cluster.get("statefulset", names.resource_name(up.host), "kube-system") is not None

    cluster.kubectl("annotate", EXTENSION, "registry-cache", "-n", seed_namespace(name), f"{OPERATION}=reconcile",
                    "--overwrite")
    wait_reconciled(cluster, name, [up.host])

    cluster.apply(shoot_manifest(name, [cache(up)], hibernated=False))
    ext = wait_reconciled(cluster, name, [up.host],
                          extra=lambda e: "hibernated" not in e["status"]["lastOperation"]["description"])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/after-wake-up")

    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    assert_nothing_left(cluster, name, [up.host])


def test_create_enabled_force_delete(cluster, shoots):
    """create_enabled_force_delete.go. Without gardenlet, force deletion is what it does to a stuck Shoot:
    the Extension deleted and its finalizer removed without waiting for the controller, then the Shoot's.
    The Shoot is gone at once; what it leaves in the cluster is adopted by a Shoot of the same name and
    removed with its normal deletion."""
    up = cluster.upstream("public")
    name = "e2e-cache-fd"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(up)]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)

    ns = seed_namespace(name)
    cluster.delete("shoot", name, PROJECT_NAMESPACE, wait=False)
    cluster.delete(EXTENSION, "registry-cache", ns, wait=False)
    cluster.patch(EXTENSION, "registry-cache", {"metadata": {"finalizers": None}}, ns, check=False)
    cluster.patch("shoot", name, {"metadata": {"finalizers": None}}, PROJECT_NAMESPACE, check=False)
    wait_for("the force-deleted Shoot to be gone", lambda: cluster.get("shoot", name, PROJECT_NAMESPACE) is None,
             timeout=60)
    wait_for("the Extension to be gone", lambda: cluster.get(EXTENSION, "registry-cache", ns) is None, timeout=60)

    cluster.apply(shoot_manifest(name, [cache(up)]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/after-force-delete")
    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    assert_nothing_left(cluster, name, [up.host])
