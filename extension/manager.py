"""Wiring: what runs, on which replica, and which watch event or admission request calls what. Thin on purpose.

Three parts, all on threads of this process, with one client (:mod:`.runtime.kube`) and one way of watching
(:mod:`.runtime.informer`):

- **the admission webhooks** (:mod:`.webhook.admission`, on every replica): every hook only translates an
  AdmissionReview's request into a call on the parts (:class:`Runtime`); every hook is listed in :func:`hooks`, in one
  place. They were kopf's until issue 22 (why not any more: docs/operations/deploying.md, "The webhooks without kopf").
- **the Shoot watch** (:mod:`.runtime.informer`, on every replica, when there is an index of Secrets in use: the Secret
  webhook answers from it) feeds the index and, on the leader, the bridge and the protection. It was kopf's
  until a Shoot nested 3,000 levels deep (the API server takes 10,000) made kopf's list raise
  ``RecursionError``: kopf's watcher task failed, its orchestrator re-raised it and ``kopf.run`` ended, at every
  start. The informer's client skips such an object and names it (:mod:`.runtime.jsondecode`, :mod:`.runtime.kube`).
- **the controller** runs on the leader only (:mod:`.runtime.leader`; every replica is the leader without
  ``--leader-election``): its own watches (:mod:`.runtime.informer`: Extensions, and what the actuator reads: Clusters,
  Secrets, the delivered objects), its workers, the retries and the periodic resync; in standalone mode the
  bridge and the protection of Secrets in use write only there too. Why not kopf for the Extensions: kopf
  costs about 1 ms of CPU and a task per object per event (measured: 1.5 s of CPU to list 1,000 Extensions,
  1 s per 1,000 events; a plain watch 0.4 s and 0.09 s), keeps per-object state of its own, and cannot stop
  and start watching with a lease; the Extension hot path needs none of what kopf adds.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from extension import metrics, probes
from extension.component.objects import RenderOptions
from extension.component.registrycache import MONITORING_OPERATOR
from extension.constants import (
    BRIDGE_FINALIZER,
    BRIDGE_LABEL,
    CONTROLLER_NAME,
    DEFAULT_UPSTREAM_CHECK_INTERVAL_SECONDS,
    LEADER_ELECTION_ID,
    OSC_HOOK,
    OSC_MIRROR_HOOK,
    SECRET_HOOK,
    SHOOT_HOOK,
    WEBHOOK_CONFIGURATION_NAME,
)
from extension.controller.actuator import Actuator, ShootTarget
from extension.controller.health import HealthLoop
from extension.controller.mirror import MirrorActuator
from extension.controller.providers import PluginChecks
from extension.controller.reconciler import DEFAULT_RESYNC_SECONDS, Controller
from extension.controller.upstreams import UpstreamChecks
from extension.errors import RegistryCacheError
from extension.references import ReferenceIndex
from extension.runtime import metrics as runtime_metrics
from extension.runtime.informer import Informer, Key, wait_synced
from extension.runtime.kube import ApiError, Kube
from extension.runtime.leader import LeaderElector
from extension.standalone.bridge import Bridge
from extension.standalone.policies import PolicyCheck
from extension.standalone.protection import Protection
from extension.webhook import osc, server
from extension.webhook.admission import AdmissionServer, Hook, Refusal, replace_spec_fields
from extension.webhook.secret import secret_delete_refusal
from extension.webhook.shoot import shoot_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookSettings:
    listen_address: str
    port: int
    client: Callable[[str], dict[str, Any]]  # clientConfig per hook, see server.url_client/service_client
    hostnames: list[str]  # what the serving certificate is for
    garden: bool = True  # Shoot validation and Secret protection (where Shoots and their Secrets are)
    seed: bool = True  # the OperatingSystemConfig webhook (where the shoot namespaces are)
    service: tuple[str, str] | None = None  # (namespace, name) of the Service in front of every replica
    # The CA of the client certificate the API server presents (its AdmissionConfiguration's kubeConfigFile):
    # with it only the API server can call the webhooks; without it anyone who reaches the port can, and the
    # answers carry nothing read from Secrets or other Shoots.
    client_ca: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True)
class Runtime:
    """The parts the hooks and watches call (nothing here is reassigned after :func:`build_runtime`). ``seed`` is the
    client of the webhooks and their registration (every replica); the controller's, the bridge's and the
    protection's writes are fenced by the leader lease."""

    controller: Controller
    stop: threading.Event
    seed: Kube
    upstream_check_interval: float = DEFAULT_UPSTREAM_CHECK_INTERVAL_SECONDS  # seconds; 0: only at reconciles
    bridge: Bridge | None = None
    index: ReferenceIndex | None = None
    protection: Protection | None = None
    webhook: WebhookSettings | None = None
    serving: server.ServingCert | None = None
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    elector: LeaderElector | None = None
    workers: int = 8
    resync_now: threading.Event = field(default_factory=threading.Event)  # SIGUSR1: a resync at once
    health: HealthLoop | None = None  # the caches' condition SystemComponentsHealthy (made by build_runtime)
    first_pass: FirstPass = field(default_factory=lambda: FirstPass())  # the bridge's pass at leading start

    def leading(self) -> bool:
        return self.elector is None or self.elector.leading()

    def leader_informers(self) -> list[Informer[Any]]:
        """Every watch of the leader: the controller's, and the caches' Pods for their health condition."""
        return [*self.controller.informers(), *(self.health.informers() if self.health is not None else [])]


