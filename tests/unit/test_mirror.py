"""The registry-mirror extension: decoding and validation words, admission with the caches, what nodes get
(registry entries, hosts.toml, CA bundle files), the OperatingSystemConfig patch, the node agent's files, and
``registry-cache validate``/``render`` of a Shoot with mirrors. Parity with Gardener's Go code of the same
rules: tests/integration/test_gardener_parity_mirror.py."""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path

import pytest
import yaml

from api.admission import admit_shoot, resolve_ca_bundles, validate_mirror_shoot
from api.field import Path as FieldPath
from api.field import ValidationFailed
from api.mirror_validation import decode_and_default_mirror, validate_ca_bundle_secret, validate_mirror_config
from api.pem import certificate_error, first_block
from api.secrets import SecretData
from extension.cli.main import main
from extension.component import certs
from extension.component.containerd import (
    hosts_toml_for_entry,
    mirror_ca_bundle_path,
    mirror_files,
    mirror_registries,
)
from extension.component.objects import RenderOptions, render_mirror_node_config
from extension.nodeagent.agent import NodeAgent
from extension.nodeagent.plan import MARKER, desired_state
from extension.webhook.osc import osc_patch

from .helpers import PC, resource, strs

API_VERSION = "mirror.extensions.gardener.cloud/v1alpha1"
CA = certs.generate_ca("private-mirror-ca")
DOCS = {"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": [
    {"upstream": "docker.io", "hosts": [{"host": "https://mirror.gcr.io", "capabilities": ["pull"]}]},
    {"upstream": "quay.io", "hosts": [{"host": "https://private-mirror.internal",
                                       "caBundleSecretReferenceName": "private-mirror-ca-bundle"}]},
    {"upstream": "registry.k8s.io", "hosts": [{"host": "https://harbor.example.com/v2/k8s",
                                               "capabilities": ["pull", "resolve"], "overridePath": True}]},
]}
CA_SECRET = SecretData("garden-dev", "private-mirror-ca-bundle-v1", True, {"bundle.crt": CA.cert_pem.encode()})


def mirror_shoot(config=DOCS, *, cache=None, resources=None, workers=None) -> dict:
    extensions = [{"type": "registry-mirror", "providerConfig": config}]
    if cache is not None:
        extensions.append({"type": "registry-cache", "providerConfig": cache})
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": "crazy-botany", "namespace": "garden-dev"},
            "spec": {"extensions": extensions,
                     "provider": {"workers": workers or [{"name": "w", "cri": {"name": "containerd"}}]},
                     "resources": resources if resources is not None else
                     [resource("private-mirror-ca-bundle", "private-mirror-ca-bundle-v1")]}}


def getter(*secrets: SecretData):
    return lambda ns, name: next((s for s in secrets if s.namespace == ns and s.name == name), None)


def docs():
    return decode_and_default_mirror(DOCS, PC)


# --- API -----------------------------------------------------------------------------------------------------

def test_defaults_and_wire_format():
    config = docs()
    assert [h.capabilities for m in config.mirrors for h in m.hosts] == [["pull"], ["pull"], ["pull", "resolve"]]
    assert config.to_wire()["mirrors"][2]["hosts"][0] == {"host": "https://harbor.example.com/v2/k8s",
                                                         "capabilities": ["pull", "resolve"], "overridePath": True}
    assert validate_mirror_config(config, PC) == []


def test_validation_words_and_paths():
    config = decode_and_default_mirror({"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": [
        {"upstream": "docker.io", "hosts": [{"host": "https://m.io/v2/../x", "capabilities": ["push", "pull", "pull"]},
                                            {"host": "https://m.io/v2/../x"}]},
        {"upstream": "docker.io", "hosts": []}]}, PC)
    m0 = "spec.extensions[0].providerConfig.mirrors[0]"
    assert strs(validate_mirror_config(config, PC)) == [
        f'{m0}.hosts[0].host: Invalid value: "https://m.io/v2/../x": url path must not contain \'..\'',
        f'{m0}.hosts[0].capabilities: Unsupported value: "push": supported values: "pull", "resolve"',
        f'{m0}.hosts[0].capabilities[2]: Duplicate value: "pull"',
        f'{m0}.hosts[1].host: Invalid value: "https://m.io/v2/../x": url path must not contain \'..\'',
        f'{m0}.hosts[1].host: Duplicate value: "https://m.io/v2/../x"',
        "spec.extensions[0].providerConfig.mirrors[1].hosts: Required value: at least one host must be provided",
        'spec.extensions[0].providerConfig.mirrors[1].upstream: Duplicate value: "docker.io"',
    ]


