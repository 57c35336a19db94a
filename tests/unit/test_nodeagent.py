"""The node agent's pure part (ConfigMaps -> wanted files -> plan) and its file handling with a fake API
server and fake probes (the real API server, caches and process: tests/integration/test_nodeagent.py)."""

from __future__ import annotations

import argparse
import base64
import logging
import threading
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from extension.cli.nodeagent import add_parser
from extension.component import certs
from extension.component.containerd import hosts_toml_for_status
from extension.component.objects import RenderOptions, provider_status, render_node_config
from extension.constants import CA_BUNDLE_FILE, CA_BUNDLE_PATH, DEFAULT_DIAL_TIMEOUT, NODE_CONFIG_LABEL
from extension.nodeagent.agent import NodeAgent, observe
from extension.nodeagent.plan import (
    CA_MARKER,
    MARKER,
    DirState,
    Observed,
    desired_state,
    plan,
    to_probe,
    valid_upstream,
)

CA = certs.generate_ca()
CA2 = certs.generate_ca("second")


def entry(upstream: str, url: str, server: str | None = None, probe: bool = True, ca: bool | None = None) -> dict:
    host = {"url": url, "capabilities": ["pull", "resolve"]}
    if ca if ca is not None else url.startswith("https://"):
        host["caCerts"] = [CA_BUNDLE_PATH]
    return {"upstream": upstream, "server": server or f"https://{upstream}", "hosts": [host],
            "readinessProbe": probe}


def configmap(name: str, *entries: dict, ca: str | None = None, created: str = "2025-01-01T00:00:00Z",
              namespace: str = "kube-system", raw: str | None = None) -> dict:
    data = {"registries.yaml": raw if raw is not None else yaml.safe_dump({"registries": list(entries)})}
    if ca is not None:
        data["ca-bundle.pem"] = ca
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                         "labels": {NODE_CONFIG_LABEL: "true"}}, "data": data}


# --- from ConfigMaps to files ----------------------------------------------------------------------------

def test_dial_timeout_of_an_entry_is_written_or_the_entry_skipped():
    good = entry("a.io", "https://10.0.0.1:5000")
    good["hosts"][0]["dialTimeout"] = "350ms"
    bad = entry("b.io", "https://10.0.0.2:5000")
    bad["hosts"][0]["dialTimeout"] = "fast"
    negative = entry("c.io", "https://10.0.0.3:5000")
    negative["hosts"][0]["dialTimeout"] = "-1s"
    desired = desired_state([configmap("cm", good, bad, negative)])
    assert set(desired.hosts_toml) == {"a.io"}
    assert tomllib.loads(desired.hosts_toml["a.io"])["host"]["https://10.0.0.1:5000"]["dial_timeout"] == "350ms"
    assert len(desired.problems) == 2 and "'fast' is not a Go duration" in desired.problems[0]
    assert "must not be negative" in desired.problems[1]
    assert desired.keep == {"b.io", "c.io"}  # what is on disk for them stays


def test_reads_what_the_controller_publishes():
    status = provider_status([("docker.io", "https://10.4.0.12:5000", "https://registry-1.docker.io"),
                              ("my-registry.io:5000", "http://10.4.0.15:5000", "http://my-registry.io:5000")],
                             "ca-extension-registry-cache-bundle")
    published = render_node_config(status, CA.cert_pem, RenderOptions(owner="shoot--dev--crazy-botany")).obj
    desired = desired_state([published])
    assert desired.problems == [] and desired.complete
    # containerd's default place: nothing rewritten; the controller's default dial timeout on every host
    assert desired.hosts_toml == hosts_toml_for_status(status, dial_timeout=DEFAULT_DIAL_TIMEOUT)
    assert all(f'dial_timeout = "{DEFAULT_DIAL_TIMEOUT}"' in text for text in desired.hosts_toml.values())
    assert desired.ca_bundle == CA.cert_pem
    assert [e.readiness_probe for e in desired.entries.values()] == [True, True]
    assert desired.entries["docker.io"].probe_url == "https://10.4.0.12:5000/v2/"
    assert desired.entries["my-registry.io:5000"].probe_url == "http://10.4.0.15:5000/v2/"
    assert desired.entries["docker.io"].source.startswith("kube-system/registry-cache-node-config-")


def test_the_ca_path_is_where_the_agent_writes_the_bundle():
    desired = desired_state([configmap("a", entry("ghcr.io", "https://10.0.0.1:5000"),
                                       entry("quay.io", "http://10.0.0.2:5000"), ca=CA.cert_pem)],
                            ca_path="/var/tmp/certs.d/ca-bundle.pem")
    ghcr = tomllib.loads(desired.hosts_toml["ghcr.io"])
    assert ghcr["server"] == "https://ghcr.io"
    assert ghcr["host"]["https://10.0.0.1:5000"] == {"capabilities": ["pull", "resolve"],
                                                     "ca": ["/var/tmp/certs.d/ca-bundle.pem"]}
    assert tomllib.loads(desired.hosts_toml["quay.io"])["host"]["http://10.0.0.2:5000"] == {
        "capabilities": ["pull", "resolve"]}


