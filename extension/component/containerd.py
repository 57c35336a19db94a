"""What a node's containerd gets for a cache: ``hosts.toml`` and Gardener's registry entries.

Pure, and light enough for the node agent (Jinja, the quoting filters and the duration parser only; the
status model is only a type here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from api.duration import DurationError, parse_duration
from extension.component.templating import render
from extension.constants import CA_BUNDLE_PATH, CAPABILITIES, HOST_DIAL_TIMEOUT_FIELD

if TYPE_CHECKING:
    from api.v1alpha3 import RegistryStatus


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


def render_hosts_toml(upstream: str, server: str, host_url: str, ca_path: str | None = CA_BUNDLE_PATH,
                      note: str | None = None, dial_timeout: str | None = None,
                      headers: Mapping[str, str] | None = None) -> str:
    """containerd's ``hosts.toml`` for one upstream: try the cache, fall back to ``server``.

    The CA is only referenced for an https endpoint, as Gardener does. ``dial_timeout`` (a Go duration,
    read by containerd 2.1 and later) bounds how long containerd tries to reach the cache before it falls
    back; ``headers`` are sent to the cache with every request (``[host."...".header]``).
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
        dial_timeout=dial_timeout,
        headers=dict(headers or {}),
    )


def containerd_registries(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH,
                          dial_timeout: str | None = None) -> list[dict[str, Any]]:
    """Gardener's OperatingSystemConfig ``criConfig.containerd.registries`` entries for a status: try the cache
    (its CA for an https endpoint), fall back to the remote URL; nodes wait until the cache answers.

    ``dial_timeout`` adds ``dialTimeout`` to each host: not part of Gardener's ``RegistryHost`` (the
    OperatingSystemConfig cannot carry it), only for the node agent's ConfigMap."""
    out = []
    for c in status.caches:
        host: dict[str, Any] = {"url": c.endpoint, "capabilities": list(CAPABILITIES)}
        if ca_path and c.endpoint.startswith("https://"):
            host["caCerts"] = [ca_path]
        if dial_timeout:
            host[HOST_DIAL_TIMEOUT_FIELD] = dial_timeout
        out.append({"upstream": c.upstream, "server": c.remote_url, "hosts": [host], "readinessProbe": True})
    return out


def hosts_toml_for_entry(entry: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> str:
    """``hosts.toml`` for one containerd registry entry (see :func:`containerd_registries`)."""
    host = entry["hosts"][0]
    ca = (host.get("caCerts") or [None])[0]
    return render_hosts_toml(entry["upstream"], entry["server"], host["url"], ca,
                             dial_timeout=host.get(HOST_DIAL_TIMEOUT_FIELD), headers=headers)


def hosts_toml_for_status(status: RegistryStatus, ca_path: str | None = CA_BUNDLE_PATH,
                          dial_timeout: str | None = None) -> dict[str, str]:
    """Per upstream, the ``hosts.toml`` that points containerd at the cache the status reports."""
    return {e["upstream"]: hosts_toml_for_entry(e) for e in containerd_registries(status, ca_path, dial_timeout)}
