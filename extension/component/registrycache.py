"""The registry caches of one Extension: what is deployed for them, and how (Gardener's ``pkg/component``).

Two ways in, one plan:

- :func:`plan` is pure: from a defaulted config, the credentials, where nodes reach each cache and the TLS
  material, it gives the objects for the shoot and the ``RegistryStatus``. ``registry-cache render`` calls it
  with addresses from ``--endpoint`` and certificates made on the spot.
- :class:`RegistryCaches` deploys it into a shoot and destroys it again: Services first (the API server
  assigns the cluster IPs that go into the certificates and the endpoints), the TLS material from the seed
  (reused while valid), everything else by server-side apply, then it prunes what this Extension delivered
  before and no longer renders, the volumes of removed caches included. With monitoring (Gardener's
  ``MonitoringEnabled``: not for Shoots whose purpose is ``testing``) it also delivers the scrape, rules and
  dashboard of :mod:`.monitoring`: under Gardener into the shoot namespace of the seed, standalone as a
  PrometheusRule and a PodMonitor next to the caches when the shoot serves those kinds.

What is there is known from a :class:`~extension.component.shootview.ShootView` (watched or listed, never read
object by object), and an object is sent only when it is not as delivered: each carries the hash of the object
it was applied from (:data:`~extension.constants.RENDERED_HASH_ANNOTATION`); it is as delivered when it still
has the resourceVersion the last apply or check left it with, or, after a restart, when it carries the hash of
what is rendered now and no other field manager changed it. A deploy returns a :class:`Delivery`, the record of
what it found and left, with which :meth:`RegistryCaches.unchanged` answers "is everything as delivered?" from
memory. ``dry_run`` raises :class:`~extension.errors.WouldWrite` at the first write instead of making it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from api import names
from api.credentials import UpstreamAuth
from api.field import Path, ValidationFailed
from api.urls import is_ip_address
from api.v1alpha3 import RegistryCache, RegistryConfig, RegistryStatus
from api.validation import decode_and_default, remote_url, tls_enabled
from extension import constants as c
from extension.component import certs, monitoring, nodeauth, tls
from extension.component.certs import KeyPair
from extension.component.nodeauth import NodeCredentials
from extension.component.objects import (
    RenderedObject,
    RenderOptions,
    endpoint,
    provider_status,
    render_node_config,
    render_replica_services,
    render_service,
    render_shoot,
)
from extension.component.shootview import (
    OPTIONAL_KINDS,
    PRUNED_KINDS,
    ListedView,
    Live,
    ObjectKey,
    ShootView,
    live_record,
)
from extension.errors import ConfigurationError, ReconcileError, WouldWrite
from extension.runtime.kube import ApiError, Kube

log = logging.getLogger(__name__)

MONITORING_GARDENER = "gardener"  # ScrapeConfig, PrometheusRule, dashboards in the seed namespace
MONITORING_OPERATOR = "operator"  # PrometheusRule and PodMonitor in the shoot, where served
__all__ = ["MONITORING_GARDENER", "MONITORING_OPERATOR", "OPTIONAL_KINDS", "PRUNED_KINDS", "RegistryCaches"]
# how long a prune waits for the StatefulSet of a removed cache to be gone before deleting its volume claims
STATEFULSET_GONE_TIMEOUT_SECONDS = 30.0
STATEFULSET_GONE_POLL_SECONDS = 0.5


def scheme(cache: RegistryCache) -> str:
    return "https" if tls_enabled(cache) else "http"


def cert_requests(config: RegistryConfig, namespace: str,
                  addresses: Mapping[str, list[str]]) -> list[tls.ServerCertRequest]:
    """A server certificate per TLS cache: the Service's DNS names and the addresses nodes use (per upstream)."""
    requests = []
    for cache in config.caches:
        if tls_enabled(cache):
            name = names.resource_name(cache.upstream)
            service = names.service_name(cache.upstream, cache.service_name_suffix)
            requests.append(tls.ServerCertRequest(
                cache.upstream, f"{name}-tls", f"{name}-tls", certs.service_dns_names(service, namespace),
                [a for a in addresses.get(cache.upstream, []) if is_ip_address(a)]))
    return requests


