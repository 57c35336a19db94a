"""Leader election: two controller processes against the local control plane, one Lease.

What is checked: one of them reconciles, the other waits; killed (SIGKILL: no release), the leader is replaced
within the lease duration of its last renewal (plus the follower's polling period); a leader that is frozen
(SIGSTOP) past its renew deadline sends not one more write once it runs again, and ends; stopped cleanly
(SIGTERM), it releases the Lease and the other takes over at once, also when an operation in flight runs past
the renew deadline (it renews until that operation ends, as client-go's ReleaseOnCancel under
controller-runtime). Throughout, Extensions keep changing, and no Extension is ever reconciled by both processes
at once (the operation intervals in their logs). And a follower whose read of the Lease is slow dates what it
read from when the answer came (client-go's observedTime), never taking a Lease its holder still counts as its.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import threading
import time
from urllib.parse import urlsplit

import pytest
import yaml

from extension.runtime.kube import Kube
from extension.runtime.leader import LeaderElector

from .operator_process import OperatorProcess, wait_for
from .tcp_proxy import TcpProxy
from .test_controller import Seed, kube, uniq

LEASE_NS = "kube-system"
TIMING = {"lease": 4.0, "renew": 3.0, "retry": 0.5}
LINE = re.compile(r"^(\S+ \S+) \w+ extension\.controller\.reconciler: (\S+)/registry-cache: (\w+) "
                  r"(started|succeeded|failed|stopped)", re.M)  # stopped: its writes refused, no longer leading


def elector(control_plane, log, lease, timing=TIMING, **kw):
    return OperatorProcess(
        control_plane.kubeconfig, log, "--leader-election", "--leader-election-namespace", LEASE_NS,
        "--leader-election-id", lease,
        "--leader-election-lease-duration", str(timing["lease"]),
        "--leader-election-renew-deadline", str(timing["renew"]),
        "--leader-election-retry-period", str(timing["retry"]), **kw)


def holder(kube, lease) -> str:
    obj = kube.get("Lease", lease, LEASE_NS)
    return ((obj or {}).get("spec") or {}).get("holderIdentity") or ""


def identity_in(log: str) -> str | None:
    found = re.search(r"leading \(lease \S+, (\S+)\)", log)
    return found.group(1) if found else None


def intervals(log: str, end: float, frozen: float | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per seed namespace, the (start, end) of every operation in a controller log; one still running ends at
    ``end``. With ``frozen`` (when the process was stopped): an operation whose writes were refused once it ran
    again ("stopped") wrote last before ``frozen``; one that started after it wrote nothing and is left out. So
    does one the log leaves open: the process ended (lease lost) before the operation logged its end, and the
    fence (the renew deadline, past when it woke up) refused every write it tried meanwhile."""
    out: dict[str, list[tuple[float, float]]] = {}
    open_: dict[str, float] = {}
    for line in log.splitlines():
        found = LINE.match(line)
        if not found:
            continue
        stamp = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        ns, what = found.group(2), found.group(4)
        if what == "started":
            open_[ns] = stamp
        elif ns in open_:
            start = open_.pop(ns)
            if what == "stopped" and frozen is not None:
                if start > frozen:
                    continue
                stamp = frozen
            out.setdefault(ns, []).append((start, stamp))
    for ns, start in open_.items():
        if frozen is None:
            out.setdefault(ns, []).append((start, end))
        elif start <= frozen:
            out.setdefault(ns, []).append((start, frozen))
    return out


def assert_never_both(a: str, b: str, end: float, frozen: float | None = None) -> int:
    """No Extension reconciled by both processes at once; returns how many operations there were."""
    first, second = intervals(a, end, frozen), intervals(b, end)
    for ns in set(first) & set(second):
        for s1, e1 in first[ns]:
            for s2, e2 in second[ns]:
                assert e1 <= s2 or e2 <= s1, f"{ns}: reconciled by both at once: {(s1, e1)} and {(s2, e2)}"
    return sum(len(v) for v in first.values()) + sum(len(v) for v in second.values())


