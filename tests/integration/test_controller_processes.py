"""Tests that run their own controller processes (a crash and a restart; a second API server as the shoot).

Kept apart from test_controller.py, whose module-wide controller would otherwise act on these Extensions too.
"""

from __future__ import annotations

import time

import pytest

from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for
from .test_controller import OWNER, Seed, kube, uniq


def test_restart_in_the_middle_of_a_reconcile_converges(kube, control_plane, tmp_path):
    seed = Seed(kube, uniq("restart"))
    crashing = OperatorProcess(control_plane.kubeconfig, tmp_path / "crash.log", crash_at="after-services").start()
    try:
        seed.create({"upstream": f"a.{seed.name}.example"}, {"upstream": f"b.{seed.name}.example"})
        assert crashing.wait_exit(30) == 3, crashing.log()
    finally:
        crashing.stop()
    assert seed.state() == "Processing"
    assert seed.owned("Service") and not seed.owned("StatefulSet")  # stopped between Services and the rest
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "after.log") as op:
        ext = wait_for("converged", lambda: seed.state() == "Succeeded" and seed.ext(), log=op.log)
    assert len(ext["status"]["providerStatus"]["caches"]) == 2
    assert len(seed.owned("StatefulSet")) == 2


def test_shoot_on_a_second_api_server(kube, control_plane, second_control_plane, tmp_path):
    shoot = Kube(second_control_plane.api_client(), field_manager="test")
    seed = Seed(kube, uniq("second"))
    up = f"a.{seed.name}.example"
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--shoot-kubeconfig",
                         str(second_control_plane.kubeconfig)) as op:
        seed.create({"upstream": up})
        ext = seed.wait_done("Create", op.log)
        assert seed.owned("StatefulSet", shoot) == [f"registry-{up.replace('.', '-')}"]
        assert seed.owned("StatefulSet") == []  # nothing in the seed's kube-system
        service = shoot.list("Service", "kube-system", label_selector=f"{OWNER}={seed.ns}")[0]
        assert ext["status"]["providerStatus"]["caches"][0]["endpoint"] == f"https://{service['spec']['clusterIP']}:5000"
        kube.delete("Extension", "registry-cache", seed.ns)
        wait_for("deleted", lambda: seed.ext() is None, log=op.log)
        assert seed.owned("StatefulSet", shoot) == []


def test_prometheus_metrics(kube, control_plane, tmp_path):
    import socket
    import urllib.request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seed = Seed(kube, uniq("metrics"))
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--metrics-address", f"127.0.0.1:{port}") as op:
        seed.create({"upstream": f"a.{seed.name}.example", "volume": {"size": "0"}})  # an Error first
        wait_for("Error", lambda: seed.state() == "Error", log=op.log)
        seed.set_caches({"upstream": f"a.{seed.name}.example"})
        wait_for("Succeeded", lambda: seed.state() == "Succeeded", log=op.log)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['registry_cache_operations_total{operation="Create",result="Error"}'] >= 1
    assert samples['registry_cache_operations_total{operation="Reconcile",result="Succeeded"}'] >= 1
    assert _requests(samples, "PATCH") > 0
    assert samples['registry_cache_operation_duration_seconds_count{operation="Reconcile"}'] >= 1


def test_gardener_mode_reaches_the_shoot_through_gardenlets_kubeconfig_secret(kube, control_plane,
                                                                              second_control_plane, tmp_path):
    import base64
    shoot = Kube(second_control_plane.api_client(), field_manager="test")
    seed = Seed(kube, uniq("gardener"))
    up = f"a.{seed.name}.example"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": seed.ns}})
    # what gardenlet keeps in every shoot namespace: Secret "gardener" with the shoot's kubeconfig
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gardener", "namespace": seed.ns},
                "data": {"kubeconfig": base64.b64encode(second_control_plane.kubeconfig.read_bytes()).decode()}})
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--gardener") as op:
        seed.create({"upstream": up})
        seed.wait_done("Create", op.log)
        assert seed.owned("StatefulSet", shoot) == [f"registry-{up.replace('.', '-')}"]
        assert seed.owned("StatefulSet") == []


