"""Failover when a cache is away, measured: containerd 2.x with the hosts.toml the node agent writes falls
back to the upstream within ``dial_timeout``; without it, every request first waits containerd's own dial
timeout (30 s) for the cache.

The cache is "away" the way that costs a dial timeout: its address drops every SYN (:mod:`.blackhole`, an
iptables DROP of this test's own for an address in 127.0.0.0/8), as when a node or Pod vanished. A cache
process that is merely stopped on a live host refuses the connection at once and costs nothing
(``test_containerd.py`` covers that fallback).

One run, three pulls of the same image, each by a fresh containerd 2.x (own root: nothing cached), with the
client's own credentials (the upstream is private, as a Pod's pull Secret would give them):

- ``direct``: hosts.toml with only ``server`` (the upstream): the baseline;
- ``dial_timeout``: the node agent's hosts.toml (default ``dial_timeout``) naming the blackholed cache;
- ``none``: the same without ``dial_timeout`` (what Gardener's gardener-node-agent writes).

The figures are printed in pytest's summary ("data-path e2e"). Debian's containerd 1.6 gets the same file:
it ignores the key (no error, and still waits its 30 s: shown with ctr's own deadline).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from api.duration import SECOND, parse_duration
from extension.component.containerd import hosts_toml_for_status
from extension.component.objects import provider_status
from extension.constants import DEFAULT_DIAL_TIMEOUT

from .blackhole import Blackhole, BlackholeUnavailable
from .dataplane import CONTAINERD_AGENT, describe, write_hosts_dir
from .figures import report
from .harness import CA_SECRET_NAME

USER, PASSWORD = "robot-failover", "pw-failover"
# What the fallback may add with the default dial_timeout (the target).
MAX_FALLBACK_SECONDS = 1.0
# containerd's own dial timeout without the key (docker.DefaultHTTPTransport: 30 s); at least one request
# must have waited most of it.
CONTAINERD_DEFAULT_DIAL_SECONDS = 30


@pytest.fixture
def blackhole():
    try:
        hole = Blackhole()
    except BlackholeUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield hole
    finally:
        hole.close()


def _hosts(datapath, name: str, upstream, endpoint: str | None, dial_timeout: str | None) -> Path:
    d = datapath.workdir / f"hosts-{name}"
    if endpoint is None:
        write_hosts_dir(d, {upstream.host: f'server = "{upstream.url}"\n'})
    else:
        status = provider_status([(upstream.host, endpoint, upstream.url)], CA_SECRET_NAME)
        write_hosts_dir(d, hosts_toml_for_status(status, ca_path=str(datapath.ca_bundle), dial_timeout=dial_timeout))
    return d


def test_fallback_from_a_blackholed_cache_takes_dial_timeout_not_minutes(datapath, containerd2, blackhole):
    assert blackhole.connect_seconds(timeout=1.0) is None, "the blackholed address answered a connect()"
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/app", "1.0", USER)
    ref = image.ref(upstream.host)
    hosts = {"direct": _hosts(datapath, "direct", upstream, None, None),
             "dial_timeout": _hosts(datapath, "dial", upstream, blackhole.url, DEFAULT_DIAL_TIMEOUT),
             "none": _hosts(datapath, "none", upstream, blackhole.url, None)}
    assert f'dial_timeout = "{DEFAULT_DIAL_TIMEOUT}"' in (hosts["dial_timeout"] / upstream.host / "hosts.toml").read_text()
    assert "dial_timeout" not in (hosts["none"] / upstream.host / "hosts.toml").read_text()

    seconds: dict[str, float] = {}
    version = ""
    for name, hosts_dir in hosts.items():
        ctrd = datapath.containerd(containerd2)
        version = version or ctrd.ctr("version").stdout.split("Server:")[-1].split("Version:")[1].split()[0]
        mark = upstream.access_log.mark()
        t0 = time.monotonic()
        pulled = ctrd.pull(ref, hosts_dir, user=f"{USER}:{PASSWORD}", timeout=600)
        seconds[name] = time.monotonic() - t0
        assert pulled.ok, f"{name}: {pulled.output}\n{ctrd.log_tail()}"
        assert ctrd.image_target(ref) == image.digest
        # every blob came from the upstream, fetched by containerd itself: it fell back
        served = [r for r in upstream.access_log.since(mark) if CONTAINERD_AGENT.match(r.agent)]
        assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
            {r.path for r in served if r.method == "GET" and r.status == 200}, describe(served)
        ctrd.stop()

    with_timeout = seconds["dial_timeout"] - seconds["direct"]
    without = seconds["none"] - seconds["direct"]
    report(f"failover, containerd {version}, cache blackholed (SYNs dropped): pull direct from the upstream "
           f"{seconds['direct']:.2f}s; with dial_timeout={DEFAULT_DIAL_TIMEOUT} {seconds['dial_timeout']:.2f}s "
           f"(fallback +{with_timeout:.2f}s); without dial_timeout {seconds['none']:.2f}s (fallback +{without:.2f}s)")
    assert with_timeout <= MAX_FALLBACK_SECONDS, seconds
    assert without >= CONTAINERD_DEFAULT_DIAL_SECONDS - 5, seconds
    # each request of the pull tried the cache first: about dial_timeout per request, not more
    assert seconds["dial_timeout"] >= parse_duration(DEFAULT_DIAL_TIMEOUT) / SECOND


def test_containerd_16_ignores_dial_timeout(datapath, containerd, blackhole):
    """Debian's containerd 1.6 reads the same hosts.toml without complaint but does not apply the key: with
    the cache blackholed it is still waiting for its 30 s dial when ctr's own 10 s deadline ends the pull.
    (With a cache that answers, or one that refuses, it pulls as before: test_containerd.py, whose hosts.toml
    carries the key too.)"""
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/app", "1.0", USER)
    hosts = _hosts(datapath, "dial", upstream, blackhole.url, DEFAULT_DIAL_TIMEOUT)
    ctrd = datapath.containerd()
    mark = upstream.access_log.mark()
    t0 = time.monotonic()
    pulled = ctrd.pull(image.ref(upstream.host), hosts, user=f"{USER}:{PASSWORD}", deadline="10s")
    elapsed = time.monotonic() - t0
    # ctr's deadline ended the dial to the cache after 10 s, not 100 ms (Go reports it as the dial's i/o timeout
    # or as the context's deadline, depending on which it notices first)
    assert not pulled.ok and ("i/o timeout" in pulled.output or "deadline exceeded" in pulled.output), \
        pulled.output
    assert elapsed >= 9.5, elapsed
    # it never reached the upstream: still dialing the cache
    assert not [r for r in upstream.access_log.since(mark) if CONTAINERD_AGENT.match(r.agent)]
    assert "dial_timeout" not in ctrd.log_tail(200)  # no complaint about the key
    report(f"containerd {containerd.split()[2] if len(containerd.split()) > 2 else containerd}: dial_timeout "
           f"ignored (no error); a pull with the cache blackholed was still dialing the cache after {elapsed:.1f}s")
