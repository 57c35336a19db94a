"""The coalescing front as a process (a few seconds; its data path with distribution is tests/e2e/test_coalesce.py):
how it stops (after SIGTERM it keeps serving for --shutdown-delay, while the Pod is still among the Service's
endpoints, then stops accepting and exits) and what it answers when distribution hangs."""

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int, scheme: str = "http") -> bool:
    import ssl
    context = ssl._create_unverified_context() if scheme == "https" else None
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/healthz", timeout=1, context=context) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _front(tmp_path, backend_port: int, *flags: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    front = subprocess.Popen([sys.executable, "-m", "extension.front", f"--listen=127.0.0.1:{port}",
                              f"--backend=127.0.0.1:{backend_port}", f"--spool-dir={tmp_path}", *flags],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not _healthy(port):
        if front.poll() is not None or time.monotonic() > deadline:
            front.kill()
            raise AssertionError(f"the front did not come up: {front.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return front, port


def test_the_front_serves_for_its_shutdown_delay_after_sigterm(tmp_path):
    front, port = _front(tmp_path, _free_port(), "--shutdown-delay=2", "--drain=1")
    try:
        front.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        served = 0
        while time.monotonic() - signalled < 1.5:
            assert _healthy(port), f"refused {time.monotonic() - signalled:.2f}s after SIGTERM, within its delay"
            served += 1
            time.sleep(0.1)
        assert front.wait(10) == 0
        stopped = time.monotonic() - signalled
        assert 2 <= stopped < 6, stopped
        assert not _healthy(port)
        assert served >= 10
        assert "stopping: serving 2s more, then draining for up to 1s" in front.stderr.read()
    finally:
        if front.poll() is None:
            front.kill()
            front.wait()


def test_a_hung_distribution_is_answered_502_after_the_answer_timeout(tmp_path):
    """distribution frozen (SIGSTOP: its port still takes connections, nothing answers): the front answers 502
    after --answer-timeout, so containerd falls back to the upstream then rather than after the body timeout;
    after one such wait the next requests get 502 at once (a pull makes several), until distribution answers."""
    with socket.socket() as hung:  # accepts (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        front, port = _front(tmp_path, hung.getsockname()[1], "--answer-timeout=1", "--backend-timeout=60",
                             "--shutdown-delay=0")
        try:
            took = {}
            for path in ("/v2/library/x/manifests/latest", "/v2/library/x/blobs/sha256:" + "ab" * 32,
                         "/v2/library/x/blobs/sha256:" + "cd" * 32):
                started = time.monotonic()
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30)
                    raise AssertionError(f"{path}: answered 2xx")
                except urllib.error.HTTPError as exc:
                    assert exc.code == 502, exc.code
                took[path] = time.monotonic() - started
            first, *others = took.values()
            assert 1 <= first < 5, f"the first 502 after {first:.1f}s"
            assert all(t < 0.5 for t in others), f"the next ones waited again: {took}"
        finally:
            front.send_signal(signal.SIGTERM)
            front.wait(10)


class _Distribution:
    """A stand-in for one replica's distribution: serves the blobs it is given, counts the GETs of each."""

    def __init__(self, blobs: dict[str, bytes]):
        import http.server
        import threading

        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # as distribution: kept connections

            def do_GET(self) -> None:
                digest = self.path.rsplit("/", 1)[-1]
                outer.asked.append(digest)
                body = blobs.get(digest)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _blobs(n: int) -> dict[str, bytes]:
    import hashlib
    import os
    out = {}
    for _ in range(n):
        data = os.urandom(4096)
        out["sha256:" + hashlib.sha256(data).hexdigest()] = data
    return out


