"""The caches' health on the Extension: condition ``SystemComponentsHealthy``, as Gardener's health checks
report an extension's workloads.

Delivering the objects is not the same as having caches: a cache Pod can fail to start (distribution 3.x in
proxy mode with ``proxy.username/password``, a cache with credentials, asks its upstream at start and exits
with a panic when it does not answer, so the Pod restarts with backoff until the upstream is back; a volume it
cannot write; an image that cannot be pulled). Every interval the
controller looks at the cache StatefulSets and Pods it delivered for each registry-cache Extension and writes
the condition when it changed:

- ``True``/``CachesReady`` when every cache has its replicas ready;
- ``False``/``CachesNotReady`` naming each cache that is not, with what its Pod shows: the waiting reason
  (``CrashLoopBackOff``, ``ImagePullBackOff``, ...), the restarts and the last line the container printed
  before it exited (its termination message, kept by ``terminationMessagePolicy: FallbackToLogsOnError``),
  with a hint when it is distribution's start-up check of an unreachable upstream.

Only the first line that says why (``panic: ...`` or the last line) is taken, cut to 300 characters; a
cache's configuration never appears (distribution does not print its credentials).

:func:`caches_condition` and :func:`merge_condition` are pure; :class:`HealthLoop` does the reading and
writing. The write carries the Extension's resourceVersion: a reconcile that wrote the status meanwhile wins,
and the next round writes the condition again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from api import shoot as shootlib
from extension.constants import (
    APP_NAME,
    APP_NAME_LABEL,
    EXTENSION_TYPE,
    HEALTH_CHECK_INTERVAL_SECONDS,
    OWNER_LABEL,
    SHOOT_NAMESPACE,
    SYSTEM_COMPONENTS_HEALTHY_CONDITION,
)
from extension.controller.actuator import Actuator
from extension.kube import ApiError

log = logging.getLogger(__name__)

UNREACHABLE_HINT = ("a cache with credentials checks its upstream at start and exits while the upstream cannot "
                    "be reached; it restarts with backoff and serves again once the upstream answers")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    kind = SYSTEM_COMPONENTS_HEALTHY_CONDITION
    old = next((c for c in conditions if c.get("type") == kind), None)
    if old and (old.get("status"), old.get("reason"), old.get("message")) == (status, reason, message):
        return None
    new = {"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": now,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status
           and old.get("lastTransitionTime") else now}
    return [c for c in conditions if c.get("type") != kind] + [new]


class HealthLoop:
    """Every ``interval`` seconds: the condition of each registry-cache Extension whose caches this controller
    delivered (read where the actuator delivers them)."""

    def __init__(self, actuator: Actuator, interval: float = HEALTH_CHECK_INTERVAL_SECONDS):
        self.actuator, self.interval = actuator, interval

    def check_all(self) -> None:
        for ext in self.actuator.seed.list("Extension"):
            if (ext.get("spec") or {}).get("type") != EXTENSION_TYPE or ext["metadata"].get("deletionTimestamp"):
                continue
            if not (ext.get("status") or {}).get("providerStatus"):
                continue  # not delivered (yet)
            try:
                self.check(ext)
            except Exception as exc:  # noqa: BLE001 - one shoot must not stop the others
                log.warning("%s: health check failed: %s", ext["metadata"]["namespace"], exc)

    def check(self, ext: dict[str, Any]) -> None:
        ns = ext["metadata"]["namespace"]
        if shootlib.is_hibernated(self.actuator.cluster_shoot(ns)):
            return  # the shoot's cluster is asleep: nothing to ask, nothing new to say
        target = self.actuator.shoot_target(ns)
        statefulsets = target.list("StatefulSet", SHOOT_NAMESPACE, label_selector=f"{OWNER_LABEL}={ns}")
        pods = target.list("Pod", SHOOT_NAMESPACE, label_selector=f"{APP_NAME_LABEL}={APP_NAME}") \
            if statefulsets else []
        status, reason, message = caches_condition(statefulsets, pods)
        merged = merge_condition((ext.get("status") or {}).get("conditions") or [], status, reason, message)
        if merged is None:
            return
        try:
            self.actuator.seed.patch("Extension", ext["metadata"]["name"], {
                "metadata": {"resourceVersion": ext["metadata"]["resourceVersion"]},
                "status": {"conditions": merged}}, ns, subresource="status")
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                return  # changed meanwhile (a reconcile, an upstream check) or gone: the next round sees it
            raise
        (log.info if status == "True" else log.warning)("%s: %s %s: %s", ns, SYSTEM_COMPONENTS_HEALTHY_CONDITION,
                                                        status, message)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.check_all()
            except Exception:
                log.exception("health checks failed")
