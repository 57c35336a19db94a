"""The real data path as processes: distribution registries (a private upstream and caches started from the
rendered ``config.yml``), crane as a registry client, and a private containerd driven with ``ctr``.

Every process runs in its own session (``start_new_session``) and is stopped by the fixture that started it;
each writes its logs into its work directory so that a failing test can show them.

Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from extension.local.registries import Request, parse_access_log

REPO = Path(__file__).resolve().parents[2]
REGISTRY_BINS = REPO / "hack" / "registry-bins.sh"
E2E_DEPS = REPO / "hack" / "e2e-deps.sh"
CONTAINERD_BINS = REPO / "hack" / "containerd-bins.sh"
LOOPBACK = "127.0.0.1"

# What the official registry:3 image sets (its Dockerfile): no OpenTelemetry exporter. Without it
# distribution 3 tries to export traces to localhost:4318 and logs the failures.
REGISTRY_BASE_ENV = {"OTEL_TRACES_EXPORTER": "none"}

# Who sent a request, by User-Agent: distribution's proxy talks to its upstream with Go's default client
# ("Go-http-client/1.1"), ctr as "containerd/<version>", crane as "crane/<version> ...".
CACHE_AGENT = re.compile(r"^Go-http-client/")
CONTAINERD_AGENT = re.compile(r"^containerd/")
CRANE_AGENT = re.compile(r"^crane/")


class E2EError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise E2EError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- htpasswd -------------------------------------------------------------------------------------------

def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (the only format distribution's htpasswd accepts), cost 4 so that the upstream's
    check of every request stays cheap. From libcrypt (``crypt``, Python < 3.13), else the ``bcrypt``
    package, else apache2-utils' ``htpasswd``; :class:`E2EError` when none is there."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        if hashed and hashed.startswith("$2"):
            return hashed
    except ImportError:
        pass
    try:
        import bcrypt
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    except ImportError:
        pass
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-nbB", "-C", "4", "u", password], check=True, capture_output=True,
                             text=True).stdout.strip()
        return out.split(":", 1)[1]
    raise E2EError("no bcrypt implementation for the upstream's htpasswd: Python's crypt module (< 3.13), "
                   "the bcrypt package or apache2-utils' htpasswd is needed")


def write_htpasswd(path: Path, users: Mapping[str, str]) -> None:
    path.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in users.items()), encoding="utf-8")


# --- access logs ----------------------------------------------------------------------------------------

class AccessLog:
    """The access log of a registry across restarts (one file, appended); ``mark()``/``since()`` give the
    requests of one step of a test."""

    def __init__(self, path: Path):
        self.path = path

    def _text(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""

    def mark(self) -> int:
        return len(self._text())

    def since(self, mark: int = 0) -> list[Request]:
        return parse_access_log(self._text()[mark:])


# gorilla's combined format: the size of the body sent follows the status
_TRANSFER = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-) ')


@dataclass(frozen=True)
class Transfer:
    method: str
    path: str
    status: int
    bytes: int


def transfers(log: AccessLog, mark: int = 0) -> list[Transfer]:
    """Method, path, status and body bytes of every request in ``log`` since ``mark``."""
    out = []
    for line in log._text()[mark:].splitlines():
        m = _TRANSFER.match(line)
        if m:
            out.append(Transfer(m["method"], m["uri"].split("?", 1)[0], int(m["status"]),
                                0 if m["bytes"] == "-" else int(m["bytes"])))
    return out


def describe(requests: Iterable[Request]) -> str:
    return "\n".join(f"  {r}" for r in requests) or "  (none)"


# --- registry processes ---------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies without its finalizers (kill -9)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: the finalizers stop the processes
        pass


class Process:
    """A child process in its own session with stdout/stderr in files; ``stop()`` is idempotent."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], stdout: Path, stderr: Path,
                 cwd: Path):
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=self.cwd, start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for p in (self.stderr_path, self.stdout_path):
            if p.exists():
                text = p.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                parts.append(f"--- {p.name}\n" + "\n".join(text))
        return "\n".join(parts)


