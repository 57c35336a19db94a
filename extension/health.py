"""The caches' health on the Extension: condition ``SystemComponentsHealthy``, as Gardener's health checks
report an extension's workloads.

Delivering the objects is not the same as having caches: a cache Pod can fail to start (distribution 3.0
in proxy mode exits with a panic when its upstream does not answer at start, so the Pod restarts with
backoff until the upstream is back; a volume it cannot write; an image that cannot be pulled). Every
``interval`` seconds the controller looks at the cache StatefulSets and Pods it delivered for each
Extension and writes the condition when it changed:

- ``True``/``CachesReady`` when every cache has its replicas ready;
- ``False``/``CachesNotReady`` naming each cache that is not, with what its Pod shows: the waiting reason
  (``CrashLoopBackOff``, ``ImagePullBackOff``, ...), the restarts and the last line the container printed
  before it exited (its termination message, kept by ``terminationMessagePolicy: FallbackToLogsOnError``),
  with a hint when it is distribution's start-up check of an unreachable upstream.

Only the first line that says why (``panic: ...`` or the last line) is taken, cut to 300 characters; a
cache's configuration never appears (distribution does not print its credentials).

:func:`caches_condition` is pure; :class:`HealthLoop` does the reading and writing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

CONDITION = "SystemComponentsHealthy"
OWNER_LABEL = "registry-cache.gardener.cloud/owner"
UNREACHABLE_HINT = ("distribution checks its upstream at start and exits while the upstream cannot be "
                    "reached; the cache restarts with backoff and serves again once the upstream answers")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason_line(message: str) -> str:
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    chosen = next((line for line in lines if line.startswith("panic:")), lines[-1] if lines else "")
    return chosen[:300]


def describe_pod(pod: dict[str, Any]) -> str:
    """What a cache Pod that is not ready shows, in one line."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return f"{name}: terminating"
    statuses = status.get("containerStatuses") or []
    if not statuses:
        waiting = [c for c in status.get("conditions") or [] if c.get("status") != "True"]
        why = "; ".join(f"{c['type']}: {c.get('reason') or ''} {c.get('message') or ''}".strip() for c in waiting)
        return f"{name}: {status.get('phase', 'Pending')}" + (f" ({why})" if why else "")
    c = statuses[0]
    state = c.get("state") or {}
    parts = []
    if "waiting" in state:
        parts.append(state["waiting"].get("reason") or "Waiting")
    elif "running" in state:
        parts.append("running, not ready")
    elif "terminated" in state:
        parts.append(f"terminated ({state['terminated'].get('reason')})")
    if c.get("restartCount"):
        parts.append(f"restarted {c['restartCount']} times")
    last = (c.get("lastState") or {}).get("terminated") or state.get("terminated")
    text = f"{name}: " + ", ".join(parts)
    if last:
        line = _reason_line(last.get("message") or "")
        text += f"; last exit {last.get('exitCode')}" + (f": {line}" if line else "")
        if "panic:" in line and "/v2/" in line:
            text += f" ({UNREACHABLE_HINT})"
    return text


def caches_condition(statefulsets: list[dict[str, Any]], pods: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(status, reason, message) of the condition for these caches."""
    bad = []
    for sts in sorted(statefulsets, key=lambda s: s["metadata"]["name"]):
        want = sts["spec"].get("replicas", 1)
        ready = (sts.get("status") or {}).get("readyReplicas") or 0
        if ready >= want:
            continue
        own = [p for p in pods if p["metadata"]["name"].startswith(sts["metadata"]["name"] + "-")]
        unready = [p for p in own if not any(c.get("type") == "Ready" and c.get("status") == "True"
                                             for c in (p.get("status") or {}).get("conditions") or [])]
        details = "; ".join(describe_pod(p) for p in unready) or "no Pod yet"
        bad.append(f"{sts['metadata']['name']} has {ready}/{want} ready ({details})")
    if not statefulsets:
        return "True", "NoCaches", "No registry caches are configured."
    if bad:
        return "False", "CachesNotReady", "Registry caches not ready: " + " | ".join(bad)
    return "True", "CachesReady", f"All {len(statefulsets)} registry caches are ready."


def merge_condition(conditions: list[dict[str, Any]], status: str, reason: str, message: str,
                    now: str | None = None) -> list[dict[str, Any]] | None:
    """The conditions with ours set; None when nothing changed (no write needed)."""
    now = now or _now()
    old = next((c for c in conditions if c.get("type") == CONDITION), None)
    if old and (old.get("status"), old.get("reason"), old.get("message")) == (status, reason, message):
        return None
    new = {"type": CONDITION, "status": status, "reason": reason, "message": message, "lastUpdateTime": now,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status
           and old.get("lastTransitionTime") else now}
    return [c for c in conditions if c.get("type") != CONDITION] + [new]


class HealthLoop:
    """Every ``interval`` seconds: the condition of each Extension whose caches this controller delivered."""

    def __init__(self, seed: Any, shoot_target: Callable[[str], Any], namespace: str = "kube-system",
                 interval: float = 10.0):
        self.seed, self.shoot_target, self.namespace, self.interval = seed, shoot_target, namespace, interval

    def check_all(self) -> None:
        for ext in self.seed.list("Extension"):
            if ext.get("spec", {}).get("type") != "registry-cache" or ext["metadata"].get("deletionTimestamp"):
                continue
            status = ext.get("status") or {}
            if not status.get("providerStatus"):
                continue  # not delivered (yet), or hibernated
            try:
                self.check(ext)
            except Exception as exc:  # noqa: BLE001 - one shoot must not stop the others
                log.warning("%s: health check failed: %s", ext["metadata"]["namespace"], exc)

    def check(self, ext: dict[str, Any]) -> None:
        ns = ext["metadata"]["namespace"]
        target = self.shoot_target(ns)
        selector = f"{OWNER_LABEL}={ns}"
        statefulsets = target.list("StatefulSet", self.namespace, label_selector=selector)
        pods = target.list("Pod", self.namespace, label_selector="app.kubernetes.io/name=registry-cache") \
            if statefulsets else []
        status, reason, message = caches_condition(statefulsets, pods)
        merged = merge_condition((ext.get("status") or {}).get("conditions") or [], status, reason, message)
        if merged is not None:
            self.seed.patch("Extension", ext["metadata"]["name"], {"status": {"conditions": merged}}, ns,
                            subresource="status")
            (log.info if status == "True" else log.warning)("%s: %s %s: %s", ns, CONDITION, status, message)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.check_all()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("health checks failed")
