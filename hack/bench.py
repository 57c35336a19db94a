#!/usr/bin/env python3
"""Benchmark of the real controller process at scale, against its floor. Prints its figures; asserts nothing.

    python hack/bench.py [--extensions 100,300,1000] [--create-rate 50] [--change-rate 2] [--changes 60]
                         [--restarts 3] [--idle 60] [--before DIR [--before-python PYTHON]]

For each N it starts a fresh local control plane (etcd + kube-apiserver), runs ``registry-cache run`` as a
separate process (as the Deployment does; its metrics on a loopback port) and, as gardenlet would, creates N
shoot namespaces, each with its Cluster and a ``ref-`` credentials Secret, then N Extensions of 2 caches each
(one with credentials), all delivered to the same cluster with distinct upstreams. It measures:

- **create burst**: Extensions created at ``--create-rate``/s; per Extension the time from its creation to
  ``Succeeded`` for its generation (p50/p90/p99/max), and the throughput (N / time to the last success);
- **steady-state change**: with N under management, ``--changes`` changes (a cache added) at
  ``--change-rate``/s, one Extension each; time to ``Succeeded`` for the new generation (p50/p99);
- **no-op resync**: the controller's own periodic resync (started at once with SIGUSR1) with nothing changed:
  time for all N, CPU and requests per Extension (writes must be none);
- **no-op reconcile**: every Extension annotated ``gardener.cloud/operation: reconcile`` (what gardenlet does
  on each Shoot reconcile) with nothing changed: time for all, and what each reconcile costs (the contract's
  writes: the annotation removed, Processing, Succeeded; their echoes must cost nothing);
- **restart**, ``--restarts`` times: the controller stopped and started again with N Succeeded Extensions: time
  until every watch has listed and the Extension watch holds all N (its ``registry_cache_informer_*`` metrics)
  and nothing is queued, the operations it started and the writes it made meanwhile; the Extensions written in
  the 45 s after each start, counted apart from the controller's own metrics (every Extension's resourceVersion
  before the stop against 45 s after the start: whoever wrote, the health condition included); the LIST requests
  of each start by resource (kube-apiserver's ``apiserver_request_total``);
- **idle**: then ``--idle`` seconds with nothing changing: the controller's CPU (share of one core) and the
  requests and writes it made;
- the **first resync** after the last restart (nothing in memory yet: read, rendered and compared, not
  written);
- controller **CPU seconds** and **API requests by verb** per operation (its ``/metrics``), **RSS** idle and peak
  (``/proc``);
- the **floor**: a minimal client doing only the writes a reconcile needs (server-side apply of the rendered
  objects, then the status patch), sequentially, for N Extensions (``--floor-sample``) before the controller
  starts; the create throughput is printed as a ratio to it. (Its objects stay, in their own namespaces: the
  controller's burst then runs on a control plane holding twice as much.)

Each figure is printed with the target of issue 11 where there is one; at the end a table of all N, with the
load average at the start of each N (the figures are only comparable on a quiet machine).

``--before DIR``: the same, in the same run, first for the controller of another checkout (``DIR``, e.g. a git
worktree of main: its ``extension`` package, run with ``--before-python``, default this interpreter), then for
this one; the table has a column for each.

Everything runs on loopback; nothing is left behind (``--workdir`` keeps logs and data).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch

from api.field import Path as FieldPath
from api.secrets import Credentials
from api.validation import decode_and_default
from extension.component import certs
from extension.component.objects import RenderOptions
from extension.component.registrycache import cert_requests, plan
from extension.local.assets import asset_dir
from extension.local.controlplane import (
    LocalControlPlane,
    apiserver_requests,
    apply_manifests,
    load_manifests,
    wait_for_crds_established,
)
from extension.runtime.kube import Kube

CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUP, VERSION = "extensions.gardener.cloud", "v1alpha1"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def provider_config(i: int, extra: int = 0) -> dict[str, Any]:
    caches = [{"upstream": f"r0.bench{i}.example", "secretReferenceName": "creds"},
              {"upstream": f"r1.bench{i}.example"}]
    caches += [{"upstream": f"x{k}.bench{i}.example"} for k in range(extra)]
    return {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig", "caches": caches}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the controller process -----------------------------------------------------------------------------

class ControllerProcess:
    """``registry-cache run`` as the Deployment runs it; CPU and memory from /proc, counters from /metrics."""

    def __init__(self, kubeconfig: Path, log: Path, variant: Variant):
        self.port = free_port()
        self.kubeconfig, self.log, self.variant = kubeconfig, log, variant
        self.proc: subprocess.Popen | None = None

    def start(self) -> ControllerProcess:
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [self.variant.python, "-m", "extension.cli", "run", "--kubeconfig", str(self.kubeconfig),
             "--metrics-address", f"127.0.0.1:{self.port}", "--no-upstream-check"], stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.variant.source,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.variant.source)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.metrics()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the controller did not serve its metrics; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def memory_mib(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MiB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = {k: int(re.search(rf"^{k}:\s+(\d+)", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]
        return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(("registry_cache_", "workqueue_")) and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def sample(self) -> Sample:
        m = self.metrics()
        requests = Counter({re.search(r'verb="(\w+)"', k).group(1): v  # type: ignore[union-attr]
                            for k, v in m.items() if k.startswith("registry_cache_api_requests_total{")})
        operations = sum(v for k, v in m.items() if k.startswith("registry_cache_operations_total{"))
        checks = Counter({re.search(r'result="([\w-]+)"', k).group(1): v  # type: ignore[union-attr]
                          for k, v in m.items() if k.startswith("registry_cache_checks_total{")})
        # the caches' health check writes its condition when the caches' state changes (here they never get
        # Ready: no kubelet), on its own clock: its PATCHes are counted apart from the operation measured
        health = m.get("registry_cache_health_condition_writes_total", 0.0)
        requests["PATCH"] -= health
        return Sample(time.monotonic(), self.cpu_seconds(), +requests, operations, checks,
                      m.get('workqueue_depth{controller="extension",name="extension"}', 0.0), health)

    def synced(self) -> tuple[bool, float]:
        """(every watch has listed once, Extensions the controller keeps)."""
        m = self.metrics()
        flags = [v for k, v in m.items() if k.startswith("registry_cache_informer_synced{")]
        return bool(flags) and all(flags), m.get('registry_cache_informer_objects{informer="Extension"}', 0.0)

    def resync(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)


@dataclass(frozen=True)
class Variant:
    """Which controller: the ``extension`` package of ``source``, run by ``python``."""

    name: str
    source: Path
    python: str


@dataclass
class Sample:
    at: float
    cpu: float
    requests: Counter
    operations: float
    checks: Counter = field(default_factory=Counter)
    queued: float = 0.0
    health_writes: float = 0.0  # PATCHes of condition SystemComponentsHealthy (not in ``requests``)

    def minus(self, before: Sample) -> Sample:
        return Sample(self.at - before.at, self.cpu - before.cpu, self.requests - before.requests,
                      self.operations - before.operations, self.checks - before.checks, self.queued,
                      self.health_writes - before.health_writes)

    def writes(self) -> float:
        return sum(c for v, c in self.requests.items() if v in WRITES)


# --- what gardenlet would do, and what the bench sees ----------------------------------------------------

class Successes:
    """Watches every Extension: the first time each (namespace, generation) is seen Succeeded."""

    def __init__(self, api: k8s_client.ApiClient):
        self.api = api
        self.at: dict[tuple[str, int], float] = {}
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        custom = k8s_client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            try:
                for event in k8s_watch.Watch().stream(custom.list_cluster_custom_object, GROUP, VERSION, "extensions",
                                                      timeout_seconds=60):
                    self.see(event["object"])
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - a dropped watch is started again
                time.sleep(0.2)

    def see(self, ext: dict[str, Any]) -> None:
        status = ext.get("status") or {}
        meta = ext["metadata"]
        if (status.get("lastOperation") or {}).get("state") == "Succeeded" and \
                status.get("observedGeneration") == meta.get("generation"):
            key = (meta["namespace"], meta["generation"])
            with self.cond:
                if key not in self.at:
                    self.at[key] = time.monotonic()
                    self.cond.notify_all()

    def wait(self, keys: list[tuple[str, int]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(k in self.at for k in keys):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def stop(self) -> None:
        self._stop.set()


def paced(items: list[Any], rate: float, work, threads: int = 8) -> dict[Any, float]:
    """Run ``work(item)`` at ``rate`` per second; returns when each was started (monotonic)."""
    started: dict[Any, float] = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        futures = []
        for i, item in enumerate(items):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            started[item] = time.monotonic()
            futures.append(pool.submit(work, item))
        for f in futures:
            f.result()
    return started


def gardenlet_setup(kube: Kube, n: int) -> list[str]:
    """Namespaces, Clusters and ref- Secrets, as gardenlet creates them before the Extension."""
    namespaces = [f"shoot--bench--s{i}" for i in range(n)]

    def one(i: int) -> None:
        ns = namespaces[i]
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ref-creds-v1", "namespace": ns},
                    "data": {"username": "dXNlcg==", "password": "cGFzcw=="}})
        kube.apply({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cluster", "metadata": {"name": ns},
                    "spec": {"seed": {}, "cloudProfile": {}, "shoot": {"metadata": {"name": f"s{i}"}, "spec": {
                        "resources": [{"name": "creds", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                        "name": "creds-v1"}}]}}}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    return namespaces


def extension(ns: str, i: int, extra: int = 0) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Extension",
            "metadata": {"name": "registry-cache", "namespace": ns},
            "spec": {"type": "registry-cache", "providerConfig": provider_config(i, extra)}}


# --- the floor ---------------------------------------------------------------------------------------------

def floor(kube: Kube, sample: int) -> tuple[float, Counter]:
    """Seconds per Extension for a client that only writes what a reconcile writes: server-side apply of the
    rendered objects (into their own namespace, out of the controller's way) and the status patch. Rendering
    and the TLS material are made before the clock starts."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-floor"}})
    options = RenderOptions(image="registry:3", namespace="bench-floor")
    ca = certs.generate_ca()
    work = []
    for i in range(sample):
        ns = f"floor--{i}"
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kube.create({**extension(ns, 100000 + i), "spec": {"type": "bench-floor"}})
        config = decode_and_default(provider_config(100000 + i), FieldPath("spec"))
        endpoints = {c.upstream: f"https://10.0.0.{1 + k}:5000" for k, c in enumerate(config.caches)}
        server = {r.upstream: certs.generate_server_cert(ca, r.common_name, r.dns_names, r.ip_addresses)
                  for r in cert_requests(config, options.namespace, {u: [e[8:-5]] for u, e in endpoints.items()})}
        planned = plan(config, {config.caches[0].upstream: Credentials("user", "pass")}, endpoints, server,
                       ca.cert_pem, RenderOptions(image="registry:3", namespace="bench-floor", owner=ns))
        work.append((ns, planned))
    before = Counter(kube.calls)
    t0 = time.monotonic()
    for ns, planned in work:
        for obj in planned.delivered:
            kube.apply(obj.obj)
        kube.patch("Extension", "registry-cache", {"status": {
            "lastOperation": {"type": "Create", "state": "Succeeded", "progress": 100, "description": "floor",
                              "lastUpdateTime": "2026-01-01T00:00:00Z"},
            "providerStatus": planned.status.to_wire(), "observedGeneration": 1}}, ns, subresource="status")
    took = time.monotonic() - t0
    return took / sample, Counter(kube.calls) - before


