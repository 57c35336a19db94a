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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest
import yaml

from api import names
from api.v1alpha3 import RegistryStatus
from extension.component.containerd import hosts_toml_for_status
from extension.component.objects import endpoint
from extension.constants import CONTAINER_NAME, DEFAULT_DIAL_TIMEOUT, DEFAULT_IMAGE, REPLICA_LABEL
from extension.local.registries import parse_access_log
from extension.nodeagent.plan import ca_certificates

from .figures import CLUSTER_FIGURES as FIGURES

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
    cache_image = DEFAULT_IMAGE  # what the controller renders (`run --image`)

    def kubectl_argv(self, *args: str) -> list[str]:
        """kubectl with ``args`` against this cluster."""
        raise NotImplementedError

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(self.kubectl_argv(*args), input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

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

    def stop_upstream(self, up: Upstream) -> None:
        raise NotImplementedError

    def forget_image(self, image: Image) -> None:
        """Remove the image from every node's containerd (its content too), so that the next Pod pulls it."""
        raise NotImplementedError

    def start_upstream(self, up: Upstream) -> None:
        raise NotImplementedError

    def short_lived_upstream(self, validity: float, identities: dict[str, str]) -> Any | None:
        """A registry whose tokens live ``validity`` seconds and the endpoint that hands them out for one of
        ``identities`` (tests/e2e/shortlived.py), reachable from the nodes and the cache Pods; an :class:`Upstream`
        with ``token_endpoint``, ``issued()``, ``requests(since)``, ``set_identities()``, ``logs()``. None where
        this cluster has none."""
        return None

    def plugin_image(self) -> str | None:
        """An image the nodes can pull that holds the tests' credential provider plugin at
        ``/bin/test-credential-provider`` and a ``cp``; None where this cluster has none."""
        return None

    def freeze_cache(self, upstream: str) -> bool:
        """SIGSTOP the cache's registry process (so it is unready but still takes connections)."""
        return False

    def thaw_cache(self, upstream: str) -> None:
        pass

    def reset_egress(self) -> None:
        pass

    def egress(self) -> Any | None:
        """What tried to leave the machine (``None``: this cluster cannot tell)."""
        return None

    def containerd_log(self) -> str | None:
        return None

    def controller_manager_log(self) -> str | None:
        """kube-controller-manager's log (``None``: this cluster cannot tell)."""
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
    """Each cache's StatefulSet has its Pod Ready (so its volume claim is bound and the volume writable), of its
    latest spec: the StatefulSet controller has seen that spec (observedGeneration; before that its status still
    says "rolled" of the previous one, and a pull would meet the cache's Pod being replaced) and rolled it."""
    for upstream in upstreams:
        name = names.resource_name(upstream)

        def ready() -> bool:
            sts = c.get("statefulset", name, "kube-system")
            status = (sts or {}).get("status") or {}
            return bool(sts) and status.get("observedGeneration") == sts["metadata"].get("generation") and \
                status.get("readyReplicas") == 1 and status.get("updatedReplicas") == 1 and \
                status.get("currentRevision") == status.get("updateRevision")

        wait_for(f"cache {name} Ready", ready, timeout=timeout,
                 details=lambda: c.kubectl("describe", "pod", "-n", "kube-system", f"{name}-0", check=False).stdout
                 + c.logs())
        pvc = c.get("pvc", f"cache-volume-{name}-0", "kube-system")
        assert pvc and pvc["status"].get("phase") == "Bound", pvc
        sts = c.get("statefulset", name, "kube-system")
        assert sts and sts["spec"]["template"]["spec"]["containers"][0]["image"] == c.cache_image, sts


def wait_applied(c: E2ECluster, ext: dict, timeout: float = 120) -> None:
    """Every node has each upstream's hosts.toml as the controller means it, and the CA bundle for TLS
    caches (WaitUntilRegistryCacheConfigurationsAreApplied, VerifyHostsTOMLFilesCreatedForAllNodes)."""
    status = RegistryStatus.model_validate(ext["status"]["providerStatus"])
    # as the node agent writes them for the controller's default --dial-timeout (the replicas' Services of a cache
    # with high availability after the cache's own)
    replicas = {}
    for cache in status.caches:
        services = c.select("service", "kube-system", f"{REPLICA_LABEL},app={names.resource_name(cache.upstream)}")
        services.sort(key=lambda s: int(s["metadata"]["labels"][REPLICA_LABEL]))
        if services:
            replicas[cache.upstream] = [endpoint(cache.endpoint.split("://")[0], s["spec"]["clusterIP"])
                                        for s in services]
    wanted = hosts_toml_for_status(status, ca_path=f"{c.certs_dir}/ca-bundle.pem", dial_timeout=DEFAULT_DIAL_TIMEOUT,
                                   replicas=replicas)
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
                 timeout=60, details=lambda: "\n".join(map(str, up.fetched(mark))) + "\n" + c.logs())
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


