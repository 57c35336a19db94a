"""``registry-cache run``: the controller, and with ``--standalone`` gardenlet's part; ``--webhooks`` serves
the admission webhooks. See :mod:`extension.manager` for what runs."""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import Callable
from typing import Any

from extension import constants as c
from extension.cli.errors import InputError
from extension.cli.offline import add_dial_timeout_argument, add_front_image_argument, parse_dial_timeout


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run the extension controller (and, with --standalone, the Shoot bridge)",
                       description="Watches Extensions of type registry-cache and registry-mirror in the seed and "
                                   "delivers the caches (a VerticalPodAutoscaler each when the Shoot wants VPA, "
                                   "their monitoring unless the Shoot's purpose is testing) and the mirrors. Stops "
                                   "on SIGINT/SIGTERM.")
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
                             "GARDENER_SHOOT_CLIENT=external); the caches' monitoring goes to the shoot namespace "
                             "of the seed (ScrapeConfig, PrometheusRule, dashboard), as Gardener's")
    p.add_argument("--standalone", action="store_true",
                   help="no Gardener: also do gardenlet's part for Shoots (namespace, Cluster, ref- copies, "
                        "Extension)")
    p.add_argument("--node-auth", action="store_true",
                   help="with --standalone: caches only nodes can read. Each cache requires credentials the "
                        "controller generates (htpasswd); the node agent writes them as an Authorization header "
                        "into that upstream's hosts.toml (root only). Pods without them get 401 from the cache")
    p.add_argument("--upstream-check-interval", type=float, default=c.DEFAULT_UPSTREAM_CHECK_INTERVAL_SECONDS,
                   metavar="SECONDS",
                   help="check each upstream's credentials this often, besides at every reconcile; reported as "
                        "the Extension's UpstreamCredentialsValid-<upstream> conditions and as metrics. 0: only at "
                        f"reconciles (default {c.DEFAULT_UPSTREAM_CHECK_INTERVAL_SECONDS:g})")
    p.add_argument("--no-upstream-check", action="store_true",
                   help="never check the upstreams' credentials (no requests to the upstreams from the controller); "
                        "what caches with a credential provider plugin report is still read from their Pods")
    p.add_argument("--image", default=c.DEFAULT_IMAGE, help=f"the registry image (default {c.DEFAULT_IMAGE})")
    add_front_image_argument(p)
    p.add_argument("--liveness", metavar="URL",
                   help="serve the probes on this address, e.g. http://0.0.0.0:8080/healthz: /healthz (liveness: "
                        "the watches run, no worker is stuck, the webhook server answers) and /readyz (readiness: "
                        "the webhook server answers and the watches have listed)")
    p.add_argument("--probe-watch-grace", type=float, default=60.0, metavar="SECONDS",
                   help="/healthz fails once a watch has failed this long without a success (default 60)")
    p.add_argument("--probe-worker-deadline", type=float, default=600.0, metavar="SECONDS",
                   help="/healthz fails once a worker is on one Extension this long (default 600)")
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="serve the controller's Prometheus metrics at /metrics, e.g. 0.0.0.0:8081")
    p.add_argument("--resync-period", type=float, default=3600.0, metavar="SECONDS",
                   help="look at every Extension (of both types) this often, putting back what was changed in the "
                        "shoot by hand (default 3600; SIGUSR1 starts one at once)")
    p.add_argument("--workers", type=int, default=8, metavar="N",
                   help="Extensions reconciled at once (default 8)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_dial_timeout_argument(p)
    election = p.add_argument_group(
        "leader election", "with several replicas: one reconciles (holds a Lease, as controller-runtime's), all "
                           "serve the webhooks")
    election.add_argument("--leader-election", action="store_true",
                          help="reconcile only while holding the Lease")
    election.add_argument("--leader-election-namespace", metavar="NS",
                          help="the Lease's namespace (default: $POD_NAMESPACE, else the service account's)")
    election.add_argument("--leader-election-id", default=c.LEADER_ELECTION_ID, metavar="NAME",
                          help=f"the Lease's name (default {c.LEADER_ELECTION_ID})")
    election.add_argument("--leader-election-lease-duration", type=float, default=15.0, metavar="SECONDS",
                          help="how long a follower waits for an unrenewed Lease before it takes it (default 15)")
    election.add_argument("--leader-election-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                          help="how long the leader keeps acting without a renewal (default 10)")
    election.add_argument("--leader-election-retry-period", type=float, default=2.0, metavar="SECONDS",
                          help="how often the Lease is renewed or tried (default 2)")
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
    hooks.add_argument("--webhook-client-ca", metavar="FILE",
                       help="answer only callers with a client certificate issued by this CA: the API server, "
                            "given one in its AdmissionConfiguration (kubeConfigFile); without it any caller that "
                            "reaches the port gets an answer, which then reads no Secret and names no other Shoot")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, checkpoint: Callable[[str], None] | None = None) -> int:
    """``checkpoint`` is a test seam (see the actuator); the command line never sets it."""
    from extension import manager
    from extension.cli.offline import host_of
    from extension.component.objects import RenderOptions
    from extension.component.registrycache import MONITORING_GARDENER, MONITORING_OPERATOR
    from extension.controller import shoots
    from extension.runtime.kube import Kube
    from extension.runtime.leader import LeaderElector, default_namespace
    from extension.webhook import server

    dial_timeout = parse_dial_timeout(args.dial_timeout)
    if args.upstream_check_interval < 0:
        raise InputError("--upstream-check-interval must not be negative")
    if args.node_auth and not args.standalone:
        raise InputError("--node-auth needs --standalone: the credentials reach nodes through the node agent; "
                         "Gardener's OperatingSystemConfig cannot carry an Authorization header for a registry host")
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers < 1:
        raise InputError("--workers must be at least 1")
    seed = Kube.from_kubeconfig(args.kubeconfig)
    elector = None
    if args.leader_election:
        namespace = args.leader_election_namespace or default_namespace()
        if not namespace:
            raise InputError("--leader-election needs --leader-election-namespace outside a cluster")
        try:
            elector = LeaderElector(seed, namespace, args.leader_election_id,
                                    lease_duration=args.leader_election_lease_duration,
                                    renew_deadline=args.leader_election_renew_deadline,
                                    retry_period=args.leader_election_retry_period)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    fence = elector.leading if elector is not None else None
    writes = manager.writer(seed, elector)
    if args.shoot_kubeconfig:
        target = shoots.kubeconfig_file(args.shoot_kubeconfig, fence=fence)
    elif args.shoot_kubeconfig_secret:
        target = shoots.kubeconfig_secret(writes, args.shoot_kubeconfig_secret, fence=fence)
    elif args.gardener:
        target = shoots.kubeconfig_secret(writes, shoots.gardener_secret_names(), fence=fence)
    else:
        target = shoots.same_cluster(writes)
    webhook = None
    if args.webhooks:
        service = None
        if args.webhook_service:
            namespace, _, name = args.webhook_service.partition("/")
            client = server.service_client(namespace, name)
            hostnames = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
            service = (namespace, name)
        else:
            url = args.webhook_url or f"https://127.0.0.1:{args.webhook_port}"
            client = server.url_client(url)
            hostnames = [host_of(url)]
        if args.webhook_client_ca is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=args.webhook_client_ca)
            except OSError as exc:  # ssl.SSLError too: not a PEM certificate
                raise InputError(f"--webhook-client-ca {args.webhook_client_ca}: expected a file with PEM CA "
                                 f"certificates ({exc.strerror or exc})") from None
        webhook = manager.WebhookSettings(args.webhook_address, args.webhook_port, client, hostnames,
                                          garden=args.webhooks in ("all", "garden"),
                                          seed=args.webhooks in ("all", "seed"), service=service,
                                          client_ca=args.webhook_client_ca)
    if args.metrics_address:
        from extension.runtime import metrics
        metrics.serve(args.metrics_address)
    if args.resync_period <= 0:
        raise InputError("--resync-period must be greater than 0")
    options = RenderOptions(image=args.image, dial_timeout=dial_timeout, node_auth=args.node_auth,
                            front_image=args.front_image or None)
    runtime = manager.build_runtime(seed, target, options,
                                    standalone=args.standalone, webhook=webhook,
                                    checkpoint=checkpoint or (lambda point: None),
                                    resync_seconds=args.resync_period,
                                    monitoring=MONITORING_GARDENER if args.gardener else MONITORING_OPERATOR,
                                    upstream_check_interval=args.upstream_check_interval,
                                    upstream_checks=not args.no_upstream_check, elector=elector,
                                    workers=args.workers)
    if args.probe_watch_grace <= 0 or args.probe_worker_deadline <= 0:
        raise InputError("--probe-watch-grace and --probe-worker-deadline must be greater than 0")
    manager.run(runtime, liveness=args.liveness, watch_grace=args.probe_watch_grace,
                worker_deadline=args.probe_worker_deadline)
    return 0