def test_an_upstream_in_two_configmaps_goes_to_the_older_one_whatever_the_list_order():
    old = configmap("b-old", entry("docker.io", "http://10.0.0.1:5000"), created="2025-01-01T00:00:00Z")
    new = configmap("a-new", entry("docker.io", "http://10.0.0.9:5000"), entry("ghcr.io", "http://10.0.0.2:5000"),
                    created="2025-02-01T00:00:00Z")
    for order in ([old, new], [new, old]):
        desired = desired_state(order)
        assert desired.entries["docker.io"].hosts[0]["url"] == "http://10.0.0.1:5000"
        assert desired.entries["docker.io"].source == "kube-system/b-old"
        assert set(desired.entries) == {"docker.io", "ghcr.io"}
        assert desired.problems == ["upstream docker.io is published by ConfigMaps kube-system/b-old and "
                                    "kube-system/a-new: using kube-system/b-old (the older one)"]


@pytest.mark.parametrize("bad, problem", [
    ({**entry("x", "http://10.0.0.1:5000"), "upstream": "../../etc"}, "is not a registry host[:port]"),
    ({**entry("x", "http://10.0.0.1:5000"), "upstream": "a/b"}, "is not a registry host[:port]"),
    ({**entry("x", "http://10.0.0.1:5000"), "upstream": ".."}, "is not a registry host[:port]"),
    ({**entry("x.io", "http://10.0.0.1:5000"), "server": "ftp://x.io"}, "is not an http(s) URL"),
    ({**entry("x.io", "http://10.0.0.1:5000"), "hosts": []}, "no hosts"),
    ({**entry("x.io", "http://10.0.0.1:5000"), "hosts": [{"url": "10.0.0.1:5000"}]}, "has no http(s) url"),
    ({**entry("x.io", "http://10.0.0.1:5000"), "readinessProbe": "yes"}, "readinessProbe is not a boolean"),
    ("docker.io", "an entry is not a mapping"),
])
def test_an_unusable_entry_is_skipped_and_said(bad, problem):
    desired = desired_state([configmap("a", bad, entry("ghcr.io", "http://10.0.0.2:5000"))])
    assert list(desired.entries) == ["ghcr.io"]
    assert desired.complete
    assert len(desired.problems) == 1 and problem in desired.problems[0]
    assert desired.problems[0].startswith("ConfigMap kube-system/a: registries[0]: ")


@pytest.mark.parametrize("raw", ["registries: [", "just text", "registries: {a: b}"])
def test_an_unreadable_configmap_suspends_removal(raw):
    desired = desired_state([configmap("broken", raw=raw), configmap("ok", entry("ghcr.io", "http://10.0.0.2:5000"))])
    assert not desired.complete
    assert list(desired.entries) == ["ghcr.io"]
    observed = Observed(dirs={"docker.io": DirState(True, "old")})
    assert plan(desired, observed, {"ghcr.io"}).remove == []


def test_ca_bundles_are_concatenated_without_duplicates():
    desired = desired_state([configmap("a", entry("a.io", "https://10.0.0.1:5000"), ca=CA.cert_pem),
                             configmap("b", entry("b.io", "https://10.0.0.2:5000"), ca=CA2.cert_pem + CA.cert_pem),
                             configmap("c", entry("c.io", "http://10.0.0.3:5000"), ca="no certificate here")])
    assert desired.ca_bundle == CA.cert_pem + CA2.cert_pem
    assert desired.problems == ["ConfigMap kube-system/c: ca-bundle.pem holds no PEM certificate"]


@given(st.text(min_size=1, max_size=80))
def test_a_valid_upstream_is_one_directory_inside_the_root(text):
    if valid_upstream(text):
        root = Path("/etc/containerd/certs.d")
        assert (root / text).parent == root
        assert text not in (".", "..") and "/" not in text and "\0" not in text


def test_upstreams_that_are_valid_directories():
    for ok in ["docker.io", "my-registry.io:5000", "localhost:5001", "10.0.0.1:5000", "ghcr.io"]:
        assert valid_upstream(ok), ok
    for bad in ["", ".", "..", "a/b", "a..b", "-a.io", "a.io:", "a.io:123456", "[::1]:5000", "_default", "a b"]:
        assert not valid_upstream(bad), bad


# --- from files to a plan --------------------------------------------------------------------------------

def desired_of(*entries, ca=CA.cert_pem):
    return desired_state([configmap("a", *entries, ca=ca)], ca_path="/root/ca-bundle.pem")


