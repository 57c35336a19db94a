"""The controller's probes against the real API server: /readyz once it can serve, /healthz failing for a worker
stuck on one Extension and for watches that keep failing (the API server cut off through a proxy), and
passing again once that is over. The kubelet acting on them: tests/e2e/test_node.py (in the cluster)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import yaml

from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for
from .tcp_proxy import TcpProxy
from .test_bridge import example_shoot

PROJECT = "probes"
NS = f"garden-{PROJECT}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:  # not listening (yet)
        return 0, str(exc.reason)


def test_the_probes_tell_the_truth(control_plane, tmp_path):
    kube = Kube(control_plane.api_client(), field_manager="kubectl-test")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    proxy = TcpProxy(server.hostname, server.port).start()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    proxied = tmp_path / "kubeconfig"
    proxied.write_text(yaml.safe_dump(config))
    port, flag = free_port(), tmp_path / "slow-once"
    op = OperatorProcess(proxied, tmp_path / "op.log", "--standalone", "--webhooks", "--webhook-address",
                         "127.0.0.1", "--webhook-port", str(free_port()), "--webhook-client-ca",
                         str(control_plane.webhook_client_ca_file), "--liveness", f"http://127.0.0.1:{port}/healthz",
                         "--probe-watch-grace", "3", "--probe-worker-deadline", "3",
                         slow_at=("after-services", 12.0, flag)).start()
    try:
        wait_for("ready", lambda: probe(port, "/readyz") == (200, "ok\n"), timeout=60, log=op.log)
        assert probe(port, "/healthz") == (200, "ok\n")
        # a worker on one Extension past the deadline
        flag.touch()
        shoot = example_shoot("stuck", PROJECT)
        shoot["spec"]["resources"] = []
        for cache in shoot["spec"]["extensions"][0]["providerConfig"]["caches"]:
            cache.pop("secretReferenceName", None)
        kube.create(shoot)
        wait_for("the slow operation", lambda: "slow_at: sleeping" in op.log(), timeout=60, log=op.log)
        code, said = wait_for("liveness to fail", lambda: (r := probe(port, "/healthz"))[0] == 500 and r,
                              timeout=15, log=op.log)
        assert "a worker is stuck on Extension shoot--probes--stuck/registry-cache for" in said, said
        assert probe(port, "/readyz")[0] == 200  # it still serves the webhooks
        wait_for("the operation to end", lambda: "slow_at: awake" in op.log(), timeout=30, log=op.log)
        wait_for("alive again", lambda: probe(port, "/healthz") == (200, "ok\n"), timeout=15, log=op.log)
        # the API server away: the watches fail, past the grace liveness fails naming them
        proxy.cut()
        code, said = wait_for("liveness to fail", lambda: (r := probe(port, "/healthz"))[0] == 500 and r,
                              timeout=30, log=op.log)
        assert "the watch of shoots has failed for" in said and "the watch of Extension has failed for" in said, said
        proxy.restore()
        wait_for("alive again", lambda: probe(port, "/healthz") == (200, "ok\n"), timeout=60, log=op.log)
        # ready once the watches listed again (after liveness: a watch that retries is alive, not yet synced)
        wait_for("ready again", lambda: probe(port, "/readyz") == (200, "ok\n"), timeout=60, log=op.log)
    finally:
        op.stop()
        proxy.cut()