@dataclass
class Plan:
    """What one Extension delivers: the caches' objects, the node agent's ConfigMap (standalone mode) and the
    status it reports."""

    objects: list[RenderedObject]
    node_config: RenderedObject
    status: RegistryStatus

    @property
    def delivered(self) -> list[RenderedObject]:
        return [*self.objects, self.node_config]


def plan(config: RegistryConfig, credentials: Mapping[str, UpstreamAuth], endpoints: Mapping[str, str],
         server_certs: Mapping[str, KeyPair], ca_bundle: str | None, options: RenderOptions,
         node_auth: Mapping[str, NodeCredentials] | None = None,
         peers: Mapping[str, Sequence[str]] | None = None) -> Plan:
    """Pure: the objects for the shoot and the provider status. ``endpoints`` is where nodes reach each
    cache (per upstream), ``server_certs`` the TLS key pair of each TLS cache, ``ca_bundle`` what nodes trust,
    ``node_auth`` the credentials of the caches only nodes may read, ``peers`` the cluster IPs of the replicas'
    Services of the caches with high availability."""
    status = provider_status(
        [(cache.upstream, endpoints[cache.upstream], remote_url(cache)) for cache in config.caches],
        c.CA_BUNDLE_SECRET if server_certs else None)
    rendered = render_shoot(config, credentials, server_certs, options, node_auth, peers)
    schemes = {cache.upstream: scheme(cache) for cache in config.caches}
    replicas = {upstream: [endpoint(schemes[upstream], ip) for ip in ips] for upstream, ips in (peers or {}).items()}
    return Plan(rendered.objects, render_node_config(status, ca_bundle, options, node_auth or {}, replicas), status)


def delivered_caches(config: RegistryConfig, statefulsets: Mapping[str, dict[str, Any]],
                     secrets: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Pure: what was delivered before for the caches of ``config`` that are there already, read back from their
    StatefulSets (volume size and class of the claim template) and config Secrets (distribution's
    ``proxy.ttl``), as RegistryConfig caches. A cache whose objects cannot be read back (not there, or from an
    older version) is left out."""
    caches: list[dict[str, Any]] = []
    for cache in config.caches:
        sts = statefulsets.get(names.resource_name(cache.upstream))
        if sts is None:
            continue
        spec = sts.get("spec") or {}
        claim = ((spec.get("volumeClaimTemplates") or [{}])[0].get("spec")) or {}
        raw: dict[str, Any] = {"upstream": cache.upstream, "volume": {}}
        size = ((claim.get("resources") or {}).get("requests") or {}).get("storage")
        if size is not None:
            raw["volume"]["size"] = size
        if claim.get("storageClassName") is not None:
            raw["volume"]["storageClassName"] = claim["storageClassName"]
        volumes = ((spec.get("template") or {}).get("spec") or {}).get("volumes") or []
        secret_name = next((v.get("secret", {}).get("secretName") for v in volumes if v.get("name") == "config-volume"),
                           None)
        try:
            text = base64.b64decode(((secrets.get(secret_name or "") or {}).get("data") or {}).get("config.yml", ""))
            ttl = ((yaml.safe_load(text) or {}).get("proxy") or {}).get("ttl")
        except (ValueError, yaml.YAMLError, AttributeError):
            ttl = None
        if isinstance(ttl, str):
            raw["garbageCollection"] = {"ttl": ttl}
        caches.append(raw)
    return caches


def delivered_config(config: RegistryConfig, statefulsets: Mapping[str, dict[str, Any]],
                     secrets: Mapping[str, dict[str, Any]]) -> RegistryConfig:
    """:func:`delivered_caches` as a RegistryConfig to check the update rules against."""
    return _as_config(delivered_caches(config, statefulsets, secrets))


def _as_config(caches: list[dict[str, Any]]) -> RegistryConfig:
    try:
        return decode_and_default({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3",
                                   "kind": "RegistryConfig", "caches": caches}, Path("delivered"))
    except ValidationFailed:  # objects changed by hand beyond reading: nothing to compare against
        return decode_and_default({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3",
                                   "kind": "RegistryConfig", "caches": []}, Path("delivered"))


UpdateCheck = Callable[[RegistryConfig, RegistryConfig], None]  # (delivered, new): raises when not allowed


def rendered_hash(obj: dict[str, Any]) -> str:
    """The hash of a rendered object (its rendered-hash annotation left out)."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != c.RENDERED_HASH_ANNOTATION}
    canonical = {**obj, "metadata": {**meta, "annotations": annotations}}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def with_hash(obj: dict[str, Any], digest: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}),
                                                          c.RENDERED_HASH_ANNOTATION: digest}}}