def test_a_new_cache_waits_until_it_answers():
    desired = desired_of(entry("ghcr.io", "http://10.0.0.2:5000"))
    assert to_probe(desired, Observed()) == {"ghcr.io": "http://10.0.0.2:5000/v2/"}
    waiting = plan(desired, Observed(), answering=())
    assert waiting.waiting == ["ghcr.io"] and waiting.write == {} and waiting.empty
    ready = plan(desired, Observed(), answering={"ghcr.io"})
    assert ready.write == {"ghcr.io": desired.hosts_toml["ghcr.io"]} and ready.waiting == []


def test_without_readiness_probe_it_is_written_at_once():
    desired = desired_of(entry("ghcr.io", "http://10.0.0.2:5000", probe=False))
    assert to_probe(desired, Observed()) == {}
    assert plan(desired, Observed()).write == {"ghcr.io": desired.hosts_toml["ghcr.io"]}


def test_an_unchanged_file_is_neither_probed_nor_written():
    desired = desired_of(entry("ghcr.io", "http://10.0.0.2:5000"))
    observed = Observed(dirs={"ghcr.io": DirState(True, desired.hosts_toml["ghcr.io"])})
    assert to_probe(desired, observed) == {}
    assert plan(desired, observed).empty


def test_a_changed_endpoint_keeps_the_old_file_until_the_new_cache_answers():
    desired = desired_of(entry("ghcr.io", "http://10.0.0.7:5000"))
    observed = Observed(dirs={"ghcr.io": DirState(True, "old content")})
    assert to_probe(desired, observed) == {"ghcr.io": "http://10.0.0.7:5000/v2/"}
    assert plan(desired, observed).waiting == ["ghcr.io"]
    assert plan(desired, observed).remove == []
    assert plan(desired, observed, {"ghcr.io"}).write == {"ghcr.io": desired.hosts_toml["ghcr.io"]}


def test_a_directory_that_is_not_ours_is_never_written_nor_removed():
    desired = desired_of(entry("docker.io", "http://10.0.0.1:5000"))
    observed = Observed(dirs={"docker.io": DirState(False, None), "quay.io": DirState(False, None)})
    todo = plan(desired, observed, {"docker.io"})
    assert todo.foreign == ["docker.io"] and todo.write == {} and todo.remove == [] and todo.waiting == []
    assert to_probe(desired, observed) == {}
    assert plan(desired_state([]), observed).remove == []


def test_the_directory_of_a_removed_upstream_goes_only_when_ours():
    observed = Observed(dirs={"ghcr.io": DirState(True, "x"), "quay.io": DirState(True, "y"),
                              "mine.io": DirState(False, None)})
    todo = plan(desired_of(entry("ghcr.io", "http://10.0.0.2:5000")), observed, {"ghcr.io"})
    assert todo.remove == ["quay.io"]
    assert plan(desired_state([]), observed).remove == ["ghcr.io", "quay.io"]


def test_an_upstream_whose_entry_is_broken_keeps_its_directory():
    broken = {**entry("quay.io", "http://10.0.0.1:5000"), "server": "not a url"}
    desired = desired_of(broken, entry("ghcr.io", "http://10.0.0.2:5000"))
    assert desired.keep == {"quay.io"}
    assert plan(desired, Observed(dirs={"quay.io": DirState(True, "y")})).remove == []


def test_the_ca_bundle_is_there_while_an_https_cache_is():
    https = desired_of(entry("ghcr.io", "https://10.0.0.2:5000"))
    assert plan(https, Observed()).write_ca_bundle == CA.cert_pem
    assert plan(https, Observed(ca_bundle=CA.cert_pem, ca_bundle_managed=True)).write_ca_bundle is None
    assert plan(https, Observed(ca_bundle="old", ca_bundle_managed=True)).write_ca_bundle == CA.cert_pem
    http = desired_of(entry("ghcr.io", "http://10.0.0.2:5000"))
    assert plan(http, Observed()).write_ca_bundle is None
    assert plan(http, Observed(ca_bundle=CA.cert_pem, ca_bundle_managed=True)).remove_ca_bundle
    # somebody else's ca-bundle.pem: never written nor removed
    foreign = plan(https, Observed(ca_bundle="theirs", ca_bundle_managed=False))
    assert foreign.ca_bundle_foreign and foreign.write_ca_bundle is None and not foreign.remove_ca_bundle
    assert not plan(http, Observed(ca_bundle="theirs", ca_bundle_managed=False)).remove_ca_bundle


# --- the agent on a directory, with a fake API server and fake caches -----------------------------------

class FakeCluster:
    def __init__(self, *configmaps):
        self.configmaps = list(configmaps)
        self.fail: Exception | None = None
        self.answering: set[str] = set()
        self.probed: list[str] = []

    def list(self):
        if self.fail:
            raise self.fail
        return self.configmaps

    def probe(self, url, ca_bundle):
        self.probed.append(url)
        return any(url.startswith(u) for u in self.answering)


