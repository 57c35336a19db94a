"""The admission webhooks' HTTPS server: AdmissionReview in, AdmissionReview out, on threads.

kopf served them until issue 22. What it gave here (a TLS server, an AdmissionReview parsed and answered, a JSON patch
for the mutating hooks) is what this module does with the standard library, as :mod:`extension.probes` serves the
probes; what it cost is in docs/operations/deploying.md ("The webhooks without kopf"): aiohttp and its dependencies, a
second login path, an asyncio loop in the main thread beside the controller's threads, log filters that undo its error
reports, and about 16 MiB of the controller's memory.

- TLS with the serving certificate of :mod:`.server`; with ``client_ca`` (``--webhook-client-ca``) only a caller
  with a client certificate of that CA (the API server) completes the handshake: anyone else gets no answer at
  all. The handshake is made on the connection's own thread, with a timeout, so that a caller that stalls holds
  up nobody else.
- ``POST /<hook>`` with an AdmissionReview (``admission.k8s.io/v1``) calls that hook's function with the request
  (``request.object``, ``oldObject``, ``operation``, ...) when the request is for the resource and operation the
  hook is for (anything else is allowed: the hook has nothing to say about it). A validating hook refuses by
  raising :class:`Refusal` (its message and HTTP code go into ``response.status``); a mutating hook returns the
  JSON patch to apply (empty: no change). Any other exception refuses with code 500 and is logged.
- A review whose object nests deeper than :data:`~extension.runtime.jsondecode.MAX_DEPTH` levels is not decoded:
  it is refused, saying so. A body that is no AdmissionReview is answered 400, an unknown path 404.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from extension.runtime import jsondecode

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0  # a caller has this long to complete the TLS handshake
IDLE_SECONDS = 90.0  # a kept-alive connection without a request is closed after this long
MAX_BODY = 32 * 1024 * 1024  # an AdmissionReview holds at most two objects of the API server's 3 MiB limit


class Refusal(Exception):
    """A hook's "no": ``message`` and ``code`` (as Kubernetes' Status) are the caller's to see."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class Hook:
    """One webhook at ``/<name>``: for ``resource`` (group, plural) and these ``operations``; ``handle(request)``
    returns JSON patch operations (a mutating hook) or None, or raises :class:`Refusal`."""

    name: str
    resource: tuple[str, str]
    operations: tuple[str, ...]
    handle: Callable[[dict[str, Any]], list[dict[str, Any]] | None]


def answer(review: dict[str, Any], hook: Hook) -> dict[str, Any]:
    """The AdmissionReview answering ``review`` (pure but for what the hook does)."""
    request = review["request"]
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    resource = request.get("resource") or {}
    if (resource.get("group", ""), resource.get("resource")) == hook.resource and \
            request.get("operation") in hook.operations:
        try:
            patch = hook.handle(request)
        except Refusal as refusal:
            response.update(allowed=False, status={"code": refusal.code, "message": refusal.message})
        except Exception as exc:  # a hook that fails refuses (failurePolicy decides nothing here)
            log.exception("webhook %s failed", hook.name)
            response.update(allowed=False, status={"code": 500, "message": f"{type(exc).__name__}: {exc}"})
        else:
            if patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": review.get("apiVersion") or "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}


def too_deep_answer(review: dict[str, Any]) -> dict[str, Any]:
    request = review.get("request") or {}
    return {"apiVersion": review.get("apiVersion") or "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request.get("uid", ""), "allowed": False, "status": {
                "code": 422, "message": f"the object nests deeper than {jsondecode.MAX_DEPTH} levels: the "
                                        "registry-cache webhooks do not decode it"}}}


def replace_spec_fields(obj: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch operations that set these fields of ``spec`` to ``new``'s values (only those that differ)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [{"op": "add", "path": "/spec", "value": new}]
    return [{"op": "add", "path": f"/spec/{key}", "value": value}  # ("add" replaces a member that is there)
            for key, value in new.items() if spec.get(key) != value]


class AdmissionServer:
    """Serves ``hooks`` over HTTPS on ``address``:``port`` (threads; :meth:`start` returns once it listens)."""

    def __init__(self, address: str, port: int, certfile: Path, keyfile: Path, hooks: list[Hook],
                 client_ca: str | None = None):
        self.address, self.port = address, port
        self.hooks = {hook.name: hook for hook in hooks}
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(certfile), str(keyfile))
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=client_ca)
        self.context = context
        self._server: _Server | None = None

    def start(self) -> AdmissionServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept alive, as the API server's client wants

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    self.close_connection = True
                    self._send(411, b"Content-Length required\n", "text/plain")
                    return
                if length > MAX_BODY:
                    self.close_connection = True
                    self._send(413, b"too large\n", "text/plain")
                    return
                body = self.rfile.read(length)  # (all of it, whatever the answer: the connection is kept)
                hook = server.hooks.get(urlsplit(self.path).path.strip("/"))
                if hook is None:
                    self._send(404, b"no such webhook\n", "text/plain")
                    return
                try:
                    review, cut = jsondecode.loads(body, jsondecode.MAX_DEPTH + 2)  # (review, request, object)
                    if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
                        raise ValueError("not an AdmissionReview")
                except ValueError as exc:
                    self._send(400, f"{exc}\n".encode(), "text/plain")
                    return
                reply = too_deep_answer(review) if cut else answer(review, hook)
                self._send(200, json.dumps(reply).encode(), "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # an access line per admission request is noise; refusals are logged by the hooks

        self._server = _Server((self.address, self.port), Handler, self.context)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="webhooks").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Server(ThreadingHTTPServer):
    """A connection is accepted plain and its TLS handshake made on its own thread (with a timeout)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext):
        self.context = context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # (HTTPServer's would ask the resolver for the host's name)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:  # no (valid) client certificate, not TLS, gone, too slow
            log.debug("webhook connection from %s refused: %s", client_address, exc)
            return
        try:
            tls.settimeout(IDLE_SECONDS)
            super().finish_request(tls, client_address)
        except OSError as exc:
            log.debug("webhook connection from %s: %s", client_address, exc)
        finally:
            tls.close()