class Registry:
    """distribution ``registry serve CONFIG`` on 127.0.0.1, paths and ports set through distribution's
    documented ``REGISTRY_*`` environment overrides so that CONFIG itself is used unchanged."""

    def __init__(self, binary: Path, name: str, workdir: Path, config_text: str, *, tls: tuple[str, str] | None = None,
                 ca_file: Path | None = None, port: int | None = None, extra_env: Mapping[str, str] | None = None):
        self.binary = binary
        self.extra_env = dict(extra_env or {})  # more REGISTRY_* overrides (e.g. the htpasswd path)
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_text = config_text
        self.config_path = workdir / "config.yml"
        self.storage = workdir / "storage"
        self.port = port or free_port()
        self._port_pinned = port is not None
        self.debug_port = free_port()
        self.tls = tls  # (cert_pem, key_pem) for REGISTRY_HTTP_TLS_*
        self.ca_file = ca_file  # what a client trusts for this registry's TLS
        self.access_log = AccessLog(workdir / "access.log")
        self.process: Process | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), **REGISTRY_BASE_ENV,
               "REGISTRY_HTTP_ADDR": self.host,
               "REGISTRY_HTTP_DEBUG_ADDR": f"{LOOPBACK}:{self.debug_port}",
               "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(self.storage), **self.extra_env}
        if self.tls:
            cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
            cert.write_text(self.tls[0], encoding="utf-8")
            key.write_text(self.tls[1], encoding="utf-8")
            key.chmod(0o600)
            env["REGISTRY_HTTP_TLS_CERTIFICATE"] = str(cert)
            env["REGISTRY_HTTP_TLS_KEY"] = str(key)
        return env

    def start(self, timeout: float = 20.0) -> Registry:
        """Start and wait until ``/v2/`` answers. A port taken meanwhile by someone else (free_port() is
        racy) is replaced by a new one, but only before the first successful start: after that the port is
        this registry's address (caches point at it) and a restart keeps it."""
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self._port_pinned = True
                return self
            except E2EError:
                if attempt < 2 and not self._port_pinned and "address already in use" in self.log_tail():
                    self.port, self.debug_port = free_port(), free_port()
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        self.config_path.write_bytes(self.config_text.encode("utf-8"))
        self.storage.mkdir(exist_ok=True)
        self.process = Process(self.name, [str(self.binary), "serve", str(self.config_path)], self.env(),
                               self.access_log.path, self.workdir / "registry.log", self.workdir)
        self.process.start()
        try:
            wait_for(self._answers, timeout, f"registry {self.name} on {self.url}")
        except E2EError as e:
            self.stop()
            raise E2EError(f"{e}\n{self.log_tail()}") from None

    def _answers(self) -> bool:
        if not self.process or not self.process.running:
            raise E2EError(f"registry {self.name} exited (code {self.process.proc.returncode if self.process and self.process.proc else '?'})\n"
                           f"{self.log_tail()}")
        try:
            status, _, _ = http_get(f"{self.url}/v2/", ca_file=self.ca_file, timeout=1)
            return status in (200, 401)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    @property
    def running(self) -> bool:
        return bool(self.process and self.process.running)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def app_log(self) -> str:
        p = self.workdir / "registry.log"
        return p.read_text(encoding="utf-8", errors="replace") if p.exists() else ""

    def blob_digests(self) -> set[str]:
        """``sha256:<hex>`` of every blob in the filesystem storage (docker/registry/v2/blobs/sha256/xx/<hex>/data)."""
        root = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        if not root.is_dir():
            return set()
        return {f"sha256:{d.name}" for prefix in root.iterdir() for d in prefix.iterdir() if (d / "data").is_file()}


def http_get(url: str, ca_file: Path | None = None, timeout: float = 5.0,
             headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(ca_file)) if url.startswith("https://") else None
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def upstream_config() -> str:
    """The private upstream: distribution with htpasswd basic auth (paths and ports come from the env, as
    for the caches; the htpasswd file sits next to the config)."""
    return """\
version: 0.1
log:
  fields:
    service: upstream
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: ":5000"
auth:
  htpasswd:
    realm: private-upstream
    path: htpasswd
"""


def public_upstream_config() -> str:
    """A public upstream: distribution without auth (anyone pulls, as from docker.io anonymously)."""
    return upstream_config().split("auth:\n", 1)[0]


class Upstream(Registry):
    """A private upstream registry that requires these users' basic-auth credentials for everything; without
    users a public one (no auth at all)."""

    def __init__(self, binary: Path, workdir: Path, users: Mapping[str, str], port: int | None = None):
        super().__init__(binary, "upstream", workdir, upstream_config() if users else public_upstream_config(),
                         port=port)
        self.users = dict(users)
        self.public = not users

    def env(self) -> dict[str, str]:
        if self.public:
            return super().env()
        return {**super().env(), "REGISTRY_AUTH_HTPASSWD_PATH": str(self.workdir / "htpasswd")}

    def start(self, timeout: float = 20.0) -> Upstream:
        if not self.public:
            write_htpasswd(self.workdir / "htpasswd", self.users)
        super().start(timeout)
        return self

    def restart_with_users(self, users: Mapping[str, str]) -> None:
        """Revoke every user not in ``users``: a new htpasswd, a new process on the same port and storage."""
        self.stop()
        self.users = dict(users)
        self.start()


