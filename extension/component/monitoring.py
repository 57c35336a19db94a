"""Monitoring of the caches as Gardener ships it, for any Prometheus: scrape, alerts, recording rules, dashboard.

One source, three ways out:

- under Gardener (``run --gardener``): a ``ScrapeConfig`` and a ``PrometheusRule`` (label ``prometheus: shoot``)
  and the dashboard ConfigMap (label ``dashboard.monitoring.gardener.cloud/shoot``) in the shoot namespace of the
  seed, where the shoot's Prometheus and Plutono read them: :func:`gardener_objects` (Gardener's names, scrape
  and rules). Not for Shoots whose purpose is ``testing``;
- standalone, with the Prometheus Operator: a ``PrometheusRule`` and a ``PodMonitor`` next to the caches in the
  shoot, each when its CRD is served: :func:`operator_objects`;
- without the operator: the files of ``manifests/monitoring/`` (a Prometheus configuration with the scrape jobs,
  the rule file, the dashboard), written by ``python -m extension.component.monitoring --write`` (a unit test
  keeps them current) and checked by ``promtool check config``/``check rules``/``test rules``.

Gardener's alerts and recording rules (``RegistryCachePersistentVolumeUsageCritical``,
``RegistryCachePersistentVolumeFullInFourDays``, ``shoot:registry_proxy_{pulled,pushed}_bytes_total:sum``) are
kept with Gardener's names, expressions and words; beside them ``RegistryCacheNotReady`` (a cache with fewer
ready replicas than wanted, from kube-state-metrics) and, for the controller, ``RegistryCacheExtensionError``
(an Extension in Error for 15 minutes, from ``registry_cache_extension_error``),
``RegistryCacheUpstreamCredentialsInvalid`` and ``RegistryCacheUpstreamUnreachable`` (the caches' upstream
credential checks, :mod:`extension.controller.upstreams`; for a cache with a credential provider plugin what its
Pods report, :mod:`extension.controller.providers`). Pure: dicts and text only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from extension import constants as c

# --- names -------------------------------------------------------------------------------------------------

COMPONENT = "registry-cache"
GARDENER_PROMETHEUS = "shoot"  # Gardener's shoot Prometheus selects its configuration by label prometheus=shoot
GARDENER_CONFIG_NAME = f"{GARDENER_PROMETHEUS}-{COMPONENT}"  # monitoringutils.ConfigObjectMeta
DASHBOARDS_CONFIGMAP = "registry-cache-dashboards"
DASHBOARD_KEY = "registry-cache.dashboard.json"
DASHBOARD_LABEL = "dashboard.monitoring.gardener.cloud/shoot"
SCRAPE_JOB = "registry-cache-metrics"  # Gardener's job name for the caches
CONTROLLER_JOB = "registry-cache-controller"
CACHE_RULES_GROUP = "registry-cache.rules"
CONTROLLER_RULES_GROUP = "registry-cache-controller.rules"
# what is kept of a cache's metrics (Gardener: monitoringutils.StandardMetricRelabelConfig("registry_proxy_.+"))
KEPT_METRICS = "^(registry_proxy_.+)$"
# what is kept of the controller's: its own, controller-runtime's and client-go's names, and the process' CPU and
# memory (extension/metrics.py, extension/runtime/metrics.py)
CONTROLLER_KEPT_METRICS = ("^(registry_cache_.+|controller_runtime_.+|workqueue_.+|rest_client_.+|leader_election_.+"
                           "|process_.+)$")
# the controller's alerts and panels select its job: workqueue_depth and the others are every controller's names
CONTROLLER_SELECTOR = f'job="{CONTROLLER_JOB}"'
# Gardener's shoot Prometheus reaches the shoot's API server as kube-apiserver:443 with this token
GARDENER_API_SERVER = "kube-apiserver:443"
GARDENER_TOKEN_SECRET = "shoot-access-prometheus-shoot"

MANIFESTS_DIR = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
RULES_FILE = "registry-cache.rules.yaml"
PROMETHEUS_FILE = "prometheus.yml"
DASHBOARD_FILE = "dashboard.json"
OPERATOR_FILE = "controller-operator.yaml"

# --- rules ---------------------------------------------------------------------------------------------------

_PVC = 'persistentvolumeclaim=~"^cache-volume-registry-.+$"'
_FREE_PERCENT = (f"100 * (\n kubelet_volume_stats_available_bytes{{{_PVC}}}\n   /\n"
                 f" kubelet_volume_stats_capacity_bytes{{{_PVC}}}\n)")
_STATEFULSETS = f'namespace="{c.SHOOT_NAMESPACE}", statefulset=~"registry-.+"'
_LABELS = {"service": "registry-cache-extension", "severity": "warning", "type": "shoot", "visibility": "owner"}


def cache_rules() -> list[dict[str, Any]]:
    """The rules about the caches: Gardener's two alerts and two recording rules, and ``RegistryCacheNotReady``.

    The recording rules follow Gardener's implicit contract (``shoot:(.+):(.+)`` is federated to the aggregate
    and garden Prometheus)."""
    return [
        {"alert": "RegistryCachePersistentVolumeUsageCritical",
         "expr": f"{_FREE_PERCENT} < 5",
         "for": "1h",
         "labels": dict(_LABELS),
         "annotations": {
             "description": "The registry-cache PersistentVolume claimed by {{ $labels.persistentvolumeclaim }} is "
                            'only {{ printf "%0.2f" $value }}% free. When there is no available disk space, no new '
                            "images will be cached. However, image pull operations are not affected.",
             "summary": "Registry cache PersistentVolume almost full."}},
        {"alert": "RegistryCachePersistentVolumeFullInFourDays",
         "expr": f"{_FREE_PERCENT} < 15\nand\npredict_linear(kubelet_volume_stats_available_bytes{{{_PVC}}}[30m], "
                 "4 * 24 * 3600) <= 0",
         "for": "1h",
         "labels": dict(_LABELS),
         "annotations": {
             "description": "Based on recent sampling, the registry cache PersistentVolume claimed by "
                            "{{ $labels.persistentvolumeclaim }} is expected to fill up within four days. Currently "
                            '{{ printf "%0.2f" $value }}% is available.',
             "summary": "Registry cache PersistentVolume will be full in four days."}},
        {"alert": "RegistryCacheNotReady",
         "expr": f"kube_statefulset_status_replicas_ready{{{_STATEFULSETS}}}\n  <\n"
                 f"kube_statefulset_replicas{{{_STATEFULSETS}}}",
         "for": "15m",
         "labels": dict(_LABELS),
         "annotations": {
             "description": "The registry cache {{ $labels.statefulset }} has had fewer ready replicas than it "
                            "wants for 15 minutes. Nodes pull from the upstream meanwhile (containerd falls back "
                            "to it); kubectl -n kube-system describe statefulset {{ $labels.statefulset }} and the "
                            "cache's log say why.",
             "summary": "Registry cache not ready."}},
        {"record": "shoot:registry_proxy_pushed_bytes_total:sum",
         "expr": "sum by (upstream_host) (rate(registry_proxy_pushed_bytes_total[5m]))"},
        {"record": "shoot:registry_proxy_pulled_bytes_total:sum",
         "expr": "sum by (upstream_host) (rate(registry_proxy_pulled_bytes_total[5m]))"},
    ]


def _controller_labels(severity: str) -> dict[str, str]:
    return {"service": "registry-cache-extension", "severity": severity, "visibility": "operator"}


def controller_rules() -> list[dict[str, Any]]:
    """The rules about the controller's own metrics: an Extension whose operations keep failing, and the caches'
    upstream credential checks (every cache with credentials, at each reconcile and every
    ``--upstream-check-interval``: ``registry_cache_upstream_credentials_valid`` and ``..._reachable``); then the
    controller itself (:func:`runtime_rules`)."""
    return _extension_rules() + runtime_rules()


def runtime_rules() -> list[dict[str, Any]]:
    """The controller's runtime, from controller-runtime's and client-go's metrics of its job:

    - ``RegistryCacheControllerInformerNotSynced``: a watch whose first list has not come in for 10 minutes (the
      process ends after 2 minutes without it, :data:`extension.manager.CACHE_SYNC_TIMEOUT`, and starts again: only
      zeros in the window, whatever the restarts);
    - ``RegistryCacheControllerNoLeader``: replicas report the lease and none holds it, for 5 minutes (a takeover
      takes the lease duration, 15 s);
    - ``RegistryCacheControllerTwoLeaders``: more than one replica reports holding the same lease, for 2 minutes
      (replicas without ``--leader-election`` each count as its holder);
    - ``RegistryCacheControllerQueueGrowing``: a work queue not empty once in 15 minutes whose depth kept rising
      over them, for 15 minutes."""
    sel = CONTROLLER_SELECTOR
    return [
        {"alert": "RegistryCacheControllerInformerNotSynced",
         "expr": f"max by (namespace, pod, informer) (max_over_time(registry_cache_informer_synced{{{sel}}}[10m])) "
                 "== 0",
         "for": "5m",
         "labels": _controller_labels("warning"),
         "annotations": {
             "description": "The {{ $labels.informer }} watch of {{ $labels.pod }} ({{ $labels.namespace }}) has not "
                            "listed once in 10 minutes: the controller does not see those objects. The process ends "
                            "when its watches do not list within 2 minutes and starts again; its log says why (the "
                            "API server away, RBAC).",
             "summary": "A watch of the registry-cache controller does not sync."}},
        {"alert": "RegistryCacheControllerNoLeader",
         "expr": f"max by (namespace, name) (leader_election_master_status{{{sel}}}) == 0",
         "for": "5m",
         "labels": _controller_labels("critical"),
         "annotations": {
             "description": "No replica of the registry-cache controller in {{ $labels.namespace }} has held the "
                            "leader lease {{ $labels.name }} for 5 minutes: no Extension is reconciled (the webhooks "
                            "still answer). The replicas' logs say why they do not take it (the API server away, "
                            "RBAC on Leases).",
             "summary": "The registry-cache controller has no leader."}},
        {"alert": "RegistryCacheControllerTwoLeaders",
         "expr": f"sum by (namespace, name) (leader_election_master_status{{{sel}}}) > 1",
         "for": "2m",
         "labels": _controller_labels("critical"),
         "annotations": {
             "description": "{{ $value }} replicas of the registry-cache controller in {{ $labels.namespace }} report "
                            "holding the lease {{ $labels.name }}: they reconcile the same Extensions at once. "
                            "Replicas without --leader-election each count as its holder: run more than one only "
                            "with it.",
             "summary": "The registry-cache controller has more than one leader."}},
        {"alert": "RegistryCacheControllerQueueGrowing",
         "expr": f"workqueue_depth{{{sel}}}\n  and\nderiv(workqueue_depth{{{sel}}}[15m]) > 0\n  and\n"
                 f"min_over_time(workqueue_depth{{{sel}}}[15m]) > 0",
         "for": "15m",
         "labels": _controller_labels("warning"),
         "annotations": {
             "description": "The work queue {{ $labels.name }} of {{ $labels.pod }} ({{ $labels.namespace }}) has not "
                            "been empty and has kept growing for at least 15 minutes ({{ $value }} keys now): the "
                            "workers do not keep up. Stuck workers show in "
                            "workqueue_longest_running_processor_seconds, a slow API server in "
                            "rest_client_request_duration_seconds.",
             "summary": "A work queue of the registry-cache controller keeps growing."}},
    ]


def _extension_rules() -> list[dict[str, Any]]:
    return [
        {"alert": "RegistryCacheExtensionError",
         "expr": "max by (namespace, name, type) (registry_cache_extension_error) == 1",
         "for": "15m",
         "labels": _controller_labels("warning"),
         "annotations": {
             "description": "The last operations of the {{ $labels.type }} Extension {{ $labels.namespace }}/"
                            "{{ $labels.name }} have ended in Error for 15 minutes; its status.lastError says why "
                            "(kubectl -n {{ $labels.namespace }} get extension {{ $labels.name }} -o yaml).",
             "summary": "Registry cache Extension in Error."}},
        # 0: the upstream (or its token service) answered 401/403 to the cache's credentials
        {"alert": "RegistryCacheUpstreamCredentialsInvalid",
         "expr": "max by (namespace, upstream) (registry_cache_upstream_credentials_valid) == 0",
         "for": "10m",
         "labels": _controller_labels("warning"),
         "annotations": {
             "description": "The credentials of the registry cache for {{ $labels.upstream }} in "
                            "{{ $labels.namespace }} are refused by the upstream, or its credential provider plugin "
                            "gets none (missing, failing, its token endpoint away): the cache cannot pull private "
                            "images (it answers 404) and nodes fall back to the upstream. The Extension's condition "
                            "UpstreamCredentialsValid-{{ $labels.upstream }} has the HTTP status or what the cache "
                            "reports about its plugin; update the credentials Secret the cache's "
                            "secretReferenceName points at, or fix the plugin.",
             "summary": "The registry cache for {{ $labels.upstream }} has no credentials its upstream accepts."}},
        # the controller got no registry answer from the upstream: nothing is known about the credentials
        {"alert": "RegistryCacheUpstreamUnreachable",
         "expr": "max by (namespace, upstream) (registry_cache_upstream_reachable) == 0",
         "for": "30m",
         "labels": _controller_labels("info"),
         "annotations": {
             "description": "The credentials check of {{ $labels.upstream }} ({{ $labels.namespace }}) got no answer "
                            "for 30 minutes. This says nothing about the credentials; the controller checks from "
                            "its own network (its HTTPS_PROXY), not through the cache's proxy settings.",
             "summary": "The upstream {{ $labels.upstream }} cannot be reached from the registry-cache "
                        "controller."}},
    ]


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group, as a Prometheus rule file has them."""
    return [{"name": CACHE_RULES_GROUP, "rules": cache_rules()},
            {"name": CONTROLLER_RULES_GROUP, "rules": controller_rules()}]