def test_an_extension_in_error_is_retried_after_a_restart(kube, control_plane, tmp_path):
    """The backoff lived in memory and decide() ignored Error: after a restart an Extension in Error stayed so
    until it changed. Gardener requeues what did not succeed."""
    seed = Seed(kube, uniq("errrestart"))
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "first.log") as op:
        seed.create({"upstream": f"a.{seed.name}.example"}, cluster=False)  # no Cluster: Error
        wait_for("Error", lambda: seed.state() == "Error", log=op.log)
    seed.apply_cluster()  # the cause is gone, the Extension does not change
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "second.log", "--resync-period", "3600") as op:
        wait_for("retried to success", lambda: seed.state() == "Succeeded", timeout=20, log=op.log)


def test_the_periodic_resync_puts_back_what_was_deleted_by_hand(kube, control_plane, tmp_path):
    seed = Seed(kube, uniq("resync"))
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--resync-period", "2") as op:
        seed.create({"upstream": f"a.{seed.name}.example"})
        seed.wait_done("Create", op.log)
        [name] = seed.owned("StatefulSet")
        kube.delete("StatefulSet", name, "kube-system")
        wait_for("the StatefulSet back", lambda: seed.owned("StatefulSet") == [name], timeout=30, log=op.log)


def test_a_registry_mirror_extension_is_retried_and_resynced_as_a_cache_is(kube, control_plane, tmp_path):
    """Issue 9's retry of an Extension in Error and its periodic resync, for the second extension type: an Error
    is carried out again without a change once its cause is gone, and the node configuration deleted by hand is
    put back."""
    from .test_mirror import Seed as MirrorSeed
    from .test_mirror import ca_secret, mirror_config

    seed = MirrorSeed(kube, uniq("mirrorretry"))
    selector = f"{OWNER}={seed.ns}"
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--resync-period", "2") as op:
        seed.extension("registry-mirror", mirror_config(f"{seed.name}.example"))  # no ref-ca-v1 yet: Error
        seed.wait("registry-mirror", op.log, state="Error")
        kube.apply(ca_secret("ref-ca-v1", seed.ns, immutable=None))  # the cause gone; the Extension unchanged
        seed.wait("registry-mirror", op.log)
        [published] = kube.list("ConfigMap", "kube-system", label_selector=selector)
        kube.delete("ConfigMap", published["metadata"]["name"], "kube-system")
        wait_for("the node configuration back", lambda: [c["metadata"]["name"] for c in kube.list(
            "ConfigMap", "kube-system", label_selector=selector)] == [published["metadata"]["name"]],
            timeout=30, log=op.log)
        seed.delete("registry-mirror", op.log)


def _metrics(port: int) -> dict[str, float]:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def _requests(samples: dict[str, float], method: str) -> float:
    """Requests of one HTTP method to the API servers, whatever their answer (client-go's
    rest_client_requests_total{code, method, host}; a LIST and a WATCH are GETs)."""
    return sum(value for series, value in samples.items()
               if series.startswith("rest_client_requests_total{") and f'method="{method}"' in series)


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


WRITES = ("PATCH", "POST", "PUT", "DELETE")


@pytest.fixture(scope="module")
def quiet_control_plane(control_plane_bin_dir, tmp_path_factory):
    """A control plane of its own: no other test's Extensions (some in Error, retried) in the request counts."""
    from .conftest import own_control_plane
    with own_control_plane("quiet", control_plane_bin_dir, tmp_path_factory) as cp:
        yield cp


def test_a_resync_with_nothing_changed_writes_nothing(quiet_control_plane, tmp_path):
    """Issue 11: the periodic resync looks at every Extension; when all is as delivered it sends nothing at all
    (no write, no read either: what it needs is in memory from its watches)."""
    kube = Kube(quiet_control_plane.api_client(), field_manager="gardenlet-test")
    seed = Seed(kube, uniq("quiet"))
    port = _free_port()
    with OperatorProcess(quiet_control_plane.kubeconfig, tmp_path / "op.log", "--resync-period", "1",
                         "--metrics-address", f"127.0.0.1:{port}") as op:
        seed.add_credentials("c", "c-v1", "user", "pass")
        seed.create({"upstream": f"a.{seed.name}.example", "secretReferenceName": "c"},
                    {"upstream": f"b.{seed.name}.example", "http": {"tls": False}})
        seed.wait_done("Create", op.log)
        # the caches' health condition follows the Create on its own (written once, not by a resync)
        wait_for("the health condition", lambda: any(c["type"] == "SystemComponentsHealthy" for c in (
            (seed.ext() or {}).get("status") or {}).get("conditions") or []), log=op.log)
        checks = 'registry_cache_checks_total{result="in-sync"}'
        wait_for("a resync", lambda: _metrics(port).get(checks, 0) >= 1, log=op.log)
        before = _metrics(port)
        wait_for("three more resyncs", lambda: _metrics(port).get(checks, 0) >= before[checks] + 3, log=op.log)
        after = _metrics(port)
    assert [_requests(after, w) - _requests(before, w) for w in WRITES] == [0, 0, 0, 0]
    assert _requests(after, "GET") == _requests(before, "GET")
    assert after.get('registry_cache_checks_total{result="reconciled"}', 0) == before.get(
        'registry_cache_checks_total{result="reconciled"}', 0)


