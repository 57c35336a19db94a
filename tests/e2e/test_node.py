"""Gardener's e2e scenarios (tests/e2e/scenarios.py) on the local cluster from processes on this machine, with 3
nodes (``REGISTRY_CACHE_E2E_NODES``); every scenario checks ``hosts.toml`` on every node.

The cluster (extension/local: etcd, kube-apiserver, kube-controller-manager, kube-scheduler on the host;
containerd, kubelet, kube-proxy in the node's own network namespace), the controller in standalone mode with
its webhooks, and the node agent start once per test session. The caches run the distribution image built
here with crane; their upstreams are distribution registries on IP literals of the node's bridge
(``10.244.0.2``...), TLS from a test CA, one private (basic auth): nothing a fallback could reach exists
beyond this machine, and every test asserts that nothing tried to leave it.

Needs root, Go (or the build cache), and Debian's containerd, runc, CNI plugins, iptables and conntrack
(``.ci/run`` installs them with hack/e2e-deps.sh). Without them the tests skip and say what is missing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from extension.component.certs import generate_server_cert
from extension.local import network as net
from extension.local.images import push_plugin_image, static_busybox
from extension.local.node import IMAGE_REGISTRY, PushedImage, node_prerequisites, push_test_image
from extension.local.procs import ClusterError
from extension.local.registries import LocalRegistry
from extension.local.stack import Stack

from . import scenarios
from .figures import CLUSTER_TIMINGS
from .scenarios import *  # noqa: F403 - the scenarios, run on this cluster
from .scenarios import E2ECluster, Image
from .shortlived import ServedShortLived, build_plugin

pytestmark = pytest.mark.e2e

# Nodes of the cluster the scenarios run on: several, so that pulls, caches and hosts.toml are shown on every node
# (REGISTRY_CACHE_E2E_NODES=1: the quickest to start)
NODES = int(os.environ.get("REGISTRY_CACHE_E2E_NODES", "3"))
# the nodes' containerd: Debian's 1.6, or 2.x built from its module (REGISTRY_CACHE_E2E_CONTAINERD=2)
CONTAINERD = os.environ.get("REGISTRY_CACHE_E2E_CONTAINERD", "1.6")

class NodeUpstream:
    def __init__(self, cluster: NodeCluster, registry: LocalRegistry, auth: tuple[str, str] | None):
        self.cluster, self.registry, self.auth = cluster, registry, auth
        self.host = registry.host
        self.remote_url = registry.url

    def push(self, repository: str, tag: str) -> Image:
        pushed: PushedImage = push_test_image(self.cluster.stack.cluster, self.registry, repository, tag,
                                              self.auth)
        return Image(pushed.ref, repository, pushed.digest, pushed.blobs)

    def mark(self) -> int:
        return self.registry.mark()

    def fetched(self, since: int):
        return self.registry.requests(since)

    def users_of_blob_fetches(self, since: int) -> set[str]:
        return {user for user, uri, agent in self.registry.authorized(since)
                if "/blobs/" in uri and agent.startswith("Go-http-client/")}


class NodeShortLived:
    """The short-lived-token upstream on the node's bridge (tests/e2e/shortlived.py), as scenarios use an upstream:
    images are pushed to the registry behind the front, the node and the caches read them through the front."""

    def __init__(self, cluster: NodeCluster, served: ServedShortLived):
        self.cluster, self.served = cluster, served
        self.host, self.remote_url = served.host, served.remote_url

    def push(self, repository: str, tag: str) -> Image:
        pushed: PushedImage = push_test_image(self.cluster.stack.cluster, self.served.backend, repository, tag)
        return Image(f"{self.host}/{repository}:{tag}", repository, pushed.digest, pushed.blobs)

    def mark(self) -> float:
        return time.time()

    def fetched(self, since: float):
        return self.served.requests(since)

    def __getattr__(self, name: str):  # token_endpoint, issued, set_identities, stop_tokens, logs, ...
        return getattr(self.served, name)


class NodeCluster(E2ECluster):
    name = "node"

    def __init__(self, stack: Stack):
        self.stack = stack
        self.certs_dir = str(stack.cluster.certs_path)  # where every node sees its hosts directory
        assert stack.cluster.images is not None
        self.cache_image = stack.cluster.images.registry  # distribution as hack/registry-bins.sh builds it
        self._upstreams: dict[str, NodeUpstream] = {}
        self._users: dict[str, str] = {}

    def kubectl_argv(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.stack.kubeconfig), *args]

    def nodes(self) -> list[str]:
        return [n.name for n in self.stack.cluster.nodes]

    def node_file(self, node: str, path: str) -> str | None:
        [index] = [n.index for n in self.stack.cluster.nodes if n.name == node]
        return self.stack.cluster.node_file(path, index)

    def upstream(self, role: str) -> NodeUpstream:
        if role not in self._upstreams:
            users = None
            if role == "private":
                self._users = {"robot-v1": secrets.token_hex(12)}
                users = self._users
            reg = self.stack.cluster.upstream(role, users=users)
            self._upstreams[role] = NodeUpstream(self, reg, self.credentials() if users else None)
        return self._upstreams[role]

    def credentials(self) -> tuple[str, str]:
        user = sorted(self._users)[-1]
        return user, self._users[user]

    def new_credentials(self) -> tuple[str, str]:
        user = f"robot-v{len(self._users) + 1}"
        self._users[user] = secrets.token_hex(12)
        up = self._upstreams["private"]
        up.registry.restart_with_users(self._users)
        return user, self._users[user]

    def revoke_credentials(self, keep: tuple[str, str]) -> None:
        self._users = {keep[0]: keep[1]}
        up = self._upstreams["private"]
        up.registry.restart_with_users(self._users)
        up.auth = keep

    def volume_dir(self, upstream: str) -> Path | None:
        from api import names
        pvc = self.get("pvc", f"cache-volume-{names.resource_name(upstream)}-0", "kube-system")
        if not pvc or not pvc["spec"].get("volumeName"):
            return None
        pv = self.get("pv", pvc["spec"]["volumeName"])
        path = ((pv or {}).get("spec", {}).get("hostPath") or {}).get("path")
        self.stack.cluster.volume_dirs()  # remembered for the cleanup
        return Path(path) if path else None

    def cache_holds(self, upstream: str, image: Image) -> bool:
        root = self.volume_dir(upstream)
        if root is None:
            return False
        v2 = root / "docker" / "registry" / "v2"
        blobs = v2 / "blobs" / "sha256"
        revision = v2 / "repositories" / image.repository / "_manifests" / "revisions" / "sha256" / \
            image.digest.split(":", 1)[1]
        return revision.is_dir() and all((blobs / d.split(":", 1)[1][:2] / d.split(":", 1)[1] / "data").is_file() for d in image.blobs)

    def stop_upstream(self, up: NodeUpstream) -> None:
        up.registry.stop()

    def start_upstream(self, up: NodeUpstream) -> None:
        up.registry.start()

    def forget_image(self, image: Image) -> None:
        """Remove the image from every node that has it (the next Pod pulls it again, wherever it runs)."""
        repository = image.ref.rsplit(":", 1)[0]
        found = False
        for node in self.stack.cluster.nodes:
            refs = [r for r in node.ctr("-n", "k8s.io", "images", "ls", "-q").stdout.split()
                    if r == image.ref or r.startswith(repository + "@") or r in image.blobs]  # CRI: tag, digest, id
            if refs:
                found = True
                node.ctr("-n", "k8s.io", "images", "rm", "--sync", *refs)
        assert found, f"{image.ref} is on no node"

    def _cache_pids(self, upstream: str) -> list[int]:
        from api import names
        pod = self.get("pod", f"{names.resource_name(upstream)}-0", "kube-system")
        if not pod:
            return []
        uid = pod["metadata"]["uid"]
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cgroup = (d / "cgroup").read_text()
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"pod{uid}" in cgroup and argv and argv[0].endswith(b"registry"):
                pids.append(int(d.name))
        return pids

    def freeze_cache(self, upstream: str) -> bool:
        pids = self._cache_pids(upstream)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self._frozen = pids
        return bool(pids)

    def thaw_cache(self, upstream: str) -> None:
        for pid in getattr(self, "_frozen", []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = []

    def short_lived_upstream(self, validity: float, identities: dict[str, str]) -> NodeShortLived:
        lc = self.stack.cluster
        assert lc.registry_bin is not None and lc.test_ca is not None
        address = lc.allocate_address()
        cert = generate_server_cert(lc.test_ca, "short-lived", ["short-lived"], [address])

        def register(name: str, proc) -> None:  # stopped with the cluster
            lc.procs[name] = proc

        served = ServedShortLived(lc.registry_bin, lc.workdir / "upstreams" / f"{address}-short-lived", address,
                                  lc.network.argv, (cert.cert_pem, cert.key_pem), lc.test_ca_file, validity,
                                  identities, register=register)
        lc.registries.append(served.backend)
        return NodeShortLived(self, served.start())

    def plugin_image(self) -> str:
        if getattr(self, "_plugin_image", None) is None:
            busybox = static_busybox()
            assert busybox is not None  # node_prerequisites
            lc = self.stack.cluster
            self._plugin_image = push_plugin_image(lc.crane, lc.workdir / "images", IMAGE_REGISTRY, build_plugin(),
                                                   busybox)
        return self._plugin_image

    def reset_egress(self) -> None:
        self.stack.cluster.reset_egress()

    def egress(self):
        return self.stack.cluster.egress()

    def containerd_log(self) -> str | None:
        """Every node's containerd log."""
        return "\n".join(n.containerd_log.read_text(errors="replace") for n in self.stack.cluster.nodes
                         if n.containerd_log.exists())

    def controller_manager_log(self) -> str | None:
        return (self.stack.cluster.logs / "kube-controller-manager.log").read_text(errors="replace")

    def logs(self) -> str:
        return self.stack.logs()


