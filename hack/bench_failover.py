#!/usr/bin/env python3
"""Leader failover in the cluster: the leader Pod deleted during a burst of Shoot changes, measured.

    python hack/bench_failover.py [--shoots 8] [--changes 80] [--rate 4] [--kill] [--workdir DIR]

Starts the one-node cluster with the product installed by its chart (2 controller replicas with leader election;
extension.local.stack), creates ``--shoots`` Shoots with one cache each, waits until all are Succeeded, then changes
one cache's garbage collection TTL ``--changes`` times at ``--rate`` per second, round robin over the Shoots, and a
third of the way in deletes the leader Pod (``kubectl delete pod``: a graceful stop, as a rollout or a node drain
does; ``--kill``: ``--grace-period=0 --force``, the process killed without a chance to release the Lease, as a
node that dies). It prints:

- the Lease taken over: from the delete until another replica holds it;
- the first reconcile by the new leader: from the delete until its log says an operation started, and the time
  no replica reconciled (from the old leader's last operation, which goes on during the Pod's preStop, to it);
- operations that overlapped on one Extension in two replicas (from the logs of every controller Pod, followed
  from the start): must be 0;
- changes lost: Shoots whose last TTL is not what the cache runs with once all Extensions converged (the config
  Secret the StatefulSet mounts): must be 0; and how long convergence took after the last change.

Needs what the one-node cluster needs (root, Go or the build cache, Debian's containerd, runc, CNI plugins) and
buildah for the image (hack/image.sh installs it with apt). Nothing leaves the machine: the caches' upstreams are
names that exist nowhere, and the egress check of the node is printed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.duration import parse_duration
from extension.constants import OWNER_LABEL
from extension.local.stack import CONTROLLER_SELECTOR, NAMESPACE, Stack

PROJECT_NS = "garden-bench"
LEASE = "registry-cache-leader-election"
LINE = re.compile(r"^(\S+ \S+) \w+ extension\.controller\.reconciler: (\S+)/registry-cache: (\w+) "
                  r"(started|succeeded|failed|stopped)", re.M)


def kubectl(stack: Stack, *args: str, input: str | None = None) -> str:
    return stack.cluster.kubectl(*args, input=input).stdout


def shoot(name: str, ttl: str) -> dict:
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": PROJECT_NS},
            "spec": {"provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]},
                     "extensions": [{"type": "registry-cache", "providerConfig": {
                         "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                         "caches": [{"upstream": f"{name}.bench.example", "garbageCollection": {"ttl": ttl},
                                     "volume": {"size": "100Mi"}}]}}]}}


class Logs:
    """Follows the log of every controller Pod (new ones too) into memory."""

    def __init__(self, stack: Stack):
        self.stack, self.stop = stack, threading.Event()
        self.text: dict[str, list[str]] = {}
        self.procs: list[subprocess.Popen] = []
        threading.Thread(target=self._discover, daemon=True).start()

    def _discover(self) -> None:
        while not self.stop.wait(0.5):
            pods = json.loads(kubectl(self.stack, "get", "pods", "-n", NAMESPACE, "-l", CONTROLLER_SELECTOR,
                                      "-o", "json"))["items"]
            for pod in pods:
                name = pod["metadata"]["name"]
                running = any("running" in (c.get("state") or {}) for c in pod["status"].get("containerStatuses") or [])
                if name not in self.text and running:
                    self.text[name] = []
                    proc = subprocess.Popen(["kubectl", "--kubeconfig", str(self.stack.kubeconfig), "logs", "-f",
                                             "-n", NAMESPACE, name], stdout=subprocess.PIPE, text=True)
                    self.procs.append(proc)
                    threading.Thread(target=self._read, args=(name, proc), daemon=True).start()

    def _read(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.text[name].append(line)

    def close(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.terminate()

    def operations(self) -> dict[str, list[tuple[str, float, float | None]]]:
        """Per Pod: (Extension namespace, start, end or None) of every operation its log shows."""
        out: dict[str, list[tuple[str, float, float | None]]] = {}
        for pod, lines in self.text.items():
            open_: dict[str, float] = {}
            ops = out.setdefault(pod, [])
            for found in LINE.finditer("".join(lines)):
                stamp = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                ns, what = found.group(2), found.group(4)
                if what == "started":
                    open_[ns] = stamp
                elif ns in open_:
                    ops.append((ns, open_.pop(ns), stamp))
            ops += [(ns, start, None) for ns, start in open_.items()]
        return out


def holder(stack: Stack) -> str:
    lease = json.loads(kubectl(stack, "get", "lease", "-n", NAMESPACE, LEASE, "-o", "json"))
    return ((lease.get("spec") or {}).get("holderIdentity") or "").split("_")[0]


def converged(stack: Stack, names: list[str]) -> bool:
    for name in names:
        ext = json.loads(kubectl(stack, "get", "extension", "-n", f"shoot--bench--{name}", "registry-cache", "-o",
                                 "json"))
        status = ext.get("status") or {}
        if status.get("observedGeneration") != ext["metadata"]["generation"] or \
                (status.get("lastOperation") or {}).get("state") != "Succeeded" or \
                ext["metadata"].get("annotations", {}).get("gardener.cloud/operation"):
            return False
    return True


def delivered_ttl(stack: Stack, name: str) -> str:
    """The TTL in the config.yml of the cache's config Secret that its StatefulSet mounts now (as Go prints a
    duration: ``82h0m0s``)."""
    sts = json.loads(kubectl(stack, "get", "statefulsets", "-n", "kube-system", "-l",
                             f"{OWNER_LABEL}=shoot--bench--{name}", "-o", "json"))["items"]
    volumes = sts[0]["spec"]["template"]["spec"]["volumes"]
    secret = next(v["secret"]["secretName"] for v in volumes if v["name"] == "config-volume")
    data = json.loads(kubectl(stack, "get", "secret", "-n", "kube-system", secret, "-o", "json"))["data"]
    config = base64.b64decode(data["config.yml"]).decode()
    found = re.search(r"^\s*ttl:\s*(\S+)", config, re.M)
    return found.group(1).strip("'\"") if found else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoots", type=int, default=8)
    parser.add_argument("--changes", type=int, default=80)
    parser.add_argument("--rate", type=float, default=4.0, help="changes per second")
    parser.add_argument("--kill", action="store_true", help="kill the leader (no graceful stop)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    stack = Stack(workdir, progress=lambda m: print(f"  {m}", flush=True))
    print(f"$ python hack/bench_failover.py --shoots {args.shoots} --changes {args.changes} --rate {args.rate}"
          + (" --kill" if args.kill else ""))
    stack.start()
    logs = Logs(stack)
    try:
        names = [f"s{i:02d}" for i in range(args.shoots)]
        kubectl(stack, "create", "namespace", PROJECT_NS)
        for name in names:
            kubectl(stack, "apply", "-f", "-", input=json.dumps(shoot(name, "1h")))
        t0 = time.monotonic()
        while not converged(stack, names):
            if time.monotonic() - t0 > 300:
                raise SystemExit("the Shoots did not converge within 300s")
            time.sleep(1)
        print(f"  {len(names)} Shoots Succeeded in {time.monotonic() - t0:.1f}s")
        leader = holder(stack)
        last: dict[str, str] = {}
        deleted_at = deleted_wall = None
        taken = None
        for i in range(args.changes):
            name = names[i % len(names)]
            ttl = f"{i + 2}h"
            kubectl(stack, "patch", "shoot", "-n", PROJECT_NS, name, "--type", "json", "-p", json.dumps([
                {"op": "replace", "path": "/spec/extensions/0/providerConfig/caches/0/garbageCollection/ttl",
                 "value": ttl}]))
            last[name] = ttl
            if i == args.changes // 3:
                deleted_at, deleted_wall = time.monotonic(), time.time()
                subprocess.Popen(["kubectl", "--kubeconfig", str(stack.kubeconfig), "delete", "pod", "-n", NAMESPACE,
                                  leader, *(["--grace-period=0", "--force"] if args.kill else [])],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if deleted_at is not None and taken is None:
                now_holder = holder(stack)
                if now_holder and now_holder != leader:
                    taken = time.monotonic() - deleted_at
            time.sleep(1 / args.rate)
        assert deleted_at is not None and deleted_wall is not None
        while taken is None:
            now_holder = holder(stack)
            if now_holder and now_holder != leader:
                taken = time.monotonic() - deleted_at
            elif time.monotonic() - deleted_at > 120:
                raise SystemExit("no replica took the Lease within 120s")
            time.sleep(0.1)
        burst_end = time.monotonic()
        while not converged(stack, names):
            if time.monotonic() - burst_end > 300:
                raise SystemExit("the Shoots did not converge within 300s after the burst")
            time.sleep(0.5)
        converge = time.monotonic() - burst_end
        time.sleep(2)  # the last log lines
        ops = logs.operations()
        new_leader = holder(stack)
        first = min((start for ns, start, end in ops.get(new_leader, []) if start >= deleted_wall), default=None)
        last_old = max((end or start for ns, start, end in ops.get(leader, [])), default=None)
        overlaps = 0
        pods = list(ops)
        for i, a in enumerate(pods):
            for b in pods[i + 1:]:
                for ns, s1, e1 in ops[a]:
                    for ns2, s2, e2 in ops[b]:
                        if ns == ns2 and s1 < (e2 or time.time()) and s2 < (e1 or time.time()):
                            overlaps += 1
        lost = [n for n in names if parse_duration(delivered_ttl(stack, n) or "0s") != parse_duration(last[n])]
        egress = stack.cluster.egress()
        print()
        print(f"changes: {args.changes} at {args.rate}/s over {len(names)} Shoots; the leader Pod {leader} "
              f"{'killed' if args.kill else 'deleted'} after change {args.changes // 3 + 1}")
        print(f"Lease taken over by {new_leader}: {taken:.2f}s after the delete")
        print("first operation started by the new leader: "
              + (f"{first - deleted_wall:.2f}s after the delete" if first is not None else "none seen"))
        if first is not None and last_old is not None:
            print(f"no replica reconciling: {max(0.0, first - last_old):.2f}s (from the old leader's last operation "
                  "to the new leader's first)")
        print("operations per replica: " + ", ".join(f"{p} {len(v)}" for p, v in ops.items()))
        print(f"operations on one Extension by two replicas at once: {overlaps}")
        print(f"changes lost (the cache does not run the Shoot's last TTL): {len(lost)} {lost or ''}")
        print(f"all Extensions Succeeded at their generation {converge:.1f}s after the last change")
        print(f"egress: {egress.packets} packets, host side {egress.host_packets}")
        return 0 if overlaps == 0 and not lost else 1
    finally:
        logs.close()
        stack.stop()
        if args.workdir is None:  # its own temporary workdir: the cluster's volumes and logs, gigabytes
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
