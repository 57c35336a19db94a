"""containerd with what a node gets for a registry-mirror pulls from the mirror, not from the upstream.

The mirror is a private one: a distribution registry with TLS from its own CA (not the caches' CA), holding a
copy of the upstream's image. The node's files come the way the node agent makes them: the mirrors'
ConfigMap the controller renders (:func:`render_mirror_node_config`) handed to :class:`NodeAgent`, which
writes ``<upstream>/hosts.toml`` and the mirror's CA bundle where it names it, into containerd's
``--hosts-dir``. The upstream (``server``) is reached over https while it only speaks http: any fallback to it
fails, so a pull that succeeds came from the mirror (its access log says so too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api.field import Path as FieldPath
from api.mirror_validation import decode_and_default_mirror, validate_mirror_config
from extension.component.certs import generate_ca, generate_server_cert
from extension.component.objects import RenderOptions, render_mirror_node_config
from extension.nodeagent.agent import NodeAgent

from .dataplane import CONTAINERD_AGENT, LOOPBACK, Registry, describe

USER, PASSWORD = "robot-e2e", "pw-e2e"
MIRROR_CA = generate_ca("private-mirror-ca")

MIRROR_CONFIG = """\
version: 0.1
log:
  fields:
    service: mirror
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: ":5000"
"""


def _mirror(datapath) -> Registry:
    server = generate_server_cert(MIRROR_CA, "private-mirror", [], [LOOPBACK])
    ca_file = datapath.workdir / "mirror-ca.pem"
    ca_file.write_text(MIRROR_CA.cert_pem, encoding="utf-8")
    mirror = Registry(datapath.tools.registry, "mirror", datapath._dir("mirror"), MIRROR_CONFIG,
                      tls=(server.cert_pem, server.key_pem), ca_file=ca_file)
    datapath._registries.append(mirror)
    return mirror.start()


def _node_files(config, root: Path) -> Path:
    """What the node agent writes for this MirrorConfig, the mirror's CA bundle included."""
    published = render_mirror_node_config(
        config, {(m.upstream, h.host): MIRROR_CA.cert_pem.encode() for m in config.mirrors for h in m.hosts
                 if h.ca_bundle_secret_reference_name}, RenderOptions(owner="shoot--e2e--mirror")).obj
    agent = NodeAgent(lambda: [published], root, prober=lambda url, ca: pytest.fail("mirrors are not probed"))
    result = agent.sync()
    assert result.ok and result.desired is not None and result.desired.problems == [], result
    return root


@pytest.mark.parametrize("variant", ["pull-and-resolve", "override-path"])
def test_containerd_pulls_from_a_private_mirror(datapath, containerd, variant):
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "team/app", "1.0", USER)
    mirror = _mirror(datapath)
    host = {"host": mirror.url, "capabilities": ["pull", "resolve"], "caBundleSecretReferenceName": "mirror-ca"}
    prefix = ""
    if variant == "override-path":
        # a mirror whose API root is given in full, a project path as Harbor has one: containerd must take the
        # URL as it is (without override_path it would append /v2 and ask for repository "project/v2/team/app")
        prefix = "project/"
        host.update(host=f"{mirror.url}/v2/project", overridePath=True)
    datapath.crane.run("copy", image.ref(upstream.host), f"{mirror.host}/{prefix}{image.repository}:{image.tag}",
                       auth={upstream.host: (USER, PASSWORD)})
    assert image.all_digests <= mirror.blob_digests()
    config = decode_and_default_mirror({"apiVersion": "mirror.extensions.gardener.cloud/v1alpha1",
                                        "kind": "MirrorConfig", "mirrors": [{"upstream": upstream.host,
                                                                             "hosts": [host]}]}, FieldPath("x"))
    assert validate_mirror_config(config, FieldPath("x")) == []
    hosts = _node_files(config, datapath._dir("hosts"))
    ca_files = list((hosts / upstream.host.replace(":", "-")).glob("*-ca-bundle.pem"))
    assert [f.read_text() for f in ca_files] == [MIRROR_CA.cert_pem]
    assert f'ca = ["{ca_files[0]}"]' in (hosts / upstream.host / "hosts.toml").read_text()

    ctrd = datapath.containerd()
    ref = image.ref(upstream.host)
    up_mark, mirror_mark = upstream.access_log.mark(), mirror.access_log.mark()
    pulled = ctrd.pull(ref, hosts)
    assert pulled.ok, pulled.output
    assert ctrd.image_target(ref) == image.digest and image.all_digests <= ctrd.content_digests()
    served = [r for r in mirror.access_log.since(mirror_mark) if CONTAINERD_AGENT.match(r.agent)]
    assert {f"/v2/{prefix}{image.repository}/blobs/{d}" for d in image.blobs} <= \
        {r.path for r in served if r.method == "GET" and r.status == 200}, describe(served)
    assert not upstream.access_log.since(up_mark)  # never asked the upstream


def test_without_the_mirrors_ca_containerd_does_not_use_it(datapath, containerd):
    """The CA bundle beside hosts.toml is what makes containerd trust the private mirror: with another CA's
    bundle there, the mirror is refused and the fallback to the upstream fails too."""
    upstream = datapath.upstream({USER: PASSWORD})
    image = datapath.push(upstream, "team/app", "2.0", USER)
    mirror = _mirror(datapath)
    datapath.crane.run("copy", image.ref(upstream.host), image.ref(mirror.host),
                       auth={upstream.host: (USER, PASSWORD)})
    config = decode_and_default_mirror({"apiVersion": "mirror.extensions.gardener.cloud/v1alpha1",
                                        "kind": "MirrorConfig", "mirrors": [{"upstream": upstream.host, "hosts": [
                                            {"host": mirror.url, "capabilities": ["pull", "resolve"],
                                             "caBundleSecretReferenceName": "mirror-ca"}]}]}, FieldPath("x"))
    hosts = _node_files(config, datapath._dir("hosts"))
    [ca_file] = (hosts / upstream.host.replace(":", "-")).glob("*-ca-bundle.pem")
    ca_file.write_text(generate_ca("some-other-ca").cert_pem, encoding="utf-8")

    mirror_mark = mirror.access_log.mark()
    pulled = datapath.containerd().pull(image.ref(upstream.host), hosts)
    assert not pulled.ok, pulled.output
    assert not [r for r in mirror.access_log.since(mirror_mark) if r.status == 200 and "/blobs/" in r.path]