@pytest.fixture(scope="session")
def node_stack(tmp_path_factory) -> Stack:
    missing = node_prerequisites()
    if missing:
        pytest.skip("the one-node cluster needs " + "; ".join(missing)
                    + " (as root, hack/e2e-deps.sh installs the packages)")
    workdir = tmp_path_factory.mktemp("node")
    stack = Stack(workdir, nodes=NODES, containerd=CONTAINERD)
    t0 = time.monotonic()
    try:
        stack.start()
    except ClusterError as e:
        failure = f"the one-node cluster did not start: {e}"
    else:
        failure = ""
    if failure:
        pytest.fail(failure, pytrace=False)
    CLUSTER_TIMINGS[f"{NODES}-node cluster start (with the controller and node agents)"] = time.monotonic() - t0
    CLUSTER_TIMINGS["  of which the cluster itself"] = stack.cluster.start_seconds or 0
    yield stack
    try:  # Pods came and went: the bridge kept its address (else Pods talk to a gateway that is gone for ~30 s)
        bridge = stack.cluster.network.bridge_address()
    finally:
        t0 = time.monotonic()
        stack.stop()
    assert bridge == net.BRIDGE_MAC, f"the Pods' bridge changed its address to {bridge}"
    CLUSTER_TIMINGS[f"{NODES}-node cluster stop"] = time.monotonic() - t0