def _replica(tmp_path, ordinal: int, ports: list[int], backend: int, *flags: str, scheme: str = "http"):
    spool = tmp_path / f"spool-{ordinal}"
    spool.mkdir(exist_ok=True)
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    front = subprocess.Popen([sys.executable, "-m", "extension.front", f"--listen=127.0.0.1:{ports[ordinal]}",
                              f"--backend=127.0.0.1:{backend}", f"--spool-dir={spool}", f"--peers={peers}",
                              f"--ordinal={ordinal}", "--shutdown-delay=0", "--linger=0", *flags],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not _healthy(ports[ordinal], scheme):
        if front.poll() is not None or time.monotonic() > deadline:
            front.kill()
            raise AssertionError(f"the front did not come up: {front.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return front


def _get(scheme: str, port: int, digest: str) -> bytes:
    import ssl
    context = ssl._create_unverified_context() if scheme == "https" else None
    with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v2/library/x/blobs/{digest}", timeout=30,
                                context=context) as answer:
        return answer.read()


def _stop(*fronts: subprocess.Popen) -> str:
    said = ""
    for front in fronts:
        if front.poll() is None:
            front.kill()
        said += front.communicate()[1]
    return said


def _certs(tmp_path, name: str) -> list[str]:
    from extension.component.certs import generate_ca, generate_server_cert
    pair = generate_server_cert(generate_ca(), name, [name], ["127.0.0.1"])
    (tmp_path / f"{name}.crt").write_text(pair.cert_pem)
    (tmp_path / f"{name}.key").write_text(pair.key_pem)
    return [f"--tls-cert={tmp_path / f'{name}.crt'}", f"--tls-key={tmp_path / f'{name}.key'}"]


import pytest  # noqa: E402


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_replicas_fetch_each_blob_at_the_replica_that_owns_it(tmp_path, scheme):
    """Two replicas, each with its own distribution (its own volume): whichever replica is asked, a blob is
    fetched from the distribution of the replica that owns it (the other's front asks that replica's front), so
    the upstream is asked once per blob, not once per replica. With TLS the replicas share the certificate."""
    from extension.front.server import owner_of

    blobs = _blobs(12)
    backends = [_Distribution(blobs), _Distribution(blobs)]
    ports = [_free_port(), _free_port()]
    tls = _certs(tmp_path, "cache") if scheme == "https" else []
    fronts = [_replica(tmp_path, i, ports, backends[i].port, *tls, scheme=scheme) for i in (0, 1)]
    try:
        owners = {digest: owner_of(digest, 2) for digest in blobs}
        assert set(owners.values()) == {0, 1}, "12 digests all owned by one replica"
        for digest, data in blobs.items():
            for i in (1, 0):
                assert _get(scheme, ports[i], digest) == data
        for i in (0, 1):  # (--linger=0: the owner's second request for a blob may reach its distribution again)
            assert set(backends[i].asked) == {d for d, o in owners.items() if o == i}, (i, backends[i].asked)
    finally:
        said = _stop(*fronts)
        for b in backends:
            b.close()
    assert "did not serve" not in said, said


def test_a_replica_whose_peer_is_gone_or_not_its_own_fetches_itself(tmp_path):
    """The owner is not there (its port refuses): the replica fetches every blob from its own distribution at
    once, as a single replica does. A peer that presents another certificate than the cache's own is not asked
    for anything (the request, with a client's Authorization, is never sent to it)."""
    blobs = _blobs(8)
    own = _Distribution(blobs)
    ports = [_free_port(), _free_port()]
    front = _replica(tmp_path, 1, ports, own.port)
    try:
        started = time.monotonic()
        for digest, data in blobs.items():
            assert _get("http", ports[1], digest) == data
        assert time.monotonic() - started < 5
        assert set(own.asked) == set(blobs)
    finally:
        said = _stop(front)
    assert "did not serve" in said

    # TLS: replica 0 serves with another certificate (another cache's, or anyone's)
    other = _Distribution(blobs)
    ports = [_free_port(), _free_port()]
    impostor = _replica(tmp_path, 0, ports, other.port, *_certs(tmp_path, "impostor"), scheme="https")
    own.asked.clear()
    front = _replica(tmp_path, 1, ports, own.port, *_certs(tmp_path, "cache"), scheme="https")
    try:
        for digest, data in blobs.items():
            assert _get("https", ports[1], digest) == data
        assert set(own.asked) == set(blobs) and other.asked == []
    finally:
        said = _stop(front, impostor)
        own.close()
        other.close()
    assert "another certificate" in said, said