# --- one N -------------------------------------------------------------------------------------------------

@dataclass
class Result:
    n: int
    load: str = ""
    variant: str = "after"
    figures: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, target: str = "") -> None:
        self.figures.append((what, value, target))
        print(f"  {what}: {value}" + (f"   [target {target}]" if target else ""), flush=True)


def per_op(delta: Sample, ops: float) -> str:
    verbs = ", ".join(f"{v} {c / ops:.1f}" for v, c in sorted(delta.requests.items()) if c)
    health = f" (and health condition writes {delta.health_writes / ops:.2f}, apart)" if delta.health_writes else ""
    return f"{delta.cpu / ops * 1000:.1f} ms CPU; requests {verbs or 'none'}{health}"


def mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def control_plane_cpu(cp: LocalControlPlane) -> float:
    """CPU seconds of the control plane's processes (kube-apiserver, etcd)."""
    total = 0.0
    for pid in cp.pids.values():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


RESTART_WINDOW = 45.0  # seconds after a start in which the Extensions written are counted


def extension_versions(kube: Kube) -> dict[str, str]:
    """namespace -> resourceVersion of every Extension."""
    return {e["metadata"]["namespace"]: e["metadata"]["resourceVersion"] for e in kube.list("Extension")}


def changed_versions(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for ns, version in after.items() if before.get(ns) != version)


