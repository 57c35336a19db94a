"""The node agent (standalone mode): containerd's ``hosts.toml`` and CA bundle on every node.

Under Gardener, gardener-node-agent writes ``/etc/containerd/certs.d/<upstream>/hosts.toml`` from the
OperatingSystemConfig's ``criConfig.containerd.registries``. Without Gardener this agent does it, from what
the controller publishes in the shoot: ConfigMaps in ``kube-system`` labelled
``registry-cache.gardener.cloud/node-config: "true"`` with

- ``registries.yaml``: ``{"registries": [{upstream, server, hosts: [{url, capabilities, caCerts?}],
  readinessProbe}]}`` (Gardener's OperatingSystemConfig shape, see :func:`.render.containerd_registries`);
- ``ca-bundle.pem``: the CA certificates nodes trust for the caches' TLS.

Every ``--interval`` seconds it LISTs those ConfigMaps (all of them: one per Extension in standalone mode)
and brings ``ROOT`` (default ``/etc/containerd/certs.d``) in line:

- ``ROOT/<upstream>/hosts.toml`` per upstream, rendered with :func:`.render.hosts_toml_for_entry`, written
  only once the cache answers when ``readinessProbe`` is set (a GET of ``<host>/v2/``, 2 s timeout,
  trusting the published CA bundle; any HTTP response counts, as with gardener-node-agent). Until then an
  older file of ours stays as it is: containerd falls back to the upstream when the cache is away anyway.
- ``ROOT/ca-bundle.pem`` while any host is https.
- Directories it creates carry a marker file (:data:`MARKER`). A directory without it is not ours: never
  written, never removed (a user's own ``docker.io/hosts.toml`` stays as it is, and the log says so).
  The directory of an upstream that is no longer published is removed only when it carries the marker.
- Every file is written atomically (temp file in the same directory, fsync, rename).
- An upstream published by two ConfigMaps: the older ConfigMap (creationTimestamp, then namespace/name)
  wins, and the log says which.

The pure part (:func:`desired_state`, :func:`plan`) computes the files from the ConfigMaps and what to do
from what is on disk and which caches answer; :class:`NodeAgent` does the I/O.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import logging
import os
import re
import signal
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import yaml

from extension.component.render import CA_BUNDLE_PATH, NODE_CONFIG_LABEL, hosts_toml_for_entry

log = logging.getLogger("registry-cache.node-agent")

DEFAULT_ROOT = "/etc/containerd/certs.d"
DEFAULT_NAMESPACE = "kube-system"
HOSTS_FILE = "hosts.toml"
CA_BUNDLE_FILE = "ca-bundle.pem"
MARKER = ".registry-cache-managed"
# In ROOT, next to ca-bundle.pem: the bundle is ours (ROOT itself is containerd's, not ours).
CA_MARKER = ".registry-cache-managed-ca-bundle"
REGISTRIES_KEY = "registries.yaml"
CA_BUNDLE_KEY = "ca-bundle.pem"
PROBE_PATH = "/v2/"
PROBE_TIMEOUT_SECONDS = 2.0

# A directory name containerd looks up for a registry host: host[:port], nothing that leaves ROOT.
_UPSTREAM_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$")
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


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
    hosts_toml: dict[str, str] = field(default_factory=dict)  # by upstream
    ca_bundle: str | None = None  # every published CA certificate, deduplicated; None when there is none
    # Upstreams named by an entry that could not be used: their directories are kept as they are.
    keep: set[str] = field(default_factory=set)
    # False when a whole ConfigMap could not be read: nothing is removed then (its upstreams are unknown).
    complete: bool = True
    problems: list[str] = field(default_factory=list)


def _source(cm: Mapping[str, Any]) -> str:
    meta = cm.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _order(cm: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = cm.get("metadata") or {}
    # RFC 3339 timestamps in UTC sort as strings; a ConfigMap without one (never from the API) sorts last.
    return (meta.get("creationTimestamp") or "~", meta.get("namespace") or "", meta.get("name") or "")


def valid_upstream(upstream: Any) -> bool:
    return isinstance(upstream, str) and bool(_UPSTREAM_RE.match(upstream)) and ".." not in upstream


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
    if not valid_upstream(raw.get("upstream")):
        return f"upstream {raw.get('upstream')!r} is not a registry host[:port]"
    if not _http_url(raw.get("server")):
        return f"server {raw.get('server')!r} is not an http(s) URL"
    hosts = raw.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        return "no hosts"
    for host in hosts:
        if not isinstance(host, dict) or not _http_url(host.get("url")):
            return f"host {host!r} has no http(s) url"
        ca = host.get("caCerts")
        if ca is not None and (not isinstance(ca, list) or not all(isinstance(c, str) and c for c in ca)):
            return f"host {host.get('url')}: caCerts is not a list of paths"
    if not isinstance(raw.get("readinessProbe", False), bool):
        return "readinessProbe is not a boolean"
    return None


def _with_ca_path(host: Mapping[str, Any], ca_path: str) -> dict[str, Any]:
    """The controller names the bundle at containerd's default place; point it at where ours is."""
    out = dict(host)
    if host.get("caCerts"):
        out["caCerts"] = [ca_path if c == CA_BUNDLE_PATH else c for c in host["caCerts"]]
    return out


