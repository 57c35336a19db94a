"""The Extension controller: which operation the Gardener contract asks for, and the status it reports.

Framework-free: :meth:`Controller.handle` takes an Extension as the API server returned it. The kopf
wiring in :mod:`extension.manager` calls it for every watch event; the Gardener contract decides whether that
event is a reason to act (operation annotation, deletion, generation), so status-only updates cost nothing.
As Gardener does, an Extension whose last operation did not succeed is carried out again (after a restart at
once, otherwise with backoff), and :meth:`Controller.resync` reconciles every Extension periodically, so that
what was changed or deleted by hand in the shoot is put back.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from extension import metrics
from extension.constants import (
    ERR_INFRA_DEPENDENCIES,
    EXTENSION_NAME,
    EXTENSION_TYPE,
    OPERATION_ANNOTATION,
    OPERATION_MIGRATE,
    OPERATION_RECONCILE,
    OPERATION_RESTORE,
    OPERATION_WAIT_FOR_STATE,
    State,
    finalizer_for,
)
from extension.controller import conditions
from extension.controller.actuator import Actuator, ExtensionActuator, Outcome
from extension.controller.upstreams import UpstreamChecks
from extension.errors import ReconcileError
from extension.kube import ApiError, Kube, TransportError
from extension.retry import Backoff

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


@dataclass
class Controller:
    """Drives the Extensions of the types its actuators are for: ``registry-cache`` always, ``registry-mirror``
    when ``mirror`` is given."""

    seed: Kube
    actuator: Actuator
    mirror: ExtensionActuator | None = None
    upstreams: UpstreamChecks | None = None  # the credential checks of the caches (None: none)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    # resourceVersions this controller wrote, per uid: their watch events are echoes, not changes
    _own_versions: dict[str, list[str]] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    # --- entry points ---------------------------------------------------------------------------------
    @property
    def actuators(self) -> dict[str, ExtensionActuator]:
        out: dict[str, ExtensionActuator] = {self.actuator.extension_type: self.actuator}
        if self.mirror is not None:
            out[self.mirror.extension_type] = self.mirror
        return out

    def handle(self, ext: dict[str, Any]) -> Op | None:
        """Act on one observed state of an Extension; returns the operation carried out, if any."""
        if (ext.get("spec") or {}).get("type") not in self.actuators:
            return None
        meta = _meta(ext)
        uid = meta.get("uid", "")
        with self._lock_for(uid):
            op = decide(ext)
            if meta.get("resourceVersion") in self._own_versions.get(uid, ()) and not (
                    op == Op.DELETE and _last_operation(ext).get("type") != Op.DELETE):
                # The echo of our own write (finalizer, annotation, status), not a change; but a deletion that
                # came in meanwhile may only be seen in it (watch events of an object can be coalesced).
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

    def retry(self, namespace: str, name: str) -> Op | None:
        """Run the failed operation again with the Extension's current state."""
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
        with self._lock_for(_meta(ext).get("uid", "")):
            self._run(op, ext)
        return op

    def resync(self) -> int:
        """Reconcile every Extension of the types its actuators are for (Gardener's periodic resync), so that
        drift in the shoot (an object deleted or changed by hand) is put back; operations that are due anyway run
        as they are. Returns how many were carried out."""
        done = 0
        for ext in self.seed.list("Extension"):
            if (ext.get("spec") or {}).get("type") not in self.actuators:
                continue
            op = decide(ext)
            last = _last_operation(ext)
            if op is None and last.get("state") == State.SUCCEEDED and last.get("type") != Op.MIGRATE and \
                    (_meta(ext).get("annotations") or {}).get(OPERATION_ANNOTATION) != OPERATION_WAIT_FOR_STATE:
                op = Op.RECONCILE
            if op is None or (is_retry(ext) and self.backoff.waiting(_key(ext))):
                continue
            with self._lock_for(_meta(ext).get("uid", "")):
                self._run(op, ext)
            done += 1
        return done

    def forget(self, ext: dict[str, Any]) -> None:
        meta = _meta(ext)
        with self._guard:
            self._locks.pop(meta.get("uid", ""), None)
            self._own_versions.pop(meta.get("uid", ""), None)
        self.backoff.succeeded(_key(ext))
        metrics.forget_extension(meta.get("namespace", ""), meta.get("name", ""))

    # --- the operation --------------------------------------------------------------------------------
    def _lock_for(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def _run(self, op: Op, ext: dict[str, Any]) -> None:
        meta = _meta(ext)
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        actuator = self.actuators[ext["spec"]["type"]]
        log.info("%s: %s started", key, op.value)
        started = time.monotonic()
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
            if op in (Op.DELETE, Op.MIGRATE):
                self._remove_finalizer(ns, name, _finalizer(ext))
            self.backoff.succeeded(key)
            metrics.extension_state(ns, name, ext["spec"]["type"], error=False)
            metrics.OPERATIONS.labels(op.value, State.SUCCEEDED.value).inc()
            log.info("%s: %s succeeded in %.2fs", key, op.value, time.monotonic() - started)
        except Exception as exc:  # every failure ends in Error on the Extension, never in a crash
            message, codes = _describe(exc)
            if isinstance(exc, (ReconcileError, ApiError)):
                log.warning("%s: %s failed: %s", key, op.value, message)
            else:
                log.exception("%s: %s failed", key, op.value)
            metrics.extension_state(ns, name, ext["spec"]["type"], error=True)
            metrics.OPERATIONS.labels(op.value, State.ERROR.value).inc()
            self._errored(ns, name, op, ext, message, codes)
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
        meta = written.get("metadata") or {}
        with self._guard:
            versions = self._own_versions.setdefault(meta.get("uid", ""), [])
            versions.append(str(meta.get("resourceVersion")))
            del versions[:-16]

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
        ext = self.seed.get("Extension", EXTENSION_NAME, namespace)
        if ext is None or _meta(ext).get("deletionTimestamp") or (ext.get("spec") or {}).get("type") != EXTENSION_TYPE:
            self.upstreams.forget(namespace)
            return False
        with self._lock_for(_meta(ext).get("uid", "")):
            results = self.upstreams.run(namespace)
            if results is None:
                return False
            current = self.seed.get("Extension", EXTENSION_NAME, namespace) or ext
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