def agent_for(cluster: FakeCluster, root: Path) -> NodeAgent:
    return NodeAgent(cluster.list, root, prober=cluster.probe)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_agent_writes_waits_removes_and_leaves_foreign_files_alone(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="registry-cache.node-agent")
    root = tmp_path / "certs.d"
    (root / "docker.io").mkdir(parents=True)
    (root / "docker.io" / "hosts.toml").write_text("# mine\n")
    cluster = FakeCluster(configmap("a", entry("ghcr.io", "https://10.0.0.2:5000"),
                                    entry("quay.io", "http://10.0.0.3:5000"),
                                    entry("docker.io", "http://10.0.0.1:5000"), ca=CA.cert_pem))
    agent = agent_for(cluster, root)

    result = agent.sync()
    assert result.ok and sorted(result.plan.waiting) == ["ghcr.io", "quay.io"]
    assert tree(root) == {"docker.io/hosts.toml": "# mine\n", CA_BUNDLE_FILE: CA.cert_pem, CA_MARKER: tree(root)[CA_MARKER]}
    assert sorted(cluster.probed) == ["http://10.0.0.3:5000/v2/", "https://10.0.0.2:5000/v2/"]

    cluster.answering = {"https://10.0.0.2:5000"}
    agent.sync()
    ghcr = (root / "ghcr.io" / "hosts.toml").read_text()
    assert f'ca = ["{root}/ca-bundle.pem"]' in ghcr and 'server = "https://ghcr.io"' in ghcr
    assert (root / "ghcr.io" / MARKER).is_file()
    assert not (root / "quay.io").exists()

    cluster.answering.add("http://10.0.0.3:5000")
    cluster.probed.clear()
    agent.sync()
    assert (root / "quay.io" / "hosts.toml").is_file()
    assert cluster.probed == ["http://10.0.0.3:5000/v2/"]  # ghcr.io is in place: not probed again
    agent.sync()
    assert cluster.probed == ["http://10.0.0.3:5000/v2/"]
    assert not [p for p in root.rglob("*.tmp")]

    # the API server away: nothing changes
    cluster.fail = ConnectionError("connection refused")
    before = tree(root)
    assert not agent.sync().ok
    assert tree(root) == before

    # the https cache removed: its directory and the CA bundle go; quay.io stays; docker.io is not ours
    cluster.fail = None
    cluster.configmaps = [configmap("a", entry("quay.io", "http://10.0.0.3:5000"),
                                    entry("docker.io", "http://10.0.0.1:5000"))]
    agent.sync()
    assert sorted(tree(root)) == ["docker.io/hosts.toml", f"quay.io/{MARKER}", "quay.io/hosts.toml"]
    assert (root / "docker.io" / "hosts.toml").read_text() == "# mine\n"

    # everything removed
    cluster.configmaps = []
    agent.sync()
    assert tree(root) == {"docker.io/hosts.toml": "# mine\n"}
    assert sorted(p.name for p in root.iterdir()) == ["docker.io"]

    not_ours = [r.getMessage() for r in caplog.records if "is not ours" in r.getMessage()]
    assert len(not_ours) == 1, not_ours  # said once while it stays so, not on every sync
    assert f"docker.io: {root / 'docker.io'} is not ours" in not_ours[0]


def test_a_removed_directory_with_other_files_keeps_them(tmp_path):
    cluster = FakeCluster(configmap("a", entry("quay.io", "http://10.0.0.3:5000", probe=False)))
    agent = agent_for(cluster, tmp_path)
    agent.sync()
    (tmp_path / "quay.io" / "client.cert").write_text("user's")
    cluster.configmaps = []
    agent.sync()
    assert tree(tmp_path) == {"quay.io/client.cert": "user's"}
    # without the marker the directory is no longer ours: a new cache for quay.io does not take it over
    cluster.configmaps = [configmap("a", entry("quay.io", "http://10.0.0.3:5000", probe=False))]
    assert agent.sync().plan.foreign == ["quay.io"]
    assert tree(tmp_path) == {"quay.io/client.cert": "user's"}


def test_files_and_links_named_like_an_upstream_are_not_ours(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "ghcr.io").symlink_to(tmp_path / "target")
    (tmp_path / "quay.io").write_text("a file")
    observed = observe(tmp_path)
    assert not observed.dirs["ghcr.io"].managed and not observed.dirs["quay.io"].managed
    cluster = FakeCluster(configmap("a", entry("ghcr.io", "http://10.0.0.2:5000", probe=False),
                                    entry("quay.io", "http://10.0.0.3:5000", probe=False)))
    result = agent_for(cluster, tmp_path).sync()
    assert result.ok and result.plan.foreign == ["ghcr.io", "quay.io"]
    assert list((tmp_path / "target").iterdir()) == []