def test_the_upstream_ca_bundle_pem_is_refused_as_for_caches():
    """Nodes keep the caches' CA bundle as certs.d/ca-bundle.pem, where a mirror of upstream ca-bundle.pem would
    have its directory (the node agent refused to write it and kept what was on disk). A deliberate difference
    from Gardener, as for caches: tests/integration/test_gardener_parity_mirror.py."""
    config = decode_and_default_mirror({"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": [
        {"upstream": "ca-bundle.pem", "hosts": [{"host": "https://mirror.example"}]},
        {"upstream": "ca-bundle.pem:5000", "hosts": [{"host": "https://mirror.example"}]}]}, PC)
    assert strs(validate_mirror_config(config, PC)) == [
        'spec.extensions[0].providerConfig.mirrors[0].upstream: Invalid value: "ca-bundle.pem": must not be '
        "ca-bundle.pem: nodes keep the caches' CA bundle in containerd's hosts directory under that name, where "
        "this upstream's directory would be"]
    shoot = mirror_shoot(mconf_of("ca-bundle.pem"), resources=[])
    assert [e.path for e in admit_shoot(shoot, None, getter()).errors] == [
        "spec.extensions[0].providerConfig.mirrors[0].upstream"]


def mconf_of(*upstreams: str) -> dict:
    return {"apiVersion": API_VERSION, "kind": "MirrorConfig",
            "mirrors": [{"upstream": u, "hosts": [{"host": "https://mirror.example"}]} for u in upstreams]}


def test_decoding_is_strict():
    with pytest.raises(ValidationFailed) as failed:
        decode_and_default_mirror({"apiVersion": API_VERSION, "kind": "MirrorConfig",
                                   "mirrors": [{"upstream": "a.io", "hosts": [{"host": "https://m", "foo": 1}]}]}, PC)
    assert strs(failed.value.errors) == [
        "spec.extensions[0].providerConfig.mirrors[0].hosts[0].foo: Forbidden: unknown field; known fields here "
        "are: host, capabilities, caBundleSecretReferenceName, overridePath"]


def test_ca_bundle_secret_checks_as_gardener():
    path = FieldPath("x")
    assert validate_ca_bundle_secret(CA_SECRET, path, "ref") == []
    bad = SecretData("garden-dev", "ca", False, {"bundle.crt": CA.key_pem.encode(), "other": b"x"})
    assert strs(validate_ca_bundle_secret(bad, path, "ref")) == [
        'x: Invalid value: "ref": the referenced CA bundle secret "garden-dev/ca" should be immutable',
        'x: Invalid value: "ref": the CA bundle is not a valid PEM-encoded certificate',
        'x: Invalid value: "ref": the referenced CA bundle secret "garden-dev/ca" should only have a single data '
        'entry with key "bundle.crt"']


def test_pem_first_block_as_go():
    cert = CA.cert_pem.encode()
    assert certificate_error(b"junk before\n" + cert + CA.key_pem.encode()) is None
    assert certificate_error(CA.key_pem.encode() + cert) == "PEM block type must be CERTIFICATE"  # first block
    broken = cert.replace(b"END CERTIFICATE", b"END X509 CRL")  # not well formed: skipped, as Go skips it
    assert first_block(broken + cert) is not None and certificate_error(broken + cert) is None
    assert certificate_error(b"") == "PEM block type must be CERTIFICATE"


def test_admission_refuses_an_upstream_both_mirrored_and_cached():
    cache = {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
             "caches": [{"upstream": "ghcr.io"}, {"upstream": "docker.io"}]}
    result = admit_shoot(mirror_shoot(cache=cache), get_secret=getter(CA_SECRET))
    assert strs(result.errors) == [
        "spec.extensions[0].providerConfig.mirrors[0].upstream: Invalid value: \"docker.io\": upstream host "
        "'docker.io' is also configured as a registry cache upstream"]
    assert result.cache.config is not None and result.mirror.config is not None


