"""``registry-cache local-up``: everything on this machine (:mod:`extension.local.up`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from extension.cli.errors import InputError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("local-up", help="run everything locally: control plane, controller, the example Shoot",
                       description="Starts etcd and kube-apiserver on loopback (built with Go on first use, or "
                                   "from $KUBEBUILDER_ASSETS), installs the CRDs, runs the controller with the "
                                   "standalone bridge, applies the manifests (default: the example), shows the "
                                   "result and keeps running until Ctrl-C.")
    p.add_argument("manifest", nargs="*", help="YAML files with Shoots and Secrets (default: the docs example)")
    p.add_argument("--workdir", help="where the control plane, kubeconfig and logs live "
                                     "(default: ./.registry-cache-local)")
    p.add_argument("--no-wait", action="store_true", help="show the result and stop instead of running on")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each Extension (default 90)")
    p.set_defaults(func=cmd_local_up)


def cmd_local_up(args: argparse.Namespace) -> int:
    from extension.local import up
    manifests = [Path(p) for p in args.manifest] or up.default_manifests()
    for path in manifests:
        if not path.exists():
            raise InputError(f"{path}: no such file")
    return up.run(Path(args.workdir) if args.workdir else None, manifests, wait=not args.no_wait,
                  timeout=args.timeout)
