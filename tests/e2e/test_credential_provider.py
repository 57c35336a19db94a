"""Short-lived upstream credentials on the data path: a cache rendered for a credential provider Secret runs the
tests' real plugin (hack/go/test-credential-provider, a static Go program, copied where the init container puts
it) from its rendered helper under busybox, against an upstream whose tokens live ``VALIDITY`` seconds and are
refused after (tests/e2e/shortlived.py, ECR's shape: the token is the basic-auth password of every request).

- Through several expiries the cache keeps pulling fresh images: no failed pull, the same process (no restart),
  its config files unchanged, no request refused for an expired or wrong token.
- The reference swapped to a Secret with another identity (the old one revoked at the token endpoint) rolls the
  cache (a new config Secret) and pulls go on.
- A missing plugin, a plugin that exits non-zero and a token endpoint that is down are each named in the cache's
  log (the lines the controller reads), and a cache still serves what it holds meanwhile.
- No token, no identity secret appears in any log; the helper's files are the cache user's alone.
"""

from __future__ import annotations

import json
import re
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from api.credential_provider import CredentialProvider
from extension.component.objects import config_files, render_config_yml, unique_name
from extension.constants import CREDENTIAL_PROVIDER_LIFETIME_SECONDS, CREDENTIAL_PROVIDER_LOG_COMPONENT

from .dataplane import CACHE_AGENT, Image
from .figures import report
from .harness import Cache, DataPath, auth_from_secret
from .shortlived import ShortLivedUpstream, build_plugin, provider_secret

VALIDITY = 20.0  # seconds a token lives (60 in the cluster scenario; shorter here to see several expiries)
EXPIRIES = 4
REFERENCE = "short-lived"
IDENTITY_A = ("robot-a", "a-" + uuid.uuid4().hex)
IDENTITY_B = ("robot-b", "b-" + uuid.uuid4().hex)


@pytest.fixture(scope="session")
def plugin(tools) -> Path:
    try:
        return build_plugin()
    except RuntimeError as exc:
        if "no Go toolchain found" in str(exc):
            pytest.skip(f"the tests' credential provider plugin is not built and there is no Go toolchain: {exc}")
        raise


@pytest.fixture
def short_lived(datapath, tmp_path):
    made: list[ShortLivedUpstream] = []

    def make(validity: float = VALIDITY, identity: tuple[str, str] = IDENTITY_A) -> ShortLivedUpstream:
        up = ShortLivedUpstream(datapath.tools.registry, tmp_path / f"short-lived-{len(made)}", validity,
                                {identity[0]: identity[1]})
        made.append(up)
        return up.start()

    yield make
    for up in made:
        up.stop()


def push(datapath: DataPath, up: ShortLivedUpstream, repository: str) -> Image:
    """A fresh image, uploaded behind the front (the only way in for a push, as ECR's upload API is)."""
    return datapath.crane.push_test_image(up.backend, repository, uuid.uuid4().hex[:10], None)


def plugin_cache(datapath: DataPath, up: ShortLivedUpstream, plugin: Path | None, identity: tuple[str, str],
                 version: int = 1, workdir: Path | None = None) -> Cache:
    manifest = provider_secret(f"short-lived-v{version}", up.token_endpoint, *identity)
    auth = auth_from_secret(manifest, up.host, REFERENCE)
    assert isinstance(auth, CredentialProvider)
    return datapath.cache(up, auth, tls=False, secret_reference=REFERENCE, plugin=plugin, workdir=workdir)


def helper_lines(cache: Cache, since: int = 0) -> list[dict[str, str]]:
    """The helper's logfmt lines in the cache's log (its stderr), as the controller reads them."""
    out = []
    for line in cache.registry.app_log()[since:].splitlines():
        if f"component={CREDENTIAL_PROVIDER_LOG_COMPONENT}" in line:
            out.append(dict(m.group(1, 2) if m.group(2) is not None else (m.group(1), m.group(3))
                            for m in re.finditer(r'(\w+)=(?:"([^"]*)"|(\S+))', line)))
    return out


