"""``registry-cache local-up``: the whole thing on this machine, no cluster needed.

With the node (the default): the one-node Kubernetes cluster from processes (:mod:`.node`), the controller
and the node agent (:mod:`.stack`), two test upstreams on the node's bridge (``10.244.0.2`` public,
``10.244.0.3`` private, with generated credentials) each holding an image, and the example Shoot
(``examples/local-shoot.yaml``; its credentials Secret is made from the generated password). It shows the
Extension's status, the cache Pods Running and Ready, the ``hosts.toml`` the node agent wrote, and an image
pulled by the node through each cache, with what the upstream's log says about who fetched it.

Without it (``--no-node``, or where the node cannot run): a local control plane (etcd + kube-apiserver), the
controller, and the Shoot example of Gardener's docs; it shows the StatefulSets and Services delivered and the
``hosts.toml`` each node would get (nothing runs as a Pod).

Either way the controller runs in standalone mode with its admission webhooks, the manifests (Secrets first)
are applied as a user would, and it keeps running until Ctrl-C (``--no-wait``: stops at once).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from api.shoot import project_of_namespace, technical_namespace
from api.v1alpha3 import RegistryStatus
from extension.component.containerd import hosts_toml_for_status
from extension.constants import (
    DEFAULT_DIAL_TIMEOUT,
    EXTENSION_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    SHOOT_NAMESPACE,
    State,
)
from extension.local.assets import asset_dir
from extension.local.controlplane import LocalControlPlane, load_manifests
from extension.local.node import NODE_NAME, PushedImage, push_test_image
from extension.local.procs import ClusterError, Proc
from extension.local.registries import CACHE_AGENT, CONTAINERD_AGENT
from extension.local.stack import CONTROLLER_SELECTOR, NAMESPACE, Stack, install_crds, start_controller
from extension.runtime.kube import ApiError, Kube

EXAMPLES = asset_dir("examples")
NODE_EXAMPLE = EXAMPLES / "local-shoot.yaml"
PRIVATE_SECRET = "local-registry-credentials-v1"  # what examples/local-shoot.yaml references
PROJECT_NAMESPACE = "garden-local"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.rstrip().splitlines())


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def default_manifests(node: bool) -> list[Path]:
    """The example: with the node ``examples/local-shoot.yaml`` (its Secret is generated), else the docs
    example and its credentials Secret."""
    return [NODE_EXAMPLE] if node else [EXAMPLES / "quay-credentials-v1.yaml", EXAMPLES / "shoot.yaml"]


class _ControlPlaneOnly:
    """etcd and kube-apiserver on loopback, the CRDs and the controller: the caches are delivered, none runs."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.cp: LocalControlPlane | None = None
        self.controller: Proc | None = None

    @property
    def kubeconfig(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig

    @property
    def controller_log(self) -> Path:
        return self.workdir / "controller.log"

    def start(self) -> None:
        _say(f"Starting a local control plane in {self.workdir} (the first run builds kube-apiserver and etcd with "
             "Go: a few minutes) ...")
        shutil.rmtree(self.workdir / "control-plane", ignore_errors=True)  # a fresh cluster every time
        self.cp = LocalControlPlane(workdir=self.workdir / "control-plane", progress=lambda m: _say(f"  {m}"))
        self.cp.start()
        api = self.cp.api_client()
        try:
            install_crds(api)
        finally:
            api.close()
        _say(f"  API server {self.cp.server} is up; CRDs installed (Shoot, Extension, Cluster).")
        self.controller = start_controller(self.kubeconfig, self.controller_log)
        _say(f"  controller running (pid {self.controller.pid}) with its webhooks, log: {self.controller_log}")

    def prepare(self, kube: Kube, default_example: bool) -> None:
        pass

    def show_caches(self, kube: Kube, namespace: str, provider: dict[str, Any], timeout: float) -> int:
        selector = f"{OWNER_LABEL}={namespace}"
        rows = [["KIND", "NAME", "DETAIL"]]
        for s in kube.list("StatefulSet", SHOOT_NAMESPACE, label_selector=selector):
            claim = s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
            image = s["spec"]["template"]["spec"]["containers"][0]["image"]
            rows.append(["StatefulSet", s["metadata"]["name"],
                         f"replicas {s['spec']['replicas']}, volume {claim}, {image}"])
        for s in kube.list("Service", SHOOT_NAMESPACE, label_selector=selector):
            ann = s["metadata"].get("annotations") or {}
            rows.append(["Service", s["metadata"]["name"],
                         f"{ann.get('scheme')}://{s['spec']['clusterIP']}:5000 -> {ann.get('remote-url')}"])
        _say()
        _say(f"Delivered to the shoot ({SHOOT_NAMESPACE}):")
        _say(_table(rows))
        _say("(no kubelet here: the StatefulSets stay at 0 ready pods; with the node (without --no-node), in kind "
             "or in a real shoot they run)")
        # as the node agent writes it (the controller's default dial_timeout)
        for upstream, text in hosts_toml_for_status(RegistryStatus.model_validate(provider),
                                                    dial_timeout=DEFAULT_DIAL_TIMEOUT).items():
            _say()
            _say(f"/etc/containerd/certs.d/{upstream}/hosts.toml:")
            _say(_indent(text))
        return 0

    def pull(self) -> int:
        return 0

    def hints(self) -> list[str]:
        return [f"  kubectl -n {SHOOT_NAMESPACE} get statefulsets,services,secrets -l {MANAGED_BY_LABEL}={MANAGED_BY}"]

    def check(self) -> None:
        if self.controller is not None:
            self.controller.check()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        _say("Stopping the local control plane ...")
        if self.cp is not None:
            self.cp.stop()


class _WithNode:
    """The one-node cluster, the controller and the node agent (:class:`~extension.local.stack.Stack`), and two
    test upstreams on the node's bridge."""

    def __init__(self, workdir: Path, install: str = "chart"):
        self.workdir = workdir / "node-cluster"
        self.stack = Stack(self.workdir, progress=lambda m: _say(f"  {m}"), node_agent_interval=2.0, install=install)
        self.images: dict[str, PushedImage] = {}

    @property
    def kubeconfig(self) -> Path:
        return self.stack.kubeconfig

    @property
    def controller_log(self) -> Path | str:
        if self.stack.install == "processes":
            return self.stack.cluster.logs / "controller.log"
        return f"kubectl logs -n {NAMESPACE} -l {CONTROLLER_SELECTOR} --prefix"

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)  # a fresh cluster every time
        _say(f"Starting a one-node Kubernetes cluster in {self.workdir} (the first run builds Kubernetes, "
             "distribution and crane with Go: 10-15 minutes; later runs start in about a minute) ...")
        t0 = time.monotonic()
        self.stack.start()
        cluster = self.stack.cluster
        assert cluster.cp is not None
        _say(f"  cluster up in {time.monotonic() - t0:.0f}s: node {NODE_NAME} Ready, API server {cluster.cp.server}")

    def prepare(self, kube: Kube, default_example: bool) -> None:
        """The test upstreams with an image each; for the example, the private upstream's credentials Secret."""
        cluster = self.stack.cluster
        public = cluster.upstream("public")
        username, password = "local-robot", secrets.token_urlsafe(18)
        private = cluster.upstream("private", users={username: password})
        _say(f"  test upstreams: {public.url} (public), {private.url} (private, basic auth), TLS from the test CA "
             f"{cluster.test_ca_file}")
        self.images = {public.host: push_test_image(cluster, public, "library/hello", "1.0"),
                       private.host: push_test_image(cluster, private, "team/app", "1.0", (username, password))}
        for image in self.images.values():
            _say(f"  pushed {image.ref}")
        if default_example:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROJECT_NAMESPACE}})
            _apply_when_webhooks_answer(kube, {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                "metadata": {"name": PRIVATE_SECRET, "namespace": PROJECT_NAMESPACE},
                "stringData": {"username": username, "password": password}})
            _say(f"  created Secret {PROJECT_NAMESPACE}/{PRIVATE_SECRET} (immutable) with the private upstream's "
                 "credentials")
        else:
            self.images = {}  # the given manifests decide which upstreams are cached: no pulls to show

    def show_caches(self, kube: Kube, namespace: str, provider: dict[str, Any], timeout: float) -> int:
        cluster = self.stack.cluster
        upstreams = [c["upstream"] for c in provider.get("caches") or []]
        selector = f"{OWNER_LABEL}={namespace}"
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            sts = kube.list("StatefulSet", SHOOT_NAMESPACE, label_selector=selector)
            return bool(sts) and all((s.get("status") or {}).get("readyReplicas") == s["spec"]["replicas"]
                                     for s in sts)

        while time.monotonic() < deadline and not ready():
            self.check()
            time.sleep(1)
        while time.monotonic() < deadline and not all(
                (cluster.certs_d / u / "hosts.toml").is_file() for u in upstreams):
            time.sleep(1)
        _say()
        _say(f"The caches, as Pods on the node (kubectl get pods,pvc -n {SHOOT_NAMESPACE}):")
        _say(_indent(cluster.kubectl("get", "pods,pvc", "-n", SHOOT_NAMESPACE, "-o", "wide", check=False).stdout))
        for upstream in upstreams:
            path = cluster.certs_d / upstream / "hosts.toml"
            _say()
            _say(f"{path} (written by the node agent, read by the node's containerd):")
            text = cluster.node_file(path)
            _say(_indent(text) if text else "  (not written yet)")
        if not ready():
            _say("Not every cache is Ready: see kubectl describe pod -n kube-system, and the Extension's conditions.")
            return 1
        return 0

    def pull(self) -> int:
        """A Pod per test image; whether the node pulled it through its cache (the upstream's access log)."""
        cluster = self.stack.cluster
        code = 0
        _say()
        for upstream, image in self.images.items():
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
                                                f"involvedObject.name={name},reason=Pulled", "-o", "json").stdout)
            pulled = next((e["message"] for e in events["items"]), "")
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

    def hints(self) -> list[str]:
        cluster = self.stack.cluster
        product = ([f"  kubectl get pods -n {NAMESPACE} -o wide          # the controller (2 replicas, one leads)",
                    "  kubectl get pods -n kube-system -l app.kubernetes.io/component=node-agent   # the node agent",
                    f"  kubectl get lease -n {NAMESPACE}                  # who leads"]
                   if self.stack.install == "chart" else [])
        processes = ", controller, node-agent" if self.stack.install == "processes" else ""
        return ["  kubectl get nodes -o wide", *product,
                f"  kubectl get pods -n {SHOOT_NAMESPACE} -o wide          # the caches",
                f"  ls {cluster.certs_d}   # the node's containerd hosts directory",
                f"Logs: {cluster.logs} (kubelet, containerd, ...{processes}); upstream access logs: "
                f"{cluster.workdir / 'upstreams'}"]

    def check(self) -> None:
        self.stack.check()

    def stop(self) -> None:
        _say("Stopping the cluster ...")
        self.stack.stop()


