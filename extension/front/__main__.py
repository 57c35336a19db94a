"""``python -m extension.front``: the coalescing front of a cache Pod (see :mod:`extension.front`).

Exit codes: 0 stopped by SIGTERM/SIGINT (after draining), 2 a bad option or a file that cannot be used.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from extension.front.server import FrontServer, Options, own_certificate, tls_context


def address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address), ``[V6]:PORT``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: give HOST:PORT or :PORT")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m extension.front",
        description="The coalescing front of a registry cache: serves the cache's port, passes every request to "
                    "distribution on BACKEND and makes concurrent GETs of the same blob one GET to it.")
    p.add_argument("--listen", type=address, default=("", 5000), help="HOST:PORT to serve (default :5000)")
    p.add_argument("--backend", type=address, default=("127.0.0.1", 5002),
                   help="distribution's HOST:PORT, plain HTTP (default 127.0.0.1:5002)")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM, with its chain)")
    p.add_argument("--tls-key", help="the certificate's key (PEM)")
    p.add_argument("--spool-dir", required=True,
                   help="where blobs in flight are spooled (unnamed files, O_TMPFILE): the cache's volume")
    p.add_argument("--linger", type=float, default=10.0,
                   help="seconds a completed fetch still serves new requests from its spool (default 10)")
    p.add_argument("--backend-timeout", type=float, default=300.0,
                   help="seconds without an answer or a byte from distribution before a request fails (default 300)")
    p.add_argument("--answer-timeout", type=float, default=20.0,
                   help="seconds distribution may take to answer a request (status and headers) before the client "
                        "gets 502 and the node falls back to the upstream (default 20: a pull makes two requests "
                        "that wait it out, about containerd 1.6's 40 s for a cache that does not answer)")
    p.add_argument("--client-timeout", type=float, default=120.0,
                   help="seconds a kept connection may idle, and a send to a client may take (default 120)")
    p.add_argument("--max-connections", type=int, default=512,
                   help="client connections served at once; more wait in the listen queue (default 512)")
    p.add_argument("--shutdown-delay", type=float, default=5.0,
                   help="seconds to keep serving after SIGTERM, while the Pod leaves the Service's endpoints "
                        "(default 5)")
    p.add_argument("--drain", type=float, default=25.0,
                   help="seconds to finish requests in progress after SIGTERM (default 25, distribution's)")
    p.add_argument("--peers", type=peers, default=(),
                   help="HOST:PORT,...: the front of every replica of this cache by ordinal, this one's too (a "
                        "cache with high availability: each blob is fetched by the replica that owns it)")
    p.add_argument("--ordinal", type=int,
                   help="this replica's ordinal in --peers (default: the number at the end of the host name, as a "
                        "StatefulSet names its Pods)")
    p.add_argument("--peer-timeout", type=float, default=5.0,
                   help="seconds another replica may take to connect and answer before this one fetches the blob "
                        "itself (default 5)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def peers(value: str) -> tuple[tuple[str, int], ...]:
    return tuple(address(item) for item in value.split(",") if item)


def host_ordinal(hostname: str) -> int | None:
    """``registry-docker-io-1`` -> 1: the ordinal a StatefulSet gives the Pod (its host name)."""
    _, _, tail = hostname.rpartition("-")
    return int(tail) if tail.isdigit() else None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if not os.path.isdir(args.spool_dir) or not os.access(args.spool_dir, os.W_OK):
        print(f"error: --spool-dir {args.spool_dir}: not a writable directory", file=sys.stderr)
        return 2
    try:
        tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as exc:
        print(f"error: cannot load the TLS certificate and key: {exc}", file=sys.stderr)
        return 2
    ordinal = args.ordinal if args.ordinal is not None else host_ordinal(socket.gethostname())
    if args.peers and (ordinal is None or not 0 <= ordinal < len(args.peers)):
        print(f"error: --peers names {len(args.peers)} replicas, and this one's ordinal ({ordinal}, from --ordinal "
              f"or the host name {socket.gethostname()!r}) is not among them", file=sys.stderr)
        return 2
    options = Options(backend_host=args.backend[0], backend_port=args.backend[1], spool_dir=args.spool_dir,
                      linger=args.linger, backend_timeout=args.backend_timeout, answer_timeout=args.answer_timeout,
                      client_timeout=args.client_timeout, max_connections=args.max_connections,
                      peers=args.peers, ordinal=ordinal if args.peers else None, peer_timeout=args.peer_timeout,
                      peer_cert=own_certificate(args.tls_cert) if args.peers and tls else None)
    server = FrontServer(args.listen, options, tls)
    stop = threading.Event()

    def stopping(*_: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopping)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="accept",
                               daemon=True)
    serving.start()
    logging.getLogger("registry-cache.front").info(
        "serving %s on %s:%d, distribution at %s:%d, spool in %s", "https" if tls else "http",
        args.listen[0] or "*", server.server_address[1], *args.backend, args.spool_dir)
    stop.wait()
    log = logging.getLogger("registry-cache.front")
    log.info("stopping: serving %gs more, then draining for up to %gs", args.shutdown_delay, args.drain)
    time.sleep(args.shutdown_delay)  # connections still come until kube-proxy has seen the Pod go
    server.shutdown()  # no new connections
    server.server_close()
    drained = server.drain(args.drain)
    log.info("stopped (%s)", "drained" if drained else "drain timed out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
