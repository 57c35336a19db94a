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
latest conditions by :func:`extension.controller.conditions.merge_health`). Nothing is written while nothing
changed. What is read depends on where the caches are:

- where one cluster receives every Extension's caches (standalone, one ``--shoot-kubeconfig``) nothing is polled:
  the StatefulSets come from the actuator's watch of that cluster (whole: the replicas wanted and ready), and a
  watch of the cache Pods keeps the Pods that are not ready (ready ones are not kept). An Extension is looked at
  again when one of its StatefulSets or of its Pods that are not ready changed, and after each of its operations
  that succeeded; at the start every delivered Extension once, from memory. An idle controller reads and
  computes nothing, however many Extensions there are; a restart finds the conditions as the last process left
  them and writes nothing (the condition follows a change at once, so there is no round that a stop cuts off);
- under Gardener (a cluster per shoot) every ``interval`` seconds one LIST of StatefulSets per Extension, and of
  Pods only for one not ready (a watch per shoot cluster is not kept).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from api import shoot as shootlib
from extension.constants import (
    APP_NAME,
    APP_NAME_LABEL,
    CREDENTIAL_PROVIDER_INIT_CONTAINER,
    EXTENSION_NAME,
    EXTENSION_TYPE,
    HEALTH_CHECK_INTERVAL_SECONDS,
    OWNER_LABEL,
    SHOOT_NAMESPACE,
    SYSTEM_COMPONENTS_HEALTHY_CONDITION,
)
from extension.controller.actuator import PROVIDER_STATUS_DIGEST
from extension.controller.reconciler import Controller
from extension.controller.shoots import shared_cluster
from extension.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