# --- images ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    repository: str  # without registry
    tag: str
    digest: str  # manifest digest
    blobs: frozenset[str]  # config and layer digests
    manifest_text: str

    def ref(self, registry_host: str) -> str:
        return f"{registry_host}/{self.repository}:{self.tag}"

    @property
    def all_digests(self) -> frozenset[str]:
        return self.blobs | {self.digest}


def layer_tarball(path: Path, content: str) -> Path:
    data = content.encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("registry-cache-e2e/hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return path


class Crane:
    """crane with its own DOCKER_CONFIG (credentials per registry host) and trust (SSL_CERT_FILE)."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def _env(self, auth: Mapping[str, tuple[str, str]] | None, ca_file: Path | None) -> dict[str, str]:
        conf = Path(tempfile.mkdtemp(prefix="docker-config-", dir=self.workdir))
        auths = {host: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
                 for host, (u, p) in (auth or {}).items()}
        (conf / "config.json").write_text(json.dumps({"auths": auths}), encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), "DOCKER_CONFIG": str(conf)}
        if ca_file:
            env["SSL_CERT_FILE"] = str(ca_file)
        return env

    def run(self, *args: str, auth: Mapping[str, tuple[str, str]] | None = None, ca_file: Path | None = None,
            insecure: bool = True, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [str(self.binary), *args] + (["--insecure"] if insecure else [])
        res = subprocess.run(argv, env=self._env(auth, ca_file), capture_output=True, text=True, timeout=timeout,
                             cwd=self.workdir, start_new_session=True)
        if check and res.returncode != 0:
            raise E2EError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def push_test_image(self, registry: Registry, repository: str, tag: str, auth: tuple[str, str] | None) -> Image:
        """A tiny one-layer image, made offline: a unique file appended onto crane's empty base, pushed with
        ``auth`` (None: anonymously, to a public upstream), platform set to linux/amd64 (so containerd unpacks
        it without doubt)."""
        token = hashlib.sha256(os.urandom(16)).hexdigest()
        layer = layer_tarball(self.workdir / f"layer-{token[:12]}.tar", f"registry-cache e2e {repository}:{tag} {token}\n")
        ref = f"{registry.host}/{repository}:{tag}"
        creds = {registry.host: auth} if auth else None
        self.run("append", "-f", str(layer), "-t", ref, auth=creds)
        self.run("mutate", ref, "--set-platform", "linux/amd64", "-t", ref, auth=creds)
        digest = self.run("digest", ref, auth=creds).stdout.strip()
        manifest_text = self.run("manifest", ref, auth=creds).stdout
        manifest = json.loads(manifest_text)
        blobs = frozenset([manifest["config"]["digest"], *(lay["digest"] for lay in manifest["layers"])])
        return Image(repository, tag, digest, blobs, manifest_text)


    def push_random_image(self, registry: Registry, repository: str, tag: str, layers: int = 5,
                          layer_mib: int = 40) -> Image:
        """A fresh image of ``layers`` layers of ``layer_mib`` MiB of random (incompressible) bytes each, pushed
        anonymously: each layer a tarball of one random file, gzipped without compression (level 0, so it is
        made quickly and its blob is as large as its data), platform linux/amd64."""
        token = os.urandom(6).hex()
        files = []
        try:
            for i in range(layers):
                path = self.workdir / f"random-{token}-{i}.tar.gz"
                with gzip.open(path, "wb", compresslevel=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
                    info = tarfile.TarInfo(f"registry-cache-e2e/random-{i}.bin")
                    info.size, info.mode, info.mtime = layer_mib << 20, 0o644, 0
                    tar.addfile(info, io.BytesIO(os.urandom(layer_mib << 20)))
                files.append(path)
            ref = f"{registry.host}/{repository}:{tag}"
            self.run("append", *(arg for f in files for arg in ("-f", str(f))), "-t", ref, timeout=600)
            self.run("mutate", ref, "--set-platform", "linux/amd64", "-t", ref)
        finally:
            for f in files:
                f.unlink(missing_ok=True)
        digest = self.run("digest", ref).stdout.strip()
        manifest_text = self.run("manifest", ref).stdout
        manifest = json.loads(manifest_text)
        blobs = frozenset([manifest["config"]["digest"], *(lay["digest"] for lay in manifest["layers"])])
        return Image(repository, tag, digest, blobs, manifest_text)


class Link:
    """A TCP forwarder to ``target`` on loopback that carries at most ``rate`` bytes/s towards the client, all its
    connections together (an upstream's network link); :meth:`cut` closes every connection it carries (an
    upstream that fails in the middle of a blob), new ones are forwarded again. Address: :attr:`host`."""

    def __init__(self, target: str, rate: int, scheme: str = "http"):
        self.target = target.rsplit(":", 1)
        self.rate = rate
        self.scheme = scheme  # what the target speaks through the link
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        self.free_at = 0.0  # when the link has sent everything it was given
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection((self.target[0], int(self.target[1])))
            with self.lock:
                self.socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limited: bool) -> None:
        try:
            while data := src.recv(64 << 10):
                if limited:
                    with self.lock:
                        self.free_at = max(time.monotonic(), self.free_at) + len(data) / self.rate
                        until = self.free_at
                    time.sleep(max(0.0, until - time.monotonic()))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


# --- the coalescing front ---------------------------------------------------------------------------------

class Front:
    """The coalescing front (``python -m extension.front``) with exactly the arguments a cache Pod's front
    container is rendered with, only its addresses and paths mapped onto this machine (``mapping``: rendered
    argument -> the one used here; each must be among the rendered arguments)."""

    def __init__(self, workdir: Path, command: list[str], args: list[str], mapping: Mapping[str, str],
                 port: int, ca_file: Path | None):
        from extension.constants import FRONT_COMMAND
        assert tuple(command) == FRONT_COMMAND, command
        missing = [k for k in mapping if k not in args]
        assert not missing, f"the rendered front has none of {missing}: {args}"
        self.rendered_args = list(args)
        self.argv = [sys.executable, *command[1:], *(mapping.get(a, a) for a in args)]
        self.workdir = workdir
        self.port = port
        self.tls = any(a.startswith("--tls-cert=") for a in args)
        self.ca_file = ca_file
        self.process: Process | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "front.log"

    def start(self, timeout: float = 20.0) -> Front:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), "PYTHONUNBUFFERED": "1"}
        self.process = Process("front", self.argv, env, self.log_path, self.workdir / "front.err", self.workdir)
        self.process.start()

        def healthy() -> bool:
            if not self.process or not self.process.running:
                raise E2EError(f"the front exited\n{self.log_tail()}")
            try:
                return http_get(f"{self.url}/healthz", ca_file=self.ca_file, timeout=1)[0] == 200
            except (OSError, urllib.error.URLError):
                return False

        wait_for(healthy, timeout, f"the front on {self.url}")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def access(self, mark: int = 0) -> list[dict[str, str]]:
        """The front's access lines since ``mark`` (bytes of its log): method, path, status, bytes, role, ttfb,
        total, agent."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")[mark:] if self.log_path.exists() else ""
        return [m.groupdict() for m in _FRONT_LINE.finditer(text)]

    def mark(self) -> int:
        return len(self.log_path.read_text(encoding="utf-8", errors="replace")) if self.log_path.exists() else 0