def kept_token(cache: Cache) -> str | None:
    """The token the helper holds now (its state file: what the test checks never leaks)."""
    assert cache.plugin_state is not None
    answer = cache.plugin_state / "answer"
    if not answer.exists():
        return None
    found = re.search(r'"Secret":"([^"]+)"', answer.read_text())
    return found.group(1) if found else None


def assert_nothing_leaks(paths: list[Path], secrets: set[str]) -> None:
    """No log, no file a test left (but the helper's own state) holds a token or the identity secret."""
    assert secrets
    for path in paths:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a credential in {path}"


def assert_private_state(cache: Cache) -> None:
    assert cache.plugin_state is not None
    for path in cache.plugin_state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is readable by others"


def test_a_cache_with_a_plugin_pulls_through_expiring_tokens(datapath, plugin, short_lived):
    up = short_lived()
    cache = plugin_cache(datapath, up, plugin, IDENTITY_A)
    assert cache.registry.config_path.read_bytes() == render_config_yml(cache.model, provider=True).encode()
    pid = cache.registry.process.proc.pid if cache.registry.process and cache.registry.process.proc else None
    rendered = {p.name: p.read_bytes() for p in cache.registry.workdir.iterdir()
                if p.name in config_files(cache.model, cache.credentials)}
    started = time.time()
    pulls: list[tuple[float, float, bool, str]] = []  # (started, seconds, ok, ref)
    tokens: set[str] = set()
    while time.time() - started < (EXPIRIES + 0.5) * VALIDITY:
        image = push(datapath, up, "team/app")
        ref = image.ref(cache.registry.host)
        t0, m0 = time.time(), time.monotonic()
        done = datapath.crane.run("pull", ref, str(datapath.workdir / "pulled.tar"), check=False)
        pulls.append((t0, time.monotonic() - m0, done.returncode == 0 and image.all_digests <=
                      cache.registry.blob_digests(), ref))
        token = kept_token(cache)
        if token:
            tokens.add(token)
        time.sleep(0.5)
    ended = time.time()

    failed = [ref for _, _, ok, ref in pulls if not ok]
    longest = max(seconds for _, seconds, _, _ in pulls)
    assert not failed, f"{len(failed)} of {len(pulls)} pulls failed: {failed[:3]}\n{up.logs()}\n{cache.registry.log_tail()}"
    # the same cache process all along, its configuration untouched: renewing a token rolls nothing
    assert cache.registry.running and cache.registry.process and cache.registry.process.proc
    assert cache.registry.process.proc.pid == pid
    assert {p.name: p.read_bytes() for p in cache.registry.workdir.iterdir() if p.name in rendered} == rendered

    by_cache = [r for r in up.requests(started) if CACHE_AGENT.match(r.agent)]
    refused = [r for r in by_cache if r.status == 401]
    # distribution's first look at /v2/ asks for the challenge without credentials; nothing else is ever refused
    assert all(r.path == "/v2/" and r.refused == "missing" for r in refused), refused
    accepted = [r for r in by_cache if r.status < 400]
    assert accepted and not [r for r in up.requests(started) if not CACHE_AGENT.match(r.agent)]  # all via the cache
    issued = {t["jti"]: t["expiresAt"] for t in up.issued()}
    used = {r.jti for r in accepted}
    # the tokens the cache used that expired while pulls went on: before the last pull started (one that expires
    # during the last pull or the pause after it has no pull after it to show anything)
    last = max(t for t, _, _, _ in pulls)
    expired = sorted(issued[j] for j in used if j in issued and issued[j] < last)
    assert len(expired) >= EXPIRIES, f"only {len(expired)} tokens the cache used expired during the test"
    for expiry in expired:  # and pulls went on after each of them
        assert [t for t, _, ok, _ in pulls if t > expiry and ok], f"no pull after the expiry at {expiry}"
    # renewed well before expiry: a token is used until at most cacheDuration (half its life) plus distribution's
    # few seconds, so it always has more than a quarter of its life left when it is sent
    least = min(r.left for r in accepted)
    assert least > VALIDITY / 2 - CREDENTIAL_PROVIDER_LIFETIME_SECONDS - 1, least
    # the plugin ran for renewals, not per request (the helper keeps its answer)
    assert len(issued) < len(accepted) / 2, (len(issued), len(accepted))
    lines = helper_lines(cache)
    assert {x["event"] for x in lines} <= {"renewed", "cached"} and \
        sum(x["event"] == "renewed" for x in lines) == len(issued), lines

    assert_private_state(cache)
    assert_nothing_leaks([cache.registry.workdir / "registry.log", cache.registry.access_log.path, up.front_log,
                          up.token_log, up.workdir / "front.err", up.workdir / "tokens.err"],
                         tokens | {IDENTITY_A[1]})
    report(f"plugin cache, tokens valid {VALIDITY:.0f}s: {len(pulls)} pulls over {ended - started:.0f}s "
           f"({(ended - started) / VALIDITY:.1f} token lifetimes; {len(expired)} tokens the cache used expired "
           f"meanwhile), {len(failed)} failed, longest pull {longest:.2f}s, cache restarts 0; {len(issued)} tokens "
           f"issued for {len(accepted)} upstream requests, least token life left when sent {least:.1f}s")


