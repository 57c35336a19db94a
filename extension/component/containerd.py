"""What a node's containerd gets for a cache: ``hosts.toml`` and Gardener's registry entries.

Pure, and light enough for the node agent (Jinja and the quoting filters only; the status model is only
a type here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from extension.component.templating import render
from extension.constants import CA_BUNDLE_PATH, CAPABILITIES

if TYPE_CHECKING:
    from api.v1alpha3 import RegistryStatus


def render_hosts_toml(upstream: str, server: str, host_url: str, ca_path: str | None = CA_BUNDLE_PATH,
                      note: str | None = None) -> str:
    """containerd's ``hosts.toml`` for one upstream: try the cache, fall back to ``server``.

    The CA is only referenced for an https endpoint, as Gardener does.
    """
    if note is not None and ("\n" in note or "\r" in note):
        raise ValueError("a hosts.toml note must be a single line")
    return render(
        "hosts.toml.j2",
        upstream=upstream,
        server=server,
        endpoint=host_url,
        capabilities=list(CAPABILITIES),
        ca_path=ca_path if host_url.startswith("https://") else None,
        endpoint_note=note,
    )


def containerd_registries(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH) -> list[dict[str, Any]]:
    """Gardener's OperatingSystemConfig ``criConfig.containerd.registries`` entries for a status: try the cache
    (its CA for an https endpoint), fall back to the remote URL; nodes wait until the cache answers."""
    return [{"upstream": c.upstream, "server": c.remote_url,
             "hosts": [{"url": c.endpoint, "capabilities": list(CAPABILITIES),
                        **({"caCerts": [ca_path]} if ca_path and c.endpoint.startswith("https://") else {})}],
             "readinessProbe": True} for c in status.caches]


def hosts_toml_for_entry(entry: Mapping[str, Any]) -> str:
    """``hosts.toml`` for one containerd registry entry (see :func:`containerd_registries`)."""
    host = entry["hosts"][0]
    ca = (host.get("caCerts") or [None])[0]
    return render_hosts_toml(entry["upstream"], entry["server"], host["url"], ca)


def hosts_toml_for_status(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH) -> dict[str, str]:
    """Per upstream, the ``hosts.toml`` that points containerd at the cache the status reports."""
    return {e["upstream"]: hosts_toml_for_entry(e) for e in containerd_registries(status, ca_path)}
