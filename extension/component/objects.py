"""The Kubernetes objects of the caches, rendered with Jinja from a defaulted :class:`RegistryConfig`.

Pure: takes the config, the credentials and TLS material per upstream, returns text and objects: per cache
a config Secret (distribution's ``config.yml``, content-hashed name), a TLS Secret, a StatefulSet with its
volume claim, a Service, with HA a PodDisruptionBudget, optionally a VerticalPodAutoscaler; one
NetworkPolicy; and the ConfigMap the node agent reads in standalone mode.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from api import names
from api.credential_provider import CredentialProvider
from api.credentials import UpstreamAuth
from api.duration import format_duration
from api.mirror_v1alpha1 import MirrorConfig
from api.secrets import Credentials
from api.v1alpha3 import RegistryCache, RegistryCacheStatus, RegistryConfig, RegistryStatus
from api.validation import gc_ttl_ns, ha_enabled, remote_url, tls_enabled
from extension import constants as c
from extension.component.certs import KeyPair
from extension.component.containerd import containerd_registries, mirror_files, mirror_registries
from extension.component.nodeauth import NodeCredentials, shoot_key
from extension.component.templating import parse_yaml, render


@dataclass(frozen=True)
class RenderOptions:
    image: str = c.DEFAULT_IMAGE
    namespace: str = c.SHOOT_NAMESPACE
    vpa: bool = False
    priority_class_name: str = "system-cluster-critical"
    # The seed namespace that owns the objects: labelled on each, so that pruning and deletion touch only
    # this Extension's objects even when several shoots share one cluster (standalone mode).
    owner: str | None = None
    # containerd's dial_timeout per cache host in the node agent's hosts.toml (None: containerd's default)
    dial_timeout: str | None = c.DEFAULT_DIAL_TIMEOUT
    # caches only nodes can read (standalone): generated credentials per cache, see component/nodeauth.py
    node_auth: bool = False
    # the image of the coalescing front (extension/front, the product's own image); None: distribution alone
    # serves the cache's port, as Gardener's
    front_image: str | None = None

    def labels(self, upstream: str) -> dict[str, str]:
        out = {**names.labels(upstream), c.MANAGED_BY_LABEL: c.MANAGED_BY}
        if self.owner:
            out[c.OWNER_LABEL] = self.owner
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

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o.obj for o in self.objects if o.kind == kind]


def secret_checksum(data: Mapping[str, str | bytes]) -> str:
    """Gardener's ``ComputeSecretChecksum`` (pkg/utils, v1.147): the sha256 of the concatenated sha256 hex digests
    of the values, keys sorted. Checked against Gardener's own names by tests/integration/test_gardener_rendering.py
    (this function hashed the JSON of the base64 data before: no name of Gardener's matched)."""
    digests = "".join(hashlib.sha256(v.encode() if isinstance(v, str) else v).hexdigest()
                      for _, v in sorted(data.items()))
    return hashlib.sha256(digests.encode()).hexdigest()


def unique_name(base: str, data: Mapping[str, str | bytes]) -> str:
    """``MakeUnique``: the name with the first 8 hex digits of the data's checksum."""
    return f"{base}-{secret_checksum(data)[:8]}"


def render_config_yml(cache: RegistryCache, node_auth: bool = False, front: bool = False,
                      provider: bool = False) -> str:
    """distribution's ``config.yml`` for one cache (no credentials: :func:`config_files`); ``node_auth``: clients
    must authenticate with the htpasswd file next to it (:mod:`.nodeauth`); ``front``: behind the coalescing
    front, on the Pod's loopback without TLS (the front serves the cache's port and its TLS); ``provider``: the
    credentials come from a credential provider plugin, and distribution asks its helper again every few seconds."""
    return render(
        "config.yml.j2",
        upstream=cache.upstream,
        server_port=c.SERVER_PORT,
        debug_port=c.DEBUG_PORT,
        backend_port=c.BACKEND_PORT if front else None,
        tls=tls_enabled(cache),
        remote_url=remote_url(cache),
        ttl=format_duration(gc_ttl_ns(cache)),
        htpasswd_path=c.HTPASSWD_PATH if node_auth else None,
        exec_lifetime=f"{c.CREDENTIAL_PROVIDER_LIFETIME_SECONDS}s" if provider else None,
        drain_seconds=c.DRAIN_SECONDS,
    )


def front_args(cache: RegistryCache, peers: Sequence[str] = ()) -> list[str]:
    """The coalescing front's arguments (after :data:`~extension.constants.FRONT_COMMAND`) in a cache Pod;
    ``peers``: the cluster IPs of the replicas' Services by ordinal (high availability)."""
    args = [f"--listen=:{c.SERVER_PORT}", f"--backend=127.0.0.1:{c.BACKEND_PORT}", f"--spool-dir={c.CACHE_PATH}",
            f"--shutdown-delay={c.FRONT_SHUTDOWN_DELAY_SECONDS}", f"--drain={c.DRAIN_SECONDS}"]
    if tls_enabled(cache):
        args += [f"--tls-cert={c.FRONT_CERTS_PATH}/tls.crt", f"--tls-key={c.FRONT_CERTS_PATH}/tls.key"]
    if peers:
        args.append("--peers=" + ",".join(host_port(ip) for ip in peers))
    return args


def replica_service_name(name: str, ordinal: int) -> str:
    """The Service of one replica of the cache ``name`` (a StatefulSet): ``<name>-replica-<n>``, shortened with a
    hash of the name where that is longer than a Service name may be (63)."""
    suffix = f"-replica-{ordinal}"
    if len(name) + len(suffix) <= 63:
        return name + suffix
    return f"{name[:63 - len(suffix) - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}{suffix}"


def render_replica_services(cache: RegistryCache, options: RenderOptions = RenderOptions()) -> list[RenderedObject]:
    """A Service per replica of a cache with high availability behind the front, selecting that one Pod: where
    the other replica's front fetches the blobs this one owns (``--peers``). None for any other cache."""
    if options.front_image is None or not ha_enabled(cache):
        return []
    name = names.resource_name(cache.upstream)
    return [_object("replica-service.yaml.j2", namespace=options.namespace, name=replica_service_name(name, n),
                    labels={**options.labels(cache.upstream), c.REPLICA_LABEL: str(n)},
                    selector={**names.labels(cache.upstream), c.POD_NAME_LABEL: f"{name}-{n}"},
                    server_port=c.SERVER_PORT)
            for n in range(c.HA_REPLICAS)]


def render_credential_helper() -> str:
    """The credential helper every cache names in ``proxy.exec`` (the docker-credential-helpers protocol)."""
    return render("credential-helper.sh.j2")


def render_upstream_credentials(credentials: Credentials) -> str:
    """What the credential helper answers with: one line of JSON (``json.dumps`` escapes every control
    character), ASCII only."""
    return json.dumps({"Username": credentials.username, "Secret": credentials.password}) + "\n"


def render_provider_helper(upstream: str, provider: CredentialProvider,
                           timeout: int = c.CREDENTIAL_PROVIDER_TIMEOUT_SECONDS) -> str:
    """The credential helper of a cache whose credentials come from a credential provider plugin: it runs the
    plugin (at most ``timeout`` seconds), keeps its answer for the cacheDuration and renews it before
    (``credential-provider-helper.sh.j2``)."""
    return render("credential-provider-helper.sh.j2", upstream=upstream, provider=provider,
                  lifetime=c.CREDENTIAL_PROVIDER_LIFETIME_SECONDS, timeout=timeout,
                  heartbeat=c.CREDENTIAL_PROVIDER_HEARTBEAT_SECONDS)


def render_provider_config(provider: CredentialProvider) -> str:
    """The plugin's arguments and environment as shell words, sourced by the helper (may hold secrets)."""
    return render("credential-provider.conf.j2", provider=provider)


def render_provider_parser() -> str:
    """The awk program with which the helper reads the plugin's CredentialProviderResponse."""
    return render("credential-provider.awk.j2")


def config_files(cache: RegistryCache, credentials: UpstreamAuth | None,
                 node_auth: NodeCredentials | None = None, front: bool = False) -> dict[str, str]:
    """The files of a cache's config Secret, mounted in ``/etc/distribution``: ``config.yml``, the credential
    helper, the upstream's credentials for it (if any) or what runs its credential provider plugin, and the
    htpasswd file of a cache only nodes can read. ``front``: distribution behind the coalescing front."""
    provider = credentials if isinstance(credentials, CredentialProvider) else None
    files = {"config.yml": render_config_yml(cache, node_auth is not None, front, provider is not None)}
    if provider is not None:
        files[c.CREDENTIAL_HELPER_KEY] = render_provider_helper(cache.upstream, provider)
        files[c.CREDENTIAL_PROVIDER_CONFIG_KEY] = render_provider_config(provider)
        files[c.CREDENTIAL_PROVIDER_PARSER_KEY] = render_provider_parser()
    else:
        files[c.CREDENTIAL_HELPER_KEY] = render_credential_helper()
        if isinstance(credentials, Credentials):
            files[c.UPSTREAM_CREDENTIALS_KEY] = render_upstream_credentials(credentials)
    if node_auth is not None:
        files[c.HTPASSWD_KEY] = node_auth.htpasswd
    return files


# the modes of the config Secret's files that are not the default (0644), and why
CONFIG_FILE_MODES = {
    c.CREDENTIAL_HELPER_KEY: (c.CREDENTIAL_HELPER_MODE, "distribution runs it (proxy.exec)"),
    c.CREDENTIAL_PROVIDER_CONFIG_KEY: (c.CREDENTIALS_FILE_MODE, "the plugin's arguments and environment: the "
                                                                "cache's group only"),
    c.UPSTREAM_CREDENTIALS_KEY: (c.CREDENTIALS_FILE_MODE, "the upstream's credentials: the cache's group only"),
}


def _object(template: str, **values: Any) -> RenderedObject:
    text = render(template, **values)
    return RenderedObject(text, parse_yaml(text))


def _secret(name: str, namespace: str, labels: dict[str, str], data: Mapping[str, str | bytes]) -> RenderedObject:
    return _object("secret.yaml.j2", name=name, namespace=namespace,
                   labels={**labels, c.GC_REFERENCE_LABEL: "true"}, data=data)


def render_cache(cache: RegistryCache, credentials: UpstreamAuth | None, tls: KeyPair | None,
                 options: RenderOptions = RenderOptions(),
                 node_auth: NodeCredentials | None = None, peers: Sequence[str] = ()) -> list[RenderedObject]:
    """The objects of one cache: config Secret, TLS Secret, StatefulSet, Service, PDB, VPA, and with high
    availability behind the front a Service per replica (``peers``: their cluster IPs by ordinal). With
    ``node_auth`` the config Secret holds the htpasswd file too and the cache requires it."""
    if tls_enabled(cache) and tls is None:
        raise ValueError(f"cache {cache.upstream}: TLS is on but no server certificate was given")
    name = names.resource_name(cache.upstream)
    labels = options.labels(cache.upstream)
    selector = names.labels(cache.upstream)
    ns = options.namespace
    common = dict(namespace=ns, server_port=c.SERVER_PORT, debug_port=c.DEBUG_PORT)

    front = options.front_image is not None
    config_data = config_files(cache, credentials, node_auth, front)
    # every key (items select them), the helper executable (distribution runs it), credentials not for everyone
    config_items = [(key, *CONFIG_FILE_MODES.get(key, (None, None))) for key in sorted(config_data)]
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
    # distribution's pause before its SIGTERM (c.CACHE_PRESTOP_PAUSE_SECONDS): the kubelet's grace covers it, the
    # drain after it and a margin
    pause = c.CACHE_PRESTOP_PAUSE_BEHIND_FRONT_SECONDS if front else c.CACHE_PRESTOP_PAUSE_SECONDS
    workload_labels = {**labels, c.HA_LABEL: "server"} if ha else labels
    objects.append(_object(
        "statefulset.yaml.j2", **common, name=name, selector=selector, workload_labels=workload_labels,
        pod_labels={**selector, c.APP_NAME_LABEL: c.APP_NAME,
                    "networking.gardener.cloud/to-dns": "allowed",
                    "networking.gardener.cloud/to-public-networks": "allowed"},
        replicas=c.HA_REPLICAS if ha else 1, high_availability=ha, image=options.image,
        front_image=options.front_image, front_command=list(c.FRONT_COMMAND),
        front_args=front_args(cache, peers if ha else ()) if front else [],
        front_scheme="HTTPS" if tls_enabled(cache) else "HTTP",
        prestop_pause=pause, termination_grace_period=pause + c.DRAIN_SECONDS + 5,
        priority_class_name=options.priority_class_name, env=env,
        config_secret_name=config_secret.name, config_items=config_items, tls_secret_name=tls_secret_name,
        provider=credentials if isinstance(credentials, CredentialProvider) else None,
        size=cache.volume.size.canonical() if cache.volume and cache.volume.size else "10Gi",
        storage_class_name=cache.volume.storage_class_name if cache.volume else None,
        claim_labels={**selector, c.OWNER_LABEL: options.owner} if options.owner else selector,
    ))
    objects.append(render_service(cache, options))
    objects += render_replica_services(cache, options)
    if ha:
        objects.append(_object("poddisruptionbudget.yaml.j2", namespace=ns, name=name, labels=labels,
                               selector=selector))
    if options.vpa:
        # labelled like the other objects, so that it is pruned when the Shoot no longer wants VPA
        objects.append(_object("verticalpodautoscaler.yaml.j2", namespace=ns, name=name, labels=labels,
                               front=front))
    return objects


def render_service(cache: RegistryCache, options: RenderOptions = RenderOptions()) -> RenderedObject:
    """The cache's Service; rendered first by the controller, whose cluster IP the certificate needs."""
    return _object(
        "service.yaml.j2", namespace=options.namespace, server_port=c.SERVER_PORT, debug_port=c.DEBUG_PORT,
        service_name=names.service_name(cache.upstream, cache.service_name_suffix),
        labels=options.labels(cache.upstream), selector=names.labels(cache.upstream), upstream=cache.upstream,
        remote_url=remote_url(cache), scheme="https" if tls_enabled(cache) else "http",
    )


def render_shoot(config: RegistryConfig, credentials: Mapping[str, UpstreamAuth] | None = None,
                 tls: Mapping[str, KeyPair] | None = None,
                 options: RenderOptions = RenderOptions(),
                 node_auth: Mapping[str, NodeCredentials] | None = None,
                 peers: Mapping[str, Sequence[str]] | None = None) -> RenderedShoot:
    """Everything delivered to the shoot for a defaulted config: the shared NetworkPolicy, then per cache
    its objects. ``credentials``, ``tls``, ``node_auth`` and ``peers`` are keyed by upstream."""
    credentials = credentials or {}
    tls = tls or {}
    node_auth = node_auth or {}
    out = RenderedShoot()
    out.objects.append(_object("networkpolicy.yaml.j2", name=owned_name(c.NETWORK_POLICY_NAME, options.owner),
                               namespace=options.namespace, owner=options.owner,
                               server_port=c.SERVER_PORT, debug_port=c.DEBUG_PORT))
    for cache in config.caches:
        out.objects += render_cache(cache, credentials.get(cache.upstream), tls.get(cache.upstream), options,
                                    node_auth.get(cache.upstream), (peers or {}).get(cache.upstream, ()))
    return out


def host_port(address: str, port: int = c.SERVER_PORT) -> str:
    """``<address>:5000``, IPv6 addresses in brackets (``net.JoinHostPort``)."""
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]:{port}"
    except ValueError:
        pass
    return f"{address}:{port}"


