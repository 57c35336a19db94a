"""The work queue's metrics count as client-go's do (a fake clock; the real process is measured in
tests/integration/test_controller_processes.py)."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from extension.runtime.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sample(metric: str, name: str, suffix: str = "") -> float:
    value = REGISTRY.get_sample_value(metric + suffix, {"name": name, "controller": name})
    return 0.0 if value is None else value


def test_adds_depth_and_durations_as_client_go_counts_them():
    name = f"test-{uuid.uuid4().hex[:6]}"
    clock = Clock()
    queue = WorkQueue(name, clock=clock)
    queue.add("a")
    queue.add("a")  # waiting already: not another add
    queue.add("b")
    assert sample("workqueue_adds_total", name) == 2
    assert sample("workqueue_depth", name) == 2
    clock.now += 3
    assert queue.get(0) == "a"
    assert sample("workqueue_depth", name) == 1
    assert sample("workqueue_queue_duration_seconds", name, "_sum") == 3
    clock.now += 2
    assert sample("workqueue_unfinished_work_seconds", name) == 2
    assert sample("workqueue_longest_running_processor_seconds", name) == 2
    queue.add("a")  # while processed: to be processed again, an add, in the depth
    assert (sample("workqueue_adds_total", name), sample("workqueue_depth", name)) == (3, 2)
    clock.now += 5
    queue.done("a")
    assert sample("workqueue_work_duration_seconds", name, "_count") == 1
    assert sample("workqueue_work_duration_seconds", name, "_sum") == 7
    assert sample("workqueue_unfinished_work_seconds", name) == 0
    assert queue.get(0) == "b" and queue.get(0) == "a"
    # the second pass of "a" waited from its add while processed (at 105) until taken (at 110)
    assert sample("workqueue_queue_duration_seconds", name, "_count") == 3
    assert sample("workqueue_queue_duration_seconds", name, "_sum") == 3 + 10 + 5
    assert sample("workqueue_depth", name) == 0


def test_a_retry_is_counted_whether_or_not_the_key_waits_already():
    name = f"test-{uuid.uuid4().hex[:6]}"
    queue = WorkQueue(name)
    queue.add("a", retry=True)
    queue.add("a", retry=True)
    assert sample("workqueue_retries_total", name) == 2
    assert sample("workqueue_adds_total", name) == 1
    assert len(queue) == 1


def test_an_informer_that_has_not_listed_reports_zero_until_it_has():
    """registry_cache_informer_synced is 0 from the informer's start while its list does not come in (an API server
    that refuses connections), so that RegistryCacheControllerInformerNotSynced sees it; leader election's gauge
    is 0 while the Lease is not held."""
    import socket
    import threading
    import time

    from kubernetes import client

    from extension.runtime.informer import Informer
    from extension.runtime.kube import Kube
    from extension.runtime.leader import LeaderElector

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{port}"
    kube = Kube(client.ApiClient(cfg))
    name = f"test-{uuid.uuid4().hex[:6]}"
    stop = threading.Event()
    informer = Informer(kube, "Extension", lambda obj: obj, name=name)
    assert REGISTRY.get_sample_value("registry_cache_informer_synced", {"informer": name}) is None
    try:
        informer.start(stop)
        assert REGISTRY.get_sample_value("registry_cache_informer_synced", {"informer": name}) == 0
        assert not informer.synced.wait(1.0)
        assert REGISTRY.get_sample_value("registry_cache_informer_synced", {"informer": name}) == 0
        lease = f"lease-{uuid.uuid4().hex[:6]}"
        elector = LeaderElector(kube, "kube-system", lease, lease_duration=3, renew_deadline=2, retry_period=0.2)
        election = threading.Thread(target=elector.run, args=(stop, lambda: None, lambda: None), daemon=True)
        election.start()
        deadline = time.monotonic() + 5
        while REGISTRY.get_sample_value("leader_election_master_status", {"name": lease}) is None:
            assert time.monotonic() < deadline and election.is_alive()
            time.sleep(0.05)
        assert REGISTRY.get_sample_value("leader_election_master_status", {"name": lease}) == 0
    finally:
        stop.set()
        informer.close()