class DeletionOrder:
    """Watches objects of kube-system (``kubectl get -w``) while a step runs; then says at which
    resourceVersion each was marked for deletion (deletionTimestamp) or deleted. The resourceVersions of one
    API server (etcd's revision) grow with every write, across kinds: their order is the order of the writes.

    ::

        with DeletionOrder(cluster, [("statefulset", "registry-a"), ("pvc", "cache-volume-registry-a-0")]) as w:
            ...  # the step
        w.deleted_at("pvc", "cache-volume-registry-a-0")
    """

    def __init__(self, c: E2ECluster, objects: list[tuple[str, str]]):
        self.c, self.objects = c, objects
        self._procs: dict[tuple[str, str], subprocess.Popen] = {}
        self._out: dict[tuple[str, str], list[str]] = {}

    def __enter__(self) -> DeletionOrder:
        import threading
        for resource, name in self.objects:
            proc = subprocess.Popen(self.c.kubectl_argv(
                "get", resource, "-n", "kube-system", "--field-selector", f"metadata.name={name}", "-w",
                "--output-watch-events", "-o", "json"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            chunks: list[str] = []
            self._procs[(resource, name)], self._out[(resource, name)] = proc, chunks
            threading.Thread(target=lambda p=proc, o=chunks: o.extend(iter(p.stdout.readline, "")),
                             daemon=True).start()
        for key in self._out:  # each watch has listed the object: the step's writes come after
            wait_for(f"the watch of {key[0]} {key[1]}", lambda k=key: self._events(k), timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)  # the last events on their way
        for proc in self._procs.values():
            proc.terminate()
            proc.wait(10)

    def _events(self, key: tuple[str, str]) -> list[dict]:
        text, events, decoder, at = "".join(self._out[key]), [], json.JSONDecoder(), 0
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return events
            try:
                event, at = decoder.raw_decode(text, at)
            except ValueError:
                return events  # the rest is still being written
            events.append(event)

    def deleted_at(self, resource: str, name: str) -> int | None:
        for event in self._events((resource, name)):
            meta = event["object"]["metadata"]
            if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
                return int(meta["resourceVersion"])
        return None


def claims_made(c: E2ECluster, statefulset_uid: str) -> list[str]:
    """What the StatefulSet controller says it did about volume claims for this StatefulSet (its events,
    each message once per time it happened): ``create Claim <claim> Pod <pod> in StatefulSet <sts> success``."""
    events = json.loads(c.kubectl("get", "events", "-n", "kube-system", "--field-selector",
                                  f"involvedObject.uid={statefulset_uid}", "-o", "json").stdout)["items"]
    return [e["message"] for e in events if " Claim " in e.get("message", "")
            for _ in range(e.get("count") or 1)]


def assert_claim_removed_once(c: E2ECluster, statefulset: str, statefulset_uid: str, claim: dict,
                              order: DeletionOrder, kcm_mark: int = 0, settle: float = 15) -> None:
    """The volume claim of a removed cache went after its StatefulSet (``order`` watched both): gone, its volume
    released and deleted, and the StatefulSet controller never made a second claim of the same name (as it may
    when the claim is deleted first: "pvc ... is being deleted", then a new claim and volume for the Pod it
    still starts)."""
    name = claim["metadata"]["name"]
    sts_deleted, claim_deleted = order.deleted_at("statefulset", statefulset), order.deleted_at("pvc", name)
    assert sts_deleted is not None and claim_deleted is not None, (sts_deleted, claim_deleted)
    assert sts_deleted < claim_deleted, \
        f"the claim {name} was deleted (resourceVersion {claim_deleted}) before its StatefulSet ({sts_deleted})"
    wait_for(f"the removed cache's volume claim {name} to go",
             lambda: c.get("pvc", name, "kube-system") is None, timeout=120)
    time.sleep(settle)  # a second claim, if any, comes within seconds of the first one's going
    again = c.get("pvc", name, "kube-system")
    assert again is None, f"a second claim {name} was made (uid {again['metadata']['uid']})"
    made = claims_made(c, statefulset_uid)
    assert len(made) == 1, f"the StatefulSet controller made {len(made)} claims for {statefulset}: {made}"
    volumes = [pv for pv in json.loads(c.kubectl("get", "pv", "-o", "json").stdout)["items"]
               if (pv["spec"].get("claimRef") or {}).get("name") == name]
    wait_for(f"the volume of {name} to be deleted", lambda: not [
        pv for pv in json.loads(c.kubectl("get", "pv", "-o", "json").stdout)["items"]
        if (pv["spec"].get("claimRef") or {}).get("name") == name], timeout=120,
        details=lambda: json.dumps(volumes, indent=1)[:3000])
    log = (c.controller_manager_log() or "")[kcm_mark:]
    deleted_early = [line for line in log.splitlines() if f"pvc {name} is being deleted" in line]
    assert not deleted_early, "the claim was deleted before its StatefulSet:\n" + "\n".join(deleted_early[:5])


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
    """Shoots a test made: deleted at the end whatever happened, so that the next scenario starts clean.
    (Also where a test's count of packets that tried to leave the machine starts.)"""
    cluster.reset_egress()
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

    removed = names.resource_name(second.host)
    sts_uid = cluster.get("statefulset", removed, "kube-system")["metadata"]["uid"]
    claim = cluster.get("pvc", f"cache-volume-{removed}-0", "kube-system")
    kcm_mark = len(cluster.controller_manager_log() or "")
    with DeletionOrder(cluster, [("statefulset", removed), ("pvc", claim["metadata"]["name"])]) as order:
        cluster.apply(shoot_manifest(name, [cache(public)]))
        ext = wait_reconciled(cluster, name, [public.host])
        wait_for("the removed cache's volume claim to go",
                 lambda: cluster.get("pvc", claim["metadata"]["name"], "kube-system") is None, timeout=120)
    wait_removed(cluster, [second.host])
    wait_applied(cluster, ext)
    assert cluster.get("statefulset", removed, "kube-system") is None
    assert_claim_removed_once(cluster, removed, sts_uid, claim, order, kcm_mark)

    kept = names.resource_name(public.host)
    sts_uid = cluster.get("statefulset", kept, "kube-system")["metadata"]["uid"]
    claim = cluster.get("pvc", f"cache-volume-{kept}-0", "kube-system")
    kcm_mark = len(cluster.controller_manager_log() or "")
    with DeletionOrder(cluster, [("statefulset", kept), ("pvc", claim["metadata"]["name"])]) as order:
        cluster.apply(shoot_manifest(name, None))
        wait_for("the Extension to go", lambda: cluster.get(EXTENSION, "registry-cache", seed_namespace(name))
                 is None, details=cluster.logs)
        wait_for("the cache's volume claim to go",
                 lambda: cluster.get("pvc", claim["metadata"]["name"], "kube-system") is None, timeout=120)
    wait_removed(cluster, [public.host])
    assert_claim_removed_once(cluster, kept, sts_uid, claim, order, kcm_mark)
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


# --- failover, measured -----------------------------------------------------------------------------------

def _seconds(text: str) -> float:
    """A Go duration as kubelet prints it (``523ms``, ``1.5s``, ``1m2.3s``) in seconds."""
    import re
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)(ms|µs|us|ns|h|m|s)", text):
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[unit]
    return total


def pull_seconds(c: E2ECluster, pod: str) -> float:
    """How long the kubelet says the Pod's image pull took (its ``Pulled`` event)."""
    import re

    def event() -> str | None:
        events = json.loads(c.kubectl("get", "events", "-n", WORKLOAD_NAMESPACE, "--field-selector",
                                      f"involvedObject.name={pod},reason=Pulled", "-o", "json").stdout)["items"]
        for e in events:
            m = re.search(r"Successfully pulled image \S+ in (\S+)", e.get("message", ""))
            if m:
                return m.group(1)
        return None

    return _seconds(wait_for(f"the Pulled event of {pod}", event, timeout=30))


def timed_pull(c: E2ECluster, up: Upstream, repository: str, timeout: float = 300) -> tuple[float, list[Any], str]:
    """Run a Pod with a fresh image; returns the pull time, the upstream's requests meanwhile and the Pod."""
    image = up.push(repository, uuid.uuid4().hex[:8])
    mark = up.mark()
    pod = run_pod(c, image.ref, timeout=timeout)
    return pull_seconds(c, pod), up.fetched(mark), pod


def test_failover_when_the_cache_is_gone_or_unready(cluster, shoots):
    """A Pod that needs a new image still starts when its cache is deleted, and when it is unready (its
    process frozen: it accepts connections and answers nothing): containerd falls back to the upstream.
    Prints the pull times with the cache and in both failures."""
    up, uncached = cluster.upstream("public"), cluster.upstream("second")
    # the baseline: an upstream no cache is configured for (containerd goes to it directly)
    direct, _, pod = timed_pull(cluster, uncached, "e2e/failover-direct")
    cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
    name = "e2e-cache-fo"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(up)]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    sts = names.resource_name(up.host)

    with_cache, requests, pod = timed_pull(cluster, up, "e2e/failover-cached")
    assert not [r for r in requests if r.agent.startswith("containerd/")], "fell back with the cache up"
    cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)

    # 1. the cache Pod deleted: its endpoint goes at once, containerd is refused and goes to the upstream
    cluster.kubectl("delete", "pod", "-n", "kube-system", f"{sts}-0", "--wait=false", "--grace-period=0",
                    "--force")
    deleted, requests, pod = timed_pull(cluster, up, "e2e/failover-deleted")
    via = "upstream" if [r for r in requests if r.agent.startswith("containerd/")] else "cache (already back)"
    cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
    wait_caches_ready(cluster, [up.host])

    # 2. the cache unready: frozen, so connections hang until containerd gives up on them
    if not cluster.freeze_cache(up.host):
        pytest.skip(f"{cluster.name}: cannot freeze a cache process here")
    try:
        unready, requests, pod = timed_pull(cluster, up, "e2e/failover-frozen", timeout=600)
        fell_back = [r for r in requests if r.agent.startswith("containerd/") and "/blobs/" in r.path]
        assert fell_back, "the frozen cache's Pod started without the node falling back:\n" + \
            "\n".join(map(str, requests))
        cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
    finally:
        cluster.thaw_cache(up.host)
    FIGURES.append(f"{cluster.name}: image pull without a cache {direct:.2f}s; through the cache {with_cache:.2f}s; "
                   f"cache Pod deleted {deleted:.2f}s (via {via}); cache frozen (unready) {unready:.2f}s (fallback to the upstream)")
    print(FIGURES[-1])
    assert_no_egress(cluster)
    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])