class Churn:
    """Keeps changing Extensions (a cache added and removed in turn) while a test runs."""

    def __init__(self, seeds: list[Seed]):
        self.seeds, self.stop, self.changes = seeds, threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(0.15):
            seed = self.seeds[self.changes % len(self.seeds)]
            extra = [{"upstream": f"x.{seed.name}.example"}] if self.changes // len(self.seeds) % 2 == 0 else []
            seed.set_caches({"upstream": f"a.{seed.name}.example"}, *extra)
            self.changes += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.fixture
def seeds(kube):
    made = [Seed(kube, uniq("le")) for _ in range(3)]
    for seed in made:
        seed.create({"upstream": f"a.{seed.name}.example"})
    yield made
    for seed in made:
        kube.delete("Extension", "registry-cache", seed.ns)


def converged(seeds):
    def done():
        for seed in seeds:
            ext = seed.ext()
            status = (ext or {}).get("status") or {}
            if (status.get("lastOperation") or {}).get("state") != "Succeeded" or \
                    status.get("observedGeneration") != ext["metadata"]["generation"]:
                return False
        return True
    return done


def test_the_other_takes_over_when_the_leader_is_killed(kube, control_plane, seeds, tmp_path):
    lease = uniq("lease")
    a = elector(control_plane, tmp_path / "a.log", lease).start()
    b = None
    try:
        wait_for("a leader", lambda: identity_in(a.log()), log=a.log)
        b = elector(control_plane, tmp_path / "b.log", lease).start()
        wait_for("all converged", converged(seeds), log=a.log)
        assert holder(kube, lease) == identity_in(a.log())
        time.sleep(2 * TIMING["retry"])
        assert identity_in(b.log()) is None and not LINE.search(b.log())  # the follower waits, does nothing

        with Churn(seeds) as churn:
            time.sleep(1.0)
            killed = time.monotonic()
            a.proc.send_signal(signal.SIGKILL)  # no release: the Lease must expire
            a.proc.wait(10)
            ended = time.time()
            wait_for("b to lead", lambda: identity_in(b.log()), timeout=3 * TIMING["lease"], interval=0.05,
                     log=b.log)
            took = time.monotonic() - killed
            time.sleep(1.5)
        assert holder(kube, lease) == identity_in(b.log())
        # the last renewal was at most a retry period before the kill; the follower looks every retry period
        assert took <= TIMING["lease"] + 2.5 * TIMING["retry"], took
        wait_for("all converged under b", converged(seeds), log=b.log)
        assert churn.changes > 10
        operations = assert_never_both(a.log(), b.log(), ended)
        assert operations > 10 and LINE.search(b.log())
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_frozen_leader_writes_nothing_once_its_lease_is_gone_and_ends(kube, control_plane, seeds, tmp_path):
    """SIGSTOP past the renew deadline: the other takes the Lease; woken up, the old leader's writes are refused
    before they are sent (fenced by its own renew deadline), and it ends, to come back as a follower."""
    lease = uniq("lease")
    a = elector(control_plane, tmp_path / "a.log", lease).start()
    b = None
    try:
        wait_for("a leader", lambda: identity_in(a.log()), log=a.log)
        b = elector(control_plane, tmp_path / "b.log", lease).start()
        wait_for("all converged", converged(seeds), log=a.log)
        with Churn(seeds):
            time.sleep(0.5)
            a.proc.send_signal(signal.SIGSTOP)
            frozen = time.time()
            wait_for("b to lead", lambda: identity_in(b.log()), timeout=3 * TIMING["lease"], log=b.log)
            time.sleep(1.0)
            a.proc.send_signal(signal.SIGCONT)
            assert a.wait_exit(3 * TIMING["lease"]) == 1, a.log()[-3000:]
        ended = time.time()
        assert "leader lease lost" in a.log()
        assert holder(kube, lease) == identity_in(b.log())
        wait_for("all converged under b", converged(seeds), log=b.log)
        # woken up, a finished nothing: every operation it carried on or started had its first write refused
        after = [line for line in a.log().splitlines() if (m := LINE.match(line)) and m.group(4) in (
            "succeeded", "failed") and dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() > frozen]
        assert after == [], after
        assert_never_both(a.log(), b.log(), ended, frozen)
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_clean_stop_releases_the_lease_and_the_other_takes_over_at_once(kube, control_plane, seeds, tmp_path):
    lease = uniq("lease")
    a = elector(control_plane, tmp_path / "a.log", lease).start()
    b = None
    try:
        wait_for("a leader", lambda: identity_in(a.log()), log=a.log)
        b = elector(control_plane, tmp_path / "b.log", lease).start()
        wait_for("all converged", converged(seeds), log=a.log)
        with Churn(seeds):
            time.sleep(0.5)
            stopped = time.monotonic()
            assert a.stop() == 0
            ended = time.time()
            wait_for("b to lead", lambda: identity_in(b.log()), timeout=3 * TIMING["lease"], interval=0.05,
                     log=b.log)
            took = time.monotonic() - stopped
        assert "released the leader lease" in a.log()
        assert took < TIMING["lease"], took  # released: no waiting for the lease to expire
        wait_for("all converged under b", converged(seeds), log=b.log)
        assert_never_both(a.log(), b.log(), ended)
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_stop_during_a_long_operation_renews_until_it_ends_then_releases(kube, control_plane, seeds, tmp_path):
    """SIGTERM while an operation runs past the renew deadline: the leader keeps renewing while it drains, the
    operation ends with its writes (none refused), then the Lease is released and the other replica takes over
    at once, well under the lease duration after the stop (before: renewing stopped at SIGTERM, the operation's
    writes were refused from the renew deadline on, the Lease was not released as no longer held, and the other
    replica waited for it to expire)."""
    lease, flag = uniq("lease"), tmp_path / "slow-once"
    timing = {"lease": 12.0, "renew": 3.0, "retry": 0.5}
    slow = 6.0  # past the renew deadline, well under the lease duration
    a = elector(control_plane, tmp_path / "a.log", lease, timing, slow_at=("after-services", slow, flag)).start()
    b = None
    try:
        wait_for("a leader", lambda: identity_in(a.log()), log=a.log)
        b = elector(control_plane, tmp_path / "b.log", lease, timing).start()
        wait_for("all converged", converged(seeds), log=a.log)
        flag.touch()
        seed = seeds[0]
        seed.set_caches({"upstream": f"a.{seed.name}.example"}, {"upstream": f"slow.{seed.name}.example"})
        wait_for("the slow operation", lambda: "slow_at: sleeping" in a.log(), log=a.log)
        stopped = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        wait_for("b to lead", lambda: identity_in(b.log()), timeout=3 * timing["lease"], interval=0.05, log=b.log)
        took = time.monotonic() - stopped
        assert a.wait_exit(30) == 0, a.log()[-3000:]
        after = a.log().split("slow_at: awake", 1)[1]
        assert re.search(rf"^\S+ \S+ INFO \S+: {seed.ns}/registry-cache: Reconcile succeeded", after, re.M), after
        assert "released the leader lease" in after
        assert slow - 1.0 <= took < timing["lease"] - 3.0, took  # released once drained, not expired
        wait_for("all converged under b", converged(seeds), log=b.log)
        assert_never_both(a.log(), b.log(), time.time())
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_follower_whose_read_is_slow_never_takes_a_lease_still_held(kube, control_plane, tmp_path):
    """b reads the Lease through a proxy that holds its request 4 s; a renews while it is held (so b's answer has
    a's new renewal) and then renews no more, as if cut off from the API server while it still writes elsewhere
    (it counts itself leader for the renew deadline after that renewal). b must date the record it read from when
    the answer came: dated from when it asked (before), b took the Lease 4 s after asking, while a still counted
    itself leader."""
    timing = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.5}
    lease = uniq("lease")
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    proxy = TcpProxy(server.hostname, server.port).start()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    proxied = tmp_path / "kubeconfig"
    proxied.write_text(yaml.safe_dump(config))
    a = LeaderElector(kube, LEASE_NS, lease, identity="a", **timing)
    b = LeaderElector(Kube.from_kubeconfig(str(proxied)), LEASE_NS, lease, identity="b", **timing)
    try:
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()  # b saw a's record (and keeps its connection through the proxy)
        proxy.delay = 4.0
        result: dict[str, bool] = {}
        asked = time.monotonic()
        reading = threading.Thread(target=lambda: result.setdefault("b", b.try_acquire_or_renew()))
        reading.start()
        time.sleep(2.5)
        assert a.try_acquire_or_renew()  # while b's read is held; a's last renewal
        renewed = time.monotonic()
        reading.join(15)
        answered = time.monotonic()
        proxy.delay = 0.0
        assert result == {"b": False}
        assert 4.0 <= answered - asked < 7.5, answered - asked  # one request held, once
        while not b.try_acquire_or_renew():
            time.sleep(0.05)
        took = time.monotonic()
        assert not a.leading(), (f"b took the Lease {took - asked:.1f}s after it asked, {took - renewed:.1f}s after "
                                 f"a renewed it, while a still counted itself leader")
        assert took - answered >= timing["lease_duration"], took - answered
    finally:
        proxy.cut()
        kube.delete("Lease", lease, LEASE_NS)