def test_the_root_is_created(tmp_path):
    cluster = FakeCluster(configmap("a", entry("ghcr.io", "http://10.0.0.2:5000", probe=False)))
    agent_for(cluster, tmp_path / "a" / "b").sync()
    assert (tmp_path / "a" / "b" / "ghcr.io" / "hosts.toml").is_file()


def test_an_unwritable_root_is_a_failed_sync_not_a_crash(tmp_path):
    (tmp_path / "file").write_text("")
    cluster = FakeCluster(configmap("a", entry("ghcr.io", "http://10.0.0.2:5000", probe=False)))
    result = agent_for(cluster, tmp_path / "file" / "root").sync()
    assert not result.ok and result.error


# --- command line ----------------------------------------------------------------------------------------

def test_add_parser_registers_node_agent_with_its_defaults():
    parser = argparse.ArgumentParser(prog="registry-cache")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["node-agent"])
    assert (args.root, args.namespace, args.interval, args.once, args.kubeconfig, args.ca_path) == (
        "/etc/containerd/certs.d", "kube-system", 5.0, False, None, None)
    assert callable(args.func)
    args = parser.parse_args(["node-agent", "--kubeconfig", "k", "--root", "/r", "--namespace", "n",
                              "--interval", "0.5", "--once"])
    assert (args.kubeconfig, args.root, args.namespace, args.interval, args.once) == ("k", "/r", "n", 0.5, True)


def test_a_bad_kubeconfig_is_exit_code_2(tmp_path, capsys):
    from extension.cli.main import main
    assert main(["node-agent", "--kubeconfig", str(tmp_path / "missing"), "--root", str(tmp_path), "--once"]) == 2
    assert "cannot load the kubeconfig" in capsys.readouterr().err


# --- caches only nodes can read (run --node-auth) -------------------------------------------------------

def _auth_entry(upstream: str, url: str, key: str) -> dict:
    e = entry(upstream, url)
    e["hosts"][0]["nodeAuth"] = key
    return e


def test_node_auth_header_from_the_secret_or_the_entry_waits():
    cm = configmap("a", _auth_entry("a.io", "https://10.0.0.1:5000", "registry-a-io"),
                   _auth_entry("b.io", "https://10.0.0.2:5000", "registry-b-io"), entry("c.io", "http://10.0.0.3:5000"))
    first = desired_state([cm])  # the agent reads the Secret only when an entry wants it
    assert first.node_auth_wanted == {"registry-a-io", "registry-b-io"} and set(first.hosts_toml) == {"c.io"}
    assert first.keep == {"a.io", "b.io"}  # what is on disk for them stays
    desired = desired_state([cm], node_auth={"registry-a-io": "Basic c2VjcmV0", "registry-b-io": "Basic x\ny"})
    assert set(desired.hosts_toml) == {"a.io", "c.io"} and desired.private == {"a.io"}
    host = tomllib.loads(desired.hosts_toml["a.io"])["host"]["https://10.0.0.1:5000"]
    assert host["header"] == {"Authorization": "Basic c2VjcmV0"}
    assert "Authorization" not in desired.hosts_toml["c.io"]
    assert any("b.io" in p and "not a header value" in p for p in desired.problems)
    assert not any("c2VjcmV0" in p for p in desired.problems)
    bad = entry("d.io", "http://10.0.0.4:5000")
    bad["hosts"][0]["nodeAuth"] = "../etc"
    assert "is not a Secret key" in desired_state([configmap("b", bad)]).problems[0]


def test_node_auth_hosts_toml_is_written_root_only(tmp_path):
    cm = configmap("a", _auth_entry("a.io", "http://10.0.0.1:5000", "registry-a-io"), entry("c.io", "http://10.0.0.3:5000"))
    reads = []

    def read():
        reads.append(1)
        return {"registry-a-io": "Basic c2VjcmV0"}

    root = tmp_path / "certs.d"
    agent = NodeAgent(lambda: [cm], root, prober=lambda url, ca: True, read_node_auth=read)
    result = agent.sync()
    assert result.ok and result.plan.private == {"a.io"} and reads == [1]
    assert (root / "a.io" / "hosts.toml").stat().st_mode & 0o777 == 0o600
    assert (root / "c.io" / "hosts.toml").stat().st_mode & 0o777 == 0o644

    def broken():
        raise PermissionError("403 Forbidden")

    cm2 = configmap("a", _auth_entry("a.io", "http://10.0.0.9:5000", "registry-a-io"))
    agent = NodeAgent(lambda: [cm2], root, prober=lambda url, ca: True, read_node_auth=broken)
    assert agent.sync().ok
    assert "10.0.0.1" in (root / "a.io" / "hosts.toml").read_text()  # kept until the Secret can be read


