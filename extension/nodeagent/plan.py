"""The node agent's pure part: from the published ConfigMaps and what is on disk to what to write.

:func:`desired_state` reads the ConfigMaps (every problem is reported and skipped, never fatal: one bad entry
never keeps the others from being written): the registry entries of caches and mirrors (one ``hosts.toml`` per
upstream, a ``[host]`` per cache or mirror), the caches' CA bundle and the files of ``files.yaml`` (a private
mirror's CA bundle, at ``/etc/containerd/certs.d/<dir>/<host>-ca-bundle.pem`` as Gardener names it);
:func:`plan` compares with what :class:`Observed` found in ROOT and which caches answer. No I/O; :mod:`.agent`
does it.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from api import yamldoc
from api.field import brief
from api.urls import host_port_errors
from extension.component.containerd import dial_timeout, hosts_toml_for_entry
from extension.constants import (
    CA_BUNDLE_FILE,
    CA_BUNDLE_PATH,
    CERTS_DIR,
    HOST_DIAL_TIMEOUT_FIELD,
    HOST_NODE_AUTH_FIELD,
    MIRROR_CA_BUNDLE_SUFFIX,
    NODE_AUTH_SHOOT_SECRET,
    NODE_CONFIG_CA_BUNDLE_KEY,
    NODE_CONFIG_FILES_KEY,
    NODE_CONFIG_REGISTRIES_KEY,
)

HOSTS_FILE = "hosts.toml"
MARKER = ".registry-cache-managed"
# In ROOT, next to ca-bundle.pem: the bundle is ours (ROOT itself is containerd's, not ours).
CA_MARKER = ".registry-cache-managed-ca-bundle"
PROBE_PATH = "/v2/"

SHOWN = 100  # how much of a bad value a problem quotes
_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_HEADER_VALUE_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")  # one line of printable ASCII
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)
# A file this agent writes next to a hosts.toml: a mirror's CA bundle, a plain name.
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


# --------------------------------------------------------------------------------------------------
# pure: from ConfigMaps to the wanted files


@dataclass(frozen=True)
class Entry:
    """One containerd registry entry and the ConfigMap it came from."""

    upstream: str
    server: str
    hosts: tuple[Mapping[str, Any], ...]
    readiness_probe: bool
    source: str  # namespace/name of the ConfigMap

    @property
    def probe_url(self) -> str:
        """The URL whose answer means the cache is there: the first host (the one hosts.toml names)."""
        return self.hosts[0]["url"].rstrip("/") + PROBE_PATH

    @property
    def https(self) -> bool:
        return any(str(h.get("url", "")).startswith("https://") for h in self.hosts)


@dataclass
class Desired:
    """What the ConfigMaps ask for."""

    entries: dict[str, Entry] = field(default_factory=dict)  # by upstream
    hosts_toml: dict[str, str] = field(default_factory=dict, repr=False)  # by upstream (may hold credentials)
    files: dict[str, str] = field(default_factory=dict)  # "<dir>/<name>" below ROOT -> content
    ca_bundle: str | None = None  # every published CA certificate, deduplicated; None when there is none
    # Upstreams named by an entry that could not be used: their directories are kept as they are.
    keep: set[str] = field(default_factory=set)
    # False when a whole ConfigMap could not be read: nothing is removed then (its upstreams are unknown).
    complete: bool = True
    # Keys of the node-auth Secret the entries name (caches only nodes can read), and the upstreams whose
    # hosts.toml carries credentials (written readable by root only).
    node_auth_wanted: set[str] = field(default_factory=set)
    private: set[str] = field(default_factory=set)
    # Per upstream, the mirror CA bundle files (``<dir>/<name>`` below ROOT, in ``files``) its hosts.toml names.
    ca_files: dict[str, set[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _source(cm: Mapping[str, Any]) -> str:
    meta = cm.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _order(cm: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = cm.get("metadata") or {}
    # RFC 3339 timestamps in UTC sort as strings; a ConfigMap without one (never from the API) sorts last.
    return (meta.get("creationTimestamp") or "~", meta.get("namespace") or "", meta.get("name") or "")


def valid_upstream(upstream: Any) -> bool:
    """A directory name containerd looks up for a registry host: the upstream rule of ``api/`` (a DNS subdomain,
    an optional port, the whole string: nothing that leaves ROOT), and not the CA bundle's file name."""
    return isinstance(upstream, str) and not host_port_errors(upstream) and upstream != CA_BUNDLE_FILE