def endpoint(scheme: str, cluster_ip: str, port: int = c.SERVER_PORT) -> str:
    """``<scheme>://<clusterIP>:5000``."""
    return f"{scheme}://{host_port(cluster_ip, port)}"


def provider_status(caches: Iterable[tuple[str, str, str]], ca_secret_name: str | None) -> RegistryStatus:
    """``RegistryStatus`` from (upstream, endpoint, remoteURL) per cache."""
    return RegistryStatus(
        caches=[RegistryCacheStatus(upstream=u, endpoint=e, remote_url=r) for u, e, r in caches],
        ca_secret_name=ca_secret_name,
    )


def owned_name(base: str, owner: str | None) -> str:
    """The name of an object there is one of per Extension: with the owner's hash, so that the Extensions
    delivered into one cluster (standalone mode) each have their own and never take over or prune another's."""
    return f"{base}-{hashlib.sha256(owner.encode()).hexdigest()[:8]}" if owner else base


def _node_config_name(base: str, options: RenderOptions) -> str:
    return owned_name(base, options.owner)


def render_node_config(status: RegistryStatus, ca_bundle: str | None,
                       options: RenderOptions = RenderOptions(), node_auth: Iterable[str] = (),
                       replicas: Mapping[str, Sequence[str]] | None = None) -> RenderedObject:
    """The ConfigMap the node agent reads: the caches' registry entries and the CA bundle nodes trust. Each
    cache host carries ``options.dial_timeout``; for the upstreams in ``node_auth`` the host names its key in
    the node-auth Secret (never the credentials). ``replicas``: per upstream the endpoints of the cache's
    replicas, hosts after the cache's own (:func:`containerd_registries`)."""
    node_auth = set(node_auth)
    entries = containerd_registries(status, dial_timeout=options.dial_timeout, replicas=replicas)
    for entry in entries:
        if entry["upstream"] in node_auth:
            for host in entry["hosts"]:
                host[c.HOST_NODE_AUTH_FIELD] = shoot_key(entry["upstream"])
    registries = yaml.safe_dump({"registries": entries}, sort_keys=False, allow_unicode=False)
    return _object("node-config.yaml.j2", name=_node_config_name(c.NODE_CONFIG_NAME, options),
                   namespace=options.namespace, owner=options.owner, managed_by=c.MANAGED_BY,
                   registries_yaml=registries, ca_bundle=ca_bundle, files_yaml=None)


def render_mirror_node_config(config: MirrorConfig, ca_bundles: Mapping[tuple[str, str], bytes],
                              options: RenderOptions = RenderOptions()) -> RenderedObject:
    """The ConfigMap the node agent reads for the mirrors: their registry entries and the CA bundle files of
    private mirrors (``ca_bundles`` per (upstream, host)), as Gardener's mirror ensurer puts them into the
    OperatingSystemConfig. Neither ``dialTimeout`` nor node auth: those are the caches' (a mirror host gets
    containerd's own dial timeout, and a mirror is not ours to put credentials in front of)."""
    registries = yaml.safe_dump({"registries": mirror_registries(config)}, sort_keys=False, allow_unicode=False)
    files = mirror_files(config, ca_bundles)
    files_yaml = yaml.safe_dump({"files": files}, sort_keys=False, allow_unicode=False) if files else None
    return _object("node-config.yaml.j2", name=_node_config_name(c.MIRROR_NODE_CONFIG_NAME, options),
                   namespace=options.namespace, owner=options.owner, managed_by=c.MIRROR_MANAGED_BY,
                   registries_yaml=registries, ca_bundle=None, files_yaml=files_yaml)
