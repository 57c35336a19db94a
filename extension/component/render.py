"""Rendering with Jinja: the cache workloads for the shoot and containerd's ``hosts.toml`` for the nodes.

Pure: takes a defaulted :class:`RegistryConfig`, the credentials and TLS material per upstream, returns
text and objects. Every user-supplied value passes through a quoting filter (see :mod:`.quoting`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jinja2
import yaml

from api import names
from api.secrets import Credentials
from api.v1alpha3 import RegistryCache, RegistryCacheStatus, RegistryConfig, RegistryStatus
from api.validation import gc_ttl_ns, ha_enabled, remote_url, tls_enabled
from api.duration import format_duration

from extension.component.certs import KeyPair
from extension.component.quoting import toml_array, toml_quote, yaml_quote

DEFAULT_IMAGE = "docker.io/library/registry:3.0.0"
SHOOT_NAMESPACE = "kube-system"
CERTS_DIR = "/etc/containerd/certs.d"
CA_BUNDLE_PATH = f"{CERTS_DIR}/ca-bundle.pem"
CAPABILITIES = ("pull", "resolve")
GC_REFERENCE_LABEL = "resources.gardener.cloud/garbage-collectable-reference"
HA_LABEL = "high-availability-config.resources.gardener.cloud/type"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "registry-cache"


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("extension.component", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_env.filters.update(yaml_quote=yaml_quote, toml_quote=toml_quote, toml_array=toml_array, b64=_b64)


def _render(template: str, **values: Any) -> str:
    return _env.get_template(template).render(**values)


OWNER_LABEL = "registry-cache.gardener.cloud/owner"


@dataclass(frozen=True)
class RenderOptions:
    image: str = DEFAULT_IMAGE
    namespace: str = SHOOT_NAMESPACE
    vpa: bool = False
    priority_class_name: str = "system-cluster-critical"
    # The seed namespace that owns the objects: labelled on each, so that pruning and deletion touch only
    # this Extension's objects even when several shoots share one cluster (standalone mode).
    owner: str | None = None

    def labels(self, upstream: str) -> dict[str, str]:
        out = {**names.labels(upstream), MANAGED_BY_LABEL: MANAGED_BY}
        if self.owner:
            out[OWNER_LABEL] = self.owner
        return out


@dataclass(frozen=True)
class RenderedObject:
    """One Kubernetes object: its YAML text as rendered and the parsed object."""

    text: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def filename(self) -> str:
        return f"{self.kind.lower()}-{self.name}.yaml"


@dataclass
class RenderedShoot:
    objects: list[RenderedObject] = field(default_factory=list)
    # per upstream: the Service name and the scheme its endpoint uses
    services: dict[str, str] = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o.obj for o in self.objects if o.kind == kind]


def secret_checksum(data: Mapping[str, str | bytes]) -> str:
    """``ComputeSecretChecksum``: sha256 of the JSON of the base64 data, keys sorted."""
    encoded = {k: _b64(v) for k, v in data.items()}
    return hashlib.sha256(json.dumps(encoded, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def unique_name(base: str, data: Mapping[str, str | bytes]) -> str:
    """``MakeUnique``: the name with the first 8 hex digits of the data's checksum."""
    return f"{base}-{secret_checksum(data)[:8]}"


def render_config_yml(cache: RegistryCache, credentials: Credentials | None = None) -> str:
    """distribution's ``config.yml`` for one cache."""
    return _render(
        "config.yml.j2",
        upstream=cache.upstream,
        server_port=names.SERVER_PORT,
        debug_port=names.DEBUG_PORT,
        tls=tls_enabled(cache),
        remote_url=remote_url(cache),
        ttl=format_duration(gc_ttl_ns(cache)),
        credentials=credentials,
    )


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~20x faster, same results


def _object(template: str, **values: Any) -> RenderedObject:
    text = _render(template, **values)
    return RenderedObject(text, yaml.load(text, Loader=_Loader))