@pytest.fixture(scope="session")
def cluster(node_stack) -> NodeCluster:
    c = NodeCluster(node_stack)
    c.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": scenarios.PROJECT_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": scenarios.WORKLOAD_NAMESPACE}})
    return c


def test_a_cache_only_nodes_can_read(cluster, shoots, node_stack):
    """A cache only nodes can read, on the one-node cluster: the controller with ``--node-auth``. The node
    agent writes the cache's Authorization header into its ``hosts.toml`` (root only), the node's containerd
    pulls through the cache with it (nothing from the upstream), and a Pod without it gets 401 from the cache
    (busybox wget in the cluster's cache image, on the cache's cluster IP)."""
    import stat
    import tomllib

    from api import names
    from extension.constants import NODE_AUTH_SHOOT_SECRET

    node_stack.restart_controller(["--node-auth"])
    try:
        up = cluster.upstream("public")
        name = "e2e-node-auth"
        shoots.append(name)
        cluster.apply(scenarios.shoot_manifest(name, [scenarios.cache(up, http={"tls": False})]))
        ext = scenarios.wait_reconciled(cluster, name, [up.host])
        scenarios.wait_caches_ready(cluster, [up.host])
        endpoint = ext["status"]["providerStatus"]["caches"][0]["endpoint"]
        resource = names.resource_name(up.host)

        def header() -> str | None:
            secret = cluster.get("secret", NODE_AUTH_SHOOT_SECRET, "kube-system") or {}
            value = (secret.get("data") or {}).get(resource)
            return base64.b64decode(value).decode() if value else None

        scenarios.wait_for("the cache's node credentials in the shared Secret", lambda: header() is not None)
        path = Path(cluster.certs_dir) / up.host / "hosts.toml"

        def written(node: str) -> dict | None:
            text = cluster.node_file(node, str(path))
            return tomllib.loads(text)["host"].get(endpoint) if text else None

        for node in cluster.nodes():  # every node's agent (a Pod may run on any node)
            scenarios.wait_for(f"{path} with the Authorization header on {node}", lambda: (
                written(node) or {}).get("header") == {"Authorization": header()}, details=cluster.logs)
        for node in node_stack.cluster.nodes:  # (each node's own directory, as the host sees it)
            real = node.certs_d / up.host / "hosts.toml"
            assert stat.S_IMODE(real.stat().st_mode) == 0o600 and real.stat().st_uid == 0, node.name
        scenarios.verify_registry_cache(cluster, up, "e2e/node-auth")  # the node pulls through it

        def wget_without_credentials() -> str:
            pod = f"no-credentials-{secrets.token_hex(3)}"
            cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace":
                                                                            scenarios.WORKLOAD_NAMESPACE},
                           "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
                               "name": "wget", "image": cluster.cache_image,
                               "command": ["/bin/busybox", "wget", "-S", "-O-", f"{endpoint}/v2/"]}]}})
            scenarios.wait_for(f"Pod {pod} to end", lambda: ((cluster.get("pod", pod, scenarios.WORKLOAD_NAMESPACE)
                                                              or {}).get("status") or {}).get("phase")
                               in ("Succeeded", "Failed"), timeout=120)
            said = cluster.kubectl("logs", "-n", scenarios.WORKLOAD_NAMESPACE, pod).stdout
            cluster.delete("pod", pod, scenarios.WORKLOAD_NAMESPACE, wait=False)
            return said

        # (the cache Pod may be replaced right after the controller's restart: the replicas of the controller
        # without --node-auth may still reconcile until they are gone; kube-proxy then refuses the connection
        # while the Service has no ready endpoint: asked again once the cache is Ready)
        said = wget_without_credentials()
        if "Connection refused" in said:
            scenarios.wait_caches_ready(cluster, [up.host])
            said = wget_without_credentials()
        assert "401 Unauthorized" in said, said
        scenarios.delete_shoot(cluster, name)
        shoots.remove(name)
        scenarios.wait_removed(cluster, [up.host])
    finally:
        node_stack.restart_controller()


