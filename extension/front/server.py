"""The front's HTTP/1.1 server: a thread per client connection (bounded), a fetch thread per coalesced blob.

Roles of a blob GET, as the access log names them (one line per request on stdout):

- ``fetch``: the first request for a key; its fetch from distribution is what the upstream sees;
- ``wait``: joined a fetch in flight, streams the same spool as it grows;
- ``linger``: came after the fetch completed but within ``linger`` seconds, served from the spool (so that
  a request that arrives while distribution is still committing the blob does not fetch it again);
- ``pass``: anything else, passed to distribution as it is (also a waiter whose fetch was answered with
  anything but 200: it asks distribution itself).

A fetch never depends on its first client: it runs to its end in its own thread even when every reader has
gone, so the blob lands in distribution's storage.

Replicas (a cache with high availability): each blob has one owner among the replicas (rendezvous hashing of its
digest over their ordinals, ``--peers``). A replica asked for a blob another owns fetches it from that replica's
front (which fetches it once from its distribution, and so from the upstream) instead of from its own
distribution, so that the replicas together fetch each blob from the upstream once. The request to the owner carries
``X-Registry-Cache-Peer`` and is served there as any other, never passed on. A replica that cannot reach the owner
(not ready, gone, not answering within ``peer_timeout``) fetches from its own distribution, as a single replica does,
and asks that owner again only after ``answer_timeout``. With TLS the owner must present this front's own
certificate (the replicas share it): nothing else is trusted.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import logging
import os
import re
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("registry-cache.front")

# seconds to connect to another replica: inside a cluster a connection is made in milliseconds, and one to a
# replica on a node that stopped (still among its Service's endpoints for a while) never is
PEER_CONNECT_TIMEOUT = 1.0
PEER_HEADER = "X-Registry-Cache-Peer"  # a request from another replica's front: served here, never passed on
BLOB_PATH = re.compile(r"^/v2/(?P<name>[a-z0-9][a-z0-9._/-]*)/blobs/(?P<digest>sha256:[a-f0-9]{64})$")
CHUNK = 256 << 10  # bytes per read from distribution and per send to a client (a buffer per connection)
# headers of one connection, not of the message (RFC 9110 7.6.1), never forwarded
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"))
# a request with any of these is not a plain full GET: passed through
NOT_COALESCED = frozenset(("range", "if-range", "if-match", "if-none-match", "if-modified-since",
                           "if-unmodified-since"))
_ACCESS_LOCK = threading.Lock()
REFUSAL_BODY_MAX = 1 << 20  # a non-200 answer to a fetch is read whole up to this size

PENDING, STREAMING, COMPLETE, FAILED, REFUSED = "pending", "streaming", "complete", "failed", "refused"


@dataclass(frozen=True)
class Options:
    backend_host: str
    backend_port: int
    spool_dir: str
    linger: float = 10.0  # seconds a completed fetch keeps serving new requests from its spool
    backend_timeout: float = 300.0  # seconds without a byte from distribution before a request fails
    # seconds distribution may take to answer a request (its status line and headers): a frozen or hung
    # distribution is answered 502 after that, so the node falls back to the upstream instead of waiting
    answer_timeout: float = 20.0
    client_timeout: float = 120.0  # idle keep-alive, and the longest a send to a client may take
    max_connections: int = 512
    peers: tuple[tuple[str, int], ...] = ()  # every replica's front by ordinal (this one's too); () alone
    ordinal: int | None = None  # this replica's place in ``peers``
    peer_timeout: float = 5.0  # seconds another replica may take to connect and answer before this one fetches
    peer_cert: bytes | None = None  # DER of the certificate the other replicas must present (TLS), this one's


def owner_of(digest: str, replicas: int) -> int:
    """The replica that fetches ``digest`` (rendezvous hashing: the ordinal with the highest hash of
    ordinal and digest; a change in the number of replicas moves only the blobs of the replicas added or gone)."""
    return max(range(replicas), key=lambda i: hashlib.sha256(f"{i}/{digest}".encode()).digest())


@dataclass(eq=False)
class Fetch:
    """One coalesced blob GET from distribution and the spool its readers stream."""

    key: tuple[str, str, str]  # (repository, digest, Authorization)
    path: str
    peer: int | None = None  # the replica it is fetched from first, None: this one's distribution
    cond: threading.Condition = field(default_factory=threading.Condition)
    state: str = PENDING
    status_line: tuple[int, str] = (0, "")
    headers: list[tuple[str, str]] = field(default_factory=list)
    size: int | None = None
    written: int = 0
    fd: int | None = None
    readers: int = 0
    done: bool = False  # the fetch thread has finished (the spool is no longer written)
    refusal: bytes = b""
    error: str = ""

    @property
    def digest(self) -> str:
        return self.key[1]

    def wait_beyond(self, sent: int, timeout: float) -> tuple[int, str, int | None]:
        """Wait until more than ``sent`` bytes may be sent, the fetch ended, or ``timeout``; (sendable, state, fd)."""
        with self.cond:
            self.cond.wait_for(lambda: self.sendable() > sent or self.state in (COMPLETE, FAILED), timeout)
            return self.sendable(), self.state, self.fd

    def sendable(self) -> int:
        """How far readers may send: everything once verified, else all but the last byte (with a known size):
        a fetch that fails leaves every reader one byte short of its Content-Length."""
        if self.state == COMPLETE or self.size is None:
            return self.written
        return min(self.written, max(0, self.size - 1))


def open_spool(directory: str) -> int:
    """An unnamed file in ``directory`` (``O_TMPFILE``): no name to leave behind, its blocks freed when closed."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, IsADirectoryError, OSError):
        fd, name = tempfile.mkstemp(dir=directory, prefix=".front-spool-")
        os.unlink(name)
        return fd