def _secret(name: str, namespace: str, labels: dict[str, str], data: Mapping[str, str | bytes]) -> RenderedObject:
    return _object("secret.yaml.j2", name=name, namespace=namespace,
                   labels={**labels, GC_REFERENCE_LABEL: "true"}, data=data)


def render_cache(cache: RegistryCache, credentials: Credentials | None, tls: KeyPair | None,
                 options: RenderOptions = RenderOptions()) -> list[RenderedObject]:
    """The objects of one cache: config Secret, TLS Secret, StatefulSet, Service, PDB, VPA."""
    if tls_enabled(cache) and tls is None:
        raise ValueError(f"cache {cache.upstream}: TLS is on but no server certificate was given")
    name = names.resource_name(cache.upstream)
    labels = options.labels(cache.upstream)
    selector = names.labels(cache.upstream)
    ns = options.namespace
    common = dict(namespace=ns, server_port=names.SERVER_PORT, debug_port=names.DEBUG_PORT)

    config_data = {"config.yml": render_config_yml(cache, credentials)}
    config_secret = _secret(unique_name(f"{name}-config", config_data), ns, labels, config_data)
    objects = [config_secret]
    tls_secret_name = None
    if tls_enabled(cache):
        assert tls is not None
        tls_data = {"tls.crt": tls.cert_pem, "tls.key": tls.key_pem}
        tls_secret = _secret(unique_name(f"{name}-tls", tls_data), ns, labels, tls_data)
        tls_secret_name = tls_secret.name
        objects.append(tls_secret)

    env = []
    if cache.proxy is not None and cache.proxy.http_proxy is not None:
        env.append({"name": "HTTP_PROXY", "value": cache.proxy.http_proxy})
    if cache.proxy is not None and cache.proxy.https_proxy is not None:
        env.append({"name": "HTTPS_PROXY", "value": cache.proxy.https_proxy})
    ha = ha_enabled(cache)
    workload_labels = {**labels, HA_LABEL: "server"} if ha else labels
    objects.append(_object(
        "statefulset.yaml.j2", **common, name=name, selector=selector, workload_labels=workload_labels,
        pod_labels={**selector, "app.kubernetes.io/name": "registry-cache",
                    "networking.gardener.cloud/to-dns": "allowed",
                    "networking.gardener.cloud/to-public-networks": "allowed"},
        replicas=2 if ha else 1, high_availability=ha, image=options.image,
        priority_class_name=options.priority_class_name, env=env,
        config_secret_name=config_secret.name, tls_secret_name=tls_secret_name,
        size=cache.volume.size.canonical() if cache.volume and cache.volume.size else "10Gi",
        storage_class_name=cache.volume.storage_class_name if cache.volume else None,
        claim_labels={**selector, OWNER_LABEL: options.owner} if options.owner else selector,
    ))
    objects.append(render_service(cache, options))
    if ha:
        objects.append(_object("poddisruptionbudget.yaml.j2", namespace=ns, name=name, labels=labels,
                               selector=selector))
    if options.vpa:
        objects.append(_object("verticalpodautoscaler.yaml.j2", namespace=ns, name=name))
    return objects


def render_service(cache: RegistryCache, options: RenderOptions = RenderOptions()) -> RenderedObject:
    """The cache's Service; rendered first by the controller, whose cluster IP the certificate needs."""
    return _object(
        "service.yaml.j2", namespace=options.namespace, server_port=names.SERVER_PORT, debug_port=names.DEBUG_PORT,
        service_name=names.service_name(cache.upstream, cache.service_name_suffix),
        labels=options.labels(cache.upstream), selector=names.labels(cache.upstream), upstream=cache.upstream,
        remote_url=remote_url(cache), scheme="https" if tls_enabled(cache) else "http",
    )