def test_delete_with_system_components(cluster, shoots):
    """A system component (a DaemonSet in kube-system) pulls its image through the cache; the Shoot is
    deleted; the component then rolls to a new image of the same upstream. The node must pull it from the
    upstream without ever timing out against the removed cache: containerd's log has no I/O timeout."""
    up = cluster.upstream("public")
    name = "e2e-cache-sys"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(up)]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    endpoint = ext["status"]["providerStatus"]["caches"][0]["endpoint"]

    def daemonset(image: Image) -> dict:
        labels = {"app": "e2e-system-component"}
        return {"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "e2e-system-component", "namespace": "kube-system"},
                "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                    "priorityClassName": "system-node-critical", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": image.ref}]}}}}

    def rolled(image: Image) -> bool:
        ds = cluster.get("daemonset", "e2e-system-component", "kube-system") or {}
        s = ds.get("status") or {}
        every = s.get("desiredNumberScheduled")  # (one per node)
        return bool(every) and s.get("numberReady") == every and s.get("updatedNumberScheduled") == every and \
            ds["spec"]["template"]["spec"]["containers"][0]["image"] == image.ref and \
            s.get("observedGeneration") == ds["metadata"]["generation"]

    first = up.push("e2e/system-component", "v1")
    mark = up.mark()
    cluster.apply(daemonset(first))
    try:
        wait_for("the system component to run", lambda: rolled(first), timeout=180)
        assert not [r for r in up.fetched(mark) if r.agent.startswith("containerd/")]
        seen = set((cluster.containerd_log() or "").splitlines())  # (every node's: what comes later is new)

        delete_shoot(cluster, name)
        shoots.remove(name)
        wait_removed(cluster, [up.host])
        second = up.push("e2e/system-component", "v2")
        mark = up.mark()
        cluster.apply(daemonset(second))
        wait_for("the system component to roll after the caches went", lambda: rolled(second), timeout=180)
        direct = [r for r in up.fetched(mark) if r.agent.startswith("containerd/") and "/blobs/" in r.path]
        assert direct, "the node pulled the new image from nowhere?"
        log = "\n".join(line for line in (cluster.containerd_log() or "").splitlines() if line not in seen)
        if cluster.containerd_log() is not None:
            host = endpoint.split("://", 1)[1]
            timeouts = [line for line in log.splitlines() if "i/o timeout" in line or
                        ("timeout" in line and host in line)]
            assert not timeouts, "containerd timed out against a cache:\n" + "\n".join(timeouts[:10])
    finally:
        cluster.delete("daemonset", "e2e-system-component", "kube-system", wait=False)
    assert_nothing_left(cluster, name, [up.host])
    assert_no_egress(cluster)


