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
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml

from api import names
from api.field import Path, ValidationFailed
from api.secrets import Credentials
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
    render_service,
    render_shoot,
)
from extension.errors import ConfigurationError, ReconcileError
from extension.kube import Kube

log = logging.getLogger(__name__)

PRUNED_KINDS = ("StatefulSet", "Secret", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap")
# kinds a shoot may or may not serve (CRDs): listed for pruning only where they are served
OPTIONAL_KINDS = ("VerticalPodAutoscaler", "PrometheusRule", "PodMonitor")
MONITORING_GARDENER = "gardener"  # ScrapeConfig, PrometheusRule, dashboards in the seed namespace
MONITORING_OPERATOR = "operator"  # PrometheusRule and PodMonitor in the shoot, where served
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


def plan(config: RegistryConfig, credentials: Mapping[str, Credentials], endpoints: Mapping[str, str],
         server_certs: Mapping[str, KeyPair], ca_bundle: str | None, options: RenderOptions,
         node_auth: Mapping[str, NodeCredentials] | None = None) -> Plan:
    """Pure: the objects for the shoot and the provider status. ``endpoints`` is where nodes reach each
    cache (per upstream), ``server_certs`` the TLS key pair of each TLS cache, ``ca_bundle`` what nodes trust,
    ``node_auth`` the credentials of the caches only nodes may read."""
    status = provider_status(
        [(cache.upstream, endpoints[cache.upstream], remote_url(cache)) for cache in config.caches],
        c.CA_BUNDLE_SECRET if server_certs else None)
    rendered = render_shoot(config, credentials, server_certs, options, node_auth)
    return Plan(rendered.objects, render_node_config(status, ca_bundle, options, node_auth or {}), status)


def delivered_config(config: RegistryConfig, statefulsets: Mapping[str, dict[str, Any]],
                     secrets: Mapping[str, dict[str, Any]]) -> RegistryConfig:
    """Pure: what was delivered before for the caches of ``config`` that are there already, read back from their
    StatefulSets (volume size and class of the claim template) and config Secrets (distribution's
    ``proxy.ttl``), as a RegistryConfig to check the update rules against. A cache whose objects cannot be read
    back (not there, or from an older version) is left out."""
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
    try:
        return decode_and_default({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3",
                                   "kind": "RegistryConfig", "caches": caches}, Path("delivered"))
    except ValidationFailed:  # objects changed by hand beyond reading: nothing to compare against
        return decode_and_default({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3",
                                   "kind": "RegistryConfig", "caches": []}, Path("delivered"))


UpdateCheck = Callable[[RegistryConfig, RegistryConfig], None]  # (delivered, new): raises when not allowed


class RegistryCaches:
    """The caches of the Extension in seed namespace ``owner``, delivered to ``shoot``.

    ``served`` are the kinds of :data:`OPTIONAL_KINDS` the shoot serves, ``seed_served`` the monitoring kinds the
    seed serves; ``monitoring`` is :data:`MONITORING_GARDENER`, :data:`MONITORING_OPERATOR` or None (no
    monitoring objects at all)."""

    def __init__(self, seed: Kube, shoot: Kube, owner: str, options: RenderOptions,
                 checkpoint=lambda point: None, served: Collection[str] = (), monitoring: str | None = None,
                 seed_served: Collection[str] = ()):
        self.seed, self.shoot, self.owner = seed, shoot, owner
        self.options = replace(options, owner=owner)
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}  # what the last LIST found of ours, kind -> name
        self._checkpoint = checkpoint  # a test seam: called with "after-services", "after-apply"
        self.served = frozenset(served)
        self.seed_served = frozenset(seed_served) | {"ConfigMap"}
        self.monitoring = monitoring

    def deploy(self, config: RegistryConfig, credentials: Mapping[str, Credentials],
               check_update: UpdateCheck | None = None, monitor: bool = True) -> RegistryStatus:
        """Deliver the caches; ``monitor``: also their monitoring (Gardener's ``MonitoringEnabled``).
        ``check_update(delivered, config)`` may refuse the change against what was delivered before (the update
        rules, where no admission webhook enforced them)."""
        options = self.options
        delivered, foreign = self._delivered()
        if check_update is not None:
            check_update(delivered_config(config, self._objects.get("StatefulSet", {}),
                                          self._objects.get("Secret", {})), config)
        services = [render_service(cache, options) for cache in config.caches]
        taken = sorted(f"{kind} {options.namespace}/{name} (of {foreign[(kind, name)]})"
                       for kind, name in [("Service", s.name) for s in services]
                       + [("StatefulSet", names.resource_name(cache.upstream)) for cache in config.caches]
                       if (kind, name) in foreign)
        if taken:  # several shoots delivered into one cluster: never take over another Extension's cache
            raise ConfigurationError("these objects belong to another Extension's registry caches in the same "
                                     "cluster: " + "; ".join(taken) + ". Use another upstream or "
                                     "serviceNameSuffix, or deliver the shoots to separate clusters")

        # 1. Services first: the API server assigns the cluster IPs the certificates and endpoints need.
        cluster_ips: dict[str, str] = {}
        for cache, service in zip(config.caches, services):
            applied = self.shoot.apply(service.obj)
            cluster_ip = (applied.get("spec") or {}).get("clusterIP")
            if not cluster_ip or cluster_ip == "None":
                raise ReconcileError(f"Service {applied['metadata']['name']} has no cluster IP yet")
            cluster_ips[cache.upstream] = cluster_ip
        self._checkpoint("after-services")

        # 2. TLS material, reused while it is valid for the Service's names and address.
        requests = cert_requests(config, options.namespace, {u: [ip] for u, ip in cluster_ips.items()})
        material = tls.ensure(self.seed, self.owner, requests) if requests else None
        if material is None:
            tls.remove_all(self.seed, self.owner)

        # 3. Node credentials (caches only nodes can read), reused while the seed holds them.
        node_auth = (nodeauth.ensure(self.seed, self.owner, [cache.upstream for cache in config.caches])
                     if options.node_auth else None)

        # 4. Everything else, then prune what this Extension delivered before and no longer renders.
        endpoints = {cache.upstream: endpoint(scheme(cache), cluster_ips[cache.upstream]) for cache in config.caches}
        planned = plan(config, credentials, endpoints, material.server if material else {},
                       material.bundle if material else None, options, node_auth)
        if node_auth is not None:  # nodes get the header before the caches require it
            nodeauth.deliver(self.shoot, options.namespace, self.owner, node_auth)
        for obj in planned.delivered:
            if obj.kind == "Service":
                continue  # applied above
            if obj.obj.get("immutable") and (obj.kind, obj.name) in delivered:
                continue  # content-hashed and immutable: the name says it is there as rendered
            self.shoot.apply(obj.obj)
        self._checkpoint("after-apply")
        self._prune(delivered, {(o.kind, o.name) for o in planned.delivered},
                    {names.resource_name(cache.upstream) for cache in config.caches})
        self._monitoring(monitor, others=any(kind == "StatefulSet" for kind, _ in foreign))
        return planned.status

    def destroy(self) -> None:
        """Remove everything this Extension delivered to the shoot, its volumes included, its TLS Secrets and
        its monitoring."""
        delivered, foreign = self._delivered()
        self._prune(delivered, set(), set())
        tls.remove_all(self.seed, self.owner)
        if nodeauth.remove_all(self.seed, self.owner) or self.options.node_auth:  # it was on at some point
            nodeauth.withdraw(self.shoot, self.options.namespace, self.owner)
        self._monitoring(False, others=any(kind == "StatefulSet" for kind, _ in foreign))

    def _monitoring(self, wanted: bool, others: bool) -> None:
        """Under Gardener the monitoring objects of this shoot live in its seed namespace. Standalone they are
        shared by every Extension delivering into the same namespace of the shoot (their expressions and
        selectors cover all caches there): applied by each that wants them, removed with the last cache."""
        if self.monitoring == MONITORING_GARDENER:
            for obj in monitoring.gardener_objects(self.owner):
                if obj["kind"] not in self.seed_served:
                    log.warning("%s: the seed serves no %s: not delivered", self.owner, obj["kind"])
                elif wanted:
                    self.seed.apply(obj)
                else:
                    self.seed.delete(obj["kind"], obj["metadata"]["name"], self.owner)
        elif self.monitoring == MONITORING_OPERATOR:
            labels = {c.MANAGED_BY_LABEL: c.MANAGED_BY, c.APP_NAME_LABEL: c.APP_NAME}
            for obj in monitoring.operator_objects(self.options.namespace, labels, set(self.served)):
                if wanted:
                    self.shoot.apply(obj)
                elif not others:
                    self.shoot.delete(obj["kind"], obj["metadata"]["name"], self.options.namespace)

    def _delivered(self) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
        """(kind, name) of everything this Extension delivered to the shoot, and of what other Extensions
        delivered there (-> their owner), one LIST per kind; volumes (made by the StatefulSet controller from
        the claim template) are matched by the owner label only."""
        options = self.options
        kinds = PRUNED_KINDS + tuple(k for k in OPTIONAL_KINDS if k in self.served)
        ours: set[tuple[str, str]] = set()
        foreign: dict[tuple[str, str], str] = {}
        self._objects = {}
        for kind in kinds:
            for obj in self.shoot.list(kind, options.namespace, label_selector=f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY}"):
                owner = (obj["metadata"].get("labels") or {}).get(c.OWNER_LABEL)
                key = (kind, obj["metadata"]["name"])
                if owner == self.owner:
                    ours.add(key)
                    self._objects.setdefault(kind, {})[key[1]] = obj
                elif owner:
                    foreign[key] = owner
        ours |= {("PersistentVolumeClaim", o["metadata"]["name"]) for o in self.shoot.list(
            "PersistentVolumeClaim", options.namespace, label_selector=f"{c.OWNER_LABEL}={self.owner}")}
        return ours, foreign

    def _prune(self, delivered: set[tuple[str, str]], keep: set[tuple[str, str]], statefulsets: set[str]) -> None:
        """Delete what this Extension delivered and no longer renders (``keep``), and the volume claims of the
        caches that are gone (not in ``statefulsets``): those only once their StatefulSet is gone. A claim
        deleted while its StatefulSet is still there stays Terminating under the StatefulSet controller ("pvc
        is being deleted"), which makes a new claim of the same name, and so a new volume, for a Pod it still
        starts; the StatefulSet is deleted with background propagation (its Pods go after it, the claims'
        protection finalizer keeps each claim until its Pod is gone)."""
        namespace = self.options.namespace
        gone = delivered - keep
        claims = sorted(name for kind, name in gone
                        if kind == "PersistentVolumeClaim" and claim_statefulset(name) not in statefulsets)
        for kind, name in sorted(gone):
            if kind != "PersistentVolumeClaim":
                log.info("pruning %s %s/%s", kind, namespace, name)
                self.shoot.delete(kind, name, namespace)
        if not claims:
            return
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


def claim_statefulset(claim: str) -> str:
    """The StatefulSet of a volume claim made from the claim template: ``<volume>-<statefulset>-<ordinal>``."""
    return claim[len(c.VOLUME_NAME) + 1:].rsplit("-", 1)[0]
