"""containerd with exactly the rendered hosts.toml pulls a private image through the cache.

`ctr images pull --hosts-dir DIR` reads ``DIR/<upstream>/hosts.toml`` as containerd reads
``/etc/containerd/certs.d`` on a node. The client has no credentials: only the cache has them.

Proofs, as in Gardener's e2e and beyond:
- the blobs land in the cache's storage and every upstream request comes from the cache, none from
  containerd (it did not fall back);
- a second pull (fresh containerd root) is served by the cache with the upstream stopped;
- with the cache stopped containerd falls back to ``server``, the upstream itself. The upstream is private,
  so the fallback needs the client's own credentials (as a Pod's image pull Secret would give them):
  without them the upstream answers containerd 401, with ``ctr --user`` the pull succeeds from it.
- TLS: containerd trusts the cache through exactly the CA bundle file hosts.toml names; a bundle of another
  CA makes containerd give up on the cache (and fall back).
"""

from __future__ import annotations

import pytest

from extension.component.certs import generate_ca
from extension.component.containerd import render_hosts_toml
from extension.constants import DEFAULT_DIAL_TIMEOUT

from .dataplane import CACHE_AGENT, CONTAINERD_AGENT, describe
from .harness import credentials_from_secret, credentials_secret

USER, PASSWORD = "robot-e2e", "pw-e2e"


def _by(agent, requests):
    return [r for r in requests if agent.match(r.agent)]


def test_containerd_starts_cleanly(datapath, containerd):
    """containerd as root with its own config, root, state and socket: it answers, and no plugin failed
    (the ones this machine cannot use are disabled in the config)."""
    ctrd = datapath.containerd()
    version = ctrd.ctr("version")
    assert version.returncode == 0 and "Server:" in version.stdout, version.stderr
    assert ctrd.failed_plugins() == []
    assert ctrd.socket.is_socket()


@pytest.mark.parametrize("tls", [None, False], ids=["tls", "plain-http"])
def test_containerd_pulls_private_image_through_cache(datapath, containerd, tls):
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/app", "1.0", USER)
    creds = credentials_from_secret(credentials_secret("app-registry-v1", USER, PASSWORD), "app-registry")
    cache = datapath.cache(upstream, creds, tls=tls)

    hosts = datapath.hosts_dir(cache)  # the controller's chain: provider status -> registry entry -> hosts.toml
    hosts_toml = (hosts / upstream.host / "hosts.toml").read_text()
    # as the node agent writes it, dial_timeout included: containerd 1.6 ignores the key and pulls as before
    assert hosts_toml == render_hosts_toml(upstream.host, upstream.url, cache.endpoint, str(datapath.ca_bundle),
                                           dial_timeout=DEFAULT_DIAL_TIMEOUT)
    assert f'dial_timeout = "{DEFAULT_DIAL_TIMEOUT}"' in hosts_toml
    assert f'server = "{upstream.url}"' in hosts_toml
    assert f'[host."{cache.endpoint}"]' in hosts_toml
    if tls is False:
        assert cache.endpoint.startswith("http://") and "ca = " not in hosts_toml
    else:
        assert cache.endpoint.startswith("https://")
        assert f'ca = ["{datapath.ca_bundle}"]' in hosts_toml

    ref = image.ref(upstream.host)  # the image is named after the upstream, as a Pod names it

    # 1. Through the cache, no credentials on the client.
    ctrd = datapath.containerd()
    up_mark, cache_mark = upstream.access_log.mark(), cache.registry.access_log.mark()
    pulled = ctrd.pull(ref, hosts)
    assert pulled.ok, pulled.output
    assert ctrd.image_target(ref) == image.digest
    assert image.all_digests <= ctrd.content_digests()
    # the cache has the blobs: containerd did not fall back ...
    assert image.all_digests <= cache.registry.blob_digests()
    # ... and the upstream saw only the cache (authenticated: 200s), never containerd.
    up_requests = upstream.access_log.since(up_mark)
    assert not _by(CONTAINERD_AGENT, up_requests), describe(up_requests)
    assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
        {r.path for r in _by(CACHE_AGENT, up_requests) if r.status == 200}, describe(up_requests)
    served = _by(CONTAINERD_AGENT, cache.registry.access_log.since(cache_mark))
    assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
        {r.path for r in served if r.method == "GET" and r.status == 200}, describe(served)
    ctrd.stop()

    # 2. Upstream stopped, fresh containerd root: served from the cache alone.
    upstream.stop()
    ctrd = datapath.containerd()
    cache_mark = cache.registry.access_log.mark()
    pulled = ctrd.pull(ref, hosts)
    assert pulled.ok, pulled.output
    assert ctrd.image_target(ref) == image.digest
    served = _by(CONTAINERD_AGENT, cache.registry.access_log.since(cache_mark))
    assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
        {r.path for r in served if r.method == "GET" and r.status == 200}, describe(served)
    ctrd.stop()

    # 3. Cache stopped, upstream back: containerd falls back to `server`.
    cache.registry.stop()
    upstream.start()
    ctrd = datapath.containerd()
    up_mark = upstream.access_log.mark()
    refused = ctrd.pull(ref, hosts)
    assert not refused.ok, refused.output
    fallback = upstream.access_log.since(up_mark)
    assert [r for r in _by(CONTAINERD_AGENT, fallback) if "/manifests/" in r.path and r.status == 401], \
        describe(fallback)
    assert not [r for r in fallback if r.status < 300 and r.path != "/v2/"], describe(fallback)

    up_mark = upstream.access_log.mark()
    pulled = ctrd.pull(ref, hosts, user=f"{USER}:{PASSWORD}")
    assert pulled.ok, pulled.output
    assert ctrd.image_target(ref) == image.digest
    fallback = _by(CONTAINERD_AGENT, upstream.access_log.since(up_mark))
    assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
        {r.path for r in fallback if r.method == "GET" and r.status == 200}, describe(fallback)


def test_containerd_trusts_the_cache_only_through_the_ca_bundle(datapath, containerd, tmp_path):
    """The same TLS cache, hosts.toml naming a bundle of ANOTHER CA: containerd rejects the cache's
    certificate, tries the next host (the upstream, which wants credentials it does not have) and fails;
    the cache serves containerd nothing. With the right bundle (the test above) it pulls through the cache."""
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/app", "1.0", USER)
    creds = credentials_from_secret(credentials_secret("app-registry-v1", USER, PASSWORD), "app-registry")
    cache = datapath.cache(upstream, creds, tls=None)

    other = tmp_path / "other-ca-bundle.pem"
    other.write_text(generate_ca().cert_pem)
    hosts = datapath.hosts_dir(cache, ca_path=other)
    assert f'ca = ["{other}"]' in (hosts / upstream.host / "hosts.toml").read_text()

    ctrd = datapath.containerd()
    up_mark, cache_mark = upstream.access_log.mark(), cache.registry.access_log.mark()
    pulled = ctrd.pull(image.ref(upstream.host), hosts)
    assert not pulled.ok, pulled.output
    assert "certificate" in pulled.output, pulled.output
    # No HTTP request of containerd reached the cache: the TLS handshake failed (the cache says so) ...
    assert not _by(CONTAINERD_AGENT, cache.registry.access_log.since(cache_mark))
    assert "TLS handshake error" in cache.registry.app_log() and "bad certificate" in cache.registry.app_log()
    assert image.all_digests.isdisjoint(cache.registry.blob_digests())
    # ... containerd went on to `server` and was refused there.
    fallback = _by(CONTAINERD_AGENT, upstream.access_log.since(up_mark))
    assert fallback and all(r.status == 401 for r in fallback), describe(fallback)