def ca_certificates(text: str) -> list[str]:
    return [m.group(0) for m in _PEM_RE.finditer(text)]


def desired_state(configmaps: Iterable[Mapping[str, Any]], ca_path: str = CA_BUNDLE_PATH) -> Desired:
    """The entries, files and CA bundle the ConfigMaps ask for; ``ca_path`` is where containerd finds the
    bundle this agent writes (``ROOT/ca-bundle.pem`` as containerd sees ROOT)."""
    out = Desired()
    certs: list[str] = []
    for cm in sorted(configmaps, key=_order):
        source = _source(cm)
        data = cm.get("data") or {}
        try:
            doc = yaml.safe_load(data.get(REGISTRIES_KEY) or "") or {}
        except yaml.YAMLError as exc:
            out.complete = False
            out.problems.append(f"ConfigMap {source}: {REGISTRIES_KEY} is not YAML ({exc.__class__.__name__}); "
                                "nothing is removed until it is fixed")
            continue
        registries = doc.get("registries") if isinstance(doc, dict) else None
        if not isinstance(registries, list):
            out.complete = False
            out.problems.append(f"ConfigMap {source}: {REGISTRIES_KEY} has no list 'registries'; nothing is "
                                "removed until it is fixed")
            continue
        for i, raw in enumerate(registries):
            problem = _entry_problem(raw)
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
            out.entries[upstream] = entry
            out.hosts_toml[upstream] = hosts_toml_for_entry(
                {"upstream": upstream, "server": entry.server, "hosts": list(entry.hosts)})
        bundle = data.get(CA_BUNDLE_KEY)
        if bundle:
            found = ca_certificates(bundle)
            if not found:
                out.problems.append(f"ConfigMap {source}: {CA_BUNDLE_KEY} holds no PEM certificate")
            certs += [c for c in found if c not in certs]
    out.ca_bundle = "\n".join(certs) + "\n" if certs else None
    return out


# --------------------------------------------------------------------------------------------------
# pure: from what is wanted and what is on disk to what to do


@dataclass(frozen=True)
class DirState:
    managed: bool  # carries the marker
    hosts_toml: str | None  # its hosts.toml, if any (read only for managed directories)


@dataclass
class Observed:
    dirs: dict[str, DirState] = field(default_factory=dict)  # ROOT's subdirectories by name
    ca_bundle: str | None = None
    ca_bundle_managed: bool = False


