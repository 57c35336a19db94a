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


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
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
