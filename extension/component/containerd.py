"""What a node's containerd gets: ``hosts.toml`` per upstream and Gardener's registry entries, for the caches
(``RegistryStatus``) and the mirrors (``MirrorConfig``) alike.

One shape for both, Gardener's OperatingSystemConfig ``criConfig.containerd.registries[]`` entry
(``upstream``, ``server``, ``hosts[{url, capabilities, caCerts, overridePath}]``, ``readinessProbe``), and one
rendering of it into ``hosts.toml`` (as gardener-node-agent writes it: a ``[host."<url>"]`` table per host).

Pure, and light enough for the node agent (Jinja and the quoting filters only; the models are only types
here).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from api.names import default_remote_url
from extension.component.templating import render
from extension.constants import (
    CA_BUNDLE_FILE_PERMISSIONS,
    CA_BUNDLE_PATH,
    CAPABILITIES,
    CERTS_DIR,
    MIRROR_CA_BUNDLE_SUFFIX,
)

if TYPE_CHECKING:
    from api.mirror_v1alpha1 import MirrorConfig
    from api.v1alpha3 import RegistryStatus

MAX_FILE_NAME_LENGTH = 255


def render_registry_hosts_toml(upstream: str, server: str, hosts: Sequence[Mapping[str, Any]],
                               note: str | None = None) -> str:
    """containerd's ``hosts.toml`` for one upstream: try each host in order, fall back to ``server``.

    ``hosts`` are entries of the OperatingSystemConfig shape: ``url``, ``capabilities`` (``pull`` and ``resolve``
    when none), ``caCerts``, ``overridePath`` (written only when true, as gardener-node-agent does).
    """
    if note is not None and ("\n" in note or "\r" in note):
        raise ValueError("a hosts.toml note must be a single line")
    return render(
        "hosts.toml.j2",
        upstream=upstream,
        server=server,
        hosts=[{"url": h["url"], "capabilities": list(h.get("capabilities") or CAPABILITIES),
                "ca": list(h.get("caCerts") or []), "override_path": h.get("overridePath") is True}
               for h in hosts],
        endpoint_note=note,
    )


def render_hosts_toml(upstream: str, server: str, host_url: str, ca_path: str | None = CA_BUNDLE_PATH,
                      note: str | None = None) -> str:
    """``hosts.toml`` for a cache: try the cache at ``host_url``, fall back to ``server``.

    The CA is only referenced for an https endpoint, as Gardener does.
    """
    return render_registry_hosts_toml(upstream, server, [_cache_host(host_url, ca_path)], note)


def _cache_host(url: str, ca_path: str | None) -> dict[str, Any]:
    return {"url": url, "capabilities": list(CAPABILITIES),
            **({"caCerts": [ca_path]} if ca_path and url.startswith("https://") else {})}


def containerd_registries(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH) -> list[dict[str, Any]]:
    """Gardener's OperatingSystemConfig ``criConfig.containerd.registries`` entries for a status: try the cache
    (its CA for an https endpoint), fall back to the remote URL; nodes wait until the cache answers."""
    return [{"upstream": c.upstream, "server": c.remote_url, "hosts": [_cache_host(c.endpoint, ca_path)],
             "readinessProbe": True} for c in status.caches]


def hosts_toml_for_entry(entry: Mapping[str, Any]) -> str:
    """``hosts.toml`` for one containerd registry entry (see :func:`containerd_registries`)."""
    return render_registry_hosts_toml(entry["upstream"], entry["server"], entry["hosts"])


def hosts_toml_for_status(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH) -> dict[str, str]:
    """Per upstream, the ``hosts.toml`` that points containerd at the cache the status reports."""
    return {e["upstream"]: hosts_toml_for_entry(e) for e in containerd_registries(status, ca_path)}


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
    CA bundle file of a private mirror and ``overridePath`` when set; no readiness probe."""
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
