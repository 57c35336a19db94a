#!/usr/bin/env python3
"""Concurrent pulls through one cache: upstream fetches per blob, time to first byte, pull time against direct.

    python hack/bench_pulls.py [--pullers 1,3,10] [--layers 5] [--layer-mib 40] [--modes distribution,front]
                               [--repeat 3] [--upstream-rate MIB_S] [--no-pull-times] [--workdir DIR]

Everything on 127.0.0.1, as processes: an upstream (distribution 3.1.1, TLS with a test CA, as a real registry
serves), a fresh image of ``--layers`` layers of ``--layer-mib`` MiB of random bytes, and per measurement a
fresh cache as its Pod runs it (tests/e2e/harness.py: the rendered config.yml, TLS on, the default), in each of
the ``--modes`` (``--upstream-rate``: the upstream behind a link of that many MiB/s, for caches and direct pulls
alike, as a registry across a network is; without it everything shares the 2 cores of this machine and the
cache's extra hop costs CPU that a network-bound pull would not notice):

- ``distribution``: distribution alone serves the cache's port (what Gardener's extension runs, and this one
  without ``run --front-image``);
- ``front``: the rendered Pod with the coalescing front (``run --front-image``): the front on the cache's port,
  distribution behind it on loopback.

It prints, per mode:

1. For N concurrent pullers (``--pullers``): the upstream's blob GETs per blob and the bytes it served against
   the image's size (from its access log); per puller (a Python client that GETs the manifest by tag, then
   every blob at once, hashing each): for each layer the time to first byte and the total time of the puller
   that asked first and of the others (the waiting ones), and the whole pull per puller. Every blob is checked
   against its digest.
2. Pull time with crane (``crane pull --format oci``, 1 puller, median of ``--repeat``): direct from the
   upstream, through a cold cache, through the same cache warm (its second pull, right after: with the front
   within its --linger, served from its spool; and once more 11 s later, from distribution's storage). Goal:
   warm <= direct, cold <= 1.2 x direct.
3. The front's peak RSS and CPU time, and distribution's (from /proc), for the largest N.

Binaries: hack/registry-bins.sh (built with Go on first use, then cached). Disk: the image twice (upstream and
cache) plus what crane writes, a few hundred MiB per measurement, removed as it goes.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extension.component.certs import generate_ca, generate_server_cert  # noqa: E402
from tests.e2e.dataplane import Link, Registry, Tools, public_upstream_config, transfers  # noqa: E402
from tests.e2e.harness import Cache, DataPath  # noqa: E402

LINGER = 10.0  # the front's default --linger
MANIFEST_ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                             "application/vnd.docker.distribution.manifest.v2+json"])


@dataclass
class BlobTiming:
    digest: str
    sent: float  # when the request went out (monotonic)
    ttfb: float
    total: float


@dataclass
class Puller:
    blobs: list[BlobTiming] = field(default_factory=list)
    total: float = 0.0
    error: str = ""


def connect(url: str, ca: Path) -> http.client.HTTPConnection:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    if url.startswith("https://"):
        return http.client.HTTPSConnection(host, int(port), timeout=600,
                                           context=ssl.create_default_context(cafile=str(ca)))
    return http.client.HTTPConnection(host, int(port), timeout=600)


def get_blob(url: str, ca: Path, repository: str, digest: str) -> BlobTiming:
    conn = connect(url, ca)
    try:
        t0 = time.monotonic()
        conn.request("GET", f"/v2/{repository}/blobs/{digest}")
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{digest}: {resp.status}")
        h = hashlib.sha256(resp.read(1))  # returns as soon as the first byte of the body is there
        first = time.monotonic()
        buf = memoryview(bytearray(1 << 20))
        while n := resp.readinto(buf):
            h.update(buf[:n])
        end = time.monotonic()
        if "sha256:" + h.hexdigest() != digest:
            raise RuntimeError(f"{digest}: the bytes hash to sha256:{h.hexdigest()}")
        return BlobTiming(digest, t0, first - t0, end - t0)
    finally:
        conn.close()


def pull(url: str, ca: Path, repository: str, tag: str, barrier: threading.Barrier) -> Puller:
    out = Puller()
    barrier.wait()
    t0 = time.monotonic()
    try:
        conn = connect(url, ca)
        conn.request("GET", f"/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
        resp = conn.getresponse()
        manifest = json.loads(resp.read())
        conn.close()
        digests = [manifest["config"]["digest"], *(lay["digest"] for lay in manifest["layers"])]
        results: dict[str, BlobTiming | Exception] = {}

        def one(d: str) -> None:
            try:
                results[d] = get_blob(url, ca, repository, d)
            except Exception as exc:  # noqa: BLE001 - reported below
                results[d] = exc

        threads = [threading.Thread(target=one, args=(d,)) for d in digests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for d in digests:
            r = results[d]
            if isinstance(r, Exception):
                raise r
            out.blobs.append(r)
    except Exception as exc:  # noqa: BLE001 - one puller's failure is printed, the others go on
        out.error = str(exc)
    out.total = time.monotonic() - t0
    return out


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a process and its children that were waited for."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return hwm, ticks / 100.0


def fmt(seconds: list[float]) -> str:
    return f"{max(seconds):.3f}" if seconds else "-"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        res = subprocess.run([str(REPO / "hack" / "registry-bins.sh")], capture_output=True, text=True, check=True)
        bin_dir = Path(res.stdout.strip().splitlines()[-1])
        self.tools = Tools(registry=bin_dir / "registry", crane=bin_dir / "crane", bin_dir=bin_dir)
        self.ca = generate_ca()
        self.dp = DataPath(self.tools, workdir, self.ca)
        assert self.dp.ca_bundle is not None
        self.ca_bundle: Path = self.dp.ca_bundle
        server = generate_server_cert(self.ca, "upstream", ["upstream"], ["127.0.0.1"])
        self.upstream = Registry(self.tools.registry, "upstream", workdir / "upstream", public_upstream_config(),
                                 tls=(server.cert_pem, server.key_pem), ca_file=self.ca_bundle)
        self.upstream.start()
        print(f"pushing a fresh image: {args.layers} layers of {args.layer_mib} MiB of random bytes ...", flush=True)
        self.image = self.dp.crane.push_random_image(self.upstream, "bench/big", "v1", args.layers, args.layer_mib)
        # what caches and direct pulls reach the upstream through: its own port, or a link of --upstream-rate
        self.link = Link(self.upstream.host, args.upstream_rate << 20, "https") if args.upstream_rate else None
        self.remote: Registry | Link = self.link or self.upstream
        manifest = json.loads(self.image.manifest_text)
        self.sizes = {d["digest"]: d["size"] for d in [manifest["config"], *manifest["layers"]]}
        self.size = sum(self.sizes.values())
        print(f"image {self.image.digest}: {len(self.sizes)} blobs, {self.size / 2**20:.1f} MiB", flush=True)

    def cache(self, mode: str) -> Cache:
        return self.dp.cache(self.remote, None, tls=None, front=mode == "front",  # type: ignore[arg-type]
                             env={"SSL_CERT_FILE": str(self.ca_bundle)})

    def stop(self, cache: Cache) -> None:
        if cache.front:
            cache.front.stop()
        cache.registry.stop()
        shutil.rmtree(cache.registry.storage, ignore_errors=True)

    def concurrent(self, mode: str, n: int) -> None:
        cache = self.cache(mode)
        url = f"https://{cache.host}"
        mark = self.upstream.access_log.mark()
        barrier = threading.Barrier(n)
        pullers: list[Puller] = [Puller() for _ in range(n)]

        def run(i: int) -> None:
            pullers[i] = pull(url, self.ca_bundle, self.image.repository, self.image.tag, barrier)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [p.error for p in pullers if p.error]
        gets = [t for t in transfers(self.upstream.access_log, mark) if t.method == "GET" and "/blobs/" in t.path]
        heads = [t for t in transfers(self.upstream.access_log, mark) if t.method == "HEAD" and "/blobs/" in t.path]
        served = sum(t.bytes for t in gets)
        per_blob = {d: sum(1 for t in gets if t.path.endswith(d)) for d in self.sizes}
        print(f"  {n:>2} pullers: upstream blob GETs per blob {min(per_blob.values())}-{max(per_blob.values())} "
              f"({len(gets)} for {len(per_blob)} blobs, {len(heads)} blob HEADs); upstream bytes "
              f"{served / 2**20:.1f} MiB = {served / self.size:.2f} x the image; pullers ok "
              f"{n - len(errors)}/{n}" + (f"; FIRST ERROR: {errors[0]}" if errors else ""), flush=True)
        layers = [d for d, s in self.sizes.items() if s == max(self.sizes.values())] or list(self.sizes)
        firsts_ttfb, firsts_total, waits_ttfb, waits_total = [], [], [], []
        for d in layers:
            timings = sorted((b for p in pullers for b in p.blobs if b.digest == d), key=lambda b: b.sent)
            if not timings:
                continue
            firsts_ttfb.append(timings[0].ttfb)
            firsts_total.append(timings[0].total)
            waits_ttfb += [b.ttfb for b in timings[1:]]
            waits_total += [b.total for b in timings[1:]]
        totals = sorted(p.total for p in pullers if not p.error)
        mib = self.sizes[layers[0]] / 2**20
        print(f"      per {mib:.0f} MiB layer (max over the {len(layers)} layers): first asker "
              f"ttfb {fmt(firsts_ttfb)} s, total {fmt(firsts_total)} s; the waiting ones ttfb {fmt(waits_ttfb)} s, "
              f"total {fmt(waits_total)} s; whole pull per puller {totals[0]:.2f}-{totals[-1]:.2f} s"
              if totals else "      no puller finished", flush=True)
        if cache.front and cache.front.process and cache.front.process.proc:
            rss, cpu = proc_stats(cache.front.process.proc.pid)
            assert cache.registry.process and cache.registry.process.proc
            d_rss, d_cpu = proc_stats(cache.registry.process.proc.pid)
            print(f"      front: peak RSS {rss:.0f} MiB, CPU {cpu:.2f} s; distribution: peak RSS {d_rss:.0f} MiB, "
                  f"CPU {d_cpu:.2f} s", flush=True)
        elif cache.registry.process and cache.registry.process.proc:
            d_rss, d_cpu = proc_stats(cache.registry.process.proc.pid)
            print(f"      distribution: peak RSS {d_rss:.0f} MiB, CPU {d_cpu:.2f} s", flush=True)
        self.stop(cache)

    def crane_pull(self, host: str) -> float:
        out = Path(tempfile.mkdtemp(prefix="crane-pull-", dir=self.dp.workdir))
        t0 = time.monotonic()
        try:
            self.dp.crane.run("pull", "--format", "oci", f"{host}/{self.image.repository}:{self.image.tag}", str(out),
                              ca_file=self.ca_bundle, insecure=False, timeout=600)
            return time.monotonic() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def pull_times(self, modes: list[str]) -> None:
        direct = [self.crane_pull(self.remote.host) for _ in range(self.args.repeat)]
        d = statistics.median(direct)
        print(f"  crane pull, 1 puller, median of {self.args.repeat}: direct from the upstream {d:.2f} s "
              f"({', '.join(f'{x:.2f}' for x in direct)})", flush=True)
        for mode in modes:
            cold, warm, later = [], [], []
            for _ in range(self.args.repeat):
                cache = self.cache(mode)
                cold.append(self.crane_pull(cache.host))
                warm.append(self.crane_pull(cache.host))
                time.sleep(LINGER + 1)  # the front's spools are gone: distribution serves its storage
                later.append(self.crane_pull(cache.host))
                self.stop(cache)
            c, w, la = statistics.median(cold), statistics.median(warm), statistics.median(later)
            print(f"  {mode:>12}: cold {c:.2f} s = {c / d:.2f} x direct (goal <= 1.2); warm right after {w:.2f} s = "
                  f"{w / d:.2f} x, warm {LINGER + 1:.0f} s later {la:.2f} s = {la / d:.2f} x direct (goal <= 1.0)   "
                  f"[cold {', '.join(f'{x:.2f}' for x in cold)}; warm {', '.join(f'{x:.2f}' for x in warm)}; "
                  f"later {', '.join(f'{x:.2f}' for x in later)}]", flush=True)

    def close(self) -> None:
        if self.link:
            self.link.close()
        self.upstream.stop()
        self.dp.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pullers", default="1,3,10", help="concurrent pullers, comma separated (default 1,3,10)")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--layer-mib", type=int, default=40)
    p.add_argument("--modes", default="distribution,front", help="distribution, front (default both)")
    p.add_argument("--repeat", type=int, default=3, help="crane pulls per figure of part 2 (default 3)")
    p.add_argument("--no-pull-times", action="store_true", help="skip part 2")
    p.add_argument("--upstream-rate", type=int, default=0, metavar="MIB_S",
                   help="reach the upstream (caches and direct pulls alike) through a link of this many MiB/s, all "
                        "connections together, as over a network (default 0: loopback, no limit)")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"distribution", "front"}:
        p.error(f"--modes: unknown {sorted(set(modes) - {'distribution', 'front'})}")
    print("$ python hack/bench_pulls.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]), flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pulls-"))
    bench = Bench(args, workdir)
    try:
        for mode in modes:
            print(f"{mode}:", flush=True)
            for n in (int(x) for x in args.pullers.split(",")):
                bench.concurrent(mode, n)
        if not args.no_pull_times:
            print("pull time:", flush=True)
            bench.pull_times(modes)
    finally:
        bench.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
