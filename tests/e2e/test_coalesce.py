"""Concurrent pulls through a cache Pod with the coalescing front: one upstream fetch per blob.

The cache runs as its rendered Pod runs it with a front image (``run --front-image``): distribution from the
rendered ``config.yml`` for that Pod (loopback, no TLS) and the front with the rendered container's command and
arguments (TLS with the controller's certificate, the spool in the cache's storage directory), see
:meth:`harness.DataPath.cache`. The image is fresh and about 200 MiB: 5 layers of 40 MiB of random bytes. What the
upstream served is read from its access log (every request, its status and body size); what each puller got is
hashed on disk.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import ssl
import threading
import time
from pathlib import Path

import pytest

from extension.component import nodeauth

from .dataplane import CACHE_AGENT, CONTAINERD_AGENT, Image, Link, describe, transfers
from .figures import report
from .harness import DataPath

LINGER = 10.0  # the front's default --linger: a completed fetch serves its spool this long


@pytest.fixture(scope="module")
def big(tools, ca, tmp_path_factory):
    """A public upstream with a fresh 5-layer image of about 200 MiB of random bytes."""
    dp = DataPath(tools, tmp_path_factory.mktemp("coalesce-upstream"), ca)
    try:
        upstream = dp.upstream({})
        image = dp.crane.push_random_image(upstream, "coalesce/big", "v1", layers=5, layer_mib=40)
        yield upstream, image
    finally:
        dp.close()


def sizes(image: Image) -> dict[str, int]:
    manifest = json.loads(image.manifest_text)
    return {d["digest"]: d["size"] for d in [manifest["config"], *manifest["layers"]]}


def crane_pull_all(datapath: DataPath, ref: str, n: int, tag: str) -> list[Path]:
    """``n`` crane pulls of ``ref`` (OCI layout, one directory each) started at the same moment."""
    barrier = threading.Barrier(n)
    out = [datapath.workdir / f"pull-{tag}-{i}" for i in range(n)]
    errors: list[str] = []

    def pull(i: int) -> None:
        barrier.wait()
        res = datapath.crane.run("pull", "--format", "oci", ref, str(out[i]), ca_file=datapath.ca_bundle,
                                 check=False, timeout=600)
        if res.returncode != 0:
            errors.append(res.stderr)

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    return out


def check_layout(layout: Path, image: Image) -> None:
    """The puller got the image: its manifest digest, and every blob on disk hashes to its name."""
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.digest]
    blobs = layout / "blobs" / "sha256"
    have = set()
    for f in blobs.iterdir():
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == f.name, f"{f}: its bytes hash to sha256:{h.hexdigest()}"
        have.add(f"sha256:{f.name}")
    assert image.all_digests <= have


@pytest.mark.parametrize("pullers", [3, 10])
def test_concurrent_pulls_fetch_each_blob_once(datapath, big, pullers):
    upstream, image = big
    cache = datapath.cache(upstream, None, tls=None, front=True)  # TLS on, the default
    assert cache.front is not None and cache.front.tls
    ref = image.ref(cache.host)
    blob_bytes = sizes(image)
    mark, front_mark = upstream.access_log.mark(), cache.front.mark()

    t0 = time.monotonic()
    layouts = crane_pull_all(datapath, ref, pullers, "cold")
    cold = time.monotonic() - t0
    for layout in layouts:
        check_layout(layout, image)
        shutil.rmtree(layout)

    # the upstream served each blob once, and as many bytes as the image has
    served = [t for t in transfers(upstream.access_log, mark) if "/blobs/" in t.path]
    gets = [t for t in served if t.method == "GET"]
    assert sorted(t.path.rsplit("/", 1)[1] for t in gets) == sorted(image.blobs), describe(
        upstream.access_log.since(mark))
    assert all(t.status == 200 for t in gets)
    assert sum(t.bytes for t in gets) == sum(blob_bytes.values())
    assert all(CACHE_AGENT.match(r.agent) for r in upstream.access_log.since(mark))

    # the front: per blob one fetch, the other pullers joined it; none was cut off
    lines = [a for a in cache.front.access(front_mark) if "/blobs/" in a["path"] and a["method"] == "GET"]
    for digest in image.blobs:
        roles = sorted(a["role"] for a in lines if a["path"].endswith(digest))
        assert roles.count("fetch") == 1 and len(roles) == pullers, (digest, roles)
        assert set(roles) <= {"fetch", "wait", "linger"}, roles
    big_blob = max(blob_bytes, key=lambda d: blob_bytes[d])
    first = next(a for a in lines if a["path"].endswith(big_blob) and a["role"] == "fetch")
    others = [a for a in lines if a["path"].endswith(big_blob) and a["role"] != "fetch"]
    report(f"coalesce: {pullers} cold crane pulls of {sum(blob_bytes.values()) / 2**20:.0f} MiB through the front "
           f"(TLS): {cold:.2f} s; upstream blob GETs {len(gets)} for {len(image.blobs)} blobs, "
           f"{sum(t.bytes for t in gets) / 2**20:.1f} MiB; the {blob_bytes[big_blob] / 2**20:.0f} MiB layer: first "
           f"ttfb {float(first['ttfb']):.3f} s total {float(first['total']):.2f} s, the others ttfb <= "
           f"{max(float(a['ttfb']) for a in others):.3f} s total <= {max(float(a['total']) for a in others):.2f} s")

    # warm, once the spools are gone (after --linger): distribution serves its storage. By tag the upstream is
    # asked for the tag only (distribution's proxy resolves tags live); by digest nothing at all.
    time.sleep(LINGER + 0.5)
    mark = upstream.access_log.mark()
    for layout in crane_pull_all(datapath, ref, 3, "warm"):
        check_layout(layout, image)
        shutil.rmtree(layout)
    warm = upstream.access_log.since(mark)
    assert all(r.path == f"/v2/{image.repository}/manifests/{image.tag}" or r.path == "/v2/" for r in warm), \
        describe(warm)
    mark = upstream.access_log.mark()
    by_digest = f"{cache.host}/{image.repository}@{image.digest}"
    for layout in crane_pull_all(datapath, by_digest, 3, "warm-digest"):
        check_layout(layout, image)
        shutil.rmtree(layout)
    assert upstream.access_log.since(mark) == [], describe(upstream.access_log.since(mark))
    assert not [a for a in cache.front.access(front_mark) if a["role"].endswith(("-cut", "-gone"))]


def test_containerds_pulling_at_once_fetch_each_blob_once(datapath, big, containerd2):
    """Three containerd 2.x, each with the rendered hosts.toml pointing at the cache Pod's front, pull the image
    at the same moment: one upstream GET per blob, every blob from the cache (no fallback), each containerd holds
    the image."""
    upstream, image = big
    cache = datapath.cache(upstream, None, tls=None, front=True)
    hosts = datapath.hosts_dir(cache)
    ref = image.ref(upstream.host)  # what a node pulls: the upstream's name, hosts.toml sends it to the cache
    ctrs = [datapath.containerd(containerd2) for _ in range(3)]
    mark = upstream.access_log.mark()
    barrier = threading.Barrier(len(ctrs))
    results: dict[int, object] = {}

    def pull(i: int) -> None:
        barrier.wait()
        results[i] = ctrs[i].pull(ref, hosts, timeout=600)

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(len(ctrs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, ctr in enumerate(ctrs):
        assert results[i].ok, results[i].output  # type: ignore[attr-defined]
        assert image.all_digests <= ctr.content_digests()
        assert ctr.image_target(ref) == image.digest
    requests = upstream.access_log.since(mark)
    assert not [r for r in requests if CONTAINERD_AGENT.match(r.agent)], describe(requests)  # no fallback
    gets = [t for t in transfers(upstream.access_log, mark) if t.method == "GET" and "/blobs/" in t.path]
    assert sorted(t.path.rsplit("/", 1)[1] for t in gets) == sorted(image.blobs), describe(requests)
    assert sum(t.bytes for t in gets) == sum(sizes(image).values())


def raw_get(host: str, path: str, ca: Path | None, headers: dict[str, str] | None = None,
            timeout: float = 60) -> tuple[int, int | None, bytes, str]:
    """(status, Content-Length, body, error) of one GET; the body as far as it came, the error that ended it."""
    h, port = host.rsplit(":", 1)
    if ca:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            h, int(port), timeout=timeout, context=ssl.create_default_context(cafile=str(ca)))
    else:
        conn = http.client.HTTPConnection(h, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        length = resp.getheader("Content-Length")
        body, error = b"", ""
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body, error = exc.partial, f"IncompleteRead({len(exc.partial)} bytes read)"
        return resp.status, int(length) if length else None, body, error
    finally:
        conn.close()


def test_only_nodes_with_the_header_get_a_blob_in_flight(datapath, big):
    """With node auth (``run --node-auth``) distribution checks every request's Authorization; the front joins
    a request to a fetch only with the same header, so a request without it, arriving while the fetch of that
    blob is in flight, is passed to distribution and refused, never served the bytes."""
    upstream, image = big
    creds = nodeauth.generate()
    cache = datapath.cache(upstream, None, tls=None, node_auth=creds, front=True)
    layer = max(sizes(image).items(), key=lambda kv: kv[1])[0]
    path = f"/v2/{image.repository}/blobs/{layer}"
    results: dict[str, tuple] = {}

    def get(name: str, headers: dict[str, str]) -> None:
        results[name] = raw_get(cache.host, path, datapath.ca_bundle, headers)

    node = {"Authorization": creds.authorization}
    threads = [threading.Thread(target=get, args=(f"node-{i}", node)) for i in range(2)]
    threads += [threading.Thread(target=get, args=("anonymous", {})),
                threading.Thread(target=get, args=("wrong", {"Authorization": "Basic " + "eDp5"}))]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    for i in range(2):
        status, _, body, error = results[f"node-{i}"]
        assert status == 200 and not error and "sha256:" + hashlib.sha256(body).hexdigest() == layer
    assert results["anonymous"][0] == 401 and results["wrong"][0] == 401
    assert layer.encode() not in results["anonymous"][2]


def test_an_upstream_that_fails_mid_blob_leaves_every_puller_short(datapath, big):
    """The upstream breaks off in the middle of a 40 MiB layer: each of the 3 pullers of it (the one whose
    request started the fetch and the two that joined it) gets a response one byte or more short of its
    Content-Length, an error for any HTTP client, never a complete body; the cache stores nothing. The next
    pull fetches the blob again, once, and gets it whole."""
    upstream, image = big
    throttle = Link(upstream.host, rate=20 << 20)
    try:
        cache = datapath.cache(throttle, None, tls=None, front=True)  # type: ignore[arg-type]
        layer = max(sizes(image).items(), key=lambda kv: kv[1])[0]
        path = f"/v2/{image.repository}/blobs/{layer}"
        results: dict[int, tuple] = {}

        def get(i: int) -> None:
            results[i] = raw_get(cache.host, path, datapath.ca_bundle)

        threads = [threading.Thread(target=get, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # about half of the layer has gone through
        throttle.cut()
        for t in threads:
            t.join()
        for i in range(3):
            status, length, body, error = results[i]
            assert status == 200 and length == sizes(image)[layer], results[i][:2]
            assert error and len(body) < length, (len(body), length, error)
        roles = sorted(a["role"] for a in cache.front.access() if a["path"] == path)
        assert roles.count("fetch-cut") == 1 and len(roles) == 3 and all(r.endswith("-cut") for r in roles), roles
        assert layer not in cache.registry.blob_digests()

        mark = upstream.access_log.mark()
        status, length, body, error = raw_get(cache.host, path, datapath.ca_bundle)
        assert status == 200 and not error and "sha256:" + hashlib.sha256(body).hexdigest() == layer
        gets = [t for t in transfers(upstream.access_log, mark) if t.method == "GET" and t.path == path]
        assert len(gets) == 1
    finally:
        throttle.close()