def build_runtime(seed: Kube, shoot_target: ShootTarget, options: RenderOptions, standalone: bool,
                  webhook: WebhookSettings | None = None,
                  checkpoint: Callable[[str], None] = lambda point: None,
                  resync_seconds: float = DEFAULT_RESYNC_SECONDS,
                  monitoring: str | None = MONITORING_OPERATOR,
                  upstream_check_interval: float = DEFAULT_UPSTREAM_CHECK_INTERVAL_SECONDS,
                  upstream_checks: bool = True, elector: LeaderElector | None = None,
                  workers: int = 8) -> Runtime:
    """The parts: the Extension controller (both extension types) always; with ``standalone`` the bridge and the
    protection of Secrets in use (gardenlet and Gardener do both otherwise); with ``webhook`` the admission
    webhooks and, for the Secret webhook, the index of Secrets in use. ``monitoring``: where the caches'
    monitoring goes (see :class:`~extension.controller.actuator.Actuator`). ``upstream_checks``: the caches'
    upstream credential checks, also every ``upstream_check_interval`` seconds (the mirrors have no credentials);
    without them, only what caches with a credential provider plugin report is read (no upstream is asked).
    ``checkpoint`` is a test seam. With ``elector``, ``shoot_target`` must write through clients fenced by it
    (see :func:`writer`)."""
    fence = elector.leading if elector is not None else None
    writes = seed.fenced(fence) if fence is not None else seed
    # (without upstream checks, what caches with a credential provider plugin report is read all the same: that
    # asks only the shoot's API server)
    upstreams = UpstreamChecks(plugin_checker=PluginChecks(shoot_target), contact_upstreams=upstream_checks)
    actuator = Actuator(writes, shoot_target, options, checkpoint=checkpoint, monitoring=monitoring,
                        upstreams=upstreams)
    controller = Controller(writes, actuator, mirror=MirrorActuator(writes, shoot_target, options, readers=actuator),
                            upstreams=upstreams)
    index = None
    if standalone or (webhook is not None and webhook.garden):
        index = ReferenceIndex(cleanup_finalizer=BRIDGE_FINALIZER if standalone else None)
    protection = None
    if standalone:
        assert index is not None
        protection = Protection(Kube(seed.api, field_manager="registry-cache-protection", fence=fence), index)
    bridge = Bridge(Kube(seed.api, field_manager="registry-cache-bridge", fence=fence), index,
                    PolicyCheck(seed)) if standalone else None
    if bridge is not None:
        controller.on_deleted = lambda ext: _extension_deleted(bridge, ext)
    return Runtime(
        controller, threading.Event(), seed, upstream_check_interval,
        bridge=bridge, index=index, protection=protection, webhook=webhook,
        serving=serving_cert(seed, webhook) if webhook is not None else None,
        resync_seconds=resync_seconds, elector=elector, workers=workers, health=HealthLoop(controller))


