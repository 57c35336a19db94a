"""``registry-cache``: the command line.

Exit codes: 0 success; 1 the Shoot is invalid (one error per line on stdout, field path first);
2 an input cannot be used (not a file, not YAML, not a Shoot) or the command line is wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from api import names
from api.field import ValidationFailed
from api.urls import is_ip_address
from api.validation import remote_url, tls_enabled, validate_shoot
from . import certs
from .manifests import InputError, load_inputs, load_old_shoot
from .render import (CA_BUNDLE_PATH, DEFAULT_IMAGE, RenderOptions, provider_status,
                     render_hosts_toml, render_shoot)
from .resolve import resolve_credentials
from .tls import BUNDLE_SECRET


def _print_errors(errors) -> None:
    for err in errors:
        print(str(err))


def cmd_validate(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.shoot, args.secret)
    old = load_old_shoot(args.old) if args.old else None
    result = validate_shoot(inputs.shoot, old, inputs.secret_getter())
    if result.extension_path is None:
        print(f"{args.shoot}: the Shoot does not enable the registry-cache extension; nothing to validate",
              file=sys.stderr)
        return 0
    if result.errors:
        _print_errors(result.errors)
        return 1
    caches = ", ".join(c.upstream for c in result.config.caches)
    print(f"{args.shoot}: valid ({len(result.config.caches)} caches: {caches})", file=sys.stderr)
    return 0


def _parse_endpoints(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for value in values:
        upstream, sep, url = value.partition("=")
        if not sep or not upstream or not url.startswith(("http://", "https://")):
            raise InputError(f"--endpoint {value!r}: expected UPSTREAM=URL, e.g. docker.io=https://10.4.0.12:5000")
        out[upstream] = url
    return out


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[1].split("/", 1)[0]
    if rest.startswith("["):
        return rest[1:rest.index("]")]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def cmd_render(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.shoot, args.secret)
    endpoints = _parse_endpoints(args.endpoint)
    result = validate_shoot(inputs.shoot, None, inputs.secret_getter())
    if result.extension_path is None:
        print(f"{args.shoot}: the Shoot does not enable the registry-cache extension; nothing to render",
              file=sys.stderr)
        return 1
    if result.errors:
        _print_errors(result.errors)
        return 1
    config = result.config
    unknown = sorted(set(endpoints) - {c.upstream for c in config.caches})
    if unknown:
        raise InputError(f"--endpoint given for {', '.join(unknown)}, which no cache of the Shoot has")
    namespace = (inputs.shoot.get("metadata") or {}).get("namespace") or ""
    credentials = resolve_credentials(inputs.shoot, config, inputs.secret_getter(), namespace,
                                      result.extension_path.child("providerConfig"))
    options = RenderOptions(image=args.image, vpa=args.vpa)

    ca = certs.generate_ca()
    tls = {}
    for cache in config.caches:
        if tls_enabled(cache):
            service = names.service_name(cache.upstream, cache.service_name_suffix)
            ips = [h for h in [_host_of(endpoints[cache.upstream])] if is_ip_address(h)] if cache.upstream in endpoints else []
            tls[cache.upstream] = certs.generate_server_cert(
                ca, f"{names.resource_name(cache.upstream)}-tls",
                certs.service_dns_names(service, options.namespace), ips)
    rendered = render_shoot(config, credentials, tls, options)

    out = Path(args.output)
    shoot_dir, nodes_dir = out / "shoot", out / "nodes"
    shoot_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*shoot_dir.glob("*.yaml"), *nodes_dir.glob("*/hosts.toml")]:
        stale.unlink()  # what an earlier render wrote: content-hashed names change
    for i, obj in enumerate(rendered.objects):
        (shoot_dir / f"{i:02d}-{obj.filename}").write_text(obj.text, encoding="utf-8")

    status_caches = []
    for cache in config.caches:
        scheme = "https" if tls_enabled(cache) else "http"
        note = None
        if cache.upstream in endpoints:
            url = endpoints[cache.upstream]
        else:
            service = rendered.services[cache.upstream]
            url = f"{scheme}://{service}.{options.namespace}.svc.cluster.local:{names.SERVER_PORT}"
            note = ("endpoint is the Service DNS name: nodes usually cannot resolve it; set the cluster IP with "
                    f"--endpoint {cache.upstream}={scheme}://<clusterIP>:{names.SERVER_PORT}")
            print(f"note: {cache.upstream}: no --endpoint given, hosts.toml points at {url} (the Service's DNS "
                  "name); nodes reach the cache by its cluster IP, which only the API server assigns: pass "
                  f"--endpoint {cache.upstream}={scheme}://<clusterIP>:{names.SERVER_PORT}", file=sys.stderr)
        status_caches.append((cache.upstream, url, remote_url(cache)))
        upstream_dir = nodes_dir / cache.upstream
        upstream_dir.mkdir(parents=True, exist_ok=True)
        (upstream_dir / "hosts.toml").write_text(
            render_hosts_toml(cache.upstream, remote_url(cache), url, CA_BUNDLE_PATH, note), encoding="utf-8")
    if tls:
        (nodes_dir / "ca-bundle.pem").write_text(ca.cert_pem, encoding="utf-8")
    status = provider_status(status_caches, BUNDLE_SECRET if tls else None)
    (out / "provider-status.yaml").write_text(yaml.safe_dump(status.to_wire(), sort_keys=False), encoding="utf-8")
    print(f"rendered {len(rendered.objects)} objects to {shoot_dir}/ and {len(config.caches)} hosts.toml to "
          f"{nodes_dir}/", file=sys.stderr)
    return 0


def _fault_from_env():
    """Fault injection for the restart tests: REGISTRY_CACHE_FAULT=crash:<point> ends the process there."""
    import os
    spec = os.environ.get("REGISTRY_CACHE_FAULT", "")
    if not spec.startswith("crash:"):
        return None
    point = spec.split(":", 1)[1]

    def fault(here: str) -> None:
        if here == point:
            print(f"REGISTRY_CACHE_FAULT: crashing at {here}", file=sys.stderr, flush=True)
            os._exit(3)
    return fault


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from . import operator, targets
    from .actuator import Settings
    from .kube import Kube

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seed = Kube.from_kubeconfig(args.kubeconfig)
    if args.shoot_kubeconfig:
        target = targets.kubeconfig_file(args.shoot_kubeconfig)
    elif args.shoot_kubeconfig_secret:
        target = targets.kubeconfig_secret(seed, args.shoot_kubeconfig_secret)
    elif args.gardener:
        target = targets.kubeconfig_secret(seed, targets.gardener_secret_names())
    else:
        target = targets.same_cluster(seed)
    webhook = None
    if args.webhooks:
        from . import webhooks
        if args.webhook_service:
            namespace, _, name = args.webhook_service.partition("/")
            client = webhooks.service_client(namespace, name)
            hostnames = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        else:
            url = args.webhook_url or f"https://127.0.0.1:{args.webhook_port}"
            client = webhooks.url_client(url)
            hostnames = [_host_of(url)]
        webhook = operator.WebhookSettings(args.webhook_address, args.webhook_port, client, hostnames,
                                           garden=args.webhooks in ("all", "garden"),
                                           seed=args.webhooks in ("all", "seed"))
    if args.metrics_address:
        from . import metrics
        metrics.serve(args.metrics_address)
    runtime = operator.build_runtime(seed, target, Settings(image=args.image, vpa=args.vpa),
                                     standalone=args.standalone, fault=_fault_from_env(), webhook=webhook)
    operator.run(runtime, liveness=args.liveness)
    return 0


def cmd_local_up(args: argparse.Namespace) -> int:
    from . import localup
    for path in args.manifest:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file")
    if not args.no_node:
        from .local.node import node_prerequisites
        missing = node_prerequisites()
        if not missing:
            from .local import up_node as up
            return up.run(Path(args.workdir) if args.workdir else None,
                          [Path(p) for p in args.manifest] or None, wait=not args.no_wait, timeout=args.timeout)
        print("This machine cannot run the local node (missing: " + "; ".join(missing) + "; as root, "
              "hack/e2e-deps.sh installs the packages). Falling back to the control plane only (--no-node): "
              "the caches are delivered but no Pod runs.", file=sys.stderr, flush=True)
    manifests = [Path(p) for p in args.manifest] or localup.default_manifests()
    return localup.run(Path(args.workdir) if args.workdir else None, manifests, wait=not args.no_wait,
                       timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-cache",
        description="Pull-through registry caches for Gardener shoots: validate, render, run.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="validate a Shoot's registry-cache configuration as admission does",
                       description="Exit 0 when valid; 1 with one error per line (field path first); "
                                   "2 when a file cannot be used.")
    p.add_argument("shoot", metavar="SHOOT.yaml")
    p.add_argument("--secret", action="append", default=[], metavar="SECRET.yaml",
                   help="a referenced credentials Secret (repeatable; kubectl get secret -o yaml output works)")
    p.add_argument("--old", metavar="OLD_SHOOT.yaml", help="validate as an update of this Shoot")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="render the cache objects and each upstream's hosts.toml offline",
                       description="Writes DIR/shoot/*.yaml, DIR/nodes/<upstream>/hosts.toml, "
                                   "DIR/nodes/ca-bundle.pem and DIR/provider-status.yaml.")
    p.add_argument("shoot", metavar="SHOOT.yaml")
    p.add_argument("--secret", action="append", default=[], metavar="SECRET.yaml",
                   help="a referenced credentials Secret (repeatable)")
    p.add_argument("--output", "-o", required=True, metavar="DIR")
    p.add_argument("--endpoint", action="append", default=[], metavar="UPSTREAM=URL",
                   help="the URL nodes reach a cache at, e.g. docker.io=https://10.4.0.12:5000 (repeatable)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"the registry image (default {DEFAULT_IMAGE})")
    p.add_argument("--vpa", action="store_true", help="also render a VerticalPodAutoscaler per cache")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("run", help="run the extension controller (and, with --standalone, the Shoot bridge)",
                       description="Watches Extensions of type registry-cache in the seed and delivers the caches "
                                   "to the shoot. Stops on SIGINT/SIGTERM.")
    p.add_argument("--kubeconfig", help="the seed cluster (default: in-cluster, then $KUBECONFIG)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--shoot-kubeconfig", metavar="PATH",
                        help="deliver to this cluster (default: the seed cluster itself)")
    target.add_argument("--shoot-kubeconfig-secret", metavar="NAME",
                        help="deliver to the cluster of the kubeconfig in Secret NAME (key kubeconfig) of each "
                             "shoot namespace")
    target.add_argument("--gardener", action="store_true",
                        help="under Gardener: reach each shoot as Gardener's extensions do, through the kubeconfig "
                             "gardenlet keeps in Secret gardener-internal (else gardener; only gardener with "
                             "GARDENER_SHOOT_CLIENT=external)")
    p.add_argument("--standalone", action="store_true",
                   help="no Gardener: also do gardenlet's part for Shoots (namespace, Cluster, ref- copies, "
                        "Extension)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"the registry image (default {DEFAULT_IMAGE})")
    p.add_argument("--vpa", action="store_true", help="deliver a VerticalPodAutoscaler per cache when served")
    p.add_argument("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="serve the controller's Prometheus metrics at /metrics, e.g. 0.0.0.0:8081")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    hooks = p.add_argument_group("admission webhooks")
    hooks.add_argument("--webhooks", nargs="?", const="all", choices=["all", "garden", "seed"],
                       help="serve and register the admission webhooks: garden (Shoot validation, refusing to "
                            "delete Secrets in use: where the Shoots are), seed (the OperatingSystemConfig "
                            "webhook: where the shoot namespaces are) or all (the default; standalone)")
    hooks.add_argument("--webhook-address", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    hooks.add_argument("--webhook-port", type=int, default=9443, help="listen port (default 9443)")
    hooks.add_argument("--webhook-url", metavar="URL",
                       help="how the API server reaches the webhooks (default https://127.0.0.1:PORT)")
    hooks.add_argument("--webhook-service", metavar="NAMESPACE/NAME",
                       help="in a cluster: reach the webhooks through this Service (port 443)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("local-up", help="run everything locally: a one-node cluster, the controller, node agent, "
                                        "test upstreams and the example Shoot",
                       description="Starts a one-node Kubernetes cluster from processes (etcd, kube-apiserver, "
                                   "kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd; built "
                                   "with Go on first use), the controller in standalone mode with its webhooks, the "
                                   "node agent, two test upstreams on the node's bridge, applies the example "
                                   "(examples/local-shoot.yaml), shows the caches Ready and an image pulled "
                                   "through each, and keeps running until Ctrl-C. --no-node: only etcd and "
                                   "kube-apiserver and the docs example (nothing runs as a Pod).")
    p.add_argument("manifest", nargs="*", help="YAML files with Shoots and Secrets (default: "
                                               "examples/local-shoot.yaml; with --no-node the docs example)")
    p.add_argument("--no-node", action="store_true",
                   help="the control plane only (for machines that cannot run containers)")
    p.add_argument("--workdir", help="where the control plane, kubeconfig and logs live "
                                     "(default: ./.registry-cache-local)")
    p.add_argument("--no-wait", action="store_true", help="show the result and stop instead of running on")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds to wait for each Extension and its caches (default 180)")
    p.set_defaults(func=cmd_local_up)

    from . import credentials_cli, nodeagent, rotate
    credentials = credentials_cli.add_parser(sub)
    rotate.add_parser(credentials)
    nodeagent.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationFailed as exc:
        _print_errors(exc.errors)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
