"""The Gardener contract's choice of operation, in its order."""

import pytest

from extension.constants import FINALIZER
from extension.controller.reconciler import Op, decide


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
    (ext(last=("Reconcile", "Error")), None),  # errors are retried by the backoff, not by events
])
def test_decide(obj, op):
    assert decide(obj) == op


def test_gardener_secret_names():
    from extension.controller.shoots import gardener_secret_names
    assert gardener_secret_names({}) == ["gardener-internal", "gardener"]
    assert gardener_secret_names({"GARDENER_SHOOT_CLIENT": "external"}) == ["gardener"]
