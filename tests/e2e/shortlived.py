"""A short-lived-token upstream on this machine (tests/e2e/shortlived_server.py): a distribution registry without
auth behind a front that wants a token valid ``validity`` seconds as the password, and the token endpoint that
hands such tokens out for a long-lived identity, as ECR does. And the tests' credential provider plugin
(hack/go/test-credential-provider) that gets them, built by hack/test-credential-provider-bin.sh.

Images are pushed to the registry behind the front (what an upload to ECR is; the front only reads); everything
reads them through the front. All on 127.0.0.1, plain HTTP."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataplane import LOOPBACK, Process, Registry, free_port, http_get, public_upstream_config, wait_for

SERVER = Path(__file__).with_name("shortlived_server.py")
PLUGIN_BIN = Path(__file__).resolve().parents[2] / "hack" / "test-credential-provider-bin.sh"
PLUGIN_NAME = "test-credential-provider"
USERNAME = "AWS"  # what the front wants as the username, as ECR does


def build_plugin() -> Path:
    """The plugin binary (built once, then cached); raises with the script's tail when it cannot be built."""
    env = dict(os.environ)
    if Path("/usr/local/go/bin/go").is_file():
        env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    done = subprocess.run([str(PLUGIN_BIN)], capture_output=True, text=True, env=env, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{PLUGIN_BIN.name} failed ({done.returncode}):\n" + "\n".join(done.stderr.splitlines()[-20:]))
    return Path(done.stdout.strip().splitlines()[-1]) / PLUGIN_NAME


@dataclass(frozen=True)
class FrontRequest:
    time: float
    method: str
    path: str
    status: int
    agent: str
    refused: str | None
    jti: str | None
    left: float


class ShortLivedUpstream:
    """``tokens`` and ``front`` processes in front of a :class:`Registry`; ``identities`` the long-lived ones the
    token endpoint accepts (client id -> secret)."""

    def __init__(self, registry_bin: Path, workdir: Path, validity: float, identities: dict[str, str]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.validity = validity
        self.identities = dict(identities)
        self.key = secrets.token_hex(32)
        self.backend = Registry(registry_bin, "behind-the-front", workdir / "registry", public_upstream_config())
        self.port, self.token_port = free_port(), free_port()
        self.front_log, self.token_log = workdir / "front.log", workdir / "tokens.log"
        self.front: Process | None = None
        self.tokens: Process | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def token_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.token_port}/credentials"

    def _env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TOKEN_KEY": self.key, "TOKEN_USERNAME": USERNAME,
                **extra}

    def start(self) -> ShortLivedUpstream:
        self.backend.start()
        self.front = Process("front", [sys.executable, str(SERVER), "front", LOOPBACK, str(self.port)],
                             self._env(FRONT_BACKEND=self.backend.url), self.front_log,
                             self.workdir / "front.err", self.workdir)
        self.front.start()
        wait_for(lambda: self._answers(f"{self.url}/v2/"), 20, "the short-lived-token front")
        self.start_tokens()
        return self

    def _answers(self, url: str) -> bool:
        try:
            return http_get(url, timeout=2)[0] in (401, 404, 405, 200)
        except OSError:
            return False

    def start_tokens(self) -> None:
        """The token endpoint, with the identities it knows now (one of them, as a plugin's Secret holds it)."""
        [(client_id, secret)] = list(self.identities.items())[-1:]
        self.tokens = Process("tokens", [sys.executable, str(SERVER), "tokens", LOOPBACK, str(self.token_port)],
                              self._env(TOKEN_VALIDITY_SECONDS=str(self.validity), TOKEN_CLIENT_ID=client_id,
                                        TOKEN_CLIENT_SECRET=secret),
                              self.token_log, self.workdir / "tokens.err", self.workdir)
        self.tokens.start()
        wait_for(lambda: self._answers(f"http://{LOOPBACK}:{self.token_port}/"), 20, "the token endpoint")

    def stop_tokens(self) -> None:
        if self.tokens is not None:
            self.tokens.stop()

    def rotate_identity(self, client_id: str, secret: str) -> None:
        """The token endpoint knows only this identity from now on (the old one revoked)."""
        self.stop_tokens()
        self.identities = {client_id: secret}
        self.start_tokens()

    def stop(self) -> None:
        for proc in (self.tokens, self.front):
            if proc is not None:
                proc.stop()
        self.backend.stop()

    # --- what happened -------------------------------------------------------------------------------------
    def requests(self, since: float = 0) -> list[FrontRequest]:
        return front_requests(self.front_log, since)

    def issued(self) -> list[dict[str, Any]]:
        """The tokens the endpoint handed out: jti, expiresAt, time."""
        return [r for r in _records(self.token_log) if r.get("status") == 200]

    def refused_identities(self) -> int:
        return sum(1 for r in _records(self.token_log) if r.get("refused") == "identity")

    def logs(self) -> str:
        return tails(self.front_log, self.token_log, self.workdir / "front.err", self.workdir / "tokens.err")


def front_requests(log: Path, since: float = 0) -> list[FrontRequest]:
    """What the front answered, from ``since`` (seconds since the epoch)."""
    out = []
    for record in _records(log):
        if "method" in record and record["time"] >= since:
            out.append(FrontRequest(record["time"], record["method"], record["path"], record["status"],
                                    record["agent"], record.get("refused"), record.get("jti"), record["left"]))
    return out


