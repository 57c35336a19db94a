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
    def __init__(self, target, namespaces, view=None):
        from types import SimpleNamespace

        from extension.constants import EXTENSION_TYPE
        from extension.controller.actuator import PROVIDER_STATUS_DIGEST
        self.exts = {(ns, "registry-cache"): {"metadata": {"namespace": ns, "name": "registry-cache"},
                                              "spec": {"type": EXTENSION_TYPE},
                                              "status": {PROVIDER_STATUS_DIGEST: "x"}} for ns in namespaces}
        self.informer = SimpleNamespace(items=lambda: list(self.exts.items()))
        self.hibernated = set()
        self.actuator = SimpleNamespace(shoot_target=target, view=view, on_workload=None, cluster_shoot=lambda ns: (
            "1", {"spec": {"hibernation": {"enabled": ns in self.hibernated}}}))
        self.on_succeeded = None
        self.written = {}

    def current(self, key):
        return self.exts.get(key)

    def write_health(self, namespace, status, reason, message, skip=None):
        if self.written.get(namespace) == (status, reason, message) or (skip is not None and skip()):
            return False
        self.written[namespace] = (status, reason, message)
        return True


class _NoRequests:
    """A cluster that must not be asked anything."""

    def __getattr__(self, name):
        raise AssertionError(f"asked the cluster: {name}")


def _cache(owner, name, ready):
    from extension.constants import MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL
    obj = sts(name, ready)
    obj["metadata"].update(labels={MANAGED_BY_LABEL: MANAGED_BY, OWNER_LABEL: owner}, resourceVersion="1")
    obj["kind"] = "StatefulSet"
    return obj


def test_one_cluster_for_all_shoots_is_watched_and_an_idle_check_asks_nothing():
    """Standalone at scale: the StatefulSets come from the actuator's watch, the Pods that are not ready from the
    health's own; a look at every Extension asks the cluster nothing, writes only what changed, and a change
    marks only its Extension."""
    from extension.component.shootview import WatchedView, live_record
    from extension.constants import APP_NAME, APP_NAME_LABEL
    from extension.controller.health import HealthLoop
    from extension.controller.shoots import OneCluster

    cluster = _NoRequests()
    view = WatchedView(cluster, "kube-system", kinds=("StatefulSet",))  # (not started: fed below)
    on_sts = view._changed("StatefulSet")
    namespaces = [f"shoot--p--s{i}" for i in range(50)]
    for i, ns in enumerate(namespaces):
        on_sts(("kube-system", f"registry-{i}"), None, live_record(_cache(ns, f"registry-{i}", 1)))
    controller = _Controller(OneCluster(cluster), namespaces, view)
    health = HealthLoop(controller)
    assert controller.actuator.on_workload == health.changed and controller.on_succeeded == health.changed
    health.check_all()
    assert set(controller.written) == set(namespaces)
    assert all(v == ("True", "CachesReady", "All 1 registry caches are ready.") for v in controller.written.values())

    # a cache not ready, with a crashing Pod: the watch's records tell, and only its Extension is marked
    view.on_change = lambda owner, kind, name, live: controller.actuator.on_workload(owner)  # (the actuator's)
    on_sts(("kube-system", "registry-3"), None, live_record(_cache(namespaces[3], "registry-3", 0)))
    pod = crashing_pod("registry-3-0", "panic: oops")
    pod["metadata"].update(labels={APP_NAME_LABEL: APP_NAME, "app": "registry-3"}, resourceVersion="2")
    health.pods._apply("ADDED", pod)
    assert health._dirty == {namespaces[3]}
    ready = {**pod, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    ready["metadata"] = {**pod["metadata"], "resourceVersion": "3"}
    assert [p for _, p in health.pods.items()] and not health.pods.transform(ready)  # ready Pods are not kept
    health.check(sorted(health._dirty))
    assert controller.written[namespaces[3]][:2] == ("False", "CachesNotReady")
    assert "registry-3-0: CrashLoopBackOff" in controller.written[namespaces[3]][2]
    assert controller.written[namespaces[0]][0] == "True"
    # a hibernated shoot's condition stays as it was
    controller.hibernated.add(namespaces[7])
    on_sts(("kube-system", "registry-7"), None, live_record(_cache(namespaces[7], "registry-7", 0)))
    health.check([namespaces[7]])
    assert controller.written[namespaces[7]][0] == "True"


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
