"""A private upstream with token auth, as real private registries are: distribution 3 that wants bearer
tokens, and the token server of the kind scenario (``test_kind.TOKEN_SERVER``) that hands them out for one
user's basic-auth credentials. Both are processes on 127.0.0.1; the realm is an address too (no client of
these tests refuses one). ``revoke()`` restarts the token server with another password, as rotating a
robot account's password does."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import yaml

from extension.component import certs

from .dataplane import LOOPBACK, Process, free_port, http_get, wait_for
from .test_kind import TOKEN_SERVER, token_registry_config


class TokenUpstream:
    def __init__(self, registry_bin: Path, workdir: Path, username: str, password: str, *,
                 anonymous_pull: bool = False, same_origin: bool | None = None):
        """``anonymous_pull``: the token server also gives a pull token to a request without credentials (as
        docker.io does for public images). ``same_origin`` (default: with ``anonymous_pull``): clients reach the
        registry through the token server, so the realm is on the registry's own origin, the only one
        distribution 3.1 (and the controller's credential check) sends credentials to for an IP address;
        otherwise the realm is on another port."""
        self.registry_bin, self.workdir = registry_bin, workdir
        self.anonymous_pull = anonymous_pull
        self.same_origin = anonymous_pull if same_origin is None else same_origin
        workdir.mkdir(parents=True, exist_ok=True)
        self.username, self.password = username, password
        self.token_port, self.port, self.debug_port = free_port(), free_port(), free_port()
        signing = certs.generate_ca("registry-cache-e2e-token")
        (workdir / "tls.crt").write_text(signing.cert_pem)
        (workdir / "tls.key").write_text(signing.key_pem)
        (workdir / "token_server.py").write_text(TOKEN_SERVER)
        config = token_registry_config(self.realm, str(workdir / "tls.crt"), str(workdir / "data"),
                                       f"{LOOPBACK}:{self.port}")
        config["http"]["debug"] = {"addr": f"{LOOPBACK}:{self.debug_port}"}
        (workdir / "registry.yml").write_text(yaml.safe_dump(config))
        self.token_server: Process | None = None
        self.registry: Process | None = None

    @property
    def realm(self) -> str:
        return f"http://{LOOPBACK}:{self.token_port}/token"

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.token_port if self.same_origin else self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _listening(self, port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex((LOOPBACK, port)) == 0

    def start_token_server(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TOKEN_KEY": str(self.workdir / "tls.key"),
               "TOKEN_CERT": str(self.workdir / "tls.crt"), "TOKEN_ISSUER": "registry-cache-e2e",
               "TOKEN_SERVICE": "private-registry", "TOKEN_USERNAME": self.username,
               "TOKEN_PASSWORD": self.password, "TOKEN_PORT": str(self.token_port),
               "TOKEN_ANONYMOUS_PULL": "1" if self.anonymous_pull else "",
               "TOKEN_BACKEND": f"http://{LOOPBACK}:{self.port}" if self.same_origin else ""}
        self.token_server = Process("token-server", [sys.executable, str(self.workdir / "token_server.py")], env,
                                    self.workdir / "token-server.log", self.workdir / "token-server.err", self.workdir)
        self.token_server.start()
        wait_for(lambda: self._listening(self.token_port), 20, "the token server")

    def start(self) -> TokenUpstream:
        self.start_token_server()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
               "OTEL_TRACES_EXPORTER": "none"}
        self.registry = Process("upstream", [str(self.registry_bin), "serve", str(self.workdir / "registry.yml")],
                                env, self.workdir / "registry.log", self.workdir / "registry.err", self.workdir)
        self.registry.start()
        wait_for(lambda: self._listening(self.port) and http_get(f"{self.url}/v2/", timeout=2)[0] == 401, 20,
                 "the token-auth upstream")
        return self

    def revoke(self) -> str:
        """A new password: the old one is refused from now on. Returns the new one."""
        assert self.token_server is not None
        self.token_server.stop()
        self.password = uuid.uuid4().hex
        self.start_token_server()
        return self.password

    def stop(self) -> None:
        for proc in (self.registry, self.token_server):
            if proc is not None:
                proc.stop()
