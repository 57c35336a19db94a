"""The caches' monitoring and VerticalPodAutoscalers as Gardener v0.24 delivers them, against real API servers;
and the controller's own metrics (controller-runtime's and client-go's names) moving in real controller processes.

- Under Gardener (``run --gardener``; the shoot is the second control plane, reached through gardenlet's
  ``gardener-internal`` kubeconfig Secret): the ScrapeConfig, PrometheusRule and dashboard ConfigMap in the shoot
  namespace of the seed, not for a Shoot whose purpose is ``testing``; a VPA per cache only while the Shoot
  wants VPA (``spec.kubernetes.verticalPodAutoscaler.enabled`` in the Cluster).
- Standalone (``--shoot-kubeconfig``): a PrometheusRule and a PodMonitor next to the caches where the shoot serves
  those kinds, removed with the last cache.

Neither cluster serves those kinds by itself: minimal CRDs of them are installed, as the Prometheus Operator,
Gardener's monitoring stack and the VPA would install them.

The controller's metrics: two replicas with leader election, each serving /metrics; what the alerts and the
dashboard of manifests/monitoring read is scraped from them while Extensions are created, fail, are retried and
succeed, and while the leader hands over.
"""

from __future__ import annotations

import base64
import socket
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from extension.component import monitoring
from extension.local.controlplane import wait_for_crds_established
from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for
from .test_controller import Seed as ExtensionSeed

CACHE_API = "registry.extensions.gardener.cloud/v1alpha3"
OWNER = "registry-cache.gardener.cloud/owner"


def crd(group: str, version: str, kind: str, plural: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "annotations": {
                # the VPA's own CRD carries this too: *.k8s.io groups are protected
                "api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/63797"}},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


PROMETHEUS_RULE = crd("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")
POD_MONITOR = crd("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors")
SCRAPE_CONFIG = crd("monitoring.coreos.com", "v1alpha1", "ScrapeConfig", "scrapeconfigs")
VPA = crd("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler", "verticalpodautoscalers")


def install(kube: Kube, *crds: dict) -> None:
    for obj in crds:
        kube.request("PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{obj['metadata']['name']}",
                     body=obj, query=[("fieldManager", "test"), ("force", "true")],
                     content_type="application/apply-patch+yaml")
    wait_for_crds_established(kube.api, [o["metadata"]["name"] for o in crds], timeout=30)


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube(control_plane.api_client(), field_manager="gardenlet-test")
    install(k, PROMETHEUS_RULE, SCRAPE_CONFIG)  # Gardener's monitoring stack in the seed
    return k


@pytest.fixture(scope="module")
def shoot_kube(second_control_plane):
    k = Kube(second_control_plane.api_client(), field_manager="test")
    install(k, VPA, PROMETHEUS_RULE, POD_MONITOR)
    return k


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Seed:
    def __init__(self, kube: Kube, name: str, kubeconfig: bytes | None = None):
        self.kube, self.name, self.ns = kube, name, f"shoot--mon--{name}"
        self.spec: dict = {"provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]},
                           "kubernetes": {"verticalPodAutoscaler": {"enabled": True}}}
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}})
        if kubeconfig is not None:
            kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gardener-internal",
                                                                          "namespace": self.ns},
                        "data": {"kubeconfig": base64.b64encode(kubeconfig).decode()}})
        self.apply_cluster()

    def apply_cluster(self) -> None:
        self.kube.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
                         "metadata": {"name": self.ns},
                         "spec": {"seed": {}, "cloudProfile": {}, "shoot": {
                             "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                             "metadata": {"name": self.name, "namespace": "garden-mon"}, "spec": self.spec}}})

    def create(self, upstream: str) -> None:
        self.kube.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                          "metadata": {"name": "registry-cache", "namespace": self.ns},
                          "spec": {"type": "registry-cache", "providerConfig": {
                              "apiVersion": CACHE_API, "kind": "RegistryConfig",
                              "caches": [{"upstream": upstream, "http": {"tls": False}}]}}})

    def reconcile(self) -> None:
        self.kube.patch("Extension", "registry-cache", {"metadata": {"annotations": {
            "gardener.cloud/operation": "reconcile"}}}, self.ns)

    def wait(self, log) -> dict:
        def done():
            ext = self.kube.get("Extension", "registry-cache", self.ns) or {}
            status = ext.get("status") or {}
            last = status.get("lastOperation") or {}
            if last.get("state") == "Succeeded" and status.get("observedGeneration") == ext["metadata"]["generation"] \
                    and "gardener.cloud/operation" not in (ext["metadata"].get("annotations") or {}):
                return ext
            return None
        return wait_for(f"the Extension in {self.ns} to succeed", done, timeout=60, log=log)

    def delete(self, log) -> None:
        self.kube.delete("Extension", "registry-cache", self.ns)
        wait_for("the Extension to be gone", lambda: self.kube.get("Extension", "registry-cache", self.ns) is None,
                 timeout=60, log=log)


