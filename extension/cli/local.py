"""``registry-cache local-up``: everything on this machine (:mod:`extension.local.up`), with the one-node cluster
unless ``--no-node`` or the machine cannot run it. Debian packages the node needs are installed first where that
can be done (root with apt-get); where not, it says what is missing and falls back to the control plane only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from extension.cli.errors import CommandFailed, InputError

LOCAL_PARTS_MISSING = ("local-up needs the local parts (the control plane, the one-node cluster, their CRDs, chart, "
                       "examples and build scripts), which come as a distribution of their own: "
                       "pip install 'registry-cache[local]' where it is published; from a checkout of the "
                       "repository pip install ./local beside pip install . (pip install -e . has them already)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("local-up", help="run everything locally: a one-node cluster, the controller, the node "
                                        "agent, test upstreams and the example Shoot",
                       description="Starts a one-node Kubernetes cluster from processes (etcd, kube-apiserver, "
                                   "kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd; built "
                                   "with Go on first use), the controller in standalone mode with its webhooks, the "
                                   "node agent, two test upstreams on the node's bridge, applies the example "
                                   "(examples/local-shoot.yaml), shows the caches Ready and an image pulled "
                                   "through each, and keeps running until Ctrl-C. --no-node: only etcd and "
                                   "kube-apiserver and the docs example (nothing runs as a Pod); also what it falls "
                                   "back to, and says so, where the node cannot run.")
    p.add_argument("manifest", nargs="*", help="YAML files with Shoots and Secrets (default: "
                                               "examples/local-shoot.yaml; with --no-node the docs example)")
    p.add_argument("--no-node", action="store_true",
                   help="the control plane only (for machines that cannot run containers)")
    p.add_argument("--nodes", type=int, default=1, metavar="N",
                   help="nodes in the local cluster (default 1, the quickest to start; each has its own network "
                        "and mount namespaces, containerd, kubelet, kube-proxy and node agent)")
    p.add_argument("--host-processes", action="store_true",
                   help="run the controller and the node agent as processes on the host instead of installing "
                        "the image with the Helm chart (quicker to iterate on; what it falls back to where the "
                        "image cannot be built)")
    p.add_argument("--workdir", help="where the cluster, kubeconfig and logs live "
                                     "(default: ./.registry-cache-local)")
    p.add_argument("--no-wait", action="store_true", help="show the result and stop instead of running on")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds to wait for each Extension and its caches (default 180)")
    p.set_defaults(func=cmd_local_up)


def cmd_local_up(args: argparse.Namespace) -> int:
    try:
        from extension.local import up
        from extension.local.images import image_unavailable
        from extension.local.node import install_node_packages, node_prerequisites
        from extension.local.procs import ClusterError
    except ModuleNotFoundError as exc:  # registry-cache without registry-cache-local (the image, a plain install)
        if (exc.name or "").startswith("extension.local"):
            raise CommandFailed(LOCAL_PARTS_MISSING) from None
        raise

    for path in args.manifest:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file")
    if not 1 <= args.nodes <= 16:
        raise InputError(f"--nodes: from 1 to 16, not {args.nodes}")
    node = not args.no_node
    if node:
        missing = node_prerequisites()
        if missing and install_node_packages():
            missing = node_prerequisites()
        if missing:
            print("This machine cannot run the local node (missing: " + "; ".join(missing) + "; as root, "
                  "hack/e2e-deps.sh installs the packages). Falling back to the control plane only (--no-node): "
                  "the caches are delivered but no Pod runs.", file=sys.stderr, flush=True)
            node = False
    install = "processes" if args.host_processes else "chart"
    if node and install == "chart":
        why = image_unavailable()
        if why:
            print(f"The image cannot be built here ({why}). Running the controller and the node agent as processes "
                  "on the host instead (--host-processes).", file=sys.stderr, flush=True)
            install = "processes"
    try:
        return up.run(Path(args.workdir) if args.workdir else None, [Path(p) for p in args.manifest] or None,
                      wait=not args.no_wait, timeout=args.timeout, node=node, install=install, nodes=args.nodes)
    except ClusterError as exc:  # a part of the cluster that did not come up: its message says which and why
        raise CommandFailed(str(exc)) from None
