"""Credentials rotation on the data path (docs/usage/credentials.md, "Rotation in one command").

The upstream first knows only user1; the cache rendered from Secret v1 pulls through it. Then the upstream
revokes user1 and knows only user2 (a new htpasswd, the upstream restarted on the same address and
storage). The cache re-rendered from Secret v2 (a new config, a new cache process as the rolled
StatefulSet would be) pulls an image pushed after the rotation; the cache still running the old config
sends the revoked credentials and gets 401 from the upstream.
"""

from __future__ import annotations

import json

from extension.component.objects import config_files, render_config_yml, unique_name

from .dataplane import CACHE_AGENT, CRANE_AGENT, describe
from .harness import credentials_from_secret, credentials_secret

REFERENCE = "team-registry"


def test_rotated_credentials_on_the_data_path(datapath):
    upstream = datapath.upstream({"user1": "password-1"})
    before = datapath.push(upstream, "team/app", "v1", "user1")

    creds_v1 = credentials_from_secret(credentials_secret("team-registry-v1", "user1", "password-1"), REFERENCE)
    old = datapath.cache(upstream, creds_v1, tls=None)
    assert old.registry.config_path.read_bytes() == render_config_yml(old.model).encode("utf-8")
    assert datapath.crane.run("digest", before.ref(old.registry.host),
                              ca_file=datapath.ca_bundle).stdout.strip() == before.digest
    datapath.crane.run("pull", before.ref(old.registry.host), str(datapath.workdir / "before.tar"),
                       ca_file=datapath.ca_bundle)
    assert before.all_digests <= old.registry.blob_digests()

    # Rotation at the upstream: user1 revoked, user2 the only one.
    upstream.restart_with_users({"user2": "password-2"})
    revoked = datapath.crane.run("manifest", before.ref(upstream.host), check=False,
                                 auth={upstream.host: ("user1", "password-1")})
    assert revoked.returncode != 0 and "UNAUTHORIZED" in revoked.stderr, revoked.stderr
    after = datapath.push(upstream, "team/app", "v2", "user2")

    # The re-rendered cache: Secret v2 behind the same reference.
    creds_v2 = credentials_from_secret(credentials_secret("team-registry-v2", "user2", "password-2"), REFERENCE)
    new = datapath.cache(upstream, creds_v2, tls=None)
    assert new.registry.config_path.read_bytes() == render_config_yml(new.model).encode("utf-8")
    # config.yml is the same; only the credentials file of the config Secret changed ...
    assert new.config_text == old.config_text
    files_v1, files_v2 = config_files(old.model, creds_v1), config_files(new.model, creds_v2)
    assert [k for k in files_v1 if files_v1[k] != files_v2[k]] == ["upstream-credentials"]
    assert json.loads(files_v2["upstream-credentials"]) == {"Username": "user2", "Secret": "password-2"}
    # ... so the config Secret gets a new content-hashed name and the StatefulSet rolls.
    assert unique_name("registry-config", files_v1) != unique_name("registry-config", files_v2)

    mark = upstream.access_log.mark()
    assert datapath.crane.run("digest", after.ref(new.registry.host),
                              ca_file=datapath.ca_bundle).stdout.strip() == after.digest
    datapath.crane.run("pull", after.ref(new.registry.host), str(datapath.workdir / "after.tar"),
                       ca_file=datapath.ca_bundle)
    assert after.all_digests <= new.registry.blob_digests()
    fetched = upstream.access_log.since(mark)
    assert {f"/v2/{after.repository}/blobs/{d}" for d in after.blobs} <= \
        {r.path for r in fetched if r.status == 200 and CACHE_AGENT.match(r.agent)}, describe(fetched)

    # The cache still on the old config: its credentials are refused (401 for the manifest it asks for),
    # the client's pull fails and nothing of the new image is stored.
    mark, old_mark = upstream.access_log.mark(), old.registry.access_log.mark()
    failed = datapath.crane.run("manifest", after.ref(old.registry.host), check=False, ca_file=datapath.ca_bundle)
    assert failed.returncode != 0, failed.stdout
    refused = upstream.access_log.since(mark)
    assert [r for r in refused if r.path == f"/v2/{after.repository}/manifests/{after.tag}" and r.status == 401
            and CACHE_AGENT.match(r.agent)], describe(refused)
    assert not [r for r in refused if r.status < 300 and r.path != "/v2/"], describe(refused)
    assert after.all_digests.isdisjoint(old.registry.blob_digests())
    # the upstream refused credentials the cache sent (distribution 3.1 no longer names a user it does not
    # know: "authentication failure"; a request without credentials says "invalid authorization credential")
    cache_refusals = [line for line in upstream.app_log().splitlines() if "error authorizing context" in line
                      and f"/v2/{after.repository}/manifests/{after.tag}" in line and "Go-http-client" in line]
    assert cache_refusals and all("authentication failure" in line for line in cache_refusals), cache_refusals
    # The cache does not pass the 401 on: its client gets 404 "manifest unknown" (containerd would take that
    # as "try the next host" and fall back to the upstream with the node's own credentials).
    assert "MANIFEST_UNKNOWN" in failed.stderr, failed.stderr
    seen = [r for r in old.registry.access_log.since(old_mark) if CRANE_AGENT.match(r.agent) and "/manifests/" in r.path]
    assert seen and all(r.status == 404 for r in seen), describe(seen)

    # What the old cache stored before the rotation it still serves (the tag is resolved locally when
    # the upstream refuses), without fetching a blob upstream.
    mark = upstream.access_log.mark()
    datapath.crane.run("pull", before.ref(old.registry.host), str(datapath.workdir / "before-again.tar"),
                       ca_file=datapath.ca_bundle)
    assert not [r for r in upstream.access_log.since(mark) if "/blobs/" in r.path or r.status < 300]
