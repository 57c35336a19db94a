#!/usr/bin/env python3
"""What idle node agents cost the API server, counted by the API server itself. Prints its figures; asserts nothing.

    python hack/bench_nodeagent.py [--agents 3] [--seconds 300] [--source DIR] [--interval 5] [--no-node-auth]

It starts a fresh local control plane (etcd + kube-apiserver) with an audit log of every request made as the node
agent's ServiceAccount (``manifests/nodeagent/rbac.yaml`` of ``--source``, applied as is), and publishes in
``kube-system`` what the controller publishes for one cache: a node-config ConfigMap whose entry points at a
"cache" on loopback that answers ``/v2/``, and (unless ``--no-node-auth``) the Secret ``registry-cache-node-auth``
with the key the entry names. Then it runs ``--agents`` agents as processes (``registry-cache node-agent`` with a
token of that ServiceAccount, each with its own ``--root``), all from the code in ``--source`` (default: this
checkout; give a checkout of another commit to measure that one: ``git worktree add /tmp/old main``).

Once every agent has written its ``hosts.toml`` (the warm-up), nothing changes for ``--seconds``. It prints:

- the requests the agents made in that idle window, by verb and resource, from the audit log (each request
  once, whatever its stages; a WATCH counts when it starts), per agent and per second, and what that would be
  for 1,000 nodes;
- the requests of the warm-up (the start of the agents until the last ``hosts.toml``);
- the API server's own count (``apiserver_request_total`` of its ``/metrics``, by verb and resource, for
  configmaps and secrets; it also counts its own internal requests, and a WATCH only when it ends) and the
  watches open at the end (``apiserver_longrunning_requests``);
- the agents' CPU seconds in the window (``/proc``).

Everything runs on loopback; nothing is left behind (``--workdir`` keeps logs and the audit log).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from extension.local.controlplane import LocalControlPlane, apply_manifests  # noqa: E402
from extension.runtime.kube import Kube  # noqa: E402

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "registry-cache-node-agent"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
LABEL = "registry-cache.gardener.cloud/node-config"
SECRET = "registry-cache-node-auth"
KEY = "registry-bench-example"
UPSTREAM = "bench.example"
CLK_TCK = os.sysconf("SC_CLK_TCK")

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [USER]}, {"level": "None"}],
}


class Cache:
    """Answers ``GET /v2/`` as a registry does: what the agents' readiness probe asks."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def token_kubeconfig(admin: Kube, cp: LocalControlPlane, path: Path) -> Path:
    answer = admin.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token",
                           body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 7200}})
    cluster = yaml.safe_load(cp.kubeconfig.read_text())["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "agent", "user": {"token": answer["status"]["token"]}}],
        "contexts": [{"name": "agent", "context": {"cluster": cluster["name"], "user": "agent"}}],
        "current-context": "agent"}))
    path.chmod(0o600)
    return path


def publish(admin: Kube, cache: Cache, node_auth: bool) -> None:
    host: dict[str, Any] = {"url": cache.url, "capabilities": ["pull", "resolve"], "dialTimeout": "100ms"}
    if node_auth:
        host["nodeAuth"] = KEY
        admin.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": SECRET, "namespace": NAMESPACE},
                     "stringData": {KEY: "Basic YmVuY2g6YmVuY2g="}})
    entry = {"upstream": UPSTREAM, "server": f"https://{UPSTREAM}", "hosts": [host], "readinessProbe": True}
    admin.apply({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "registry-cache-node-config-bench", "namespace": NAMESPACE,
                              "labels": {LABEL: "true"}},
                 "data": {"registries.yaml": yaml.safe_dump({"registries": [entry]}, sort_keys=False)}})


def audit_requests(path: Path, start: dt.datetime, end: dt.datetime) -> Counter[tuple[str, str]]:
    """(verb, resource) of every request of the agents received in [start, end), each auditID once."""
    seen: set[str] = set()
    out: Counter[tuple[str, str]] = Counter()
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("user", {}).get("username") != USER or event["auditID"] in seen:
                continue
            received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if start <= received < end:
                seen.add(event["auditID"])
                out[(event["verb"].upper(), (event.get("objectRef") or {}).get("resource", "?"))] += 1
    return out


_SAMPLE = re.compile(r'^(apiserver_request_total|apiserver_longrunning_requests)\{([^}]*)\} ([0-9.e+]+)$')


