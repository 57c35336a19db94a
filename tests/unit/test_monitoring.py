"""The caches' monitoring as Gardener ships it (pkg/component/registrycaches/monitoring.go of v0.24.0): names,
labels, scrape, rules, dashboard; and manifests/monitoring kept current. promtool checks them:
tests/integration/test_monitoring.py."""

from __future__ import annotations

import json

from extension.component import monitoring

GARDENER_VOLUME_EXPR = '''100 * (
 kubelet_volume_stats_available_bytes{persistentvolumeclaim=~"^cache-volume-registry-.+$"}
   /
 kubelet_volume_stats_capacity_bytes{persistentvolumeclaim=~"^cache-volume-registry-.+$"}
)'''


def test_manifests_monitoring_is_current():
    for name, text in monitoring.files().items():
        on_disk = (monitoring.MANIFESTS_DIR / name).read_text(encoding="utf-8")
        assert on_disk == text, f"manifests/monitoring/{name} is stale: python -m extension.component.monitoring --write"


def test_gardener_objects_have_gardeners_names_and_labels():
    configmap, rule, scrape = monitoring.gardener_objects("shoot--dev--a")
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "registry-cache-dashboards")
    assert configmap["metadata"]["labels"] == {"component": "registry-cache",
                                               "dashboard.monitoring.gardener.cloud/shoot": "true"}
    assert set(configmap["data"]) == {"registry-cache.dashboard.json"}
    for obj in (rule, scrape):
        assert obj["metadata"] == {"name": "shoot-registry-cache", "namespace": "shoot--dev--a",
                                   "labels": {"prometheus": "shoot", "component": "registry-cache"}}
    assert (rule["apiVersion"], scrape["apiVersion"]) == ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1")
    [group] = rule["spec"]["groups"]
    assert group["name"] == "registry-cache.rules"
    by_name = {r.get("alert") or r.get("record"): r for r in group["rules"]}
    assert by_name["RegistryCachePersistentVolumeUsageCritical"]["expr"] == GARDENER_VOLUME_EXPR + " < 5"
    assert by_name["RegistryCachePersistentVolumeFullInFourDays"]["expr"] == (
        GARDENER_VOLUME_EXPR + ' < 15\nand\npredict_linear(kubelet_volume_stats_available_bytes{persistentvolumeclaim=~'
        '"^cache-volume-registry-.+$"}[30m], 4 * 24 * 3600) <= 0')
    for alert in ("RegistryCachePersistentVolumeUsageCritical", "RegistryCachePersistentVolumeFullInFourDays"):
        assert by_name[alert]["for"] == "1h"
        assert by_name[alert]["labels"] == {"service": "registry-cache-extension", "severity": "warning",
                                            "type": "shoot", "visibility": "owner"}
    assert by_name["shoot:registry_proxy_pulled_bytes_total:sum"]["expr"] == \
        "sum by (upstream_host) (rate(registry_proxy_pulled_bytes_total[5m]))"
    assert by_name["shoot:registry_proxy_pushed_bytes_total:sum"]["expr"] == \
        "sum by (upstream_host) (rate(registry_proxy_pushed_bytes_total[5m]))"
    assert "RegistryCacheNotReady" in by_name and "RegistryCacheExtensionError" not in by_name  # a seed-side alert


