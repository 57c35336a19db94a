"""A real local Kubernetes control plane (etcd + kube-apiserver as local processes).

Used by the integration-test fixtures and by ``registry-cache local-up``::

    with LocalControlPlane() as cp:
        api = cp.api_client()          # kubernetes.client.ApiClient, admin (system:masters)
        apply_manifests(api, [Path("manifests/crds")])
        subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "get", "ns"])

The binaries come from ``hack/control-plane-bins.sh`` (``$KUBEBUILDER_ASSETS`` if it holds both, else a
cache outside the repository, else a build with the local Go toolchain). Everything else is generated here
with ``cryptography``: the service-account RSA key pair, a client CA, an admin client certificate
(``O=system:masters``) and a static admin token. The API server serves with the self-signed certificate
it writes into ``--cert-dir``; the kubeconfig trusts exactly that certificate.

Ports are free loopback ports (etcd client and peer URLs are explicit, so several control planes and
several test runs coexist). Process output goes to ``etcd.log`` and ``kube-apiserver.log`` in the work
directory. ``stop()`` is idempotent and is also run at interpreter exit; when started from the main thread
the processes additionally get ``PR_SET_PDEATHSIG`` so they die with a test run that is killed outright.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import datetime as dt
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extension.component import certs as kcerts
from extension.constants import FIELD_MANAGER
from extension.local.assets import asset_dir

__all__ = [
    "CONTEXT_NAME",
    "FIELD_MANAGER",
    "BinariesBuildError",
    "BinariesUnavailable",
    "ControlPlaneError",
    "LocalControlPlane",
    "apply_manifests",
    "hack_dir",
    "load_manifests",
    "resolve_bin_dir",
    "wait_for_crds_established",
]

log = logging.getLogger(__name__)

CONTEXT_NAME = "registry-cache-local"
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

LOG_TAIL_LINES = 40
_ETCD_READY_TIMEOUT = 30.0
_APISERVER_READY_TIMEOUT = 60.0
_APISERVER_STOP_TIMEOUT = 30.0
_ETCD_STOP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (the message carries the relevant log tail)."""


class BinariesUnavailable(ControlPlaneError):
    """kube-apiserver/etcd can neither be found nor built here (no KUBEBUILDER_ASSETS, no cache, no Go)."""


class BinariesBuildError(ControlPlaneError):
    """hack/control-plane-bins.sh tried to build the binaries and failed."""


# --------------------------------------------------------------------------------------------------
# binaries


def hack_dir() -> Path:
    return asset_dir("hack")


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _file_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError as e:
        return f"(cannot read {path}: {e})"


