"""The actuator: what Reconcile, Delete, Migrate and Restore of a ``registry-cache`` Extension do.

Order as in the Go extension: read the Cluster (skip a hibernated shoot), decode and validate the
providerConfig, resolve credentials through ``spec.resources`` to the ``ref-`` Secrets, deliver the Services
first (their cluster IPs go into the certificates and the endpoints), make or reuse the TLS material, deliver
everything else by server-side apply, prune what is no longer rendered, and return the ``RegistryStatus``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from api import names, shoot as shootlib
from api.field import Path, ValidationFailed
from api.secrets import secret_from_manifest
from api.v1alpha3 import RegistryConfig, RegistryStatus
from api.validation import decode_and_default, remote_url, tls_enabled, validate_registry_config

from extension.component import tls

from extension.component import certs
from extension.kube import Kube
from extension.component.render import (MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, RenderOptions, endpoint, provider_status,
                     render_node_config, render_service, render_shoot)
from extension.resolve import REFERENCED_RESOURCE_PREFIX, resolve_credentials

log = logging.getLogger(__name__)

PRUNED_KINDS = ("StatefulSet", "Secret", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap")
PROVIDER_CONFIG_PATH = Path("spec", "providerConfig")


class ReconcileError(Exception):
    """A failure to report on the Extension: ``codes`` are Gardener error codes."""

    def __init__(self, message: str, codes: list[str] | None = None):
        super().__init__(message)
        self.codes = codes or []


class ConfigurationError(ReconcileError):
    def __init__(self, message: str):
        super().__init__(message, ["ERR_CONFIGURATION_PROBLEM"])


@dataclass
class Settings:
    image: str
    shoot_namespace: str = "kube-system"
    vpa: bool = False


ShootTarget = Callable[[str], Kube]  # seed namespace -> client of that shoot's API server


class Actuator:
    def __init__(self, seed: Kube, shoot_target: ShootTarget, settings: Settings,
                 fault: Callable[[str], None] | None = None):
        self.seed = seed
        self.shoot_target = shoot_target
        self.settings = settings
        self._fault = fault or (lambda point: None)
        self._vpa_served: dict[int, bool] = {}

    # --- helpers --------------------------------------------------------------------------------------
    def _options(self, namespace: str, shoot: Kube) -> RenderOptions:
        vpa = self.settings.vpa
        if vpa:
            key = id(shoot)
            if key not in self._vpa_served:
                self._vpa_served[key] = shoot.has_kind("VerticalPodAutoscaler")
            vpa = self._vpa_served[key]
        return RenderOptions(image=self.settings.image, namespace=self.settings.shoot_namespace, vpa=vpa,
                             owner=namespace)

    def cluster_shoot(self, namespace: str) -> dict[str, Any]:
        cluster = self.seed.get("Cluster", namespace)
        if cluster is None:
            raise ReconcileError(f"Cluster {namespace} not found: gardenlet (or the standalone bridge) creates it "
                                 "for every shoot namespace")
        shoot = (cluster.get("spec") or {}).get("shoot")
        if not isinstance(shoot, dict):
            raise ReconcileError(f"Cluster {namespace} has no spec.shoot")
        return shoot

    def decode(self, extension: dict[str, Any]) -> RegistryConfig:
        raw = (extension.get("spec") or {}).get("providerConfig")
        if raw is None:
            raise ConfigurationError("spec.providerConfig: Required value: providerConfig is required for the "
                                     "registry-cache extension")
        try:
            config = decode_and_default(raw, PROVIDER_CONFIG_PATH)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        errors = validate_registry_config(config, PROVIDER_CONFIG_PATH)
        if errors:
            raise ConfigurationError("; ".join(str(e) for e in errors))
        return config

    def _get_secret(self, namespace: str, name: str):
        obj = self.seed.get("Secret", name, namespace)
        return secret_from_manifest(obj) if obj else None

    # --- operations -----------------------------------------------------------------------------------
    def reconcile(self, extension: dict[str, Any]) -> RegistryStatus | None:
        """Deliver the caches; None when the shoot is hibernated (nothing done)."""
        namespace = extension["metadata"]["namespace"]
        shoot_spec = self.cluster_shoot(namespace)
        if shootlib.is_hibernated(shoot_spec):
            log.info("%s: shoot is hibernated, nothing to do", namespace)
            return None
        config = self.decode(extension)
        try:
            credentials = resolve_credentials(shoot_spec, config, self._get_secret, namespace,
                                              PROVIDER_CONFIG_PATH, name_prefix=REFERENCED_RESOURCE_PREFIX)
        except ValidationFailed as exc:
            raise ConfigurationError(str(exc)) from None
        shoot = self.shoot_target(namespace)
        options = self._options(namespace, shoot)
        delivered, foreign = self._delivered(shoot, options)
        services = [render_service(cache, options) for cache in config.caches]
        taken = sorted(f"{kind} {options.namespace}/{name} (of {foreign[(kind, name)]})"
                       for kind, name in [("Service", s.name) for s in services]
                       + [("StatefulSet", names.resource_name(c.upstream)) for c in config.caches]
                       if (kind, name) in foreign)
        if taken:  # several shoots delivered into one cluster: never take over another Extension's cache
            raise ConfigurationError("these objects belong to another Extension's registry caches in the same "
                                     "cluster: " + "; ".join(taken) + ". Use another upstream or "
                                     "serviceNameSuffix, or deliver the shoots to separate clusters")

        # 1. Services first: the API server assigns the cluster IPs the certificates and endpoints need.
        cluster_ips: dict[str, str] = {}
        for cache, service in zip(config.caches, services):
            applied = shoot.apply(service.obj)
            cluster_ip = (applied.get("spec") or {}).get("clusterIP")
            if not cluster_ip or cluster_ip == "None":
                raise ReconcileError(f"Service {applied['metadata']['name']} has no cluster IP yet")
            cluster_ips[cache.upstream] = cluster_ip
        self._fault("after-services")

        # 2. TLS material, reused while it is valid for the Service's names and address.
        requests = []
        for cache in config.caches:
            if tls_enabled(cache):
                service = names.service_name(cache.upstream, cache.service_name_suffix)
                requests.append(tls.ServerCertRequest(
                    cache.upstream, f"{names.resource_name(cache.upstream)}-tls",
                    f"{names.resource_name(cache.upstream)}-tls",
                    certs.service_dns_names(service, options.namespace), [cluster_ips[cache.upstream]]))
        material = tls.ensure(self.seed, namespace, requests) if requests else None
        if material is None:
            tls.remove_all(self.seed, namespace)

        # 3. Everything else, then prune what this Extension delivered before and no longer renders.
        status = provider_status(
            [(c.upstream, endpoint("https" if tls_enabled(c) else "http", cluster_ips[c.upstream]), remote_url(c))
             for c in config.caches],
            material.bundle_secret_name if material else None)
        rendered = render_shoot(config, credentials, material.server if material else {}, options)
        rendered.objects.append(render_node_config(status, material.bundle if material else None, options))
        for obj in rendered.objects:
            if obj.kind == "Service":
                continue  # applied above
            if obj.obj.get("immutable") and (obj.kind, obj.name) in delivered:
                continue  # content-hashed and immutable: the name says it is there as rendered
            shoot.apply(obj.obj)
        self._fault("after-apply")
        self._prune(shoot, options, delivered, {(o.kind, o.name) for o in rendered.objects},
                    {names.resource_name(c.upstream) for c in config.caches})
        return status

    def _delivered(self, shoot: Kube, options: RenderOptions) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
        """(kind, name) of everything this Extension delivered to the shoot, and of what other Extensions
        delivered there (-> their owner), one LIST per kind; volumes (made by the StatefulSet controller from
        the claim template) are matched by the owner label only."""
        kinds = PRUNED_KINDS + (("VerticalPodAutoscaler",) if options.vpa else ())
        ours: set[tuple[str, str]] = set()
        foreign: dict[tuple[str, str], str] = {}
        for kind in kinds:
            for obj in shoot.list(kind, options.namespace, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"):
                owner = (obj["metadata"].get("labels") or {}).get(OWNER_LABEL)
                key = (kind, obj["metadata"]["name"])
                if owner == options.owner:
                    ours.add(key)
                elif owner:
                    foreign[key] = owner
        ours |= {("PersistentVolumeClaim", o["metadata"]["name"]) for o in shoot.list(
            "PersistentVolumeClaim", options.namespace, label_selector=f"{OWNER_LABEL}={options.owner}")}
        return ours, foreign

    def _prune(self, shoot: Kube, options: RenderOptions, delivered: set[tuple[str, str]],
               keep: set[tuple[str, str]], statefulsets: set[str]) -> None:
        for kind, name in sorted(delivered - keep):
            if kind == "PersistentVolumeClaim":
                owner_sts = name[len("cache-volume-"):].rsplit("-", 1)[0]  # cache-volume-<statefulset>-<ordinal>
                if owner_sts in statefulsets:
                    continue
                log.info("deleting volume %s/%s of a removed cache", options.namespace, name)
            else:
                log.info("pruning %s %s/%s", kind, options.namespace, name)
            shoot.delete(kind, name, options.namespace)

    def delete(self, extension: dict[str, Any]) -> None:
        """Remove everything this Extension delivered to the shoot, its volumes included."""
        namespace = extension["metadata"]["namespace"]
        shoot = self.shoot_target(namespace)
        options = self._options(namespace, shoot)
        self._prune(shoot, options, self._delivered(shoot, options)[0], set(), set())
        tls.remove_all(self.seed, namespace)

    def migrate(self, extension: dict[str, Any]) -> None:
        """Keep the objects in the shoot: the control plane moves, the caches keep serving."""
        log.info("%s: migrate: keeping the caches in the shoot", extension["metadata"]["namespace"])

    def restore(self, extension: dict[str, Any]) -> RegistryStatus | None:
        return self.reconcile(extension)