def _http_url(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return bool(parts.hostname) and not any(c in value for c in "\r\n\t ")


def _entry_problem(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return "an entry is not a mapping"
    if raw.get("upstream") == CA_BUNDLE_FILE:
        return f"upstream {CA_BUNDLE_FILE} is the name of the CA bundle file, not a directory of ours"
    if not valid_upstream(raw.get("upstream")):
        return f"upstream {brief(raw.get('upstream'), SHOWN)} is not a registry host[:port]"
    if not _http_url(raw.get("server")):
        return f"server {brief(raw.get('server'), SHOWN)} is not an http(s) URL"
    hosts = raw.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        return "no hosts"
    for host in hosts:
        if not isinstance(host, dict) or not _http_url(host.get("url")):
            return f"host {brief(host, SHOWN)} has no http(s) url"
        ca = host.get("caCerts")
        if ca is not None and (not isinstance(ca, list) or not all(isinstance(c, str) and c for c in ca)):
            return f"host {brief(host.get('url'), SHOWN)}: caCerts is not a list of paths"
        for path in ca or []:
            if path != CA_BUNDLE_PATH and file_place(path) is None:
                return (f"host {brief(host.get('url'), SHOWN)}: caCerts path {brief(path, SHOWN)} is neither the "
                        f"caches' CA bundle {CA_BUNDLE_PATH} nor a mirror's CA bundle file "
                        f"{CERTS_DIR}/<registry>/<name>{MIRROR_CA_BUNDLE_SUFFIX}")
        capabilities = host.get("capabilities")
        if capabilities is not None and (not isinstance(capabilities, list)
                                         or not all(c in ("pull", "resolve") for c in capabilities)):
            return f"host {brief(host.get('url'), SHOWN)}: capabilities is not a list of pull and resolve"
        if not isinstance(host.get("overridePath", False), bool):
            return f"host {brief(host.get('url'), SHOWN)}: overridePath is not a boolean"
        timeout = host.get(HOST_DIAL_TIMEOUT_FIELD)
        if timeout is not None:
            try:
                if not isinstance(timeout, str):
                    raise ValueError(f"{HOST_DIAL_TIMEOUT_FIELD} is not a string")
                dial_timeout(timeout)
            except ValueError as exc:
                return f"host {brief(host.get('url'), SHOWN)}: {str(exc)[:2 * SHOWN]}"
        key = host.get(HOST_NODE_AUTH_FIELD)
        if key is not None and (not isinstance(key, str) or not _KEY_RE.match(key)):
            return f"host {brief(host.get('url'), SHOWN)}: {HOST_NODE_AUTH_FIELD} is not a Secret key"
    if not isinstance(raw.get("readinessProbe", False), bool):
        return "readinessProbe is not a boolean"
    return None


def ca_places(host: Mapping[str, Any]) -> list[str]:
    """``<dir>/<name>`` below ROOT of the mirror CA bundle files a host's ``caCerts`` names (the caches' bundle
    left out); only for a host :func:`_entry_problem` accepted."""
    return [place for c in host.get("caCerts") or [] if c != CA_BUNDLE_PATH
            for place in [file_place(c)] if place is not None]


def _with_ca_path(host: Mapping[str, Any], ca_path: str) -> dict[str, Any]:
    """The controller names the CA files at containerd's default place (``/etc/containerd/certs.d``); point
    them at where this agent writes them: the bundle at ``ca_path``, a mirror's CA beside it (in the directory
    containerd sees ROOT as). Only the caches' bundle and the mirrors' files (:func:`file_place`) get here:
    :func:`_entry_problem` refuses any other path."""
    out = dict(host)
    if host.get("caCerts"):
        root = posixpath.dirname(ca_path)
        out["caCerts"] = [ca_path if c == CA_BUNDLE_PATH else f"{root}/{file_place(c)}" for c in host["caCerts"]]
    return out


def file_place(path: Any) -> str | None:
    """``<dir>/<name>`` below ROOT of a published file at ``/etc/containerd/certs.d/<dir>/<name>``: a directory
    named like a registry host and a plain CA bundle name; None for anything else (never outside ROOT)."""
    if not isinstance(path, str) or not path.startswith(CERTS_DIR + "/"):
        return None
    parts = path[len(CERTS_DIR) + 1:].split("/")
    if len(parts) != 2 or not valid_upstream(parts[0]) or not _FILE_NAME_RE.match(parts[1]) \
            or not parts[1].endswith(MIRROR_CA_BUNDLE_SUFFIX) or ".." in parts[1]:
        return None
    return f"{parts[0]}/{parts[1]}"


def _file_problem(raw: Any) -> tuple[str | None, str | None, str | None]:
    """(place, content, problem) of one published file."""
    if not isinstance(raw, dict):
        return None, None, "a file is not a mapping"
    place = file_place(raw.get("path"))
    if place is None:
        return None, None, f"path {brief(raw.get('path'), SHOWN)} is not a CA bundle file below {CERTS_DIR}/<registry>/"
    inline = ((raw.get("content") or {}).get("inline") or {}) if isinstance(raw.get("content"), dict) else {}
    if not isinstance(inline, dict) or inline.get("encoding") != "b64" or not isinstance(inline.get("data"), str):
        return place, None, f"{raw['path']}: content is not inline base64"
    try:
        text = base64.b64decode(inline["data"], validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return place, None, f"{raw['path']}: content is not base64 of UTF-8 text"
    if not ca_certificates(text):
        return place, None, f"{raw['path']}: holds no PEM certificate"
    return place, text, None


def ca_certificates(text: str) -> list[str]:
    return [m.group(0) for m in _PEM_RE.finditer(text)]


def desired_state(configmaps: Iterable[Mapping[str, Any]], ca_path: str = CA_BUNDLE_PATH,
                  node_auth: Mapping[str, str] | None = None) -> Desired:
    """The entries, files and CA bundle the ConfigMaps ask for; ``ca_path`` is where containerd finds the
    bundle this agent writes (``ROOT/ca-bundle.pem`` as containerd sees ROOT). ``node_auth`` is the node-auth
    Secret's data (key -> Authorization header); an entry whose key is not in it is not written (its cache
    would refuse containerd) and what is on disk for it stays."""
    out = Desired()
    certs: list[str] = []
    readable: list[tuple[str, list[Any]]] = []
    for cm in sorted(configmaps, key=_order):  # first every file: an entry may only name a file published
        source = _source(cm)
        data = cm.get("data") or {}
        try:
            doc = yamldoc.load(data.get(NODE_CONFIG_REGISTRIES_KEY) or "") or {}
        except yaml.YAMLError as exc:
            out.complete = False
            out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_REGISTRIES_KEY} is not YAML "
                                f"({exc.__class__.__name__}); nothing is removed until it is fixed")
            continue
        except yamldoc.YAMLLimitError as exc:
            out.complete = False
            out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_REGISTRIES_KEY} cannot be used: it is {exc}; "
                                "nothing is removed until it is fixed")
            continue
        registries = doc.get("registries") if isinstance(doc, dict) else None
        if not isinstance(registries, list):
            out.complete = False
            out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_REGISTRIES_KEY} has no list 'registries'; "
                                "nothing is removed until it is fixed")
            continue
        readable.append((source, registries))
        if not _read_files(data.get(NODE_CONFIG_FILES_KEY), source, out):
            continue
        bundle = data.get(NODE_CONFIG_CA_BUNDLE_KEY)
        if bundle:
            found = ca_certificates(bundle)
            if not found:
                out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_CA_BUNDLE_KEY} holds no PEM certificate")
            certs += [c for c in found if c not in certs]
    for source, registries in readable:
        for i, raw in enumerate(registries):
            problem = _entry_problem(raw)
            if problem is None:
                problem = _unpublished_ca_problem(raw, out)
            if problem is not None:
                out.problems.append(f"ConfigMap {source}: registries[{i}]: {problem}; entry skipped")
                if isinstance(raw, dict) and valid_upstream(raw.get("upstream")):
                    out.keep.add(raw["upstream"])
                continue
            upstream = raw["upstream"]
            if upstream in out.entries:
                out.problems.append(f"upstream {upstream} is published by ConfigMaps {out.entries[upstream].source} "
                                    f"and {source}: using {out.entries[upstream].source} (the older one)")
                continue
            entry = Entry(upstream, raw["server"], tuple(_with_ca_path(h, ca_path) for h in raw["hosts"]),
                          bool(raw.get("readinessProbe", False)), source)
            headers, missing = _node_auth_headers(entry, node_auth, out)
            if missing is not None:
                out.problems.append(f"upstream {upstream}: its cache only serves nodes, and {missing}; hosts.toml "
                                    "waits for it")
                out.keep.add(upstream)
                continue
            if headers:
                out.private.add(upstream)
            out.entries[upstream] = entry
            places = {place for h in raw["hosts"] for place in ca_places(h)}
            if places:
                out.ca_files[upstream] = places
            out.hosts_toml[upstream] = hosts_toml_for_entry(
                {"upstream": upstream, "server": entry.server, "hosts": list(entry.hosts)}, headers)
    out.ca_bundle = "\n".join(certs) + "\n" if certs else None
    return out