def tails(*paths: Path, lines: int = 20) -> str:
    parts = []
    for path in paths:
        if path.exists():
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def provider_secret(name: str, endpoint: str, client_id: str, secret: str, image: str = "registry.local/plugin:v1",
                    **extra: str) -> dict[str, Any]:
    """The Secret a user makes for a cache whose credentials come from the tests' plugin (docs/usage/credentials.md,
    "Short-lived credentials")."""
    env = [{"name": "TOKEN_ENDPOINT", "value": endpoint}, {"name": "TOKEN_CLIENT_ID", "value": client_id},
           {"name": "TOKEN_CLIENT_SECRET", "value": secret}]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "garden-e2e"},
            "type": "registry-cache.gardener.cloud/credential-provider", "immutable": True,
            "stringData": {"name": PLUGIN_NAME, "image": image, "binaryPath": f"/bin/{PLUGIN_NAME}",
                           "args": json.dumps(["get-credentials"]), "env": json.dumps(env), **extra}}


# --- in the one-node cluster ------------------------------------------------------------------------------------

class ServedShortLived:
    """The same on an address of the one-node cluster's bridge, in the node's network namespace (``wrap``), all
    over TLS from the cluster's test CA (which the cache image trusts, so the plugin in the cache Pod does too):
    the front on ``address`` (443, what caches name as their upstream), the token endpoint on ``address:8443``, the
    registry behind the front on ``address:5443`` (where images are pushed). Processes of ``extension.local`` (they
    stop with the cluster); ``identities`` the token endpoint accepts, changed by :meth:`set_identities`."""

    def __init__(self, registry_bin: Path, workdir: Path, address: str, wrap: Any, cert: tuple[str, str],
                 ca_file: Path, validity: float, identities: dict[str, str],
                 ports: tuple[int, int, int] = (443, 8443, 5443), register: Any = None):
        """``register(name, proc)``: each process started, for the cluster to stop it with its own."""
        from extension.local.registries import LocalRegistry

        self.register = register or (lambda name, proc: None)
        self.workdir, self.address, self.wrap, self.ca_file = workdir, address, wrap, ca_file
        self.validity, self.identities = validity, dict(identities)
        self.port, self.token_port, backend_port = ports
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tls.crt").write_text(cert[0])
        (workdir / "tls.key").write_text(cert[1])
        (workdir / "tls.key").chmod(0o600)
        self.key = secrets.token_hex(32)
        self.backend = LocalRegistry("short-lived-backend", registry_bin, workdir / "registry", address, backend_port,
                                     wrap=wrap, tls=cert, ca_file=ca_file)
        self.front_log, self.token_log = workdir / "front.log", workdir / "tokens.log"
        self.procs: dict[str, Any] = {}

    @property
    def host(self) -> str:
        return self.address if self.port == 443 else f"{self.address}:{self.port}"

    @property
    def remote_url(self) -> str:
        return f"https://{self.host}"

    @property
    def token_endpoint(self) -> str:
        return f"https://{self.address}:{self.token_port}/credentials"

    def _start(self, role: str, port: int, **env: str) -> None:
        from extension.local.procs import Proc

        log = self.front_log if role == "front" else self.token_log
        before = log.read_text(errors="replace").count('"listening"') if log.exists() else 0
        full = {"PATH": "/usr/bin:/bin", "TOKEN_KEY": self.key, "TOKEN_USERNAME": USERNAME,
                "TLS_CERT": str(self.workdir / "tls.crt"), "TLS_KEY": str(self.workdir / "tls.key"), **env}
        proc = Proc(f"short-lived-{role}-{self.address}",
                    self.wrap(["python3", str(SERVER), role, self.address, str(port)]), log, env=full).start()
        self.procs[role] = proc
        self.register(proc.name, proc)
        # (the log is appended to across restarts: this start's own line)
        wait_for(lambda: proc.check() is None and log.read_text(errors="replace").count('"listening"') > before,
                 20, f"the short-lived {role} on {self.address}:{port}")

    def start(self) -> ServedShortLived:
        self.backend.start()
        self._start("front", self.port, FRONT_BACKEND=self.backend.url, FRONT_BACKEND_CA=str(self.ca_file))
        self.start_tokens()
        return self

    def start_tokens(self) -> None:
        self._start("tokens", self.token_port, TOKEN_VALIDITY_SECONDS=str(self.validity),
                    TOKEN_IDENTITIES=json.dumps(self.identities))

    def stop_tokens(self) -> None:
        proc = self.procs.pop("tokens", None)
        if proc is not None:
            proc.stop()

    def set_identities(self, identities: dict[str, str]) -> None:
        self.stop_tokens()
        self.identities = dict(identities)
        self.start_tokens()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()
        self.backend.stop()

    def requests(self, since: float = 0) -> list[FrontRequest]:
        return front_requests(self.front_log, since)

    def issued(self) -> list[dict[str, Any]]:
        return [r for r in _records(self.token_log) if r.get("status") == 200]

    def refused_identities(self) -> int:
        return sum(1 for r in _records(self.token_log) if r.get("refused") == "identity")

    def logs(self) -> str:
        return tails(self.front_log, self.token_log, self.backend.log)
