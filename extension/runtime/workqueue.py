"""A work queue of keys, as client-go's: a key is queued at most once, is processed by one worker at a time, and
a key added while it is processed is processed again once that ends. Workers read the latest state when they
start, so a burst of events for one object costs one pass. Thread-safe; nothing is kept for a key once done.

Its metrics are client-go's, under the queue's ``name`` (:mod:`extension.runtime.metrics`): an add that queues a
key (or marks one being processed to be processed again) counts in ``workqueue_adds_total`` and in
``workqueue_depth`` until a worker takes it; ``workqueue_queue_duration_seconds`` from that first add to the
take, ``workqueue_work_duration_seconds`` from the take to :meth:`WorkQueue.done`; :meth:`WorkQueue.add` with
``retry`` (a failed key whose backoff has passed, client-go's ``AddRateLimited``) counts in
``workqueue_retries_total``. The unfinished work and the longest running processor are worked out when scraped:
an idle queue costs nothing."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from extension.runtime import metrics


class WorkQueue:
    def __init__(self, name: str = "default", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._processing: dict[Hashable, float] = {}  # key -> when a worker took it
        self._dirty: set[Hashable] = set()  # added while processing
        self._added: dict[Hashable, float] = {}  # key -> when it was first added since it was last taken
        self._closed = False
        labels = (name, name)
        self._adds = metrics.WORKQUEUE_ADDS.labels(*labels)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(*labels)
        self._queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(*labels)
        self._work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(*labels)
        metrics.WORKQUEUE_DEPTH.labels(*labels).set_function(self.depth)
        metrics.WORKQUEUE_UNFINISHED.labels(*labels).set_function(self.unfinished_seconds)
        metrics.WORKQUEUE_LONGEST.labels(*labels).set_function(self.longest_running_seconds)
        metrics.DEPRECATED_QUEUE_DEPTH.set_function(self.__len__)

    def add(self, key: Hashable, retry: bool = False) -> None:
        with self._cond:
            if self._closed:
                return
            if retry:
                self._retries.inc()
            if key in self._queued or key in self._dirty:
                return  # waiting already
            self._adds.inc()
            self._added.setdefault(key, self.clock())
            if key in self._processing:
                self._dirty.add(key)
            else:
                self._queued.add(key)
                self._queue.append(key)
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
            now = self.clock()
            self._processing[key] = now
            added = self._added.pop(key, None)
            if added is not None:
                self._queue_duration.observe(now - added)
            return key

    def done(self, key: Hashable) -> None:
        with self._cond:
            started = self._processing.pop(key, None)
            if started is not None:
                self._work_duration.observe(self.clock() - started)
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
            self._dirty.clear()
            self._added.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def depth(self) -> int:
        """Keys waiting for a worker, those to be processed again once their worker is done included (client-go's
        depth)."""
        with self._cond:
            return len(self._queue) + len(self._dirty)

    def unfinished_seconds(self) -> float:
        """The seconds the keys being processed have been at it, together."""
        with self._cond:
            now = self.clock()
            return sum(now - started for started in self._processing.values())

    def longest_running_seconds(self) -> float:
        with self._cond:
            now = self.clock()
            return max((now - started for started in self._processing.values()), default=0.0)

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._processing
