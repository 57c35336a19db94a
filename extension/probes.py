"""The controller's probes, telling the kubelet the truth (served with ``run --liveness http://ADDR:PORT/healthz``).

- ``/healthz`` (liveness: restart me) fails when a part that should be running is not, for longer than a fault
  that passes by itself: a watch whose thread has ended, or whose lists and watches have failed for
  ``watch_grace`` seconds without a success in between (the Shoot watch on every replica; the controller's
  watches on the leader); a worker on one Extension for more than ``worker_deadline`` seconds (every request
  has a timeout, so an operation that long is stuck); the webhook server, once it has served, not completing a
  TLS handshake on its port. An API server that is away makes the watches fail too: after the grace a restart
  costs nothing then.
- ``/readyz`` (readiness: send me webhook calls) holds while the webhook server completes a TLS handshake and the
  watches it answers from have listed (the Shoot index), and on the leader while the controller's watches have
  listed. A follower is ready as soon as it can serve the webhooks: the Service sends it calls while the leader
  starts.

Each failing probe answers 500 with one line per problem (a kubelet Event shows them); a passing one 200 ``ok``.
The decisions are pure (:func:`liveness_problems`, :func:`readiness_problems`); :class:`ProbeServer` gathers
the state and serves them.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class LocalHTTPServer(ThreadingHTTPServer):
    """http.server's threading server without the reverse DNS lookup of its own address at bind time
    (``HTTPServer.server_bind`` calls ``socket.getfqdn``: a DNS query wherever /etc/hosts does not name the address,
    for a name nobody uses)."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

log = logging.getLogger(__name__)

WATCH_GRACE_SECONDS = 60.0
WORKER_DEADLINE_SECONDS = 600.0
HANDSHAKE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class WatchState:
    name: str
    started: bool
    alive: bool
    synced: bool
    failing_since: float | None


def watch_state(informer: Any) -> WatchState:
    return WatchState(informer.name, informer.started, informer.alive(), informer.synced.is_set(),
                      informer.failing_since)


def liveness_problems(now: float, watches: Sequence[WatchState], in_flight: dict[int, tuple[Any, float]],
                      webhook_answers: bool | None, watch_grace: float = WATCH_GRACE_SECONDS,
                      worker_deadline: float = WORKER_DEADLINE_SECONDS) -> list[str]:
    """Why this process should be restarted (empty: it lives). ``webhook_answers`` None: no webhooks here."""
    problems = []
    for w in watches:
        if w.started and not w.alive:
            problems.append(f"the watch of {w.name} has ended")
        elif w.failing_since is not None and now - w.failing_since > watch_grace:
            problems.append(f"the watch of {w.name} has failed for {now - w.failing_since:.0f}s")
    for key, since in sorted(in_flight.values(), key=lambda item: item[1]):
        if now - since > worker_deadline:
            problems.append(f"a worker is stuck on Extension {'/'.join(key)} for {now - since:.0f}s")
    if webhook_answers is False:
        problems.append("the webhook server does not complete a TLS handshake")
    return problems


def readiness_problems(watches: Sequence[WatchState], leading: bool, leader_watches: Sequence[WatchState],
                       webhook_answers: bool | None) -> list[str]:
    """Why this replica should get no webhook calls now (empty: ready)."""
    problems = []
    if webhook_answers is False:
        problems.append("the webhook server does not complete a TLS handshake")
    problems += [f"the watch of {w.name} has not listed yet" for w in watches if not w.synced]
    if leading:
        problems += [f"the leader's watch of {w.name} has not listed yet" for w in leader_watches if not w.synced]
    return problems


def tls_answers(port: int, host: str = "127.0.0.1", timeout: float = HANDSHAKE_TIMEOUT_SECONDS) -> bool:
    """Whether a TLS server on ``port`` answers a handshake in time. One that asks for a client certificate this
    probe does not have refuses it with an alert: that server answered too."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(timeout)
            try:
                tls.recv(1)  # TLS 1.3: a refused client certificate arrives as an alert here
            except TimeoutError:
                pass  # an accepted handshake and nothing to read
        return True
    except ssl.SSLError:
        return True  # the server spoke TLS: it refused us (no client certificate), it is there
    except OSError:
        return False


class ProbeServer:
    """``/healthz`` and ``/readyz`` over HTTP on ``address`` (``http://HOST:PORT[/...]``, the path is not used), on
    a thread of its own. The callables give the state at each request."""

    def __init__(self, address: str, *, watches: Callable[[], list[Any]], leader_watches: Callable[[], list[Any]],
                 leading: Callable[[], bool], in_flight: Callable[[], dict[int, tuple[Any, float]]],
                 webhook_port: int | None, watch_grace: float = WATCH_GRACE_SECONDS,
                 worker_deadline: float = WORKER_DEADLINE_SECONDS, clock: Callable[[], float] = time.monotonic):
        parts = urlsplit(address if "://" in address else f"http://{address}")
        self.host, self.port = parts.hostname or "0.0.0.0", parts.port or 8080
        self.watches, self.leader_watches, self.leading = watches, leader_watches, leading
        self.in_flight, self.webhook_port = in_flight, webhook_port
        self.watch_grace, self.worker_deadline, self.clock = watch_grace, worker_deadline, clock
        self._server: LocalHTTPServer | None = None
        self._served = False  # the webhook server has answered once (before that it is starting, not broken)

    def webhook_answers(self) -> bool | None:
        if self.webhook_port is None:
            return None
        answers = tls_answers(self.webhook_port)
        self._served |= answers
        return answers

    def live(self) -> list[str]:
        watches = [watch_state(i) for i in [*self.watches(), *(self.leader_watches() if self.leading() else [])]]
        answers = self.webhook_answers()
        return liveness_problems(self.clock(), watches, dict(self.in_flight()), answers if self._served else None,
                                 self.watch_grace, self.worker_deadline)

    def ready(self) -> list[str]:
        leading = self.leading()  # (a follower's leader watches are not asked for: it makes none)
        return readiness_problems([watch_state(i) for i in self.watches()], leading,
                                  [watch_state(i) for i in self.leader_watches()] if leading else [],
                                  self.webhook_answers())

    def start(self) -> ProbeServer:
        probes = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path in ("/healthz", "/livez"):
                    problems = probes.live()
                elif path == "/readyz":
                    problems = probes.ready()
                else:
                    self.send_error(404)
                    return
                body = ("\n".join(problems) if problems else "ok").encode() + b"\n"
                self.send_response(500 if problems else 200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if problems:
                    log.warning("%s: %s", path, "; ".join(problems))

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the kubelet asks every few seconds: a failing answer is logged above

        self._server = LocalHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="probes").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