def test_the_reference_swapped_to_another_identity(datapath, plugin, short_lived):
    """Rotation as a user does it: Secret v2 with a new identity, the reference pointed at it, the old identity
    revoked. Until the cache rolls, the old one keeps its token until it expires, then its plugin is refused and
    says so; the rolled cache (a new config Secret, the same volume) pulls with the new identity and still serves
    what it stored before."""
    up = short_lived(validity=12.0)
    old = plugin_cache(datapath, up, plugin, IDENTITY_A)
    before = push(datapath, up, "team/before")
    datapath.crane.run("pull", before.ref(old.registry.host), str(datapath.workdir / "before.tar"))
    secrets = {IDENTITY_A[1], IDENTITY_B[1]}
    token = kept_token(old)
    assert token
    secrets.add(token)

    up.rotate_identity(*IDENTITY_B)  # v1's identity revoked at the token endpoint
    mark = len(old.registry.app_log())
    time.sleep(12.0)  # every token of identity A has expired
    refused = push(datapath, up, "team/refused")
    assert datapath.crane.run("pull", refused.ref(old.registry.host), str(datapath.workdir / "r.tar"),
                              check=False).returncode != 0
    failures = [x for x in helper_lines(old, mark) if x["event"] == "failed"]
    assert failures and failures[0]["reason"] == "PluginFailed" and "answered 401" in failures[0]["msg"], failures

    v1 = config_files(old.model, old.credentials)
    old.registry.stop()
    new = plugin_cache(datapath, up, plugin, IDENTITY_B, version=2, workdir=old.registry.workdir)
    v2 = config_files(new.model, new.credentials)
    # only the plugin's environment changed, so the config Secret gets a new name and the StatefulSet rolls
    assert [k for k in v1 if v1[k] != v2[k]] == ["credential-provider.conf"]
    assert unique_name("registry-config", v1) != unique_name("registry-config", v2)
    after = push(datapath, up, "team/after")
    datapath.crane.run("pull", after.ref(new.registry.host), str(datapath.workdir / "after.tar"))
    assert after.all_digests <= new.registry.blob_digests()
    datapath.crane.run("pull", before.ref(new.registry.host), str(datapath.workdir / "before-again.tar"))
    token = kept_token(new)
    assert token
    secrets.add(token)
    assert up.refused_identities() >= 1
    assert_private_state(new)
    assert_nothing_leaks([new.registry.workdir / "registry.log", new.registry.access_log.path, up.front_log,
                          up.token_log], secrets)