# --- bad entries never stop the others (issue 9) -----------------------------------------------------------

def test_an_upstream_named_like_the_ca_bundle_never_wedges_the_node(tmp_path):
    """Its directory would be the CA bundle file: before, mkdir failed and no hosts.toml was written at all."""
    cluster = FakeCluster(configmap("a", entry("ca-bundle.pem", "https://10.0.0.9:5000", probe=False),
                                    entry("ghcr.io", "https://10.0.0.2:5000", probe=False), ca=CA.cert_pem))
    result = agent_for(cluster, tmp_path).sync()
    assert result.ok, result.error
    assert sorted(tree(tmp_path)) == [CA_MARKER, CA_BUNDLE_FILE, f"ghcr.io/{MARKER}", "ghcr.io/hosts.toml"]
    assert (tmp_path / CA_BUNDLE_FILE).read_text() == CA.cert_pem
    assert result.desired.problems == ["ConfigMap kube-system/a: registries[0]: upstream ca-bundle.pem is the name "
                                       "of the CA bundle file, not a directory of ours; entry skipped"]


def test_one_entry_that_cannot_be_written_never_stops_the_others(tmp_path):
    # ghcr.io's directory is ours, but its hosts.toml is a directory: writing it fails
    (tmp_path / "ghcr.io" / "hosts.toml").mkdir(parents=True)
    (tmp_path / "ghcr.io" / MARKER).write_text("")
    cluster = FakeCluster(configmap("a", entry("docker.io", "http://10.0.0.1:5000", probe=False),
                                    entry("ghcr.io", "http://10.0.0.2:5000", probe=False),
                                    entry("quay.io", "http://10.0.0.3:5000", probe=False)))
    result = agent_for(cluster, tmp_path).sync()
    assert not result.ok and "ghcr.io: cannot write" in result.error
    assert (tmp_path / "docker.io" / "hosts.toml").is_file() and (tmp_path / "quay.io" / "hosts.toml").is_file()


def test_the_upstream_rule_is_the_apis_full_match():
    """re.match with $ let "docker.io\\n" through; the API's rule matches the whole string."""
    for bad in ["docker.io\n", "docker.io:5000\n", "ca-bundle.pem", "Docker.io"]:
        assert not valid_upstream(bad), repr(bad)
    desired = desired_state([configmap("a", entry("docker.io\n", "http://10.0.0.1:5000"),
                                       entry("ghcr.io", "http://10.0.0.2:5000"))])
    assert list(desired.entries) == ["ghcr.io"]
    assert desired.problems == ["ConfigMap kube-system/a: registries[0]: upstream \"docker.io\\n\" is not a "
                                "registry host[:port]; entry skipped"]


def alias_bomb(levels: int = 7) -> str:
    """A few hundred bytes of YAML whose value ``*x<levels>`` is 10**(levels+1) strings once expanded."""
    lines = ["x0: &x0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("raw, said", [
    (alias_bomb() + "registries:\n- upstream: *x7\n  server: https://a.io\n", "excessive aliasing"),
    ("registries: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 100 levels deep"),
])
def test_a_configmap_built_to_blow_up_is_a_short_problem(raw, said):
    """An alias bomb once printed a 52 MB log line; 5,000 levels of nesting raised RecursionError."""
    assert len(raw) < 12_000
    desired = desired_state([configmap("bad", raw=raw), configmap("ok", entry("ghcr.io", "http://10.0.0.2:5000"))])
    assert list(desired.entries) == ["ghcr.io"] and not desired.complete
    assert len(desired.problems) == 1 and len(desired.problems[0]) < 300, desired.problems
    assert desired.problems[0].startswith("ConfigMap kube-system/bad: registries.yaml cannot be used: ")
    assert said in desired.problems[0]


def test_a_huge_bad_value_is_quoted_short():
    huge = {"upstream": "x" * 1_000_000, "server": "https://a.io", "hosts": [{"url": "https://b"}]}
    desired = desired_state([configmap("a", huge)])
    assert len(desired.problems[0]) < 300 and '"xxxx' in desired.problems[0]


# --- caCerts: only the files this agent writes below the certs root (issue 17, item 8) ----------------------

def _mirror_configmap(name: str, *entries: dict, files: list[dict] | None = None) -> dict:
    cm = configmap(name, *entries)
    if files is not None:
        cm["data"]["files.yaml"] = yaml.safe_dump({"files": files})
    return cm


def _ca_file(path: str) -> dict:
    return {"path": path, "permissions": 0o644,
            "content": {"inline": {"encoding": "b64", "data": base64.b64encode(CA.cert_pem.encode()).decode()}}}


