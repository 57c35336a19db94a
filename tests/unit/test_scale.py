"""The pure parts of issue 11: the work queue, what is kept of an Extension, when a delivered object counts as
as delivered (the rest runs against a real API server: tests/integration)."""

import threading
import time

from extension.component.registrycache import as_delivered, rendered_hash, with_hash
from extension.component.shootview import Live, live_record
from extension.constants import FIELD_MANAGER, FINALIZER, OWNER_LABEL, RENDERED_HASH_ANNOTATION
from extension.controller.actuator import status_digest
from extension.controller.reconciler import checkable, decide, skeleton
from extension.runtime.workqueue import WorkQueue


def test_a_key_is_queued_once_processed_by_one_worker_and_again_when_added_meanwhile():
    queue = WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.add("a")  # already queued: once
    assert len(queue) == 2
    assert queue.get(0) == "a"
    queue.add("a")  # while processed: not handed to a second worker ...
    assert queue.get(0) == "b" and queue.get(0) is None
    queue.done("a")  # ... but again once done
    assert queue.get(0) == "a"
    queue.done("a")
    queue.done("b")
    assert queue.idle() and not queue.busy("a")


def test_workers_never_process_one_key_at_once():
    queue = WorkQueue()
    running: set[str] = set()
    clash = []
    done = threading.Event()

    def worker():
        while not done.is_set():
            key = queue.get(0.05)
            if key is None:
                continue
            if key in running:
                clash.append(key)
            running.add(key)
            time.sleep(0.001)
            running.discard(key)
            queue.done(key)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(2000):
        queue.add(f"k{i % 5}")
    deadline = time.monotonic() + 10
    while not queue.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    for t in threads:
        t.join()
    assert clash == [] and queue.idle()


def test_close_wakes_the_workers():
    queue = WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(queue.get()))
    t.start()
    queue.close()
    t.join(2)
    assert got == [None]


def extension(**status):
    return {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
            "metadata": {"name": "registry-cache", "namespace": "shoot--a--b", "uid": "u", "resourceVersion": "7",
                         "generation": 2, "finalizers": ["other", FINALIZER],
                         "annotations": {"gardener.cloud/operation": "reconcile"},
                         "managedFields": [{"manager": "gardenlet", "fieldsV1": {"f:spec": {}}}] * 50},
            "spec": {"type": "registry-cache", "providerConfig": {"caches": [{"upstream": "a.io"}]}},
            "status": {"lastOperation": {"type": "Reconcile", "state": "Succeeded", "progress": 100,
                                         "description": "x" * 500, "lastUpdateTime": "2026-01-01T00:00:00Z"},
                       "observedGeneration": 2, "providerStatus": {"caches": []}, "lastError": {"description": "y"},
                       "conditions": [{"type": "UpstreamCredentialsValid-a.io", "status": "True"}],
                       **status}}


def test_what_is_kept_of_an_extension_is_what_the_contract_reads():
    ext = extension()
    kept = skeleton(ext)
    assert kept is not None
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["finalizers"] == ["other", FINALIZER]
    assert kept["status"] == {"lastOperation": {"type": "Reconcile", "state": "Succeeded"},
                              "observedGeneration": 2, "providerStatusDigest": status_digest({"caches": []}),
                              "conditions": ext["status"]["conditions"]}  # merged into by the upstream checks
    assert kept["spec"] == ext["spec"]
    for variant in (ext, {**ext, "metadata": {**ext["metadata"], "annotations": {}}},
                    {**ext, "metadata": {**ext["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}):
        assert decide(skeleton(variant)) == decide(variant)  # type: ignore[arg-type]
    assert skeleton({**ext, "spec": {"type": "other"}}) is None
    assert skeleton({**ext, "spec": {"type": "registry-mirror"}}) is not None


def test_only_succeeded_extensions_are_looked_at_without_an_operation():
    assert checkable(extension())
    assert not checkable(extension(lastOperation={"type": "Reconcile", "state": "Error"}))
    assert not checkable(extension(lastOperation={"type": "Migrate", "state": "Succeeded"}))


def live(obj):
    return live_record(obj)


def test_an_object_is_as_delivered_by_its_version_or_by_its_hash_and_field_managers():
    rendered = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system",
                                                                       "labels": {OWNER_LABEL: "shoot--a--b"}},
                "data": {"k": "v"}}
    digest = rendered_hash(rendered)
    assert rendered_hash(with_hash(rendered, digest)) == digest  # the annotation is not part of the hash
    assert rendered_hash({**rendered, "data": {"k": "w"}}) != digest

    applied = {**with_hash(rendered, digest), "metadata": {
        **with_hash(rendered, digest)["metadata"], "resourceVersion": "5",
        "managedFields": [{"manager": FIELD_MANAGER, "operation": "Apply"},
                          {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}]}}
    mine = live(applied)
    assert mine == Live(owner="shoot--a--b", version="5", rendered=digest, foreign=False)
    assert as_delivered(mine, digest, None)  # after a restart: the hash, and only our field manager
    assert as_delivered(mine, digest, (digest, "5"))
    assert not as_delivered(mine, rendered_hash({**rendered, "data": {"k": "w"}}), None)  # rendered differently
    assert not as_delivered(None, digest, (digest, "5"))  # deleted

    edited = live({**applied, "metadata": {**applied["metadata"], "resourceVersion": "6", "managedFields": [
        *applied["metadata"]["managedFields"], {"manager": "kubectl-edit", "operation": "Update"}]}})
    assert edited.foreign and not as_delivered(edited, digest, None)
    assert not as_delivered(edited, digest, (digest, "5"))  # changed since this process left it
    assert as_delivered(edited, digest, (digest, "6"))  # put back (or looked at) by this process since

    service = live({"kind": "Service", "metadata": {"resourceVersion": "1"}, "spec": {"clusterIP": "10.0.0.9"}})
    assert service.cluster_ip == "10.0.0.9" and service.owner == ""
