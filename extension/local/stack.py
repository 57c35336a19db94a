"""The whole extension on a local cluster. Used by ``registry-cache local-up`` (:mod:`.up`) and by the e2e tests
(one :class:`Stack` per test session).

On the one-node cluster it is installed as users install it (``install="chart"``, the default): the product
image built from the Dockerfile (:func:`extension.local.images.push_product`) and pushed to the node's
registry, then the Helm chart in mode ``standalone`` (helm from ``hack/helm-bin.sh``): the CRDs and admission
policies, the controller Deployment (2 replicas, leader election, the webhooks behind their Service, answering
only the API server's client certificate), the node agent DaemonSet writing containerd's ``hosts.toml`` into the
node's ``certs.d``, and the shipped RBAC and probes. ``install="processes"`` runs the controller as a process on
the host and the node agent as one in the node's network namespace instead (quick to iterate on, and the only
way without the chart's image). ``install="kustomize"``: the same image with ``kubectl apply -k`` of an overlay of
``manifests/default`` (what a kustomize user writes: the image, the API server's client CA, the node's hosts
directory, the cache image).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from kubernetes import client as k8s_client

from extension.constants import WEBHOOK_CONFIGURATION_NAME
from extension.local.assets import asset_dir
from extension.local.controlplane import apply_manifests, load_manifests, wait_for_crds_established
from extension.local.images import push_product
from extension.local.node import IMAGE_REGISTRY, LocalCluster, bins
from extension.local.procs import ClusterError, Proc, run, tail, wait_for
from extension.runtime.kube import Kube

log = logging.getLogger(__name__)

CRDS = asset_dir("crds")
POLICIES = asset_dir("policies")
INSTALLS = ("chart", "kustomize", "processes")
RELEASE = "registry-cache"
NAMESPACE = "registry-cache"  # the chart's release namespace: the webhook Service, the Lease
CONTROLLER_SELECTOR = "app.kubernetes.io/name=registry-cache,app.kubernetes.io/component=controller"
NODE_AGENT_SELECTOR = "app.kubernetes.io/name=registry-cache,app.kubernetes.io/component=node-agent"
# What the controller runs with on the local cluster, in either install: its upstream checks would come from
# where the test upstreams' CA is not trusted (see start_controller)
CONTROLLER_ARGS = ["--no-upstream-check"]


def install_crds(api: k8s_client.ApiClient) -> None:
    """The Shoot, Cluster and Extension CRDs, established, and standalone mode's admission policies for Shoots
    (without them the bridge delivers nothing)."""
    apply_manifests(api, [CRDS])
    wait_for_crds_established(api, [o["metadata"]["name"] for o in load_manifests([CRDS])], timeout=60)
    apply_manifests(api, [POLICIES])


def start_controller(kubeconfig: Path, log: Path, image: str | None = None, webhook_timeout: float = 60,
                     extra_args: Sequence[str] = ()) -> Proc:
    """``registry-cache run --standalone --webhooks`` on loopback, returned once its webhooks are registered.

    The Shoot webhooks must be there before the first Shoot: an invalid Shoot must not get in.
    ``--no-upstream-check``: the controller contacts nothing beyond this machine (the docs example's upstreams
    are public registries; the node's test upstreams live in the node's network namespace, which the host has
    no route to, so a check from the host would take the host's default route off the machine).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "extension.cli", "run", "--kubeconfig", str(kubeconfig), "--standalone",
            "--webhooks", "--webhook-address", "127.0.0.1", "--webhook-port", str(port), "--no-upstream-check"]
    if image:
        argv += ["--image", image]
    argv += list(extra_args)
    proc = Proc("controller", argv, log).start()
    kube = Kube.from_kubeconfig(str(kubeconfig))
    deadline = time.monotonic() + webhook_timeout
    try:
        while kube.get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME) is None:
            proc.check()
            if time.monotonic() > deadline:
                raise ClusterError(f"the controller did not register its webhooks in {webhook_timeout:.0f}s; "
                                   f"last lines of {log}:\n{tail(log)}")
            time.sleep(0.3)
    except BaseException:
        proc.stop()
        raise
    finally:
        kube.api.close()
    return proc