def server_metrics(admin: Kube) -> dict[tuple[str, str, str], float]:
    """(metric, verb, resource) -> value for configmaps and secrets, summed over the other labels."""
    _, url, headers, _, _ = admin.api.param_serialize(method="GET", resource_path="/metrics",
                                                      header_params={"Accept": "text/plain"},
                                                      auth_settings=["BearerToken"])
    text = admin.api.rest_client.pool_manager.request("GET", url, headers=headers).data.decode()
    out: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if labels.get("resource") in ("configmaps", "secrets"):
            out[(match.group(1), labels.get("verb", ""), labels["resource"])] += float(match.group(3))
    return dict(out)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def table(counts: Counter[tuple[str, str]], agents: int, seconds: float) -> list[str]:
    rows = [f"  {'verb':<6} {'resource':<11} {'requests':>8} {'per agent':>10} {'per s':>8} "
            f"{'1,000 nodes: per s':>19}"]
    for (verb, resource), n in sorted(counts.items()):
        rows.append(f"  {verb:<6} {resource:<11} {n:>8} {n / agents:>10.1f} {n / seconds:>8.3f} "
                    f"{n / agents * 1000 / seconds:>19.2f}")
    total = sum(counts.values())
    rows.append(f"  {'all':<18} {total:>8} {total / agents:>10.1f} {total / seconds:>8.3f} "
                f"{total / agents * 1000 / seconds:>19.2f}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=300.0, help="the idle window (default 300)")
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout whose node agent runs")
    parser.add_argument("--interval", default="5", help="the agents' --interval (default 5, as the DaemonSet)")
    parser.add_argument("--no-node-auth", dest="node_auth", action="store_false",
                        help="no cache only nodes can read (no Secret for the agents to read)")
    parser.add_argument("--workdir", type=Path, help="keep logs and the audit log here")
    args = parser.parse_args()
    source = args.source.resolve()
    commit = subprocess.run(["git", "-C", str(source), "log", "-1", "--format=%h %s"], capture_output=True,
                            text=True).stdout.strip()[:100]
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="bench-nodeagent-"))
    workdir.mkdir(parents=True, exist_ok=True)
    policy, audit = workdir / "audit-policy.yaml", workdir / "audit.log"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit.unlink(missing_ok=True)
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"node agent of {source} ({commit}); {args.agents} agents, --interval {args.interval}, node auth "
          f"{'on' if args.node_auth else 'off'}; an idle window of {args.seconds:.0f} s", flush=True)

    cp = LocalControlPlane(workdir=workdir / "cp", name="bench-nodeagent",
                           apiserver_args=[f"--audit-policy-file={policy}", f"--audit-log-path={audit}",
                                           "--audit-log-format=json", "--audit-log-mode=blocking"])
    cache = Cache()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        cp.start()
        admin = Kube(cp.api_client(), field_manager="bench-nodeagent")
        apply_manifests(cp.api_client(), [source / "manifests" / "nodeagent" / "rbac.yaml"])
        kubeconfig = token_kubeconfig(admin, cp, workdir / "agent-kubeconfig")
        publish(admin, cache, args.node_auth)
        roots = [workdir / f"agent-{i}" / "certs.d" for i in range(args.agents)]
        for root in roots:
            shutil.rmtree(root.parent, ignore_errors=True)
            root.parent.mkdir(parents=True)
        started = dt.datetime.now(dt.UTC)
        for root in roots:
            log = open(root.parent / "agent.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "extension.cli", "node-agent", "--kubeconfig", str(kubeconfig), "--root",
                 str(root), "--namespace", NAMESPACE, "--interval", args.interval],
                cwd=source, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                                       "PYTHONPATH": str(source)}))
        deadline = time.monotonic() + 120
        while not all((root / UPSTREAM / "hosts.toml").is_file() for root in roots):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"the agents did not write their hosts.toml; logs in {workdir}/agent-*/agent.log")
            time.sleep(0.1)
        if args.node_auth:
            assert all("Authorization" in (root / UPSTREAM / "hosts.toml").read_text() for root in roots)
        time.sleep(2)  # what the last sync started is over
        t0 = dt.datetime.now(dt.UTC)
        before, cpu0 = server_metrics(admin), [cpu_seconds(p.pid) for p in procs]
        time.sleep(args.seconds)
        t1 = dt.datetime.now(dt.UTC)
        after, cpu1 = server_metrics(admin), [cpu_seconds(p.pid) for p in procs]
        seconds = (t1 - t0).total_seconds()
        time.sleep(1)  # the audit log is written as requests are answered

        idle = audit_requests(audit, t0, t1)
        warmup = audit_requests(audit, started, t0)
        print(f"\nrequests of the {args.agents} agents in the idle window of {seconds:.0f} s (the API server's audit "
              f"log, user {USER}):")
        print("\n".join(table(idle, args.agents, seconds)))
        print(f"\nrequests of the warm-up ({(t0 - started).total_seconds():.1f} s from the start of the agents to the "
              "last hosts.toml, and 2 s):")
        print("\n".join(f"  {verb} {resource}: {n}" for (verb, resource), n in sorted(warmup.items())))
        print("\nthe API server's /metrics in the window (all clients; a WATCH counts when it ends):")
        for key in sorted(set(before) | set(after)):
            metric, verb, resource = key
            if metric == "apiserver_request_total" and after.get(key, 0) - before.get(key, 0):
                print(f"  apiserver_request_total{{verb={verb}, resource={resource}}} "
                      f"+{after.get(key, 0) - before.get(key, 0):.0f}")
        for key, value in sorted(after.items()):
            if key[0] == "apiserver_longrunning_requests" and value:
                print(f"  apiserver_longrunning_requests{{verb={key[1]}, resource={key[2]}}} {value:.0f} at the end")
        cpu = [b - a for a, b in zip(cpu0, cpu1)]
        print(f"\nagents' CPU in the window: {sum(cpu):.2f} s in all ({', '.join(f'{c:.2f}' for c in cpu)}); "
              f"{sum(cpu) / len(cpu) / seconds * 100:.3f} % of a core per agent")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
        cache.close()
        cp.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