@pytest.mark.parametrize("path", [
    "/dev/zero",
    "/etc/containerd/certs.d/../../../dev/zero",
    "/etc/containerd/certs.d/a.io/../../../../dev/zero-ca-bundle.pem",
    "/etc/containerd/certs.d/ca-bundle.pem/../../../../dev/zero",
    "/etc/containerd/certs.d//dev-ca-bundle.pem",
    "/etc/containerd/certs.d/./x-ca-bundle.pem",
    "/etc/containerd/certs.d/a.io/hosts.toml",
    "/etc/containerd/certs.d/a.io/b/x-ca-bundle.pem",
    "/etc/containerd/certs.d/a.io/x-ca-bundle.pem\n",
    "/etc/containerd/certs.d",
    "/etc/containerd/certs.d.evil/ca-bundle.pem",
    "ca-bundle.pem",
    "../ca-bundle.pem",
    "/etc/containerd/certs.d/a.io/x-ca-bundle.pem",  # the right shape, but no ConfigMap publishes that file
])
def test_a_ca_certs_path_that_is_not_a_file_of_ours_skips_the_entry(tmp_path, path):
    bad = entry("a.io", "https://10.0.0.1:5000")
    bad["hosts"][0]["caCerts"] = [CA_BUNDLE_PATH, path]
    cm = configmap("evil", bad, entry("ghcr.io", "https://10.0.0.2:5000"), ca=CA.cert_pem)
    desired = desired_state([cm])
    assert list(desired.entries) == ["ghcr.io"] and desired.keep == {"a.io"} and desired.complete
    [problem] = desired.problems
    assert problem.startswith('ConfigMap kube-system/evil: registries[0]: host "https://10.0.0.1:5000": caCerts '
                              "path "), problem
    assert problem.endswith("; entry skipped") and len(problem) < 400
    assert path.strip() in problem or path.encode("unicode_escape").decode() in problem

    # on a node: what is on disk for a.io stays, ghcr.io is written, nothing names the path
    root = tmp_path / "certs.d"
    (root / "a.io").mkdir(parents=True)
    (root / "a.io" / MARKER).write_text("")
    (root / "a.io" / "hosts.toml").write_text("# the last good one\n")
    result = NodeAgent(lambda: [cm], root, prober=lambda url, ca: True).sync()
    assert result.ok, result.error
    assert (root / "a.io" / "hosts.toml").read_text() == "# the last good one\n"
    assert (root / "ghcr.io" / "hosts.toml").is_file()
    assert tomllib.loads((root / "ghcr.io" / "hosts.toml").read_text())["host"]["https://10.0.0.2:5000"]["ca"] == [
        str(root / CA_BUNDLE_FILE)]


def test_a_mirror_ca_file_published_anywhere_is_accepted_and_mapped_below_the_root():
    host = {"url": "https://m.example:8443", "capabilities": ["pull"],
            "caCerts": ["/etc/containerd/certs.d/reg.io-5000/m.example-8443-ca-bundle.pem"]}
    cm = _mirror_configmap("m", {"upstream": "reg.io:5000", "server": "https://reg.io:5000", "hosts": [host]},
                           files=[_ca_file(host["caCerts"][0])])
    desired = desired_state([cm], ca_path="/var/certs.d/ca-bundle.pem")
    assert desired.problems == [] and desired.files.keys() == {"reg.io-5000/m.example-8443-ca-bundle.pem"}
    assert desired.ca_files == {"reg.io:5000": {"reg.io-5000/m.example-8443-ca-bundle.pem"}}
    assert tomllib.loads(desired.hosts_toml["reg.io:5000"])["host"]["https://m.example:8443"]["ca"] == [
        "/var/certs.d/reg.io-5000/m.example-8443-ca-bundle.pem"]
    # a files.yaml entry that cannot be used: the entry naming it is not written either
    broken = _mirror_configmap("m", {"upstream": "reg.io:5000", "server": "https://reg.io:5000", "hosts": [host]},
                               files=[{**_ca_file(host["caCerts"][0]), "content": {"inline": {"data": "x"}}}])
    desired = desired_state([broken])
    assert desired.entries == {} and desired.keep == {"reg.io:5000", "reg.io-5000"}
    assert "is not a file published in files.yaml; entry skipped" in desired.problems[-1]


