"""The actuator: what Reconcile, Delete, Migrate and Restore of a ``registry-cache`` Extension do.

Orchestration only, in the Go extension's order: read the Cluster (skip a hibernated shoot), decode and
validate the providerConfig, resolve credentials through ``spec.resources`` to the ``ref-`` Secrets, and
hand them to the component (:mod:`extension.component.registrycache`), which delivers the caches to the
shoot and returns the ``RegistryStatus``. As Gardener's: a VerticalPodAutoscaler per cache only when the
Shoot wants VPA (``spec.kubernetes.verticalPodAutoscaler.enabled``, and the shoot serves the kind), and the
monitoring only when the Shoot's purpose is not ``testing``.

The Cluster and the Secrets come from the seed cache (:mod:`.seedcache`: read again only when changed), what
is in the shoot from a shoot view (watched when one cluster receives every Extension's caches, listed per
reconcile otherwise). Per Extension it keeps the record of the last delivery (:class:`Delivery`), with which
:meth:`Actuator.in_sync` tells without a request that nothing changed; it is dropped with :meth:`forget`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from api import names
from api import shoot as shootlib
from api.admission import resolve_credentials
from api.credential_provider import CredentialProvider
from api.credentials import UpstreamAuth
from api.field import Path, ValidationFailed
from api.secrets import Credentials, SecretData, secret_from_manifest
from api.v1alpha3 import RegistryConfig
from api.validation import decode_and_default, remote_url, validate_registry_config, validate_registry_config_update
from extension.component.objects import RenderOptions
from extension.component.registrycache import MONITORING_OPERATOR, OPTIONAL_KINDS, Delivery, RegistryCaches
from extension.component.shootview import PRUNED_KINDS, Live, ShootView, WatchedView
from extension.constants import EXTENSION_TYPE, REFERENCED_RESOURCE_PREFIX
from extension.controller.seedcache import SeedCache
from extension.controller.shoots import KubeconfigSecret, shared_cluster
from extension.controller.upstreams import UpstreamChecks
from extension.errors import ConfigurationError, ReconcileError, WouldWrite
from extension.runtime.informer import Informer
from extension.runtime.kube import Kube
from extension.upstreamcheck import PluginTarget, Target

log = logging.getLogger(__name__)

PROVIDER_CONFIG_PATH = Path("spec", "providerConfig")
PROVIDER_STATUS_DIGEST = "providerStatusDigest"  # what the Extension watch keeps of status.providerStatus

ShootTarget = Callable[[str], Kube]  # seed namespace -> client of that shoot's API server
SERVED_TTL_SECONDS = 300.0  # how long what a cluster serves (its CRDs) is taken as known


def status_digest(provider_status: Any) -> str:
    return hashlib.sha256(json.dumps(provider_status, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Outcome:
    """What a Create, Reconcile or Restore did: the provider status to report (None: none), and its words."""

    provider_status: dict[str, Any] | None
    description: str


class ExtensionActuator(Protocol):
    """What the Extension controller drives, per extension type."""

    extension_type: str
    what: str  # for the status' words: "registry caches"

    def reconcile(self, extension: dict[str, Any]) -> Outcome: ...
    def restore(self, extension: dict[str, Any]) -> Outcome: ...
    def delete(self, extension: dict[str, Any]) -> None: ...
    def migrate(self, extension: dict[str, Any]) -> None: ...
    def in_sync(self, extension: dict[str, Any]) -> bool: ...
    def forget(self, namespace: str) -> None: ...


class ServedKinds:
    """Which of some kinds a cluster serves, per cluster (``key``), asked again after :data:`SERVED_TTL_SECONDS`."""

    def __init__(self, kinds: tuple[str, ...]):
        self.kinds = kinds
        self._known: dict[str, tuple[float, frozenset[str]]] = {}

    def __call__(self, kube: Kube, key: str = "") -> frozenset[str]:
        now = time.monotonic()
        known = self._known.get(key)
        if known is None or now - known[0] > SERVED_TTL_SECONDS:
            known = (now, frozenset(k for k in self.kinds if kube.has_kind(k)))
            self._known[key] = known
        return known[1]

    def forget(self, key: str) -> None:
        self._known.pop(key, None)



C = TypeVar("C")


def decode_provider_config(extension: dict[str, Any], extension_type: str,
                           decode: Callable[[Any, Path], C], validate: Callable[[C, Path], list[Any]]) -> C:
    """An Extension's providerConfig decoded, defaulted and validated; :class:`ConfigurationError` naming
    every field path that is wrong."""
    raw = (extension.get("spec") or {}).get("providerConfig")
    if raw is None:
        raise ConfigurationError("spec.providerConfig: Required value: providerConfig is required for the "
                                 f"{extension_type} extension")
    try:
        config = decode(raw, PROVIDER_CONFIG_PATH)
    except ValidationFailed as exc:
        raise ConfigurationError(str(exc)) from None
    errors = validate(config, PROVIDER_CONFIG_PATH)
    if errors:
        raise ConfigurationError("; ".join(str(e) for e in errors))
    return config


class Actuator:
    """``options`` are the controller's: the image, the shoot namespace. ``monitoring``: where the monitoring of
    the caches goes (:data:`~extension.component.registrycache.MONITORING_GARDENER` under Gardener, else
    :data:`~extension.component.registrycache.MONITORING_OPERATOR`: where the shoot serves the kinds).
    ``on_change(namespace)`` is called (on a watch's thread) when something an Extension's delivery depends on
    changed: its Cluster, a Secret it reads, an object it delivered."""

    extension_type = EXTENSION_TYPE
    what = "registry caches"

    def __init__(self, seed: Kube, shoot_target: ShootTarget, options: RenderOptions,
                 checkpoint: Callable[[str], None] = lambda point: None,
                 monitoring: str | None = MONITORING_OPERATOR, upstreams: UpstreamChecks | None = None,
                 on_change: Callable[[str], None] | None = None):
        self.seed = seed
        self.upstreams = upstreams  # told which upstreams each Extension pulls from with credentials
        self.shoot_target = shoot_target
        self.options = options
        self.monitoring = monitoring
        self.on_change = on_change
        self.on_workload: Callable[[str], None] | None = None  # a StatefulSet of this namespace changed (watched)
        self._checkpoint = checkpoint  # a test seam, see RegistryCaches
        self._served = ServedKinds(OPTIONAL_KINDS)
        self._seed_served = ServedKinds(("PrometheusRule", "ScrapeConfig"))
        self.cache = SeedCache(seed, getattr(shoot_target, "secret_names", ()), on_change=self._seed_changed)
        if isinstance(shoot_target, KubeconfigSecret):
            shoot_target.read = self.read_secret
        self._records: dict[str, Delivery] = {}
        self._inflight: dict[str, set[str]] = {}  # namespace -> resourceVersions of its objects being written
        self._lock = threading.Lock()
        self.view: WatchedView | None = None  # when one cluster receives every Extension's caches
        self._watching = False
        # the watches are made once: the leader's start and the readiness probe (another thread) both ask for them
        self._watches_lock = threading.Lock()

    # --- watching --------------------------------------------------------------------------------------
    def informers(self) -> list[Informer[Any]]:
        """What to watch for the seed cache and, where one cluster receives every Extension's caches, the view
        of that cluster (the caller starts them, waits for them to list, and calls :meth:`started`)."""
        with self._watches_lock:
            self._watching = True
            informers = self.cache.informers()
            shared = shared_cluster(self.shoot_target)
            if shared is not None:
                if self.view is None:
                    self.view = WatchedView(shared, self.options.namespace, PRUNED_KINDS + tuple(
                        k for k in OPTIONAL_KINDS if k in self._served(shared)), on_change=self._shoot_changed)
                informers = informers + list(self.view.informers)
            return informers

    def started(self, stop: threading.Event) -> None:
        """The watches run: kinds a shoot serves later are watched from when they are wanted (with ``stop``)."""
        if self.view is not None:
            self.view.start(stop)

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self.cache.secret(namespace, name)
        return entry[1] if entry is not None else None

    def _seed_changed(self, namespace: str) -> None:
        record = self._records.get(namespace)
        if record is not None and self.on_change is not None and not self.cache.unchanged(record.seed_versions):
            self.on_change(namespace)

    def _shoot_changed(self, owner: str, kind: str, name: str, live: Live | None) -> None:
        """An object of ``owner`` changed in the shoot: look again unless it is as the last delivery left it or
        being written by it right now."""
        if kind == "StatefulSet" and self.on_workload is not None:
            self.on_workload(owner)  # (its replicas wanted or ready: the health condition)
        if self.on_change is None:
            return
        with self._lock:
            if live is not None and live.version in self._inflight.get(owner, ()):
                return
        record = self._records.get(owner)
        if record is not None:
            recorded = record.objects.get((kind, name))
            if live is not None and recorded is not None and recorded[1] == live.version:
                return
            if live is None and recorded is None and kind != "PersistentVolumeClaim":
                return  # something pruned
        elif live is not None and not live.foreign:
            return  # nothing delivered in this process yet: the resync looks at it
        self.on_change(owner)

    # --- helpers --------------------------------------------------------------------------------------
    def _caches(self, namespace: str, shoot_spec: dict[str, Any] | None = None) -> RegistryCaches:
        shoot = self.shoot_target(namespace)
        shared = shared_cluster(self.shoot_target)
        served = self._served(shoot, "" if shared is not None else namespace)
        vpa = shoot_spec is not None and shootlib.wants_vpa(shoot_spec) and "VerticalPodAutoscaler" in served
        if shoot_spec is not None and shootlib.wants_vpa(shoot_spec) and not vpa:
            log.warning("%s: the Shoot wants VPA, but its cluster serves no VerticalPodAutoscaler", namespace)
        seed_served = self._seed_served(self.seed) if self.monitoring and self.monitoring != MONITORING_OPERATOR \
            else frozenset()
        view: ShootView | None = self.view if self.view is not None and shared is shoot else None
        return RegistryCaches(self.seed, shoot, namespace, replace(self.options, vpa=vpa),
                              checkpoint=self._checkpoint, view=view, store=self.cache if self._watching else None,
                              served=served, monitoring=self.monitoring, seed_served=seed_served)

    def cluster_shoot(self, namespace: str) -> tuple[str, dict[str, Any]]:
        """(resourceVersion, the Shoot of the Cluster as far as the actuator reads it)."""
        entry = self.cache.cluster(namespace)
        if entry is None:
            raise ReconcileError(f"Cluster {namespace} not found: gardenlet (or the standalone bridge) creates it "
                                 "for every shoot namespace")
        shoot = entry[1].get("shoot")
        if not isinstance(shoot, dict):
            raise ReconcileError(f"Cluster {namespace} has no spec.shoot")
        return entry[0], shoot

    def decode(self, extension: dict[str, Any]) -> RegistryConfig:
        return decode_provider_config(extension, EXTENSION_TYPE, decode_and_default, validate_registry_config)

    def get_secret(self, namespace: str, name: str) -> SecretData | None:
        obj = self.read_secret(namespace, name)
        return secret_from_manifest(obj) if obj else None

    # --- operations -----------------------------------------------------------------------------------
    def _resolve(self, extension: dict[str, Any], seed_versions: dict[tuple[str, str, str], str] | None = None) \
            -> tuple[dict[str, Any], RegistryConfig, Mapping[str, UpstreamAuth]] | None:
        """The Shoot, the validated config and the credentials per upstream; None when the shoot is hibernated.
        ``seed_versions`` gets the resourceVersions of the Cluster and the Secrets read."""
        namespace = extension["metadata"]["namespace"]
        versions = seed_versions if seed_versions is not None else {}
        cluster_version, shoot_spec = self.cluster_shoot(namespace)
        versions[("Cluster", "", namespace)] = cluster_version
        if shootlib.is_hibernated(shoot_spec):
            return None
        config = self.decode(extension)

        def get_secret(ns: str, name: str) -> SecretData | None:
            entry = self.cache.secret(ns, name)
            if entry is None:
                return None
            versions[("Secret", ns, name)] = entry[0]
            return secret_from_manifest(entry[1])

        try:
            credentials = resolve_credentials(shoot_spec, config, get_secret, namespace,
                                              PROVIDER_CONFIG_PATH, name_prefix=REFERENCED_RESOURCE_PREFIX)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        return shoot_spec, config, credentials

    def _set_targets(self, namespace: str, config: RegistryConfig, credentials: Mapping[str, UpstreamAuth]) -> None:
        if self.upstreams is None:
            return
        targets: list[Target | PluginTarget] = []
        for cache in config.caches:
            auth = credentials.get(cache.upstream)
            if isinstance(auth, Credentials):
                targets.append(Target(cache.upstream, remote_url(cache), auth))
            elif isinstance(auth, CredentialProvider):
                targets.append(PluginTarget(cache.upstream, auth.name, auth.image, names.resource_name(cache.upstream)))
        self.upstreams.set_targets(namespace, targets)

    def reconcile(self, extension: dict[str, Any], dry_run: bool = False) -> Outcome:
        """Deliver the caches (nothing while the shoot is hibernated); hand the upstreams with credentials to
        the credential checks. ``dry_run``: raise :class:`WouldWrite` at the first write instead (and keep the
        record when there is none to make). What is as delivered is not sent again; when, from memory, nothing
        changed since this process delivered, nothing at all is done."""
        meta = extension["metadata"]
        namespace = meta["namespace"]
        if not dry_run:
            record = self._unchanged(extension)
            if record is not None:  # nothing changed since this process delivered it: nothing to send
                log.info("%s: as delivered, nothing changed", namespace)
                if record.hibernated:
                    return Outcome(None, "The shoot is hibernated: the registry caches are left as they are")
                return Outcome(record.provider_status, "The registry caches are delivered")
        seed_versions: dict[tuple[str, str, str], str] = {}
        resolved = self._resolve(extension, seed_versions)
        if resolved is None:
            log.info("%s: shoot is hibernated, nothing to do", namespace)
            self._records[namespace] = Delivery(generation=meta.get("generation"), seed_versions=seed_versions,
                                                hibernated=True)
            return Outcome(None, "The shoot is hibernated: the registry caches are left as they are")
        shoot_spec, config, credentials = resolved
        caches = self._caches(namespace, shoot_spec)
        inflight: set[str] = set()
        with self._lock:
            self._inflight[namespace] = inflight
        caches.on_write = lambda written: inflight.add(str((written.get("metadata") or {}).get("resourceVersion")))
        try:
            status, record = caches.deploy(config, credentials, check_update=check_update,
                                           record=self._records.get(namespace), dry_run=dry_run,
                                           monitor=shootlib.purpose(shoot_spec) != shootlib.PURPOSE_TESTING)
        finally:
            with self._lock:
                self._inflight.pop(namespace, None)
        record.generation = meta.get("generation")
        record.provider_status = status.to_wire()
        record.seed_versions = {**record.seed_versions, **seed_versions}
        if dry_run and not _status_is(extension, record.provider_status):
            raise WouldWrite(f"Extension {namespace}/{meta['name']} status")
        self._records[namespace] = record
        self._set_targets(namespace, config, credentials)
        return Outcome(record.provider_status, "The registry caches are delivered")

    def in_sync(self, extension: dict[str, Any]) -> bool:
        """Whether the caches of a Succeeded Extension are as delivered, with nothing to write: from memory when
        this process delivered or checked them and nothing they depend on changed since, else by a dry run
        (reads only). Any failure says "not in sync" (the reconcile that follows reports it)."""
        namespace = extension["metadata"]["namespace"]
        record = self._unchanged(extension)
        if record is not None and (record.hibernated or _status_is(extension, record.provider_status)):
            return True
        try:
            self.reconcile(extension, dry_run=True)
            return True
        except WouldWrite as exc:
            log.info("%s: not as delivered (%s)", namespace, exc.what)
        except Exception as exc:  # noqa: BLE001 - the reconcile that follows reports it
            log.info("%s: cannot tell whether it is as delivered: %s", namespace, exc)
        self._records.pop(namespace, None)
        return False

    def _unchanged(self, extension: dict[str, Any]) -> Delivery | None:
        """The record of the last delivery when, from memory, nothing changed since: the same generation, the
        Cluster and the Secrets read at the versions read then, every object delivered at the version left."""
        meta = extension["metadata"]
        namespace = meta["namespace"]
        record = self._records.get(namespace)
        if record is None or record.generation != meta.get("generation") or \
                not self.cache.unchanged(record.seed_versions):
            return None
        if record.hibernated or self._caches(namespace).unchanged(record):
            return record
        return None

    def learn_upstreams(self, extension: dict[str, Any]) -> None:
        """Tell the upstream checks what an Extension that needs no reconcile pulls from (after a restart of
        the controller): reads the Cluster and the referenced Secrets (from the seed cache), changes nothing."""
        resolved = self._resolve(extension)
        if resolved is not None:
            self._set_targets(extension["metadata"]["namespace"], resolved[1], resolved[2])

    def delete(self, extension: dict[str, Any]) -> None:
        """Remove everything this Extension delivered to the shoot, its volumes included."""
        namespace = extension["metadata"]["namespace"]
        self._records.pop(namespace, None)
        self._caches(namespace).destroy()
        if self.upstreams is not None:
            self.upstreams.forget(namespace)

    def migrate(self, extension: dict[str, Any]) -> None:
        """Keep the objects in the shoot: the control plane moves, the caches keep serving."""
        namespace = extension["metadata"]["namespace"]
        log.info("%s: migrate: keeping the caches in the shoot", namespace)
        self._records.pop(namespace, None)
        if self.upstreams is not None:
            self.upstreams.forget(namespace)  # checked by the controller it moves to

    def restore(self, extension: dict[str, Any]) -> Outcome:
        return self.reconcile(extension)

    def forget(self, namespace: str) -> None:
        """The Extension is gone: drop everything kept for it."""
        self._records.pop(namespace, None)
        self._served.forget(namespace)
        self.cache.forget(namespace)
        forget = getattr(self.shoot_target, "forget", None)
        if forget is not None:
            forget(namespace)
        if self.upstreams is not None:
            self.upstreams.forget(namespace)

    def records(self) -> int:
        return len(self._records)


def _status_is(extension: dict[str, Any], provider_status: dict[str, Any] | None) -> bool:
    """Whether the Extension's status.providerStatus is ``provider_status`` (the watch keeps only its digest)."""
    status = extension.get("status") or {}
    if PROVIDER_STATUS_DIGEST in status:
        return provider_status is not None and status[PROVIDER_STATUS_DIGEST] == status_digest(provider_status)
    return status.get("providerStatus") == provider_status


def check_update(delivered: RegistryConfig, config: RegistryConfig) -> None:
    """The update rules (volume size and class immutable, garbage collection not enabled again once disabled),
    checked against what was delivered: under Gardener (``--webhooks seed``) no Shoot webhook of ours enforced
    them. Gardener's words, on the Extension's field paths."""
    errors = validate_registry_config_update(delivered, config, PROVIDER_CONFIG_PATH)
    if errors:
        raise ConfigurationError("; ".join(str(e) for e in errors))