@dataclass
class Plan:
    write: dict[str, str] = field(default_factory=dict)  # upstream -> hosts.toml to write
    remove: list[str] = field(default_factory=list)  # upstreams whose (managed) directory goes
    waiting: list[str] = field(default_factory=list)  # wanted or changed, but the cache does not answer
    foreign: list[str] = field(default_factory=list)  # wanted, but the directory is not ours
    write_ca_bundle: str | None = None
    remove_ca_bundle: bool = False
    ca_bundle_foreign: bool = False  # a ca-bundle.pem that is not ours is in the way

    @property
    def empty(self) -> bool:
        return not (self.write or self.remove or self.write_ca_bundle or self.remove_ca_bundle)


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


def plan(desired: Desired, observed: Observed, answering: Iterable[str] = ()) -> Plan:
    """What to write and remove; ``answering`` are the upstreams whose cache answered its probe."""
    answering = set(answering)
    out = Plan()
    for upstream, text in _changes(desired, observed).items():
        if desired.entries[upstream].readiness_probe and upstream not in answering:
            out.waiting.append(upstream)
        else:
            out.write[upstream] = text
    out.foreign = sorted(u for u in desired.hosts_toml
                         if u in observed.dirs and not observed.dirs[u].managed)
    if desired.complete:
        out.remove = sorted(name for name, state in observed.dirs.items()
                            if state.managed and name not in desired.entries and name not in desired.keep)
    https = any(e.https for u, e in desired.entries.items() if u not in out.foreign)
    if observed.ca_bundle is not None and not observed.ca_bundle_managed:
        out.ca_bundle_foreign = https  # somebody else's file: never ours to write or remove
    elif https:
        if desired.ca_bundle is not None and observed.ca_bundle != desired.ca_bundle:
            out.write_ca_bundle = desired.ca_bundle  # (no bundle published: an older one of ours stays)
    elif observed.ca_bundle_managed and desired.complete and not desired.keep:
        out.remove_ca_bundle = True
    return out


# --------------------------------------------------------------------------------------------------
# I/O: probing, reading and writing ROOT


def probe(url: str, ca_bundle: str | None = None, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether something answers HTTP at ``url``: any status counts (a registry says 200 or 401 on /v2/).
    https trusts ``ca_bundle`` (else the system's roots) and checks the name or IP. No proxy, no redirect."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            if ca_bundle:
                ctx.load_verify_locations(cadata=ca_bundle)
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "registry-cache-node-agent"})
            conn.getresponse().read(1024)
            return True
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ssl.SSLError, ValueError) as exc:
        log.debug("probe %s: %s", url, exc)
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return "\0unreadable"  # differs from anything wanted: rewritten if ours


def observe(root: Path) -> Observed:
    out = Observed()
    try:
        children = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return out
    for child in children:
        if child.name == CA_BUNDLE_FILE and not child.is_dir(follow_symlinks=False):
            out.ca_bundle = _read(Path(child.path))
        elif child.is_dir(follow_symlinks=False):
            directory = Path(child.path)
            managed = (directory / MARKER).is_file() and not (directory / MARKER).is_symlink()
            out.dirs[child.name] = DirState(managed, _read(directory / HOSTS_FILE) if managed else None)
        elif child.name != CA_MARKER:
            out.dirs[child.name] = DirState(False, None)  # a file or a link is never ours
    out.ca_bundle_managed = (root / CA_MARKER).is_file()
    return out


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory, fsync, rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _marker_text(upstream: str) -> str:
    return (f"This directory ({upstream}) is written by the registry-cache node agent, which removes it when "
            "the registry cache for this upstream is removed.\nDelete this file to keep the directory: the "
            "agent then never touches it again.\n")


@dataclass
class SyncResult:
    ok: bool
    plan: Plan | None = None
    desired: Desired | None = None
    error: str | None = None


ConfigMapLister = Callable[[], list[dict[str, Any]]]
Prober = Callable[[str, str | None], bool]