def test_ca_rotation(cluster, shoots):
    """The extension's CA is renewed (here: replaced by one with 10% of its life left, so the next reconcile
    renews it as at 80%): the bundle nodes trust holds the old and the new CA, each TLS cache gets a
    certificate of the new CA and rolls, and the node keeps pulling through the cache."""
    import datetime as dt

    from extension.component import certs

    up = cluster.upstream("public")
    name = "e2e-cache-ca"
    shoots.append(name)
    ns = seed_namespace(name)
    cluster.apply(shoot_manifest(name, [cache(up)]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/ca-before")

    ca_secret = cluster.get("secret", "ca-extension-registry-cache", ns)
    now = dt.datetime.now(dt.UTC)
    old = certs.generate_ca(validity=dt.timedelta(days=10), now=now - dt.timedelta(days=9))
    ca_secret["data"] = {"ca.crt": base64.b64encode(old.cert_pem.encode()).decode(),
                         "ca.key": base64.b64encode(old.key_pem.encode()).decode()}
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        ca_secret["metadata"].pop(key, None)
    cluster.kubectl("replace", "-f", "-", input=json.dumps(ca_secret))
    # the cache must first be served by the old CA's certificate (as after 80% of a real CA's life)
    cluster.kubectl("annotate", EXTENSION, "registry-cache", "-n", ns, f"{OPERATION}=reconcile", "--overwrite")
    ext = wait_reconciled(cluster, name, [up.host], extra=lambda e: old.cert_pem not in
                          base64.b64decode(cluster.get("secret", "ca-extension-registry-cache", ns)["data"]["ca.crt"]).decode())
    new_ca = base64.b64decode(cluster.get("secret", "ca-extension-registry-cache", ns)["data"]["ca.crt"]).decode()
    bundle = base64.b64decode(cluster.get("secret", "ca-extension-registry-cache-bundle", ns)["data"]["bundle.crt"]).decode()
    assert new_ca in bundle and old.cert_pem in bundle, "the bundle must hold the new and the old CA"
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/ca-after")

    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    assert_nothing_left(cluster, name, [up.host])


def extension_condition(c: E2ECluster, shoot: str) -> dict | None:
    ext = c.get(EXTENSION, "registry-cache", seed_namespace(shoot)) or {}
    return next((x for x in (ext.get("status") or {}).get("conditions") or []
                 if x.get("type") == "SystemComponentsHealthy"), None)


def cache_served(c: E2ECluster, statefulset: str) -> set[str]:
    """The paths the cache Pod's current container answered GET with 200 (distribution's access log)."""
    log = c.kubectl("logs", "-n", "kube-system", f"{statefulset}-0", "-c", CONTAINER_NAME, check=False).stdout
    return {r.path for r in parse_access_log(log) if r.method == "GET" and r.status == 200}


def restart_cache_pod(c: E2ECluster, statefulset: str) -> str:
    """Delete the cache's Pod (the StatefulSet makes a new one); returns the old Pod's uid."""
    uid = c.get("pod", f"{statefulset}-0", "kube-system")["metadata"]["uid"]
    c.kubectl("delete", "pod", "-n", "kube-system", f"{statefulset}-0", "--wait=true", "--timeout=60s")
    return uid


def wait_new_pod_ready(c: E2ECluster, statefulset: str, old_uid: str, timeout: float = 180) -> None:
    def ready() -> bool:
        pod = c.get("pod", f"{statefulset}-0", "kube-system") or {"metadata": {}}
        return pod["metadata"].get("uid") not in (None, old_uid) and any(
            x.get("type") == "Ready" and x.get("status") == "True"
            for x in (pod.get("status") or {}).get("conditions") or [])

    wait_for(f"a new Pod of {statefulset} to be Ready", ready, timeout=timeout,
             details=lambda: c.kubectl("describe", "pod", "-n", "kube-system", f"{statefulset}-0",
                                       check=False).stdout + c.logs())


def test_cache_while_its_upstream_is_away(cluster, shoots):
    """Caches restarted while their upstreams are away. Each config names the rendered credential helper
    (``proxy.exec``), so distribution asks the upstream nothing at start: both caches, the public one and the
    one with credentials, become Ready, and the node pulls through each an image it holds while its upstream
    is down (nothing to fall back to; the cache's log shows it served every blob); the Extension's condition
    SystemComponentsHealthy stays True; once the upstreams are back both pull new images through."""
    public, private = cluster.upstream("outage"), cluster.upstream("private")
    user, password = cluster.credentials()
    name = "e2e-cache-out"
    shoots.append(name)
    secret = f"{name}-credentials-v1"
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                   "metadata": {"name": secret, "namespace": PROJECT_NAMESPACE},
                   "stringData": {"username": user, "password": password}})
    resources = [{"name": "private-credentials", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret}}]
    upstreams = [public.host, private.host]
    cluster.apply(shoot_manifest(name, [cache(public), cache(private, secretReferenceName="private-credentials")],
                                 resources))
    ext = wait_reconciled(cluster, name, upstreams)
    wait_caches_ready(cluster, upstreams)
    wait_applied(cluster, ext)
    held = {public.host: verify_registry_cache(cluster, public, "e2e/before-outage"),
            private.host: verify_registry_cache(cluster, private, "e2e/before-outage-private")}
    wait_for("condition SystemComponentsHealthy True", lambda: (extension_condition(cluster, name) or {})
             .get("status") == "True", timeout=60, details=cluster.logs)

    cluster.stop_upstream(public)
    cluster.stop_upstream(private)
    try:
        for up in (public, private):
            sts = names.resource_name(up.host)
            wait_new_pod_ready(cluster, sts, restart_cache_pod(cluster, sts))
            cluster.forget_image(held[up.host])
            pod = run_pod(cluster, held[up.host].ref)
            served = cache_served(cluster, sts)
            assert {f"/v2/{held[up.host].repository}/blobs/{d}" for d in held[up.host].blobs} <= served, served
            cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
        # (a round of the health check may have seen a restarted Pod before it was Ready: the next says Ready)
        wait_for("condition SystemComponentsHealthy True with both upstreams away", lambda: (
            extension_condition(cluster, name) or {}).get("status") == "True", timeout=60, details=cluster.logs)
        assert_no_egress(cluster)
    finally:
        cluster.start_upstream(public)
        cluster.start_upstream(private)
    verify_registry_cache(cluster, public, "e2e/after-outage")
    verify_registry_cache(cluster, private, "e2e/after-outage-private")
    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, upstreams)
    cluster.delete("secret", secret, PROJECT_NAMESPACE)


