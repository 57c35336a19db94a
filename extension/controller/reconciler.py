"""The Extension controller: which operation the Gardener contract asks for, and the status it reports.

Both extension types, ``registry-cache`` and ``registry-mirror``, each with its actuator.

Framework-free: a watch of the Extensions (:mod:`extension.runtime.informer`) calls :meth:`Controller.observe` for every
change; the Gardener contract decides whether that change is a reason to act (operation annotation, deletion,
generation), so status-only updates and the echoes of the controller's own writes cost nothing and are never
queued. What is to be done is queued by key (:mod:`extension.runtime.workqueue`: one worker per Extension at a time,
a burst of changes is one pass) and carried out by ``workers`` threads on the latest state.

As Gardener does, an Extension whose last operation did not succeed is carried out again (after a restart at
once, otherwise with backoff), and :meth:`Controller.resync` looks at every Extension periodically, so that
what was changed or deleted by hand in the shoot is put back. A look (also when something an Extension's
delivery depends on changed: its Cluster, a Secret, a delivered object) that finds everything as delivered
writes nothing (:meth:`Actuator.in_sync`); otherwise it is a Reconcile with the usual status.

Per Extension the controller keeps the latest state seen (a skeleton: no managedFields, of the status only what
the contract reads), the resourceVersions of its own last writes, and the backoff of a failure; all of it is
dropped when the Extension is deleted.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from extension import metrics
from extension.constants import (
    CONTROLLER_NAME,
    ERR_INFRA_DEPENDENCIES,
    EXTENSION_NAME,
    EXTENSION_TYPE,
    EXTENSION_TYPES,
    OPERATION_ANNOTATION,
    OPERATION_MIGRATE,
    OPERATION_RECONCILE,
    OPERATION_RESTORE,
    OPERATION_WAIT_FOR_STATE,
    SYSTEM_COMPONENTS_HEALTHY_CONDITION,
    State,
    finalizer_for,
)
from extension.controller import conditions
from extension.controller.actuator import (
    PROVIDER_STATUS_DIGEST,
    Actuator,
    ExtensionActuator,
    Outcome,
    status_digest,
)
from extension.controller.upstreams import UpstreamChecks
from extension.errors import ReconcileError
from extension.runtime import metrics as runtime_metrics
from extension.runtime.informer import Informer, Key
from extension.runtime.kube import ApiError, Kube, NotLeader, TransportError
from extension.runtime.retry import Backoff
from extension.runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)

DEFAULT_RESYNC_SECONDS = 3600.0


class Op(str, enum.Enum):
    CREATE = "Create"
    RECONCILE = "Reconcile"
    DELETE = "Delete"
    MIGRATE = "Migrate"
    RESTORE = "Restore"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(ext: dict[str, Any]) -> dict[str, Any]:
    return ext.get("metadata") or {}


def _last_operation(ext: dict[str, Any]) -> dict[str, Any]:
    return ((ext.get("status") or {}).get("lastOperation")) or {}


def _finalizer(ext: dict[str, Any]) -> str:
    return finalizer_for((ext.get("spec") or {}).get("type") or "")


def decide(ext: dict[str, Any]) -> Op | None:
    """The operation an Extension asks for, in Gardener's order, or None when there is nothing to do."""
    meta = _meta(ext)
    annotation = (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
    last = _last_operation(ext)
    if annotation == OPERATION_MIGRATE:
        return None if last.get("type") == Op.MIGRATE and last.get("state") == State.SUCCEEDED else Op.MIGRATE
    if meta.get("deletionTimestamp"):
        return Op.DELETE if _finalizer(ext) in (meta.get("finalizers") or []) else None
    if annotation == OPERATION_RESTORE:
        return Op.RESTORE
    if annotation == OPERATION_WAIT_FOR_STATE:
        return None
    if not last:
        return Op.CREATE
    if annotation == OPERATION_RECONCILE:
        return Op.RECONCILE
    if last.get("type") == Op.MIGRATE and last.get("state") == State.SUCCEEDED:
        return None  # migrated away: wait for the restore annotation
    if (ext.get("status") or {}).get("observedGeneration") != meta.get("generation"):
        return Op.RECONCILE
    if last.get("state") in (State.PROCESSING, State.ERROR):
        # interrupted (a restart) or failed: carried out again, as Gardener requeues what did not succeed
        return Op(last["type"]) if last.get("type") in (Op.CREATE, Op.RESTORE) else Op.RECONCILE
    return None


def is_retry(ext: dict[str, Any]) -> bool:
    """Whether :func:`decide` asks for an operation only because the last one failed (nothing changed since):
    such a retry waits for its backoff, a change does not."""
    meta = _meta(ext)
    last = _last_operation(ext)
    return (last.get("state") == State.ERROR and not meta.get("deletionTimestamp")
            and not (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
            and (ext.get("status") or {}).get("observedGeneration") == meta.get("generation"))


def _key(ext: dict[str, Any]) -> str:
    meta = _meta(ext)
    return f"{meta.get('namespace')}/{meta.get('name')}"


SKELETON_METADATA = ("namespace", "name", "uid", "resourceVersion", "generation", "deletionTimestamp", "finalizers",
                     "annotations", "labels")


def skeleton(ext: dict[str, Any]) -> dict[str, Any] | None:
    """What the controller keeps of an Extension of its types (None for other types): the metadata it reads or
    patches, the spec, and of the status what the contract reads (lastOperation's type and state,
    observedGeneration), the conditions it merges into, and a digest of the providerStatus (to tell that it is
    the one written)."""
    spec = ext.get("spec") or {}
    if spec.get("type") not in EXTENSION_TYPES:
        return None
    meta = _meta(ext)
    status = ext.get("status") or {}
    last = status.get("lastOperation") or {}
    kept: dict[str, Any] = {}
    if last:
        kept["lastOperation"] = {k: last[k] for k in ("type", "state") if k in last}
    for name in ("observedGeneration", "conditions"):
        if status.get(name) is not None:
            kept[name] = status[name]
    if status.get("providerStatus") is not None:  # compared, never read: its digest is enough
        kept[PROVIDER_STATUS_DIGEST] = status_digest(status["providerStatus"])
    return {"apiVersion": ext.get("apiVersion", "extensions.gardener.cloud/v1alpha1"), "kind": "Extension",
            "metadata": {k: meta[k] for k in SKELETON_METADATA if k in meta}, "spec": spec, "status": kept}


def _removed(ext: dict[str, Any]) -> bool:
    """Whether a write's answer tells that the API server removed the object instead of storing the write (the
    last finalizer of an object being deleted went): it then carries the resourceVersion last stored, which the
    watch brings with the state before the write (the finalizer still there)."""
    return bool(_meta(ext).get("deletionTimestamp")) and not _meta(ext).get("finalizers")


def checkable(ext: dict[str, Any]) -> bool:
    """Whether a look without an operation asked for applies: the last operation (not a Migrate) succeeded, the
    Extension is not being deleted and not waiting for its state."""
    last = _last_operation(ext)
    return last.get("state") == State.SUCCEEDED and last.get("type") != Op.MIGRATE and \
        not _meta(ext).get("deletionTimestamp") and \
        (_meta(ext).get("annotations") or {}).get(OPERATION_ANNOTATION) != OPERATION_WAIT_FOR_STATE


@dataclass
class Controller:
    """Drives the Extensions of the types its actuators are for: ``registry-cache`` always, ``registry-mirror``
    when ``mirror`` is given."""

    seed: Kube
    actuator: Actuator
    mirror: ExtensionActuator | None = None
    upstreams: UpstreamChecks | None = None  # the credential checks of the caches (None: none)
    backoff: Backoff = field(default_factory=Backoff)
    on_deleted: Callable[[dict[str, Any]], None] | None = None  # an Extension is gone (the bridge finishes up)
    # a registry-cache Extension's Create, Reconcile or Restore succeeded (the health condition follows), by namespace
    on_succeeded: Callable[[str], None] | None = None
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    # resourceVersions this controller wrote, per uid, in order: their watch events are echoes, not changes
    _own_versions: dict[str, list[str]] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(CONTROLLER_NAME)
        self.in_flight: dict[int, tuple[Key, float]] = {}  # worker thread -> (its Extension, since, monotonic)
        for result in ("success", "error"):  # (every series there from the start, as controller-runtime does)
            runtime_metrics.RECONCILE_TOTAL.labels(CONTROLLER_NAME, result)
        runtime_metrics.RECONCILE_ERRORS.labels(CONTROLLER_NAME)
        runtime_metrics.ACTIVE_WORKERS.labels(CONTROLLER_NAME).set_function(lambda: len(self.in_flight))
        self.informer: Informer[dict[str, Any]] = Informer(self.seed, "Extension", skeleton, on_change=self.observe,
                                                           name="Extension")
        self._checks: set[Key] = set()  # keys to look at even when no operation is asked for
        self._written: dict[Key, dict[str, Any]] = {}  # our last write, until its watch event comes
        self.actuator.on_change = self.check

    @property
    def actuators(self) -> dict[str, ExtensionActuator]:
        out: dict[str, ExtensionActuator] = {self.actuator.extension_type: self.actuator}
        if self.mirror is not None:
            out[self.mirror.extension_type] = self.mirror
        return out

    def _needs_learning(self, ext: dict[str, Any]) -> bool:
        """A registry-cache Extension in place that needs no reconcile and whose upstreams the checks do not know
        yet (the controller started): learnt by a worker (reads only)."""
        meta = _meta(ext)
        return self.upstreams is not None and (ext.get("spec") or {}).get("type") == EXTENSION_TYPE \
            and not meta.get("deletionTimestamp") and meta.get("namespace") not in self.upstreams.known() \
            and _last_operation(ext).get("state") == State.SUCCEEDED \
            and _last_operation(ext).get("type") != Op.MIGRATE

    def informers(self) -> list[Informer[Any]]:
        """Every watch the controller needs: the Extensions, and what the actuator reads."""
        return [self.informer, *self.actuator.informers()]

    # --- watch events ---------------------------------------------------------------------------------
    def observe(self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A change seen by the Extension watch (``new`` None: deleted). Queues the key when the contract asks
        for an operation; an echo of the controller's own write is not a change."""
        if new is None:
            if old is not None:
                self.forget(old)
            return
        meta = _meta(new)
        version = meta.get("resourceVersion")
        with self._guard:
            echo = version in self._own_versions.get(meta.get("uid", ""), ())
            written = self._written.get(key)
            if written is not None and _meta(written).get("resourceVersion") == version and not _removed(written):
                del self._written[key]
        op = decide(new)
        if echo and not (op == Op.DELETE and _last_operation(new).get("type") != Op.DELETE):
            # The echo of our own write (finalizer, annotation, status), not a change; but a deletion that came
            # in meanwhile may only be seen in it.
            return
        if op is None and self._needs_learning(new):
            self.queue.add(key)
            return
        if op is None or (is_retry(new) and self.backoff.waiting(_key(new))):
            return
        self.queue.add(key)

    def check(self, namespace: str, name: str = EXTENSION_TYPE) -> None:
        """Look at an Extension even if no operation is asked for (something it depends on changed)."""
        key = (namespace, name)
        with self._guard:
            self._checks.add(key)
        self.queue.add(key)

    def current(self, key: Key) -> dict[str, Any] | None:
        """The latest state: what the watch has, unless it has not caught up with our own last write yet."""
        ext = self.informer.get(key)
        if ext is None:
            return None
        with self._guard:
            written = self._written.get(key)
            if written is not None and _meta(ext).get("resourceVersion") in self._own_versions.get(
                    _meta(ext).get("uid", ""), ()):
                return written
        return ext

    def _latest(self, key: Key) -> dict[str, Any] | None:
        """The latest state: the watch's while it runs (no read), else read."""
        if self.informer.synced.is_set():
            return self.current(key)
        return self.seed.get("Extension", key[1], key[0])

    # --- workers --------------------------------------------------------------------------------------
    def work(self, stop: threading.Event) -> None:
        """One worker: until ``stop``, take a key and do what its latest state asks for. What each worker is on
        and since when is in :attr:`in_flight` (the liveness probe's stuck workers)."""
        me = threading.get_ident()
        while not stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            self.in_flight[me] = (key, time.monotonic())  # type: ignore[assignment]  # (the queue's Any)
            try:
                self.process(key)  # type: ignore[arg-type]
            except Exception:
                log.exception("%s/%s: failed", *key)  # type: ignore[misc]
            finally:
                self.in_flight.pop(me, None)
                self.queue.done(key)

    def process(self, key: Key) -> Op | None:
        """One reconcile: do what the latest state of the Extension ``key`` asks for; the operation carried out,
        if any. Counted in controller-runtime's metrics (``controller_runtime_reconcile_total``: ``error`` when
        the operation ended in Error or the reconcile raised)."""
        started, ok = time.monotonic(), False
        try:
            op, ok = self._process(key)
            return op
        finally:
            runtime_metrics.reconciled(CONTROLLER_NAME, ok, time.monotonic() - started)

    def _process(self, key: Key) -> tuple[Op | None, bool]:
        with self._guard:
            look = key in self._checks
            self._checks.discard(key)
        ext = self.current(key)
        if ext is None:
            return None, True
        op = decide(ext)
        if op is not None and is_retry(ext) and self.backoff.waiting(_key(ext)):
            return None, True
        if op is None:
            self._learn_upstreams(ext)
        if op is None and not (look and checkable(ext)):
            return None, True
        with self._lock_for(_meta(ext)):
            ext = {**ext, "metadata": dict(_meta(ext))}  # the watch's record is never changed in place
            if op is None:
                if self.actuators[ext["spec"]["type"]].in_sync(ext):
                    metrics.CHECKS.labels("in-sync").inc()
                    return None, True
                metrics.CHECKS.labels("reconciled").inc()
                op = Op.RECONCILE
            return op, self._run(op, ext)

    # --- entry points ---------------------------------------------------------------------------------
    def handle(self, ext: dict[str, Any]) -> Op | None:
        """Act on one observed state of an Extension at once (without the queue); returns the operation carried
        out, if any."""
        if (ext.get("spec") or {}).get("type") not in self.actuators:
            return None
        meta = _meta(ext)
        uid = meta.get("uid", "")
        with self._lock_for(meta):
            op = decide(ext)
            if meta.get("resourceVersion") in self._own_versions.get(uid, ()) and not (
                    op == Op.DELETE and _last_operation(ext).get("type") != Op.DELETE):
                return None
            if op is None:
                self._learn_upstreams(ext)
                return None
            if is_retry(ext) and self.backoff.waiting(_key(ext)):
                return None  # a failed operation whose backoff has not passed
            self._run(op, ext)
            return op

    def retry_due(self) -> list[tuple[str, str]]:
        """(namespace, name) of Extensions whose operation failed and whose backoff has passed."""
        return [(key.split("/", 1)[0], key.split("/", 1)[1]) for key in self.backoff.due()]

    def queue_due(self) -> int:
        """Queue the Extensions whose backoff has passed (the workers carry out their operation again)."""
        due = self.retry_due()
        for key in due:
            if self.informer.get(key) is None:
                self.backoff.succeeded(f"{key[0]}/{key[1]}")  # gone meanwhile
            else:
                self.queue.add(key, retry=True)
        return len(due)

    def retry(self, namespace: str, name: str) -> Op | None:
        """Run the failed operation again with the Extension's current state, as read now."""
        key = f"{namespace}/{name}"
        try:
            ext = self.seed.get("Extension", name, namespace)
        except ApiError as exc:  # the seed away: try again later
            log.warning("%s: cannot read the Extension to retry it: %s", key, exc.describe())
            self.backoff.failed(key)
            return None
        op = decide(ext) if ext is not None and (ext.get("spec") or {}).get("type") in self.actuators else None
        if ext is None or op is None:
            self.backoff.succeeded(key)
            return None
        with self._lock_for(_meta(ext)):
            self._run(op, ext)
        return op

    def resync(self) -> int:
        """Look at every Extension of this type (Gardener's periodic resync): what is as delivered is left alone
        (nothing written), drift (an object deleted or changed by hand) is put back by a Reconcile; operations
        that are due anyway run as they are. Returns how many were queued."""
        keys = [key for key, ext in self.informer.items() if (ext.get("spec") or {}).get("type") in self.actuators
                and (checkable(ext) or decide(ext) is not None)]
        with self._guard:
            self._checks.update(keys)
        for key in keys:
            self.queue.add(key)
        return len(keys)

    def forget(self, ext: dict[str, Any]) -> None:
        meta = _meta(ext)
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._guard:
            self._locks.pop(meta.get("uid", ""), None)
            self._own_versions.pop(meta.get("uid", ""), None)
            self._written.pop(key, None)
            self._checks.discard(key)
        self.backoff.succeeded(_key(ext))
        metrics.forget_extension(meta.get("namespace", ""), meta.get("name", ""))
        actuator = self.actuators.get((ext.get("spec") or {}).get("type") or "")
        if actuator is not None:
            actuator.forget(meta.get("namespace", ""))
        if self.on_deleted is not None:
            self.on_deleted(ext)

    def kept(self) -> dict[str, int]:
        """How much per-Extension state is kept (bounded by the Extensions there are)."""
        with self._guard:
            return {"extensions": len(self.informer), "locks": len(self._locks),
                    "own_versions": len(self._own_versions), "written": len(self._written),
                    "checks": len(self._checks), "records": self.actuator.records()}

    # --- the operation --------------------------------------------------------------------------------
    def _lock_for(self, meta: dict[str, Any]) -> threading.Lock:
        uid = meta.get("uid", "")
        with self._guard:
            lock = self._locks.get(uid)
            if lock is None:
                lock = threading.Lock()
                if self._watched((meta.get("namespace", ""), meta.get("name", "")), uid):
                    self._locks[uid] = lock  # (one of a deleted Extension is not kept: nothing else waits for it)
            return lock

    def _watched(self, key: Key, uid: str) -> bool:
        """Whether state may be kept for the Extension ``uid``: not when the watch, running, no longer has it
        (deleted: forget() dropped what was kept, or is about to; kept now, it would stay for good). Called
        under ``_guard``: the watch drops its record before it calls forget(), which takes ``_guard``."""
        if not self.informer.synced.is_set():
            return True  # no watch (handle(), retry()): it is not forgotten by one either
        kept = self.informer.get(key)
        return kept is not None and _meta(kept).get("uid") == uid

    def _add_own_version(self, meta: dict[str, Any], record: dict[str, Any] | None = None) -> None:
        """(under ``_guard``) A resourceVersion of the Extension written or acted on by this controller; with
        ``record``, the state written, gone by until the watch brings it."""
        key = (meta.get("namespace", ""), meta.get("name", ""))
        uid = meta.get("uid", "")
        version = str(meta.get("resourceVersion"))
        if not self._watched(key, uid):
            return
        versions = self._own_versions.setdefault(uid, [])
        versions.append(version)
        del versions[:-8]
        # kept until its watch event comes (observe drops it then, under the same lock), unless it came first; an
        # answer that the object was removed instead stays until the watch tells the deletion (forget())
        if record is not None and (self.informer.version(key) != version or _removed(record)):
            self._written[key] = record

    def _gone(self, ns: str, name: str) -> bool:
        try:
            return self.seed.get("Extension", name, ns) is None
        except ApiError:
            return False

    def _run(self, op: Op, ext: dict[str, Any]) -> bool:
        """Carry out ``op``; whether it succeeded (False: it ended in Error, or stopped: no longer the leader)."""
        meta = _meta(ext)
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        actuator = self.actuators[ext["spec"]["type"]]
        log.info("%s: %s started", key, op.value)
        started = time.monotonic()
        with self._guard:  # the state acted on counts as seen: until our own writes come back, we go by them
            self._add_own_version(meta)
        try:
            if op in (Op.CREATE, Op.RECONCILE, Op.RESTORE):
                self._prepare(ext, add_finalizer=True)
            elif op == Op.MIGRATE:
                self._prepare(ext, add_finalizer=False)
            self._processing(ext, op, actuator.what)
            new_conditions = None
            if op == Op.DELETE:
                actuator.delete(ext)
                outcome = Outcome(None, f"The {actuator.what} were removed from the shoot")
            elif op == Op.MIGRATE:
                actuator.migrate(ext)
                outcome = Outcome(None, f"Migrated: the {actuator.what} were left in the shoot")
            else:
                outcome = actuator.restore(ext) if op == Op.RESTORE else actuator.reconcile(ext)
                if actuator is self.actuator and outcome.provider_status is not None:  # delivered, not hibernated
                    new_conditions = self._upstream_conditions(ext)
            self._succeeded(ext, op, outcome, new_conditions)
            if outcome.provider_status is not None and actuator is self.actuator and self.on_succeeded is not None:
                self.on_succeeded(ns)
            # before the finalizer goes: once it has, the watch may tell the Extension's deletion (forget()) any time
            metrics.extension_state(ns, name, ext["spec"]["type"], error=False)
            if op in (Op.DELETE, Op.MIGRATE):
                self._remove_finalizer(ns, name, _finalizer(ext))
            self.backoff.succeeded(key)
            metrics.OPERATIONS.labels(op.value, State.SUCCEEDED.value).inc()
            log.info("%s: %s succeeded in %.2fs", key, op.value, time.monotonic() - started)
            return True
        except NotLeader:
            log.warning("%s: %s stopped: this replica is no longer the leader", key, op.value)
            return False
        except Exception as exc:  # every failure ends in Error on the Extension, never in a crash
            if op == Op.DELETE and isinstance(exc, ApiError) and exc.not_found and self._gone(ns, name):
                # deleted meanwhile (its finalizer removed by someone else): nothing to report, nothing to retry
                log.info("%s: %s: the Extension is gone already", key, op.value)
                self.backoff.succeeded(key)
                return True
            message, codes = _describe(exc)
            if isinstance(exc, (ReconcileError, ApiError)):
                log.warning("%s: %s failed: %s", key, op.value, message)
            else:
                log.exception("%s: %s failed", key, op.value)
            metrics.extension_state(ns, name, ext["spec"]["type"], error=True)
            metrics.OPERATIONS.labels(op.value, State.ERROR.value).inc()
            self._errored(ns, name, op, ext, message, codes)
            return False
        finally:
            metrics.OPERATION_SECONDS.labels(op.value).observe(time.monotonic() - started)

    def _prepare(self, ext: dict[str, Any], add_finalizer: bool) -> None:
        """One patch: add the finalizer and remove a reconcile/restore/migrate annotation (Gardener removes
        the annotation before it acts). When the Extension changed since it was read (409: the bridge's
        annotation, or this controller's own condition write, whose echo brings no new event), it is read
        again and the patch made once more."""
        for attempt in (1, 2):
            meta = _meta(ext)
            patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
            finalizers = list(meta.get("finalizers") or [])
            finalizer = _finalizer(ext)
            if add_finalizer and finalizer not in finalizers:
                patch["metadata"]["finalizers"] = finalizers + [finalizer]
            annotation = (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
            if annotation in (OPERATION_RECONCILE, OPERATION_RESTORE) or \
                    (annotation == OPERATION_MIGRATE and not add_finalizer):
                patch["metadata"]["annotations"] = {OPERATION_ANNOTATION: None}
            if len(patch["metadata"]) == 1:
                return
            try:
                updated = self.seed.patch("Extension", meta["name"], patch, meta["namespace"])
            except ApiError as exc:
                fresh = self.seed.get("Extension", meta["name"], meta["namespace"]) \
                    if exc.conflict and attempt == 1 else None
                if fresh is None:
                    raise
                ext.clear()
                ext.update(fresh)
                continue
            self._remember(updated)
            ext["metadata"] = updated["metadata"]
            return

    def _remember(self, written: dict[str, Any]) -> None:
        record = skeleton(written)
        with self._guard:
            self._add_own_version(written.get("metadata") or {}, record)

    def _status_patch(self, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        written = self.seed.patch("Extension", name, {"status": status}, ns, subresource="status")
        self._remember(written)
        return written

    def _processing(self, ext: dict[str, Any], op: Op, what: str) -> None:
        meta = _meta(ext)
        self._status_patch(meta["namespace"], meta["name"], {"lastOperation": {
            "type": op.value, "state": State.PROCESSING.value, "progress": 1,
            "description": f"{op.value} of the {what} is running", "lastUpdateTime": now_rfc3339()}})

    def _learn_upstreams(self, ext: dict[str, Any]) -> None:
        """A registry-cache Extension in place that needs no reconcile (the controller restarted): its upstreams
        are checked periodically all the same."""
        meta = _meta(ext)
        if self.upstreams is None or (ext.get("spec") or {}).get("type") != EXTENSION_TYPE \
                or meta.get("deletionTimestamp") or meta["namespace"] in self.upstreams.known() \
                or _last_operation(ext).get("state") != State.SUCCEEDED \
                or _last_operation(ext).get("type") == Op.MIGRATE:
            return
        try:
            self.actuator.learn_upstreams(ext)
        except Exception as exc:  # noqa: BLE001 - learnt at its next reconcile then
            log.warning("%s: cannot tell which upstreams to check: %s", meta["namespace"], exc)

    def _upstream_conditions(self, ext: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The conditions after checking this Extension's upstream credentials (bounded); None: not checked."""
        if self.upstreams is None:
            return None
        try:
            results = self.upstreams.run(_meta(ext)["namespace"])
        except Exception:  # a check never fails a reconcile
            log.exception("%s: the upstream credential check failed", _meta(ext).get("namespace"))
            return None
        if results is None:
            return None
        return conditions.merge((ext.get("status") or {}).get("conditions"), results, now_rfc3339())

    def check_upstreams(self, namespace: str) -> bool:
        """The periodic check of the upstream credentials of one namespace's registry-cache Extension (the
        registry-mirror Extension has none); writes the conditions when they changed (not for a new
        lastUpdateTime alone). True when it wrote them."""
        if self.upstreams is None:
            return False
        key = (namespace, EXTENSION_NAME)
        ext = self._latest(key)
        if ext is None or _meta(ext).get("deletionTimestamp") or (ext.get("spec") or {}).get("type") != EXTENSION_TYPE:
            self.upstreams.forget(namespace)
            return False
        with self._lock_for(_meta(ext)):
            results = self.upstreams.run(namespace)
            if results is None:
                return False
            current = self._latest(key) or ext
            existing = (current.get("status") or {}).get("conditions")
            new = conditions.merge(existing, results, now_rfc3339())
            if conditions.same_state(existing, new):
                return False
            try:
                self._status_patch(namespace, EXTENSION_NAME, {"conditions": new})
            except ApiError as exc:
                log.warning("%s: could not write the upstream conditions: %s", namespace, exc)
                return False
            return True

    def write_health(self, namespace: str, status: str, reason: str, message: str,
                     skip: Callable[[], bool] | None = None) -> bool:
        """Condition ``SystemComponentsHealthy`` of one namespace's registry-cache Extension (from
        :class:`~extension.controller.health.HealthLoop`), merged into its latest conditions under its lock;
        written only when status, reason or message changed, and then not when ``skip()`` says so. True when it
        wrote it."""
        key = (namespace, EXTENSION_NAME)
        ext = self._latest(key)
        if ext is None or _meta(ext).get("deletionTimestamp") or (ext.get("spec") or {}).get("type") != EXTENSION_TYPE:
            return False
        with self._lock_for(_meta(ext)):
            current = self._latest(key) or ext
            merged = conditions.merge_health((current.get("status") or {}).get("conditions") or [],
                                             status, reason, message, now_rfc3339())
            if merged is None or (skip is not None and skip()):
                return False
            try:
                self._status_patch(namespace, EXTENSION_NAME, {"conditions": merged})
            except ApiError as exc:
                log.warning("%s: could not write the condition %s: %s", namespace,
                            SYSTEM_COMPONENTS_HEALTHY_CONDITION, exc)
                return False
            metrics.HEALTH_WRITES.inc()
            return True

    def _succeeded(self, ext: dict[str, Any], op: Op, outcome: Outcome,
                   new_conditions: list[dict[str, Any]] | None = None) -> None:
        meta = _meta(ext)
        provider_status = outcome.provider_status
        status: dict[str, Any] = {
            "lastOperation": {"type": op.value, "state": State.SUCCEEDED.value, "progress": 100,
                              "description": outcome.description, "lastUpdateTime": now_rfc3339()},
            "lastError": None,
            "observedGeneration": meta.get("generation"),
        }
        if provider_status is not None:
            # a merge patch merges maps: clear what the new status no longer has
            status["providerStatus"] = {"caSecretName": None, **provider_status}
        if new_conditions is not None:
            status["conditions"] = new_conditions
        try:
            self._status_patch(meta["namespace"], meta["name"], status)
        except ApiError as exc:
            if not (exc.not_found and op == Op.DELETE):
                raise

    def _errored(self, ns: str, name: str, op: Op, ext: dict[str, Any], message: str, codes: list[str]) -> None:
        """Schedule the retry, then write the error status; never raises (the seed may be what failed)."""
        key = f"{ns}/{name}"
        delay = self.backoff.failed(key)
        stamp = now_rfc3339()
        last_error: dict[str, Any] = {"description": message, "lastUpdateTime": stamp}
        if codes:
            last_error["codes"] = codes
        try:
            self._status_patch(ns, name, {
                "lastOperation": {"type": op.value, "state": State.ERROR.value, "progress": 50,
                                  "description": f"{op.value} failed, retrying in {delay:.0f}s: {message}",
                                  "lastUpdateTime": stamp},
                "lastError": last_error,
                "observedGeneration": _meta(ext).get("generation"),
            })
        except Exception as exc:  # noqa: BLE001 - whatever it is, the retry is scheduled and the error logged
            log.warning("%s: could not write the error status (retrying in %.0fs): %s", key, delay,
                        exc.describe() if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}")

    def _remove_finalizer(self, ns: str, name: str, finalizer: str) -> None:
        current = self.seed.get("Extension", name, ns)
        if current is None:
            return
        finalizers = [f for f in (current["metadata"].get("finalizers") or []) if f != finalizer]
        try:
            self._remember(self.seed.patch("Extension", name, {"metadata": {
                "finalizers": finalizers, "resourceVersion": current["metadata"]["resourceVersion"]}}, ns))
        except ApiError as exc:
            if not exc.not_found:
                raise


def _describe(exc: Exception) -> tuple[str, list[str]]:
    if isinstance(exc, ReconcileError):
        return str(exc), exc.codes
    if isinstance(exc, TransportError):
        return exc.describe(), [ERR_INFRA_DEPENDENCIES]
    if isinstance(exc, ApiError):
        codes = [ERR_INFRA_DEPENDENCIES] if exc.status in (0, 429, 502, 503, 504) else []
        return exc.describe(), codes
    return f"internal error: {type(exc).__name__}: {exc}", []
