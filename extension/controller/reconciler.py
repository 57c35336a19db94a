"""The Extension controller: which operation the Gardener contract asks for, and the status it reports.

Framework-free: a watch of the Extensions (:mod:`extension.informer`) calls :meth:`Controller.observe` for every
change; the Gardener contract decides whether that change is a reason to act (operation annotation, deletion,
generation), so status-only updates and the echoes of the controller's own writes cost nothing and are never
queued. What is to be done is queued by key (:mod:`extension.workqueue`: one worker per Extension at a time,
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
    ERR_INFRA_DEPENDENCIES,
    EXTENSION_TYPE,
    FINALIZER,
    OPERATION_ANNOTATION,
    OPERATION_MIGRATE,
    OPERATION_RECONCILE,
    OPERATION_RESTORE,
    OPERATION_WAIT_FOR_STATE,
    State,
)
from extension.controller.actuator import PROVIDER_STATUS_DIGEST, Actuator, status_digest
from extension.errors import ReconcileError
from extension.informer import Informer, Key
from extension.kube import ApiError, Kube, NotLeader, TransportError
from extension.retry import Backoff
from extension.workqueue import WorkQueue

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


def decide(ext: dict[str, Any]) -> Op | None:
    """The operation an Extension asks for, in Gardener's order, or None when there is nothing to do."""
    meta = _meta(ext)
    annotation = (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
    last = _last_operation(ext)
    if annotation == OPERATION_MIGRATE:
        return None if last.get("type") == Op.MIGRATE and last.get("state") == State.SUCCEEDED else Op.MIGRATE
    if meta.get("deletionTimestamp"):
        return Op.DELETE if FINALIZER in (meta.get("finalizers") or []) else None
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
    """What the controller keeps of an Extension of its type (None for other types): the metadata it reads or
    patches, the spec, and of the status what the contract reads (lastOperation's type and state,
    observedGeneration) and a digest of the providerStatus (to tell that it is the one written)."""
    spec = ext.get("spec") or {}
    if spec.get("type") != EXTENSION_TYPE:
        return None
    meta = _meta(ext)
    status = ext.get("status") or {}
    last = status.get("lastOperation") or {}
    kept: dict[str, Any] = {}
    if last:
        kept["lastOperation"] = {k: last[k] for k in ("type", "state") if k in last}
    if status.get("observedGeneration") is not None:
        kept["observedGeneration"] = status["observedGeneration"]
    if status.get("providerStatus") is not None:  # compared, never read: its digest is enough
        kept[PROVIDER_STATUS_DIGEST] = status_digest(status["providerStatus"])
    return {"apiVersion": ext.get("apiVersion", "extensions.gardener.cloud/v1alpha1"), "kind": "Extension",
            "metadata": {k: meta[k] for k in SKELETON_METADATA if k in meta}, "spec": spec, "status": kept}


def checkable(ext: dict[str, Any]) -> bool:
    """Whether a look without an operation asked for applies: the last operation (not a Migrate) succeeded, the
    Extension is not being deleted and not waiting for its state."""
    last = _last_operation(ext)
    return last.get("state") == State.SUCCEEDED and last.get("type") != Op.MIGRATE and \
        not _meta(ext).get("deletionTimestamp") and \
        (_meta(ext).get("annotations") or {}).get(OPERATION_ANNOTATION) != OPERATION_WAIT_FOR_STATE


@dataclass
class Controller:
    seed: Kube
    actuator: Actuator
    backoff: Backoff = field(default_factory=Backoff)
    on_deleted: Callable[[dict[str, Any]], None] | None = None  # an Extension is gone (the bridge finishes up)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    # resourceVersions this controller wrote, per uid, in order: their watch events are echoes, not changes
    _own_versions: dict[str, list[str]] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.queue = WorkQueue()
        self.informer: Informer[dict[str, Any]] = Informer(self.seed, "Extension", skeleton, on_change=self.observe,
                                                           name="Extension")
        self._checks: set[Key] = set()  # keys to look at even when no operation is asked for
        self._written: dict[Key, dict[str, Any]] = {}  # our last write, until its watch event comes
        self.actuator.on_change = self.check

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
            if written is not None and _meta(written).get("resourceVersion") == version:
                del self._written[key]
        op = decide(new)
        if echo and not (op == Op.DELETE and _last_operation(new).get("type") != Op.DELETE):
            # The echo of our own write (finalizer, annotation, status), not a change; but a deletion that came
            # in meanwhile may only be seen in it.
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

    # --- workers --------------------------------------------------------------------------------------
    def work(self, stop: threading.Event) -> None:
        """One worker: until ``stop``, take a key and do what its latest state asks for."""
        while not stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self.process(key)  # type: ignore[arg-type]
            except Exception:
                log.exception("%s/%s: failed", *key)  # type: ignore[misc]
            finally:
                self.queue.done(key)

    def process(self, key: Key) -> Op | None:
        with self._guard:
            look = key in self._checks
            self._checks.discard(key)
        ext = self.current(key)
        if ext is None:
            return None
        op = decide(ext)
        if op is not None and is_retry(ext) and self.backoff.waiting(_key(ext)):
            return None
        if op is None and not (look and checkable(ext)):
            return None
        with self._lock_for(_meta(ext).get("uid", "")):
            ext = {**ext, "metadata": dict(_meta(ext))}  # the watch's record is never changed in place
            if op is None:
                if self.actuator.in_sync(ext):
                    metrics.CHECKS.labels("in-sync").inc()
                    return None
                metrics.CHECKS.labels("reconciled").inc()
                op = Op.RECONCILE
            self._run(op, ext)
            return op

    # --- entry points ---------------------------------------------------------------------------------
    def handle(self, ext: dict[str, Any]) -> Op | None:
        """Act on one observed state of an Extension at once (without the queue); returns the operation carried
        out, if any."""
        if (ext.get("spec") or {}).get("type") != EXTENSION_TYPE:
            return None
        meta = _meta(ext)
        uid = meta.get("uid", "")
        with self._lock_for(uid):
            op = decide(ext)
            if meta.get("resourceVersion") in self._own_versions.get(uid, ()) and not (
                    op == Op.DELETE and _last_operation(ext).get("type") != Op.DELETE):
                return None
            if op is None or (is_retry(ext) and self.backoff.waiting(_key(ext))):
                return None  # nothing to do, or a failed operation whose backoff has not passed
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
                self.queue.add(key)
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
        op = decide(ext) if ext is not None else None
        if ext is None or op is None:
            self.backoff.succeeded(key)
            return None
        with self._lock_for(_meta(ext).get("uid", "")):
            self._run(op, ext)
        return op

    def resync(self) -> int:
        """Look at every Extension of this type (Gardener's periodic resync): what is as delivered is left alone
        (nothing written), drift (an object deleted or changed by hand) is put back by a Reconcile; operations
        that are due anyway run as they are. Returns how many were queued."""
        keys = [key for key, ext in self.informer.items() if checkable(ext) or decide(ext) is not None]
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
        self.actuator.forget(meta.get("namespace", ""))
        if self.on_deleted is not None:
            self.on_deleted(ext)

    def kept(self) -> dict[str, int]:
        """How much per-Extension state is kept (bounded by the Extensions there are)."""
        with self._guard:
            return {"extensions": len(self.informer), "locks": len(self._locks),
                    "own_versions": len(self._own_versions), "written": len(self._written),
                    "checks": len(self._checks), "records": self.actuator.records()}

    # --- the operation --------------------------------------------------------------------------------
    def _lock_for(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def _run(self, op: Op, ext: dict[str, Any]) -> None:
        meta = _meta(ext)
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        log.info("%s: %s started", key, op.value)
        started = time.monotonic()
        try:
            if op in (Op.CREATE, Op.RECONCILE, Op.RESTORE):
                self._prepare(ext, add_finalizer=True)
            elif op == Op.MIGRATE:
                self._prepare(ext, add_finalizer=False)
            self._processing(ext, op)
            provider_status = None
            if op == Op.DELETE:
                self.actuator.delete(ext)
            elif op == Op.MIGRATE:
                self.actuator.migrate(ext)
            else:
                status = self.actuator.restore(ext) if op == Op.RESTORE else self.actuator.reconcile(ext)
                provider_status = status.to_wire() if status is not None else None
            self._succeeded(ext, op, provider_status)
            if op in (Op.DELETE, Op.MIGRATE):
                self._remove_finalizer(ns, name)
            self.backoff.succeeded(key)
            metrics.OPERATIONS.labels(op.value, State.SUCCEEDED.value).inc()
            log.info("%s: %s succeeded in %.2fs", key, op.value, time.monotonic() - started)
        except NotLeader:
            log.warning("%s: %s stopped: this replica is no longer the leader", key, op.value)
        except Exception as exc:  # every failure ends in Error on the Extension, never in a crash
            message, codes = _describe(exc)
            if isinstance(exc, (ReconcileError, ApiError)):
                log.warning("%s: %s failed: %s", key, op.value, message)
            else:
                log.exception("%s: %s failed", key, op.value)
            metrics.OPERATIONS.labels(op.value, State.ERROR.value).inc()
            self._errored(ns, name, op, ext, message, codes)
        finally:
            metrics.OPERATION_SECONDS.labels(op.value).observe(time.monotonic() - started)

    def _prepare(self, ext: dict[str, Any], add_finalizer: bool) -> None:
        """One patch: add the finalizer and remove a reconcile/restore/migrate annotation (Gardener removes
        the annotation before it acts)."""
        meta = _meta(ext)
        patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
        finalizers = list(meta.get("finalizers") or [])
        if add_finalizer and FINALIZER not in finalizers:
            patch["metadata"]["finalizers"] = finalizers + [FINALIZER]
        annotation = (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
        if annotation in (OPERATION_RECONCILE, OPERATION_RESTORE) or \
                (annotation == OPERATION_MIGRATE and not add_finalizer):
            patch["metadata"]["annotations"] = {OPERATION_ANNOTATION: None}
        if len(patch["metadata"]) > 1:
            updated = self.seed.patch("Extension", meta["name"], patch, meta["namespace"])
            self._remember(updated)
            ext["metadata"] = updated["metadata"]

    def _remember(self, written: dict[str, Any]) -> None:
        meta = written.get("metadata") or {}
        record = skeleton(written)
        key = (meta.get("namespace", ""), meta.get("name", ""))
        version = str(meta.get("resourceVersion"))
        with self._guard:
            versions = self._own_versions.setdefault(meta.get("uid", ""), [])
            versions.append(version)
            del versions[:-8]
            # kept until its watch event comes (observe drops it then, under the same lock), unless it came first
            if record is not None and self.informer.version(key) != version:
                self._written[key] = record

    def _status_patch(self, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        written = self.seed.patch("Extension", name, {"status": status}, ns, subresource="status")
        self._remember(written)
        return written

    def _processing(self, ext: dict[str, Any], op: Op) -> None:
        meta = _meta(ext)
        self._status_patch(meta["namespace"], meta["name"], {"lastOperation": {
            "type": op.value, "state": State.PROCESSING.value, "progress": 1,
            "description": f"{op.value} of the registry caches is running", "lastUpdateTime": now_rfc3339()}})

    def _succeeded(self, ext: dict[str, Any], op: Op, provider_status: dict[str, Any] | None) -> None:
        meta = _meta(ext)
        hibernated = op in (Op.CREATE, Op.RECONCILE, Op.RESTORE) and provider_status is None
        description = {
            Op.DELETE: "The registry caches were removed from the shoot",
            Op.MIGRATE: "Migrated: the registry caches were left running in the shoot",
        }.get(op, "The shoot is hibernated: the registry caches are left as they are" if hibernated
              else "The registry caches are delivered")
        status: dict[str, Any] = {
            "lastOperation": {"type": op.value, "state": State.SUCCEEDED.value, "progress": 100,
                              "description": description, "lastUpdateTime": now_rfc3339()},
            "lastError": None,
            "observedGeneration": meta.get("generation"),
        }
        if provider_status is not None:
            # a merge patch merges maps: clear what the new status no longer has
            status["providerStatus"] = {"caSecretName": None, **provider_status}
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

    def _remove_finalizer(self, ns: str, name: str) -> None:
        current = self.seed.get("Extension", name, ns)
        if current is None:
            return
        finalizers = [f for f in (current["metadata"].get("finalizers") or []) if f != FINALIZER]
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
