"""A cache address that drops every connection attempt: what a node sees when the cache's Pod or node is
gone without a trace (a network partition, a node that died, a stale endpoint), as opposed to a stopped
process on a live host, which refuses at once.

An address in 127.0.0.0/8 (on this machine only, never routed elsewhere) whose TCP SYNs to one port are
dropped by an iptables rule in a chain of this test's own (``RC-BH-<pid>-<n>``), jumped to from INPUT: a
client's connect() gets no answer at all and waits for its dial timeout. The chain and the jump are removed
again at :meth:`Blackhole.close`.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import time

_SEQ = itertools.count()


class BlackholeUnavailable(RuntimeError):
    pass


def _iptables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30)


class Blackhole:
    def __init__(self) -> None:
        if os.geteuid() != 0 or not shutil.which("iptables"):
            raise BlackholeUnavailable("a blackholed address needs root and iptables")
        self.address = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.port = 5000
        self.chain = f"RC-BH-{os.getpid()}-{next(_SEQ)}"[:28]
        made = _iptables("-N", self.chain)
        if made.returncode != 0:
            raise BlackholeUnavailable(f"iptables -N {self.chain}: {made.stderr.strip()}")
        self._hooked = False
        try:
            for args in (["-A", self.chain, "-d", f"{self.address}/32", "-p", "tcp", "--dport", str(self.port),
                          "-j", "DROP"], ["-I", "INPUT", "1", "-j", self.chain]):
                res = _iptables(*args)
                if res.returncode != 0:
                    raise BlackholeUnavailable(f"iptables {' '.join(args)}: {res.stderr.strip()}")
                self._hooked = self._hooked or args[0] == "-I"
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    def connect_seconds(self, timeout: float = 1.0) -> float | None:
        """How long a connect() takes to fail; None when it timed out (no answer: a real blackhole)."""
        t0 = time.monotonic()
        try:
            socket.create_connection((self.address, self.port), timeout=timeout).close()
        except TimeoutError:
            return None
        except OSError:
            pass
        return time.monotonic() - t0

    def close(self) -> None:
        if self._hooked:
            _iptables("-D", "INPUT", "-j", self.chain)
            self._hooked = False
        _iptables("-F", self.chain)
        _iptables("-X", self.chain)