def _controller_pods(stack: Stack) -> list[dict]:
    from extension.local.stack import CONTROLLER_SELECTOR, NAMESPACE
    return json.loads(stack.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", CONTROLLER_SELECTOR, "-o",
                                            "json").stdout)["items"]


def test_the_kubelet_acts_on_the_controllers_probes(node_stack):
    """The product as the chart installs it, its probes called by the real kubelet: the controller's
    ServiceAccount loses its ClusterRoleBinding (a missing RBAC grant) and the leader Pod is deleted: the follower
    takes the Lease and its watches of Extensions are refused. It is not Ready (no webhook calls to it: its
    Service endpoint is not ready) and, once its watches have failed past the grace, the kubelet restarts it (the
    log of the container before says which watch). With the binding back everything is Ready again and the API
    server calls the webhooks."""
    from extension.local.stack import NAMESPACE
    if node_stack.install != "chart":
        pytest.skip("the product runs as processes here (--host-processes): no kubelet probes it")
    cluster = node_stack.cluster
    node_stack.restart_controller(["--probe-watch-grace", "5"])  # (the default, 60 s, makes this slow)
    bindings = [b for b in json.loads(cluster.kubectl("get", "clusterrolebindings", "-o", "json").stdout)["items"]
                if any(s.get("kind") == "ServiceAccount" and s.get("namespace") == NAMESPACE
                       and s.get("name") == "registry-cache" for s in b.get("subjects") or [])]
    assert bindings, "no ClusterRoleBinding for the controller's ServiceAccount"
    for binding in bindings:
        cluster.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"])
    try:
        lease = json.loads(cluster.kubectl("get", "lease", "-n", NAMESPACE, "registry-cache-leader-election",
                                           "-o", "json").stdout)
        leader = lease["spec"]["holderIdentity"].split("_")[0]
        follower = next(p["metadata"]["name"] for p in _controller_pods(node_stack)
                        if p["metadata"]["name"] != leader and not p["metadata"].get("deletionTimestamp"))
        cluster.kubectl("delete", "pod", "-n", NAMESPACE, leader, "--wait=false")
        # The follower takes the Lease and starts the controller's watches, which the API server now refuses.
        # (The Pod that replaces the leader cannot even read the webhook's certificate Secret: it ends at start
        # with the 403 in its log, a crash loop, not what this test is about.)
        logged: dict[str, str] = {}  # what the follower's container said, read while it ran

        def restarted() -> dict | None:
            [pod] = [p for p in _controller_pods(node_stack) if p["metadata"]["name"] == follower]
            if any((c.get("restartCount") or 0) > 0 for c in pod["status"].get("containerStatuses") or []):
                return pod
            said = cluster.kubectl("logs", "-n", NAMESPACE, follower, check=False).stdout
            if len(said) >= len(logged.get(follower, "")):
                logged[follower] = said
            return None
        new = scenarios.wait_for("the kubelet to restart the new leader, which cannot watch", restarted,
                                 timeout=300, details=node_stack.in_cluster_state)
        name = new["metadata"]["name"]
        events = json.loads(cluster.kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                                            f"involvedObject.name={name},reason=Unhealthy", "-o", "json").stdout)
        said = [e["message"] for e in events["items"]]
        assert any("Liveness probe failed" in m for m in said), said
        assert any("Readiness probe failed" in m for m in said), said
        # (the kubelet's Event has the status code; the controller logged why it answered 500)
        before = logged.get(name, "")
        assert "/healthz: the watch of" in before and "has failed for" in before, before[-2000:]
        slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        ready = {(e.get("targetRef") or {}).get("name"): (e.get("conditions") or {}).get("ready")
                 for s in slices for e in s.get("endpoints") or []}
        assert ready.get(name) is not True, ready  # no webhook call goes to it
    finally:
        for binding in bindings:
            binding["metadata"] = {"name": binding["metadata"]["name"], "labels": binding["metadata"].get("labels"),
                                   "annotations": binding["metadata"].get("annotations")}
            cluster.kubectl("create", "-f", "-", input=json.dumps(binding))
        node_stack.restart_controller()  # the default grace, and everything Ready (wait_installed)


