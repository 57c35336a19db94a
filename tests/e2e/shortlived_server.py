"""A registry whose credentials live a minute, as ECR's do (12 hours there): two roles of one program, run with
Python's standard library alone (here and inside the one-node cluster's network namespace).

``tokens``
    The token endpoint, what ECR's GetAuthorizationToken is: ``POST /credentials`` with a long-lived identity
    (``TOKEN_CLIENT_ID`` and ``TOKEN_CLIENT_SECRET``, or any of ``TOKEN_IDENTITIES``, a JSON map of id to secret;
    as basic auth) answers ``{"username", "token", "expiresAt",
    "expiresIn"}``: a token valid ``TOKEN_VALIDITY_SECONDS``. A token is the expiry and a random id, signed with
    ``TOKEN_KEY`` (HMAC-SHA256), so the front checks it without asking back.
``front``
    The registry as its clients see it: every request needs basic auth with username ``TOKEN_USERNAME`` and an
    unexpired token as the password (ECR's ``AWS`` and authorization token), else 401 with a basic challenge;
    what passes is relayed to the registry behind it (``FRONT_BACKEND``, distribution without auth; over https
    trusting ``FRONT_BACKEND_CA``).

Both log one JSON line per request on stdout (never a token or a secret): the front's ``time``, ``method``,
``path``, ``status``, ``agent``, ``refused`` (``expired``, ``invalid``, ``missing``: why a 401) and the token's
``jti`` and seconds ``left``; the token endpoint's issued tokens (``jti``, ``expiresAt``) and refusals. HTTPS with
``TLS_CERT``/``TLS_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import secrets
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KEY = bytes.fromhex(os.environ["TOKEN_KEY"])
USERNAME = os.environ.get("TOKEN_USERNAME", "AWS")
LOCK = threading.Lock()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(validity: float) -> tuple[str, str, float]:
    expires = time.time() + validity
    jti = secrets.token_hex(8)
    payload = b64(json.dumps({"exp": expires, "jti": jti}).encode())
    signature = b64(hmac.new(KEY, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}", jti, expires


def check(token: str) -> tuple[str | None, str | None, float]:
    """(why refused or None, the token's id, seconds left)."""
    payload, _, signature = token.partition(".")
    wanted = b64(hmac.new(KEY, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(wanted, signature):
        return "invalid", None, 0.0
    try:
        claims = json.loads(unb64(payload))
        left = float(claims["exp"]) - time.time()
    except (ValueError, KeyError, TypeError):
        return "invalid", None, 0.0
    return ("expired" if left <= 0 else None), claims.get("jti"), left


def log(record: dict) -> None:
    with LOCK:
        sys.stdout.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        sys.stdout.flush()


def basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class Tokens(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    validity = float(os.environ.get("TOKEN_VALIDITY_SECONDS", "60"))
    identities: dict[str, str] = {**json.loads(os.environ.get("TOKEN_IDENTITIES") or "{}"),
                                  **({os.environ["TOKEN_CLIENT_ID"]: os.environ.get("TOKEN_CLIENT_SECRET", "")}
                                     if os.environ.get("TOKEN_CLIENT_ID") else {})}

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if urlsplit(self.path).path != "/credentials":
            return self.answer(404, {"error": "not found"})
        given = basic(self.headers.get("Authorization"))
        known = self.identities.get(given[0]) if given is not None else None
        if given is None or known is None or not hmac.compare_digest(known, given[1]):
            log({"role": "tokens", "status": 401, "refused": "identity"})
            return self.answer(401, {"error": "unknown identity"})
        token, jti, expires = issue(self.validity)
        log({"role": "tokens", "status": 200, "client": given[0], "jti": jti, "expiresAt": round(expires, 3)})
        self.answer(200, {"username": USERNAME, "token": token, "expiresAt": expires, "expiresIn": self.validity})

    do_GET = do_POST

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


HOP = ("connection", "transfer-encoding", "content-length", "keep-alive", "authorization", "host")


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    backend = urlsplit(os.environ.get("FRONT_BACKEND", "http://127.0.0.1:5000"))
    realm = os.environ.get("FRONT_REALM", "short-lived")

    def relay(self) -> None:
        record = {"role": "front", "method": self.command, "path": urlsplit(self.path).path,
                  "agent": self.headers.get("User-Agent", "")}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.headers.get("Content-Length") \
            else None
        given = basic(self.headers.get("Authorization"))
        refused, jti, left = ("missing", None, 0.0) if given is None else \
            (("invalid", None, 0.0) if given[0] != USERNAME else check(given[1]))
        record.update({"jti": jti, "left": round(left, 3)})
        if refused:
            data = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": f"token {refused}"}]}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Basic realm="{self.realm}"')
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            log({**record, "status": 401, "refused": refused})
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn: http.client.HTTPConnection
        if self.backend.scheme == "https":
            context = ssl.create_default_context(cafile=os.environ.get("FRONT_BACKEND_CA") or None)
            conn = http.client.HTTPSConnection(self.backend.hostname, self.backend.port, timeout=60, context=context)
        else:
            conn = http.client.HTTPConnection(self.backend.hostname, self.backend.port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            self.send_error(502, f"backend: {type(exc).__name__}")
            log({**record, "status": 502})
            return
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        log({**record, "status": resp.status})

    do_GET = do_HEAD = relay  # a pull-through cache only reads

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    """Without HTTPServer's reverse DNS lookup of the address at bind time (socket.getfqdn): in the one-node
    cluster's network namespace that query would head off the machine (the egress check counts it)."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


def main() -> None:
    role, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = Server((address, port), {"tokens": Tokens, "front": Front}[role])
    server.daemon_threads = True
    if os.environ.get("TLS_CERT"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    log({"role": role, "listening": f"{address}:{port}"})
    server.serve_forever()


if __name__ == "__main__":
    main()