def test_under_gardener_monitoring_in_the_seed_and_vpa_as_the_shoot_wants(kube, shoot_kube, control_plane,
                                                                            second_control_plane, tmp_path):
    seed = Seed(kube, uniq("gardener"), kubeconfig=second_control_plane.kubeconfig.read_bytes())
    upstream = f"{seed.name}.example"
    name = f"registry-{upstream.replace('.', '-')}"
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--gardener") as op:
        seed.create(upstream)
        seed.wait(op.log)
        # the monitoring in the seed namespace, with Gardener's names and labels
        configmap = kube.get("ConfigMap", "registry-cache-dashboards", seed.ns)
        assert configmap["metadata"]["labels"]["dashboard.monitoring.gardener.cloud/shoot"] == "true"
        assert configmap["data"]["registry-cache.dashboard.json"] == monitoring.dashboard_json()
        rule = kube.get("PrometheusRule", "shoot-registry-cache", seed.ns)
        assert rule["metadata"]["labels"] == {"prometheus": "shoot", "component": "registry-cache"}
        assert rule["spec"]["groups"][0]["name"] == "registry-cache.rules"
        scrape = kube.get("ScrapeConfig", "shoot-registry-cache", seed.ns)
        assert scrape["spec"]["metricRelabelings"][0]["regex"] == "^(registry_proxy_.+)$"
        assert shoot_kube.get("PodMonitor", "registry-cache", "kube-system") is None  # standalone's, not Gardener's
        # the caches and their VPA in the shoot
        assert [s["metadata"]["name"] for s in shoot_kube.list("StatefulSet", "kube-system",
                                                               label_selector=f"{OWNER}={seed.ns}")] == [name]
        vpa = shoot_kube.get("VerticalPodAutoscaler", name, "kube-system")
        assert vpa["spec"]["updatePolicy"] == {"updateMode": "InPlaceOrRecreate"}
        assert vpa["spec"]["resourcePolicy"]["containerPolicies"][0]["minAllowed"] == {"memory": "20Mi"}

        # purpose testing, VPA off: no monitoring, no VPA
        seed.spec["purpose"] = "testing"
        seed.spec["kubernetes"]["verticalPodAutoscaler"]["enabled"] = False
        seed.apply_cluster()
        seed.reconcile()
        wait_for("the monitoring and the VPA to go", lambda: all(
            kube.get(kind, obj_name, seed.ns) is None for kind, obj_name in (
                ("ConfigMap", "registry-cache-dashboards"), ("PrometheusRule", "shoot-registry-cache"),
                ("ScrapeConfig", "shoot-registry-cache")))
            and shoot_kube.get("VerticalPodAutoscaler", name, "kube-system") is None, timeout=60, log=op.log)
        seed.wait(op.log)
        assert shoot_kube.get("StatefulSet", name, "kube-system") is not None

        # monitoring back; then Delete removes it with the caches
        del seed.spec["purpose"]
        seed.apply_cluster()
        seed.reconcile()
        wait_for("the monitoring back", lambda: kube.get("PrometheusRule", "shoot-registry-cache", seed.ns),
                 timeout=60, log=op.log)
        seed.wait(op.log)
        seed.delete(op.log)
        assert kube.get("PrometheusRule", "shoot-registry-cache", seed.ns) is None
        assert kube.get("ScrapeConfig", "shoot-registry-cache", seed.ns) is None
        assert shoot_kube.list("StatefulSet", "kube-system", label_selector=f"{OWNER}={seed.ns}") == []


