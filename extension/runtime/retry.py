"""Backoff for operations that failed and are retried: 5 s, doubling, at most 5 minutes, per key.

Shared by the Extension controller and the standalone bridge, so that both retry alike. In memory: after a
restart the controller finds Extensions in Error by their status (and retries them at once), the bridge
resyncs every Shoot at start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


@dataclass
class _Entry:
    attempts: int = 0
    due: float = 0.0


class Backoff:
    """Thread-safe: ``failed(key)`` schedules the next attempt and returns its delay, ``succeeded(key)`` forgets
    the key, ``due()`` lists the keys whose next attempt has come."""

    def __init__(self, base: float = RETRY_BASE_SECONDS, maximum: float = RETRY_MAX_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.base, self.maximum, self.clock = base, maximum, clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def failed(self, key: str) -> float:
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            delay = min(self.maximum, self.base * (2 ** min(entry.attempts, 30)))
            entry.attempts += 1
            entry.due = self.clock() + delay
            return delay

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def waiting(self, key: str) -> bool:
        """Whether ``key`` failed and its next attempt has not come yet."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.due > self.clock()

    def due(self) -> list[str]:
        now = self.clock()
        with self._lock:
            return sorted(key for key, entry in self._entries.items() if entry.due <= now)
