"""The caches' health condition on the Extension (extension/controller/health.py), from Pod and StatefulSet
objects."""

from extension.constants import SYSTEM_COMPONENTS_HEALTHY_CONDITION as CONDITION
from extension.controller.health import UNREACHABLE_HINT, caches_condition, describe_pod, merge_condition


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
    first = merge_condition([], "False", "CachesNotReady", "m", now="t1")
    assert first == [{"type": CONDITION, "status": "False", "reason": "CachesNotReady", "message": "m",
                      "lastUpdateTime": "t1", "lastTransitionTime": "t1"}]
    assert merge_condition(first, "False", "CachesNotReady", "m", now="t2") is None
    changed = merge_condition(first, "False", "CachesNotReady", "m2", now="t3")
    assert changed[0]["lastTransitionTime"] == "t1" and changed[0]["lastUpdateTime"] == "t3"
    healthy = merge_condition(changed + [{"type": "Other"}], "True", "CachesReady", "ok", now="t4")
    assert healthy[0] == {"type": "Other"} and healthy[1]["lastTransitionTime"] == "t4"