def test_admission_of_the_mirror_part():
    assert validate_mirror_shoot(mirror_shoot(), getter(CA_SECRET)).ok
    result = validate_mirror_shoot(mirror_shoot(resources=[], workers=[{"name": "w", "cri": {"name": "docker"}}]),
                                   getter(CA_SECRET))
    assert strs(result.errors) == [
        'spec.provider.workers[0].cri.name: Invalid value: "docker": container runtime needs to be containerd when '
        "the registry-mirror extension is enabled",
        'spec.extensions[0].providerConfig.mirrors[1].hosts[0].caBundleSecretReferenceName: Invalid value: '
        '"private-mirror-ca-bundle": failed to find referenced resource with name private-mirror-ca-bundle and '
        "kind Secret"]
    assert strs(validate_mirror_shoot(mirror_shoot(), getter()).errors) == [
        'spec.extensions[0].providerConfig.mirrors[1].hosts[0].caBundleSecretReferenceName: Invalid value: '
        '"private-mirror-ca-bundle": failed to get secret garden-dev/private-mirror-ca-bundle-v1 for '
        'caBundleSecretReferenceName private-mirror-ca-bundle: secrets "private-mirror-ca-bundle-v1" not found']
    assert strs(validate_mirror_shoot(mirror_shoot(None)).errors) == [
        "spec.extensions[0].providerConfig: Required value: providerConfig is required for the registry-mirror "
        "extension"]


# --- what nodes get --------------------------------------------------------------------------------------------

def test_registry_entries_as_gardeners_ensurer():
    assert mirror_registries(docs()) == [
        {"upstream": "docker.io", "server": "https://registry-1.docker.io",
         "hosts": [{"url": "https://mirror.gcr.io", "capabilities": ["pull"]}]},
        {"upstream": "quay.io", "server": "https://quay.io",
         "hosts": [{"url": "https://private-mirror.internal", "capabilities": ["pull"],
                    "caCerts": ["/etc/containerd/certs.d/quay.io/private-mirror.internal-ca-bundle.pem"]}]},
        {"upstream": "registry.k8s.io", "server": "https://registry.k8s.io",
         "hosts": [{"url": "https://harbor.example.com/v2/k8s", "capabilities": ["pull", "resolve"],
                    "overridePath": True}]},
    ]


def test_ca_bundle_paths_as_gardener_names_them():
    # the examples of Gardener's ensurer tests (pkg/webhook/mirror/ensurer_test.go)
    assert mirror_ca_bundle_path("docker.io", "https://private-mirror.internal") == \
        "/etc/containerd/certs.d/docker.io/private-mirror.internal-ca-bundle.pem"
    assert mirror_ca_bundle_path("docker.io", "https://private-mirror.internal/v2/docker/" + "n" * 208) == \
        "/etc/containerd/certs.d/docker.io/private-mirror.internal-v2-docker-" + "n" * 201 + "-89994-ca-bundle.pem"
    assert mirror_ca_bundle_path("my-registry.io:5000", "http://10.0.0.1:8443/a") == \
        "/etc/containerd/certs.d/my-registry.io-5000/10.0.0.1-8443-a-ca-bundle.pem"


def test_hosts_toml_of_mirrors():
    config = decode_and_default_mirror({"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": [
        {"upstream": "docker.io", "hosts": [
            {"host": "https://mirror.gcr.io"},
            {"host": "https://private-mirror.internal", "caBundleSecretReferenceName": "ca",
             "capabilities": ["pull", "resolve"], "overridePath": False},
            {"host": "https://harbor.example.com/v2/docker", "overridePath": True}]}]}, PC)
    [entry] = mirror_registries(config)
    text = hosts_toml_for_entry(entry)
    assert tomllib.loads(text) == {"server": "https://registry-1.docker.io", "host": {
        "https://mirror.gcr.io": {"capabilities": ["pull"]},
        "https://private-mirror.internal": {
            "capabilities": ["pull", "resolve"],
            "ca": ["/etc/containerd/certs.d/docker.io/private-mirror.internal-ca-bundle.pem"]},
        "https://harbor.example.com/v2/docker": {"capabilities": ["pull"], "override_path": True}}}
    # containerd tries the hosts in the order given
    assert text.index("mirror.gcr.io") < text.index("private-mirror.internal") < text.index("harbor")


