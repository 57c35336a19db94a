"""The caches' health condition on the Extension (extension/controller/health.py), from Pod and StatefulSet
objects."""

from extension.constants import SYSTEM_COMPONENTS_HEALTHY_CONDITION as CONDITION
from extension.controller.conditions import merge_health
from extension.controller.health import UNREACHABLE_HINT, caches_condition, describe_pod


def sts(name, ready, replicas=1):
    return {"metadata": {"name": name}, "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


def crashing_pod(name, message):
    return {"metadata": {"name": name}, "status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                               "lastState": {"terminated": {"exitCode": 2, "message": message}}}]}}


def test_all_ready():
    assert caches_condition([sts("registry-a", 1), sts("registry-b", 1)], []) == \
        ("True", "CachesReady", "All 2 registry caches are ready.")


def test_no_caches():
    assert caches_condition([], [])[0] == "True"


def test_unreachable_upstream_at_start_is_named_with_the_panic_and_the_hint():
    log = ("time=... level=info msg=\"starting\"\n"
           "panic: Get \"https://10.244.0.2/v2/\": dial tcp 10.244.0.2:443: connect: connection refused\n\n"
           "goroutine 1 [running]:\nmain.main()\n")
    status, reason, message = caches_condition([sts("registry-a", 0)], [crashing_pod("registry-a-0", log)])
    assert (status, reason) == ("False", "CachesNotReady")
    assert "registry-a has 0/1 ready" in message
    assert "registry-a-0: CrashLoopBackOff, restarted 3 times; last exit 2: panic: Get" in message
    assert UNREACHABLE_HINT in message
    assert "goroutine" not in message


def test_other_failures_take_the_last_line_cut_short():
    pod = crashing_pod("registry-a-0", "x\n" + "filesystem: stat /var/lib/registry: permission denied " * 20)
    message = describe_pod(pod)
    assert "permission denied" in message and UNREACHABLE_HINT not in message
    assert len(message) < 420


def test_pending_pod_says_why():
    pod = {"metadata": {"name": "registry-a-0"}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "pod has unbound immediate PersistentVolumeClaims"}]}}
    assert describe_pod(pod) == ("registry-a-0: Pending (PodScheduled: Unschedulable pod has unbound immediate "
                                 "PersistentVolumeClaims)")


def test_merge_writes_only_changes_and_keeps_the_transition_time():
    first = merge_health([], "False", "CachesNotReady", "m", now="t1")
    assert first == [{"type": CONDITION, "status": "False", "reason": "CachesNotReady", "message": "m",
                      "lastUpdateTime": "t1", "lastTransitionTime": "t1"}]
    assert merge_health(first, "False", "CachesNotReady", "m", now="t2") is None
    changed = merge_health(first, "False", "CachesNotReady", "m2", now="t3")
    assert changed[0]["lastTransitionTime"] == "t1" and changed[0]["lastUpdateTime"] == "t3"
    healthy = merge_health(changed + [{"type": "Other"}], "True", "CachesReady", "ok", now="t4")
    assert healthy[0] == {"type": "Other"} and healthy[1]["lastTransitionTime"] == "t4"


# --- the loop: what it asks the API server for -----------------------------------------------------------------

class _Lists:
    """A cluster that answers LISTs from a dict and records each (kind, label selector)."""

    def __init__(self, objects):
        self.objects, self.calls = objects, []

    def list(self, kind, namespace=None, label_selector=None, **_):
        self.calls.append((kind, label_selector))
        key, _, value = (label_selector or "").partition("=")
        return [o for o in self.objects.get(kind, []) if (o["metadata"].get("labels") or {}).get(key) == value]

    def pages(self, kind, namespace=None, label_selector=None, limit=500, **_):
        items = self.list(kind, namespace, label_selector)
        for i in range(0, max(len(items), 1), 20):  # pages of 20
            yield items[i:i + 20], "1"


