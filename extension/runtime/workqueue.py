"""A work queue of keys, as client-go's: a key is queued at most once, is processed by one worker at a time, and
a key added while it is processed is processed again once that ends. Workers read the latest state when they
start, so a burst of events for one object costs one pass. Thread-safe; nothing is kept for a key once done."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable

from extension import metrics


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()  # added while processing
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            if self._closed:
                return
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
                metrics.QUEUE_DEPTH.set(len(self._queue))
                self._cond.notify()

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (now being processed), or None when closed or after ``timeout``."""
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._queue:
                return None
            key = self._queue.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            metrics.QUEUE_DEPTH.set(len(self._queue))
            return key

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued and not self._closed:
                    self._queued.add(key)
                    self._queue.append(key)
                    self._cond.notify()

    def busy(self, key: Hashable) -> bool:
        with self._cond:
            return key in self._processing or key in self._queued

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._queued.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._processing