def _unpublished_ca_problem(raw: Mapping[str, Any], out: Desired) -> str | None:
    """A mirror CA bundle file an entry names that no ConfigMap publishes (in ``files.yaml``): this agent would
    not write it, and containerd would read whatever is at that path, or refuse the hosts.toml without it."""
    for host in raw["hosts"]:
        for place in ca_places(host):
            if place not in out.files:
                return (f"host {brief(host.get('url'), SHOWN)}: caCerts path {CERTS_DIR}/{place} is not a file "
                        f"published in {NODE_CONFIG_FILES_KEY}")
    return None


def _node_auth_headers(entry: Entry, node_auth: Mapping[str, str] | None,
                       out: Desired) -> tuple[dict[str, dict[str, str]], str | None]:
    """Per host URL the Authorization header of the hosts that name a key of the node-auth Secret (a cache only
    nodes can read; a mirror's hosts name none), and what is missing when one cannot be had."""
    headers: dict[str, dict[str, str]] = {}
    for host in entry.hosts:
        key = host.get(HOST_NODE_AUTH_FIELD)
        if key is None:
            continue
        out.node_auth_wanted.add(key)
        header = (node_auth or {}).get(key)
        if header is None or not _HEADER_VALUE_RE.match(header):
            what = "is not there (yet)" if header is None else "is not a header value"
            return {}, f"key {key} of Secret {NODE_AUTH_SHOOT_SECRET} {what}"
        headers[host["url"]] = {"Authorization": header}
    return headers, None


