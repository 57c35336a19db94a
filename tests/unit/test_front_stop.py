"""How the coalescing front stops (the one front test that runs it as a process, about 3 s): after SIGTERM it keeps
serving for --shutdown-delay (the Pod is still among the Service's endpoints), then stops accepting and exits."""

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


def test_the_front_serves_for_its_shutdown_delay_after_sigterm(tmp_path):
    port = _free_port()
    front = subprocess.Popen([sys.executable, "-m", "extension.front", f"--listen=127.0.0.1:{port}",
                              f"--backend=127.0.0.1:{_free_port()}", f"--spool-dir={tmp_path}",
                              "--shutdown-delay=2", "--drain=1"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not _healthy(port):
            assert front.poll() is None and time.monotonic() < deadline, "the front did not come up"
            time.sleep(0.05)
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
