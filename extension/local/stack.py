"""The whole extension on a local cluster: the CRDs, the controller in standalone mode with its webhooks (a
process on the host), and with the one-node cluster the node agent (a process in the node's network
namespace, writing containerd's ``hosts.toml`` into the node's ``certs.d``). Used by ``registry-cache
local-up`` (:mod:`.up`) and by the e2e tests (one :class:`Stack` per test session)."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes import client as k8s_client

from extension.constants import WEBHOOK_CONFIGURATION_NAME
from extension.kube import Kube
from extension.local.assets import asset_dir
from extension.local.controlplane import apply_manifests, load_manifests, wait_for_crds_established
from extension.local.node import LocalCluster
from extension.local.procs import ClusterError, Proc, tail

CRDS = asset_dir("crds")
POLICIES = asset_dir("policies")


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
    the cluster's own cache image) and the node agent. ``start()`` / ``stop()``, or a context."""

    def __init__(self, workdir: Path, *, progress: Callable[[str], None] | None = None,
                 node_agent_interval: float = 1.0):
        self.workdir = Path(workdir).resolve()
        self.cluster = LocalCluster(self.workdir, progress=progress)
        self.progress = self.cluster.progress
        self.node_agent_interval = node_agent_interval
        self.controller: Proc | None = None
        self.node_agent: Proc | None = None

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
        except BaseException:
            self.stop()
            raise
        return self

    def restart_controller(self, extra_args: Sequence[str] = ()) -> None:
        """The controller again, with these flags of ``registry-cache run`` (its log goes on)."""
        assert self.cluster.images is not None
        if self.controller is not None:
            self.controller.stop()
        self.controller = start_controller(self.kubeconfig, self.cluster.logs / "controller.log",
                                           image=self.cluster.images.registry, extra_args=extra_args)

    def start_node_agent(self) -> None:
        self.node_agent = Proc("node-agent", self.cluster.in_node([
            sys.executable, "-m", "extension.cli", "node-agent", "--kubeconfig", str(self.kubeconfig),
            "--root", str(self.cluster.certs_d), "--interval", str(self.node_agent_interval)]),
            self.cluster.logs / "node-agent.log").start()
        self.progress(f"node agent running in the node's network namespace, writing {self.cluster.certs_d}")

    def check(self) -> None:
        for p in (self.controller, self.node_agent):
            if p is not None:
                p.check()

    def logs(self, lines: int = 40) -> str:
        parts = []
        for name in ("controller", "node-agent"):
            parts.append(f"--- {name}\n{tail(self.cluster.logs / f'{name}.log', lines)}")
        return "\n".join(parts)

    def stop(self) -> None:
        for p in (self.node_agent, self.controller):
            if p is not None:
                p.stop()
        self.cluster.stop()
