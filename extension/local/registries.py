"""Registries that exist only on this machine, as processes in the node's network namespace.

- The cluster's image registry (plain HTTP on the namespace's ``127.0.0.1:5000``): the node pulls the pause
  and cache images from it.
- Upstreams for the caches: distribution on an IP literal of the node's bridge (``10.244.0.2`` ...), port
  443, TLS from a test CA (the node's containerd and the cache image trust it), optionally private (htpasswd
  basic auth). A cache's upstream is then ``10.244.0.2``, its remote URL ``https://10.244.0.2``: a fallback
  by containerd goes there, never off the machine.

Every request lands in the registry's access log (gorilla's combined format, with the User-Agent), so a test
tells who fetched what: the cache (``Go-http-client``) or the node's containerd (``containerd/...``).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from extension.local.procs import ClusterError, Proc, tail

CACHE_AGENT = re.compile(r"^Go-http-client/")
CONTAINERD_AGENT = re.compile(r"^containerd/")

_ACCESS = re.compile(r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[[^\]]*\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" '
                     r'(?P<status>\d{3}) (?P<size>\S+) "[^"]*" "(?P<agent>[^"]*)"')


@dataclass(frozen=True)
class Request:
    remote: str
    user: str
    method: str
    uri: str
    status: int
    agent: str
    size: int = 0  # bytes of the answer's body

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    def __str__(self) -> str:
        return f"{self.remote} {self.user} {self.method} {self.uri} -> {self.status} ({self.agent})"


def parse_access_log(text: str) -> list[Request]:
    out = []
    for line in text.splitlines():
        m = _ACCESS.match(line)
        if m:
            size = int(m["size"]) if m["size"].isdigit() else 0
            out.append(Request(m["remote"], m["user"], m["method"], m["uri"], int(m["status"]), m["agent"], size))
    return out


def parse_authorized(text: str) -> list[tuple[str, str, str]]:
    """(user, URI, User-Agent) of each "authorized request" line of distribution's app log (logrus text)."""
    out = []
    for line in text.splitlines():
        if 'msg="authorized request"' not in line:
            continue
        user = re.search(r'auth\.user\.name="?([^" ]+)', line)
        uri = re.search(r'http\.request\.uri="?([^" ]+)', line)
        agent = re.search(r'http\.request\.useragent=(?:"([^"]*)"|(\S+))', line)
        out.append((user.group(1) if user else "", uri.group(1) if uri else "",
                    (agent.group(1) or agent.group(2) or "") if agent else ""))
    return out


def bcrypt_hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


class LocalRegistry:
    """``registry serve`` with a generated config at ``address:port``; started with ``wrap`` (the node's
    network namespace)."""

    def __init__(self, name: str, binary: Path, workdir: Path, address: str, port: int, *,
                 wrap: Callable[[list[str]], list[str]], tls: tuple[str, str] | None = None,
                 ca_file: Path | None = None, users: Mapping[str, str] | None = None, storage: Path | None = None,
                 readonly: bool = False):
        """``storage``: another registry's (default: its own under ``workdir``), served ``readonly`` (no pushes,
        no purging of uploads: the other registry writes there)."""
        self.name, self.binary, self.workdir = name, binary, workdir
        self.address, self.port, self.wrap = address, port, wrap
        self.tls, self.ca_file = tls, ca_file
        self.users = dict(users or {})
        self.storage = storage or workdir / "storage"
        self.readonly = readonly
        self.log = workdir / "registry.log"
        self.proc: Proc | None = None

    @property
    def host(self) -> str:
        """What a cache names as its upstream: the IP literal, with the port unless it is the default."""
        default = 443 if self.tls else 80
        return self.address if self.port == default else f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self) -> dict:
        cfg: dict = {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": self.name}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": not self.readonly},
                        **({"maintenance": {"readonly": {"enabled": True},
                                            "uploadpurging": {"enabled": False}}} if self.readonly else {})},
            "http": {"addr": f"{self.address}:{self.port}"},
        }
        if self.tls:
            (self.workdir / "tls.crt").write_text(self.tls[0])
            key = self.workdir / "tls.key"
            key.write_text(self.tls[1])
            key.chmod(0o600)
            cfg["http"]["tls"] = {"certificate": str(self.workdir / "tls.crt"), "key": str(key)}
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
            htpasswd.chmod(0o600)
            cfg["auth"] = {"htpasswd": {"realm": f"{self.name}", "path": str(htpasswd)}}
        return cfg

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        config.chmod(0o600)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "OTEL_TRACES_EXPORTER": "none"}
        self.proc = Proc(self.name, self.wrap([str(self.binary), "serve", str(config)]), self.log, env=env).start()
        deadline = time.monotonic() + timeout
        while not self.answers():
            self.proc.check()
            if time.monotonic() > deadline:
                raise ClusterError(f"registry {self.name} on {self.url} does not answer; {tail(self.log)}")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        probe = self.wrap(["python3", "-c", _PROBE, f"{self.url}/v2/", str(self.ca_file or "")])
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def restart_with_users(self, users: Mapping[str, str]) -> None:
        """Revoke every user not in ``users``: a new htpasswd, the same address and storage."""
        self.stop()
        self.users = dict(users)
        self.start()

    def requests(self, since: int = 0) -> list[Request]:
        return parse_access_log(self.log.read_text(errors="replace")[since:] if self.log.exists() else "")

    def authorized(self, since: int = 0) -> list[tuple[str, str, str]]:
        """(user, URI, User-Agent) of every request the registry's basic auth let in (its app log)."""
        return parse_authorized(self.log.read_text(errors="replace")[since:] if self.log.exists() else "")

    def mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def blob_digests(self) -> set[str]:
        root = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        if not root.is_dir():
            return set()
        return {f"sha256:{d.name}" for p in root.iterdir() for d in p.iterdir() if (d / "data").is_file()}


# Any HTTP answer counts (401 from a private registry too); run inside the node's namespace.
_PROBE = r"""
import ssl, sys, urllib.request, urllib.error
url, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") and ca else None
try:
    urllib.request.urlopen(url, timeout=2, context=ctx)
except urllib.error.HTTPError:
    pass
"""


def describe(requests: Iterable[Request]) -> str:
    return "\n".join(f"  {r}" for r in requests) or "  (none)"
