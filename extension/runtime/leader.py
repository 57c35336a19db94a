"""Leader election with a Lease, as controller-runtime does it (client-go's ``leaderelection`` with a ``LeaseLock``).

Why not kopf's peering: it is not leader election. Peers announce themselves in a kopf-specific custom resource
(``KopfPeering``, a CRD to install), and only a peer of *lower priority* pauses while one of higher priority is
alive; peers of the same priority all keep working (kopf only warns), and a peer pauses only once it has seen
the other's announcement, so two replicas of one Deployment would both reconcile, and during a rollout both
the old and the new one. There is no lease, no expiry a follower can count on, no fencing. A Lease in
``coordination.k8s.io/v1`` is what every controller-runtime manager (Gardener's extensions among them) uses;
the two replicas of this Deployment share one.

The record and the timing are client-go's:

- a candidate reads the Lease every ``retry_period``; it takes it when there is none, when its holder is empty
  (released), or when the record has not changed for ``lease_duration`` *as measured on the candidate's own
  clock since it last saw it change* (no clocks are compared between machines); taking and renewing are
  updates with the resourceVersion read (optimistic concurrency), so of two candidates only one wins. "Saw" is
  when the read returned, as client-go's ``observedTime``: timed from before the request, a read that took
  longer than ``lease_duration - renew_deadline`` would date a renewal written while it waited too early, and
  the candidate could take a Lease whose holder still counts itself leader;
- the leader renews every ``retry_period``; it counts as leader only while its last successful renew, timed
  from before the request was sent, is less than ``renew_deadline`` old (:meth:`LeaderElector.leading`); with
  ``renew_deadline`` < ``lease_duration`` it stops writing before anyone else may take the Lease;
- writes of the controller go through a client fenced with :meth:`leading` (:meth:`extension.runtime.kube.Kube.fenced`):
  once the renew deadline has passed not one more write is sent, whatever is in flight; then ``on_stopped`` is
  called (the process ends, as controller-runtime's manager does, and is restarted as a follower);
- on a clean stop the leader keeps renewing while its work in flight drains (the caller stops :meth:`run` only
  then), and then releases the Lease (holder empty, duration 1 s, as client-go's ``ReleaseOnCancel``, which
  controller-runtime's manager triggers once its runnables have stopped), so that the other replica takes over
  at once instead of after ``lease_duration`` (a rollout).

``leader_election_master_status{name}`` (:mod:`extension.runtime.metrics`) is 0 while waiting for the Lease, 1
while leading, 0 again once it is lost or released.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from extension.runtime import metrics
from extension.runtime.kube import ApiError, Kube

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_namespace() -> str | None:
    """The controller's own namespace: ``POD_NAMESPACE`` (the downward API), else the service account's."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def default_identity() -> str:
    """``<hostname>_<uuid>``, as controller-runtime's: unique per process, and the Pod's name in it."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _micro_time(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry period < renew deadline < lease duration")
        self.kube, self.namespace, self.name = kube, namespace, name
        self.identity = identity or default_identity()
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self._renewed_at: float | None = None  # clock() before the request of the last successful renew
        self._observed: tuple[Any, ...] | None = None  # the last record seen, and when it was seen to change
        self._observed_at = 0.0
        self._lock = threading.Lock()

    def leading(self) -> bool:
        """Whether this process may act as the leader now."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.renew_deadline

    # --- one attempt --------------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """Take the Lease or renew it; whether this process holds it now."""
        with self._lock:
            started = self.clock()
            now = _micro_time(dt.datetime.now(dt.UTC))
            try:
                lease = self.kube.get("Lease", self.name, self.namespace)
                observed = self.clock()  # when the record was seen: after the read (client-go's observedTime)
                if lease is None:
                    self.kube.create({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0}})
                    self._renewed_at = started
                    return True
                spec = lease.get("spec") or {}
                record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"),
                          spec.get("leaseTransitions"), spec.get("leaseDurationSeconds"))
                if record != self._observed:
                    self._observed, self._observed_at = record, observed
                holder = spec.get("holderIdentity") or ""
                duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
                if holder and holder != self.identity and self._observed_at + duration > started:
                    self._renewed_at = None  # (if it was ours: another holds it now)
                    return False  # held by another, and not expired as far as this clock can tell
                mine = holder == self.identity
                self.kube.replace({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {**{k: v for k, v in lease["metadata"].items() if k != "managedFields"}},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                             "acquireTime": spec.get("acquireTime") if mine and spec.get("acquireTime") else now,
                             "renewTime": now,
                             "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)}})
                if not mine:
                    log.info("took the leader lease %s/%s from %r", self.namespace, self.name, holder or None)
                self._renewed_at = started
                return True
            except ApiError as exc:
                if not exc.conflict:
                    log.warning("leader lease %s/%s: %s", self.namespace, self.name, exc.describe())
                return False

    def release(self) -> None:
        """Give the Lease up (on a clean stop): the other replica takes it at once."""
        with self._lock:
            if not self.leading():
                return
            try:
                lease = self.kube.get("Lease", self.name, self.namespace)
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                    return
                now = _micro_time(dt.datetime.now(dt.UTC))
                self.kube.replace({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {k: v for k, v in lease["metadata"].items() if k != "managedFields"},
                    "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                             "leaseTransitions": int((lease.get("spec") or {}).get("leaseTransitions") or 0)}})
                log.info("released the leader lease %s/%s", self.namespace, self.name)
            except ApiError as exc:
                log.warning("could not release the leader lease: %s", exc.describe())
            finally:
                self._renewed_at = None
                metrics.leading(self.name, False)

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        """Wait to become the leader, call ``on_started``, renew until ``stop`` or until the lease is lost
        (``on_stopped``). On ``stop`` the Lease is released (client-go's ``ReleaseOnCancel``): the caller sets it
        once its work has drained, and until then it is renewed, so that the work in flight may still write."""
        log.info("waiting for the leader lease %s/%s as %s", self.namespace, self.name, self.identity)
        metrics.leading(self.name, False)  # (leader_election_master_status: 0 while waiting)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                break
            stop.wait(self.retry_period * random.uniform(1.0, 1.2))  # client-go's jitter
        if stop.is_set():
            return
        log.info("leading (lease %s/%s, %s)", self.namespace, self.name, self.identity)
        metrics.leading(self.name, True)
        on_started()
        while not stop.wait(self.retry_period):
            if self.try_acquire_or_renew():
                continue
            if not self.leading():
                metrics.leading(self.name, False)
                log.error("lost the leader lease %s/%s: no renewal within %.0fs", self.namespace, self.name,
                          self.renew_deadline)
                on_stopped()
                return
        self.release()
