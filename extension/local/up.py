"""``registry-cache local-up``: the whole thing on this machine, no cluster needed.

Starts a real local control plane (etcd + kube-apiserver), installs the CRDs, runs the controller with the
standalone Shoot bridge, applies a Shoot and its Secrets (the docs example by default), waits for the
Extension and shows what happened: its status, the StatefulSets and Services it delivered, and the
``hosts.toml`` each node would get. Then it keeps running until Ctrl-C.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    WEBHOOK_CONFIGURATION_NAME,
    State,
)
from extension.kube import ApiError, Kube
from extension.local.assets import asset_dir
from extension.local.controlplane import LocalControlPlane, apply_manifests, load_manifests, wait_for_crds_established

CRDS = asset_dir("crds")
EXAMPLES = asset_dir("examples")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(workdir: Path | None, manifests: list[Path], wait: bool, timeout: float = 90.0) -> int:
    workdir = (workdir or Path.cwd() / ".registry-cache-local").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _say(f"Starting a local control plane in {workdir} (the first run builds kube-apiserver and etcd with Go: "
         "a few minutes) ...")
    shutil.rmtree(workdir / "control-plane", ignore_errors=True)  # a fresh cluster every time
    cp = LocalControlPlane(workdir=workdir / "control-plane", progress=lambda m: _say(f"  {m}"))
    operator: subprocess.Popen | None = None
    try:
        cp.start()
        api = cp.api_client()
        apply_manifests(api, [CRDS])
        wait_for_crds_established(api, [o["metadata"]["name"] for o in load_manifests([CRDS])], timeout=60)
        kube = Kube(api, field_manager="kubectl-client-side-apply")
        _say(f"  API server {cp.server} is up; CRDs installed (Shoot, Extension, Cluster).")

        log_path = workdir / "controller.log"
        log_file = open(log_path, "ab")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            webhook_port = probe.getsockname()[1]
        operator = subprocess.Popen(
            [sys.executable, "-m", "extension.cli", "run", "--kubeconfig", str(cp.kubeconfig), "--standalone",
             "--webhooks", "--webhook-address", "127.0.0.1", "--webhook-port", str(webhook_port),
             # the example's quay.io credentials are made up, and local-up contacts nothing beyond this machine
             "--no-upstream-check"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        _say(f"  controller running (pid {operator.pid}), log: {log_path}")

        # The Shoot webhooks must be registered first: they check (and record for the bridge) that the Shoot's
        # author may read the Secrets it references; a Shoot written before gets no Secret copied.
        deadline = time.monotonic() + 60
        while kube.get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME) is None:
            if operator.poll() is not None or time.monotonic() > deadline:
                _say(f"The controller did not register its webhooks; see {log_path}")
                return 1
            time.sleep(0.3)
        docs = load_manifests(manifests)
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
            ext = _wait_for_extension(kube, seed_ns, timeout, operator)
            code |= _show(kube, seed_ns, ext)
        _say()
        _say("Use it with kubectl:")
        _say(f"  export KUBECONFIG={cp.kubeconfig}")
        _say("  kubectl get shoots -A")
        _say("  kubectl get extensions -A")
        _say(f"  kubectl -n {SHOOT_NAMESPACE} get statefulsets,services,secrets -l {MANAGED_BY_LABEL}={MANAGED_BY}")
        _say(f"  kubectl edit shoot -n {shoots[0]['metadata']['namespace']} {shoots[0]['metadata']['name']}"
             "   # change the caches and watch the Extension reconcile")
        referenced = [d for d in docs if d.get("kind") == "Secret"]
        if referenced:
            meta = referenced[0]["metadata"]
            _say(f"  kubectl delete secret -n {meta.get('namespace')} {meta['name']}"
                 "   # refused while a Shoot uses it (admission webhook)")
        _say(f"Controller log: {log_path}")
        if not wait:
            return code
        _say("Running until Ctrl-C ...")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                if operator.poll() is not None:
                    _say(f"The controller exited with {operator.returncode}; see {log_path}")
                    return 1
        except KeyboardInterrupt:
            pass
        return code
    finally:
        if operator is not None and operator.poll() is None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
        _say("Stopping the local control plane ...")
        cp.stop()


def _apply_when_webhooks_answer(kube: Kube, doc: dict, timeout: float = 30.0) -> None:
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


def _wait_for_extension(kube: Kube, namespace: str, timeout: float, operator: subprocess.Popen) -> dict | None:
    deadline = time.monotonic() + timeout
    ext = None
    while time.monotonic() < deadline and operator.poll() is None:
        ext = kube.get("Extension", EXTENSION_NAME, namespace)
        last = ((ext or {}).get("status") or {}).get("lastOperation") or {}
        if ext is not None and last.get("state") in (State.SUCCEEDED, State.ERROR) and \
                (ext["status"].get("observedGeneration") == ext["metadata"]["generation"]):
            return ext
        time.sleep(0.5)
    return ext


def _show(kube: Kube, namespace: str, ext: dict | None) -> int:
    _say()
    if ext is None:
        _say(f"Extension {namespace}/registry-cache did not appear: see the controller log.")
        return 1
    status = ext.get("status") or {}
    last = status.get("lastOperation") or {}
    _say(f"Extension {namespace}/registry-cache: {last.get('type')} {last.get('state')} - {last.get('description')}")
    if status.get("lastError"):
        _say(f"  lastError: {status['lastError'].get('description')}")
        return 1
    provider = status.get("providerStatus")
    if not provider:
        return 0
    _say("providerStatus:")
    _say("  " + yaml.safe_dump(provider, sort_keys=False).replace("\n", "\n  ").rstrip())
    selector = f"{OWNER_LABEL}={namespace}"
    sts = kube.list("StatefulSet", SHOOT_NAMESPACE, label_selector=selector)
    services = kube.list("Service", SHOOT_NAMESPACE, label_selector=selector)
    _say()
    _say("Delivered to the shoot (kube-system):")
    rows = [["KIND", "NAME", "DETAIL"]]
    for s in sts:
        claim = s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        image = s["spec"]["template"]["spec"]["containers"][0]["image"]
        rows.append(["StatefulSet", s["metadata"]["name"],
                     f"replicas {s['spec']['replicas']}, volume {claim}, {image}"])
    for s in services:
        ann = s["metadata"].get("annotations") or {}
        rows.append(["Service", s["metadata"]["name"],
                     f"{ann.get('scheme')}://{s['spec']['clusterIP']}:5000 -> {ann.get('remote-url')}"])
    _say(_table(rows))
    _say("(no kubelet here: the StatefulSets stay at 0 ready pods; in kind or a real shoot they run)")
    # as the node agent writes it (the controller's default dial_timeout)
    for upstream, text in hosts_toml_for_status(RegistryStatus.model_validate(provider),
                                                dial_timeout=DEFAULT_DIAL_TIMEOUT).items():
        _say()
        _say(f"/etc/containerd/certs.d/{upstream}/hosts.toml:")
        _say("\n".join(f"  {line}" if line else "" for line in text.rstrip().splitlines()))
    return 0


def default_manifests() -> list[Path]:
    return [EXAMPLES / "quay-credentials-v1.yaml", EXAMPLES / "shoot.yaml"]