def written_namespaces(before: dict[str, str], kube: Kube, most: int = 5) -> list[str]:
    after = extension_versions(kube)
    return sorted(ns for ns, version in after.items() if before.get(ns) != version)[:most]


def wait_checks(controller: ControllerProcess, before: Sample, n: int, timeout: float) -> Sample:
    """Until the resync has looked at all n Extensions and nothing is queued (and the operations it started
    ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = controller.sample()
        done = now.minus(before)
        if sum(done.checks.values()) >= n and now.queued == 0:
            time.sleep(1.0)  # operations started by it end; their counters are then in
            return controller.sample()
        time.sleep(0.2)
    return controller.sample()


def bench(n: int, args: argparse.Namespace, workdir: Path, variant: Variant) -> Result:
    result = Result(n, load=loadavg(), variant=variant.name)
    print(f"\n== {variant.name}: N = {n} (load average {result.load})", flush=True)
    workdir = workdir / variant.name
    # two Services per Extension: the local control plane's /24 of cluster IPs holds 126 Extensions
    cp = LocalControlPlane(workdir=workdir / f"n{n}" / "control-plane",
                           apiserver_args=["--service-cluster-ip-range=10.0.0.0/16"])
    cp.start()
    controller = None
    watcher = None
    try:
        api = cp.api_client()
        crds = asset_dir("crds")
        apply_manifests(api, [crds])
        wait_for_crds_established(api, [o["metadata"]["name"] for o in load_manifests([crds])], timeout=60)
        kube = Kube(api, field_manager="bench")

        sample = args.floor_sample or n  # by default the same burst: N Extensions from none
        per_ext, floor_calls = floor(Kube(cp.api_client(), field_manager="bench-floor"), sample)
        floor_rate = 1 / per_ext
        result.add(f"floor: sequential writes of {sample} Extensions (SSA of their objects + status patch), each",
                   f"{per_ext * 1000:.0f} ms ({floor_rate:.1f} Extensions/s; "
                   f"{sum(floor_calls.values()) / sample:.0f} requests each)")

        namespaces = gardenlet_setup(kube, n)
        controller = ControllerProcess(cp.kubeconfig, workdir / f"n{n}" / "controller.log", variant).start()
        time.sleep(2)
        rss_idle, _ = controller.memory_mib()
        watcher = Successes(cp.api_client())

        # create burst
        cp_before = control_plane_cpu(cp)
        before = controller.sample()
        created = paced(list(range(n)), args.create_rate, lambda i: kube.create(extension(namespaces[i], i)))
        keys = [(namespaces[i], 1) for i in range(n)]
        if not watcher.wait(keys, args.timeout):
            missing = sum(1 for k in keys if k not in watcher.at)
            result.add("create burst", f"{missing} of {n} not Succeeded within {args.timeout:.0f}s")
            return result
        after = controller.sample()
        latencies = [watcher.at[(namespaces[i], 1)] - created[i] for i in range(n)]
        span = max(watcher.at[k] for k in keys) - min(created.values())
        result.add("create burst: latency p50/p90/p99/max",
                   f"{percentile(latencies, 50):.2f} / {percentile(latencies, 90):.2f} / "
                   f"{percentile(latencies, 99):.2f} / {max(latencies):.2f} s")
        ratio = n / span / floor_rate
        result.add("create burst: throughput", f"{n / span:.1f} Extensions/s ({ratio:.0%} of the floor's "
                                               f"{floor_rate:.1f}/s)", f">= 50% of the floor: {mark(ratio >= 0.5)}")
        delta = after.minus(before)
        floor_writes = sum(c for v, c in floor_calls.items() if v in WRITES) / sample
        result.add("create: per Extension", per_op(delta, n) +
                   f"; kube-apiserver + etcd {(control_plane_cpu(cp) - cp_before) / n * 1000:.0f} ms CPU; "
                   f"writes {delta.writes() / n / floor_writes:.1f}x the floor's {floor_writes:.0f}")

        # steady-state changes
        time.sleep(2)
        changes = list(range(min(args.changes, n)))
        before = controller.sample()

        def change(i: int) -> None:
            kube.patch("Extension", "registry-cache", {"spec": {"providerConfig": provider_config(i, extra=1)}},
                       namespaces[i])

        started = paced(changes, args.change_rate, change)
        keys = [(namespaces[i], 2) for i in changes]
        if watcher.wait(keys, args.timeout):
            after = controller.sample()
            latencies = [watcher.at[(namespaces[i], 2)] - started[i] for i in changes]
            p99 = percentile(latencies, 99)
            result.add(f"change at {args.change_rate:g}/s with {n} under management: latency p50/p99",
                       f"{percentile(latencies, 50):.2f} / {p99:.2f} s (max {max(latencies):.2f})",
                       f"p99 <= 1 s: {mark(p99 <= 1.0)}")
            result.add("change: per Extension", per_op(after.minus(before), len(changes)))
        else:
            result.add("change", f"not all Succeeded within {args.timeout:.0f}s")

        # the controller's own resync, nothing changed
        time.sleep(2)
        before = controller.sample()
        controller.resync()
        after = wait_checks(controller, before, n, args.timeout)
        delta = after.minus(before)
        per_check = delta.cpu / max(1.0, sum(delta.checks.values())) * 1000
        result.add("no-op resync of all (SIGUSR1): time; looked at / reconciled",
                   f"{delta.at:.1f} s; {sum(delta.checks.values()):.0f} / {delta.checks.get('reconciled', 0):.0f}")
        result.add("no-op resync: per Extension", per_op(delta, max(1.0, sum(delta.checks.values()))),
                   f"no write, <= 10 ms CPU: {mark(delta.writes() == 0 and per_check <= 10)}")

        # no-op reconcile: the reconcile annotation, nothing changed
        time.sleep(2)
        before = controller.sample()
        t0 = time.monotonic()
        annotate = {"metadata": {"annotations": {"gardener.cloud/operation": "reconcile"}}}
        paced(namespaces, args.create_rate, lambda ns: kube.patch("Extension", "registry-cache", annotate, ns))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            exts = {e["metadata"]["namespace"]: e for e in kube.list("Extension")}
            if all(not (e["metadata"].get("annotations") or {}).get("gardener.cloud/operation") and
                   (e.get("status") or {}).get("lastOperation", {}).get("state") == "Succeeded"
                   for e in exts.values()):
                break
            time.sleep(0.5)
        took = time.monotonic() - t0
        time.sleep(1.0)
        after = controller.sample()
        delta = after.minus(before)
        ops = delta.operations or 1
        result.add("no-op reconcile of all (annotation): time",
                   f"{took:.1f} s for {n} ({delta.operations:.0f} operations)")
        result.add("no-op reconcile (annotation): per Extension", per_op(delta, ops),
                   f"only the contract's 3 writes, echoes 0 requests: "
                   f"{mark(sum(c for v, c in delta.requests.items() if v not in ('WATCH', 'LIST')) <= 3 * ops)}")
        rss_now, rss_peak = controller.memory_mib()
        result.add("controller RSS: idle before / now / peak", f"{rss_idle:.0f} / {rss_now:.0f} / {rss_peak:.0f} MiB",
                   f"<= 150 MiB: {mark(rss_peak <= 150)}")
        result.rss_peak = rss_peak  # type: ignore[attr-defined]

        # restarts with N Succeeded: what each start writes, counted by the API server's resourceVersions
        watcher.stop()  # (its own LISTs are not the controller's)
        for r in range(1, args.restarts + 1):
            controller.stop()
            versions = extension_versions(kube)
            lists = Counter(apiserver_requests(kube))
            controller = ControllerProcess(cp.kubeconfig, workdir / f"n{n}" / f"controller-{r + 1}.log",
                                           variant)
            t0 = time.monotonic()
            controller.start()
            synced_at = None
            while time.monotonic() - t0 < args.timeout:
                synced, seen = controller.synced()
                if synced and seen >= n and controller.sample().queued == 0:
                    synced_at = time.monotonic() - t0
                    break
                time.sleep(0.1)
            quiet_since, last = time.monotonic(), controller.sample()
            while time.monotonic() - t0 < args.timeout:
                time.sleep(0.5)
                now = controller.sample()
                if now.requests != last.requests or now.operations != last.operations:
                    quiet_since = time.monotonic()
                last = now
                if time.monotonic() - quiet_since >= 5:
                    break
            settled = max(synced_at or 0.0, quiet_since - t0)
            listed = {k: v for k, v in (Counter(apiserver_requests(kube)) - lists).items() if v}
            time.sleep(max(0.0, t0 + RESTART_WINDOW - time.monotonic()))
            last = controller.sample()
            writes = last.writes()
            written = changed_versions(versions, extension_versions(kube))
            result.add(f"restart {r} with all Succeeded: settled (all watches synced, all seen, nothing queued) "
                       f"after; in the {RESTART_WINDOW:.0f} s after the start", f"{settled:.1f} s (synced at "
                       f"{synced_at or float('nan'):.1f} s); {last.operations:.0f} operations started, {writes:.0f} "
                       f"writes (+{last.health_writes:.0f} health), {last.cpu:.1f} s CPU; requests "
                       f"{dict(last.requests)}",
                       f"<= 30 s, no write: {mark(settled <= 30 and writes == 0 and last.operations == 0)}")
            result.add(f"restart {r}: Extensions written in the {RESTART_WINDOW:.0f} s after the start (their "
                       "resourceVersions)", f"{written}" + (f" ({', '.join(written_namespaces(versions, kube))})"
                                                             if written else ""),
                       f"0: {mark(written == 0)}")
            result.add(f"restart {r}: LIST requests of the start (until settled) by resource (kube-apiserver)",
                       ", ".join(f"{k} {v:.0f}" for k, v in sorted(listed.items())) or "none")

        # idle: nothing changes
        rss_settled, _ = controller.memory_mib()
        before = controller.sample()
        versions = extension_versions(kube)
        time.sleep(args.idle)
        after = controller.sample()
        delta = after.minus(before)
        written = changed_versions(versions, extension_versions(kube))
        share = delta.cpu / delta.at
        result.add(f"idle for {args.idle:.0f} s with {n} Succeeded: controller CPU; requests; Extensions written",
                   f"{share:.1%} of a core ({delta.cpu:.2f} s); "
                   f"{', '.join(f'{v} {c:.0f}' for v, c in sorted(delta.requests.items())) or 'none'}; {written}",
                   f"<= 2%, no write: {mark(share <= 0.02 and written == 0)}")
        result.idle_cpu = share  # type: ignore[attr-defined]

        # the first resync after the restart: nothing in memory, so read, rendered and compared
        before = controller.sample()
        controller.resync()
        after = wait_checks(controller, before, n, args.timeout)
        delta = after.minus(before)
        result.add("first resync after the restart: time; looked at / reconciled",
                   f"{delta.at:.1f} s; {sum(delta.checks.values()):.0f} / {delta.checks.get('reconciled', 0):.0f}")
        result.add("first resync after the restart: per Extension",
                   per_op(delta, max(1.0, sum(delta.checks.values()))), f"no write: {mark(delta.writes() == 0)}")
        rss_now2, rss_peak2 = controller.memory_mib()
        result.add("restarted controller RSS: after settling / now / peak", f"{rss_settled:.0f} / {rss_now2:.0f} / "
                   f"{rss_peak2:.0f} MiB", f"<= 150 MiB: {mark(rss_peak2 <= 150)}")
        return result
    finally:
        if watcher is not None:
            watcher.stop()
        if controller is not None:
            controller.stop()
        cp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extensions", default="100,300,1000", help="comma-separated N (default 100,300,1000)")
    parser.add_argument("--create-rate", type=float, default=50.0, help="Extensions created per second (default 50)")
    parser.add_argument("--change-rate", type=float, default=2.0, help="changes per second (default 2)")
    parser.add_argument("--changes", type=int, default=60, help="changes in the steady-state phase (default 60)")
    parser.add_argument("--floor-sample", type=int, default=0,
                        help="Extensions the floor client writes (default: N, the same burst as the controller's)")
    parser.add_argument("--restarts", type=int, default=3, help="restarts with all Succeeded (default 3)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds measured idle (default 60)")
    parser.add_argument("--before", metavar="DIR",
                        help="also measure the controller of this checkout first, in the same run")
    parser.add_argument("--before-python", default=sys.executable, metavar="PYTHON",
                        help="the interpreter for --before (default: this one)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds any phase may take (default 1800)")
    parser.add_argument("--workdir", help="keep logs and data here (default: a temp dir, removed at the end)")
    args = parser.parse_args()
    if args.restarts < 1:
        parser.error("--restarts must be at least 1")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="registry-cache-bench-"))
    variants = [Variant("after", Path(__file__).resolve().parent.parent, sys.executable)]
    if args.before:
        variants.insert(0, Variant("before", Path(args.before).resolve(), args.before_python))
    results = {(v.name, int(n)): bench(int(n), args, workdir, v) for n in args.extensions.split(",") for v in variants}
    print("\n== summary")
    names = [v.name for v in variants]
    print(f"| N | what | {' | '.join(names)} | target |\n| --- | --- | {' | '.join('---' for _ in names)} | --- |")
    for n in [int(n) for n in args.extensions.split(",")]:
        rows: dict[str, dict[str, str]] = {}
        targets: dict[str, str] = {}
        for name in names:
            for what, value, target in results[(name, n)].figures:
                rows.setdefault(what, {})[name] = value
                targets[what] = target
        print(f"| {n} | load average at the start | {' | '.join(results[(name, n)].load for name in names)} | |")
        for what, values in rows.items():
            print(f"| {n} | {what} | {' | '.join(values.get(name, '') for name in names)} | {targets[what]} |")
    for name in names:
        peaks = {n: getattr(r, "rss_peak", None) for (v, n), r in results.items() if v == name}
        if peaks.get(1000) and peaks.get(100):
            flat = peaks[1000] / peaks[100]  # type: ignore[operator]
            print(f"| 100 -> 1000 | {name}: RSS peak at 1,000 / at 100 | {flat:.2f} | <= 1.5: {mark(flat <= 1.5)} |")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