def test_what_is_changed_by_hand_is_put_back_at_once_and_after_a_restart(kube, control_plane, tmp_path):
    """A delivered object changed by another field manager is put back as soon as the watch sees it (a
    Reconcile); one changed while the controller was away is put back by the first resync after its start,
    and one deleted then too. Objects as delivered are not sent again."""
    seed = Seed(kube, uniq("drift"))
    port = _free_port()
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--metrics-address",
                         f"127.0.0.1:{port}") as op:
        seed.create({"upstream": f"a.{seed.name}.example"})
        seed.wait_done("Create", op.log)
        [name] = seed.owned("StatefulSet")
        [service] = seed.owned("Service")
        kube.patch("StatefulSet", name, {"spec": {"replicas": 3}}, "kube-system")
        wait_for("the replicas put back", lambda: kube.get("StatefulSet", name, "kube-system")["spec"]["replicas"] == 1,
                 log=op.log)
        wait_for("a Reconcile", lambda: _metrics(port).get('registry_cache_checks_total{result="reconciled"}', 0) >= 1,
                 log=op.log)
    generation = kube.get("Extension", "registry-cache", seed.ns)["metadata"]["generation"]
    kube.patch("StatefulSet", name, {"spec": {"replicas": 5}}, "kube-system")  # while nobody watches
    kube.patch("Service", service, {"metadata": {"annotations": {"upstream": "elsewhere.example"}}}, "kube-system")
    [netpol] = seed.owned("NetworkPolicy")
    kube.delete("NetworkPolicy", netpol, "kube-system")
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "again.log", "--resync-period", "2") as op:
        wait_for("the replicas put back", lambda: kube.get("StatefulSet", name, "kube-system")["spec"]["replicas"] == 1,
                 timeout=30, log=op.log)
        wait_for("the annotation put back", lambda: kube.get("Service", service, "kube-system")["metadata"][
            "annotations"]["upstream"] == f"a.{seed.name}.example", log=op.log)
        wait_for("the NetworkPolicy back", lambda: seed.owned("NetworkPolicy") == [netpol], log=op.log)
        wait_for("Succeeded", lambda: seed.state() == "Succeeded", log=op.log)
    assert kube.get("Extension", "registry-cache", seed.ns)["metadata"]["generation"] == generation