class FirstPass:
    """The Shoots the bridge looks at when this process starts leading (those it found at its start, and what
    changed while another replica led), kept from the Shoot watch until then: Shoots are listed once, by the watch.
    Only Shoots the bridge has something to do with (:meth:`Bridge.concerns`), without managedFields and of the
    status only ``lastErrors``; dropped once taken."""

    def __init__(self) -> None:
        self._shoots: dict[Key, dict[str, Any]] | None = {}
        self._lock = threading.Lock()

    def offer(self, shoot: dict[str, Any], concerns: bool) -> bool:
        """Keep (or drop) a Shoot listed or changed; False once the pass was made (the caller handles it)."""
        meta = shoot.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        with self._lock:
            if self._shoots is None:
                return False
            if concerns:
                self._shoots[key] = {**{k: v for k, v in shoot.items() if k != "status"},
                                     "metadata": {k: v for k, v in meta.items() if k != "managedFields"},
                                     "status": {"lastErrors": (shoot.get("status") or {}).get("lastErrors")}}
            else:
                self._shoots.pop(key, None)
            return True

    def drop(self, key: Key) -> None:
        with self._lock:
            if self._shoots is not None:
                self._shoots.pop(key, None)

    def take(self) -> list[dict[str, Any]]:
        """The Shoots to look at; from now on each change is the caller's at once."""
        with self._lock:
            shoots, self._shoots = self._shoots or {}, None
        return list(shoots.values())


def shoot_watch(runtime: Runtime) -> Informer[bool]:
    """The Shoot watch of every replica: it keeps the index current and, on the leader, hands each Shoot to the
    protection and the bridge (only that a Shoot exists is recorded; each is dropped once handled)."""
    return Informer(runtime.seed, "Shoot", lambda shoot: True, name="shoots",
                    on_object=lambda shoot: _on_shoot(runtime, shoot),
                    on_change=lambda key, old, new: _on_shoot_deleted(runtime, key) if new is None else None)


def serving_cert(seed: Kube, webhook: WebhookSettings) -> server.ServingCert:
    """Behind a Service every replica serves with the one certificate kept in a Secret of its namespace (the
    configurations carry one CA bundle); reached by URL, a process makes its own."""
    if webhook.service is not None:
        return server.shared_serving_cert(seed, webhook.service[0], webhook.hostnames)
    return server.make_serving_cert(webhook.hostnames)