class NodeAgent:
    """Brings ROOT in line with the ConfigMaps; :meth:`sync` once, :meth:`run` until stopped."""

    def __init__(self, list_configmaps: ConfigMapLister, root: str | Path, ca_path: str | None = None,
                 prober: Prober | None = None, probe_timeout: float = PROBE_TIMEOUT_SECONDS):
        self.list_configmaps = list_configmaps
        self.root = Path(root).absolute()  # hosts.toml names the CA bundle by an absolute path
        self.ca_path = ca_path or str(self.root / CA_BUNDLE_FILE)
        self.prober = prober or (lambda url, ca: probe(url, ca, probe_timeout))
        self._said: set[str] = set()  # messages of the last sync: repeated ones are not logged again

    @classmethod
    def for_kube(cls, kube: Any, namespace: str, root: str | Path, **kw: Any) -> "NodeAgent":
        return cls(lambda: kube.list("ConfigMap", namespace, label_selector=f"{NODE_CONFIG_LABEL}=true"), root, **kw)

    # --- one pass ------------------------------------------------------------------------------------
    def sync(self) -> SyncResult:
        said: set[str] = set()
        try:
            configmaps = self.list_configmaps()
        except Exception as exc:  # noqa: BLE001 - the API server away: keep every file as it is
            self._say(said, logging.WARNING, f"cannot list the node-config ConfigMaps, files left as they are: "
                                             f"{exc}")
            self._said |= said  # what was said before still holds: not repeated once the API server is back
            return SyncResult(False, error=str(exc))
        desired = desired_state(configmaps, self.ca_path)
        for problem in desired.problems:
            self._say(said, logging.WARNING, problem)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            observed = observe(self.root)
            probes = to_probe(desired, observed)
            answering = self._probe_all(probes, desired.ca_bundle)
            todo = plan(desired, observed, answering)
            self._report(said, todo, desired, probes)
            self._apply(todo)
        except OSError as exc:
            self._say(said, logging.ERROR, f"cannot update {self.root}: {exc}")
            self._said = said
            return SyncResult(False, desired=desired, error=str(exc))
        self._said = said
        return SyncResult(True, todo, desired)

    def _probe_all(self, probes: Mapping[str, str], ca_bundle: str | None) -> set[str]:
        if not probes:
            return set()
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(probes))) as pool:
            results = dict(zip(probes, pool.map(lambda url: self.prober(url, ca_bundle), probes.values())))
        return {u for u, ok in results.items() if ok}

    def _say(self, said: set[str], level: int, message: str) -> None:
        """Log a state once: while it stays the same from one sync to the next, it is not repeated."""
        said.add(message)
        if message not in self._said:
            log.log(level, "%s", message)

    def _report(self, said: set[str], todo: Plan, desired: Desired, probes: Mapping[str, str]) -> None:
        for upstream in todo.waiting:
            entry = desired.entries[upstream]
            self._say(said, logging.INFO, f"{upstream}: the cache at {entry.hosts[0]['url']} does not answer "
                                          f"{probes[upstream]} yet; hosts.toml waits for it")
        for upstream in todo.foreign:
            self._say(said, logging.WARNING, f"{upstream}: {self.root / upstream} is not ours (no {MARKER}): left "
                                             "as it is, this upstream's cache is not configured on this node")
        if todo.ca_bundle_foreign:
            self._say(said, logging.WARNING, f"{self.root / CA_BUNDLE_FILE} is not ours (no {CA_MARKER}): left as "
                                             "it is; https caches may not be trusted by containerd")

    def _apply(self, todo: Plan) -> None:
        if todo.write_ca_bundle is not None:
            write_atomic(self.root / CA_MARKER, "ca-bundle.pem in this directory is written by the registry-cache "
                                                "node agent.\n")
            write_atomic(self.root / CA_BUNDLE_FILE, todo.write_ca_bundle)
            log.info("wrote %s", self.root / CA_BUNDLE_FILE)
        for upstream, text in sorted(todo.write.items()):
            directory = self.root / upstream
            directory.mkdir(exist_ok=True)
            if not (directory / MARKER).is_file():  # a new directory: marked before anything is in it
                write_atomic(directory / MARKER, _marker_text(upstream))
            write_atomic(directory / HOSTS_FILE, text)
            log.info("%s: wrote %s", upstream, directory / HOSTS_FILE)
        for upstream in todo.remove:
            self._remove(self.root / upstream)
        if todo.remove_ca_bundle:
            for name in (CA_BUNDLE_FILE, CA_MARKER):
                try:
                    (self.root / name).unlink()
                except FileNotFoundError:
                    pass
            log.info("removed %s: no https cache is left", self.root / CA_BUNDLE_FILE)

    def _remove(self, directory: Path) -> None:
        """Our two files, then the directory if nothing else is in it (hosts.toml first: a crash in between
        leaves the marker, so the next sync finishes the job)."""
        for name in (HOSTS_FILE, MARKER):
            try:
                (directory / name).unlink()
            except FileNotFoundError:
                pass
        try:
            directory.rmdir()
            log.info("%s: removed %s (the cache is gone)", directory.name, directory)
        except OSError:
            others = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
            log.warning("%s: removed our hosts.toml; %s stays: it holds files we did not write: %s",
                        directory.name, directory, ", ".join(others))

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, interval: float, stop: threading.Event | None = None) -> int:
        stop = stop or threading.Event()
        log.info("node agent: writing %s every %.1fs (CA bundle at %s for containerd)", self.root, interval,
                 self.ca_path)
        while True:
            started = time.monotonic()
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("sync failed")
            if stop.wait(max(0.0, interval - (time.monotonic() - started))):
                log.info("node agent: stopped")
                return 0