_FRONT_LINE = re.compile(r'^(?P<client>\S+) "(?P<method>\S+) (?P<path>\S+)" (?P<status>\d{3}) (?P<bytes>\d+) '
                         r'role=(?P<role>\S+) ttfb=(?P<ttfb>\S+) total=(?P<total>\S+) agent="(?P<agent>[^"]*)"$',
                         re.M)


# --- containerd -----------------------------------------------------------------------------------------

# Plugins this machine (and most CI machines) cannot use, or the tests do not need: with them disabled
# containerd starts without a failed plugin. The snapshotters that need special filesystems or a
# configured device; CRI (no kubelet here).
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)
# Unpacking into the native snapshotter works on any filesystem; the data path under test is the pull.
SNAPSHOTTER = "native"


def containerd_config(workdir: Path, socket_path: Path, transfer: bool = False) -> str:
    """A private containerd's config (version 2, read by 1.6 and 2.x). ``transfer``: containerd 2.x, whose
    ``ctr images pull`` goes through the daemon's transfer service (the daemon reads ``--hosts-dir``, as it
    reads ``config_path`` on a node), which unpacks only for what it is configured for."""
    def q(s: str | Path) -> str:
        return json.dumps(str(s))  # a TOML basic string is a JSON string for these paths

    disabled = ", ".join(q(p) for p in DISABLED_PLUGINS)
    return f"""\
version = 2
root = {q(workdir / "root")}
state = {q(workdir / "state")}
disabled_plugins = [{disabled}]

[grpc]
  address = {q(socket_path)}

[ttrpc]
  address = {q(str(socket_path) + ".ttrpc")}

[plugins."io.containerd.internal.v1.opt"]
  path = {q(workdir / "opt")}
""" + (f"""
[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = "linux/amd64"
  snapshotter = {q(SNAPSHOTTER)}
""" if transfer else "")