def test_osc_patch_upserts_entries_and_ca_files():
    config = docs()
    bundles = {("quay.io", "https://private-mirror.internal"): CA.cert_pem.encode()}
    osc = {"spec": {"criConfig": {"name": "containerd", "containerd": {"registries": [
        {"upstream": "quay.io", "server": "https://old"}, {"upstream": "ghcr.io", "server": "https://ghcr.io"}]}},
        "files": [{"path": "/etc/other", "content": {"inline": {"data": "eA=="}}}]}}
    patched = osc_patch(osc, mirror_registries(config), mirror_files(config, bundles))
    registries = patched["criConfig"]["containerd"]["registries"]
    assert [r["upstream"] for r in registries] == ["quay.io", "ghcr.io", "docker.io", "registry.k8s.io"]
    assert registries[0]["server"] == "https://quay.io"
    assert patched["files"][0]["path"] == "/etc/other"
    assert patched["files"][1] == {
        "path": "/etc/containerd/certs.d/quay.io/private-mirror.internal-ca-bundle.pem", "permissions": 0o644,
        "content": {"inline": {"encoding": "b64", "data": base64.b64encode(CA.cert_pem.encode()).decode()}}}
    again = {"spec": {**osc["spec"], **patched}}
    assert osc_patch(again, mirror_registries(config), mirror_files(config, bundles)) is None


def test_the_node_agent_writes_hosts_toml_and_the_ca_beside_it(tmp_path: Path):
    config = docs()
    bundles = resolve_ca_bundles(mirror_shoot(), config, getter(CA_SECRET), "garden-dev")
    published = render_mirror_node_config(config, bundles, RenderOptions(owner="shoot--dev--crazy-botany")).obj
    assert published["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "registry-mirror"
    root = tmp_path / "certs.d"
    agent = NodeAgent(lambda: [published], root, prober=lambda url, ca: pytest.fail("mirrors are not probed"))
    result = agent.sync()
    assert result.ok and result.desired is not None and result.desired.problems == []
    ca_file = root / "quay.io" / "private-mirror.internal-ca-bundle.pem"
    assert ca_file.read_text() == CA.cert_pem
    quay = tomllib.loads((root / "quay.io" / "hosts.toml").read_text())
    assert quay["host"]["https://private-mirror.internal"]["ca"] == [str(ca_file)]  # where the agent put it
    assert (root / "registry.k8s.io" / "hosts.toml").is_file() and (root / "quay.io" / MARKER).is_file()
    assert not (root / "ca-bundle.pem").exists()  # the caches' bundle is not the mirrors'

    # the private mirror goes: its CA file with it; the Extension goes: everything of ours
    config2 = decode_and_default_mirror({**DOCS, "mirrors": [DOCS["mirrors"][0], {
        "upstream": "quay.io", "hosts": [{"host": "https://public-mirror.example.com"}]}]}, PC)
    agent.list_configmaps = lambda: [render_mirror_node_config(config2, {}, RenderOptions(owner="x")).obj]
    assert agent.sync().ok
    assert not ca_file.exists() and (root / "quay.io" / "hosts.toml").is_file()
    assert not (root / "registry.k8s.io").exists()
    agent.list_configmaps = lambda: []
    assert agent.sync().ok and sorted(p.name for p in root.iterdir()) == []


def test_a_mirror_ca_file_that_cannot_be_written_never_stops_the_others(tmp_path: Path):
    """Issue 9's robustness with the mirrors' CA files: a CA file that cannot be written (here a directory is in
    its place) is a failure of its own; every other file is written, and the hosts.toml that names the missing
    CA file is not (containerd refuses a hosts.toml whose CA file is missing: the old one stays)."""
    config = docs()
    bundles = resolve_ca_bundles(mirror_shoot(), config, getter(CA_SECRET), "garden-dev")
    published = render_mirror_node_config(config, bundles, RenderOptions(owner="shoot--dev--crazy-botany")).obj
    root = tmp_path / "certs.d"
    (root / "quay.io" / "private-mirror.internal-ca-bundle.pem").mkdir(parents=True)
    (root / "quay.io" / MARKER).write_text("")
    agent = NodeAgent(lambda: [published], root, prober=lambda url, ca: False)
    result = agent.sync()
    assert not result.ok and result.error is not None
    assert f"quay.io: cannot write {root}/quay.io/private-mirror.internal-ca-bundle.pem" in result.error
    assert f"quay.io: hosts.toml not written: it names {root}/quay.io/private-mirror.internal-ca-bundle.pem" \
        in result.error
    assert not (root / "quay.io" / "hosts.toml").exists()
    assert (root / "docker.io" / "hosts.toml").is_file() and (root / "registry.k8s.io" / "hosts.toml").is_file()
    # the cause gone, the next sync writes both, the CA file first
    (root / "quay.io" / "private-mirror.internal-ca-bundle.pem").rmdir()
    assert agent.sync().ok
    assert (root / "quay.io" / "private-mirror.internal-ca-bundle.pem").read_text() == CA.cert_pem
    assert (root / "quay.io" / "hosts.toml").is_file()


def test_a_files_yaml_built_to_blow_up_is_a_short_problem():
    """files.yaml is read with the same limits as registries.yaml (issue 9): an alias bomb is a short problem."""
    lines = ["x0: &x0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 8)]
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"},
           "data": {"registries.yaml": yaml.safe_dump({"registries": []}),
                    "files.yaml": "\n".join(lines) + "\nfiles: *x7\n"}}
    desired = desired_state([bad])
    assert desired.files == {} and not desired.complete
    assert len(desired.problems) == 1 and len(desired.problems[0]) < 300, desired.problems
    assert desired.problems[0].startswith("ConfigMap kube-system/x: files.yaml cannot be used: ")


def test_the_node_agent_never_writes_a_file_outside_its_directories():
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"},
           "data": {"registries.yaml": yaml.safe_dump({"registries": []}), "files.yaml": yaml.safe_dump({"files": [
               {"path": "/etc/containerd/certs.d/../../etc/passwd-ca-bundle.pem",
                "content": {"inline": {"encoding": "b64", "data": base64.b64encode(CA.cert_pem.encode()).decode()}}},
               {"path": "/etc/shadow", "content": {"inline": {"encoding": "b64", "data": ""}}},
               {"path": "/etc/containerd/certs.d/a.io/hosts.toml", "content": {"inline": {"encoding": "b64",
                                                                                          "data": ""}}}]})}}
    desired = desired_state([bad])
    assert desired.files == {} and len(desired.problems) == 3


