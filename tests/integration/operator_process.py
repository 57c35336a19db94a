"""Run ``registry-cache run`` as a user would: a separate process, logs in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class OperatorProcess:
    """``crash_at``: end the process at that checkpoint of the actuator (see crash_at.py); ``slow_at``: (point,
    seconds, flag file) to sleep there once the flag file exists (see slow_at.py). The upstream credential
    checks are off unless ``upstream_check``: the tests' upstreams with credentials are names of public
    registries or names that exist nowhere, and no test contacts anything beyond this machine."""

    def __init__(self, kubeconfig: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None,
                 crash_at: str | None = None, upstream_check: bool = False,
                 slow_at: tuple[str, float, Path] | None = None):
        command = ["-m", "tests.integration.crash_at", crash_at] if crash_at else ["-m", "extension.cli"]
        if slow_at is not None:
            command = ["-m", "tests.integration.slow_at", slow_at[0], str(slow_at[1]), str(slow_at[2])]
        self.args = [sys.executable, *command, "run", "--kubeconfig", str(kubeconfig), *extra,
                     *([] if upstream_check else ["--no-upstream-check"])]
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        code, self.proc = self.proc.returncode, None
        return code

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.2,
              log: Callable[[], str] | None = None) -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` and the operator log tail."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    tail = "\n".join(log().splitlines()[-40:]) if log else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}\n{tail}")