# --- scraping ------------------------------------------------------------------------------------------------


def _keep_metrics() -> list[dict[str, Any]]:
    return [{"sourceLabels": ["__name__"], "action": "keep", "regex": KEPT_METRICS}]


def scrape_config(namespace: str) -> dict[str, Any]:
    """Gardener's ``ScrapeConfig`` for the shoot's Prometheus: the caches' debug ports, found through the
    shoot's Endpoints and scraped through the shoot's API server proxy; only ``registry_proxy_*`` is kept."""
    token = {"credentials": {"name": GARDENER_TOKEN_SECRET, "key": "token"}}
    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "ScrapeConfig",
        "metadata": {"name": GARDENER_CONFIG_NAME, "namespace": namespace,
                     "labels": {"prometheus": GARDENER_PROMETHEUS, "component": COMPONENT}},
        "spec": {
            "honorLabels": False,
            "scrapeTimeout": "10s",
            "scheme": "HTTPS",
            # the kubelets' certificates are not made for a pod IP
            "tlsConfig": {"insecureSkipVerify": True},
            "authorization": token,
            "kubernetesSDConfigs": [{
                "apiServer": f"https://{GARDENER_API_SERVER}", "role": "Endpoints",
                "namespaces": {"names": [c.SHOOT_NAMESPACE]}, "authorization": token,
                "tlsConfig": {"insecureSkipVerify": True}, "followRedirects": True}],
            "relabelings": [
                {"action": "replace", "replacement": SCRAPE_JOB, "targetLabel": "job"},
                {"sourceLabels": ["__meta_kubernetes_pod_label_upstream_host",
                                  "__meta_kubernetes_pod_container_port_name"],
                 "action": "keep", "regex": "(.+);debug"},
                {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                {"targetLabel": "__address__", "action": "replace", "replacement": GARDENER_API_SERVER},
                {"sourceLabels": ["__meta_kubernetes_pod_name", "__meta_kubernetes_pod_container_port_number"],
                 "action": "replace", "targetLabel": "__metrics_path__", "regex": "(.+);(.+)",
                 "replacement": f"/api/v1/namespaces/{c.SHOOT_NAMESPACE}/pods/${{1}}:${{2}}/proxy/metrics"},
            ],
            "metricRelabelings": _keep_metrics(),
        },
    }