class _Controller:
    def __init__(self, target, namespaces):
        from types import SimpleNamespace

        from extension.constants import EXTENSION_TYPE
        from extension.controller.actuator import PROVIDER_STATUS_DIGEST
        exts = [((ns, "registry-cache"), {"metadata": {"namespace": ns, "name": "registry-cache"},
                                          "spec": {"type": EXTENSION_TYPE}, "status": {PROVIDER_STATUS_DIGEST: "x"}})
                for ns in namespaces]
        self.informer = SimpleNamespace(items=lambda: exts)
        self.actuator = SimpleNamespace(shoot_target=target, cluster_shoot=lambda ns: ("1", {"spec": {}}))
        self.written = {}

    def write_health(self, namespace, status, reason, message):
        self.written[namespace] = (status, reason, message)
        return True


def _cache(owner, name, ready):
    from extension.constants import MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL
    obj = sts(name, ready)
    obj["metadata"]["labels"] = {MANAGED_BY_LABEL: MANAGED_BY, OWNER_LABEL: owner}
    return obj


def test_one_cluster_for_all_shoots_is_listed_once_per_round_and_pods_only_for_a_cache_not_ready():
    """Standalone at scale: a round over N Extensions is one LIST of StatefulSets (not N), and no LIST of Pods
    while every cache is ready."""
    from extension.constants import APP_NAME, APP_NAME_LABEL
    from extension.controller.health import HealthLoop
    from extension.controller.shoots import OneCluster

    namespaces = [f"shoot--p--s{i}" for i in range(50)]
    cluster = _Lists({"StatefulSet": [_cache(ns, f"registry-{i}", 1) for i, ns in enumerate(namespaces)],
                      "Pod": []})
    controller = _Controller(OneCluster(cluster), namespaces)
    HealthLoop(controller).check_all()
    assert [kind for kind, _ in cluster.calls] == ["StatefulSet"]
    assert set(controller.written) == set(namespaces)
    assert all(v == ("True", "CachesReady", "All 1 registry caches are ready.") for v in controller.written.values())

    cluster.objects["StatefulSet"][3]["status"]["readyReplicas"] = 0
    cluster.objects["StatefulSet"][7]["status"]["readyReplicas"] = 0
    pod = crashing_pod("registry-3-0", "panic: oops")
    pod["metadata"]["labels"] = {APP_NAME_LABEL: APP_NAME}
    cluster.objects["Pod"] = [pod]
    cluster.calls.clear()
    HealthLoop(controller).check_all()
    assert [kind for kind, _ in cluster.calls] == ["StatefulSet", "Pod"]  # the Pods once, for both
    assert controller.written[namespaces[3]][:2] == ("False", "CachesNotReady")
    assert "registry-3-0: CrashLoopBackOff" in controller.written[namespaces[3]][2]
    assert "registry-7 has 0/1 ready (no Pod yet)" in controller.written[namespaces[7]][2]
    assert controller.written[namespaces[0]][0] == "True"


def test_a_cluster_per_shoot_is_asked_per_extension():
    from extension.controller.health import HealthLoop

    clusters = {ns: _Lists({"StatefulSet": [_cache(ns, "registry-a", 1)]}) for ns in ("shoot--p--a", "shoot--p--b")}
    controller = _Controller(lambda ns: clusters[ns], list(clusters))
    HealthLoop(controller).check_all()
    assert all([kind for kind, _ in c.calls] == ["StatefulSet"] for c in clusters.values())
    assert set(controller.written) == set(clusters)


def test_with_the_front_the_container_that_is_not_ready_is_described():
    """Kubelet lists container statuses by name: the front ("front") comes before distribution ("registry-cache");
    the message describes the one that is not ready and names it."""
    pod = crashing_pod("registry-a-0", "panic: Get \"https://10.244.0.2/v2/\": connection refused\n")
    registry = {**pod["status"]["containerStatuses"][0], "name": "registry-cache", "ready": False}
    front = {"name": "front", "ready": True, "restartCount": 0, "state": {"running": {}}}
    pod["status"]["containerStatuses"] = [front, registry]
    message = describe_pod(pod)
    assert message.startswith("registry-a-0: container registry-cache, CrashLoopBackOff, restarted 3 times")
    assert "panic: Get" in message and UNREACHABLE_HINT in message