# --- the command line ---------------------------------------------------------------------------------------------

def _write(tmp_path: Path, name: str, obj) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj) if not isinstance(obj, list) else yaml.safe_dump_all(obj))
    return str(path)


def _secret_manifest() -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "immutable": True,
            "metadata": {"name": "private-mirror-ca-bundle-v1", "namespace": "garden-dev"},
            "data": {"bundle.crt": base64.b64encode(CA.cert_pem.encode()).decode()}}


def test_validate_and_render_a_shoot_with_mirrors(tmp_path: Path, capsys):
    shoot = _write(tmp_path, "shoot.yaml", mirror_shoot())
    secret = _write(tmp_path, "ca.yaml", _secret_manifest())
    assert main(["validate", shoot, "--secret", secret]) == 0
    assert "valid (3 mirrors: docker.io, quay.io, registry.k8s.io)" in capsys.readouterr().err
    assert main(["validate", shoot]) == 1  # the CA bundle Secret is not given
    assert "caBundleSecretReferenceName" in capsys.readouterr().out

    out = tmp_path / "out"
    assert main(["render", shoot, "--secret", secret, "-o", str(out)]) == 0
    nodes = out / "nodes"
    assert sorted(p.relative_to(nodes).as_posix() for p in nodes.rglob("*") if p.is_file()) == [
        "docker.io/hosts.toml", "quay.io/hosts.toml", "quay.io/private-mirror.internal-ca-bundle.pem",
        "registry.k8s.io/hosts.toml"]
    assert (nodes / "quay.io" / "private-mirror.internal-ca-bundle.pem").read_text() == CA.cert_pem
    assert tomllib.loads((nodes / "quay.io" / "hosts.toml").read_text())["host"]["https://private-mirror.internal"][
        "ca"] == ["/etc/containerd/certs.d/quay.io/private-mirror.internal-ca-bundle.pem"]
    assert not (out / "provider-status.yaml").exists() and list((out / "shoot").iterdir()) == []  # no workloads


def test_render_a_shoot_with_caches_and_mirrors(tmp_path: Path, capsys):
    cache = {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
             "caches": [{"upstream": "ghcr.io"}]}
    shoot = _write(tmp_path, "shoot.yaml", [mirror_shoot(cache=cache), _secret_manifest()])
    out = tmp_path / "out"
    assert main(["render", shoot, "-o", str(out), "--endpoint", "ghcr.io=https://10.4.0.9:5000"]) == 0
    assert sorted(p.name for p in (out / "nodes").iterdir() if p.is_dir()) == [
        "docker.io", "ghcr.io", "quay.io", "registry.k8s.io"]
    assert (out / "provider-status.yaml").is_file() and (out / "nodes" / "ca-bundle.pem").is_file()
    capsys.readouterr()