def as_delivered(live: Live | None, digest: str, recorded: tuple[str, str] | None) -> bool:
    """Whether an object is as delivered from the rendered object of hash ``digest``: it still has the version
    the last apply or check of this process left (``recorded``: hash, resourceVersion), or it carries that hash
    and no other field manager changed it."""
    if live is None:
        return False
    if recorded is not None and recorded == (digest, live.version):
        return True
    return live.rendered == digest and not live.foreign


@dataclass
class Delivery:
    """What a deploy found and left: enough to tell later, from memory, that nothing changed."""

    generation: int | None = None  # of the Extension
    provider_status: dict[str, Any] | None = None  # as written (wire form)
    seed_versions: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (kind, ns, name) -> rv read
    objects: dict[ObjectKey, tuple[str, str]] = field(default_factory=dict)  # -> (rendered hash, resourceVersion)
    statefulsets: frozenset[str] = frozenset()  # whose volume claims are kept
    caches: list[dict[str, Any]] = field(default_factory=list)  # what was delivered, for the update rules
    renew_at: dt.datetime | None = None  # the first certificate due for renewal
    hibernated: bool = False  # nothing was delivered: the shoot is hibernated
    # objects not this Extension's alone: the shoot's shared monitoring and node-auth Secret, (kind, name) -> (hash
    # of what this Extension applies, resourceVersion); under Gardener the monitoring in the seed namespace
    shared: dict[ObjectKey, tuple[str, str]] = field(default_factory=dict)
    seed_objects: dict[ObjectKey, tuple[str, str]] = field(default_factory=dict)


def _claims_kept(objects: Mapping[ObjectKey, Any], statefulsets: frozenset[str]) -> bool:
    return all(kind != "PersistentVolumeClaim" or claim_statefulset(name) in statefulsets for kind, name in objects)