def prometheus_rule(name: str, namespace: str, labels: dict[str, str], groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": {"groups": groups}}


def dashboards_configmap(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": DASHBOARDS_CONFIGMAP, "namespace": namespace,
                         "labels": {"component": COMPONENT, DASHBOARD_LABEL: "true"}},
            "data": {DASHBOARD_KEY: dashboard_json()}}


def gardener_objects(namespace: str) -> list[dict[str, Any]]:
    """What goes into the shoot namespace ``namespace`` of the seed under Gardener, with Gardener's names."""
    labels = {"prometheus": GARDENER_PROMETHEUS, "component": COMPONENT}
    return [dashboards_configmap(namespace),
            prometheus_rule(GARDENER_CONFIG_NAME, namespace, labels, [{"name": CACHE_RULES_GROUP,
                                                                       "rules": cache_rules()}]),
            scrape_config(namespace)]


def pod_monitor(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """A ``PodMonitor`` for the caches: the debug port, the ``upstream-host`` pod label as ``upstream_host`` (as
    Gardener's labelmap makes it), only ``registry_proxy_*`` kept."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": COMPONENT, "namespace": namespace, "labels": labels},
            "spec": {"selector": {"matchLabels": {c.APP_NAME_LABEL: c.APP_NAME},
                                  "matchExpressions": [{"key": "upstream-host", "operator": "Exists"}]},
                     "podMetricsEndpoints": [{
                         "port": "debug", "path": "/metrics", "scheme": "http",
                         "relabelings": [
                             {"action": "replace", "replacement": SCRAPE_JOB, "targetLabel": "job"},
                             {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"}],
                         "metricRelabelings": _keep_metrics()}]}}


def operator_objects(namespace: str, labels: dict[str, str], served: set[str]) -> list[dict[str, Any]]:
    """Standalone: a ``PrometheusRule`` and a ``PodMonitor`` next to the caches, each when its kind is served."""
    out = []
    if "PrometheusRule" in served:
        out.append(prometheus_rule(COMPONENT, namespace, labels, [{"name": CACHE_RULES_GROUP,
                                                                   "rules": cache_rules()}]))
    if "PodMonitor" in served:
        out.append(pod_monitor(namespace, labels))
    return out


OPERATOR_KINDS = ("PrometheusRule", "PodMonitor")
GARDENER_KINDS = ("ConfigMap", "PrometheusRule", "ScrapeConfig")

# --- the dashboard -----------------------------------------------------------------------------------------------

_SELECTED = 'upstream_host=~"$upstream_host"'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "refId": ref, "interval": ""}


def _row(title: str, y: int, panel_id: int) -> dict[str, Any]:
    return {"type": "row", "title": title, "id": panel_id, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}


def _stat(title: str, description: str, targets: list[dict[str, Any]], x: int, y: int, panel_id: int) -> dict[str, Any]:
    return {"type": "stat", "title": title, "description": description, "id": panel_id, "datasource": None,
            "gridPos": {"h": 5, "w": 8, "x": x, "y": y}, "targets": targets,
            "fieldConfig": {"defaults": {"unit": "bytes", "decimals": 1}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                        "textMode": "auto"}}


def _graph(title: str, description: str, targets: list[dict[str, Any]], unit: str, x: int, y: int,
           panel_id: int) -> dict[str, Any]:
    return {"type": "graph", "title": title, "description": description, "id": panel_id, "datasource": None,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y}, "targets": targets, "lines": True, "linewidth": 1,
            "fill": 1, "legend": {"show": True, "values": False}, "tooltip": {"shared": True, "sort": 0},
            "xaxis": {"mode": "time", "show": True},
            "yaxes": [{"format": unit, "show": True, "min": 0}, {"format": "short", "show": False}],
            "fieldConfig": {"defaults": {}, "overrides": []}}


def controller_panels(y: int, first_id: int) -> list[dict[str, Any]]:
    """A row of the controller's own panels from ``y`` on: the work queue, the reconciles (rate by result, errors,
    latency), the requests to the API servers (rate by code, latency by verb), the leader, the watches, CPU and
    memory; from the metrics of its job (controller-runtime's and client-go's names)."""
    sel = CONTROLLER_SELECTOR
    rate = "[$__rate_interval]"
    specs: list[tuple[str, str, list[tuple[str, str]], str]] = [
        ("Work queue depth", "Keys waiting for a worker (workqueue_depth), and the longest a worker has been on one",
         [(f"sum by (pod, name) (workqueue_depth{{{sel}}})", "{{pod}} {{name}}"),
          (f"max by (pod, name) (workqueue_longest_running_processor_seconds{{{sel}}})",
           "longest running (s) {{pod}}")], "short"),
        ("Reconciles", "Reconciles per second by result, and retries of failed keys "
                       "(controller_runtime_reconcile_total, workqueue_retries_total)",
         [(f"sum by (controller, result) (rate(controller_runtime_reconcile_total{{{sel}}}{rate}))",
           "{{controller}} {{result}}"),
          (f"sum by (name) (rate(workqueue_retries_total{{{sel}}}{rate}))", "retries {{name}}")], "ops"),
        ("Reconcile latency", "controller_runtime_reconcile_time_seconds, and the time a key waits in the queue",
         [(f"histogram_quantile(0.5, sum by (le) (rate(controller_runtime_reconcile_time_seconds_bucket{{{sel}}}"
           f"{rate})))", "p50"),
          (f"histogram_quantile(0.99, sum by (le) (rate(controller_runtime_reconcile_time_seconds_bucket{{{sel}}}"
           f"{rate})))", "p99"),
          (f"histogram_quantile(0.99, sum by (le) (rate(workqueue_queue_duration_seconds_bucket{{{sel}}}{rate})))",
           "p99 in the queue")], "s"),
        ("API requests by code", "Requests to the API servers per second (rest_client_requests_total); <error>: no "
                                 "answer",
         [(f"sum by (code, method) (rate(rest_client_requests_total{{{sel}}}{rate}))", "{{code}} {{method}}")],
         "reqps"),
        ("API request latency", "rest_client_request_duration_seconds, p99 by verb (a watch: until it is open)",
         [(f"histogram_quantile(0.99, sum by (le, verb) (rate(rest_client_request_duration_seconds_bucket{{{sel}}}"
           f"{rate})))", "p99 {{verb}}")], "s"),
        ("Leader", "leader_election_master_status per replica: 1 holds the lease",
         [(f"max by (pod, name) (leader_election_master_status{{{sel}}})", "{{pod}} {{name}}")], "short"),
        ("Watches", "Objects each watch keeps, and whether it has listed (registry_cache_informer_*)",
         [(f"max by (informer) (registry_cache_informer_objects{{{sel}}})", "{{informer}}"),
          (f"min by (informer) (registry_cache_informer_synced{{{sel}}})", "synced {{informer}}")], "short"),
        ("CPU and memory", "The controller process: CPU cores used and resident memory",
         [(f"sum by (pod) (rate(process_cpu_seconds_total{{{sel}}}{rate}))", "cpu {{pod}}"),
          (f"sum by (pod) (process_resident_memory_bytes{{{sel}}}) / 2^30", "GiB {{pod}}")], "short"),
    ]
    panels = [_row("Controller", y, first_id)]
    for i, (title, description, targets, unit) in enumerate(specs):
        refs = [_target(expr, legend, chr(ord("A") + j)) for j, (expr, legend) in enumerate(targets)]
        panels.append(_graph(title, description, refs, unit, 12 * (i % 2), y + 1 + 8 * (i // 2), first_id + 1 + i))
    return panels


def dashboard(controller: bool = False) -> dict[str, Any]:
    """The dashboard of the caches (Grafana, and Plutono under Gardener): pulled from the upstreams and pushed
    to clients (totals, rates, delta), hits and misses, the volumes' size and free space; per upstream, chosen
    with the variable ``upstream_host``. With ``controller`` (manifests/monitoring/dashboard.json, for a Prometheus
    that scrapes the controller) a row of the controller's panels below (:func:`controller_panels`); not in the
    shoot's dashboard under Gardener: the shoot's Prometheus does not scrape the controller."""
    pvc = 'persistentvolumeclaim=~"^cache-volume-registry-(${upstream_host:pipe})-0$"'
    panels = [
        _row("Aggregation", 0, 1),
        _stat("Pulled from upstream", "Bytes the caches pulled from the upstreams in the time range",
              [_target(f"sum by (type) (increase(registry_proxy_pulled_bytes_total{{{_SELECTED}}}[$__range]))",
                       "{{type}}", "A")], 0, 1, 2),
        _stat("Pushed to clients", "Bytes the caches served to their clients in the time range",
              [_target(f"sum by (type) (increase(registry_proxy_pushed_bytes_total{{{_SELECTED}}}[$__range]))",
                       "{{type}}", "A")], 8, 1, 3),
        _stat("Delta", "Bytes served to clients that were not pulled from the upstreams: what the caches saved",
              [_target(f"sum(increase(registry_proxy_pushed_bytes_total{{{_SELECTED}}}[$__range]))\n-\n"
                       f"sum(increase(registry_proxy_pulled_bytes_total{{{_SELECTED}}}[$__range]) or on () "
                       "vector(0))", "saved", "A")], 16, 1, 4),
        _row("General", 6, 5),
        _graph("Pulled and Pushed Bytes Rate", "Bytes per second pulled from the upstream and pushed to clients",
               [_target(f"sum by (upstream_host) (rate(registry_proxy_pulled_bytes_total{{{_SELECTED}}}"
                        "[$__rate_interval]))", "pulled {{upstream_host}}", "A"),
                _target(f"sum by (upstream_host) (rate(registry_proxy_pushed_bytes_total{{{_SELECTED}}}"
                        "[$__rate_interval]))", "pushed {{upstream_host}}", "B")], "Bps", 0, 7, 6),
        _graph("Cache Hits and Misses Rate", "Requests per second served from the cache (hits) or fetched from the "
                                             "upstream (misses)",
               [_target(f"sum by (upstream_host) (rate(registry_proxy_hits_total{{{_SELECTED}}}[$__rate_interval]))",
                        "hits {{upstream_host}}", "A"),
                _target(f"sum by (upstream_host) (rate(registry_proxy_misses_total{{{_SELECTED}}}"
                        "[$__rate_interval]))", "misses {{upstream_host}}", "B")], "reqps", 12, 7, 7),
        _row("Bytes", 15, 8),
        _graph("Pulled from upstream", "Bytes pulled from the upstream since the cache started",
               [_target(f"sum by (upstream_host) (registry_proxy_pulled_bytes_total{{{_SELECTED}}})",
                        "{{upstream_host}}", "A")], "bytes", 0, 16, 9),
        _graph("Pushed to clients", "Bytes pushed to clients since the cache started",
               [_target(f"sum by (upstream_host) (registry_proxy_pushed_bytes_total{{{_SELECTED}}})",
                        "{{upstream_host}}", "A")], "bytes", 12, 16, 10),
        _row("Persistent Volumes", 24, 11),
        _graph("Persistent Volume Size", "Capacity of the caches' volumes",
               [_target(f"sum by (persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes{{{pvc}}})",
                        "{{persistentvolumeclaim}}", "A")], "bytes", 0, 25, 12),
        _graph("Persistent Volume Available Size", "Free space on the caches' volumes",
               [_target(f"sum by (persistentvolumeclaim) (kubelet_volume_stats_available_bytes{{{pvc}}})",
                        "{{persistentvolumeclaim}}", "A")], "bytes", 12, 25, 13),
    ]
    if controller:
        panels += controller_panels(33, 14)
    variable: dict[str, Any] = {
        "name": "upstream_host", "label": "Registry", "description": "The upstream of a pull-through cache",
        "type": "query", "datasource": None, "includeAll": True, "multi": True, "allValue": None,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "definition": 'label_values({__name__=~"registry_proxy_.+"}, upstream_host)',
        "query": {"query": 'label_values({__name__=~"registry_proxy_.+"}, upstream_host)', "refId": "upstreams"},
        "refresh": 2, "regex": "", "sort": 1, "hide": 0, "options": [],
    }
    return {"title": "Registry Caches", "uid": "registry-cache-extension",
            "description": "The pull-through caches of the registry-cache extension: traffic, hits, volumes",
            "tags": ["registry-cache"], "editable": True, "schemaVersion": 27, "version": 1, "refresh": "1m",
            "time": {"from": "now-24h", "to": "now"}, "timezone": "utc", "graphTooltip": 1,
            "templating": {"list": [variable]}, "annotations": {"list": []}, "links": [], "panels": panels}


def dashboard_json(controller: bool = False) -> str:
    return json.dumps(dashboard(controller), indent=2, sort_keys=True) + "\n"


# --- the files of manifests/monitoring ---------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, as people write them."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def _yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def _header(what: str) -> str:
    return (f"# {what}\n# Generated by `python -m extension.component.monitoring --write` from "
            "extension/component/monitoring.py; do not edit.\n")


def rules_file() -> str:
    """The rule file for a Prometheus without the operator (``rule_files``)."""
    return _header("registry-cache: the alerts and recording rules of the caches and of the controller.") + \
        _yaml({"groups": rule_groups()})


def _sd_pod_job(name: str, keep: list[dict[str, Any]], metric_keep: str | None) -> dict[str, Any]:
    job: dict[str, Any] = {"job_name": name, "kubernetes_sd_configs": [{"role": "pod"}], "relabel_configs": keep}
    if metric_keep:
        job["metric_relabel_configs"] = [{"source_labels": ["__name__"], "action": "keep", "regex": metric_keep}]
    return job


def prometheus_file() -> str:
    """A Prometheus configuration (in a cluster, ``kubernetes_sd_configs`` pod role) scraping the caches' debug
    ports (``registry_proxy_*`` only, ``upstream_host`` from the pod label, as Gardener's) and the controller,
    with the rule file."""
    caches = _sd_pod_job(SCRAPE_JOB, [
        {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name",
                           "__meta_kubernetes_pod_label_upstream_host", "__meta_kubernetes_pod_container_port_name"],
         "action": "keep", "regex": f"{c.APP_NAME};(.+);debug"},
        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(upstream_host)"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ], KEPT_METRICS)
    controller = _sd_pod_job(CONTROLLER_JOB, [
        {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name",
                           "__meta_kubernetes_pod_label_app_kubernetes_io_component",
                           "__meta_kubernetes_pod_container_port_name"],
         "action": "keep", "regex": f"{c.APP_NAME};controller;metrics"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ], CONTROLLER_KEPT_METRICS)
    config = {"global": {"scrape_interval": "30s", "evaluation_interval": "30s"},
              "rule_files": [RULES_FILE], "scrape_configs": [caches, controller]}
    return _header("registry-cache: a Prometheus configuration (or the parts to merge into yours) scraping the "
                   "caches and the controller.") + _yaml(config)


def operator_file() -> str:
    """For a Prometheus Operator: a PodMonitor and a PrometheusRule for the controller (the controller delivers
    those of the caches itself)."""
    labels = {c.APP_NAME_LABEL: c.APP_NAME, "app.kubernetes.io/component": "controller"}
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
               "metadata": {"name": CONTROLLER_JOB, "namespace": "registry-cache", "labels": labels},
               "spec": {"selector": {"matchLabels": labels},
                        "podMetricsEndpoints": [{
                            "port": "metrics", "path": "/metrics",
                            # the job the controller's alerts select (the operator's default: namespace/name)
                            "relabelings": [{"action": "replace", "replacement": CONTROLLER_JOB,
                                             "targetLabel": "job"}],
                            "metricRelabelings": [{"sourceLabels": ["__name__"], "action": "keep",
                                                   "regex": CONTROLLER_KEPT_METRICS}]}]}}
    rule = prometheus_rule(CONTROLLER_JOB, "registry-cache", labels,
                           [{"name": CONTROLLER_RULES_GROUP, "rules": controller_rules()}])
    return _header("registry-cache: the controller's PodMonitor and PrometheusRule, for a Prometheus Operator.") + \
        _yaml(monitor) + "---\n" + _yaml(rule)


def files() -> dict[str, str]:
    """manifests/monitoring/: file name -> content."""
    return {RULES_FILE: rules_file(), PROMETHEUS_FILE: prometheus_file(), DASHBOARD_FILE: dashboard_json(True),
            OPERATOR_FILE: operator_file()}


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        MANIFESTS_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in files().items():
            (MANIFESTS_DIR / name).write_text(text, encoding="utf-8")
            print(f"wrote {MANIFESTS_DIR / name}", file=sys.stderr)
        return 0
    for name, text in files().items():
        sys.stdout.write(f"--- {name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
