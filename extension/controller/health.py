"""The caches' health on the Extension: condition ``SystemComponentsHealthy``, as Gardener's health checks
report an extension's workloads.

Delivering the objects is not the same as having caches: a cache Pod can fail to start (a volume claim that
does not bind, a volume it cannot write, an image that cannot be pulled; distribution configured with
``proxy.username/password`` rather than the rendered credential helper asks its upstream at start and exits
with a panic when it does not answer). Every interval the
controller looks at the cache StatefulSets and Pods it delivered for each registry-cache Extension and writes
the condition when it changed:

- ``True``/``CachesReady`` when every cache has its replicas ready;
- ``False``/``CachesNotReady`` naming each cache that is not, with what its Pod shows: the waiting reason
  (``CrashLoopBackOff``, ``ImagePullBackOff``, ...; of the init container that copies a credential provider plugin
  while that one has not done so), the restarts and the last line the container printed before it exited (its
  termination message, kept by ``terminationMessagePolicy: FallbackToLogsOnError``), with a hint when it is
  distribution's start-up check of an unreachable upstream, or the plugin's image.

Only the first line that says why (``panic: ...`` or the last line) is taken, cut to 300 characters; a
cache's configuration never appears (distribution does not print its credentials).

:func:`caches_condition` is pure; :class:`HealthLoop` does the reading, the controller the writing
(:meth:`~extension.controller.reconciler.Controller.write_health`, under the Extension's lock, merged into its
latest conditions by :func:`extension.controller.conditions.merge_health`). The Extensions come from the
controller's watch. Where one cluster receives every Extension's caches (standalone, one
``--shoot-kubeconfig``), a round makes one LIST of the cache StatefulSets there for all Extensions, and one of
the cache Pods only when a cache is not ready; under Gardener (a cluster per shoot) one LIST of StatefulSets per
Extension, and of Pods only for one not ready. Nothing is written while nothing changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from api import shoot as shootlib
from extension.constants import (
    APP_NAME,
    APP_NAME_LABEL,
    CREDENTIAL_PROVIDER_INIT_CONTAINER,
    EXTENSION_TYPE,
    HEALTH_CHECK_INTERVAL_SECONDS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    SHOOT_NAMESPACE,
    SYSTEM_COMPONENTS_HEALTHY_CONDITION,
)
from extension.controller.actuator import PROVIDER_STATUS_DIGEST
from extension.controller.reconciler import Controller
from extension.controller.shoots import shared_cluster

log = logging.getLogger(__name__)

# objects per page of the health check's LISTs: a round holds one page of whole objects at a time (with pages
# of 500 the controller's RSS peak at 1,000 Extensions was 165 MiB, with 100 141 MiB: hack/bench.py)
HEALTH_PAGE = 100

PLUGIN_HINT = ("it copies the credential provider plugin from the image the credentials Secret names: that image "
               "must be pullable by the nodes and hold a cp and the plugin at binaryPath")
UNREACHABLE_HINT = ("distribution asked its upstream at start and exited while the upstream could not be reached "
                    "(a config with proxy.username/password, not the credential helper the controller renders); "
                    "it restarts with backoff and serves again once the upstream answers")


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
    # the first container that is not ready (with the coalescing front a Pod has two: distribution and the front)
    c = next((s for s in statuses if not s.get("ready")), statuses[0])
    state = c.get("state") or {}
    init = _init_problem(status)
    if init is not None and "running" not in state:
        return f"{name}: {init}"
    parts = [f"container {c['name']}"] if len(statuses) > 1 and c.get("name") else []
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


def _init_problem(status: dict[str, Any]) -> str | None:
    """An init container (the one that copies a credential provider plugin) that has not completed: what it shows."""
    for c in status.get("initContainerStatuses") or []:
        state = c.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0 or "running" in state:
            continue
        waiting = state.get("waiting") or {}
        parts = [waiting.get("reason") or "not started"]
        if waiting.get("message") and "Image" in (waiting.get("reason") or ""):
            parts[0] += f" ({waiting['message'][:200]})"
        if c.get("restartCount"):
            parts.append(f"restarted {c['restartCount']} times")
        last = (c.get("lastState") or {}).get("terminated") or state.get("terminated")
        text = f"init container {c.get('name')}: " + ", ".join(parts)
        if last:
            line = _reason_line(last.get("message") or "")
            text += f"; last exit {last.get('exitCode')}" + (f": {line}" if line else "")
        if c.get("name") == CREDENTIAL_PROVIDER_INIT_CONTAINER:
            text += f" ({PLUGIN_HINT})"
        return text
    return None


def caches_condition(statefulsets: list[dict[str, Any]],
                     pods: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]) -> tuple[str, str, str]:
    """(status, reason, message) of the condition for these caches; ``pods`` (the cache Pods, or how to list
    them) is read only when a cache is not ready."""
    bad = []
    for sts in sorted(statefulsets, key=lambda s: s["metadata"]["name"]):
        want = sts["spec"].get("replicas", 1)
        ready = (sts.get("status") or {}).get("readyReplicas") or 0
        if ready >= want:
            continue
        if callable(pods):
            pods = pods()
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


class HealthLoop:
    """Every ``interval`` seconds: the condition of each registry-cache Extension whose caches this controller
    delivered (read where the actuator delivers them)."""

    def __init__(self, controller: Controller, interval: float = HEALTH_CHECK_INTERVAL_SECONDS):
        self.controller, self.interval = controller, interval

    def check_all(self) -> None:
        actuator = self.controller.actuator
        extensions = [ext for _, ext in self.controller.informer.items()
                      if (ext.get("spec") or {}).get("type") == EXTENSION_TYPE
                      and not ext["metadata"].get("deletionTimestamp")
                      and PROVIDER_STATUS_DIGEST in (ext.get("status") or {})]  # delivered
        if not extensions:
            return
        shared = shared_cluster(actuator.shoot_target)
        by_owner: dict[str, list[dict[str, Any]]] | None = None
        shared_pods: Callable[[], list[dict[str, Any]]] | None = None
        if shared is not None:  # one LIST for all, page by page, only what the condition reads kept
            by_owner = {}
            for page, _ in shared.pages("StatefulSet", SHOOT_NAMESPACE, limit=HEALTH_PAGE,
                                        label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"):
                for sts in page:
                    owner = (sts["metadata"].get("labels") or {}).get(OWNER_LABEL)
                    if owner:
                        by_owner.setdefault(owner, []).append(_slim(sts))
            shared_pods = _once(lambda: [_slim_pod(pod) for page, _ in shared.pages(
                "Pod", SHOOT_NAMESPACE, limit=HEALTH_PAGE, label_selector=f"{APP_NAME_LABEL}={APP_NAME}")
                for pod in page])
        for ext in extensions:
            ns = ext["metadata"]["namespace"]
            try:
                if shootlib.is_hibernated(actuator.cluster_shoot(ns)[1]):
                    continue  # the shoot's cluster is asleep: nothing to ask, nothing new to say
                if by_owner is not None and shared_pods is not None:
                    statefulsets, pods = by_owner.get(ns, []), shared_pods
                else:
                    target = actuator.shoot_target(ns)
                    statefulsets = target.list("StatefulSet", SHOOT_NAMESPACE, label_selector=f"{OWNER_LABEL}={ns}")
                    pods = _once(lambda target=target: target.list(  # type: ignore[misc]
                        "Pod", SHOOT_NAMESPACE, label_selector=f"{APP_NAME_LABEL}={APP_NAME}"))
                status, reason, message = caches_condition(statefulsets, pods)
                if self.controller.write_health(ns, status, reason, message):
                    (log.info if status == "True" else log.warning)(
                        "%s: %s %s: %s", ns, SYSTEM_COMPONENTS_HEALTHY_CONDITION, status, message)
            except Exception as exc:  # noqa: BLE001 - one shoot must not stop the others
                log.warning("%s: health check failed: %s", ns, exc)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.check_all()
            except Exception:
                log.exception("health checks failed")


def _slim(sts: dict[str, Any]) -> dict[str, Any]:
    """What :func:`caches_condition` reads of a StatefulSet."""
    return {"metadata": {"name": sts["metadata"]["name"]},
            "spec": {"replicas": (sts.get("spec") or {}).get("replicas", 1)},
            "status": {"readyReplicas": (sts.get("status") or {}).get("readyReplicas") or 0}}


def _slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What :func:`describe_pod` reads of a Pod."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return {"metadata": {k: meta[k] for k in ("name", "deletionTimestamp") if k in meta},
            "status": {k: status[k] for k in ("phase", "conditions", "containerStatuses", "initContainerStatuses")
                       if k in status}}


def _once(read: Callable[[], list[dict[str, Any]]]) -> Callable[[], list[dict[str, Any]]]:
    """``read``, called at most once (its answer kept)."""
    kept: list[list[dict[str, Any]]] = []

    def get() -> list[dict[str, Any]]:
        if not kept:
            kept.append(read())
        return kept[0]
    return get