# --------------------------------------------------------------------------------------------------
# command line


def cmd_node_agent(args: argparse.Namespace) -> int:
    from extension.kube import Kube

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.interval <= 0:
        print("error: --interval must be greater than 0", file=sys.stderr)
        return 2
    try:
        kube = Kube.from_kubeconfig(args.kubeconfig)
    except Exception as exc:  # noqa: BLE001 - the kubeconfig cannot be used
        print(f"error: cannot load the kubeconfig: {exc}", file=sys.stderr)
        return 2
    agent = NodeAgent.for_kube(kube, args.namespace, args.root, ca_path=args.ca_path,
                               probe_timeout=args.probe_timeout)
    if args.once:
        return 0 if agent.sync().ok else 1
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    return agent.run(args.interval, stop)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``node-agent`` on the ``registry-cache`` command line's subparsers."""
    p = subparsers.add_parser(
        "node-agent", help="write containerd's hosts.toml and CA bundle on this node (standalone mode)",
        description="Reads the ConfigMaps labelled registry-cache.gardener.cloud/node-config=true that the "
                    "controller publishes and writes ROOT/<upstream>/hosts.toml once each cache answers, and "
                    "ROOT/ca-bundle.pem. Removes only directories it wrote (they carry the file "
                    f"{MARKER}). Runs until SIGTERM/SIGINT; --once syncs once (exit 0, or 1 when the "
                    "ConfigMaps could not be read or ROOT not written).")
    p.add_argument("--kubeconfig", help="the cluster (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"containerd's hosts directory (default {DEFAULT_ROOT})")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                   help=f"where the ConfigMaps are (default {DEFAULT_NAMESPACE})")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between syncs (default 5)")
    p.add_argument("--once", action="store_true", help="sync once and exit")
    p.add_argument("--ca-path", help="the path containerd reads the CA bundle at, written into hosts.toml "
                                     "(default ROOT/ca-bundle.pem; set it when this process sees ROOT under "
                                     "another path than containerd does)")
    p.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_SECONDS,
                   help=f"seconds a cache has to answer its readiness probe (default {PROBE_TIMEOUT_SECONDS:g})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_node_agent)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m extension.nodeagent [OPTIONS]``: the same as ``registry-cache node-agent [OPTIONS]``."""
    parser = argparse.ArgumentParser(prog="registry-cache")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["node-agent", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