def test_a_cache_that_cannot_start_is_named_on_the_extension(cluster, shoots):
    """The caches' health on the Extension: a cache whose volume claim cannot bind (a StorageClass nobody
    serves) is named by condition SystemComponentsHealthy False with what its Pod shows; the other cache of
    the Shoot is not named."""
    public, second = cluster.upstream("public"), cluster.upstream("second")
    name = "e2e-cache-health"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(public), cache(second, volume={"size": "1Gi",
                                                                            "storageClassName": "nobody-serves"})]))
    wait_reconciled(cluster, name, [public.host, second.host])
    wait_caches_ready(cluster, [public.host])
    good, bad = names.resource_name(public.host), names.resource_name(second.host)
    cond = wait_for("the Extension to name the cache that cannot start", lambda: (
        (x := extension_condition(cluster, name)) and x.get("status") == "False" and bad in x["message"]
        and good not in x["message"] and x), timeout=120, details=cluster.logs)  # (the good one Ready by now)
    assert cond["reason"] == "CachesNotReady", cond
    assert f"{bad} has 0/1 ready ({bad}-0: Pending" in cond["message"], cond
    print(f"condition with a cache that cannot start: {cond['message']}")
    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [public.host, second.host])


# --- short-lived upstream credentials: a kubelet credential provider plugin per cache ----------------------------

PLUGIN_VALIDITY = 60.0  # how long a token of the short-lived-token upstream lives (tests/e2e/shortlived.py)
PLUGIN_RUN_SECONDS = 300.0  # the node pulls fresh images through the plugin cache this long
PLUGIN_EXPIRIES = 4  # at least this many tokens the cache used expire meanwhile
PLUGIN_REFERENCE = "plugin-credentials"


@dataclass
class Pull:
    """One fresh image the node pulled for a Pod: when, how long the kubelet says the pull took, and why it
    failed (a Pod not Ready in time, or a ``Failed`` pull event before it was)."""

    started: float
    pod: str
    seconds: float | None = None
    failed: str | None = None


def pull_fresh(c: E2ECluster, up: Upstream, repository: str, timeout: float = 180) -> Pull:
    image = up.push(repository, uuid.uuid4().hex[:10])
    pull = Pull(time.time(), f"pull-{uuid.uuid4().hex[:8]}")
    try:
        run_pod(c, image.ref, name=pull.pod, timeout=timeout)
        pull.seconds = pull_seconds(c, pull.pod)
    except AssertionError as exc:
        pull.failed = str(exc).splitlines()[0][:300]
    events = json.loads(c.kubectl("get", "events", "-n", WORKLOAD_NAMESPACE, "--field-selector",
                                  f"involvedObject.name={pull.pod},reason=Failed", "-o", "json").stdout)["items"]
    if events and pull.failed is None:
        pull.failed = "; ".join(e.get("message", "")[:200] for e in events)
    c.delete("pod", pull.pod, WORKLOAD_NAMESPACE, wait=False)
    return pull


class PullLoad:
    """Pulls fresh images through a cache, one Pod after the other, in a thread, until :meth:`stop`."""

    def __init__(self, c: E2ECluster, up: Upstream, repository: str):
        import threading
        self.c, self.up, self.repository = c, up, repository
        self.pulls: list[Pull] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pull-load")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pulls.append(pull_fresh(self.c, self.up, self.repository))
            except Exception as exc:  # a push or kubectl failure ends the load: the test reports it
                self.errors.append(f"{type(exc).__name__}: {exc}"[:500])
                return

    def __enter__(self) -> PullLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(300)


def cache_pods(c: E2ECluster, upstream: str) -> dict[str, tuple[str, int]]:
    """The cache's Pods: name -> (uid, restarts of its containers, the init container's included)."""
    out = {}
    for pod in c.select("pods", "kube-system", f"upstream-host={names.upstream_label_value(upstream)}"):
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        statuses += (pod.get("status") or {}).get("initContainerStatuses") or []
        out[pod["metadata"]["name"]] = (pod["metadata"]["uid"], sum(s.get("restartCount", 0) for s in statuses))
    return out


def upstream_condition(c: E2ECluster, shoot: str, upstream: str) -> dict | None:
    ext = c.get(EXTENSION, "registry-cache", seed_namespace(shoot)) or {}
    return next((x for x in (ext.get("status") or {}).get("conditions") or []
                 if x.get("type") == f"UpstreamCredentialsValid-{upstream}"), None)


def wait_rolled(c: E2ECluster, upstream: str, replicas: int, timeout: float = 300) -> dict:
    """The cache's StatefulSet has its latest spec rolled out to ``replicas`` Ready Pods."""
    name = names.resource_name(upstream)

    def rolled() -> dict | None:
        sts = c.get("statefulset", name, "kube-system")
        s = (sts or {}).get("status") or {}
        ok = bool(sts) and s.get("observedGeneration") == sts["metadata"].get("generation") and \
            s.get("readyReplicas") == replicas and s.get("updatedReplicas") == replicas and \
            s.get("currentRevision") == s.get("updateRevision")
        return sts if ok else None

    return wait_for(f"cache {name} rolled out to {replicas} Ready Pods", rolled, timeout=timeout,
                    details=lambda: c.kubectl("describe", "pods", "-n", "kube-system", "-l",
                                              f"upstream-host={names.upstream_label_value(upstream)}",
                                              check=False).stdout[-4000:] + c.logs())


def _plugin_cluster(c: E2ECluster, identities: dict[str, str]) -> tuple[Any, str]:
    up = c.short_lived_upstream(PLUGIN_VALIDITY, identities)
    image = c.plugin_image()
    if up is None or image is None:
        pytest.skip(f"{c.name}: no short-lived-token upstream and plugin image here (the one-node cluster has them)")
    return up, image


