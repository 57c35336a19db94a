"""``registry-cache node-agent``: containerd's hosts.toml on this node, standalone (:mod:`extension.nodeagent`)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from extension.cli.errors import InputError
from extension.nodeagent.agent import DEFAULT_NAMESPACE, DEFAULT_ROOT, PROBE_TIMEOUT_SECONDS
from extension.nodeagent.plan import MARKER


def cmd_node_agent(args: argparse.Namespace) -> int:
    from extension.nodeagent.agent import NodeAgent
    from extension.runtime.kube import Kube

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.interval <= 0:
        raise InputError("--interval must be greater than 0")
    try:
        kube = Kube.from_kubeconfig(args.kubeconfig)
    except Exception as exc:  # noqa: BLE001 - the kubeconfig cannot be used
        raise InputError(f"cannot load the kubeconfig: {exc}") from None
    if args.once:  # one LIST (and a GET of the node-auth Secret when an entry needs it)
        once = NodeAgent.for_kube(kube, args.namespace, args.root, ca_path=args.ca_path,
                                  probe_timeout=args.probe_timeout)
        return 0 if once.sync().ok else 1
    from extension.nodeagent.watch import watching_agent

    agent, source = watching_agent(kube, args.namespace, args.root, ca_path=args.ca_path,
                                   probe_timeout=args.probe_timeout)
    stop = threading.Event()

    def stopping(*_: Any) -> None:
        stop.set()
        agent.wake()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stopping)
    source.start(stop)
    try:
        return agent.run(args.interval, stop, ready=source.wait_listed)
    finally:
        source.close()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``node-agent`` on the ``registry-cache`` command line's subparsers."""
    p = subparsers.add_parser(
        "node-agent", help="write containerd's hosts.toml and CA bundle on this node (standalone mode)",
        description="Reads the ConfigMaps labelled registry-cache.gardener.cloud/node-config=true that the "
                    "controller publishes (one LIST, then a WATCH) and writes ROOT/<upstream>/hosts.toml once "
                    "each cache answers, and ROOT/ca-bundle.pem. Removes only directories it wrote (they carry "
                    f"the file {MARKER}). Runs until SIGTERM/SIGINT; --once syncs once (exit 0, or 1 when the "
                    "ConfigMaps could not be read or ROOT not written).")
    p.add_argument("--kubeconfig", help="the cluster (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"containerd's hosts directory (default {DEFAULT_ROOT})")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                   help=f"where the ConfigMaps are (default {DEFAULT_NAMESPACE})")
    p.add_argument("--interval", type=float, default=5.0,
                   help="seconds between checks of the caches that do not answer yet and of ROOT, from what the "
                        "watches keep in memory: no API request (default 5); a change is written at once")
    p.add_argument("--once", action="store_true", help="sync once and exit")
    p.add_argument("--ca-path", help="the path containerd reads the CA bundle at, written into hosts.toml "
                                     "(default ROOT/ca-bundle.pem; set it when this process sees ROOT under "
                                     "another path than containerd does)")
    p.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_SECONDS,
                   help=f"seconds a cache has to answer its readiness probe (default {PROBE_TIMEOUT_SECONDS:g})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_node_agent)
    return p