def run(workdir: Path | None, manifests: list[Path] | None, wait: bool, timeout: float = 180.0,
        node: bool = True, install: str = "chart") -> int:
    """``manifests``: Shoots and Secrets to apply (None: the example, see :func:`default_manifests`);
    ``install``: how the product goes onto the node (:data:`extension.local.stack.INSTALLS`)."""
    workdir = (workdir or Path.cwd() / ".registry-cache-local").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env: _ControlPlaneOnly | _WithNode = _WithNode(workdir, install) if node else _ControlPlaneOnly(workdir)
    try:
        env.start()
        kube = Kube.from_kubeconfig(str(env.kubeconfig), field_manager="kubectl-client-side-apply")
        env.prepare(kube, default_example=manifests is None)
        docs = load_manifests(manifests or default_manifests(node))
        shoots = [d for d in docs if d.get("kind") == "Shoot"]
        for ns in sorted({d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")}):
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for doc in sorted(docs, key=lambda d: d.get("kind") != "Secret"):  # Secrets before the Shoot
            _apply_when_webhooks_answer(kube, doc)
            _say(f"  applied {doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}")
        if not shoots:
            _say("No Shoot in the given manifests: nothing to reconcile.")
            return 1

        code = 0
        for shoot in shoots:
            meta = shoot["metadata"]
            seed_ns = technical_namespace(project_of_namespace(meta["namespace"]), meta["name"])
            ext = _wait_for_extension(kube, seed_ns, timeout, env.check)
            shown, provider = _show_extension(seed_ns, ext, env.controller_log)
            code |= shown
            if shown == 0 and provider:
                code |= env.show_caches(kube, seed_ns, provider, timeout)
        if code == 0:
            code |= env.pull()
        _say()
        _say("Use it with kubectl:")
        _say(f"  export KUBECONFIG={env.kubeconfig}")
        _say("  kubectl get shoots -A")
        _say("  kubectl get extensions -A -o yaml   # status, providerStatus, conditions")
        for line in env.hints():
            _say(line)
        meta = shoots[0]["metadata"]
        _say(f"  kubectl edit shoot -n {meta['namespace']} {meta['name']}"
             "   # change the caches and watch the Extension reconcile")
        referenced = [(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs
                      if d.get("kind") == "Secret"]
        if node and manifests is None:
            referenced.append((PROJECT_NAMESPACE, PRIVATE_SECRET))
        if referenced:
            _say(f"  kubectl delete secret -n {referenced[0][0]} {referenced[0][1]}"
                 "   # refused while a Shoot uses it (admission webhook)")
        _say(f"Controller log: {env.controller_log}")
        if not wait:
            return code
        _say("Running until Ctrl-C ...")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                env.check()
        except KeyboardInterrupt:
            pass
        except ClusterError as exc:
            _say(str(exc))
            return 1
        return code
    finally:
        env.stop()


def _apply_when_webhooks_answer(kube: Kube, doc: dict[str, Any], timeout: float = 30.0) -> None:
    """Apply; while the controller's webhook server is still starting the API server cannot call it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.apply(doc)
            return
        except ApiError as exc:
            if "failed calling webhook" not in exc.message or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_for_extension(kube: Kube, namespace: str, timeout: float,
                        check: Callable[[], None]) -> dict[str, Any] | None:
    """The Extension once its operation for the current generation ended (Succeeded or Error), or as it is
    after ``timeout``; ``check`` raises when a process of the cluster exited."""
    deadline = time.monotonic() + timeout
    ext = None
    while time.monotonic() < deadline:
        check()
        ext = kube.get("Extension", EXTENSION_NAME, namespace)
        last = ((ext or {}).get("status") or {}).get("lastOperation") or {}
        if ext is not None and last.get("state") in (State.SUCCEEDED, State.ERROR) and \
                (ext["status"].get("observedGeneration") == ext["metadata"]["generation"]):
            return ext
        time.sleep(0.5)
    return ext


def _show_extension(namespace: str, ext: dict[str, Any] | None, log: Path | str) -> tuple[int, dict[str, Any]]:
    """Print the Extension's operation and providerStatus; (exit code, providerStatus)."""
    _say()
    if ext is None:
        _say(f"Extension {namespace}/registry-cache did not appear: see {log}")
        return 1, {}
    status = ext.get("status") or {}
    last = status.get("lastOperation") or {}
    _say(f"Extension {namespace}/registry-cache: {last.get('type')} {last.get('state')} - {last.get('description')}")
    if status.get("lastError"):
        _say(f"  lastError: {status['lastError'].get('description')}")
        return 1, {}
    provider = status.get("providerStatus") or {}
    if provider:
        _say("providerStatus:")
        _say(_indent(yaml.safe_dump(provider, sort_keys=False)))
    return 0, provider