def test_plugin_failures_are_named_in_the_cache_log(datapath, plugin, short_lived):
    """The plugin missing (the init container copied nothing), exiting non-zero (an identity the token endpoint
    does not know), and the token endpoint down: each a failed line with its reason in the cache's log, and
    distribution's own error names the helper's message; no pull gets a new image then, and what the cache holds
    it still serves. Once the endpoint is back, pulls go on."""
    up = short_lived(validity=12.0)
    image = push(datapath, up, "team/app")

    missing = plugin_cache(datapath, up, None, IDENTITY_A)
    assert datapath.crane.run("pull", image.ref(missing.registry.host), str(datapath.workdir / "m.tar"),
                              check=False).returncode != 0
    [gone] = [x for x in helper_lines(missing) if x["event"] == "failed"][:1]
    assert (gone["level"], gone["reason"]) == ("error", "PluginMissing") and "is not there" in gone["msg"], gone
    assert "failed to run command" in missing.registry.app_log()
    missing.registry.stop()

    wrong = plugin_cache(datapath, up, plugin, ("robot-a", "not-the-secret"))
    assert datapath.crane.run("pull", image.ref(wrong.registry.host), str(datapath.workdir / "w.tar"),
                              check=False).returncode != 0
    [line] = [x for x in helper_lines(wrong) if x["event"] == "failed"][:1]
    assert line["reason"] == "PluginFailed" and line["msg"].startswith("the plugin exited with status 1: "
                                                                       "test-credential-provider: getting a token"), line
    wrong.registry.stop()

    cache = plugin_cache(datapath, up, plugin, IDENTITY_A)
    datapath.crane.run("pull", image.ref(cache.registry.host), str(datapath.workdir / "ok.tar"))
    up.stop_tokens()
    time.sleep(CREDENTIAL_PROVIDER_LIFETIME_SECONDS + 1)  # tokens of 12 s are kept 5 s: none usable now
    mark = len(cache.registry.app_log())
    fresh = push(datapath, up, "team/during-outage")
    assert datapath.crane.run("pull", fresh.ref(cache.registry.host), str(datapath.workdir / "o.tar"),
                              check=False).returncode != 0
    down = [x for x in helper_lines(cache, mark) if x["event"] == "failed"]
    assert down and down[0]["reason"] == "PluginFailed" and "connection refused" in down[0]["msg"], down
    datapath.crane.run("pull", image.ref(cache.registry.host), str(datapath.workdir / "held.tar"))  # it serves
    up.start_tokens()
    mark = len(cache.registry.app_log())
    datapath.crane.run("pull", fresh.ref(cache.registry.host), str(datapath.workdir / "back.tar"))
    assert [x["event"] for x in helper_lines(cache, mark)][:1] == ["renewed"]
    report("plugin failures in the cache's log: " + "; ".join(
        f"{x['reason']}: {x['msg']}" for x in (gone, line, down[0])))


def _pull_at_once(datapath: DataPath, ref: str, n: int, tag: str) -> list[Path]:
    """``n`` crane pulls of ``ref`` (OCI layouts) started at the same moment; every one must succeed."""
    barrier = threading.Barrier(n)
    out = [datapath.workdir / f"pull-{tag}-{i}" for i in range(n)]
    errors: list[str] = []

    def pull(i: int) -> None:
        barrier.wait()
        done = datapath.crane.run("pull", "--format", "oci", ref, str(out[i]), ca_file=datapath.ca_bundle,
                                  check=False, timeout=300)
        if done.returncode != 0:
            errors.append(done.stderr)

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    return out