_FORGERY = r'''
import json, ssl, sys, urllib.request
body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "1", "kind": {"group": "core.gardener.cloud", "version": "v1beta1", "kind": "Shoot"},
    "resource": {"group": "core.gardener.cloud", "version": "v1beta1", "resource": "shoots"},
    "operation": "CREATE", "namespace": "garden-local", "name": "evil",
    "userInfo": {"username": "mallory", "groups": ["system:masters"]},
    "object": {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
               "metadata": {"name": "evil", "namespace": "garden-local"},
               "spec": {"resources": [{"name": "c", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                        "name": "local-registry-credentials-v1"}}],
                        "extensions": [{"type": "registry-cache", "providerConfig": {
                            "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                            "caches": [{"upstream": "evil.example", "remoteURL": "https://attacker.example",
                                        "secretReferenceName": "c"}]}}]}}}}
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # whatever the server presents
for hook in ("validate-shoot", "protect-secret", "mutate-osc"):
    request = urllib.request.Request(f"https://{sys.argv[1]}/{hook}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            print(f"{hook}: ANSWERED {answer.status} {answer.read()[:300]!r}")
    except Exception as exc:
        print(f"{hook}: refused: {type(exc).__name__}: {exc}")
'''


def test_a_pod_that_forges_an_admission_review_gets_no_answer(cluster, node_stack):
    """Issue 17's forgery against the deployment the webhooks run in: a Pod in the cluster (the product's own
    image, so Python and TLS are there) POSTs an AdmissionReview claiming system:masters to the webhook Service.
    The server asks for the API server's client certificate: every call ends in the TLS handshake, unanswered.
    (The API server's own calls through the same Service succeed: Stack.wait_installed.)"""
    from extension.local.stack import NAMESPACE
    if node_stack.install != "chart":
        pytest.skip("the webhooks run as a host process here (--host-processes), not behind their Service")
    service = cluster.get("service", "registry-cache-webhook", NAMESPACE)
    address = f"{service['spec']['clusterIP']}:443"
    pod = f"forger-{secrets.token_hex(3)}"
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": scenarios.WORKLOAD_NAMESPACE},
                   "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
                       "name": "forger", "image": node_stack.image,
                       "command": ["python3", "-c", _FORGERY, address],
                       "securityContext": {"runAsUser": 65532}}]}})
    scenarios.wait_for(f"Pod {pod} to end", lambda: ((cluster.get("pod", pod, scenarios.WORKLOAD_NAMESPACE) or {})
                                                     .get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                       timeout=180)
    said = cluster.kubectl("logs", "-n", scenarios.WORKLOAD_NAMESPACE, pod).stdout
    cluster.delete("pod", pod, scenarios.WORKLOAD_NAMESPACE, wait=False)
    lines = [line for line in said.splitlines() if ": " in line]
    assert len(lines) == 3 and all(": refused: " in line for line in lines), said
    assert "ANSWERED" not in said, said  # (the server ends the handshake: an EOF or an alert, depending on timing)


def test_kubectl_apply_k_installs_the_same(cluster, node_stack, shoots):
    """The product installed with ``kubectl apply -k`` of an overlay of manifests/default (the image, the API
    server's client CA, the node's hosts directory) instead of the chart: it serves the same way (the API server
    calls the webhooks through their Service, the controller Deployment and the node agent roll out), and a cache
    is delivered and pulled through. The chart is installed again afterwards."""
    if node_stack.install != "chart":
        pytest.skip("the product runs as processes here (--host-processes)")
    node_stack.reinstall("kustomize")
    try:
        up = cluster.upstream("public")
        name = "e2e-kustomize"
        shoots.append(name)
        cluster.apply(scenarios.shoot_manifest(name, [scenarios.cache(up)]))
        ext = scenarios.wait_reconciled(cluster, name, [up.host])
        scenarios.wait_caches_ready(cluster, [up.host])
        scenarios.wait_applied(cluster, ext)  # the node agent of this install wrote hosts.toml
        scenarios.verify_registry_cache(cluster, up, "e2e/kustomize")
        scenarios.delete_shoot(cluster, name)
        shoots.remove(name)
        scenarios.wait_removed(cluster, [up.host])
    finally:
        node_stack.reinstall("chart")