def coalescible_query(query: str) -> bool:
    """Whether a blob GET with this query string is the same request as one without: none, or only ``ns``
    (containerd names the upstream it pulls for, ``?ns=docker.io``, when it asks a mirror; distribution ignores
    it: a cache serves one upstream)."""
    return all(part.startswith("ns=") for part in query.split("&")) if query else True


class Backend:
    """Whether distribution answers. Once a request has waited ``answer_timeout`` for its answer in vain,
    distribution counts as hung: other requests get 502 at once instead of each waiting as long, and one request
    per ``answer_timeout`` tries again; the first answer ends it. A frozen distribution so costs a pull one wait,
    not one per request (containerd makes several)."""

    def __init__(self, answer_timeout: float, clock: Callable[[], float] = time.monotonic):
        self.answer_timeout = answer_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._hung_since: float | None = None
        self._last_try = 0.0

    def may_try(self) -> bool:
        with self._lock:
            if self._hung_since is None:
                return True
            now = self.clock()
            if now - self._last_try < self.answer_timeout:
                return False
            self._last_try = now
            return True

    def hung(self) -> None:
        with self._lock:
            if self._hung_since is None:
                log.warning("distribution did not answer within %gs: answering 502 at once until it does",
                            self.answer_timeout)
                self._hung_since = self._last_try = self.clock()

    def answered(self) -> None:
        with self._lock:
            if self._hung_since is not None:
                log.info("distribution answers again (after %.1fs)", self.clock() - self._hung_since)
                self._hung_since = None


class BackendHung(OSError):
    """Not sent: distribution did not answer the last request in time."""