class RegistryCaches:
    """The caches of the Extension in seed namespace ``owner``, delivered to ``shoot``.

    ``view`` is what is there (default: listed, once); ``store`` where the Secrets of the seed namespace are read
    (the seed cache; default: listed). ``served`` are the kinds of :data:`OPTIONAL_KINDS` the shoot serves,
    ``seed_served`` the monitoring kinds the seed serves; ``monitoring`` is :data:`MONITORING_GARDENER`,
    :data:`MONITORING_OPERATOR` or None (no monitoring objects at all)."""

    def __init__(self, seed: Kube, shoot: Kube, owner: str, options: RenderOptions,
                 checkpoint=lambda point: None, view: ShootView | None = None,
                 store: tls.SecretStore | None = None, served: Collection[str] = (), monitoring: str | None = None,
                 seed_served: Collection[str] = ()):
        self.seed, self.shoot, self.owner = seed, shoot, owner
        self.options = replace(options, owner=owner)
        self.served = frozenset(served)
        self.seed_served = frozenset(seed_served) | {"ConfigMap"}
        self.monitoring = monitoring
        kinds = PRUNED_KINDS + tuple(k for k in OPTIONAL_KINDS if k in self.served)
        self.view: ShootView = view or ListedView(shoot, self.options.namespace, kinds)
        self.view.watch(kinds)
        self.store = store
        self.on_write: Callable[[dict[str, Any]], None] = lambda written: None  # each object written to the shoot
        self._checkpoint = checkpoint  # a test seam: called with "after-services", "after-apply"

    # --- is everything as delivered? -------------------------------------------------------------------
    def unchanged(self, record: Delivery) -> bool:
        """From memory (and the view): every object this Extension delivered still has the version ``record``
        left it with, nothing else of it is there, and no certificate is due. (Inputs are the caller's.) The
        monitoring in the seed namespace (Gardener) is not watched: its metadata is read."""
        if record.renew_at is None or record.renew_at <= dt.datetime.now(dt.UTC):
            return False
        ours = self.view.objects(self.owner)
        for key, (_digest, version) in record.objects.items():
            live = ours.get(key)
            if live is None or live.version != version:
                return False
        for key, (_digest, version) in record.shared.items():
            live = self.view.live(*key)
            if live is None or live.version != version:
                return False
        for (kind, name), (_digest, version) in record.seed_objects.items():
            meta = self._seed_metadata(kind, name)
            if meta is None or meta.version != version:
                return False
        extra = {k: v for k, v in ours.items() if k not in record.objects}
        return _claims_kept(extra, record.statefulsets)

    def _seed_metadata(self, kind: str, name: str) -> Live | None:
        obj = self.seed.get(kind, name, self.owner, metadata_only=True)
        return live_record(obj) if obj is not None else None

    # --- deploy ----------------------------------------------------------------------------------------
    def deploy(self, config: RegistryConfig, credentials: Mapping[str, UpstreamAuth],
               check_update: UpdateCheck | None = None, record: Delivery | None = None,
               dry_run: bool = False, monitor: bool = True) -> tuple[RegistryStatus, Delivery]:
        """Deliver the caches; ``monitor``: also their monitoring (Gardener's ``MonitoringEnabled``).
        ``check_update(delivered, config)`` may refuse the change against what was delivered before (the update
        rules, where no admission webhook enforced them). ``record``: the last delivery of this process.
        Returns the status and the new record."""
        options = self.options
        ours = self.view.objects(self.owner)
        recorded = record.objects if record is not None else {}
        out = Delivery()

        def write(kind: str, name: str) -> None:
            if dry_run:
                raise WouldWrite(f"{kind} {options.namespace}/{name}")

        services = [render_service(cache, options) for cache in config.caches]
        replicas = {cache.upstream: render_replica_services(cache, options) for cache in config.caches}
        taken = sorted(f"{kind} {options.namespace}/{name} (of {owner})"
                       for kind, name in [("Service", s.name) for s in services]
                       + [("Service", s.name) for rs in replicas.values() for s in rs]
                       + [("StatefulSet", names.resource_name(cache.upstream)) for cache in config.caches]
                       if (owner := self.view.owner_of(kind, name)) and owner != self.owner)
        if taken:  # several shoots delivered into one cluster: never take over another Extension's cache
            raise ConfigurationError("these objects belong to another Extension's registry caches in the same "
                                     "cluster: " + "; ".join(taken) + ". Use another upstream or "
                                     "serviceNameSuffix, or deliver the shoots to separate clusters")
        if check_update is not None and not dry_run:  # (a dry run looks at what the last operation accepted)
            check_update(_as_config(self._delivered_caches(config, ours, record)), config)

        # 1. Services first: the API server assigns the cluster IPs the certificates, endpoints and the replicas'
        #    fronts need.
        def cluster_ip(service: RenderedObject) -> str:
            key = ("Service", service.name)
            digest = rendered_hash(service.obj)
            live = ours.get(key)
            if as_delivered(live, digest, recorded.get(key)) and live is not None and live.cluster_ip:
                out.objects[key] = (digest, live.version)
                return live.cluster_ip
            write(*key)
            applied = self.shoot.apply(with_hash(service.obj, digest))
            self.on_write(applied)
            ip = (applied.get("spec") or {}).get("clusterIP")
            if not ip or ip == "None":
                raise ReconcileError(f"Service {applied['metadata']['name']} has no cluster IP yet")
            out.objects[key] = (digest, str(applied["metadata"].get("resourceVersion", "")))
            return str(ip)

        cluster_ips = {cache.upstream: cluster_ip(service) for cache, service in zip(config.caches, services)}
        peers = {upstream: [cluster_ip(s) for s in rs] for upstream, rs in replicas.items() if rs}
        self._checkpoint("after-services")

        # 2. TLS material, reused while it is valid for the Service's names and address.
        #    (the replicas' Services' addresses too: nodes try them after the cache's)
        addresses = {u: [ip, *peers.get(u, ())] for u, ip in cluster_ips.items()}
        requests = cert_requests(config, options.namespace, addresses)
        material = tls.ensure(self.seed, self.owner, requests, self.store, dry_run) if requests else None
        if material is None:
            tls.remove_all(self.seed, self.owner, self.store, dry_run)
        else:
            out.seed_versions = {("Secret", self.owner, n): v for n, v in material.versions.items()}
            out.renew_at = material.renew_at

        # 3. Node credentials (caches only nodes can read), reused while the seed holds them.
        node_auth = None
        if options.node_auth:
            node_auth, versions = nodeauth.ensure(self.seed, self.owner, [cache.upstream for cache in config.caches],
                                                  self.store, dry_run)
            out.seed_versions.update({("Secret", self.owner, n): v for n, v in versions.items()})

        # 4. Everything else, then prune what this Extension delivered before and no longer renders.
        endpoints = {cache.upstream: endpoint(scheme(cache), cluster_ips[cache.upstream]) for cache in config.caches}
        planned = plan(config, credentials, endpoints, material.server if material else {},
                       material.bundle if material else None, options, node_auth, peers)
        if node_auth is not None:  # nodes get the header before the caches require it
            self._node_auth(node_auth, record, out, dry_run)
        for obj in planned.delivered:
            if obj.kind == "Service":
                continue  # applied above
            key = (obj.kind, obj.name)
            digest = rendered_hash(obj.obj)
            live = ours.get(key)
            if as_delivered(live, digest, recorded.get(key)) or (obj.obj.get("immutable") and live is not None):
                # (content-hashed and immutable: the name says it is there as rendered)
                out.objects[key] = (digest, live.version if live is not None else "")
                continue
            write(*key)
            try:
                applied = self.shoot.apply(with_hash(obj.obj, digest))
            except ApiError as exc:
                if obj.kind != "StatefulSet" or exc.status != 422 or live is not None:
                    raise
                applied = self._take_over(with_hash(obj.obj, digest), exc)
            self.on_write(applied)
            out.objects[key] = (digest, str(applied["metadata"].get("resourceVersion", "")))
        self._checkpoint("after-apply")
        statefulsets = frozenset(names.resource_name(cache.upstream) for cache in config.caches)
        self._prune(ours, set(out.objects), statefulsets, dry_run)
        self._monitoring(monitor, record, out, dry_run)
        out.statefulsets = statefulsets
        out.caches = delivered_caches(config, {o.name: o.obj for o in planned.objects if o.kind == "StatefulSet"},
                                      {o.name: o.obj for o in planned.objects if o.kind == "Secret"})
        if out.renew_at is None:
            out.renew_at = dt.datetime.max.replace(tzinfo=dt.UTC)
        return planned.status, out

    def _take_over(self, sts: dict[str, Any], refused: ApiError) -> dict[str, Any]:
        """A StatefulSet of this name that no Extension's owner label claims refused the apply (422): another
        controller delivered it, Gardener's extension in a switch to this one. Its volume claim templates cannot
        change, so it is replaced: deleted with orphan propagation (its Pods keep running,
        its volume claims stay), its claims labelled as this Extension's, and this StatefulSet created, which
        adopts the Pods and rolls them onto the same claims: every cached blob is kept. Only a StatefulSet with
        the selector of this cache (the labels Gardener's extension gives it too) is replaced."""
        name, namespace = sts["metadata"]["name"], self.options.namespace
        found = self.shoot.get("StatefulSet", name, namespace)
        if found is None:
            raise refused
        owner = ((found.get("metadata") or {}).get("labels") or {}).get(c.OWNER_LABEL)
        if owner:  # this Extension's (the view is behind) or another's (refused above): not to be replaced
            raise refused
        if (found.get("spec") or {}).get("selector") != sts["spec"]["selector"]:
            raise ConfigurationError(f"StatefulSet {namespace}/{name} is there and is no registry cache (its selector "
                                     f"is not {json.dumps(sts['spec']['selector']['matchLabels'])}); it is left "
                                     f"alone: delete it, or use another upstream. {refused.message[:200]}")
        log.warning("%s: StatefulSet %s/%s was delivered by another controller (%s); replacing it, its Pods and "
                    "volume claims kept", self.owner, namespace, name, refused.message[:200])
        # the claims first: a stop after the delete finds the StatefulSet gone, and creates its own without this
        labels = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"]
        for claim in self.shoot.list("PersistentVolumeClaim", namespace):
            claim_name = claim["metadata"]["name"]
            if claim_name.startswith(f"{c.VOLUME_NAME}-") and claim_statefulset(claim_name) == name:
                self.shoot.patch("PersistentVolumeClaim", claim_name, {"metadata": {"labels": labels}}, namespace)
        uid = found["metadata"]["uid"]
        self.shoot.delete("StatefulSet", name, namespace, propagation="Orphan", uid=uid)
        deadline = time.monotonic() + STATEFULSET_GONE_TIMEOUT_SECONDS
        while (left := self.shoot.get("StatefulSet", name, namespace, metadata_only=True)) is not None \
                and left["metadata"]["uid"] == uid:
            if time.monotonic() >= deadline:
                raise ReconcileError(f"StatefulSet {namespace}/{name} of another controller is still being deleted "
                                     "(orphaning its Pods and volume claims); it is replaced once it is gone")
            time.sleep(STATEFULSET_GONE_POLL_SECONDS)
        return self.shoot.apply(sts)

    def _node_auth(self, credentials: Mapping[str, NodeCredentials], record: Delivery | None, out: Delivery,
                   dry_run: bool) -> None:
        """This Extension's keys of the shoot's node-auth Secret (shared by every Extension, a field manager
        each). Sent when the Secret is missing or this Extension's keys changed since the last delivery; when only
        the Secret's version moved (another Extension's keys), its keys are read and compared. After a restart an
        operation sends them once (which keys it dropped before cannot be known); a dry run compares."""
        headers = {nodeauth.shoot_key(u): creds.authorization for u, creds in credentials.items()}
        digest = hashlib.sha256(json.dumps(headers, sort_keys=True).encode()).hexdigest()[:20]
        key = ("Secret", c.NODE_AUTH_SHOOT_SECRET)
        live = self.view.live(*key)
        recorded = record.shared.get(key) if record is not None else None
        if live is not None and recorded == (digest, live.version):
            out.shared[key] = recorded
            return
        changed = recorded is not None and recorded[0] != digest
        if live is not None and not changed and (recorded is not None or dry_run):
            current = self.shoot.get("Secret", c.NODE_AUTH_SHOOT_SECRET, self.options.namespace) or {}
            data = current.get("data") or {}
            if all(data.get(k) == base64.b64encode(v.encode()).decode() for k, v in headers.items()):
                out.shared[key] = (digest, str((current.get("metadata") or {}).get("resourceVersion", "")))
                return
        if dry_run:
            raise WouldWrite(f"Secret {self.options.namespace}/{c.NODE_AUTH_SHOOT_SECRET}")
        written = nodeauth.deliver(self.shoot, self.options.namespace, self.owner, credentials)
        self.on_write(written)
        out.shared[key] = (digest, str(written["metadata"].get("resourceVersion", "")))

    def _monitoring(self, wanted: bool, record: Delivery | None, out: Delivery, dry_run: bool) -> None:
        """Under Gardener the monitoring objects of this shoot live in its seed namespace. Standalone they are
        shared by every Extension delivering into the same namespace of the shoot (their expressions and
        selectors cover all caches there): applied by each that wants them (the same objects: sent only when
        not as delivered), removed with the last cache."""
        if self.monitoring == MONITORING_GARDENER:
            for obj in monitoring.gardener_objects(self.owner):
                kind, name = obj["kind"], obj["metadata"]["name"]
                if kind not in self.seed_served:
                    log.warning("%s: the seed serves no %s: not delivered", self.owner, kind)
                    continue
                live = self._seed_metadata(kind, name)
                if wanted:
                    digest = rendered_hash(obj)
                    recorded = record.seed_objects.get((kind, name)) if record is not None else None
                    if as_delivered(live, digest, recorded) and live is not None:
                        out.seed_objects[(kind, name)] = (digest, live.version)
                        continue
                    if dry_run:
                        raise WouldWrite(f"{kind} {self.owner}/{name}")
                    applied = self.seed.apply(with_hash(obj, digest))
                    out.seed_objects[(kind, name)] = (digest, str(applied["metadata"].get("resourceVersion", "")))
                elif live is not None:
                    if dry_run:
                        raise WouldWrite(f"{kind} {self.owner}/{name} (to delete)")
                    self.seed.delete(kind, name, self.owner)
        elif self.monitoring == MONITORING_OPERATOR:
            labels = {c.MANAGED_BY_LABEL: c.MANAGED_BY, c.APP_NAME_LABEL: c.APP_NAME}
            others = self.view.others_have("StatefulSet", self.owner)
            for obj in monitoring.operator_objects(self.options.namespace, labels, set(self.served)):
                key = (obj["kind"], obj["metadata"]["name"])
                live = self.view.live(*key)
                if wanted:
                    digest = rendered_hash(obj)
                    recorded = record.shared.get(key) if record is not None else None
                    if as_delivered(live, digest, recorded) and live is not None:
                        out.shared[key] = (digest, live.version)
                        continue
                    if dry_run:
                        raise WouldWrite(f"{key[0]} {self.options.namespace}/{key[1]}")
                    applied = self.shoot.apply(with_hash(obj, digest))
                    self.on_write(applied)
                    out.shared[key] = (digest, str(applied["metadata"].get("resourceVersion", "")))
                elif not others and live is not None:
                    if dry_run:
                        raise WouldWrite(f"{key[0]} {self.options.namespace}/{key[1]} (to delete)")
                    self.shoot.delete(key[0], key[1], self.options.namespace)

    def _delivered_caches(self, config: RegistryConfig, ours: Mapping[ObjectKey, Live],
                          record: Delivery | None) -> list[dict[str, Any]]:
        """What was delivered, for the update rules: from the record while the StatefulSets are as it left
        them, else read back from them and their config Secrets."""
        wanted = [("StatefulSet", names.resource_name(cache.upstream)) for cache in config.caches]
        present = [key for key in wanted if key in ours]
        if not present:
            return []
        if record is not None and all(record.objects.get(k, ("", ""))[1] == ours[k].version for k in present):
            by_upstream = {raw["upstream"]: raw for raw in record.caches}
            return [by_upstream[c.upstream] for c in config.caches if c.upstream in by_upstream
                    and ("StatefulSet", names.resource_name(c.upstream)) in ours]
        statefulsets = {name: obj for _, name in present
                        if (obj := self.shoot.get("StatefulSet", name, self.options.namespace)) is not None}
        secret_names = {v.get("secret", {}).get("secretName") for sts in statefulsets.values()
                        for v in _pod_spec(sts).get("volumes") or [] if v.get("name") == "config-volume"}
        secrets = {name: obj for name in secret_names if name
                   and (obj := self.shoot.get("Secret", name, self.options.namespace)) is not None}
        return delivered_caches(config, statefulsets, secrets)

    def destroy(self) -> None:
        """Remove everything this Extension delivered to the shoot, its volumes included, its TLS Secrets and
        its monitoring."""
        self._prune(self.view.objects(self.owner), set(), frozenset(), dry_run=False)
        tls.remove_all(self.seed, self.owner, self.store)
        if nodeauth.remove_all(self.seed, self.owner, self.store) or self.options.node_auth:  # it was on once
            nodeauth.withdraw(self.shoot, self.options.namespace, self.owner)
        self._monitoring(False, None, Delivery(), dry_run=False)

    def _prune(self, ours: Mapping[ObjectKey, Live], keep: set[ObjectKey], statefulsets: frozenset[str],
               dry_run: bool) -> None:
        """Delete what this Extension delivered and no longer renders (``keep``), and the volume claims of the
        caches that are gone (not in ``statefulsets``): those only once their StatefulSet is gone. A claim
        deleted while its StatefulSet is still there stays Terminating under the StatefulSet controller ("pvc
        is being deleted"), which makes a new claim of the same name, and so a new volume, for a Pod it still
        starts; the StatefulSet is deleted with background propagation (its Pods go after it, the claims'
        protection finalizer keeps each claim until its Pod is gone)."""
        namespace = self.options.namespace
        gone = sorted(set(ours) - keep)
        claims = [name for kind, name in gone
                  if kind == "PersistentVolumeClaim" and claim_statefulset(name) not in statefulsets]
        for kind, name in gone:
            if kind == "PersistentVolumeClaim":
                continue
            if dry_run:
                raise WouldWrite(f"{kind} {namespace}/{name} (to delete)")
            log.info("pruning %s %s/%s", kind, namespace, name)
            self.shoot.delete(kind, name, namespace)
        if not claims:
            return
        if dry_run:
            raise WouldWrite(f"PersistentVolumeClaim {namespace}/{claims[0]} (to delete)")
        self._wait_statefulsets_gone({claim_statefulset(name) for name in claims})
        for name in claims:
            log.info("deleting volume %s/%s of a removed cache", namespace, name)
            self.shoot.delete("PersistentVolumeClaim", name, namespace)

    def _wait_statefulsets_gone(self, statefulsets: set[str]) -> None:
        """Until none of these StatefulSets is left (deleted with background propagation they go at once; one
        that a finalizer holds keeps its claims until a later reconcile: the retry)."""
        deadline = time.monotonic() + STATEFULSET_GONE_TIMEOUT_SECONDS
        while True:
            left = sorted(statefulsets & {s["metadata"]["name"] for s in self.shoot.list(
                "StatefulSet", self.options.namespace, label_selector=f"{c.OWNER_LABEL}={self.owner}")})
            if not left:
                return
            if time.monotonic() >= deadline:
                raise ReconcileError(f"StatefulSet {', '.join(left)} in {self.options.namespace} is still being "
                                     "deleted; its volume claims are deleted once it is gone")
            time.sleep(STATEFULSET_GONE_POLL_SECONDS)


def _pod_spec(sts: dict[str, Any]) -> dict[str, Any]:
    return ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}


def claim_statefulset(claim: str) -> str:
    """The StatefulSet of a volume claim made from the claim template: ``<volume>-<statefulset>-<ordinal>``."""
    return claim[len(c.VOLUME_NAME) + 1:].rsplit("-", 1)[0]
