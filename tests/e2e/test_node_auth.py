"""A cache only nodes can read (``registry-cache run --standalone --node-auth``), on the data path.

Real processes, configured only by the project's code: distribution started from exactly the rendered
``config.yml`` and the htpasswd line the controller generates (:mod:`extension.component.nodeauth`); the
node agent (:class:`extension.nodeagent.agent.NodeAgent`, its real file I/O and readiness probe) fed with
exactly what the controller publishes in the shoot (the node-config ConfigMap and the shared node-auth
Secret); Debian's containerd 1.6 and containerd 2.x pulling with the hosts.toml the agent wrote.

- any client without the credentials (a Pod, crane, curl) gets 401 from the cache; a wrong password too;
- the hosts.toml with the Authorization header is readable by root only (0600), and the credentials
  appear in no log line of the agent;
- containerd on the node pulls through the cache as before: the blobs come from the cache (200s to
  containerd), containerd never falls back to the upstream.
"""

from __future__ import annotations

import base64
import logging
import stat
import tomllib

from extension.component import nodeauth
from extension.component.objects import RenderOptions, provider_status, render_node_config
from extension.constants import SHOOT_NAMESPACE
from extension.nodeagent.agent import NodeAgent, secret_strings

from .dataplane import CONTAINERD_AGENT, describe, http_get
from .harness import CA_SECRET_NAME, credentials_from_secret, credentials_secret

USER, PASSWORD = "robot-nodes", "pw-nodes"


def test_a_cache_only_nodes_can_read(datapath, containerd, containerd2, ca, tmp_path, caplog):
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "private/app", "1.0", USER)
    creds = credentials_from_secret(credentials_secret("app-registry-v1", USER, PASSWORD), "app-registry")
    node = nodeauth.generate()
    assert nodeauth.valid(node) and node.password not in repr(node)
    cache = datapath.cache(upstream, creds, tls=None, node_auth=node)
    assert "htpasswd:" in cache.config_text and node.password not in cache.config_text

    # What the controller publishes in the shoot: the node-config ConfigMap (the entry names its key, never
    # the credentials) and the shared node-auth Secret with this cache's header.
    status = provider_status([(upstream.host, cache.endpoint, upstream.url)], CA_SECRET_NAME)
    configmap = render_node_config(status, ca.cert_pem, RenderOptions(owner="shoot--e2e--nodes"),
                                   node_auth=[upstream.host]).obj
    assert node.password not in str(configmap) and node.authorization not in str(configmap)
    shared = nodeauth.shoot_secret(SHOOT_NAMESPACE, {nodeauth.shoot_key(upstream.host): node.authorization})

    root = tmp_path / "certs.d"
    caplog.set_level(logging.DEBUG)
    agent = NodeAgent(lambda: [configmap], root, read_node_auth=lambda: secret_strings(shared))
    result = agent.sync()
    assert result.ok and result.plan is not None and upstream.host in result.plan.write, result
    hosts_toml = root / upstream.host / "hosts.toml"
    assert stat.S_IMODE(hosts_toml.stat().st_mode) == 0o600 and hosts_toml.stat().st_uid == 0
    host = tomllib.loads(hosts_toml.read_text())["host"][cache.endpoint]
    assert host["header"] == {"Authorization": node.authorization}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert node.password not in logged and node.authorization.split()[1] not in logged

    # Without the credentials, or with wrong ones: 401 from the cache, nothing served.
    manifest_url = f"{cache.registry.url}/v2/{image.repository}/manifests/{image.tag}"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    assert http_get(manifest_url, ca_file=datapath.ca_bundle, headers=accept)[0] == 401
    wrong = "Basic " + base64.b64encode(f"{node.username}:not-the-password".encode()).decode()
    assert http_get(manifest_url, ca_file=datapath.ca_bundle, headers={**accept, "Authorization": wrong})[0] == 401
    anonymous = datapath.crane.run("manifest", image.ref(cache.registry.host), ca_file=datapath.ca_bundle,
                                   insecure=False, check=False)
    assert anonymous.returncode != 0 and "UNAUTHORIZED" in anonymous.stderr, anonymous.stderr
    # ... and with them, the manifest (as containerd will send it)
    ok = http_get(manifest_url, ca_file=datapath.ca_bundle, headers={**accept, "Authorization": node.authorization})
    assert ok[0] == 200, ok

    # containerd on the node pulls through the cache as before, both versions, no client credentials.
    for bin_dir in (None, containerd2):
        ctrd = datapath.containerd(bin_dir)
        up_mark, cache_mark = upstream.access_log.mark(), cache.registry.access_log.mark()
        pulled = ctrd.pull(image.ref(upstream.host), root)
        assert pulled.ok, f"{bin_dir or 'containerd 1.6'}: {pulled.output}\n{ctrd.log_tail()}"
        assert ctrd.image_target(image.ref(upstream.host)) == image.digest
        served = [r for r in cache.registry.access_log.since(cache_mark) if CONTAINERD_AGENT.match(r.agent)]
        assert {f"/v2/{image.repository}/blobs/{d}" for d in image.blobs} <= \
            {r.path for r in served if r.method == "GET" and r.status == 200}, describe(served)
        assert not [r for r in served if r.status == 401], describe(served)  # it sent the header every time
        fallback = [r for r in upstream.access_log.since(up_mark) if CONTAINERD_AGENT.match(r.agent)]
        assert not fallback, describe(fallback)
        ctrd.stop()
    assert image.all_digests <= cache.registry.blob_digests()