def pod_name() -> str:
    """This replica's Pod (``POD_NAME`` from the downward API; in a Pod the hostname is its name too)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def writer(seed: Kube, elector: LeaderElector | None) -> Kube:
    """The client the controller writes with: fenced by the leader lease when there is one."""
    return seed.fenced(elector.leading) if elector is not None else seed


def hooks(runtime: Runtime) -> list[Hook]:
    """Every admission webhook served for what ``runtime`` runs (the paths of :mod:`.webhook.server`'s
    configurations)."""
    out = []
    if runtime.webhook is not None and runtime.webhook.garden:
        out += [Hook(SHOOT_HOOK, ("core.gardener.cloud", "shoots"), ("CREATE", "UPDATE"),
                     lambda request: _validate_shoot(runtime, request)),
                Hook(SECRET_HOOK, ("", "secrets"), ("DELETE",), lambda request: _protect_secret(runtime, request))]
    if runtime.webhook is not None and runtime.webhook.seed:
        out += [Hook(OSC_HOOK, ("extensions.gardener.cloud", "operatingsystemconfigs"), ("CREATE", "UPDATE"),
                     lambda request: _mutate_osc(runtime, request)),
                Hook(OSC_MIRROR_HOOK, ("extensions.gardener.cloud", "operatingsystemconfigs"), ("CREATE", "UPDATE"),
                     lambda request: _mutate_osc_mirror(runtime, request))]
    return out


def run(runtime: Runtime, liveness: str | None = None, watch_grace: float = probes.WATCH_GRACE_SECONDS,
        worker_deadline: float = probes.WORKER_DEADLINE_SECONDS) -> None:
    """Run until stopped (SIGINT/SIGTERM, or :attr:`Runtime.stop` set): the webhooks and the Shoot watch, the
    controller once leading; with ``liveness`` (``http://ADDR:PORT/healthz``) the probes (:mod:`.probes`) on that
    address."""
    workers: list[threading.Thread] = []
    lease_stop = threading.Event()  # set once the work in flight has drained: the elector then releases the Lease
    election: threading.Thread | None = None

    def start_leading() -> None:
        if not runtime.stop.is_set():
            threading.Thread(target=_lead, args=(runtime, workers), daemon=True, name="controller").start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, lambda *_: runtime.resync_now.set())
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, lambda number, _: _stopping(runtime, number))
    shoots = shoot_watch(runtime) if runtime.index is not None else None
    server = None
    if liveness:
        server = probes.ProbeServer(
            liveness, watches=lambda: [shoots] if shoots is not None else [],
            leader_watches=runtime.leader_informers, leading=runtime.leading,
            in_flight=lambda: runtime.controller.in_flight,
            webhook_port=runtime.webhook.port if runtime.webhook is not None else None,
            watch_grace=watch_grace, worker_deadline=worker_deadline).start()
    if shoots is not None:  # the index is primed before the webhooks answer from it, and before leading
        started = time.monotonic()
        shoots.start(runtime.stop)
        if not wait_synced([shoots], runtime.stop, timeout=CACHE_SYNC_TIMEOUT):
            if runtime.stop.is_set():  # stopped while it listed
                shoots.close()
                if server is not None:
                    server.stop()
                return
            runtime.stop.set()
            raise RuntimeError(f"the Shoot watch did not list within {CACHE_SYNC_TIMEOUT:.0f}s")
        assert runtime.index is not None
        runtime.index.primed.set()
        log.info("Shoot watch synced in %.1fs: %d Shoots", time.monotonic() - started, len(shoots))
    if runtime.elector is None:  # every replica reconciles: two of them count as two leaders
        runtime_metrics.leading(LEADER_ELECTION_ID, True)
        start_leading()
    else:
        election = threading.Thread(target=runtime.elector.run, args=(lease_stop, start_leading, _lost_lease),
                                    daemon=True, name="leader-election")
        election.start()
    admission = None
    try:
        admission = _serve_webhooks(runtime)
        while not runtime.stop.wait(3600):
            pass
    finally:
        runtime.stop.set()
        _unregister(runtime)
        if admission is not None:
            admission.stop()
        runtime.controller.queue.close()
        deadline = time.monotonic() + DRAIN_SECONDS
        for worker in list(workers):  # the operations in flight end (the lease still renewed) before it is released
            worker.join(max(0.0, deadline - time.monotonic()))
        if runtime.health is not None and runtime.leading():
            runtime.health.flush()  # what they changed is reported now, not by the next process at its start
        for informer in [*runtime.leader_informers(), *([shoots] if shoots is not None else [])]:
            informer.close()
        lease_stop.set()
        if election is not None:
            election.join(RELEASE_SECONDS)
        if server is not None:
            server.stop()


def _stopping(runtime: Runtime, number: int) -> None:
    """(In the main thread, between two of its bytecodes: perhaps inside ``runtime.stop.wait``, holding the lock
    that ``set`` takes. So it is set from another thread.)"""
    log.info("%s received: stopping", signal.Signals(number).name)
    threading.Thread(target=runtime.stop.set, daemon=True, name="stopping").start()


def _lost_lease() -> None:
    """As controller-runtime's manager: a replica that lost the lease ends (its writes are fenced already) and is
    started again as a follower; the other replica serves the webhooks meanwhile."""
    log.error("leader lease lost: exiting")
    logging.shutdown()
    os._exit(1)


DRAIN_SECONDS = 20.0  # at a stop, how long the operations in flight may still run
RELEASE_SECONDS = 10.0  # then, how long the elector may take to release the lease
CACHE_SYNC_TIMEOUT = 120.0  # as controller-runtime's CacheSyncTimeout: a leader whose watches do not list ends


def _lead(runtime: Runtime, workers: list[threading.Thread]) -> None:
    """The leader's part (:func:`_leading`); should it fail (its watches do not list within
    :data:`CACHE_SYNC_TIMEOUT`, an API server away at its start), the process ends rather than hold the lease and
    do nothing: started again, or the other replica takes over."""
    try:
        _leading(runtime, workers)
    except Exception:
        if runtime.stop.is_set():
            return
        log.exception("the controller could not start: exiting")
        logging.shutdown()
        os._exit(1)


def _leading(runtime: Runtime, workers: list[threading.Thread]) -> None:
    """The controller's watches, then (all listed) its workers, the retries and the resync; in standalone mode a
    pass of the bridge over every Shoot and of the protection over every Secret in use."""
    stop, controller = runtime.stop, runtime.controller
    runtime_metrics.MAX_CONCURRENT_RECONCILES.labels(CONTROLLER_NAME).set(runtime.workers)
    started = time.monotonic()
    informers = runtime.leader_informers()
    for informer in informers:
        informer.start(stop)
    if not wait_synced(informers, stop, timeout=CACHE_SYNC_TIMEOUT):
        if stop.is_set():
            return
        raise RuntimeError(f"the watches did not list within {CACHE_SYNC_TIMEOUT:.0f}s: " + ", ".join(
            i.name for i in informers if not i.synced.is_set()))
    controller.actuator.started(stop)
    log.info("watches synced in %.1fs: %d Extensions", time.monotonic() - started, len(controller.informer))
    for i in range(runtime.workers):
        worker = threading.Thread(target=controller.work, args=(stop,), daemon=True, name=f"worker-{i}")
        worker.start()
        workers.append(worker)
    if runtime.protection is not None:
        try:
            runtime.protection.resync()
        except Exception:
            log.exception("the protection's pass over the Secrets in use failed; its retries follow")
    if runtime.upstream_check_interval > 0:
        threading.Thread(target=_upstream_check_loop, args=(runtime.controller, runtime.stop,
                                                            runtime.upstream_check_interval),
                         daemon=True, name="upstream-check").start()
    # the caches' health (condition SystemComponentsHealthy): as their StatefulSets and Pods change, or polled
    if runtime.health is not None:
        threading.Thread(target=runtime.health.run, args=(runtime.stop,), daemon=True, name="health").start()
    if runtime.bridge is not None:
        try:  # every Shoot once: those the watch listed at start, and what happened while another replica led
            for shoot in runtime.first_pass.take():
                runtime.bridge.handle(shoot)
        except Exception:
            log.exception("the bridge's pass over the Shoots failed; its retries follow")
    _retry_loop(runtime)


# --- the webhook server -------------------------------------------------------------------------------

def _serve_webhooks(runtime: Runtime) -> AdmissionServer | None:
    """The admission webhooks served on their port, then registered (and kept registered) once they answer."""
    hook, serving = runtime.webhook, runtime.serving
    if hook is None or serving is None:
        return None
    if not hook.authenticated:
        log.warning("the webhooks answer any caller that reaches port %s (no --webhook-client-ca): they read no "
                    "Secret and name no other Shoot in their answers", hook.port)
    admission = AdmissionServer(hook.listen_address, hook.port, serving.certfile, serving.keyfile, hooks(runtime),
                                client_ca=hook.client_ca).start()
    threading.Thread(target=_register_when_serving, args=(runtime, hook, serving), daemon=True,
                     name="webhook-registration").start()
    return admission


def _unregister(runtime: Runtime) -> None:
    """On a clean shutdown the Shoot webhook goes (failurePolicy Fail must not block Shoots while we are
    away); the Secret webhook stays (it ignores failures, the finalizer covers for it). Behind a Service, only
    the last replica removes them: while another one is a ready endpoint (a rollout), they stay. (runtime.stop is
    set before: the registration's upkeep must not put back what goes now.)"""
    hook, serving = runtime.webhook, runtime.serving
    if hook is None or serving is None:
        return
    if hook.service is not None and server.other_replica_serving(runtime.seed, *hook.service, pod_name()):
        log.info("another replica serves the webhooks: their configurations stay")
        return
    try:
        if hook.garden:
            runtime.seed.apply(server.configuration(serving.ca_pem, hook.client, shoot_hook=False,
                                                    standalone=runtime.bridge is not None))
        if hook.seed:
            runtime.seed.delete("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME)
    except Exception:
        log.exception("could not remove the Shoot and OperatingSystemConfig webhooks")


# --- watches ---------------------------------------------------------------------------------------------

def _extension_deleted(bridge: Bridge, ext: dict[str, Any]) -> None:
    if BRIDGE_LABEL in ((ext.get("metadata") or {}).get("labels") or {}):
        try:
            bridge.resync_shoot_of(ext["metadata"]["namespace"])  # the bridge finishes the Shoot's cleanup
        except Exception:
            log.exception("%s: the bridge could not finish the Shoot's cleanup", ext["metadata"]["namespace"])


def _on_shoot(runtime: Runtime, shoot: dict[str, Any]) -> None:
    """A Shoot listed or changed (the Shoot watch's thread)."""
    assert runtime.index is not None
    changed = runtime.index.update(shoot)
    # before the leader's first pass the Shoot is kept for it; after, handled here
    later = runtime.bridge is not None and runtime.first_pass.offer(shoot, runtime.bridge.concerns(shoot))
    if not runtime.leading() or not runtime.index.primed.is_set():
        return  # the index is every replica's; writing is the leader's, which starts with a pass over all
    _protect(runtime, changed)
    if runtime.bridge is not None and not later:
        runtime.bridge.handle(shoot)


def _on_shoot_deleted(runtime: Runtime, key: Key) -> None:
    assert runtime.index is not None
    runtime.first_pass.drop(key)
    changed = runtime.index.remove(*key)
    if runtime.leading():
        _protect(runtime, changed)


def _protect(runtime: Runtime, secrets: set[tuple[str, str]]) -> None:
    if runtime.protection is not None:
        for namespace, name in sorted(secrets):
            runtime.protection.handle(namespace, name)


# --- admission -------------------------------------------------------------------------------------------

def _validate_shoot(runtime: Runtime, request: dict[str, Any]) -> None:
    seed, hook = runtime.seed, runtime.webhook
    authenticated = hook is not None and hook.authenticated
    new, old = request.get("object") or {}, request.get("oldObject")
    claims = runtime.index if runtime.bridge is not None else None  # standalone: every Shoot shares the nodes
    errors = shoot_errors(new, old or None, lambda ns, name: seed.get("Secret", name, ns), claims, authenticated)
    if errors:
        meta = new.get("metadata") or {}
        log.info("refused Shoot %s/%s: %d errors", meta.get("namespace"), meta.get("name"), len(errors))
        metrics.WEBHOOK_REFUSALS.labels(SHOOT_HOOK).inc()
        raise Refusal("\n".join(errors), code=422)


def _protect_secret(runtime: Runtime, request: dict[str, Any]) -> None:
    assert runtime.index is not None
    meta = (request.get("oldObject") or {}).get("metadata") or {}
    refusal = secret_delete_refusal(runtime.index, meta.get("namespace", ""), meta.get("name", ""),
                                    named=runtime.webhook is not None and runtime.webhook.authenticated)
    if refusal:
        log.info("refused DELETE of Secret %s/%s: in use", meta.get("namespace"), meta.get("name"))
        metrics.WEBHOOK_REFUSALS.labels(SECRET_HOOK).inc()
        raise Refusal(refusal, code=403)


def _mutate_osc(runtime: Runtime, request: dict[str, Any]) -> list[dict[str, Any]]:
    body = request.get("object") or {}
    new_spec = osc.ensure(runtime.seed, body)
    return replace_spec_fields(body, new_spec) if new_spec is not None else []


def _mutate_osc_mirror(runtime: Runtime, request: dict[str, Any]) -> list[dict[str, Any]]:
    body = request.get("object") or {}
    try:
        new_spec = osc.ensure_mirror(runtime.seed, body)
    except RegistryCacheError as exc:
        raise Refusal(str(exc), code=500) from None
    return replace_spec_fields(body, new_spec) if new_spec is not None else []


def _register_when_serving(runtime: Runtime, hook: WebhookSettings, serving: server.ServingCert) -> None:
    """Register the webhooks only once the server accepts connections (a Shoot webhook with failurePolicy Fail
    that nobody answers yet would refuse Shoot changes in between), retrying until the API server takes them."""
    address = "127.0.0.1" if hook.listen_address in ("0.0.0.0", "::", "") else hook.listen_address
    started = time.monotonic()
    while not runtime.stop.is_set():
        try:
            socket.create_connection((address, hook.port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() - started > 60:
                log.error("the webhook server on %s:%s does not come up; still waiting", address, hook.port)
                started = time.monotonic()
            runtime.stop.wait(0.2)
    configurations = []
    standalone = runtime.bridge is not None
    if hook.seed:
        configurations.append(server.mutating_configuration(serving.ca_pem, hook.client))
    if hook.garden:
        configurations.append(server.configuration(serving.ca_pem, hook.client, standalone=standalone))
    register_with_retries(runtime.seed.apply, configurations, runtime.stop)
    log.info("admission webhooks serving on %s:%s and registered", hook.listen_address, hook.port)
    # kept registered: a configuration another replica's shutdown removed meanwhile (a reinstall, where the old
    # replicas go while the new ones already serve) or someone changed is put back
    while not runtime.stop.wait(REREGISTER_SECONDS):
        for configuration in configurations:
            kind, name = configuration["kind"], configuration["metadata"]["name"]
            try:
                current = runtime.seed.get(kind, name)
                if current is None or _hooks(current) != _hooks(configuration):
                    log.warning("%s %s was %s: registering it again", kind, name,
                                "removed" if current is None else "changed")
                    runtime.seed.apply(configuration)
            except ApiError as exc:
                log.warning("could not look at %s %s: %s", kind, name, exc.describe())


REREGISTER_SECONDS = 30.0


def _hooks(configuration: dict[str, Any]) -> list[tuple[str, Any]]:
    """What makes the webhooks of a configuration reach this server: their names and client configurations."""
    return sorted((w.get("name", ""), w.get("clientConfig")) for w in configuration.get("webhooks") or [])


def _upstream_check_loop(controller: Controller, stop: threading.Event, interval: float) -> None:
    """Checks the upstream credentials of every Extension every ``interval`` seconds (each one bounded)."""
    while not stop.wait(interval):
        assert controller.upstreams is not None
        for namespace in controller.upstreams.namespaces():
            try:
                controller.check_upstreams(namespace)
            except Exception:
                log.exception("upstream credential check of %s failed", namespace)


def register_with_retries(apply: Callable[[dict[str, Any]], Any], configurations: list[dict[str, Any]],
                          stop: threading.Event, base: float = 1.0, maximum: float = 30.0) -> bool:
    """Apply each configuration, retrying with backoff (the API server may be away or refuse for a while)
    until it is taken or ``stop`` is set; returns whether all were applied."""
    for configuration in configurations:
        delay = base
        while True:
            try:
                apply(configuration)
                break
            except Exception as exc:  # noqa: BLE001 - whatever it was, try again
                log.warning("could not register %s %s (retrying in %.0fs): %s", configuration["kind"],
                            configuration["metadata"]["name"], delay,
                            exc.describe() if isinstance(exc, ApiError) else exc)
                if stop.wait(delay):
                    return False
                delay = min(maximum, delay * 2)
    return True


def _retry_loop(runtime: Runtime, interval: float = 1.0) -> None:
    """Runs failed operations (Extensions, the bridge's Shoots, protected Secrets) again once their backoff has
    passed, and every ``resync_seconds`` looks at all Extensions (Gardener's periodic resync)."""
    controller, stop = runtime.controller, runtime.stop
    next_resync = time.monotonic() + runtime.resync_seconds
    while not stop.wait(interval):
        try:
            controller.queue_due()
        except Exception:
            log.exception("queueing the retries failed")
        for part in (runtime.bridge, runtime.protection):
            if part is not None:
                try:
                    part.retry_due()
                except Exception:
                    log.exception("retry of the %s failed", type(part).__name__)
        if time.monotonic() >= next_resync or runtime.resync_now.is_set():
            runtime.resync_now.clear()
            next_resync = time.monotonic() + runtime.resync_seconds
            log.info("periodic resync: looking at %d Extensions", controller.resync())
