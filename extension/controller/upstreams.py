"""Which upstreams each Extension's caches pull from with credentials, and their checks (:mod:`extension.
upstreamcheck`; for a cache with a credential provider plugin what its Pods report, :mod:`.providers`): at every
reconcile (the actuator hands over the targets) and every interval. Sets the metrics; the controller writes the
conditions (:mod:`.conditions`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from prometheus_client import Gauge

from extension import metrics
from extension.upstreamcheck import (
    DEADLINE_SECONDS,
    INVALID,
    PLUGIN_ANSWERED,
    PLUGIN_FAILURES,
    PLUGIN_NOT_ASKED,
    REQUEST_TIMEOUT_SECONDS,
    UNREACHABLE,
    VALID,
    CheckResult,
    PluginTarget,
    Target,
    check_all,
)

log = logging.getLogger(__name__)

Checker = Callable[[Sequence[Target], float, float], list[CheckResult]]
# (seed namespace, the caches with a plugin there) -> what their Pods report (extension/controller/providers.py)
PluginChecker = Callable[[str, Sequence[PluginTarget]], list[CheckResult]]


class UpstreamChecks:
    def __init__(self, timeout: float = REQUEST_TIMEOUT_SECONDS, deadline: float = DEADLINE_SECONDS,
                 checker: Checker = check_all, plugin_checker: PluginChecker | None = None,
                 contact_upstreams: bool = True):
        """``contact_upstreams`` False (``run --no-upstream-check``): no request to any upstream, only what the
        caches with a credential provider plugin report (read from their shoot's API server)."""
        self.timeout, self.deadline, self._checker = timeout, deadline, checker
        self.plugin_checker = plugin_checker  # set where the shoots are known (the manager)
        self.contact_upstreams = contact_upstreams
        self._targets: dict[str, list[Target | PluginTarget]] = {}  # by seed namespace
        self._lock = threading.Lock()

    def set_targets(self, namespace: str, targets: Sequence[Target | PluginTarget]) -> None:
        if not self.contact_upstreams:
            targets = [t for t in targets if isinstance(t, PluginTarget)]
        with self._lock:
            before = {t.upstream for t in self._targets.get(namespace, [])}
            self._targets[namespace] = list(targets)
        for upstream in before - {t.upstream for t in targets}:
            _remove_series(namespace, upstream)

    def forget(self, namespace: str) -> None:
        forget = getattr(self.plugin_checker, "forget", None)
        if forget is not None:
            forget(namespace)
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
        checked = [t for t in targets if isinstance(t, Target)]
        plugins = [t for t in targets if isinstance(t, PluginTarget)]
        results = self._checker(checked, self.timeout, self.deadline) if checked else []
        if plugins:
            if self.plugin_checker is not None:
                results += self.plugin_checker(namespace, plugins)
            else:
                results += [CheckResult(t.upstream, PLUGIN_NOT_ASKED, None, "the caches' reports are not read here")
                            for t in plugins]
        for r in results:
            _record(namespace, r)
            if r.result not in (VALID, PLUGIN_ANSWERED):
                log.warning("%s: credentials of upstream %s: %s (%s)", namespace, r.upstream, r.result, r.detail)
        return results


def _record(namespace: str, result: CheckResult) -> None:
    if result.result in (PLUGIN_ANSWERED, PLUGIN_NOT_ASKED, *PLUGIN_FAILURES):
        # the controller does not reach the upstream of a plugin cache: no reachability sample; the credentials
        # are valid while the plugin answers, not while it fails (RegistryCacheUpstreamCredentialsInvalid)
        _remove(metrics.UPSTREAM_REACHABLE, namespace, result.upstream)
        if result.result == PLUGIN_NOT_ASKED:
            _remove(metrics.UPSTREAM_CREDENTIALS_VALID, namespace, result.upstream)
        else:
            metrics.UPSTREAM_CREDENTIALS_VALID.labels(namespace, result.upstream).set(
                1 if result.result == PLUGIN_ANSWERED else 0)
        return
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