def _read_files(text: Any, source: str, out: Desired) -> bool:
    """The files of one ConfigMap's ``files.yaml`` into ``out``; False when the key cannot be read at all."""
    if not text:
        return True
    try:
        doc = yamldoc.load(text) or {}
    except yaml.YAMLError as exc:
        out.complete = False
        out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_FILES_KEY} is not YAML ({exc.__class__.__name__}); "
                            "nothing is removed until it is fixed")
        return False
    except yamldoc.YAMLLimitError as exc:
        out.complete = False
        out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_FILES_KEY} cannot be used: it is {exc}; nothing is "
                            "removed until it is fixed")
        return False
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        out.complete = False
        out.problems.append(f"ConfigMap {source}: {NODE_CONFIG_FILES_KEY} has no list 'files'; nothing is removed "
                            "until it is fixed")
        return False
    for i, raw in enumerate(files):
        place, content, problem = _file_problem(raw)
        if problem is not None or place is None or content is None:
            out.problems.append(f"ConfigMap {source}: files[{i}]: {problem}; file skipped")
            if place is not None:
                out.keep.add(place.split("/", 1)[0])
            continue
        if place in out.files and out.files[place] != content:
            out.problems.append(f"{place} is published twice with different content: keeping the first")
            continue
        out.files[place] = content
    return True


# --------------------------------------------------------------------------------------------------
# pure: from what is wanted and what is on disk to what to do


@dataclass(frozen=True)
class DirState:
    managed: bool  # carries the marker
    hosts_toml: str | None = field(repr=False)  # its hosts.toml, if any (read only for managed directories)
    files: Mapping[str, str] = field(default_factory=dict)  # its CA bundle files by name (managed ones only)


@dataclass
class Observed:
    dirs: dict[str, DirState] = field(default_factory=dict)  # ROOT's subdirectories by name
    ca_bundle: str | None = None
    ca_bundle_managed: bool = False