def test_a_ca_file_in_a_directory_that_is_not_ours_is_never_named(tmp_path):
    """A link where the mirror's CA directory would be (reg.io:5000's CA lives in reg.io-5000/): the agent writes
    nothing through it, and no hosts.toml names a file in it."""
    host = {"url": "https://m.example:8443", "capabilities": ["pull"],
            "caCerts": ["/etc/containerd/certs.d/reg.io-5000/m.example-8443-ca-bundle.pem"]}
    cm = _mirror_configmap("m", {"upstream": "reg.io:5000", "server": "https://reg.io:5000", "hosts": [host]},
                           entry("ghcr.io", "http://10.0.0.2:5000", probe=False), files=[_ca_file(host["caCerts"][0])])
    root, elsewhere = tmp_path / "certs.d", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "m.example-8443-ca-bundle.pem").symlink_to("/dev/zero")
    (root / "reg.io-5000").symlink_to(elsewhere)
    result = NodeAgent(lambda: [cm], root, prober=lambda url, ca: True).sync()
    assert result.ok, result.error
    assert result.plan.foreign_ca == {"reg.io:5000": "reg.io-5000/m.example-8443-ca-bundle.pem"}
    assert not (root / "reg.io:5000").exists() and (root / "ghcr.io" / "hosts.toml").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["m.example-8443-ca-bundle.pem"]
    # once the directory is the agent's to make, both are written, the CA file first
    (root / "reg.io-5000").unlink()
    assert NodeAgent(lambda: [cm], root, prober=lambda url, ca: True).sync().ok
    assert (root / "reg.io-5000" / "m.example-8443-ca-bundle.pem").read_text() == CA.cert_pem
    assert (root / "reg.io:5000" / "hosts.toml").is_file()


def test_the_agent_never_reads_through_a_link_in_place_of_a_file_of_ours(tmp_path):
    """Our ca-bundle.pem replaced by a link to a file elsewhere that holds the same text: the link is replaced by
    the file itself (read through, it looked up to date; a link to /dev/zero would have been read forever)."""
    root, outside = tmp_path / "certs.d", tmp_path / "outside.pem"
    cm = configmap("a", entry("ghcr.io", "https://10.0.0.2:5000", probe=False), ca=CA.cert_pem)
    agent = NodeAgent(lambda: [cm], root, prober=lambda url, ca: True)
    assert agent.sync().ok
    outside.write_text(CA.cert_pem)
    (root / CA_BUNDLE_FILE).unlink()
    (root / CA_BUNDLE_FILE).symlink_to(outside)
    assert agent.sync().ok
    assert not (root / CA_BUNDLE_FILE).is_symlink() and (root / CA_BUNDLE_FILE).read_text() == CA.cert_pem


# --- the loop: a change at once, a timer for what waits (issue 21, item 5) ----------------------------------

def _wait(what, probe, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_wake_syncs_at_once_and_the_timer_probes_again_without_reading_the_source(tmp_path):
    cluster = FakeCluster(configmap("a", entry("ghcr.io", "http://10.0.0.2:5000", probe=False)))
    reads = []

    def read():
        reads.append(time.monotonic())
        return cluster.list()

    agent = NodeAgent(read, tmp_path, prober=cluster.probe)
    stop = threading.Event()
    listed = threading.Event()
    thread = threading.Thread(target=agent.run, args=(60.0, stop, lambda s: listed.wait(5)), daemon=True)
    thread.start()
    time.sleep(0.2)
    assert reads == []  # nothing before the source's first list
    listed.set()
    _wait("ghcr.io", lambda: (tmp_path / "ghcr.io" / "hosts.toml").is_file())

    # a change: written at once when woken (the timer is a minute away)
    cluster.configmaps = [configmap("a", entry("ghcr.io", "http://10.0.0.9:5000", probe=False))]
    started = time.monotonic()
    agent.wake()
    done = _wait("the new endpoint", lambda: "10.0.0.9" in (tmp_path / "ghcr.io" / "hosts.toml").read_text())
    assert done - started < 1.0
    stop.set()
    agent.wake()
    thread.join(2)
    assert not thread.is_alive()

    # the timer: a cache that does not answer is probed again every interval, unwoken
    cluster.configmaps = [configmap("a", entry("quay.io", "http://10.0.0.3:5000"))]
    agent2 = NodeAgent(read, tmp_path / "2", prober=cluster.probe)
    stop2 = threading.Event()
    thread = threading.Thread(target=agent2.run, args=(0.1, stop2), daemon=True)
    thread.start()
    _wait("two probes", lambda: cluster.probed.count("http://10.0.0.3:5000/v2/") >= 2)
    cluster.answering = {"http://10.0.0.3:5000"}
    _wait("quay.io once its cache answers", lambda: (tmp_path / "2" / "quay.io" / "hosts.toml").is_file())
    stop2.set()
    thread.join(2)
    assert not thread.is_alive()


def test_the_node_auth_secret_is_released_when_no_entry_names_a_key(tmp_path):
    released = []
    cms = [configmap("a", _auth_entry("a.io", "http://10.0.0.1:5000", "registry-a-io"))]
    agent = NodeAgent(lambda: cms, tmp_path, prober=lambda url, ca: True,
                      read_node_auth=lambda: {"registry-a-io": "Basic c2VjcmV0"},
                      release_node_auth=lambda: released.append(1))
    assert agent.sync().ok and released == []
    cms[:] = [configmap("a", entry("a.io", "http://10.0.0.1:5000"))]
    assert agent.sync().ok and released == [1]
