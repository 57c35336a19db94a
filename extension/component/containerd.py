"""What a node's containerd gets: ``hosts.toml`` per upstream and Gardener's registry entries, for the caches
(``RegistryStatus``) and the mirrors (``MirrorConfig``) alike.

One shape for both, Gardener's OperatingSystemConfig ``criConfig.containerd.registries[]`` entry
(``upstream``, ``server``, ``hosts[{url, capabilities, caCerts, overridePath}]``, ``readinessProbe``), and one
rendering of it into ``hosts.toml`` (as gardener-node-agent writes it: a ``[host."<url>"]`` table per host).
A cache's host may carry two additions of ours, in the node agent's ConfigMap only (the OperatingSystemConfig
cannot carry them): ``dialTimeout`` (containerd's ``dial_timeout``) and ``nodeAuth`` (the key of its
Authorization header in the node-auth Secret). A mirror's hosts carry neither.

Pure, and light enough for the node agent (Jinja, the quoting filters and the duration parser only; the models
are only types here).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from api.duration import DurationError, parse_duration
from api.names import default_remote_url
from extension.component.templating import render
from extension.constants import (
    CA_BUNDLE_FILE_PERMISSIONS,
    CA_BUNDLE_PATH,
    CAPABILITIES,
    CERTS_DIR,
    HOST_DIAL_TIMEOUT_FIELD,
    MIRROR_CA_BUNDLE_SUFFIX,
)

if TYPE_CHECKING:
    from api.mirror_v1alpha1 import MirrorConfig
    from api.v1alpha3 import RegistryStatus

MAX_FILE_NAME_LENGTH = 255


def dial_timeout(value: str | None) -> str | None:
    """A ``dial_timeout`` for hosts.toml from a Go duration (``200ms``, ``1s``): the text itself, or None
    for ``0``/``0s``/empty (not written: containerd's own default). Raises ValueError for anything that is
    not a non-negative Go duration (containerd refuses the whole hosts.toml for a bad one)."""
    if value is None or value == "":
        return None
    try:
        nanoseconds = parse_duration(value)
    except DurationError as exc:
        raise ValueError(f"dial timeout {value!r} is not a Go duration (e.g. 200ms, 1s): {exc}") from None
    if nanoseconds < 0:
        raise ValueError(f"dial timeout {value!r} must not be negative")
    return value if nanoseconds > 0 else None


def render_registry_hosts_toml(upstream: str, server: str, hosts: Sequence[Mapping[str, Any]],
                               note: str | None = None,
                               headers: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """containerd's ``hosts.toml`` for one upstream: try each host in order, fall back to ``server``.

    ``hosts`` are entries of the OperatingSystemConfig shape: ``url``, ``capabilities`` (``pull`` and ``resolve``
    when none), ``caCerts``, ``overridePath`` (written only when true, as gardener-node-agent does), and our
    ``dialTimeout`` (a Go duration, read by containerd 2.1 and later: how long containerd tries to reach the
    host before it tries the next one or the server). ``headers`` are, per host URL, the headers containerd
    sends to that host with every request (``[host."<url>".header]``).
    """
    if note is not None and ("\n" in note or "\r" in note):
        raise ValueError("a hosts.toml note must be a single line")
    return render(
        "hosts.toml.j2",
        upstream=upstream,
        server=server,
        hosts=[{"url": h["url"], "capabilities": list(h.get("capabilities") or CAPABILITIES),
                "ca": list(h.get("caCerts") or []), "override_path": h.get("overridePath") is True,
                "dial_timeout": h.get(HOST_DIAL_TIMEOUT_FIELD) or None,
                "headers": dict((headers or {}).get(h["url"]) or {})}
               for h in hosts],
        endpoint_note=note,
    )


def render_hosts_toml(upstream: str, server: str, host_url: str, ca_path: str | None = CA_BUNDLE_PATH,
                      note: str | None = None, dial_timeout: str | None = None,
                      headers: Mapping[str, str] | None = None) -> str:
    """``hosts.toml`` for a cache: try the cache at ``host_url``, fall back to ``server``.

    The CA is only referenced for an https endpoint, as Gardener does. ``dial_timeout`` bounds how long
    containerd tries to reach the cache before it falls back; ``headers`` are sent to the cache with every
    request.
    """
    return render_registry_hosts_toml(upstream, server, [_cache_host(host_url, ca_path, dial_timeout)], note,
                                      {host_url: headers} if headers else None)


def _cache_host(url: str, ca_path: str | None, dial_timeout: str | None = None) -> dict[str, Any]:
    host: dict[str, Any] = {"url": url, "capabilities": list(CAPABILITIES)}
    if ca_path and url.startswith("https://"):
        host["caCerts"] = [ca_path]
    if dial_timeout:
        host[HOST_DIAL_TIMEOUT_FIELD] = dial_timeout
    return host


def containerd_registries(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH,
                          dial_timeout: str | None = None,
                          replicas: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """Gardener's OperatingSystemConfig ``criConfig.containerd.registries`` entries for a status: try the cache
    (its CA for an https endpoint), fall back to the remote URL; nodes wait until the cache answers.

    ``dial_timeout`` adds ``dialTimeout`` to each host: not part of Gardener's ``RegistryHost`` (the
    OperatingSystemConfig cannot carry it), only for the node agent's ConfigMap. ``replicas``: per upstream the
    endpoints of a cache's replicas, tried after the cache's Service and before the upstream (the node agent's
    ConfigMap: a replica on a node that stopped is still among the Service's endpoints until the node is marked
    unready, and a connection the Service sends there goes to the next replica instead of the upstream)."""
    replicas = replicas or {}
    return [{"upstream": c.upstream, "server": c.remote_url,
             "hosts": [_cache_host(url, ca_path, dial_timeout) for url in (c.endpoint, *replicas.get(c.upstream, ()))],
             "readinessProbe": True} for c in status.caches]


def hosts_toml_for_entry(entry: Mapping[str, Any], headers: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """``hosts.toml`` for one containerd registry entry (see :func:`containerd_registries` and
    :func:`mirror_registries`); ``headers`` per host URL."""
    return render_registry_hosts_toml(entry["upstream"], entry["server"], entry["hosts"], headers=headers)


def hosts_toml_for_status(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH,
                          dial_timeout: str | None = None,
                          replicas: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Per upstream, the ``hosts.toml`` that points containerd at the cache the status reports (and its
    replicas, ``replicas``)."""
    return {e["upstream"]: hosts_toml_for_entry(e)
            for e in containerd_registries(status, ca_path, dial_timeout, replicas)}