@dataclass
class Plan:
    write: dict[str, str] = field(default_factory=dict, repr=False)  # upstream -> hosts.toml to write
    private: set[str] = field(default_factory=set)  # of those, the ones with credentials: root only (0600)
    write_files: dict[str, str] = field(default_factory=dict)  # "<dir>/<name>" -> content, before the hosts.toml
    remove_files: list[str] = field(default_factory=list)  # "<dir>/<name>" of ours no longer published
    remove: list[str] = field(default_factory=list)  # upstreams whose (managed) directory goes
    waiting: list[str] = field(default_factory=list)  # wanted or changed, but the cache does not answer
    foreign: list[str] = field(default_factory=list)  # wanted, but the directory is not ours
    # wanted, but a CA file it names is in a directory that is not ours (nor a directory at all: a link, a file):
    # upstream -> that file's "<dir>/<name>". Not written: containerd would read what somebody else put there.
    foreign_ca: dict[str, str] = field(default_factory=dict)
    write_ca_bundle: str | None = None
    remove_ca_bundle: bool = False
    ca_bundle_foreign: bool = False  # a ca-bundle.pem that is not ours is in the way

    @property
    def empty(self) -> bool:
        return not (self.write or self.remove or self.write_ca_bundle or self.remove_ca_bundle or self.write_files
                    or self.remove_files)


def _changes(desired: Desired, observed: Observed) -> dict[str, str]:
    """Upstreams whose hosts.toml must be (re)written, foreign directories left out."""
    out = {}
    for upstream, text in desired.hosts_toml.items():
        current = observed.dirs.get(upstream)
        if current is not None and not current.managed:
            continue
        if current is None or current.hosts_toml != text:
            out[upstream] = text
    return out


def to_probe(desired: Desired, observed: Observed) -> dict[str, str]:
    """upstream -> URL to probe: the entries about to be (re)written that ask for a readiness probe."""
    return {u: desired.entries[u].probe_url for u in _changes(desired, observed)
            if desired.entries[u].readiness_probe}


def _ours_or_new(observed: Observed, directory: str) -> bool:
    state = observed.dirs.get(directory)
    return state is None or state.managed


def plan(desired: Desired, observed: Observed, answering: Iterable[str] = ()) -> Plan:
    """What to write and remove; ``answering`` are the upstreams whose cache answered its probe."""
    answering = set(answering)
    out = Plan()
    for upstream, text in _changes(desired, observed).items():
        foreign_ca = sorted(place for place in desired.ca_files.get(upstream, ())
                            if not _ours_or_new(observed, place.split("/", 1)[0]))
        if foreign_ca:
            out.foreign_ca[upstream] = foreign_ca[0]
        elif desired.entries[upstream].readiness_probe and upstream not in answering:
            out.waiting.append(upstream)
        else:
            out.write[upstream] = text
    out.private = {u for u in out.write if u in desired.private}
    file_dirs = {place.split("/", 1)[0] for place in desired.files}
    out.foreign = sorted(u for u in set(desired.hosts_toml) | file_dirs
                         if u in observed.dirs and not observed.dirs[u].managed)
    for place, text in sorted(desired.files.items()):
        directory, name = place.split("/", 1)
        state = observed.dirs.get(directory)
        if state is None or (state.managed and state.files.get(name) != text):
            out.write_files[place] = text
    if desired.complete:
        wanted = set(desired.entries) | file_dirs | desired.keep
        out.remove = sorted(name for name, state in observed.dirs.items() if state.managed and name not in wanted)
        out.remove_files = sorted(f"{name}/{file}" for name, state in observed.dirs.items()
                                  if state.managed and name in wanted for file in state.files
                                  if f"{name}/{file}" not in desired.files)
    https = any(e.https for u, e in desired.entries.items() if u not in out.foreign)
    if observed.ca_bundle is not None and not observed.ca_bundle_managed:
        out.ca_bundle_foreign = https  # somebody else's file: never ours to write or remove
    elif https:
        if desired.ca_bundle is not None and observed.ca_bundle != desired.ca_bundle:
            out.write_ca_bundle = desired.ca_bundle  # (no bundle published: an older one of ours stays)
    elif observed.ca_bundle_managed and desired.complete and not desired.keep:
        out.remove_ca_bundle = True
    return out