# where the caches are watched: how long changes are gathered before the Extensions they concern are looked at
HEALTH_SETTLE_SECONDS = 0.5

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


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def unready_pod(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The record the Pod watch keeps: what :func:`describe_pod` reads of a cache Pod that is not ready, and the
    ``app`` label that names its StatefulSet; None for a ready Pod (nothing to say about it)."""
    if _ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    record = _slim_pod(pod)
    app = ((pod.get("metadata") or {}).get("labels") or {}).get("app")
    if app:
        record["metadata"]["app"] = app
    return record


class HealthLoop:
    """The condition of each registry-cache Extension whose caches this controller delivered (read where the
    actuator delivers them): event-driven where one cluster receives every Extension's caches, every ``interval``
    seconds otherwise. Where it watches, :meth:`informers` are started and synced with the controller's (before
    :meth:`run`)."""

    def __init__(self, controller: Controller, interval: float = HEALTH_CHECK_INTERVAL_SECONDS,
                 settle: float = HEALTH_SETTLE_SECONDS):
        self.controller, self.interval, self.settle = controller, interval, settle
        actuator = controller.actuator
        self.shared = shared_cluster(actuator.shoot_target)
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # one look at a time (the loop's, or the last one at a stop)
        self._wake = threading.Event()
        self._running = False  # run() started: the watches have listed, what they hold can be reported
        self.pods: Informer[dict[str, Any]] | None = None
        if self.shared is not None:
            self.pods = Informer(self.shared, "Pod", unready_pod, namespace=SHOOT_NAMESPACE,
                                 label_selector=f"{APP_NAME_LABEL}={APP_NAME}", on_change=self._pod_changed,
                                 name="shoot-Pod")
            actuator.on_workload = self.changed
            controller.on_succeeded = self.changed

    def informers(self) -> list[Informer[Any]]:
        return [self.pods] if self.pods is not None else []

    # --- what changed ----------------------------------------------------------------------------------
    def changed(self, namespace: str) -> None:
        """Look at this namespace's Extension again (a StatefulSet of it changed, or an operation succeeded)."""
        with self._lock:
            self._dirty.add(namespace)
        self._wake.set()

    def _pod_changed(self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        view = self.controller.actuator.view
        app = ((new or old or {}).get("metadata") or {}).get("app")
        owner = view.owner_of("StatefulSet", app) if view is not None and app else None
        if owner:
            self.changed(owner)

    def _delivered(self) -> list[str]:
        return [ns for (ns, name), ext in self.controller.informer.items() if name == EXTENSION_NAME
                and _delivered(ext)]

    # --- looking -----------------------------------------------------------------------------------------
    def check_all(self) -> None:
        """Every delivered Extension (the polled round; where the caches are watched, from memory)."""
        if self.shared is not None and self.controller.actuator.view is not None:
            self.check(self._delivered())
            return
        self._poll()

    def check(self, namespaces: Iterable[str]) -> None:
        """These namespaces' Extensions, from the watched StatefulSets and Pods (no request unless a condition
        changed: then whether the shoot is hibernated, from the seed cache)."""
        view = self.controller.actuator.view
        assert view is not None and self.pods is not None
        unready: dict[str, list[dict[str, Any]]] = {}
        for _, pod in self.pods.items():
            unready.setdefault(pod["metadata"].get("app", ""), []).append(pod)
        for ns in namespaces:
            ext = self.controller.current((ns, EXTENSION_NAME))
            if ext is None or not _delivered(ext):
                continue
            statefulsets = [_statefulset(name, live.replicas, live.ready)
                            for (kind, name), live in view.objects(ns).items()
                            if kind == "StatefulSet" and live.replicas is not None]
            pods = [p for sts in statefulsets for p in unready.get(sts["metadata"]["name"], [])]
            self._report(ns, *caches_condition(statefulsets, pods))

    def _report(self, ns: str, status: str, reason: str, message: str) -> None:
        """Write the condition when it changed, unless the shoot is hibernated (asked only then)."""
        try:
            if self.controller.write_health(ns, status, reason, message, skip=lambda: self._hibernated(ns)):
                (log.info if status == "True" else log.warning)(
                    "%s: %s %s: %s", ns, SYSTEM_COMPONENTS_HEALTHY_CONDITION, status, message)
        except Exception as exc:  # noqa: BLE001 - one shoot must not stop the others
            log.warning("%s: health check failed: %s", ns, exc)

    def _hibernated(self, ns: str) -> bool:
        """The shoot's cluster is asleep: nothing to ask, nothing new to say."""
        return shootlib.is_hibernated(self.controller.actuator.cluster_shoot(ns)[1])

    def _poll(self) -> None:
        """A cluster per shoot: one LIST of StatefulSets per delivered Extension, of Pods only for one not ready."""
        actuator = self.controller.actuator
        for ext in [ext for _, ext in self.controller.informer.items() if _delivered(ext)]:
            ns = ext["metadata"]["namespace"]
            try:
                if self._hibernated(ns):
                    continue
                target = actuator.shoot_target(ns)
                statefulsets = target.list("StatefulSet", SHOOT_NAMESPACE, label_selector=f"{OWNER_LABEL}={ns}")
                pods = _once(lambda target=target: target.list(  # type: ignore[misc]
                    "Pod", SHOOT_NAMESPACE, label_selector=f"{APP_NAME_LABEL}={APP_NAME}"))
                status, reason, message = caches_condition(statefulsets, pods)
            except Exception as exc:  # noqa: BLE001 - one shoot must not stop the others
                log.warning("%s: health check failed: %s", ns, exc)
                continue
            self._report(ns, status, reason, message)

    def run(self, stop: threading.Event) -> None:
        if self.shared is None:
            while not stop.wait(self.interval):
                try:
                    self._poll()
                except Exception:
                    log.exception("health checks failed")
            return
        with self._lock:  # at the start every delivered Extension once; then what changed
            self._dirty.update(self._delivered())
        self._running = True
        self._wake.set()
        while not stop.is_set():
            if not self._wake.wait(5.0):
                continue
            if stop.wait(self.settle):  # changes come in bursts (a rollout, a create): one look for a burst
                return
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Look at what changed since the last look (also at a stop, once the operations in flight ended: what
        they changed is reported by this process, not written by the next one at its start)."""
        if self.shared is None or not self._running:
            return
        with self._checking:
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            if not dirty:
                return
            try:
                self.check(sorted(dirty))
            except Exception:
                log.exception("health checks failed")


def _statefulset(name: str, replicas: int | None, ready: int | None) -> dict[str, Any]:
    """What :func:`caches_condition` reads of a StatefulSet, from the watch's record."""
    return {"metadata": {"name": name}, "spec": {"replicas": replicas}, "status": {"readyReplicas": ready or 0}}


def _delivered(ext: dict[str, Any]) -> bool:
    return (ext.get("spec") or {}).get("type") == EXTENSION_TYPE and not ext["metadata"].get("deletionTimestamp") \
        and PROVIDER_STATUS_DIGEST in (ext.get("status") or {})


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