def test_what_is_kept_per_extension_goes_with_it(quiet_control_plane, tmp_path):
    """Issue 11: the state kept per Extension (its watch record, locks, own resourceVersions, delivery records,
    the seed cache's copies, the shoot view's records, the error metric's series) is bounded by the Extensions
    there are: all of it goes when they are deleted. The controller runs in this process (against the real API server) to be looked at."""
    import threading

    from prometheus_client import REGISTRY

    from extension.component.objects import RenderOptions
    from extension.controller import shoots
    from extension.controller.actuator import Actuator
    from extension.controller.reconciler import Controller
    from extension.runtime.informer import wait_synced

    admin = Kube(quiet_control_plane.api_client(), field_manager="gardenlet-test")
    seed_kube = Kube(quiet_control_plane.api_client())
    controller = Controller(seed_kube, Actuator(seed_kube, shoots.same_cluster(seed_kube), RenderOptions()))
    stop = threading.Event()
    informers = controller.informers()
    try:
        for informer in informers:
            informer.start(stop)
        assert wait_synced(informers, stop, timeout=60)
        controller.actuator.started(stop)
        workers = [threading.Thread(target=controller.work, args=(stop,), daemon=True) for _ in range(4)]
        for worker in workers:
            worker.start()
        wait_for("idle", lambda: controller.queue.idle())
        before = controller.kept()
        content_before = len(controller.actuator.cache)
        assert controller.actuator.view is not None
        owners_before = controller.actuator.view.owners()
        seeds = [Seed(admin, uniq("kept")) for _ in range(4)]
        for seed in seeds:
            seed.add_credentials("c", "c-v1", "user", "pass")
            seed.create({"upstream": f"a.{seed.name}.example", "secretReferenceName": "c"})
        for seed in seeds:
            wait_for(f"{seed.ns} Succeeded", lambda s=seed: s.state() == "Succeeded")
        error_series = lambda s: REGISTRY.get_sample_value(
            "registry_cache_extension_error", {"namespace": s.ns, "name": "registry-cache", "type": "registry-cache"})
        assert [error_series(seed) for seed in seeds] == [0] * 4
        grown = controller.kept()
        assert grown["extensions"] == before["extensions"] + 4 and grown["records"] == before["records"] + 4
        assert len(controller.actuator.cache) > content_before
        for seed in seeds:
            admin.delete("Extension", "registry-cache", seed.ns)
        for seed in seeds:
            wait_for(f"{seed.ns} gone", lambda s=seed: s.ext() is None)
        wait_for("everything of them dropped", lambda: controller.kept() == before and controller.queue.idle(),
                 timeout=30)
        assert len(controller.actuator.cache) == content_before
        assert all(not controller.actuator.view.objects(seed.ns) for seed in seeds)
        assert controller.actuator.view.owners() == owners_before
        assert [error_series(seed) for seed in seeds] == [None] * 4
    finally:
        stop.set()
        controller.queue.close()
        for informer in informers:
            informer.close()


def test_a_restart_writes_nothing(quiet_control_plane, tmp_path):
    """Issue 22: a controller restarted with every Extension Succeeded and nothing changing writes no Extension.
    Before, the caches' health condition followed a change only at its next round (every 10 s): a controller stopped
    within a round of a change (here: a cache added, stopped as soon as the Reconcile succeeded) left it stale, and
    the next one wrote it at its first round. Counted by the API server: every Extension's resourceVersion, from
    before the stop to 15 s (more than a round) after the restarted controller listed; twice."""
    kube = Kube(quiet_control_plane.api_client(), field_manager="gardenlet-test")
    seeds = [Seed(kube, uniq("restart")) for _ in range(3)]

    def versions() -> dict[str, str]:
        return {e["metadata"]["namespace"]: e["metadata"]["resourceVersion"] for e in kube.list("Extension")}

    def healthy_condition(seed: Seed) -> str:
        conditions = ((seed.ext() or {}).get("status") or {}).get("conditions") or []
        return next((c["message"] for c in conditions if c["type"] == "SystemComponentsHealthy"), "")

    log = tmp_path / "op.log"
    with OperatorProcess(quiet_control_plane.kubeconfig, log) as op:
        for seed in seeds:
            seed.create({"upstream": f"a.{seed.name}.example"})
        for seed in seeds:
            seed.wait_done("Create", op.log)
            wait_for("the health condition", lambda seed=seed: "registry-a-" in healthy_condition(seed), log=op.log)
        seeds[0].set_caches({"upstream": f"a.{seeds[0].name}.example"}, {"upstream": f"b.{seeds[0].name}.example"})
        seeds[0].wait_done("Reconcile", op.log)  # and stopped at once
    assert "registry-b-" in healthy_condition(seeds[0]), op.log()[-3000:]  # reported by the process that changed it
    for restart in range(2):
        before = versions()
        with OperatorProcess(quiet_control_plane.kubeconfig, log) as op:
            wait_for("the restart to list", lambda: op.log().count("watches synced") >= restart + 2, log=op.log)
            time.sleep(15)
            after = versions()
            if restart == 1:
                for seed in seeds:
                    kube.delete("Extension", "registry-cache", seed.ns)
                wait_for("the Extensions gone", lambda: not any(seed.ext() for seed in seeds), log=op.log)
        written = sorted(ns for ns, version in after.items() if before.get(ns) != version)
        assert written == [], op.log()[-3000:]