# --- mirrors ---------------------------------------------------------------------------------------------------


def _sanitize_host(host: str) -> str:
    """The Go extension's ``sanitizeHost``: scheme dropped, ``:`` and ``/`` as ``-``; a name too long for a file
    is cut and gets the first 5 hex digits of the sha256 of the host as written."""
    sanitized = host.removeprefix("https://").removeprefix("http://").replace(":", "-").replace("/", "-")
    limit = MAX_FILE_NAME_LENGTH - len(MIRROR_CA_BUNDLE_SUFFIX)
    raw = sanitized.encode("utf-8", "surrogatepass")
    if len(raw) > limit:  # Go measures and cuts bytes
        digest = hashlib.sha256(host.encode("utf-8", "surrogatepass")).hexdigest()[:5]
        sanitized = raw[:limit - len(digest) - 1].decode("utf-8", "replace") + "-" + digest
    return sanitized


def mirror_ca_bundle_path(upstream: str, host: str) -> str:
    """Where a node keeps the CA bundle of a mirror host, as Gardener's mirror ensurer names it:
    ``/etc/containerd/certs.d/<upstream, ':' as '-'>/<host, sanitized>-ca-bundle.pem``."""
    return posixpath.join(CERTS_DIR, upstream.replace(":", "-"), _sanitize_host(host) + MIRROR_CA_BUNDLE_SUFFIX)


def mirror_registries(config: MirrorConfig) -> list[dict[str, Any]]:
    """The OperatingSystemConfig registry entries of a defaulted ``MirrorConfig``, as Gardener's mirror ensurer
    makes them: ``server`` the upstream's default URL, one host per mirror in order with its capabilities, the
    CA bundle file of a private mirror and ``overridePath`` when set; no readiness probe. No ``dialTimeout``:
    a mirror is a registry that is meant to answer, and containerd's own dial timeout (30s) applies to it, as
    under Gardener (see docs/operations/beyond-gardener.md, "Failover in under a second")."""
    entries = []
    for mirror in config.mirrors:
        hosts = []
        for host in mirror.hosts:
            entry: dict[str, Any] = {"url": host.host, "capabilities": list(host.capabilities)}
            if host.ca_bundle_secret_reference_name is not None:
                entry["caCerts"] = [mirror_ca_bundle_path(mirror.upstream, host.host)]
            if host.override_path is not None:
                entry["overridePath"] = host.override_path
            hosts.append(entry)
        entries.append({"upstream": mirror.upstream, "server": default_remote_url(mirror.upstream), "hosts": hosts})
    return entries


def mirror_files(config: MirrorConfig, ca_bundles: Mapping[tuple[str, str], bytes]) -> list[dict[str, Any]]:
    """The OperatingSystemConfig files of the mirrors' CA bundles (``ca_bundles`` per (upstream, host))."""
    files = []
    for mirror in config.mirrors:
        for host in mirror.hosts:
            bundle = ca_bundles.get((mirror.upstream, host.host))
            if host.ca_bundle_secret_reference_name is not None and bundle is not None:
                files.append(ca_file(mirror_ca_bundle_path(mirror.upstream, host.host), bundle))
    return files


def ca_file(path: str, content: bytes | str) -> dict[str, Any]:
    """An OperatingSystemConfig file: a CA bundle, inline and base64, mode 0644."""
    data = content.encode() if isinstance(content, str) else content
    return {"path": path, "permissions": CA_BUNDLE_FILE_PERMISSIONS,
            "content": {"inline": {"encoding": "b64", "data": base64.b64encode(data).decode()}}}
