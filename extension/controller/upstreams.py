"""Which upstreams each Extension's caches pull from with credentials, and their checks (:mod:`extension.
upstreamcheck`): at every reconcile (the actuator hands over the targets) and every interval. Sets the
metrics; the controller writes the conditions (:mod:`.conditions`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from prometheus_client import Gauge

from extension import metrics
from extension.upstreamcheck import (
    DEADLINE_SECONDS,
    INVALID,
    REQUEST_TIMEOUT_SECONDS,
    UNREACHABLE,
    VALID,
    CheckResult,
    Target,
    check_all,
)

log = logging.getLogger(__name__)

Checker = Callable[[Sequence[Target], float, float], list[CheckResult]]


class UpstreamChecks:
    def __init__(self, timeout: float = REQUEST_TIMEOUT_SECONDS, deadline: float = DEADLINE_SECONDS,
                 checker: Checker = check_all):
        self.timeout, self.deadline, self._checker = timeout, deadline, checker
        self._targets: dict[str, list[Target]] = {}  # by seed namespace
        self._lock = threading.Lock()

    def set_targets(self, namespace: str, targets: Sequence[Target]) -> None:
        with self._lock:
            before = {t.upstream for t in self._targets.get(namespace, [])}
            self._targets[namespace] = list(targets)
        for upstream in before - {t.upstream for t in targets}:
            _remove_series(namespace, upstream)

    def forget(self, namespace: str) -> None:
        with self._lock:
            gone = self._targets.pop(namespace, [])
        for target in gone:
            _remove_series(namespace, target.upstream)

    def known(self) -> set[str]:
        """Namespaces whose targets are known (possibly none)."""
        with self._lock:
            return set(self._targets)

    def namespaces(self) -> list[str]:
        with self._lock:
            return sorted(ns for ns, targets in self._targets.items() if targets)

    def run(self, namespace: str) -> list[CheckResult] | None:
        """Check the namespace's upstreams (bounded by the deadline); None when it has no targets known."""
        with self._lock:
            targets = list(self._targets.get(namespace, []))
        if namespace not in self._targets:
            return None
        results = self._checker(targets, self.timeout, self.deadline)
        for r in results:
            _record(namespace, r)
            if r.result != VALID:
                log.warning("%s: credentials of upstream %s: %s (%s)", namespace, r.upstream, r.result, r.detail)
        return results


def _record(namespace: str, result: CheckResult) -> None:
    metrics.UPSTREAM_REACHABLE.labels(namespace, result.upstream).set(0 if result.result == UNREACHABLE else 1)
    if result.result in (VALID, INVALID):
        metrics.UPSTREAM_CREDENTIALS_VALID.labels(namespace, result.upstream).set(1 if result.result == VALID else 0)
    else:  # nothing known about the credentials: no sample, rather than a stale or a made-up one
        _remove(metrics.UPSTREAM_CREDENTIALS_VALID, namespace, result.upstream)


def _remove(gauge: Gauge, namespace: str, upstream: str) -> None:
    try:
        gauge.remove(namespace, upstream)
    except KeyError:
        pass


def _remove_series(namespace: str, upstream: str) -> None:
    _remove(metrics.UPSTREAM_CREDENTIALS_VALID, namespace, upstream)
    _remove(metrics.UPSTREAM_REACHABLE, namespace, upstream)
