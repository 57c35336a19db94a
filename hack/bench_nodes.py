#!/usr/bin/env python3
"""Many nodes, one fetch: the figures a user buys a cache for, on the local cluster with several nodes.

    python hack/bench_nodes.py [--nodes 3] [--layers 5] [--layer-mib 40] [--containerd 2|1.6] [--workdir DIR]

Starts the local cluster with ``--nodes`` nodes (extension.local.stack: the product installed with its chart,
the caches run with the coalescing front), a test upstream on the first node's bridge (distribution, TLS from the
cluster's test CA; its access log says who fetched what), and a Shoot with two caches for it: one plain, one with
``highAvailability`` (2 replicas, spread over the nodes, with a PodDisruptionBudget). Images are fresh, of
``--layers`` layers of ``--layer-mib`` MiB of random bytes. Every pull is the node's own containerd
(``ctr images pull --hosts-dir`` with the ``hosts.toml`` the node agent wrote on that node, as the CRI pulls). It
prints, each with what was measured:

1. **Concurrent pulls**: every node pulls one fresh image at the same moment through the cache: the upstream's
   blob GETs per blob and the bytes it served against the image's size; each node's pull time.
2. **Pull time**: one node pulls a fresh image directly from the upstream (no hosts.toml), then a fresh image
   through the cache (cold), then that image again on another node (warm): the goal is warm <= direct and
   cold <= 1.2 x direct.
3. **Scale-up**: a node added to the cluster pulls the images the others pulled (by digest, as a rolled-out
   workload names them, and by tag): the requests to the upstream.
4. **HA caches**: the same concurrent pull through the cache with 2 replicas on different nodes: fetches per
   blob. Then the node that runs one replica stops (its kubelet, containerd and network go, as a node that dies);
   pulls of fresh images through the cache from another node every second: how long until they succeed again,
   and whether any pull went to the upstream directly (a fallback) meanwhile.

Nothing leaves the machine (the egress check of every node and the host are printed). Needs what the local
cluster needs (root, Go or the build cache, Debian's containerd, runc, CNI plugins; buildah for the image).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api import names
from extension.local.node import Node
from extension.local.registries import LocalRegistry
from extension.local.stack import Stack

PROJECT_NS = "garden-bench"
SHOOT = "nodes"


def random_image(stack: Stack, upstream: LocalRegistry, repository: str, layers: int, layer_mib: int) -> dict:
    """Push a fresh image of random layers with crane (in the first node); its reference, digest and blobs."""
    work = Path(tempfile.mkdtemp(prefix="bench-image-", dir=stack.workdir))
    cluster = stack.cluster
    ref = f"{upstream.host}/{repository}:{secrets.token_hex(4)}"
    tars = []
    for i in range(layers):
        tar = work / f"layer{i}.tar"
        subprocess.run(["sh", "-c", f"mkdir -p {work}/l{i} && head -c {layer_mib << 20} /dev/urandom > "
                                    f"{work}/l{i}/data{i} && tar -C {work}/l{i} -cf {tar} ."], check=True)
        tars.append(tar)
    args = ["append", "-t", ref]
    for tar in tars:
        args += ["-f", str(tar)]
    cluster.crane(args)
    digest = cluster.crane(["digest", ref]).strip()
    manifest = json.loads(cluster.crane(["manifest", ref]))
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return {"ref": ref, "by_digest": f"{ref.rsplit(':', 1)[0]}@{digest}", "digest": digest,
            "blobs": [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])],
            "size": manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])}


def pull(stack: Stack, node: Node, ref: str, hosts: bool = True, timeout: float = 600) -> tuple[float, bool, str]:
    """``ctr images pull`` in ``node`` (with its hosts directory, or none: direct); (seconds, ok, output)."""
    hosts_dir = str(stack.cluster.certs_path) if hosts else tempfile.mkdtemp(prefix="no-hosts-")
    argv = node.argv([stack.cluster.ctr_bin, "--address", str(node.containerd_socket), "-n", "bench", "images", "pull",
                      "--hosts-dir", hosts_dir, ref])
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE": str(stack.cluster.test_ca_file)}
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    return time.monotonic() - t0, done.returncode == 0, (done.stdout + done.stderr)[-500:]


def fetches(upstream: LocalRegistry, mark: int, image: dict) -> tuple[dict[str, int], int, list]:
    """Blob GETs per blob at the upstream since ``mark``, the bytes served for them, requests by containerd."""
    requests = upstream.requests(mark)
    per_blob = {b: sum(1 for r in requests if r.method == "GET" and r.path.endswith(f"/blobs/{b}") and r.status == 200)
                for b in image["blobs"]}
    served = sum(r.size for r in requests if r.method == "GET" and "/blobs/" in r.path and r.status == 200)
    fallbacks = [r for r in requests if r.agent.startswith("containerd/")]
    return per_blob, served, fallbacks


def concurrent(stack: Stack, upstream: LocalRegistry, image: dict, nodes: list[Node]) -> list[tuple[str, float, bool]]:
    out: list[tuple[str, float, bool]] = []
    barrier = threading.Barrier(len(nodes))

    def one(node: Node) -> None:
        barrier.wait()
        seconds, ok, said = pull(stack, node, image["ref"])
        out.append((node.name, seconds, ok))
        if not ok:
            print(f"  pull on {node.name} failed: {said}", flush=True)

    threads = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(out)


def shoot(upstream: LocalRegistry) -> dict:
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": SHOOT, "namespace": PROJECT_NS},
            "spec": {"provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]},
                     "extensions": [{"type": "registry-cache", "providerConfig": {
                         "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                         "caches": [{"upstream": upstream.host, "remoteURL": upstream.url,
                                     "volume": {"size": "2Gi"}}]}}]}}


def wait(what: str, probe, timeout: float = 300, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def caches_ready(stack: Stack, upstream: LocalRegistry, replicas: int) -> bool:
    name = names.resource_name(upstream.host)
    got = stack.cluster.kubectl("get", "statefulset", "-n", "kube-system", name, "-o", "json", check=False)
    if got.returncode:
        return False
    status = json.loads(got.stdout).get("status") or {}
    if status.get("readyReplicas") != replicas:
        return False
    return all(node.file(stack.cluster.certs_path / upstream.host / "hosts.toml") for node in stack.cluster.nodes)


def _available() -> int:
    """MemAvailable of the machine, KiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--layer-mib", type=int, default=40)
    parser.add_argument("--containerd", choices=["1.6", "2"], default="2",
                        help="the nodes' containerd: 2.x built from its module (default), or Debian's 1.6")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    print("$ python hack/bench_nodes.py " + shlex.join(sys.argv[1:]), flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    stack = Stack(workdir, progress=lambda m: print(f"  {m}", flush=True), nodes=args.nodes,
                  containerd=args.containerd)
    available = _available()
    t0 = time.monotonic()
    stack.start()
    started = time.monotonic() - t0
    cluster = stack.cluster
    try:
        used = available - _available()
        print(f"  cluster of {args.nodes} nodes and the product up in {started:.0f}s, {used / 2**20:.2f} GiB of memory")
        plain = cluster.upstream("plain")
        ha = cluster.upstream("ha")
        cluster.kubectl("create", "namespace", PROJECT_NS)
        manifest = shoot(plain)
        manifest["spec"]["extensions"][0]["providerConfig"]["caches"].append(
            {"upstream": ha.host, "remoteURL": ha.url, "volume": {"size": "2Gi"},
             "highAvailability": {"enabled": True}})
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait("the plain cache Ready with hosts.toml on every node", lambda: caches_ready(stack, plain, 1))
        wait("the HA cache's 2 replicas Ready with hosts.toml on every node", lambda: caches_ready(stack, ha, 2))
        size_mib = args.layers * args.layer_mib
        print(f"\n# {args.nodes} nodes; images of {args.layers} layers x {args.layer_mib} MiB of random bytes "
              f"({size_mib} MiB); pulls with each node's containerd (ctr images pull --hosts-dir)")

        # 1. concurrent pulls through one cache
        image = random_image(stack, plain, "bench/concurrent", args.layers, args.layer_mib)
        mark = plain.mark()
        times = concurrent(stack, plain, image, cluster.nodes)
        per_blob, served, fallbacks = fetches(plain, mark, image)
        print(f"\n1. {len(cluster.nodes)} nodes pull one fresh image at once through one cache:")
        print(f"   upstream blob GETs per blob: {sorted(set(per_blob.values()))} "
              f"(max {max(per_blob.values())}); upstream bytes {served / 2**20:.1f} MiB for an image of "
              f"{image['size'] / 2**20:.1f} MiB ({served / image['size']:.2f}x); fallbacks to the upstream: "
              f"{len(fallbacks)}")
        print("   pull time per node: " + ", ".join(f"{n} {s:.1f}s{'' if ok else ' FAILED'}" for n, s, ok in times))

        # 2. pull time: direct, cold, warm
        direct_image = random_image(stack, plain, "bench/direct", args.layers, args.layer_mib)
        direct, ok_direct, _ = pull(stack, cluster.nodes[1], direct_image["ref"], hosts=False)
        cold_image = random_image(stack, plain, "bench/cold", args.layers, args.layer_mib)
        cold, ok_cold, _ = pull(stack, cluster.nodes[1], cold_image["ref"])
        warm, ok_warm, _ = pull(stack, cluster.nodes[2 % len(cluster.nodes)], cold_image["ref"])
        print(f"\n2. one pull of {size_mib} MiB: direct {direct:.1f}s, through the cache cold {cold:.1f}s "
              f"({cold / direct:.2f}x), warm (another node, the same image) {warm:.1f}s ({warm / direct:.2f}x)"
              + ("" if ok_direct and ok_cold and ok_warm else " (a pull FAILED)"))

        # 3. scale-up: a node added later
        new = cluster.add_node()
        wait(f"hosts.toml on {new.name}", lambda: new.file(cluster.certs_path / plain.host / "hosts.toml"), 120)
        mark = plain.mark()
        t_digest, ok_digest, _ = pull(stack, new, image["by_digest"])
        by_digest = plain.requests(mark)
        mark = plain.mark()
        t_tag, ok_tag, _ = pull(stack, new, cold_image["ref"])
        by_tag = plain.requests(mark)
        print(f"\n3. scale-up: {new.name}, added now, pulls what the others pulled: by digest {t_digest:.1f}s, "
              f"{len(by_digest)} requests to the upstream; by tag {t_tag:.1f}s, {len(by_tag)} requests to the "
              f"upstream ({', '.join(sorted({f'{r.method} {r.path.split(chr(47))[-2]}' for r in by_tag})) or 'none'})"
              + ("" if ok_digest and ok_tag else " (a pull FAILED)"))

        # 4. HA caches
        image = random_image(stack, ha, "bench/ha", args.layers, args.layer_mib)
        mark = ha.mark()
        selector = f"upstream-host={names.upstream_label_value(ha.host)}"
        pods = json.loads(cluster.kubectl("get", "pods", "-n", "kube-system", "-l", selector, "-o",
                                          "json").stdout)["items"]
        where = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
        times = concurrent(stack, ha, image, cluster.nodes)
        per_blob, served, fallbacks = fetches(ha, mark, image)
        print(f"\n4. HA cache, replicas on {sorted(set(where.values()))}: {len(cluster.nodes)} nodes pull at once: "
              f"upstream blob GETs per blob {sorted(set(per_blob.values()))}, upstream bytes "
              f"{served / image['size']:.2f}x the image; fallbacks {len(fallbacks)}")
        victim_name = sorted(where.values())[-1]
        victim = next(n for n in cluster.nodes if n.name == victim_name)
        survivor = next(n for n in cluster.nodes if n.name != victim_name)
        mark = ha.mark()
        stopped = time.monotonic()
        victim.stop()
        print(f"   stopped {victim.name} (one replica's node; the stop took {time.monotonic() - stopped:.1f}s); "
              f"pulling fresh images through the cache from {survivor.name} every second ...", flush=True)
        outcomes = []
        first_ok = None
        while time.monotonic() - stopped < 120:
            fresh = random_image(stack, ha, "bench/after", 1, 1)
            seconds, ok, _ = pull(stack, survivor, fresh["ref"], timeout=120)
            outcomes.append((time.monotonic() - stopped, seconds, ok))
            if ok and first_ok is None:
                first_ok = time.monotonic() - stopped
            if first_ok is not None and time.monotonic() - stopped > first_ok + 20:
                break
            time.sleep(1)
        fallbacks = [r for r in ha.requests(mark) if r.agent.startswith("containerd/")]
        longest = max(o[1] for o in outcomes)
        print(f"   {len(outcomes)} pulls in {outcomes[-1][0]:.0f}s after the stop: first success "
              f"{first_ok:.1f}s after it" if first_ok is not None else "   no pull succeeded",
              f"; failed {sum(1 for o in outcomes if not o[2])}; longest {longest:.1f}s; fallbacks to the upstream "
              f"{len(fallbacks)}")
        egress = cluster.egress()
        print(f"\negress: {egress.packets} packets, host side {egress.host_packets}")
        print(f"the machine's memory in use by the cluster after its start: {used / 2**20:.2f} GiB (MemAvailable); "
              f"start {started:.0f}s")
        return 0
    finally:
        stack.stop()
        if args.workdir is None:  # its own temporary workdir: the cluster's volumes and images, gigabytes
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
