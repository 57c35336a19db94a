"""The probes' decisions, and the TLS answer they ask the webhook server for (real sockets on loopback)."""

from __future__ import annotations

import socket
import ssl
import threading

from extension.component import certs
from extension.probes import WatchState, liveness_problems, readiness_problems, tls_answers


def w(name, started=True, alive=True, synced=True, failing_since=None):
    return WatchState(name, started, alive, synced, failing_since)


def test_liveness_counts_a_watch_ended_or_failing_past_its_grace_and_a_stuck_worker():
    assert liveness_problems(100.0, [w("Shoot"), w("Extension", failing_since=50.0)], {}, True, 60) == []
    assert liveness_problems(100.0, [w("Extension", failing_since=30.0)], {}, None, 60) == [
        "the watch of Extension has failed for 70s"]
    assert liveness_problems(100.0, [w("Shoot", alive=False)], {}, None) == ["the watch of Shoot has ended"]
    assert liveness_problems(100.0, [w("Cluster", started=False, alive=False)], {}, None) == []  # not started yet
    in_flight = {1: (("shoot--a--b", "registry-cache"), 95.0), 2: (("shoot--c--d", "registry-cache"), 10.0)}
    assert liveness_problems(100.0, [], in_flight, None, worker_deadline=60) == [
        "a worker is stuck on Extension shoot--c--d/registry-cache for 90s"]
    assert liveness_problems(100.0, [], {}, False) == ["the webhook server does not complete a TLS handshake"]


def test_readiness_wants_the_webhook_and_the_watches_it_answers_from_and_on_the_leader_the_controllers():
    assert readiness_problems([w("Shoot")], False, [w("Extension", synced=False)], True) == []  # a follower
    assert readiness_problems([w("Shoot")], True, [w("Extension", synced=False)], True) == [
        "the leader's watch of Extension has not listed yet"]
    assert readiness_problems([w("Shoot", synced=False)], False, [], None) == ["the watch of Shoot has not listed yet"]
    assert readiness_problems([], False, [], False) == ["the webhook server does not complete a TLS handshake"]


def _server(context: ssl.SSLContext | None) -> tuple[int, threading.Event]:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        while not done.is_set():
            listener.settimeout(0.2)
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            if context is None:
                continue  # accepts and never speaks: a server that hangs
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
        listener.close()
    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], done


def test_a_tls_server_answers_also_when_it_wants_a_client_certificate(tmp_path):
    ca = certs.generate_ca("probe-ca")
    pair = certs.generate_server_cert(ca, "localhost", ["localhost"], ["127.0.0.1"])
    (tmp_path / "tls.crt").write_text(pair.cert_pem)
    (tmp_path / "tls.key").write_text(pair.key_pem)
    (tmp_path / "ca.crt").write_text(ca.cert_pem)
    plain = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    plain.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    mutual = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    mutual.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    mutual.verify_mode = ssl.CERT_REQUIRED
    mutual.load_verify_locations(tmp_path / "ca.crt")
    for context in (plain, mutual):
        port, done = _server(context)
        assert tls_answers(port, timeout=2)
        done.set()
    port, done = _server(None)  # listening, never answering
    assert not tls_answers(port, timeout=0.5)
    done.set()
    with socket.socket() as s:  # nothing listening
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not tls_answers(closed, timeout=0.5)


def test_the_probe_server_binds_without_a_dns_query(monkeypatch):
    """http.server's HTTPServer looks its own address up (socket.getfqdn) when it binds: a reverse DNS query, sent
    off the machine wherever /etc/hosts does not name the address. The probes' server answers without it."""
    import http.client
    from http.server import BaseHTTPRequestHandler

    from extension.probes import LocalHTTPServer

    def no_dns(*args):
        raise AssertionError(f"a DNS lookup: getfqdn{args}")

    monkeypatch.setattr(socket, "getfqdn", no_dns)

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = LocalHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().status == 204
        assert server.server_name == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