class Coalescer:
    def __init__(self, options: Options, backend: Backend):
        self.options = options
        self.backend = backend
        self.lock = threading.Lock()
        self.fetches: dict[tuple[str, str, str], Fetch] = {}
        self.stats = {"fetch": 0, "wait": 0, "linger": 0, "peer": 0, "peer-failed": 0}
        # the other replicas, as this one's distribution: one that did not answer in time is not asked for a while
        self.peers = {i: Backend(options.answer_timeout) for i in range(len(options.peers)) if i != options.ordinal}
        self.peer_tls = peer_tls_context() if options.peer_cert is not None else None

    def owner(self, digest: str) -> int | None:
        """The other replica to fetch ``digest`` from, None to fetch it from this one's distribution."""
        o = self.options
        if o.ordinal is None or len(o.peers) < 2:
            return None
        owner = owner_of(digest, len(o.peers))
        return owner if owner != o.ordinal and self.peers[owner].may_try() else None

    def join(self, key: tuple[str, str, str], path: str, headers: list[tuple[str, str]],
             peer: int | None = None) -> tuple[Fetch, str]:
        """The fetch this request reads from and its role: a new one (``fetch``, from replica ``peer`` first) or
        one in flight or lingering."""
        with self.lock:
            f = self.fetches.get(key)
            if f is not None and f.state not in (FAILED, REFUSED):
                f.readers += 1
                role = "linger" if f.state == COMPLETE else "wait"
                self.stats[role] += 1
                return f, role
            f = Fetch(key, path, peer=peer, readers=1)
            self.fetches[key] = f
            self.stats["fetch"] += 1
        threading.Thread(target=self._fetch, args=(f, headers), name=f"fetch-{key[1][7:19]}", daemon=True).start()
        return f, "fetch"

    def leave(self, f: Fetch) -> None:
        with self.lock:
            f.readers -= 1
            self._release(f)

    def _release(self, f: Fetch) -> None:
        """Close the spool once nothing writes, reads or may still join it (under ``self.lock``)."""
        if f.fd is not None and f.done and f.readers == 0 and self.fetches.get(f.key) is not f:
            os.close(f.fd)
            f.fd = None

    def _forget(self, f: Fetch) -> None:
        with self.lock:
            if self.fetches.get(f.key) is f:
                del self.fetches[f.key]
            self._release(f)

    def _finish(self, f: Fetch, state: str, error: str = "") -> None:
        with f.cond:
            f.state, f.error = state, error
            f.cond.notify_all()
        with self.lock:
            f.done = True
        if state == COMPLETE and self.options.linger > 0:
            timer = threading.Timer(self.options.linger, self._forget, (f,))
            timer.daemon = True
            timer.start()
        else:
            self._forget(f)

    def _from_peer(self, f: Fetch, headers: list[tuple[str, str]]) \
            -> tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None:
        """The blob's GET at the replica that owns it: its answer when it is 200, else None (this replica fetches
        it itself)."""
        o = self.options
        assert f.peer is not None
        host, port = o.peers[f.peer]
        timeout = min(o.peer_timeout, PEER_CONNECT_TIMEOUT)  # to connect; the answer's is set by _answer
        conn = http.client.HTTPConnection(host, port, timeout=timeout) if self.peer_tls is None else \
            http.client.HTTPSConnection(host, port, timeout=timeout, context=self.peer_tls)
        try:
            conn.connect()
            if o.peer_cert is not None and (not isinstance(conn.sock, ssl.SSLSocket)
                                            or conn.sock.getpeercert(binary_form=True) != o.peer_cert):
                raise ssl.SSLError("the replica presented another certificate than this cache's")
            _send_get(conn, f.path, [*headers, (PEER_HEADER, str(o.ordinal))])
            resp = _answer(conn, o, self.peers[f.peer], o.peer_timeout)
            if resp.status == 200:
                with self.lock:
                    self.stats["peer"] += 1
                return conn, resp
            log.info("replica %d answered %d for %s: fetching it here", f.peer, resp.status, f.path)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError):  # (no connection within PEER_CONNECT_TIMEOUT)
                self.peers[f.peer].hung()
            log.warning("replica %d (%s:%d) did not serve %s: %s; fetching it here", f.peer, host, port, f.path,
                        exc)
        with self.lock:
            self.stats["peer-failed"] += 1
        conn.close()
        return None

    def _fetch(self, f: Fetch, headers: list[tuple[str, str]]) -> None:
        o = self.options
        conn = http.client.HTTPConnection(o.backend_host, o.backend_port, timeout=o.backend_timeout)
        try:
            answered = self._from_peer(f, headers) if f.peer is not None else None
            if answered is not None:
                conn.close()
                conn, resp = answered
            else:
                if not self.backend.may_try():
                    raise BackendHung("distribution did not answer the last request in time")
                _send_get(conn, f.path, headers)
                resp = _answer(conn, o, self.backend)
            if resp.status != 200:
                body = resp.read(REFUSAL_BODY_MAX + 1)
                if len(body) > REFUSAL_BODY_MAX:
                    raise OSError(f"answer {resp.status} with a body over {REFUSAL_BODY_MAX} bytes")
                resp.read()
                with f.cond:
                    f.status_line = (resp.status, resp.reason)
                    f.headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP
                                 and k.lower() != "content-length"]
                    f.refusal = body
                self._finish(f, REFUSED, f"distribution answered {resp.status}")
                return
            length = resp.getheader("Content-Length")
            fd = open_spool(o.spool_dir)
            with f.cond:
                f.fd = fd
                f.size = int(length) if length is not None else None
                f.status_line = (resp.status, resp.reason)
                f.headers = [(k, v) for k, v in resp.getheaders()
                             if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
                f.state = STREAMING
                f.cond.notify_all()
            hasher = hashlib.sha256()
            offset = 0
            while True:
                data = resp.read1(CHUNK)  # what has arrived, up to CHUNK: readers see it at once
                if not data:
                    break
                n = len(data)
                chunk = memoryview(data)
                done = 0
                while done < n:
                    done += os.pwrite(fd, chunk[done:], offset + done)
                hasher.update(chunk)
                offset += n
                with f.cond:
                    f.written = offset
                    f.cond.notify_all()
            got = "sha256:" + hasher.hexdigest()
            if f.size is not None and offset != f.size:
                raise OSError(f"{offset} of {f.size} bytes")
            if got != f.digest:
                raise OSError(f"the {offset} bytes hash to {got}")
            self._finish(f, COMPLETE)
        except Exception as exc:  # noqa: BLE001 - any failure ends this fetch for all its readers
            log.warning("fetch %s %s failed after %d bytes: %s", f.path, f.key[2] and "(authorized)" or "",
                        f.written, exc)
            self._finish(f, FAILED, str(exc) or type(exc).__name__)
        finally:
            conn.close()


class Aborted(Exception):
    """The response cannot be completed: the connection is closed without its end."""


def _chunks(rfile: io.BufferedIOBase) -> Iterator[bytes]:
    """The decoded body of a chunked request, chunk by chunk (trailers dropped)."""
    while True:
        line = rfile.readline(1024)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass
            return
        data = rfile.read(size)
        rfile.readline(8)
        yield data


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "registry-cache-front"
    server: FrontServer

    def setup(self) -> None:
        self.request.settimeout(self.server.options.client_timeout)
        super().setup()
        self.backend: http.client.HTTPConnection | None = None
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.backend is not None:
                self.backend.close()

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ssl.SSLError, Aborted):
            self.close_connection = True

    # one method for every HTTP method
    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _access(self, status: int, sent: int, role: str, ttfb: float | None) -> None:
        total = time.monotonic() - self._t0
        agent = self.headers.get("User-Agent", "") if self.headers else ""
        line = (f'{self.client_address[0]} "{self.command} {self.path}" {status} {sent} role={role} '
                f'ttfb={ttfb if ttfb is None else round(ttfb, 4)} total={total:.4f} agent="{agent}"\n')
        with _ACCESS_LOCK:  # one whole line at a time: print() writes the text and its newline apart
            sys.stdout.write(line)
            sys.stdout.flush()

    def _serve(self) -> None:
        self._t0 = time.monotonic()
        self.server.busy_changed(+1)
        try:
            if self.command == "GET" and self.path == "/healthz":
                self._send_simple(200, b"ok\n")
                self._access(200, 3, "health", 0.0)
                return
            path, _, query = self.path.partition("?")
            m = BLOB_PATH.match(path) if self.command == "GET" and coalescible_query(query) else None
            if m and not any(h.lower() in NOT_COALESCED for h in self.headers.keys()):
                key = (m["name"], m["digest"], self.headers.get("Authorization", ""))
                peer = None if PEER_HEADER in self.headers else self.server.coalescer.owner(m["digest"])
                self._serve_coalesced(key, peer)
            else:
                self._pass("pass")
        finally:
            self.server.busy_changed(-1)
            if self.server.draining:
                self.close_connection = True

    # --- to distribution ---

    def _forward_headers(self) -> list[tuple[str, str]]:
        connection_named = {t.strip().lower() for v in self.headers.get_all("Connection", []) for t in v.split(",")}
        out = [(k, v) for k, v in self.headers.items()
               if k.lower() not in HOP_BY_HOP and k.lower() not in connection_named and k.lower() != "expect"]
        forwarded = self.headers.get("X-Forwarded-For")
        out = [(k, v) for k, v in out if k.lower() != "x-forwarded-for"]
        client = self.client_address[0]
        out.append(("X-Forwarded-For", f"{forwarded}, {client}" if forwarded else client))
        return out

    def _backend_response(self) -> http.client.HTTPResponse:
        """Send this request to distribution on the connection kept for this client connection (a fresh one if
        distribution closed the kept one meanwhile, for requests without a body)."""
        o = self.server.options
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = int(self.headers.get("Content-Length") or 0)
        if not self.server.backend.may_try():
            raise BackendHung("distribution did not answer the last request in time")
        for attempt in (0, 1):
            reused = self.backend is not None
            if self.backend is None:
                self.backend = http.client.HTTPConnection(o.backend_host, o.backend_port, timeout=o.backend_timeout)
            try:
                self.backend.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self._forward_headers():
                    if k.lower() != "content-length" or not chunked:
                        self.backend.putheader(k, v)
                if chunked:
                    self.backend.putheader("Transfer-Encoding", "chunked")
                    self.backend.endheaders()
                    for data in _chunks(self.rfile):
                        self.backend.send(b"%x\r\n%s\r\n" % (len(data), data))
                    self.backend.send(b"0\r\n\r\n")
                else:
                    self.backend.endheaders()
                    left = length
                    while left > 0:
                        data = self.rfile.read(min(left, CHUNK))
                        if not data:
                            raise Aborted("the client's body ended early")
                        self.backend.send(data)
                        left -= len(data)
                return _answer(self.backend, o, self.server.backend)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.backend.close()
                self.backend = None
                if attempt or not reused or chunked or length:
                    raise
        raise AssertionError("unreachable")

    def _pass(self, role: str) -> None:
        try:
            resp = self._backend_response()
        except (OSError, http.client.HTTPException) as exc:
            log.warning("%s %s: distribution did not answer: %s", self.command, self.path, exc)
            self.close_connection = True
            self._send_simple(502, b"registry-cache front: the registry did not answer\n")
            self._access(502, 0, role, None)
            return
        ttfb = time.monotonic() - self._t0
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        bodyless = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        chunked = not bodyless and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if resp.will_close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        sent = 0
        if bodyless:
            resp.read()
        else:
            buf = memoryview(bytearray(CHUNK))
            try:
                while True:
                    n = resp.readinto(buf)
                    if not n:
                        break
                    if chunked:
                        self.wfile.write(b"%x\r\n" % n)
                    self.wfile.write(buf[:n])
                    if chunked:
                        self.wfile.write(b"\r\n")
                    sent += n
            except (http.client.IncompleteRead, OSError) as exc:  # distribution broke off: so do we
                if self.backend is not None:
                    self.backend.close()
                    self.backend = None
                self._access(resp.status, sent, role + "-cut", ttfb)
                raise Aborted(str(exc)) from None
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        if resp.will_close and self.backend is not None:
            self.backend.close()
            self.backend = None
        self._access(resp.status, sent, role, ttfb)

    # --- coalesced ---

    def _serve_coalesced(self, key: tuple[str, str, str], peer: int | None) -> None:
        coalescer = self.server.coalescer
        f, role = coalescer.join(key, self.path, self._forward_headers(), peer)
        try:
            self._stream(f, role)
        finally:
            coalescer.leave(f)

    def _stream(self, f: Fetch, role: str) -> None:
        timeout = self.server.options.backend_timeout
        with f.cond:
            if not f.cond.wait_for(lambda: f.state != PENDING, self.server.options.answer_timeout):
                f_state = "timeout"
            else:
                f_state = f.state
        if f_state in (REFUSED, "timeout") or f_state == FAILED and f.status_line[0] == 0:
            if role == "fetch" and f_state == REFUSED:  # its own answer
                self.send_response_only(*f.status_line)
                for k, v in f.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(f.refusal)))
                self.end_headers()
                self.wfile.write(f.refusal)
                self._access(f.status_line[0], len(f.refusal), role, time.monotonic() - self._t0)
                return
            if role == "fetch":
                self.close_connection = True
                self._send_simple(502, b"registry-cache front: the registry did not answer\n")
                self._access(502, 0, role, None)
                return
            self._pass("pass")  # a waiter asks distribution itself
            return
        ttfb = time.monotonic() - self._t0
        self.send_response_only(*f.status_line)
        for k, v in f.headers:
            self.send_header(k, v)
        if f.size is not None:
            self.send_header("Content-Length", str(f.size))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        plain = not isinstance(self.connection, ssl.SSLSocket) and f.size is not None
        buf = memoryview(bytearray(CHUNK))
        spool: BinaryIO | None = None
        try:
            while True:
                limit, state, fd = f.wait_beyond(sent, timeout)
                if sent < limit:
                    assert fd is not None
                    n = min(limit - sent, CHUNK)
                    if plain:  # zero copy; the socket's sendfile waits out a full send buffer
                        if spool is None:
                            spool = open(fd, "rb", closefd=False)  # closed below; never closes the fd
                        n = self.connection.sendfile(spool, sent, n)
                        if not n:
                            raise Aborted("sendfile sent nothing")
                    else:
                        n = os.preadv(fd, [buf[:n]], sent)
                        if f.size is None:
                            self.wfile.write(b"%x\r\n" % n)
                        self.wfile.write(buf[:n])
                        if f.size is None:
                            self.wfile.write(b"\r\n")
                    sent += n
                    continue
                if state == COMPLETE:
                    if f.size is None:
                        self.wfile.write(b"0\r\n\r\n")
                    self._access(200, sent, role, ttfb)
                    return
                # failed, or nothing arrived for the whole timeout: cut the response off
                self.close_connection = True
                self._access(200, sent, role + "-cut", ttfb)
                raise Aborted(f.error or "no bytes from the registry")
        except OSError:  # the client went away
            self.close_connection = True
            self._access(200, sent, role + "-gone", ttfb)
            raise
        finally:
            if spool is not None:
                spool.close()

    def _send_simple(self, status: int, body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class FrontServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], options: Options, tls: ssl.SSLContext | None):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host or (host == "" and socket.has_ipv6) else socket.AF_INET
        self.options = options
        self.tls = tls
        self.backend = Backend(options.answer_timeout)
        self.coalescer = Coalescer(options, self.backend)
        self.slots = threading.BoundedSemaphore(options.max_connections)
        self.draining = False
        self._busy = 0
        self._busy_lock = threading.Condition()
        super().__init__(("::" if host == "" and self.address_family == socket.AF_INET6 else host, address[1]),
                         Handler, bind_and_activate=False)
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock.settimeout(self.options.client_timeout)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, Aborted)):
            return
        log.exception("request from %s failed", client_address)

    def busy_changed(self, delta: int) -> None:
        with self._busy_lock:
            self._busy += delta
            self._busy_lock.notify_all()

    def drain(self, seconds: float) -> bool:
        """Stop serving new requests on kept connections and wait up to ``seconds`` for the ones in progress."""
        self.draining = True
        with self._busy_lock:
            return self._busy_lock.wait_for(lambda: self._busy == 0, seconds)


