"""The cache as the controller configures it pulls through a private upstream (distribution 3, htpasswd).

The client here is crane without any credentials; what the cache did is read from the upstream's access
log (every request, its status and who sent it) and from the cache's storage directory.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
import yaml

from extension.component.objects import render_config_yml

from .dataplane import CACHE_AGENT, CRANE_AGENT, E2EError, describe
from .harness import credentials_from_secret, credentials_secret
from .tokenauth import TokenUpstream

USER, PASSWORD = "robot-e2e", "s3cret: with 'quotes' \"and\" # yaml"  # the password must survive the YAML


@pytest.mark.parametrize("tls", [None, False], ids=["tls-default-on", "tls-off"])
def test_cache_pulls_through_credentialed_upstream(datapath, tls):
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/hello", "v1", USER)
    creds = credentials_from_secret(credentials_secret("upstream-credentials-v1", USER, PASSWORD),
                                    "upstream-credentials")

    # The upstream is really private: crane without credentials is turned away.
    mark = upstream.access_log.mark()
    anonymous = datapath.crane.run("manifest", image.ref(upstream.host), check=False)
    assert anonymous.returncode != 0
    assert [r.status for r in upstream.access_log.since(mark) if "/manifests/" in r.path] == [401]

    cache = datapath.cache(upstream, creds, tls=tls)
    # distribution runs with exactly the file render_config_yml produced (paths/ports only via env).
    assert cache.registry.config_path.read_bytes() == render_config_yml(cache.model).encode("utf-8")
    assert cache.registry.scheme == ("http" if tls is False else "https")
    assert image.all_digests.isdisjoint(cache.registry.blob_digests())

    mark = upstream.access_log.mark()
    ref = image.ref(cache.registry.host)
    assert datapath.crane.run("digest", ref, ca_file=datapath.ca_bundle).stdout.strip() == image.digest
    datapath.crane.run("pull", ref, str(datapath.workdir / "pulled.tar"), ca_file=datapath.ca_bundle)

    # The cache stored manifest, config and layer ...
    assert image.all_digests <= cache.registry.blob_digests()
    # ... fetched from the upstream with its credentials: challenged once (401 on /v2/), then 200 for the
    # manifest and for every blob, every request sent by the cache and not by the client.
    requests = upstream.access_log.since(mark)
    assert requests and all(CACHE_AGENT.match(r.agent) for r in requests), describe(requests)
    ok = {r.path for r in requests if r.method == "GET" and r.status == 200}
    assert f"/v2/{image.repository}/manifests/{image.tag}" in ok or \
        f"/v2/{image.repository}/manifests/{image.digest}" in ok, describe(requests)
    assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= ok, describe(requests)
    assert [r.path for r in requests if r.status == 401] and \
        all(r.path == "/v2/" for r in requests if r.status == 401), describe(requests)

    # A second pull is served from the cache's storage: no blob is fetched from the upstream again.
    mark = upstream.access_log.mark()
    datapath.crane.run("pull", ref, str(datapath.workdir / "pulled-again.tar"), ca_file=datapath.ca_bundle)
    again = upstream.access_log.since(mark)
    assert not [r for r in again if "/blobs/" in r.path], describe(again)
    served = [r for r in cache.registry.access_log.since() if CRANE_AGENT.match(r.agent) and "/blobs/" in r.path]
    assert len(served) == 2 * len(image.blobs) and all(r.status == 200 for r in served), describe(served)


def test_cache_without_credentials_is_refused_by_the_upstream(datapath):
    """No credentials in the config: the upstream answers the cache with a 401 basic challenge, and
    distribution's proxy, having nothing to answer it with, does not even send the manifest request
    (its basic handler fails the request client-side); the client gets 404 "manifest unknown"."""
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/hello", "v1", USER)

    cache = datapath.cache(upstream, None, tls=False)
    assert cache.registry.config_path.read_bytes() == render_config_yml(cache.model).encode("utf-8")
    assert "username" not in cache.config_text and "password" not in cache.config_text

    mark = upstream.access_log.mark()
    res = datapath.crane.run("manifest", image.ref(cache.registry.host), check=False)
    assert res.returncode != 0, res.stdout
    assert "MANIFEST_UNKNOWN" in res.stderr, res.stderr

    # The upstream refused the cache (401 on the challenge request) and served it nothing.
    requests = upstream.access_log.since(mark)
    assert all(CACHE_AGENT.match(r.agent) for r in requests), describe(requests)
    assert [r for r in requests if r.status == 401], describe(requests)
    assert not [r for r in requests if r.status < 400], describe(requests)
    assert not [r for r in requests if "/manifests/" in r.path or "/blobs/" in r.path], describe(requests)
    assert image.all_digests.isdisjoint(cache.registry.blob_digests())
    # What the client saw from the cache: 404 for the manifest.
    seen = [r for r in cache.registry.access_log.since() if CRANE_AGENT.match(r.agent) and "/manifests/" in r.path]
    assert seen and all(r.status == 404 for r in seen), describe(seen)


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
def test_cache_starts_and_serves_while_its_upstream_is_away(datapath, private):
    """distribution (3.0 and 3.1 alike) in proxy mode asks the upstream for its token realm (``GET
    <remoteurl>/v2/``) at start and panics when that fails, unless ``proxy.exec`` names a credential helper. The
    rendered config of every cache does (a helper answering with the credentials beside it, or none): the cache,
    restarted while its upstream is away, starts and serves what it holds; a manifest by tag and every blob,
    from its storage. Private: the upstream wants basic auth, the helper's credentials get the image first."""
    upstream = datapath.upstream({USER: PASSWORD} if private else {})
    image = datapath.push(upstream, "team/hello", "v1", USER if private else None)
    creds = credentials_from_secret(credentials_secret("upstream-credentials-v1", USER, PASSWORD),
                                    "upstream-credentials") if private else None
    cache = datapath.cache(upstream, creds, tls=False)
    assert "exec:" in cache.config_text and "username" not in cache.config_text and PASSWORD not in cache.config_text
    ref = image.ref(cache.registry.host)
    datapath.crane.run("pull", ref, str(datapath.workdir / "warm.tar"))  # now the cache holds it
    assert image.all_digests <= cache.registry.blob_digests()
    if private:  # the upstream refuses anyone without credentials: it served the cache, so the helper's worked
        assert [r for r in upstream.access_log.since() if CACHE_AGENT.match(r.agent) and r.status == 200
                and "/blobs/" in r.path], describe(upstream.access_log.since())

    cache.registry.stop()
    upstream.stop()
    cache.registry.start(timeout=15)  # would raise: "exited" with distribution's panic
    mark = cache.registry.access_log.mark()
    assert datapath.crane.run("digest", ref).stdout.strip() == image.digest
    datapath.crane.run("pull", ref, str(datapath.workdir / "during-outage.tar"))
    served = [r for r in cache.registry.access_log.since(mark) if CRANE_AGENT.match(r.agent)]
    assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
        {r.path for r in served if r.status == 200}, describe(served)
    assert "panic" not in cache.registry.app_log()