def test_standalone_prometheus_rule_and_pod_monitor_next_to_the_caches(kube, shoot_kube, control_plane,
                                                                         second_control_plane, tmp_path):
    seed = Seed(kube, uniq("standalone"))
    seed.spec["kubernetes"]["verticalPodAutoscaler"]["enabled"] = False
    seed.apply_cluster()
    upstream = f"{seed.name}.example"
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--shoot-kubeconfig",
                         str(second_control_plane.kubeconfig)) as op:
        seed.create(upstream)
        seed.wait(op.log)
        rule = shoot_kube.get("PrometheusRule", "registry-cache", "kube-system")
        assert [r.get("alert") or r.get("record") for r in rule["spec"]["groups"][0]["rules"]] == [
            r.get("alert") or r.get("record") for r in monitoring.cache_rules()]
        monitor = shoot_kube.get("PodMonitor", "registry-cache", "kube-system")
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "debug"
        assert kube.get("ScrapeConfig", "shoot-registry-cache", seed.ns) is None  # Gardener's, not standalone's
        name = f"registry-{upstream.replace('.', '-')}"
        assert shoot_kube.get("StatefulSet", name, "kube-system") is not None
        assert shoot_kube.get("VerticalPodAutoscaler", name, "kube-system") is None  # the Shoot wants no VPA

        seed.delete(op.log)
        others = [s for s in shoot_kube.list("StatefulSet", "kube-system",
                                             label_selector="app.kubernetes.io/managed-by=registry-cache")]
        gone = shoot_kube.get("PodMonitor", "registry-cache", "kube-system") is None
        # shared by every Extension delivering into this namespace: removed with the last cache
        assert gone == (not others), others


# --- the controller's own metrics --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Scrape:
    """One scrape of a controller's /metrics: ``scrape(metric, **labels)`` is the sample's value (None: no such
    series)."""

    def __init__(self, port: int):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        self.samples = {(sample.name, frozenset(sample.labels.items())): sample.value
                        for family in text_string_to_metric_families(text) for sample in family.samples}

    def __call__(self, metric: str, /, **labels: str) -> float | None:
        return self.samples.get((metric, frozenset(labels.items())))

    def get(self, metric: str, /, **labels: str) -> float:
        value = self(metric, **labels)
        return 0.0 if value is None else value


def scrape_or_none(port: int) -> Scrape | None:
    try:
        return Scrape(port)
    except OSError:
        return None


QUEUE = {"name": "extension", "controller": "extension"}
CONTROLLER = {"controller": "extension"}


