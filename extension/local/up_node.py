"""``registry-cache local-up`` with the node: the whole product running for real on this machine.

Starts the one-node cluster (:mod:`.node`), the controller and the node agent (:mod:`.stack`), two test
upstreams on the node's bridge (``10.244.0.2`` public, ``10.244.0.3`` private, with generated credentials)
each holding an image, and applies the example Shoot (``examples/local-shoot.yaml``; the credentials
Secret is made from the generated password). Then it shows the Extension's status, the cache Pods Running
and Ready, the ``hosts.toml`` the node agent wrote, and an image pulled by the node through each cache,
with what the upstream's log says about who fetched it. Runs until Ctrl-C (``--no-wait``: stops at once).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path

import yaml

from api.shoot import project_of_namespace, technical_namespace

from ..controlplane import load_manifests
from ..kube import ApiError, Kube
from .node import push_test_image
from .procs import ClusterError
from .registries import CACHE_AGENT, CONTAINERD_AGENT
from .stack import Stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "local-shoot.yaml"
PRIVATE_SECRET = "local-registry-credentials-v1"


def _say(text: str = "") -> None:
    print(text, flush=True)


def run(workdir: Path | None, manifests: list[Path] | None, wait: bool, timeout: float = 180.0) -> int:
    workdir = (workdir or Path.cwd() / ".registry-cache-local").resolve()
    node_dir = workdir / "node-cluster"
    shutil.rmtree(node_dir, ignore_errors=True)  # a fresh cluster every time
    _say(f"Starting a one-node Kubernetes cluster in {node_dir} (the first run builds Kubernetes, distribution "
         "and crane with Go: 10-15 minutes; later runs start in seconds) ...")
    t0 = time.monotonic()
    stack = Stack(node_dir, progress=lambda m: _say(f"  {m}"), node_agent_interval=2.0)
    try:
        stack.start()
        cluster = stack.cluster
        _say(f"  cluster up in {time.monotonic() - t0:.0f}s: node local-node Ready, "
             f"API server {cluster.cp.server}")  # type: ignore[union-attr]
        public = cluster.upstream("public")
        username, password = "local-robot", secrets.token_urlsafe(18)
        private = cluster.upstream("private", users={username: password})
        _say(f"  test upstreams: {public.url} (public), {private.url} (private, basic auth), TLS from the test CA "
             f"{cluster.test_ca_file}")
        images = {public.host: push_test_image(cluster, public, "library/hello", "1.0"),
                  private.host: push_test_image(cluster, private, "team/app", "1.0", (username, password))}
        for image in images.values():
            _say(f"  pushed {image.ref}")

        api = cluster.cp.api_client()  # type: ignore[union-attr]
        kube = Kube(api, field_manager="kubectl-client-side-apply")
        docs = load_manifests(manifests or [EXAMPLE])
        namespaces = sorted({d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")})
        for ns in namespaces:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        if manifests is None:
            _apply(kube, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                          "metadata": {"name": PRIVATE_SECRET, "namespace": "garden-local"},
                          "stringData": {"username": username, "password": password}})
            _say(f"  created Secret garden-local/{PRIVATE_SECRET} (immutable) with the private upstream's credentials")
        for doc in sorted(docs, key=lambda d: d.get("kind") != "Secret"):
            _apply(kube, doc)
            _say(f"  applied {doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}")
        shoots = [d for d in docs if d.get("kind") == "Shoot"]
        code = 0
        for shoot in shoots:
            meta = shoot["metadata"]
            seed_ns = technical_namespace(project_of_namespace(meta["namespace"]), meta["name"])
            code |= _show(stack, kube, seed_ns, timeout)
        if manifests is None and code == 0:
            code |= _pull(stack, images)
        _hints(stack, shoots)
        if not wait:
            return code
        _say("Running until Ctrl-C ...")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                stack.check()
        except KeyboardInterrupt:
            pass
        except ClusterError as e:
            _say(str(e))
            return 1
        return code
    finally:
        _say("Stopping the cluster ...")
        stack.stop()


def _apply(kube: Kube, doc: dict, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.apply(doc)
            return
        except ApiError as exc:
            if "failed calling webhook" not in exc.message or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _show(stack: Stack, kube: Kube, namespace: str, timeout: float) -> int:
    cluster = stack.cluster
    deadline = time.monotonic() + timeout
    ext = None
    while time.monotonic() < deadline:
        ext = kube.get("Extension", "registry-cache", namespace)
        last = ((ext or {}).get("status") or {}).get("lastOperation") or {}
        if last.get("state") in ("Succeeded", "Error") and \
                ext["status"].get("observedGeneration") == ext["metadata"]["generation"]:
            break
        time.sleep(0.5)
    _say()
    if ext is None:
        _say(f"Extension {namespace}/registry-cache did not appear: see {cluster.logs / 'controller.log'}")
        return 1
    status = ext.get("status") or {}
    last = status.get("lastOperation") or {}
    _say(f"Extension {namespace}/registry-cache: {last.get('type')} {last.get('state')} - {last.get('description')}")
    if status.get("lastError"):
        _say(f"  lastError: {status['lastError'].get('description')}")
        return 1
    provider = status.get("providerStatus") or {}
    _say("providerStatus:")
    _say("  " + yaml.safe_dump(provider, sort_keys=False).replace("\n", "\n  ").rstrip())
    upstreams = [c["upstream"] for c in provider.get("caches") or []]
    selector = f"registry-cache.gardener.cloud/owner={namespace}"

    def ready() -> bool:
        sts = kube.list("StatefulSet", "kube-system", label_selector=selector)
        return bool(sts) and all((s.get("status") or {}).get("readyReplicas") == s["spec"]["replicas"] for s in sts)

    while time.monotonic() < deadline and not ready():
        time.sleep(1)
    while time.monotonic() < deadline and not all(
            (cluster.certs_d / u / "hosts.toml").is_file() for u in upstreams):
        time.sleep(1)
    _say()
    _say("The caches, as Pods on the node (kubectl get pods,pvc -n kube-system):")
    out = cluster.kubectl("get", "pods,pvc", "-n", "kube-system", "-o", "wide", check=False).stdout
    _say("  " + out.rstrip().replace("\n", "\n  "))
    for upstream in upstreams:
        path = cluster.certs_d / upstream / "hosts.toml"
        _say()
        _say(f"{path} (written by the node agent, read by the node's containerd):")
        text = cluster.node_file(path)
        _say("  " + (text.rstrip().replace("\n", "\n  ") if text else "(not written yet)"))
    if not ready():
        _say("Not every cache is Ready: see kubectl describe pod -n kube-system, and the Extension's conditions.")
        return 1
    return 0


def _pull(stack: Stack, images: dict) -> int:
    cluster = stack.cluster
    code = 0
    _say()
    for upstream, image in images.items():
        name = f"hello-{upstream.replace('.', '-')}"
        mark = image.upstream.mark()
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
               "spec": {"containers": [{"name": "c", "image": image.ref}], "terminationGracePeriodSeconds": 1}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and not ready:
            got = json.loads(cluster.kubectl("get", "pod", name, "-n", "default", "-o", "json").stdout)
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in got.get("status", {}).get("conditions", []))
            time.sleep(0.5)
        events = json.loads(cluster.kubectl("get", "events", "-n", "default", "--field-selector",
                                            f"involvedObject.name={name},reason=Pulled", "-o", "json").stdout)["items"]
        pulled = next((e["message"] for e in events), "")
        requests = image.upstream.requests(mark)
        by_cache = [r for r in requests if CACHE_AGENT.match(r.agent) and "/blobs/" in r.path]
        by_node = [r for r in requests if CONTAINERD_AGENT.match(r.agent)]
        via = "through its cache" if by_cache and not by_node else \
            ("from the upstream directly (fallback)" if by_node else "from where?")
        _say(f"Pod default/{name} ({image.ref}): {'Running and Ready' if ready else 'NOT ready'}; "
             f"kubelet: {pulled or 'no Pulled event'}")
        _say(f"  the node pulled it {via}: the upstream {upstream} served {len(by_cache)} blob requests to the "
             f"cache and {len(by_node)} requests to the node")
        if not ready or by_node or not by_cache:
            code = 1
    return code


def _hints(stack: Stack, shoots: list[dict]) -> None:
    cluster = stack.cluster
    _say()
    _say("Use it with kubectl:")
    _say(f"  export KUBECONFIG={cluster.kubeconfig}")
    _say("  kubectl get nodes -o wide")
    _say("  kubectl get pods -n kube-system -o wide          # the caches")
    _say("  kubectl get extensions -A -o yaml                # status, providerStatus, conditions")
    if shoots:
        meta = shoots[0]["metadata"]
        _say(f"  kubectl edit shoot -n {meta['namespace']} {meta['name']}   # change the caches, watch them roll")
    _say(f"  ls {cluster.certs_d}                                 # the node's containerd hosts directory")
    _say(f"Logs: {cluster.logs} (controller, node-agent, kubelet, containerd, ...); upstream access logs: "
         f"{cluster.workdir / 'upstreams'}")