def render_shoot(config: RegistryConfig, credentials: Mapping[str, Credentials] | None = None,
                 tls: Mapping[str, KeyPair] | None = None,
                 options: RenderOptions = RenderOptions()) -> RenderedShoot:
    """Everything delivered to the shoot for a defaulted config: the shared NetworkPolicy, then per cache
    its objects. ``credentials`` and ``tls`` are keyed by upstream."""
    credentials = credentials or {}
    tls = tls or {}
    out = RenderedShoot()
    out.objects.append(_object("networkpolicy.yaml.j2", namespace=options.namespace, owner=options.owner,
                               server_port=names.SERVER_PORT, debug_port=names.DEBUG_PORT))
    for cache in config.caches:
        out.objects += render_cache(cache, credentials.get(cache.upstream), tls.get(cache.upstream), options)
        out.services[cache.upstream] = names.service_name(cache.upstream, cache.service_name_suffix)
    return out


def endpoint(scheme: str, cluster_ip: str, port: int = names.SERVER_PORT) -> str:
    """``<scheme>://<clusterIP>:5000``, IPv6 addresses in brackets (``net.JoinHostPort``)."""
    host = cluster_ip
    try:
        if ipaddress.ip_address(cluster_ip).version == 6:
            host = f"[{cluster_ip}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"


def provider_status(caches: Iterable[tuple[str, str, str]], ca_secret_name: str | None) -> RegistryStatus:
    """``RegistryStatus`` from (upstream, endpoint, remoteURL) per cache."""
    return RegistryStatus(
        caches=[RegistryCacheStatus(upstream=u, endpoint=e, remote_url=r) for u, e, r in caches],
        ca_secret_name=ca_secret_name,
    )


def render_hosts_toml(upstream: str, server: str, host_url: str, ca_path: str | None = CA_BUNDLE_PATH,
                      note: str | None = None) -> str:
    """containerd's ``hosts.toml`` for one upstream: try the cache, fall back to ``server``.

    The CA is only referenced for an https endpoint, as Gardener does.
    """
    if note is not None and ("\n" in note or "\r" in note):
        raise ValueError("a hosts.toml note must be a single line")
    return _render(
        "hosts.toml.j2",
        upstream=upstream,
        server=server,
        endpoint=host_url,
        capabilities=list(CAPABILITIES),
        ca_path=ca_path if host_url.startswith("https://") else None,
        endpoint_note=note,
    )


NODE_CONFIG_NAME = "registry-cache-node-config"
NODE_CONFIG_LABEL = "registry-cache.gardener.cloud/node-config"


def containerd_registries(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH) -> list[dict[str, Any]]:
    """Gardener's OperatingSystemConfig ``criConfig.containerd.registries`` entries for a status: try the cache
    (its CA for an https endpoint), fall back to the remote URL; nodes wait until the cache answers."""
    return [{"upstream": c.upstream, "server": c.remote_url,
             "hosts": [{"url": c.endpoint, "capabilities": list(CAPABILITIES),
                        **({"caCerts": [ca_path]} if ca_path and c.endpoint.startswith("https://") else {})}],
             "readinessProbe": True} for c in status.caches]


def render_node_config(status: RegistryStatus, ca_bundle: str | None,
                       options: RenderOptions = RenderOptions()) -> RenderedObject:
    """The ConfigMap the node agent reads: the registry entries and the CA bundle nodes trust."""
    name = NODE_CONFIG_NAME
    if options.owner:
        name += "-" + hashlib.sha256(options.owner.encode()).hexdigest()[:8]
    registries = yaml.safe_dump({"registries": containerd_registries(status)}, sort_keys=False, allow_unicode=False)
    return _object("node-config.yaml.j2", name=name, namespace=options.namespace, owner=options.owner,
                   registries_yaml=registries, ca_bundle=ca_bundle)


def hosts_toml_for_entry(entry: Mapping[str, Any]) -> str:
    """``hosts.toml`` for one containerd registry entry (see :func:`containerd_registries`)."""
    host = entry["hosts"][0]
    ca = (host.get("caCerts") or [None])[0]
    return render_hosts_toml(entry["upstream"], entry["server"], host["url"], ca)


def hosts_toml_for_status(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH) -> dict[str, str]:
    """Per upstream, the ``hosts.toml`` that points containerd at the cache the status reports."""
    return {e["upstream"]: hosts_toml_for_entry(e) for e in containerd_registries(status, ca_path)}