class Stack:
    """The one-node cluster (:class:`~extension.local.node.LocalCluster`), the CRDs, the controller (rendering
    the cluster's own cache image) and the node agent, installed by ``install`` (see the module).
    ``start()`` / ``stop()``, or a context."""

    def __init__(self, workdir: Path, *, progress: Callable[[str], None] | None = None,
                 node_agent_interval: float = 1.0, install: str = "chart", nodes: int = 1,
                 containerd: str = "1.6"):
        if install not in INSTALLS:
            raise ValueError(f"install must be one of {', '.join(INSTALLS)}, not {install!r}")
        self.workdir = Path(workdir).resolve()
        self.cluster = LocalCluster(self.workdir, progress=progress, nodes=nodes, containerd=containerd)
        self.progress = self.cluster.progress
        self.node_agent_interval = node_agent_interval
        self.install = install
        self.controller: Proc | None = None
        self.node_agent: Proc | None = None
        self.node_agents: list[Proc] = []
        self.image: str | None = None  # the product image on the node's registry (in-cluster installs)
        self.helm: Path | None = None
        self.controller_args = list(CONTROLLER_ARGS)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def start(self) -> Stack:
        try:
            self.cluster.start()
            assert self.cluster.cp is not None and self.cluster.images is not None
            if self.install == "processes":
                api = self.cluster.cp.api_client()
                try:
                    install_crds(api)
                finally:
                    api.close()
                self.controller = start_controller(self.kubeconfig, self.cluster.logs / "controller.log",
                                                   image=self.cluster.images.registry)
                self.progress(f"controller running (pid {self.controller.pid}) with its webhooks registered, "
                              f"log {self.controller.log}")
                self.start_node_agent()
            else:
                self._install_in_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    # -- in the cluster, from the image, with the chart ------------------------------------------------------

    def _install_in_cluster(self) -> None:
        self.progress("the product image: built from the Dockerfile with buildah (cached by its sources), pushed "
                      "to the node's registry")
        t0 = time.monotonic()
        def said(line: str) -> None:  # the script's own lines; buildah's and pip's go to the log alone
            (self.progress if line.startswith("image:") else log.debug)(f"  {line}")

        pushed = push_product(self.cluster.crane, IMAGE_REGISTRY, self.workdir / "product-image", progress=said)
        self.image = pushed.by_digest
        self.progress(f"image {pushed.reference} ({pushed.digest[:19]}...) in {time.monotonic() - t0:.0f}s")
        self.reinstall(self.install)

    def reinstall(self, install: str) -> None:
        """Install the product (again) with ``install`` (chart or kustomize), removing what the other one
        installed first; until it serves (:meth:`wait_installed`)."""
        if self.install != install:
            self.uninstall()
        self.install = install
        if install == "chart":
            self.helm = self.helm or bins("helm-bin.sh", self.progress)
            self._helm_upgrade()
            self.progress(f"installed with helm: release {RELEASE} in namespace {NAMESPACE}")
        else:
            overlay = self.kustomize_overlay()
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(overlay), timeout=300)
            self.progress(f"installed with kubectl apply -k {overlay}")
        self.wait_installed()

    def uninstall(self) -> None:
        """Remove the controller and the node agent (not the CRDs: deleting them would delete every Shoot)."""
        if self.install == "chart" and self.helm is not None:
            run([str(self.helm), "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--kubeconfig",
                 str(self.kubeconfig)], timeout=300, check=False)
        elif self.install == "kustomize":  # what the overlay applied but the CRDs and the namespace
            rendered = self.cluster.kubectl("kustomize", str(self.workdir / "kustomize-overlay")).stdout
            keep = ("CustomResourceDefinition", "Namespace")
            objects = [o for o in yaml.safe_load_all(rendered) if o and o.get("kind") not in keep]
            self.cluster.kubectl("delete", "--wait=true", "--ignore-not-found", "-f", "-",
                                 input=yaml.safe_dump_all(objects), timeout=300)

    def kustomize_overlay(self, extra_args: Sequence[str] = ()) -> Path:
        """An overlay of ``manifests/default`` for this cluster, as a kustomize user writes one: the image by digest,
        the API server's client CA (a ConfigMap mounted as ``--webhook-client-ca``), the cache image, the node's
        containerd hosts directory for the node agent."""
        assert self.image is not None and self.cluster.images is not None and self.cluster.cp is not None
        overlay = self.workdir / "kustomize-overlay"
        overlay.mkdir(exist_ok=True)
        (overlay / "webhook-client-ca.crt").write_text(self.cluster.cp.webhook_client_ca_file.read_text())
        repository, _, digest = self.image.partition("@")
        hosts = str(self.cluster.certs_path)
        args = ["--webhook-client-ca", "/etc/registry-cache/webhook-client-ca/ca.crt",
                "--image", self.cluster.images.registry, *self.controller_args, *extra_args]
        # the caches' coalescing front runs the product's image too (the argument after --front-image)
        controller = [{"op": "test", "path": "/spec/template/spec/containers/0/args/12", "value": "--front-image"},
                      {"op": "replace", "path": "/spec/template/spec/containers/0/args/13", "value": self.image},
                      *({"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a} for a in args),
                      {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {
                          "name": "webhook-client-ca", "configMap": {"name": "registry-cache-webhook-client-ca"}}},
                      {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-", "value": {
                          "name": "webhook-client-ca", "mountPath": "/etc/registry-cache/webhook-client-ca",
                          "readOnly": True}}]
        agent = [{"op": "replace", "path": "/spec/template/spec/containers/0/args/2", "value": hosts},
                 {"op": "replace", "path": "/spec/template/spec/containers/0/volumeMounts/0/mountPath", "value": hosts},
                 {"op": "replace", "path": "/spec/template/spec/volumes/0/hostPath/path", "value": hosts}]
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(asset_dir("manifests") / "default", overlay)],
            "images": [{"name": "registry-cache", "newName": repository, "digest": digest}],
            "configMapGenerator": [{"name": "registry-cache-webhook-client-ca", "namespace": NAMESPACE,
                                    "files": ["ca.crt=webhook-client-ca.crt"],
                                    "options": {"disableNameSuffixHash": True}}],
            "patches": [{"target": {"kind": "Deployment", "name": "registry-cache-controller"},
                         "patch": json.dumps(controller)},
                        {"target": {"kind": "DaemonSet", "name": "registry-cache-node-agent"},
                         "patch": json.dumps(agent)}]}
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        return overlay

    def chart_values(self, extra_args: Sequence[str] = ()) -> dict[str, object]:
        """The values a user of this cluster gives the chart."""
        assert self.image is not None and self.cluster.images is not None and self.cluster.cp is not None
        repository, _, digest = self.image.partition("@")
        return {"mode": "standalone", "image": {"repository": repository, "tag": digest},
                "cacheImage": self.cluster.images.registry,
                "webhook": {"clientCA": self.cluster.cp.webhook_client_ca_file.read_text()},
                "nodeAgent": {"hostPath": str(self.cluster.certs_path)},
                "extraArgs": [*self.controller_args, *extra_args]}

    def _helm_upgrade(self, extra_args: Sequence[str] = ()) -> None:
        assert self.helm is not None
        values = self.workdir / "chart-values.yaml"
        values.write_text(yaml.safe_dump(self.chart_values(extra_args)))
        values.chmod(0o600)
        done = run([str(self.helm), "upgrade", "--install", RELEASE, str(asset_dir("chart")), "--namespace",
                    NAMESPACE, "--create-namespace", "--values", str(values), "--kubeconfig", str(self.kubeconfig)],
                   timeout=300).stdout
        self.progress(done.strip().splitlines()[0] if done.strip() else "helm: installed")

    def wait_installed(self, timeout: float = 240) -> None:
        """Until the product serves as installed: the controller Deployment rolled out with every replica Ready
        (its readiness: the webhook serves and, on the leader, the watches are synced), the node agent Ready on
        the node, and the API server calling the webhooks through their Service (an invalid Shoot, dry run,
        refused in the Shoot webhook's words). A failure names what is not so, with the Pods' state."""
        def rolled_out(kind: str, selector: str, namespace: str) -> bool:
            items = json.loads(self.cluster.kubectl("get", kind, "-n", namespace, "-l", selector, "-o",
                                                    "json").stdout)["items"]
            if not items:
                return False
            for obj in items:
                status, generation = obj.get("status") or {}, obj["metadata"].get("generation")
                if status.get("observedGeneration") != generation:
                    return False
                if kind == "deployment":
                    want = obj["spec"].get("replicas", 1)
                    if not (status.get("updatedReplicas") == status.get("readyReplicas") ==
                            status.get("replicas") == want):
                        return False
                elif not (status.get("desiredNumberScheduled") == status.get("updatedNumberScheduled") ==
                          status.get("numberReady") and status.get("desiredNumberScheduled")):
                    return False
            return True

        def old_replicas_gone() -> bool:
            """No controller Pod of the previous rollout is still terminating: one that still leads may reconcile
            with its old flags until its process ends (a Shoot made right after a restart would be delivered twice,
            its caches replaced)."""
            pods = json.loads(self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", CONTROLLER_SELECTOR, "-o",
                                                   "json").stdout)["items"]
            return not any(p["metadata"].get("deletionTimestamp") for p in pods)

        details = self.in_cluster_state
        wait_for("the controller Deployment to roll out with every replica Ready",
                 lambda: rolled_out("deployment", CONTROLLER_SELECTOR, NAMESPACE), timeout=timeout,
                 details=details)
        wait_for("the controller's previous replicas to end", old_replicas_gone, timeout=timeout, details=details)
        wait_for("the node agent DaemonSet to be Ready on the node",
                 lambda: rolled_out("daemonset", NODE_AGENT_SELECTOR, "kube-system"), timeout=timeout,
                 details=details)
        wait_for("the API server to call the Shoot webhook through its Service", self.webhook_answers,
                 timeout=timeout, details=lambda: details() + "\n" + self.webhook_call_failure())

    _PROBE_SHOOT = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                    "metadata": {"name": "webhook-probe", "namespace": "garden"},
                    "spec": {"extensions": [{"type": "registry-cache"}]}}

    def webhook_call_failure(self) -> str:
        """What the API server says when it creates (dry run) a Shoot the Shoot webhook must refuse."""
        self.cluster.kubectl("create", "namespace", "garden", check=False)
        res = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(self._PROBE_SHOOT),
                                   check=False)
        return (res.stdout + res.stderr).strip()

    def webhook_answers(self) -> bool:
        return "providerConfig is required for the registry-cache extension" in self.webhook_call_failure()

    def in_cluster_state(self) -> str:
        """The Pods of the product with their state and the last events, for a failure message."""
        out = [self.cluster.kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/name=registry-cache", "-o",
                                    "wide", check=False).stdout]
        for namespace in (NAMESPACE, "kube-system"):
            events = self.cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                                          check=False).stdout.splitlines()
            out.append("\n".join(events[-15:]))
        return "\n".join(out) + "\n" + self.logs(20)

    def restart_controller(self, extra_args: Sequence[str] = ()) -> None:
        """The controller again, with these flags of ``registry-cache run`` besides its own (in the cluster: a
        ``helm upgrade`` and a rollout; as a process: its log goes on)."""
        assert self.cluster.images is not None
        if self.install == "chart":
            self._helm_upgrade(extra_args)
            self.wait_installed()
            return
        if self.install == "kustomize":
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k",
                                 str(self.kustomize_overlay(extra_args)), timeout=300)
            self.wait_installed()
            return
        if self.controller is not None:
            self.controller.stop()
        self.controller = start_controller(self.kubeconfig, self.cluster.logs / "controller.log",
                                           image=self.cluster.images.registry, extra_args=extra_args)

    def start_node_agent(self) -> None:
        """One node agent per node, as a process in the node (its network and mount namespaces)."""
        self.node_agents = [Proc(f"node-agent{node.suffix}", node.argv([
            sys.executable, "-m", "extension.cli", "node-agent", "--kubeconfig", str(self.kubeconfig),
            "--root", str(self.cluster.certs_path), "--interval", str(self.node_agent_interval)]),
            node.log("node-agent")).start() for node in self.cluster.nodes]
        self.node_agent = self.node_agents[0]
        self.progress(f"node agent running in each node, writing {self.cluster.certs_path} there")

    def check(self) -> None:
        self.cluster.check()
        for p in (self.controller, *self.node_agents):
            if p is not None:
                p.check()

    def logs(self, lines: int = 40) -> str:
        parts = []
        if self.install == "processes":
            for name in ("controller", "node-agent"):
                parts.append(f"--- {name}\n{tail(self.cluster.logs / f'{name}.log', lines)}")
            return "\n".join(parts)
        for namespace, selector in ((NAMESPACE, CONTROLLER_SELECTOR), ("kube-system", NODE_AGENT_SELECTOR)):
            pods = json.loads(self.cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json",
                                                   check=False).stdout or '{"items": []}')["items"]
            for pod in pods:
                name = pod["metadata"]["name"]
                said = self.cluster.kubectl("logs", "-n", namespace, name, f"--tail={lines}", check=False)
                parts.append(f"--- {namespace}/{name}\n{said.stdout}{said.stderr}")
        return "\n".join(parts)

    def stop(self) -> None:
        for p in (*self.node_agents, self.controller):
            if p is not None:
                p.stop()
        self.cluster.stop()