def test_a_plugin_cache_behind_the_coalescing_front(datapath, plugin, short_lived):
    """A plugin cache as its Pod runs with `run --front-image`, TLS on (the default): the front serves the cache's
    port with its certificate, distribution (from the config.yml rendered for that Pod: loopback, no TLS, the
    plugin's helper with its lifetime) behind it. Concurrent pulls of a fresh image make one upstream fetch per
    blob, sent with the plugin's token; fresh pulls go on through token expiries with no failure; no token or
    identity in any log, the front's included."""
    up = short_lived(validity=12.0)
    auth = auth_from_secret(provider_secret("short-lived-v1", up.token_endpoint, *IDENTITY_A), up.host, REFERENCE)
    assert isinstance(auth, CredentialProvider)
    cache = datapath.cache(up, auth, tls=None, secret_reference=REFERENCE, plugin=plugin, front=True)
    assert cache.front is not None and cache.front.tls
    assert cache.config_text == render_config_yml(cache.model, front=True, provider=True)
    assert cache.registry.config_path.read_bytes() == cache.config_text.encode()

    # concurrent cold pulls: one upstream GET per blob, each with a valid token
    started = time.time()
    image = datapath.crane.push_random_image(up.backend, "team/big", uuid.uuid4().hex[:10], layers=3, layer_mib=8)
    front_mark = cache.front.mark()
    for layout in _pull_at_once(datapath, image.ref(cache.host), 3, "cold"):
        index = json.loads((layout / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [image.digest]
        assert {f"sha256:{f.name}" for f in (layout / "blobs" / "sha256").iterdir()} >= image.all_digests
    by_cache = [r for r in up.requests(started) if CACHE_AGENT.match(r.agent)]
    blob_gets = [r for r in by_cache if r.method == "GET" and "/blobs/" in r.path]
    assert sorted(r.path.rsplit("/", 1)[1] for r in blob_gets) == sorted(image.blobs), blob_gets
    assert all(r.status == 200 and r.jti for r in blob_gets), blob_gets
    roles = [a for a in cache.front.access(front_mark) if "/blobs/" in a["path"] and a["method"] == "GET"]
    for digest in image.blobs:
        mine = sorted(a["role"] for a in roles if a["path"].endswith(digest))
        assert mine.count("fetch") == 1 and len(mine) == 3, (digest, mine)

    # fresh pulls through the front while tokens expire
    pulls: list[tuple[float, bool, str]] = []
    tokens: set[str] = set()
    while time.time() - started < 2.5 * up.validity:
        fresh = push(datapath, up, "team/app")
        t0 = time.time()
        done = datapath.crane.run("pull", fresh.ref(cache.host), str(datapath.workdir / "pulled.tar"),
                                  ca_file=datapath.ca_bundle, check=False)
        pulls.append((t0, done.returncode == 0 and fresh.all_digests <= cache.registry.blob_digests(),
                      fresh.ref(cache.host)))
        if token := kept_token(cache):
            tokens.add(token)
        time.sleep(0.5)
    ended = time.time()
    failed = [ref for _, ok, ref in pulls if not ok]
    assert not failed, f"{len(failed)} of {len(pulls)} pulls failed: {failed[:3]}\n{up.logs()}\n" \
                       f"{cache.registry.log_tail()}\n{cache.front.log_tail()}"
    by_cache = [r for r in up.requests(started) if CACHE_AGENT.match(r.agent)]
    assert all(r.path == "/v2/" and r.refused == "missing" for r in by_cache if r.status == 401), by_cache
    issued = {t["jti"]: t["expiresAt"] for t in up.issued()}
    last = max(t for t, _, _ in pulls)
    expired = sorted({issued[r.jti] for r in by_cache if r.status < 400 and r.jti in issued
                      and issued[r.jti] < last})
    assert len(expired) >= 2, f"only {len(expired)} tokens the cache used expired while pulls went on"
    for expiry in expired:  # and pulls went on after each of them
        assert [t for t, ok, _ in pulls if t > expiry and ok], f"no pull after the expiry at {expiry}"
    assert {x["event"] for x in helper_lines(cache)} <= {"renewed", "cached"}
    assert cache.registry.running and cache.front.process and cache.front.process.running

    assert_private_state(cache)
    assert_nothing_leaks([cache.registry.workdir / "registry.log", cache.registry.access_log.path,
                          cache.front.log_path, cache.front.workdir / "front.err", up.front_log, up.token_log],
                         tokens | {IDENTITY_A[1]})
    report(f"plugin cache behind the front (TLS), tokens valid {up.validity:.0f}s: 3 concurrent cold pulls of "
           f"{len(image.blobs)} blobs, {len(blob_gets)} upstream blob GETs; then {len(pulls)} fresh pulls over "
           f"{ended - started:.0f}s, {len(failed)} failed, {len(expired)} tokens the cache used expired meanwhile")