def test_cache_without_credentials_pulls_anonymously_from_a_token_auth_upstream(datapath, tools, tmp_path):
    """As from docker.io, which wants a bearer token even for a public image and hands one out without
    credentials: distribution asks the rendered credential helper (``proxy.exec``), which answers with none,
    gets an anonymous token and pulls through; the token server saw no credentials."""
    # crane pushes to no token realm on a private address: the image is pushed to a registry without auth,
    # whose storage the token-auth upstream then serves
    plain = datapath.upstream({})
    image = datapath.push(plain, "library/hello", "v1", None)
    plain.stop()
    upstream = TokenUpstream(tools.registry, tmp_path / "token-upstream", "robot", uuid.uuid4().hex,
                             anonymous_pull=True)
    shutil.copytree(plain.storage, upstream.workdir / "data")
    upstream.start()
    try:
        cache = datapath.cache(upstream, None, tls=False)
        assert "exec:" in cache.config_text
        ref = image.ref(cache.registry.host)
        assert datapath.crane.run("digest", ref).stdout.strip() == image.digest
        datapath.crane.run("pull", ref, str(datapath.workdir / "anonymous.tar"))
        assert image.all_digests <= cache.registry.blob_digests()
        tokens = (upstream.workdir / "token-server.err").read_text(errors="replace")
        assert 'anonymous token: [{"type": "repository", "name": "library/hello", "actions": ["pull"]}]' in tokens
    finally:
        upstream.stop()


def test_with_username_and_password_distribution_does_not_start_while_its_upstream_is_unreachable(datapath):
    """Why every cache gets the credential helper: the same cache with ``proxy.username/password`` instead, as
    Gardener renders a cache with credentials, asks its upstream at start and panics while the upstream is
    unreachable (its Pod would crash-loop until the upstream answers). When this test fails, a new distribution
    starts without its upstream."""
    upstream = datapath.upstream({USER: PASSWORD})
    creds = credentials_from_secret(credentials_secret("upstream-credentials-v1", USER, PASSWORD),
                                    "upstream-credentials")
    cache = datapath.cache(upstream, creds, tls=False)  # starts while the upstream answers
    cache.registry.stop()
    config = yaml.safe_load(cache.config_text)
    config["proxy"] = {"remoteurl": config["proxy"]["remoteurl"], "username": USER, "password": PASSWORD}
    cache.registry.config_text = yaml.safe_dump(config)
    cache.registry.extra_env.pop("REGISTRY_PROXY_EXEC_COMMAND")
    assert cache.registry.start(timeout=15)  # with the upstream there, it starts
    cache.registry.stop()
    upstream.stop()

    with pytest.raises(E2EError) as failed:
        cache.registry.start(timeout=15)
    log = cache.registry.app_log()
    assert "exited" in str(failed.value), failed.value
    assert f'panic: Get "{upstream.url}/v2/"' in log and "connection refused" in log, log[-2000:]