def _port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _handshake(port: int, ca_pem: str, hostname: str) -> bool:
    import socket
    import ssl
    context = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname):
            return True


def test_two_replicas_serve_the_webhooks_with_one_certificate_and_the_last_one_removes_them(kube, control_plane,
                                                                                              tmp_path):
    """Behind one Service both replicas (the follower too) answer with a certificate of the CA the configuration
    carries (kept in a Secret); a replica that stops while the other is a ready endpoint leaves the webhook
    registered (a rollout); the last one removes it."""
    import base64

    from extension.constants import WEBHOOK_CERT_SECRET, WEBHOOK_CONFIGURATION_NAME

    ns, service = uniq("rc-ha"), "registry-cache-webhook"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": ns},
                "spec": {"ports": [{"name": "webhooks", "port": 443, "targetPort": 9443}]}})

    def replica(name, port):
        return OperatorProcess(control_plane.kubeconfig, tmp_path / f"{name}.log", "--webhooks", "seed",
                               "--webhook-service", f"{ns}/{service}", "--webhook-address", "127.0.0.1",
                               "--webhook-port", str(port), "--leader-election", "--leader-election-lease-duration",
                               str(TIMING["lease"]), "--leader-election-renew-deadline", str(TIMING["renew"]),
                               "--leader-election-retry-period", str(TIMING["retry"]),
                               env={"POD_NAMESPACE": ns, "POD_NAME": name})

    def slice_of(*ready):
        kube.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"{service}-x", "namespace": ns,
                                 "labels": {"kubernetes.io/service-name": service}},
                    "addressType": "IPv4", "ports": [{"name": "webhooks", "port": 9443, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [f"10.9.0.{i + 1}"], "conditions": {"ready": name in ready},
                                   "targetRef": {"kind": "Pod", "name": name, "namespace": ns}}
                                  for i, name in enumerate(("a", "b"))]})

    ports = {"a": _port(), "b": _port()}
    a, b = replica("a", ports["a"]).start(), replica("b", ports["b"]).start()
    try:
        config = wait_for("the webhook registered", lambda: kube.get("MutatingWebhookConfiguration",
                                                                      WEBHOOK_CONFIGURATION_NAME), log=a.log)
        secret = kube.get("Secret", WEBHOOK_CERT_SECRET, ns)
        ca = base64.b64decode(secret["data"]["ca.crt"]).decode()
        assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]).decode() == ca
        leaders = wait_for("one leader", lambda: [n for n, p in (("a", a), ("b", b)) if identity_in(p.log())],
                           log=a.log)
        assert len(leaders) == 1
        for name, port in ports.items():  # leader and follower alike
            wait_for(f"{name} serving", lambda p=port: _listening(p), log=a.log)
            assert _handshake(port, ca, f"{service}.{ns}.svc"), name

        slice_of("a", "b")
        assert a.stop() == 0
        assert kube.get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME) is not None, a.log()[-2000:]
        assert "another replica serves the webhooks" in a.log()
        slice_of("b")
        assert b.stop() == 0
        assert kube.get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME) is None, b.log()[-2000:]
    finally:
        a.stop()
        b.stop()
        kube.delete("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME)
        kube.delete("Namespace", ns)


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