@dataclass
class PullResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Containerd:
    """A private containerd (root, state, socket and config in a temp dir), driven with ``ctr``."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # containerd and ctr from bin_dir (a containerd 2.x build), else Debian's on PATH
        self.containerd_bin = str(bin_dir / "containerd") if bin_dir else "containerd"
        self.ctr_bin = str(bin_dir / "ctr") if bin_dir else "ctr"
        # unix socket paths are limited to 107 bytes: keep the socket in a short temp dir
        self.sockdir = Path(tempfile.mkdtemp(prefix="rc-ctrd-"))
        self.socket = self.sockdir / "containerd.sock"
        self.config = workdir / "config.toml"
        self.process: Process | None = None

    def start(self, timeout: float = 30.0) -> Containerd:
        self.config.write_text(containerd_config(self.workdir, self.socket, transfer=self.containerd_bin != "containerd"),
                               encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(self.workdir)}
        self.process = Process("containerd", [self.containerd_bin, "--config", str(self.config)], env,
                               self.workdir / "containerd.out", self.workdir / "containerd.log", self.workdir)
        self.process.start()
        try:
            wait_for(self._answers, timeout, "containerd to answer `ctr version`", interval=0.1)
        except E2EError as e:
            self.stop()
            raise E2EError(f"{e}\n{self.process.log_tail() if self.process else ''}") from None
        return self

    def _answers(self) -> bool:
        if not self.process or not self.process.running:
            raise E2EError("containerd exited\n" + (self.process.log_tail() if self.process else ""))
        return self.ctr("version", timeout=5).returncode == 0

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.ctr_bin, "--address", str(self.socket), *args], capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)

    def pull(self, ref: str, hosts_dir: Path, user: str | None = None, namespace: str = "e2e",
             deadline: str | None = None, timeout: float = 120) -> PullResult:
        """``ctr images pull``; ``deadline`` is ctr's own ``--timeout`` for the whole command (a Go duration)."""
        args = ["--timeout", deadline] if deadline else []
        args += ["--namespace", namespace, "images", "pull", "--hosts-dir", str(hosts_dir),
                "--snapshotter", SNAPSHOTTER]
        if user:
            args += ["--user", user]
        res = self.ctr(*args, ref, timeout=timeout)
        return PullResult(res.returncode, res.stdout + res.stderr)

    def content_digests(self, namespace: str = "e2e") -> set[str]:
        res = self.ctr("--namespace", namespace, "content", "ls", "-q")
        if res.returncode != 0:
            raise E2EError(f"ctr content ls failed: {res.stderr}")
        return set(res.stdout.split())

    def image_target(self, ref: str, namespace: str = "e2e") -> str | None:
        res = self.ctr("--namespace", namespace, "images", "ls")
        for line in res.stdout.splitlines()[1:]:
            cols = line.split()
            if cols and cols[0] == ref:
                return cols[2]  # REF TYPE DIGEST SIZE PLATFORMS LABELS
        return None

    def failed_plugins(self) -> list[str]:
        res = self.ctr("plugins", "ls")
        return [line for line in res.stdout.splitlines()[1:] if line.split()[-1:] == ["error"]]

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""


def write_hosts_dir(hosts_dir: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """containerd's ``--hosts-dir`` layout: ``DIR/<upstream>/hosts.toml`` (the upstream with its port)."""
    out = {}
    for upstream, text in files.items():
        d = hosts_dir / upstream
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_bytes(text.encode("utf-8"))
        out[upstream] = d / "hosts.toml"
    return out


@dataclass
class Tools:
    registry: Path
    crane: Path
    bin_dir: Path
