"""The Gardener contract's choice of operation, in its order."""

import pytest

from extension.constants import FINALIZER
from extension.controller.reconciler import Op, decide, is_retry


def ext(annotation=None, deleting=False, finalizer=True, last=None, generation=1, observed=1):
    meta = {"name": "registry-cache", "namespace": "shoot--a--b", "generation": generation,
            "finalizers": [FINALIZER] if finalizer else []}
    if annotation:
        meta["annotations"] = {"gardener.cloud/operation": annotation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"observedGeneration": observed}
    if last:
        status["lastOperation"] = {"type": last[0], "state": last[1]}
    return {"metadata": meta, "spec": {"type": "registry-cache"}, "status": status}


@pytest.mark.parametrize("obj, op", [
    (ext(), Op.CREATE),
    (ext(last=("Create", "Succeeded")), None),
    (ext(last=("Create", "Succeeded"), generation=2), Op.RECONCILE),
    (ext(last=("Reconcile", "Succeeded"), annotation="reconcile"), Op.RECONCILE),
    (ext(annotation="reconcile"), Op.CREATE),
    (ext(last=("Reconcile", "Succeeded"), annotation="wait-for-state", generation=2), None),
    (ext(last=("Reconcile", "Succeeded"), annotation="migrate", deleting=True), Op.MIGRATE),  # migrate first
    (ext(last=("Migrate", "Succeeded"), annotation="migrate"), None),
    (ext(last=("Reconcile", "Succeeded"), deleting=True, annotation="restore"), Op.DELETE),  # then deletion
    (ext(last=("Reconcile", "Succeeded"), deleting=True, finalizer=False), None),
    (ext(last=("Migrate", "Succeeded"), annotation="restore"), Op.RESTORE),
    (ext(last=("Migrate", "Succeeded"), generation=2), None),  # migrated: wait for restore
    (ext(last=("Reconcile", "Processing")), Op.RECONCILE),  # interrupted
    (ext(last=("Create", "Processing")), Op.CREATE),
    (ext(last=("Delete", "Processing")), Op.RECONCILE),  # not being deleted (any more): reconcile
    # Gardener requeues what did not succeed: an Extension in Error is carried out again (after a restart
    # at once, else when its backoff has passed: see is_retry)
    (ext(last=("Reconcile", "Error")), Op.RECONCILE),
    (ext(last=("Create", "Error")), Op.CREATE),
    (ext(last=("Restore", "Error")), Op.RESTORE),
])
def test_decide(obj, op):
    assert decide(obj) == op


def test_gardener_secret_names():
    from extension.controller.shoots import gardener_secret_names
    assert gardener_secret_names({}) == ["gardener-internal", "gardener"]
    assert gardener_secret_names({"GARDENER_SHOOT_CLIENT": "external"}) == ["gardener"]


def test_only_an_unchanged_extension_in_error_waits_for_its_backoff():
    assert is_retry(ext(last=("Reconcile", "Error")))
    assert not is_retry(ext(last=("Reconcile", "Error"), generation=2))  # a change: at once
    assert not is_retry(ext(last=("Reconcile", "Error"), annotation="reconcile"))
    assert not is_retry(ext(last=("Reconcile", "Succeeded")))


def test_an_extension_in_error_is_retried_after_a_restart_and_then_with_backoff():
    """A fresh controller (a restart: no backoff in memory) carries it out at once; after a failure the next
    event waits for the backoff."""
    from extension.runtime.retry import Backoff
    clock = [100.0]
    backoff = Backoff(clock=lambda: clock[0])
    failed = ext(last=("Reconcile", "Error"))
    assert decide(failed) == Op.RECONCILE and not backoff.waiting("shoot--a--b/registry-cache")
    assert backoff.failed("shoot--a--b/registry-cache") == 5.0
    assert backoff.waiting("shoot--a--b/registry-cache") and backoff.due() == []
    assert backoff.failed("shoot--a--b/registry-cache") == 10.0
    clock[0] += 10
    assert backoff.due() == ["shoot--a--b/registry-cache"]
    for _ in range(20):
        backoff.failed("x")
    assert backoff.failed("x") == 300.0


def test_transport_errors_are_infrastructure_problems_and_errored_never_raises():
    """A refused connection (urllib3's MaxRetryError) was an "internal error" without ERR_INFRA_DEPENDENCIES,
    and _errored raised inside its own handler when the seed was down: neither status nor metric."""
    import socket

    from kubernetes import client
    from prometheus_client import REGISTRY

    from extension import metrics
    from extension.controller.reconciler import Controller, _describe
    from extension.runtime.kube import Kube, TransportError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{port}"
    cfg.verify_ssl = False
    seed = Kube(client.ApiClient(cfg))
    with pytest.raises(TransportError) as info:
        seed.get("Extension", "registry-cache", "shoot--a--b")
    message, codes = _describe(info.value)
    assert codes == ["ERR_INFRA_DEPENDENCIES"]
    assert message.startswith("the API server could not be reached for GET /apis/extensions.gardener.cloud/")
    assert "Connection refused" in message and "object at 0x" not in message
    # client-go's count of a request that got no answer
    assert REGISTRY.get_sample_value("rest_client_requests_total", {
        "code": "<error>", "method": "GET", "host": f"127.0.0.1:{port}"}) == 1
    assert REGISTRY.get_sample_value("rest_client_request_duration_seconds_count",
                                     {"verb": "GET", "host": f"127.0.0.1:{port}"}) == 1

    class Unused:  # an actuator never reached: the seed is away before it acts
        extension_type = "registry-cache"
        what = "registry caches"

    controller = Controller(seed, Unused())  # type: ignore[arg-type]
    errors = metrics.OPERATIONS.labels("Reconcile", "Error")
    before = errors._value.get()
    obj = ext(last=("Reconcile", "Succeeded"), generation=2)
    obj["metadata"]["uid"] = "u1"
    controller._run(Op.RECONCILE, obj)  # every write fails: no exception escapes
    assert errors._value.get() == before + 1
    assert controller.backoff.waiting("shoot--a--b/registry-cache")
    # a reconcile of the queue (a key processed) whose operation ended in Error: controller-runtime's error result
    reconciles = {result: REGISTRY.get_sample_value("controller_runtime_reconcile_total",
                                                    {"controller": "extension", "result": result})
                  for result in ("success", "error")}
    failed = REGISTRY.get_sample_value("controller_runtime_reconcile_errors_total", {"controller": "extension"})
    controller.backoff.succeeded("shoot--a--b/registry-cache")
    controller.informer._event({"type": "ADDED", "object": obj}, "1")
    assert controller.process(("shoot--a--b", "registry-cache")) == Op.RECONCILE
    assert REGISTRY.get_sample_value("controller_runtime_reconcile_total",
                                     {"controller": "extension", "result": "error"}) == reconciles["error"] + 1
    assert REGISTRY.get_sample_value("controller_runtime_reconcile_errors_total",
                                     {"controller": "extension"}) == failed + 1
    assert controller.process(("shoot--a--b", "other")) is None  # nothing there: a reconcile that succeeded
    assert REGISTRY.get_sample_value("controller_runtime_reconcile_total",
                                     {"controller": "extension", "result": "success"}) == reconciles["success"] + 1
    assert controller.retry("shoot--a--b", "registry-cache") is None  # the seed still away: scheduled again