def test_the_controllers_metrics_move_in_real_processes(kube, control_plane, tmp_path):
    """Two replicas (``--leader-election``, one worker each, the leader's first apply slowed by 4 s): the follower
    reports 0 for the lease, the leader 1; while the leader's only worker is held, keys wait in the queue
    (depth, unfinished work, the longest running processor, one active worker); Extensions created, one failing
    and retried after its backoff, then all Succeeded move the adds, the queue and work durations, the retries,
    the reconciles by result, their errors and time, the REST client's requests by code, method and host and
    their latency by verb, the watches' objects; stopped, the leader releases the lease and the other reports
    1 (its watches synced). The old names are still served."""
    lease = uniq("metrics")
    host = urlsplit(kube.api.configuration.host).netloc
    flag = tmp_path / "slow"
    ports = [free_port(), free_port()]

    def replica(i: int) -> OperatorProcess:
        return OperatorProcess(
            control_plane.kubeconfig, tmp_path / f"replica-{i}.log", "--leader-election",
            "--leader-election-namespace", "kube-system", "--leader-election-id", lease,
            "--leader-election-lease-duration", "4", "--leader-election-renew-deadline", "3",
            "--leader-election-retry-period", "0.5", "--workers", "1", "--metrics-address", f"127.0.0.1:{ports[i]}",
            slow_at=("after-apply", 4.0, flag))

    def lease_status(i: int) -> float | None:
        scrape = scrape_or_none(ports[i])
        return None if scrape is None else scrape("leader_election_master_status", name=lease)

    with replica(0) as leader:
        wait_for("the first replica to lead", lambda: lease_status(0) == 1, log=leader.log)
        with replica(1) as follower:
            wait_for("the second replica to wait for the lease", lambda: lease_status(1) == 0, log=follower.log)
            synced = Scrape(ports[0])
            assert synced("registry_cache_informer_synced", informer="Extension") == 1
            assert synced("controller_runtime_max_concurrent_reconciles", **CONTROLLER) == 1
            assert synced("registry_cache_leader") == 1  # the old name, for one release
            before = Scrape(ports[0])
            seeds = [ExtensionSeed(kube, uniq("metrics")) for _ in range(3)]
            flag.touch()  # the first apply of the leader's only worker takes 4 s more: the others wait
            seeds[0].create({"upstream": f"a.{seeds[0].name}.example"})
            seeds[1].create({"upstream": f"a.{seeds[1].name}.example"})
            seeds[2].create({"upstream": f"a.{seeds[2].name}.example", "volume": {"size": "0"}})  # an Error

            def held() -> Scrape | None:
                scrape = Scrape(ports[0])
                return scrape if scrape.get("workqueue_depth", **QUEUE) >= 1 and scrape.get(
                    "controller_runtime_active_workers", **CONTROLLER) == 1 else None
            busy = wait_for("keys waiting while the worker is held", held, log=leader.log)
            assert busy.get("workqueue_unfinished_work_seconds", **QUEUE) > 0
            assert busy.get("workqueue_longest_running_processor_seconds", **QUEUE) > 0
            assert busy.get("registry_cache_queue_depth") >= 1  # the old name, for one release
            for seed in seeds[:2]:
                seed.wait_done("Create", leader.log)
            wait_for("the failed Create retried after its backoff (5 s)", lambda: Scrape(ports[0]).get(
                "workqueue_retries_total", **QUEUE) > before.get("workqueue_retries_total", **QUEUE),
                timeout=30, log=leader.log)
            assert seeds[2].state() == "Error"
            seeds[2].set_caches({"upstream": f"a.{seeds[2].name}.example"})
            seeds[2].wait_done("Reconcile", leader.log)
            wait_for("the queue empty", lambda: Scrape(ports[0]).get("workqueue_depth", **QUEUE) == 0 and Scrape(
                ports[0]).get("controller_runtime_active_workers", **CONTROLLER) == 0, log=leader.log)
            after = Scrape(ports[0])

            def grew(metric: str, /, **labels: str) -> float:
                return after.get(metric, **labels) - before.get(metric, **labels)

            assert grew("workqueue_adds_total", **QUEUE) >= 3
            assert grew("workqueue_queue_duration_seconds_count", **QUEUE) >= 3
            assert grew("workqueue_queue_duration_seconds_sum", **QUEUE) >= 3  # (two keys waited for the held one)
            assert grew("workqueue_work_duration_seconds_count", **QUEUE) >= 3
            assert grew("workqueue_work_duration_seconds_sum", **QUEUE) >= 4  # (the held one)
            assert grew("controller_runtime_reconcile_total", result="success", **CONTROLLER) >= 3
            assert grew("controller_runtime_reconcile_total", result="error", **CONTROLLER) >= 2  # Create, retry
            assert grew("controller_runtime_reconcile_errors_total", **CONTROLLER) >= 2
            assert grew("controller_runtime_reconcile_time_seconds_count", **CONTROLLER) >= 5
            assert grew("controller_runtime_reconcile_time_seconds_sum", **CONTROLLER) >= 4
            # server-side applies: 201 when they create, 200 when they change; every request's latency too
            assert grew("rest_client_requests_total", code="201", method="PATCH", host=host) >= 3 * 3
            assert grew("rest_client_requests_total", code="200", method="PATCH", host=host) >= 3
            assert grew("rest_client_request_duration_seconds_count", verb="PATCH", host=host) >= 3 * 5
            assert grew("rest_client_requests_total", code="200", method="PUT", host=host) >= 1  # lease renewals
            assert grew("rest_client_request_duration_seconds_sum", verb="PATCH", host=host) > 0
            assert after.get("rest_client_requests_total", code="404", method="GET", host=host) >= 1  # (no Lease yet)
            assert grew("registry_cache_informer_objects", informer="Extension") >= 3
            assert grew("registry_cache_api_requests_total", verb="PATCH") >= 3 * 5  # by Kubernetes verb
            assert grew("registry_cache_api_requests_total", verb="GET") >= 1
            assert after("leader_election_master_status", name=lease) == 1
            assert Scrape(ports[1])("leader_election_master_status", name=lease) == 0
            assert Scrape(ports[1])("registry_cache_informer_synced", informer="Extension") is None  # not leading

            leader.stop()  # a clean stop releases the lease: the other takes over at once
            wait_for("the second replica to lead", lambda: lease_status(1) == 1, timeout=15, log=follower.log)
            wait_for("its watches synced", lambda: Scrape(ports[1])(
                "registry_cache_informer_synced", informer="Extension") == 1, log=follower.log)