def resolve_bin_dir(progress: Callable[[str], None] | None = None) -> Path:
    """Run ``hack/control-plane-bins.sh`` and return the directory holding kube-apiserver and etcd.

    ``progress`` receives the script's stderr lines as they come (a first build takes minutes).
    Raises :class:`BinariesUnavailable` when there is nothing to build with, :class:`BinariesBuildError`
    with the tail of the script's output when anything else fails.
    """
    script = hack_dir() / "control-plane-bins.sh"
    if not script.is_file():
        raise BinariesUnavailable(f"{script} not found")
    if shutil.which("bash") is None:
        raise BinariesUnavailable(f"bash is needed to run {script}")
    proc = subprocess.Popen(["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line.rstrip("\n"))
            if progress is not None:
                progress(line.rstrip("\n"))

    pump = threading.Thread(target=pump_stderr, daemon=True)
    pump.start()
    assert proc.stdout is not None
    out = proc.stdout.read()
    rc = proc.wait()
    pump.join()
    stderr = "\n".join(err_lines)
    if rc != 0:
        if "no Go toolchain found" in stderr:
            raise BinariesUnavailable(
                "kube-apiserver/etcd are not available: KUBEBUILDER_ASSETS is unset or lacks them, the cache "
                f"({os.environ.get('REGISTRY_CACHE_BIN_CACHE', '~/.cache/registry-cache/bin')}) holds no "
                f"current build, and no Go toolchain was found to build them. ({_tail(stderr, 3)})")
        raise BinariesBuildError(f"{script} failed with exit code {rc}; last lines of its output:\n"
                                 f"{_tail(stderr)}")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if not lines:
        raise BinariesBuildError(f"{script} printed no directory; its output:\n{_tail(stderr)}")
    bin_dir = Path(lines[-1].strip())
    _check_bin_dir(bin_dir)
    return bin_dir


def _check_bin_dir(bin_dir: Path) -> None:
    for name in ("kube-apiserver", "etcd"):
        p = bin_dir / name
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise BinariesUnavailable(f"{p} is missing or not executable")


# --------------------------------------------------------------------------------------------------
# certificates (cryptography only)


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _generate_credentials(certs: Path, validity: dt.timedelta = dt.timedelta(days=365)) -> None:
    """Write sa.key/sa.pub, client-ca.crt/.key, admin.crt/.key and token.csv into ``certs``."""
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(hours=1)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(certs / "sa.key", _pem_key(sa_key))
    _write(certs / "sa.pub", sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-cache-local-client-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(certs / "client-ca.key", _pem_key(ca_key))
    _write(certs / "client-ca.crt", _pem_cert(ca_cert), 0o644)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                                 x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER)]))
        .issuer_name(ca_name)
        .public_key(admin_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(certs / "admin.key", _pem_key(admin_key))
    _write(certs / "admin.crt", _pem_cert(admin_cert), 0o644)

    # token,user,uid,"group1,group2"
    _write(certs / "token.csv", f'{secrets.token_hex(16)},{ADMIN_USER},{ADMIN_USER}-uid,"{ADMIN_GROUP}"\n'.encode())

    # What kube-apiserver presents to admission webhooks (its AdmissionConfiguration's kubeConfigFile): a client
    # certificate of a CA of its own, which a webhook server trusts for exactly this caller
    # (`registry-cache run --webhook-client-ca webhook-client-ca.crt`).
    webhook_ca = kcerts.generate_ca("registry-cache-local-webhook-client-ca", validity=validity)
    webhook_client = kcerts.generate_client_cert(webhook_ca, "kube-apiserver", validity=validity)
    _write(certs / "webhook-client-ca.crt", webhook_ca.cert_pem.encode(), 0o644)
    _write(certs / "webhook-client.crt", webhook_client.cert_pem.encode(), 0o644)
    _write(certs / "webhook-client.key", webhook_client.key_pem.encode())
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": [
        # '*': every webhook this API server calls (only this project's, in a local cluster); name a Service
        # (`registry-cache-webhook.registry-cache.svc`) to present it to that one alone
        {"name": "*", "user": {"client-certificate": str(certs / "webhook-client.crt"),
                               "client-key": str(certs / "webhook-client.key")}}]}
    _write(certs / "webhook-client.kubeconfig", yaml.safe_dump(kubeconfig).encode())
    webhook = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
               "kubeConfigFile": str(certs / "webhook-client.kubeconfig")}
    _write(certs / "admission.yaml", yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
        "plugins": [{"name": plugin, "configuration": webhook}
                    for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")]}).encode())


_CREDENTIAL_FILES = ("sa.key", "sa.pub", "client-ca.key", "client-ca.crt", "admin.key", "admin.crt", "token.csv",
                     "webhook-client-ca.crt", "webhook-client.crt", "webhook-client.key", "webhook-client.kubeconfig",
                     "admission.yaml")


# --------------------------------------------------------------------------------------------------
# processes


def _free_ports(n: int, address: str = "127.0.0.1") -> list[int]:
    """n distinct free ports on ``address`` (all sockets held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1


def _make_preexec(parent_pid: int) -> Callable[[], None] | None:
    """Child setup: die with the parent (Linux). Only from the main thread: PDEATHSIG fires when the
    *thread* that forked exits, which would kill the control plane with a short-lived worker thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _libc_prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _terminate(proc: subprocess.Popen, timeout: float, name: str) -> None:
    """SIGTERM the process itself, wait up to ``timeout``, then SIGKILL; reap it."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not exit %.0fs after SIGTERM; sending SIGKILL", name, proc.pid, timeout)
            proc.kill()
            proc.wait()


def _log_says_port_in_use(path: Path) -> bool:
    text = _file_tail(path, 200)
    return "address already in use" in text


# --------------------------------------------------------------------------------------------------
# the control plane

_RUNNING: set[LocalControlPlane] = set()
_RUNNING_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    threads = [threading.Thread(target=cp._stop_quietly) for cp in running]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


atexit.register(_stop_all_at_exit)


class LocalControlPlane:
    """etcd + kube-apiserver on free loopback ports, with an admin kubeconfig.

    ``workdir``: where certs, data, logs and the kubeconfig go; kept after ``stop()``. Without it a
    temporary directory is created and removed by ``stop()``. In a kept workdir, existing credentials and
    etcd data are reused by the next ``start()``.
    ``bin_dir``: the directory with ``kube-apiserver`` and ``etcd``; default: ``hack/control-plane-bins.sh``.
    ``apiserver_args`` / ``etcd_args``: extra flags appended to the defaults (later flags win).
    ``die_with_parent``: give the processes PR_SET_PDEATHSIG=SIGKILL (only when ``start()`` runs on the
    main thread), so that they do not outlive a process killed without running atexit handlers.
    ``progress``: receives the output lines of hack/control-plane-bins.sh (a first build takes minutes).
    ``bind_address``: where kube-apiserver listens and what it advertises (default loopback); the local
    cluster's node reaches it on the host end of its network link.
    ``service_accounts``: the ServiceAccount admission plugin (Pods get their account's token); off without a
    node, where no kube-controller-manager makes the namespaces' default accounts.
    """

    def __init__(self, workdir: Path | None = None, bin_dir: Path | None = None, *,
                 name: str = "local", apiserver_args: Sequence[str] = (), etcd_args: Sequence[str] = (),
                 ready_timeout: float = _APISERVER_READY_TIMEOUT, die_with_parent: bool = True,
                 progress: Callable[[str], None] | None = None, bind_address: str = "127.0.0.1",
                 service_accounts: bool = False) -> None:
        self.name = name
        self.service_accounts = service_accounts
        self.bind_address = bind_address
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._bin_dir_arg = Path(bin_dir) if bin_dir is not None else None
        self.apiserver_args = list(apiserver_args)
        self.etcd_args = list(etcd_args)
        self.ready_timeout = ready_timeout
        self.die_with_parent = die_with_parent
        self._progress = progress
        self._lock = threading.RLock()

        self.workdir: Path | None = None
        self.bin_dir: Path | None = None
        self._owns_workdir = False
        self._etcd: subprocess.Popen | None = None
        self._apiserver: subprocess.Popen | None = None
        self._log_files: list[IO[bytes]] = []
        self._pids: dict[str, int] = {}
        self.etcd_port: int | None = None
        self.etcd_peer_port: int | None = None
        self.port: int | None = None
        self.token: str | None = None
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    # -- paths ---------------------------------------------------------------------------------------

    def _path(self, *parts: str) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("the control plane has not been started")
        return self.workdir.joinpath(*parts)

    @property
    def certs_dir(self) -> Path:
        return self._path("certs")

    @property
    def apiserver_cert_dir(self) -> Path:
        return self._path("apiserver-certs")

    @property
    def webhook_client_ca_file(self) -> Path:
        """The CA of the client certificate kube-apiserver presents to admission webhooks
        (``registry-cache run --webhook-client-ca``)."""
        return self.certs_dir / "webhook-client-ca.crt"

    @property
    def ca_file(self) -> Path:
        """The API server's self-generated serving certificate (with its CA); trusted by the kubeconfig."""
        return self.apiserver_cert_dir / "apiserver.crt"

    @property
    def client_cert_file(self) -> Path:
        return self.certs_dir / "admin.crt"

    @property
    def client_key_file(self) -> Path:
        return self.certs_dir / "admin.key"

    @property
    def kubeconfig(self) -> Path:
        return self._path("kubeconfig")

    @property
    def etcd_log(self) -> Path:
        return self._path("etcd.log")

    @property
    def apiserver_log(self) -> Path:
        return self._path("kube-apiserver.log")

    @property
    def server(self) -> str:
        if self.port is None:
            raise ControlPlaneError("the control plane has not been started")
        return f"https://{self.bind_address}:{self.port}"

    @property
    def etcd_url(self) -> str:
        if self.etcd_port is None:
            raise ControlPlaneError("the control plane has not been started")
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the last etcd and kube-apiserver started, by name (still there after ``stop()``)."""
        return dict(self._pids)

    @property
    def running(self) -> bool:
        return (self._apiserver is not None and self._apiserver.poll() is None
                and self._etcd is not None and self._etcd.poll() is None)

    def __repr__(self) -> str:
        where = self.server if self.port else "not started"
        return f"<LocalControlPlane {self.name} {where}>"

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> LocalControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalControlPlane:
        with self._lock:
            if self._apiserver is not None:
                raise ControlPlaneError(f"{self!r} is already started")
            t0 = time.monotonic()
            self.bin_dir = self._bin_dir_arg or resolve_bin_dir(self._progress)
            _check_bin_dir(self.bin_dir)
            if self._workdir_arg is not None:
                self.workdir = self._workdir_arg.resolve()
                self.workdir.mkdir(parents=True, exist_ok=True)
                self._owns_workdir = False
            else:
                self.workdir = Path(tempfile.mkdtemp(prefix=f"registry-cache-cp-{self.name}-"))
                self._owns_workdir = True
            with _RUNNING_LOCK:
                _RUNNING.add(self)
            try:
                self._prepare_dirs()
                self._start_etcd()
                self._start_apiserver()
                self._write_kubeconfig()
            except BaseException:
                self._stop_quietly()
                raise
            self.start_seconds = time.monotonic() - t0
            log.info("%r ready in %.1fs (workdir %s)", self, self.start_seconds, self.workdir)
            return self

    def _prepare_dirs(self) -> None:
        for d in (self.certs_dir, self.apiserver_cert_dir, self._path("etcd-data")):
            d.mkdir(parents=True, exist_ok=True)
        self.certs_dir.chmod(0o700)
        self._path("etcd-data").chmod(0o700)
        if not all((self.certs_dir / f).is_file() for f in _CREDENTIAL_FILES):
            _generate_credentials(self.certs_dir)
        self.token = (self.certs_dir / "token.csv").read_text().split(",", 1)[0]

    def _open_log(self, path: Path) -> IO[bytes]:
        f = open(path, "ab")
        f.write(f"---- {dt.datetime.now().isoformat(timespec='seconds')} starting\n".encode())
        f.flush()
        self._log_files.append(f)
        return f

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        logf = self._open_log(log_path)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=_make_preexec(os.getpid()) if self.die_with_parent else None,
                                cwd=str(self.workdir), close_fds=True)
        self._pids[Path(argv[0]).name] = proc.pid
        return proc

    def _start_etcd(self) -> None:
        assert self.bin_dir is not None
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.etcd_port, self.etcd_peer_port = _free_ports(2)
            client = f"http://127.0.0.1:{self.etcd_port}"
            peer = f"http://127.0.0.1:{self.etcd_peer_port}"
            argv = [
                str(self.bin_dir / "etcd"),
                f"--name={self.name}",
                f"--data-dir={self._path('etcd-data')}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={self.name}={peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                *self.etcd_args,
            ]
            self._etcd = self._spawn(argv, self.etcd_log)
            try:
                self._wait_etcd_healthy()
                return
            except ControlPlaneError:
                exited = self._etcd.poll() is not None
                _terminate(self._etcd, 5, "etcd")
                if exited and attempt < _PORT_ATTEMPTS and _log_says_port_in_use(self.etcd_log):
                    log.info("etcd port clash (attempt %d); retrying with other ports", attempt)
                    continue
                raise

    def _wait_etcd_healthy(self) -> None:
        assert self._etcd is not None
        deadline = time.monotonic() + _ETCD_READY_TIMEOUT
        last = "no answer yet"
        while True:
            rc = self._etcd.poll()
            if rc is not None:
                raise ControlPlaneError(f"etcd exited with code {rc} during startup; last lines of "
                                        f"{self.etcd_log}:\n{_file_tail(self.etcd_log)}")
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                    body = resp.read().decode(errors="replace")
                if json.loads(body).get("health") == "true":
                    return
                last = body
            except (OSError, ValueError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"etcd at {self.etcd_url} not healthy after {_ETCD_READY_TIMEOUT:.0f}s "
                                        f"(last: {last}); last lines of {self.etcd_log}:\n"
                                        f"{_file_tail(self.etcd_log)}")
            time.sleep(0.05)

    def _apiserver_argv(self) -> list[str]:
        assert self.bin_dir is not None and self.port is not None
        certs = self.certs_dir
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.bind_address}",
            f"--advertise-address={self.bind_address}",
            f"--secure-port={self.port}",
            f"--cert-dir={self.apiserver_cert_dir}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={self.server}/",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--authorization-mode=RBAC",
            f"--client-ca-file={certs / 'client-ca.crt'}",
            f"--token-auth-file={certs / 'token.csv'}",
            "--allow-privileged=true",
            *([] if self.service_accounts else ["--disable-admission-plugins=ServiceAccount"]),
            f"--admission-control-config-file={certs / 'admission.yaml'}",
            *self.apiserver_args,
        ]

    def _start_apiserver(self) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            (self.port,) = _free_ports(1, self.bind_address)
            self._apiserver = self._spawn(self._apiserver_argv(), self.apiserver_log)
            try:
                self._wait_apiserver_ready()
                return
            except ControlPlaneError:
                exited = self._apiserver.poll() is not None
                _terminate(self._apiserver, 10, "kube-apiserver")
                if exited and attempt < _PORT_ATTEMPTS and _log_says_port_in_use(self.apiserver_log):
                    log.info("kube-apiserver port clash (attempt %d); retrying with another port", attempt)
                    continue
                raise

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
        return ctx

    def _wait_apiserver_ready(self) -> None:
        assert self._apiserver is not None
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        ctx: ssl.SSLContext | None = None
        while True:
            rc = self._apiserver.poll()
            if rc is not None:
                raise ControlPlaneError(f"kube-apiserver exited with code {rc} during startup; last "
                                        f"{LOG_TAIL_LINES} lines of {self.apiserver_log}:\n"
                                        f"{_file_tail(self.apiserver_log)}")
            try:
                if ctx is None and self.ca_file.is_file() and self.ca_file.stat().st_size > 0:
                    ctx = self._ssl_context()
                if ctx is not None:
                    with urllib.request.urlopen(f"{self.server}/readyz", timeout=5, context=ctx) as resp:
                        body = resp.read().decode(errors="replace").strip()
                    if resp.status == 200 and body == "ok":
                        return
                    last = f"HTTP {resp.status}: {body[:200]}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read().decode(errors='replace')[-300:]}"
            except (OSError, ssl.SSLError, ValueError) as e:
                last = str(e)
                if isinstance(e, ssl.SSLError):
                    ctx = None  # the cert file may have been read half-written
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver at {self.server} not ready after {self.ready_timeout:.0f}s (last /readyz: "
                    f"{last}); last {LOG_TAIL_LINES} lines of {self.apiserver_log}:\n"
                    f"{_file_tail(self.apiserver_log)}")
            time.sleep(0.1)

    def _write_kubeconfig(self) -> None:
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()
        user = f"{CONTEXT_NAME}-{ADMIN_USER}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT_NAME, "cluster": {
                "server": self.server, "certificate-authority-data": b64(self.ca_file)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(self.client_cert_file),
                "client-key-data": b64(self.client_key_file)}}],
            "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
            "current-context": CONTEXT_NAME,
            "preferences": {},
        }
        _write(self.kubeconfig, yaml.safe_dump(config, sort_keys=False).encode())

    def api_client(self):
        """A new ``kubernetes.client.ApiClient`` for the admin kubeconfig (the caller closes it)."""
        from extension.runtime.kube import api_client

        return api_client(str(self.kubeconfig), CONTEXT_NAME, persist_config=False)

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (each: SIGTERM, up to 30 s, then SIGKILL); remove an owned temp
        dir. Idempotent. Interrupted (e.g. Ctrl-C while waiting), etcd is still stopped and whatever was not
        reaped stays registered for the exit handler."""
        with self._lock:
            had_processes = self._apiserver is not None or self._etcd is not None
            t0 = time.monotonic()
            try:
                if self._apiserver is not None:
                    _terminate(self._apiserver, _APISERVER_STOP_TIMEOUT, "kube-apiserver")
                    self._apiserver = None
            finally:
                try:
                    if self._etcd is not None:
                        _terminate(self._etcd, _ETCD_STOP_TIMEOUT, "etcd")
                        self._etcd = None
                finally:
                    if self._apiserver is None and self._etcd is None:
                        self._cleanup()
                        if had_processes:
                            self.stop_seconds = time.monotonic() - t0

    def _cleanup(self) -> None:
        for f in self._log_files:
            try:
                f.close()
            except OSError:
                pass
        self._log_files.clear()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._owns_workdir = False
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception:
            log.exception("stopping %r failed", self)


# --------------------------------------------------------------------------------------------------
# manifests


def load_manifests(paths: Iterable[Path | str]) -> list[dict]:
    """The objects of YAML files (multi-document). A directory stands for the files its
    ``kustomization.yaml`` lists under ``resources`` (in that order), or else its ``*.yaml``/``*.yml``
    files sorted by name."""
    objs: list[dict] = []
    for p in map(Path, paths):
        if p.is_dir():
            kust = p / "kustomization.yaml"
            if kust.is_file():
                resources = (yaml.safe_load(kust.read_text()) or {}).get("resources") or []
                objs.extend(load_manifests([p / r for r in resources]))
            else:
                files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
                objs.extend(load_manifests(files))
            continue
        for doc in yaml.safe_load_all(p.read_text()):
            if not doc:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                raise ValueError(f"{p}: a document is not a Kubernetes object (apiVersion and kind needed)")
            if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
                objs.extend(doc["items"])
            else:
                objs.append(doc)
    return objs


def apply_manifests(api_client, paths: Iterable[Path | str], *, namespace: str | None = None,
                    field_manager: str = FIELD_MANAGER, force_conflicts: bool = True,
                    discovery_timeout: float = 10.0) -> list[dict]:
    """Server-side apply every object of ``paths`` (see :func:`load_manifests`) in file order with the
    dynamic client. Namespaced objects without a namespace go to ``namespace`` (default ``default``).
    A kind the server does not know (yet: e.g. its CRD was applied just before) is looked up again for up
    to ``discovery_timeout`` seconds. Returns the applied objects as the server answered them."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    objs = load_manifests(paths)
    applied: list[dict] = []
    # Keep the discovery cache out of the shared temp dir (ports, hence cache keys, get reused).
    with tempfile.TemporaryDirectory(prefix="registry-cache-discovery-") as cache_dir:
        dyn = DynamicClient(api_client, cache_file=os.path.join(cache_dir, "discovery.json"))
        for obj in objs:
            deadline = time.monotonic() + discovery_timeout
            while True:
                try:
                    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                    break
                except ResourceNotFoundError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            meta = obj.setdefault("metadata", {})
            ns = None
            if resource.namespaced:
                ns = meta.get("namespace") or namespace or "default"
                meta["namespace"] = ns
            result = dyn.server_side_apply(resource, body=obj, name=meta.get("name"), namespace=ns,
                                           field_manager=field_manager, force_conflicts=force_conflicts)
            applied.append(result.to_dict())
    return applied


def wait_for_crds_established(api_client, names: Iterable[str], timeout: float = 30.0) -> None:
    """Wait until every named CRD is Established and its resource is listed in API discovery
    (so dynamic clients and kubectl find it). Raises TimeoutError naming what is missing."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    pending = set(names)
    deadline = time.monotonic() + timeout
    state: dict[str, str] = {n: "not found" for n in pending}
    while pending:
        for name in sorted(pending):
            try:
                crd = ext.read_custom_resource_definition(name)
            except ApiException as e:
                state[name] = "not found" if e.status == 404 else f"HTTP {e.status}"
                continue
            conds = {c.type: c.status for c in (crd.status.conditions or [])} if crd.status else {}
            if conds.get("Established") != "True":
                state[name] = f"conditions {conds}"
                continue
            version = next((v.name for v in crd.spec.versions if v.served), None)
            if version is None:
                state[name] = "no served version"
                continue
            path = f"/apis/{crd.spec.group}/{version}"
            try:
                listed = client.CustomObjectsApi(api_client).get_api_resources(crd.spec.group, version)
            except ApiException as e:
                state[name] = f"discovery {path}: HTTP {e.status}"
                continue
            plurals = {r.name for r in (listed.resources or [])} if listed else set()
            if crd.spec.names.plural in plurals:
                pending.discard(name)
            else:
                state[name] = f"established, not yet in discovery {path}"
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not established after {timeout:.0f}s: "
                               + "; ".join(f"{n}: {state[n]}" for n in sorted(pending)))
        time.sleep(0.1)


def apiserver_requests(kube: Any, verb: str = "LIST") -> dict[str, float]:
    """kube-apiserver's requests of ``verb`` so far, by resource (its ``apiserver_request_total``, every client):
    what a start or a benchmark phase cost the API server, as the difference of two readings."""
    counts: dict[str, float] = {}
    for line in kube.request("GET", "/metrics", accept="text/plain", text=True).splitlines():
        if line.startswith("apiserver_request_total{") and f'verb="{verb}"' in line:
            resource = re.search(r'resource="([^"]*)"', line)
            key = resource.group(1) if resource else ""
            counts[key] = counts.get(key, 0.0) + float(line.rpartition(" ")[2])
    return counts
