"""The node agent (standalone mode): containerd's ``hosts.toml`` and CA bundle on every node.

Under Gardener, gardener-node-agent writes ``/etc/containerd/certs.d/<upstream>/hosts.toml`` from the
OperatingSystemConfig's ``criConfig.containerd.registries``. Without Gardener this agent does it, from what
the controller publishes in the shoot: ConfigMaps in ``kube-system`` labelled
``registry-cache.gardener.cloud/node-config: "true"`` with

- ``registries.yaml``: ``{"registries": [{upstream, server, hosts: [{url, capabilities, caCerts?}],
  readinessProbe}]}`` (Gardener's OperatingSystemConfig shape, see :func:`.render.containerd_registries`);
- ``ca-bundle.pem``: the CA certificates nodes trust for the caches' TLS.

It LISTs those ConfigMaps once (all of them: one per Extension in standalone mode), then WATCHes them
(:mod:`.watch`), and brings ``ROOT`` (default ``/etc/containerd/certs.d``) in line on every change, and every
``--interval`` seconds from what it keeps in memory (caches that do not answer yet are probed again; no API
request):

- ``ROOT/<upstream>/hosts.toml`` per upstream, rendered with :func:`.render.hosts_toml_for_entry`, written
  only once the cache answers when ``readinessProbe`` is set (a GET of ``<host>/v2/``, 2 s timeout,
  trusting the published CA bundle; any HTTP response counts, as with gardener-node-agent). Until then an
  older file of ours stays as it is: containerd falls back to the upstream when the cache is away anyway.
- ``ROOT/ca-bundle.pem`` while any host is https.
- a cache host's ``dialTimeout`` as containerd's ``dial_timeout``; a cache host that names a key of the Secret
  ``registry-cache-node-auth`` (``run --node-auth``) gets that key's ``Authorization`` header, and its
  ``hosts.toml`` is written readable by root only (0600). Mirror hosts carry neither.
- a private mirror's CA bundle where the entry's ``caCerts`` names it (``files.yaml`` of the ConfigMap:
  ``ROOT/<dir>/<host>-ca-bundle.pem``, the directory of the upstream with ``:`` as ``-``, as Gardener names it),
  written before the ``hosts.toml`` that names it, removed with it.
- Directories it creates carry a marker file (:data:`MARKER`). A directory without it is not ours: never
  written, never removed (a user's own ``docker.io/hosts.toml`` stays as it is, and the log says so).
  The directory of an upstream that is no longer published is removed only when it carries the marker.
- Every file is written atomically (temp file in the same directory, fsync, rename).
- An upstream published by two ConfigMaps: the older ConfigMap (creationTimestamp, then namespace/name)
  wins, and the log says which.

The pure part (:mod:`.plan`) computes the files from the ConfigMaps and what to do from what is on disk and
which caches answer; :class:`NodeAgent` does the I/O. ``registry-cache node-agent`` runs it
(:mod:`extension.cli.nodeagent`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import errno
import http.client
import logging
import os
import ssl
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from extension.constants import (
    CA_BUNDLE_FILE,
    CERTS_DIR,
    MIRROR_CA_BUNDLE_SUFFIX,
    NODE_AUTH_SHOOT_SECRET,
    NODE_CONFIG_LABEL,
    SHOOT_NAMESPACE,
)
from extension.nodeagent.plan import (
    CA_MARKER,
    HOSTS_FILE,
    MARKER,
    Desired,
    DirState,
    Observed,
    Plan,
    desired_state,
    plan,
    to_probe,
)

log = logging.getLogger("registry-cache.node-agent")

DEFAULT_ROOT = CERTS_DIR
DEFAULT_NAMESPACE = SHOOT_NAMESPACE
PROBE_TIMEOUT_SECONDS = 2.0
MAX_READ = 4 << 20  # bytes of a file in ROOT read to compare: more than any hosts.toml or CA bundle we write


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


def secret_strings(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """A Secret's data, decoded (keys whose value is not UTF-8 are left out); {} for no Secret."""
    out = {}
    for key, value in ((secret or {}).get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def _read(path: Path) -> str | None:
    """A file's text; None when there is none. A link, a device, a FIFO or a file larger than any we write is
    not read (a link to ``/dev/zero`` would never end): it reads as something that differs from anything wanted,
    so a file of ours is replaced (the rename replaces a link itself, never its target)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link
            return "\0not a regular file"
        log.warning("cannot read %s: %s", path, exc)
        return "\0unreadable"  # differs from anything wanted: rewritten if ours
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "\0not a regular file"
        data = os.read(fd, MAX_READ + 1)
        while len(data) <= MAX_READ and (more := os.read(fd, MAX_READ + 1 - len(data))):
            data += more
        if len(data) > MAX_READ:
            return "\0too large"
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return "\0unreadable"
    finally:
        os.close(fd)


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
            files: dict[str, str] = {}
            if managed:
                try:
                    for f in sorted(directory.iterdir()):
                        if f.name.endswith(MIRROR_CA_BUNDLE_SUFFIX) and f.is_file() and not f.is_symlink():
                            files[f.name] = _read(f) or ""
                except OSError as exc:  # one directory that cannot be listed never stops the others
                    log.warning("cannot list %s: %s", directory, exc)
            out.dirs[child.name] = DirState(managed, _read(directory / HOSTS_FILE) if managed else None, files)
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
NodeAuthReader = Callable[[], Mapping[str, str]]  # the node-auth Secret's data, decoded; {} when it is not there
Prober = Callable[[str, str | None], bool]


class NodeAgent:
    """Brings ROOT in line with the ConfigMaps; :meth:`sync` once, :meth:`run` until stopped."""

    def __init__(self, list_configmaps: ConfigMapLister, root: str | Path, ca_path: str | None = None,
                 prober: Prober | None = None, probe_timeout: float = PROBE_TIMEOUT_SECONDS,
                 read_node_auth: NodeAuthReader | None = None,
                 release_node_auth: Callable[[], None] | None = None):
        self.list_configmaps = list_configmaps
        self.read_node_auth = read_node_auth or (lambda: {})
        # called after a sync whose ConfigMaps name no key of the node-auth Secret (a watch of it may end)
        self.release_node_auth = release_node_auth or (lambda: None)
        self._wake = threading.Event()
        self.root = Path(root).absolute()  # hosts.toml names the CA bundle by an absolute path
        self.ca_path = ca_path or str(self.root / CA_BUNDLE_FILE)
        self.prober = prober or (lambda url, ca: probe(url, ca, probe_timeout))
        self._said: set[str] = set()  # messages of the last sync: repeated ones are not logged again

    @classmethod
    def for_kube(cls, kube: Any, namespace: str, root: str | Path, **kw: Any) -> NodeAgent:
        """Reads the ConfigMaps (LIST by label) and, only when an entry needs it, the one node-auth Secret
        (GET by name: all the agent may read of Secrets) at every sync: ``--once``. For good,
        :func:`.watch.watching_agent` watches them instead."""
        return cls(lambda: kube.list("ConfigMap", namespace, label_selector=f"{NODE_CONFIG_LABEL}=true"), root,
                   read_node_auth=lambda: secret_strings(kube.get("Secret", NODE_AUTH_SHOOT_SECRET, namespace)), **kw)

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
        if not desired.node_auth_wanted:
            self.release_node_auth()
        else:
            try:
                desired = desired_state(configmaps, self.ca_path, self.read_node_auth())
            except Exception as exc:  # noqa: BLE001 - its entries wait; the others are written
                self._say(said, logging.WARNING, f"cannot read Secret {NODE_AUTH_SHOOT_SECRET}: "
                                                 f"{type(exc).__name__}: {getattr(exc, 'status', '')}")
        for problem in desired.problems:
            self._say(said, logging.WARNING, problem)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            observed = observe(self.root)
            probes = to_probe(desired, observed)
            answering = self._probe_all(probes, desired.ca_bundle)
            todo = plan(desired, observed, answering)
            self._report(said, todo, desired, probes)
            failures = self._apply(todo)
        except OSError as exc:
            self._say(said, logging.ERROR, f"cannot update {self.root}: {exc}")
            self._said = said
            return SyncResult(False, desired=desired, error=str(exc))
        for failure in failures:
            self._say(said, logging.ERROR, failure)
        self._said = said
        return SyncResult(not failures, todo, desired, "; ".join(failures) or None)

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
        for upstream, place in sorted(todo.foreign_ca.items()):
            self._say(said, logging.WARNING, f"{upstream}: {HOSTS_FILE} not written: the CA file it names, "
                                             f"{self.root / place}, is in a directory that is not ours (no {MARKER}"
                                             "): containerd would read whatever is there")
        if todo.ca_bundle_foreign:
            self._say(said, logging.WARNING, f"{self.root / CA_BUNDLE_FILE} is not ours (no {CA_MARKER}): left as "
                                             "it is; https caches may not be trusted by containerd")

    def _apply(self, todo: Plan) -> list[str]:
        """Carry out the plan; one entry that cannot be written never keeps the others from being written.
        Returns what failed."""
        failures: list[str] = []
        if todo.write_ca_bundle is not None:
            try:
                write_atomic(self.root / CA_MARKER, "ca-bundle.pem in this directory is written by the "
                                                    "registry-cache node agent.\n")
                write_atomic(self.root / CA_BUNDLE_FILE, todo.write_ca_bundle)
                log.info("wrote %s", self.root / CA_BUNDLE_FILE)
            except OSError as exc:
                failures.append(f"cannot write {self.root / CA_BUNDLE_FILE}: {exc}")
        unwritten: list[str] = []  # CA files that could not be written: a hosts.toml naming one is not written
        for place, text in sorted(todo.write_files.items()):  # before a hosts.toml names them
            name, file = place.split("/", 1)
            try:
                write_atomic(self._own_dir(name) / file, text)
                log.info("%s: wrote %s", name, self.root / place)
            except OSError as exc:
                unwritten.append(place)
                failures.append(f"{name}: cannot write {self.root / place}: {exc}")
        for upstream, text in sorted(todo.write.items()):
            missing = [place for place in unwritten if f"/{place}\"" in text]  # its caCerts (TOML strings)
            if missing:  # containerd refuses a hosts.toml whose CA file is missing: the old one stays
                failures.append(f"{upstream}: {HOSTS_FILE} not written: it names {self.root / missing[0]}, which "
                                "could not be written")
                continue
            try:
                directory = self._own_dir(upstream)
                private = upstream in todo.private
                write_atomic(directory / HOSTS_FILE, text, mode=0o600 if private else 0o644)
                log.info("%s: wrote %s%s", upstream, directory / HOSTS_FILE,
                         " (with the cache's credentials, readable by root only)" if private else "")
            except OSError as exc:
                failures.append(f"{upstream}: cannot write {self.root / upstream / HOSTS_FILE}: {exc}")
        for place in todo.remove_files:
            try:
                (self.root / place).unlink()
                log.info("removed %s (no longer published)", self.root / place)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failures.append(f"cannot remove {self.root / place}: {exc}")
        for upstream in todo.remove:
            try:
                self._remove(self.root / upstream)
            except OSError as exc:
                failures.append(f"{upstream}: cannot remove {self.root / upstream}: {exc}")
        if todo.remove_ca_bundle:
            for name in (CA_BUNDLE_FILE, CA_MARKER):
                try:
                    (self.root / name).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failures.append(f"cannot remove {self.root / name}: {exc}")
            log.info("removed %s: no https cache is left", self.root / CA_BUNDLE_FILE)
        return failures

    def _own_dir(self, name: str) -> Path:
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        if not (directory / MARKER).is_file():  # a new directory: marked before anything is in it
            write_atomic(directory / MARKER, _marker_text(name))
        return directory

    def _remove(self, directory: Path) -> None:
        """Our files, then the directory if nothing else is in it (the marker last: a crash in between leaves
        it, so the next sync finishes the job)."""
        ours = [f.name for f in directory.glob(f"*{MIRROR_CA_BUNDLE_SUFFIX}") if f.is_file() and not f.is_symlink()]
        for name in (HOSTS_FILE, *ours, MARKER):
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
    def wake(self) -> None:
        """Sync now (what it reads changed, or it is to stop): from any thread."""
        self._wake.set()

    def run(self, interval: float, stop: threading.Event | None = None,
            ready: Callable[[threading.Event], bool] | None = None) -> int:
        """Sync when :meth:`wake` is called and at the latest every ``interval`` seconds (re-probing the caches
        that do not answer yet, checking ROOT: with a watched source that reads memory, not the API server)
        until ``stop`` is set (call :meth:`wake` too, to end the wait at once). ``ready(stop)``: wait for the
        source's first LIST before the first sync (False: stopped meanwhile)."""
        stop = stop or threading.Event()
        log.info("node agent: writing %s on every change, and checking it every %.1fs (CA bundle at %s for "
                 "containerd)", self.root, interval, self.ca_path)
        if ready is None or ready(stop):
            while not stop.is_set():
                self._wake.clear()
                try:
                    self.sync()
                except Exception:
                    log.exception("sync failed")
                self._wake.wait(interval)
        log.info("node agent: stopped")
        return 0
