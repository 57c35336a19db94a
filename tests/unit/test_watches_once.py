"""The controller's watches are made once, whoever asks first: the leader's start and the readiness probe ask
from two threads at once (seen: the probe's call made a second set of watches while the leader started the first,
so the replica stayed unready with "the leader's watch of shoot-StatefulSet has not listed yet" for good, and the
actuator read from the watches nobody started)."""

from __future__ import annotations

import threading
import time

from kubernetes import client

from extension.component.registrycache import RenderOptions
from extension.controller.actuator import Actuator
from extension.controller.shoots import same_cluster
from extension.runtime.kube import Kube


def test_two_threads_asking_for_the_watches_get_the_same_ones():
    config = client.Configuration()
    config.host = "https://127.0.0.1:1"  # never called: making watches sends nothing
    seed = Kube(client.ApiClient(config))
    actuator = Actuator(seed, same_cluster(seed), RenderOptions())

    def slow_discovery(kube):  # what the API server serves, asked while the other thread asks too
        time.sleep(0.2)
        return set()

    actuator._served = slow_discovery  # type: ignore[method-assign, assignment]
    got: list[list] = []
    threads = [threading.Thread(target=lambda: got.append(actuator.informers())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = got
    assert [id(i) for i in first] == [id(i) for i in second]
    assert any(i.name.startswith("shoot-") for i in first)
    assert actuator.view is not None and all(any(i is v for i in first) for v in actuator.view.informers)