def _send_get(conn: http.client.HTTPConnection, path: str, headers: list[tuple[str, str]]) -> None:
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers:
        conn.putheader(k, v)
    conn.endheaders()


def _answer(conn: http.client.HTTPConnection, o: Options, backend: Backend,
            answer_timeout: float | None = None) -> http.client.HTTPResponse:
    """The answer to the request just sent on ``conn`` (to distribution, or to the replica ``backend`` stands for):
    its status line and headers within ``answer_timeout`` (default ``o.answer_timeout``), then up to
    ``o.backend_timeout`` between bytes of the body."""
    assert conn.sock is not None
    conn.sock.settimeout(o.answer_timeout if answer_timeout is None else answer_timeout)
    try:
        resp = conn.getresponse()
    except TimeoutError:
        backend.hung()
        raise
    backend.answered()
    if conn.sock is not None:  # (None: the answer closes the connection, its timeout stays)
        conn.sock.settimeout(o.backend_timeout)
    return resp


def peer_tls_context() -> ssl.SSLContext:
    """TLS to another replica's front: its certificate is compared with this one's after the handshake (the
    replicas share it), so no CA or name is checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinned instead: the exact certificate, checked before anything is sent
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def own_certificate(cert: str) -> bytes:
    """The DER of the first certificate of the PEM file ``cert`` (the leaf)."""
    text = Path(cert).read_text(encoding="ascii")
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(text[:text.index(end) + len(end)])


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