def _plugin_secret(name: str, up: Any, image: str, identity: tuple[str, str]) -> dict:
    from .shortlived import provider_secret

    secret = provider_secret(name, up.token_endpoint, *identity, image=image)
    secret["metadata"]["namespace"] = PROJECT_NAMESPACE
    return secret


def _resources(secret: str) -> list[dict]:
    return [{"name": PLUGIN_REFERENCE, "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret}}]


def test_short_lived_credentials_from_a_plugin(cluster, shoots):
    """The issue's scenario: a cache whose credentials Secret names the tests' credential provider plugin (its
    image in the cluster's registry), in front of an upstream whose tokens live a minute. For five minutes the node
    pulls fresh images through it, one Pod after the other: at least four tokens the cache used expire meanwhile,
    and no pull fails, the cache Pod is neither restarted nor replaced, and the node never falls back to the
    upstream (it has no credentials for it; the front logs who asked). The Extension says the plugin answers."""
    identity = ("robot-a", uuid.uuid4().hex)
    up, image = _plugin_cluster(cluster, dict([identity]))
    name = "e2e-cache-plugin"
    shoots.append(name)
    secret = _plugin_secret(f"{name}-v1", up, image, identity)
    cluster.apply(secret)
    cluster.apply(shoot_manifest(name, [cache(up, secretReferenceName=PLUGIN_REFERENCE)],
                                 _resources(secret["metadata"]["name"])))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    wait_applied(cluster, ext)
    verify_registry_cache(cluster, up, "e2e/plugin-first")
    pods_before = cache_pods(cluster, up.host)

    started = time.time()
    pulls: list[Pull] = []
    while time.time() - started < PLUGIN_RUN_SECONDS:
        pulls.append(pull_fresh(cluster, up, "e2e/plugin"))
    ended = time.time()

    failed = [p for p in pulls if p.failed]
    longest = max((p.seconds or 0.0) for p in pulls)
    pods_after = cache_pods(cluster, up.host)
    restarts = sum(r for _, r in pods_after.values()) - sum(r for _, r in pods_before.values())
    requests = up.requests(started)
    fallbacks = [r for r in requests if r.agent.startswith("containerd/")]
    by_cache = [r for r in requests if r.agent.startswith("Go-http-client/")]
    refused = [r for r in by_cache if r.status == 401 and not (r.path == "/v2/" and r.refused == "missing")]
    issued = {t["jti"]: t["expiresAt"] for t in up.issued()}
    used = {r.jti for r in by_cache if r.status < 400}
    # the tokens that expired while pulls went on (one that expired during the last pull has no pull after it)
    last_start = max(p.started for p in pulls)
    expired = sorted(issued[j] for j in used if j in issued and issued[j] < last_start)
    replaced = sorted(k for k in set(pods_before) | set(pods_after)
                      if pods_before.get(k, ("",))[0] != pods_after.get(k, ("",))[0])
    FIGURES.append(f"{cluster.name}: plugin cache, tokens valid {PLUGIN_VALIDITY:.0f}s, {ended - started:.0f}s of "
                   f"fresh pulls: {len(pulls)} pulls, {len(failed)} failed, longest pull {longest:.2f}s, cache "
                   f"restarts {restarts}, Pods replaced {len(replaced)}, "
                   f"fallbacks to the upstream {len(fallbacks)}; {len(expired)} tokens the cache used expired, "
                   f"{len(issued)} issued")
    print(FIGURES[-1])
    assert not failed, "pulls failed:\n" + "\n".join(f"{p.pod}: {p.failed}" for p in failed[:5]) + "\n" + up.logs()
    assert pods_after == pods_before, f"the cache Pod restarted or was replaced: {pods_before} -> {pods_after}"
    assert not fallbacks, "the node fell back to the upstream:\n" + "\n".join(map(str, fallbacks[:5]))
    assert not refused, "the upstream refused the cache's token:\n" + "\n".join(map(str, refused[:5]))
    assert len(expired) >= PLUGIN_EXPIRIES, f"only {len(expired)} tokens the cache used expired in the run"
    for expiry in expired:
        assert [p for p in pulls if p.started > expiry and not p.failed], f"no pull after the expiry at {expiry}"
    assert_no_egress(cluster)

    # the Extension: the cache's helper reports the plugin answers (read from its log at a reconcile)
    cluster.kubectl("annotate", EXTENSION, "registry-cache", "-n", seed_namespace(name), f"{OPERATION}=reconcile",
                    "--overwrite")
    cond = wait_for("UpstreamCredentialsValid True from the plugin's reports", lambda: (
        (x := upstream_condition(cluster, name, up.host)) and x.get("status") == "True" and x), timeout=120,
        details=lambda: f"the condition: {upstream_condition(cluster, name, up.host)}\n" + cluster.logs())
    assert cond["reason"] == "CredentialProviderAnswered", cond
    assert identity[1] not in json.dumps(cluster.get(EXTENSION, "registry-cache", seed_namespace(name)))

    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    cluster.delete("secret", secret["metadata"]["name"], PROJECT_NAMESPACE)


def test_swapping_the_plugin_secret_under_load(cluster, shoots):
    """Rotation by reference for a plugin cache, with the node pulling all the while: Secret v2 with a new
    identity, the Shoot's reference pointed at it (the cache rolls: a new config Secret), v1 deleted and its
    identity revoked at the token endpoint; then a token lifetime more of pulls with the new identity alone. Two
    replicas (highAvailability), so that one serves while the other rolls. No pull fails; figures: the longest
    pull, container restarts, fallbacks to the upstream."""
    old, new = ("robot-a", uuid.uuid4().hex), ("robot-b", uuid.uuid4().hex)
    up, image = _plugin_cluster(cluster, dict([old, new]))
    name = "e2e-cache-plugin-swap"
    shoots.append(name)
    v1, v2 = _plugin_secret(f"{name}-v1", up, image, old), _plugin_secret(f"{name}-v2", up, image, new)
    entry = cache(up, secretReferenceName=PLUGIN_REFERENCE, highAvailability={"enabled": True})
    cluster.apply(v1)
    cluster.apply(shoot_manifest(name, [entry], _resources(v1["metadata"]["name"])))
    ext = wait_reconciled(cluster, name, [up.host])
    sts_before = wait_rolled(cluster, up.host, 2)
    wait_applied(cluster, ext)
    restarts_before = sum(r for _, r in cache_pods(cluster, up.host).values())

    started = time.time()
    with PullLoad(cluster, up, "e2e/plugin-swap") as load:
        time.sleep(30)
        cluster.apply(v2)
        swapped_at = time.time()
        cluster.apply(shoot_manifest(name, [entry], _resources(v2["metadata"]["name"])))
        wait_reconciled(cluster, name, [up.host], extra=lambda e: (
            cluster.get("statefulset", names.resource_name(up.host), "kube-system") or {}).get("spec") !=
            sts_before["spec"])
        wait_rolled(cluster, up.host, 2)
        rolled_at = time.time()
        cluster.delete("secret", v1["metadata"]["name"], PROJECT_NAMESPACE)
        up.set_identities(dict([new]))  # the old identity revoked
        time.sleep(PLUGIN_VALIDITY + 30)  # every token of the old identity expired, the new one in use
    ended = time.time()

    failed = [p for p in load.pulls if p.failed]
    longest = max((p.seconds or 0.0) for p in load.pulls) if load.pulls else 0.0
    restarts = sum(r for _, r in cache_pods(cluster, up.host).values()) - restarts_before
    requests = up.requests(started)
    fallbacks = [r for r in requests if r.agent.startswith("containerd/")]
    late = [t for t in up.issued() if t["time"] > rolled_at + 5]
    FIGURES.append(f"{cluster.name}: plugin cache (2 replicas), reference swapped under load: {len(load.pulls)} "
                   f"pulls over {ended - started:.0f}s (roll {rolled_at - swapped_at:.0f}s), {len(failed)} failed, "
                   f"longest pull {longest:.2f}s, container restarts {restarts}, fallbacks to the upstream "
                   f"{len(fallbacks)}")
    print(FIGURES[-1])
    assert not load.errors, load.errors
    assert not failed, "pulls failed:\n" + "\n".join(f"{p.pod}: {p.failed}" for p in failed[:5]) + "\n" + up.logs()
    assert [p for p in load.pulls if p.started > rolled_at + PLUGIN_VALIDITY], "no pulls after the old tokens expired"
    assert late and {t["client"] for t in late} == {new[0]}, late
    assert restarts == 0, f"{restarts} container restarts"

    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
    cluster.delete("secret", v2["metadata"]["name"], PROJECT_NAMESPACE)


def test_switch_from_gardeners_extension_and_back_keeps_every_blob(cluster, shoots):
    """The switch of docs/usage/switching-from-gardener.md, both ways. Gardener's extension (its own rendering,
    hack/go/render, put in as gardener-resource-manager puts it) delivers a Shoot's cache, and the cache fetches an
    image. Then this controller gets the Extension (the Shoot, as the bridge hands it over): it replaces the
    StatefulSet (orphaning its Pod and claim) and rolls the Pod onto the same claim. The claim is the same object
    (UID), the blobs are on its volume, and a node pulls the image by digest with no request for it at the upstream.
    Then back: the Extension migrated (this controller leaves everything), Gardener's objects put in again (the
    StatefulSet merged, its claim templates kept), the same checks. Then restored to this controller and deleted:
    nothing of either is left."""
    from . import gardener

    binary = gardener.render_binary()
    up = cluster.upstream("switch")
    name = "e2e-switch"
    namespace, sts_name = seed_namespace(name), names.resource_name(up.host)
    claim_name = f"cache-volume-{sts_name}-0"
    manifest = shoot_manifest(name, [cache(up, http={"tls": False})])

    # 1. Gardener's extension delivers the cache: its Services first (the certificates and the status name their
    #    cluster IPs; the first rendering is given a placeholder), then the rest
    first = gardener.render(binary, namespace, manifest, {sts_name: "192.0.2.1"})
    services = [o for o in gardener.shoot_objects(first, cluster.cache_image) if o["kind"] == "Service"]
    gardener.deliver(cluster, services)
    cluster_ips = {s["metadata"]["name"]: cluster.get("service", s["metadata"]["name"], "kube-system")["spec"]
                   ["clusterIP"] for s in services}
    answer = gardener.render(binary, namespace, manifest, cluster_ips)
    gardeners = gardener.shoot_objects(answer, cluster.cache_image)
    gardener.deliver(cluster, gardeners)
    endpoint = f"http://{cluster_ips[sts_name]}:5000"
    assert [cache["endpoint"] for cache in answer["status"]["caches"]] == [endpoint], answer["status"]
    wait_caches_ready(cluster, [up.host])
    gardeners_sts = cluster.get("statefulset", sts_name, "kube-system")
    assert OWNER not in (gardeners_sts["metadata"].get("labels") or {}), gardeners_sts["metadata"]

    image = up.push("e2e/switch", uuid.uuid4().hex[:8])
    said = gardener.fetch_through(cluster, endpoint, image.repository, image.digest, image.blobs, WORKLOAD_NAMESPACE,
                                  cluster.cache_image)
    assert "fetched" in said and said.endswith("Succeeded"), said
    wait_for(f"{image.ref} in the storage of Gardener's cache", lambda: cluster.cache_holds(up.host, image),
             timeout=60)
    claim = cluster.get("pvc", claim_name, "kube-system")
    by_digest = f"{up.host}/{image.repository}@{image.digest}"

    def pulled_from_the_cache_alone(step: str) -> None:
        """The claim is the one Gardener's extension made, the blobs are still on its volume, and a node pulls the
        image by digest without a request for it at the upstream."""
        now = cluster.get("pvc", claim_name, "kube-system")
        assert now["metadata"]["uid"] == claim["metadata"]["uid"], f"{step}: the volume claim was made again"
        assert now["spec"]["volumeName"] == claim["spec"]["volumeName"], step
        assert cluster.cache_holds(up.host, image), f"{step}: the blobs are gone from the volume"
        mark = up.mark()
        pod = run_pod(cluster, by_digest)
        cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
        asked = [r for r in up.fetched(mark) if f"/v2/{image.repository}/" in r.path]
        assert not asked, f"{step}: the upstream was asked for the image:\n" + "\n".join(map(str, asked))
        assert_no_egress(cluster)

    # 2. this controller takes the Extension over
    shoots.append(name)
    started = time.monotonic()
    cluster.apply(manifest)
    ext = wait_reconciled(cluster, name, [up.host])
    wait_caches_ready(cluster, [up.host])
    taken_over = time.monotonic() - started
    wait_applied(cluster, ext)
    ours = cluster.get("statefulset", sts_name, "kube-system")
    assert ours["metadata"]["uid"] != gardeners_sts["metadata"]["uid"]
    assert ours["metadata"]["labels"][OWNER] == namespace
    assert [s["endpoint"] for s in ext["status"]["providerStatus"]["caches"]] == [endpoint]  # the same Service
    assert cluster.get("pvc", claim_name, "kube-system")["metadata"]["labels"][OWNER] == namespace
    pulled_from_the_cache_alone("taken over by this controller")

    # 3. and back to Gardener's extension: migrated here, delivered there
    cluster.patch(EXTENSION, "registry-cache", {"metadata": {"annotations": {OPERATION: "migrate"}}}, namespace)

    def migrated() -> bool:
        ext = cluster.get(EXTENSION, "registry-cache", namespace) or {}
        last = (ext.get("status") or {}).get("lastOperation") or {}
        return last.get("type") == "Migrate" and last.get("state") == "Succeeded"
    wait_for("the Extension migrated", migrated, details=cluster.logs)
    started = time.monotonic()
    gardener.deliver(cluster, gardeners)
    wait_caches_ready(cluster, [up.host])
    handed_back = time.monotonic() - started
    back = cluster.get("statefulset", sts_name, "kube-system")
    volumes = {v["name"]: v for v in back["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config-volume"]["secret"]["secretName"] == next(
        o["metadata"]["name"] for o in gardeners if o["kind"] == "Secret" and "-config-" in o["metadata"]["name"])
    cluster.forget_image(Image(by_digest, image.repository, image.digest, image.blobs))
    pulled_from_the_cache_alone("handed back to Gardener's extension")
    FIGURES.append(f"{cluster.name}: switch from Gardener's extension: taken over and rolled in {taken_over:.1f}s, "
                   f"handed back and rolled in {handed_back:.1f}s; the same volume claim, 0 upstream requests for "
                   "the image after each")
    print(FIGURES[-1])

    # 4. restored to this controller, then the Shoot deleted: its cache and volume go; Gardener's leftovers (the
    #    objects it names differently) are deleted as the docs say
    cluster.patch(EXTENSION, "registry-cache", {"metadata": {"annotations": {OPERATION: "restore"}}}, namespace)
    # (Restore, then a Reconcile: the StatefulSet is not as this controller delivered it)
    wait_reconciled(cluster, name, [up.host], extra=lambda e: e["status"]["lastOperation"]["type"] != "Migrate")
    wait_caches_ready(cluster, [up.host])
    delete_shoot(cluster, name)
    shoots.remove(name)
    for obj in gardeners:
        if cluster.get(gardener.RESOURCES[obj["kind"]], obj["metadata"]["name"], "kube-system") is not None:
            assert OWNER not in (obj["metadata"].get("labels") or {})
            cluster.delete(gardener.RESOURCES[obj["kind"]], obj["metadata"]["name"], "kube-system")
    assert_nothing_left(cluster, name, [up.host])
    wait_removed(cluster, [up.host])


def test_a_cache_with_two_replicas_fetches_each_blob_once(cluster, shoots):
    """highAvailability: two replicas, each with its own volume. Every node pulls a fresh image at the same moment
    (a Pod pinned to each), and the Service spreads them over both replicas; the replica that does not own a blob
    fetches it from the one that does (extension/front/server.py). The upstream serves each blob once, and no
    node falls back to it."""
    up = cluster.upstream("public")
    name = "e2e-cache-replicas"
    shoots.append(name)
    cluster.apply(shoot_manifest(name, [cache(up, highAvailability={"enabled": True})]))
    ext = wait_reconciled(cluster, name, [up.host])
    wait_rolled(cluster, up.host, 2)
    wait_applied(cluster, ext)

    image = up.push("e2e/replicas", uuid.uuid4().hex[:8])
    mark = up.mark()
    pods = [f"replicas-{n}-{uuid.uuid4().hex[:4]}" for n in range(len(cluster.nodes()))]
    cluster.apply(*({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": WORKLOAD_NAMESPACE},
                     "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                              "containers": [{"name": "c", "image": image.ref, "imagePullPolicy": "IfNotPresent"}]}}
                    for pod, node in zip(pods, cluster.nodes())))
    try:
        for pod in pods:
            wait_for(f"Pod {pod} running", lambda: ((cluster.get("pod", pod, WORKLOAD_NAMESPACE) or {})
                                                    .get("status") or {}).get("phase") == "Running", timeout=180,
                     details=lambda: cluster.kubectl("describe", "pod", pod, "-n", WORKLOAD_NAMESPACE,
                                                     check=False).stdout)
    finally:
        for pod in pods:
            cluster.delete("pod", pod, WORKLOAD_NAMESPACE, wait=False)
    requests = up.fetched(mark)
    fetches = {d: [r for r in requests if r.method == "GET" and r.path == f"/v2/{image.repository}/blobs/{d}"
                   and r.status == 200 and r.agent.startswith("Go-http-client/")] for d in image.blobs}
    by_node = [r for r in requests if r.agent.startswith("containerd/")]
    FIGURES.append(f"{cluster.name}: {len(pods)} nodes pull at once through a cache with 2 replicas: upstream GETs "
                   f"per blob {sorted({len(f) for f in fetches.values()})}, fallbacks to the upstream {len(by_node)}")
    print(FIGURES[-1])
    assert all(len(f) == 1 for f in fetches.values()), fetches
    assert not by_node, "the nodes fell back to the upstream:\n" + "\n".join(map(str, by_node))
    assert_no_egress(cluster)
    delete_shoot(cluster, name)
    shoots.remove(name)
    wait_removed(cluster, [up.host])
