"""Small helpers for the local cluster: child processes with log files, commands, waiting."""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    """The local cluster could not be started or did not do what was asked (the message says why)."""


def _preexec() -> Callable[[], None] | None:
    """Die with the parent (PR_SET_PDEATHSIG); only from the main thread (the signal follows the thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


class Proc:
    """One long-running child in its own session, stdout and stderr appended to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None):
        self.name, self.argv, self.log = name, list(argv), log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as f:
            f.write(f"---- {dt.datetime.now().isoformat(timespec='seconds')} {' '.join(self.argv)}\n".encode())
            f.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                          env=self.env, cwd=self.cwd, start_new_session=True,
                                          preexec_fn=_preexec(), close_fds=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ClusterError(f"{self.name} exited with code {self.popen.returncode}; last lines of {self.log}:\n"
                               f"{tail(self.log)}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM its process group, wait, then SIGKILL. Idempotent."""
        p, self.popen = self.popen, None
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60, input: str | None = None,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                         env=dict(env) if env is not None else None)
    if check and res.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
    return res


def wait_for(what: str, probe: Callable[[], T], timeout: float, interval: float = 0.5,
             details: Callable[[], str] | None = None) -> T:
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            extra = ("\n" + details()) if details else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){extra}")
        time.sleep(interval)
