"""The whole extension on the local one-node cluster: the CRDs, the controller in standalone mode with its
webhooks (a process on the host, rendering the cluster's own cache image), and the node agent (a process in
the node's network namespace, writing containerd's ``hosts.toml`` into the node's ``certs.d``). Used by
``registry-cache local-up`` and by the e2e tests (one per test session)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Callable

from ..controlplane import apply_manifests, load_manifests, wait_for_crds_established
from .node import LocalCluster
from .procs import ClusterError, Proc, tail

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "manifests" / "crds"


class Stack:
    def __init__(self, workdir: Path, *, progress: Callable[[str], None] | None = None,
                 node_agent_interval: float = 1.0):
        self.workdir = Path(workdir).resolve()
        self.cluster = LocalCluster(self.workdir, progress=progress)
        self.progress = self.cluster.progress
        self.node_agent_interval = node_agent_interval
        self.controller: Proc | None = None
        self.node_agent: Proc | None = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def start(self) -> "Stack":
        try:
            self.cluster.start()
            api = self.cluster.cp.api_client()  # type: ignore[union-attr]
            try:
                apply_manifests(api, [CRDS])
                wait_for_crds_established(api, [o["metadata"]["name"] for o in load_manifests([CRDS])], timeout=60)
            finally:
                api.close()
            self.start_controller()
            self.start_node_agent()
        except BaseException:
            self.stop()
            raise
        return self

    def start_controller(self) -> None:
        assert self.cluster.images is not None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.controller = Proc("controller", [
            sys.executable, "-m", "extension.cli", "run", "--kubeconfig", str(self.kubeconfig), "--standalone",
            "--webhooks", "--webhook-address", "127.0.0.1", "--webhook-port", str(port),
            "--image", self.cluster.images.registry], self.cluster.logs / "controller.log", cwd=REPO).start()
        self.progress(f"controller running (pid {self.controller.pid}), log {self.controller.log}")

    def start_node_agent(self) -> None:
        self.node_agent = Proc("node-agent", self.cluster.in_node([
            sys.executable, "-m", "extension.cli", "node-agent", "--kubeconfig", str(self.kubeconfig),
            "--root", str(self.cluster.certs_d), "--interval", str(self.node_agent_interval)]),
            self.cluster.logs / "node-agent.log", cwd=REPO).start()
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


def wait(what: str, probe: Callable[[], object], timeout: float, interval: float = 0.5) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
