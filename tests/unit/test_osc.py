"""The OperatingSystemConfig mutation: Gardener's ensurer, as a pure function."""

import base64

import pytest

from api.mirror_v1alpha1 import API_VERSION
from extension.component.containerd import containerd_registries
from extension.component.objects import provider_status
from extension.errors import ConfigurationError
from extension.webhook.osc import ensure_mirror, osc_patch

STATUS = provider_status([("docker.io", "https://10.0.0.1:5000", "https://registry-1.docker.io"),
                          ("ghcr.io", "http://10.0.0.2:5000", "https://ghcr.io")], "ca-extension-registry-cache-bundle")
ENTRIES = containerd_registries(STATUS)


def test_upserts_registries_and_the_ca_bundle_keeping_the_rest():
    osc = {"spec": {"type": "gardenlinux", "criConfig": {"name": "containerd", "containerd": {
        "sandboxImage": "pause:3", "registries": [
            {"upstream": "quay.io", "server": "https://quay.io", "hosts": [{"url": "https://mirror.example"}]},
            {"upstream": "docker.io", "server": "https://old", "hosts": [{"url": "https://10.9.9.9:5000"}]}]}},
        "files": [{"path": "/etc/other", "permissions": 420, "content": {"inline": {"data": "x"}}}]}}
    new = osc_patch(osc, ENTRIES, "PEM")
    registries = new["criConfig"]["containerd"]["registries"]
    assert [r["upstream"] for r in registries] == ["quay.io", "docker.io", "ghcr.io"]
    assert registries[1] == ENTRIES[0]  # replaced, not duplicated
    assert new["criConfig"]["name"] == "containerd" and new["criConfig"]["containerd"]["sandboxImage"] == "pause:3"
    assert [f["path"] for f in new["files"]] == ["/etc/other", "/etc/containerd/certs.d/ca-bundle.pem"]
    bundle = new["files"][1]
    assert bundle["permissions"] == 0o644
    assert base64.b64decode(bundle["content"]["inline"]["data"]) == b"PEM"
    assert bundle["content"]["inline"]["encoding"] == "b64"


def test_idempotent_and_empty_osc():
    first = osc_patch({}, ENTRIES, "PEM")
    assert first is not None
    assert osc_patch({"spec": first}, ENTRIES, "PEM") is None  # already there: no change
    assert osc_patch({}, ENTRIES, None)["files"] == []  # no TLS cache: no bundle file


class _Seed:
    """What ensure_mirror reads of a seed: a Cluster and the Extension."""

    def __init__(self, provider_config):
        self.objects = {("Cluster", "shoot--dev--x"): {"spec": {"shoot": {"metadata": {"name": "x"}}}},
                        ("Extension", "registry-mirror"): {"spec": {"providerConfig": provider_config}}}

    def get(self, kind, name, namespace=None):
        return self.objects.get((kind, name))


def test_a_mirror_config_that_does_not_validate_never_names_a_file_outside_the_certs_dir():
    """The Gardener-mode path (issue 17, item 8): the caCerts and files paths come from the upstream and the host
    of the providerConfig. Unvalidated, an upstream "../../../dev" named /etc/containerd/certs.d/../../../dev/..."""
    bad = {"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": [
        {"upstream": "../../../dev", "hosts": [{"host": "https://m.example"}]}]}
    osc = {"metadata": {"namespace": "shoot--dev--x", "name": "osc"}, "spec": {}}
    with pytest.raises(ConfigurationError) as refused:
        ensure_mirror(_Seed(bad), osc)
    assert "spec.providerConfig.mirrors[0].upstream" in str(refused.value)
    good = {**bad, "mirrors": [{"upstream": "docker.io", "hosts": [{"host": "https://m.example"}]}]}
    patched = ensure_mirror(_Seed(good), osc)
    assert patched["criConfig"]["containerd"]["registries"][0]["upstream"] == "docker.io"