def test_the_scrape_keeps_only_the_proxy_metrics_of_the_debug_ports():
    spec = monitoring.scrape_config("shoot--dev--a")["spec"]
    assert spec["metricRelabelings"] == [{"sourceLabels": ["__name__"], "action": "keep",
                                          "regex": "^(registry_proxy_.+)$"}]
    keep = next(r for r in spec["relabelings"] if r["action"] == "keep")
    assert keep == {"sourceLabels": ["__meta_kubernetes_pod_label_upstream_host",
                                     "__meta_kubernetes_pod_container_port_name"], "action": "keep",
                    "regex": "(.+);debug"}
    assert spec["kubernetesSDConfigs"][0]["namespaces"] == {"names": ["kube-system"]}
    assert {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"} in spec["relabelings"]
    assert spec["relabelings"][-1]["replacement"] == "/api/v1/namespaces/kube-system/pods/${1}:${2}/proxy/metrics"


def test_standalone_objects_only_where_served():
    labels = {"app.kubernetes.io/managed-by": "registry-cache"}
    assert monitoring.operator_objects("kube-system", labels, set()) == []
    rule, monitor = monitoring.operator_objects("kube-system", labels, {"PrometheusRule", "PodMonitor"})
    assert rule["kind"] == "PrometheusRule" and monitor["kind"] == "PodMonitor"
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "debug" and endpoint["metricRelabelings"][0]["regex"] == "^(registry_proxy_.+)$"
    assert {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"} in endpoint["relabelings"]


def test_the_dashboard_shows_what_gardeners_shows():
    dashboard = json.loads(monitoring.dashboard_json())
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == ["Aggregation", "Pulled from upstream", "Pushed to clients", "Delta", "General",
                      "Pulled and Pushed Bytes Rate", "Cache Hits and Misses Rate", "Bytes", "Pulled from upstream",
                      "Pushed to clients", "Persistent Volumes", "Persistent Volume Size",
                      "Persistent Volume Available Size"]
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in ("registry_proxy_pulled_bytes_total", "registry_proxy_pushed_bytes_total", "registry_proxy_hits_total",
                   "registry_proxy_misses_total", "kubelet_volume_stats_capacity_bytes",
                   "kubelet_volume_stats_available_bytes"):
        assert metric in exprs
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["upstream_host"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_controller_panels_are_in_the_manifests_dashboard_only():
    """manifests/monitoring/dashboard.json has a row of the controller's panels below the caches'; the dashboard a
    shoot gets under Gardener (its Prometheus does not scrape the controller) has not."""
    full = json.loads(monitoring.dashboard_json(controller=True))
    shoot = json.loads(monitoring.dashboards_configmap("shoot--dev--a")["data"]["registry-cache.dashboard.json"])
    assert shoot == json.loads(monitoring.dashboard_json())
    assert full["panels"][:len(shoot["panels"])] == shoot["panels"]
    titles = [p["title"] for p in full["panels"][len(shoot["panels"]):]]
    assert titles == ["Controller", "Work queue depth", "Reconciles", "Reconcile latency", "API requests by code",
                      "API request latency", "Leader", "Watches", "CPU and memory"]
    assert len({p["id"] for p in full["panels"]}) == len(full["panels"])
    exprs = " ".join(t["expr"] for p in full["panels"][len(shoot["panels"]):] for t in p.get("targets", []))
    for metric in ("workqueue_depth", "controller_runtime_reconcile_total", "controller_runtime_reconcile_time_seconds",
                   "rest_client_requests_total", "rest_client_request_duration_seconds", "leader_election_master_status",
                   "registry_cache_informer_synced"):
        assert metric in exprs
    assert "sum by (code, method) (rate(rest_client_requests_total" in exprs  # the REST client's rate by code
    bottoms = [p["gridPos"]["y"] + p["gridPos"]["h"] for p in shoot["panels"]]
    assert min(p["gridPos"]["y"] for p in full["panels"][len(shoot["panels"]):]) >= max(bottoms)


def test_every_controller_metric_the_rules_and_panels_name_is_served_and_kept():
    """Each metric the controller's alerts and panels read is one the controller serves (extension/metrics.py,
    extension/runtime/metrics.py), kept by the scrape job's and the PodMonitor's relabeling, and selected by the
    controller's job (the runtime's names are every controller-runtime manager's)."""
    import re

    from prometheus_client import REGISTRY

    import extension.metrics
    import extension.runtime.metrics

    served = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for family in REGISTRY.collect():  # (a family without samples yet is served all the same)
        served.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
    served.update({"process_cpu_seconds_total", "process_resident_memory_bytes"})  # (Linux: the process collector)
    panels = monitoring.controller_panels(0, 1)
    exprs = [r["expr"] for r in monitoring.runtime_rules()] + [t["expr"] for p in panels for t in p.get("targets", [])]
    kept = re.compile(monitoring.CONTROLLER_KEPT_METRICS)
    for expr in exprs:
        names = set(re.findall(r"\b([a-z_]+)\{", expr))
        assert names, expr
        for name in names:
            assert name in served, f"{name} ({expr}) is not served"
            assert kept.match(name), name
        assert expr.count("{") == expr.count(monitoring.CONTROLLER_SELECTOR), expr
