"""The node agent as a process against the real local API server, writing into a temp directory.

- What the controller (``registry-cache run --standalone``, a process) publishes for a Shoot: nothing is
  written while the caches (cluster IPs, which nothing serves here) do not answer, only the CA bundle; the
  same ConfigMap pointed at caches on 127.0.0.1 (one with a server certificate from the controller's own CA)
  gets its entries written once they answer.
- ConfigMaps made by the test: waiting, answering (any HTTP status), an endpoint that moves, an upstream
  removed, the CA bundle coming and going, an upstream in two ConfigMaps, a user's own directory.
- Watched, not polled: with an hour between the agent's timer ticks, a change reaches the files within 2 s; after
  a 410 Gone (etcd compacted past the agent's resourceVersion while it was cut off) it lists again, and after the
  API server is killed and started again it follows changes again.
"""

from __future__ import annotations

import base64
import copy
import http.server
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from api.v1alpha3 import RegistryStatus
from extension.component import certs
from extension.component.containerd import hosts_toml_for_entry, hosts_toml_for_status
from extension.constants import CA_BUNDLE_FILE, CA_BUNDLE_PATH, DEFAULT_DIAL_TIMEOUT, NODE_CONFIG_LABEL
from extension.nodeagent.agent import probe
from extension.nodeagent.plan import CA_MARKER, MARKER, desired_state
from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
OWNER = "registry-cache.gardener.cloud/owner"


# --- helpers: a fake cache, the agent process --------------------------------------------------------------

class Cache:
    """An HTTP(S) server on 127.0.0.1 that answers ``/v2/`` as a registry does; counts the requests."""

    def __init__(self, status: int = 200, tls: certs.KeyPair | None = None, workdir: Path | None = None,
                 port: int = 0):
        cache = self
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                cache.requests.append(self.path)
                body = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="https://auth.example/token"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.scheme = "http"
        if tls is not None:
            assert workdir is not None
            cert, key = workdir / f"cache-{uuid.uuid4().hex[:6]}.crt", workdir / f"cache-{uuid.uuid4().hex[:6]}.key"
            cert.write_text(tls.cert_pem)
            key.write_text(tls.key_pem)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_cert(ca: certs.KeyPair) -> certs.KeyPair:
    return certs.generate_server_cert(ca, "cache", ["localhost"], ["127.0.0.1"])


def agent_args(kubeconfig: Path, root: Path, namespace: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "extension.cli", "node-agent", "--kubeconfig", str(kubeconfig), "--root", str(root),
            "--namespace", namespace, *extra]


class AgentProcess(OperatorProcess):
    """``registry-cache node-agent`` as a process, logs in a file."""

    def __init__(self, kubeconfig: Path, log_path: Path, root: Path, namespace: str, interval: float = 0.3):
        super().__init__(kubeconfig, log_path)
        self.args = agent_args(kubeconfig, root, namespace, "--interval", str(interval))


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def node_config(namespace: str, name: str, entries: list[dict], ca: str | None = None) -> dict:
    data = {"registries.yaml": yaml.safe_dump({"registries": entries}, sort_keys=False)}
    if ca:
        data["ca-bundle.pem"] = ca
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {NODE_CONFIG_LABEL: "true"}}, "data": data}


def entry(upstream: str, url: str, probe: bool = True) -> dict:
    host = {"url": url, "capabilities": ["pull", "resolve"]}
    if url.startswith("https://"):
        host["caCerts"] = [CA_BUNDLE_PATH]
    return {"upstream": upstream, "server": f"https://{upstream}", "hosts": [host], "readinessProbe": probe}


def expected_hosts_toml(e: dict, root: Path) -> str:
    e = copy.deepcopy(e)
    for host in e["hosts"]:
        host["caCerts"] = [str(root / CA_BUNDLE_FILE) if c == CA_BUNDLE_PATH else c for c in host.get("caCerts", [])]
        if not host["caCerts"]:
            del host["caCerts"]
    return hosts_toml_for_entry(e)


# --- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kube(control_plane):
    return Kube(control_plane.api_client(), field_manager="nodeagent-test")


@pytest.fixture(scope="module")
def standalone(control_plane, tmp_path_factory):
    with OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("nodeagent-op") / "op.log",
                         "--standalone") as op:
        yield op


# --- what the controller publishes -------------------------------------------------------------------------

def test_what_the_controller_publishes_waits_for_the_caches(kube, standalone, control_plane, tmp_path):
    project, name = "nodeagent", f"na-{uuid.uuid4().hex[:5]}"
    on, off = f"on.{name}.example", f"off.{name}.example:5000"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"garden-{project}"}})
    kube.apply({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                "metadata": {"name": name, "namespace": f"garden-{project}"},
                "spec": {"extensions": [{"type": "registry-cache", "providerConfig": {
                    "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                    "caches": [{"upstream": on}, {"upstream": off, "http": {"tls": False}}]}}],
                    "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}})
    seed_ns = f"shoot--{project}--{name}"
    ext = wait_for("the Extension to succeed", lambda: ((e := kube.get("Extension", "registry-cache", seed_ns))
                   or {}).get("status", {}).get("lastOperation", {}).get("state") == "Succeeded" and e,
                   timeout=60, log=standalone.log)
    status = RegistryStatus.model_validate(ext["status"]["providerStatus"])
    [published] = kube.list("ConfigMap", "kube-system", label_selector=f"{NODE_CONFIG_LABEL}=true,{OWNER}={seed_ns}")
    bundle_secret = kube.get("Secret", "ca-extension-registry-cache-bundle", seed_ns)
    controller_bundle = base64.b64decode(bundle_secret["data"]["bundle.crt"]).decode()
    assert published["data"]["ca-bundle.pem"] == controller_bundle
    # the agent reads exactly the files the controller means
    # (with the controller's default dial_timeout for containerd 2.1+)
    assert desired_state([published]).hosts_toml == hosts_toml_for_status(status, dial_timeout=DEFAULT_DIAL_TIMEOUT)

    # The cluster IPs do not answer here: one sync writes the CA bundle and no hosts.toml.
    root = tmp_path / "certs.d"
    t0 = time.monotonic()
    done = subprocess.run(agent_args(control_plane.kubeconfig, root, "kube-system", "--once"),
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert controller_bundle in (root / CA_BUNDLE_FILE).read_text()
    endpoints = {c.upstream: c.endpoint for c in status.caches}
    assert endpoints[on].startswith("https://10.0.0.") and endpoints[off].startswith("http://10.0.0.")
    # https: only a server with a certificate of the controller's CA answers, and nothing serves it here
    assert not (root / on).exists()
    assert f"{on}: the cache at {endpoints[on]} does not answer {endpoints[on]}/v2/ yet" in done.stderr
    # http: any HTTP answer counts (as with gardener-node-agent). Some sandboxes answer every outgoing
    # plain-HTTP connection themselves (a transparent proxy); the agent must then do what its probe saw.
    if probe(endpoints[off] + "/v2/"):
        assert (root / off / "hosts.toml").exists()
    else:
        assert not (root / off).exists()
        assert f"{off}: the cache at {endpoints[off]} does not answer {endpoints[off]}/v2/ yet" in done.stderr
    assert took < 30, f"one sync took {took:.1f}s"

    # The same ConfigMap pointed at caches on this machine: the https one with a server certificate of the
    # controller's own CA, trusted through the bundle the controller published.
    ca_secret = kube.get("Secret", "ca-extension-registry-cache", seed_ns)
    controller_ca = certs.KeyPair(base64.b64decode(ca_secret["data"]["ca.crt"]).decode(),
                                  base64.b64decode(ca_secret["data"]["ca.key"]).decode())
    ns = f"nodeagent-{uuid.uuid4().hex[:5]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    https_port, http_port = free_port(), free_port()
    moved = copy.deepcopy(published)
    moved["metadata"] = {"name": published["metadata"]["name"], "namespace": ns,
                         "labels": published["metadata"]["labels"]}
    moved["data"]["registries.yaml"] = (published["data"]["registries.yaml"]
                                        .replace(endpoints[on], f"https://127.0.0.1:{https_port}")
                                        .replace(endpoints[off], f"http://127.0.0.1:{http_port}"))
    kube.apply(moved)
    caches: list[Cache] = []
    root = tmp_path / "certs.d-2"
    with AgentProcess(control_plane.kubeconfig, tmp_path / "agent.log", root, ns) as agent:
        try:
            wait_for("the agent to wait for both caches", lambda: agent.log().count("does not answer") >= 2,
                     log=agent.log)
            assert not (root / on).exists() and not (root / off).exists()
            caches.append(Cache(tls=server_cert(controller_ca), workdir=tmp_path, port=https_port))
            caches.append(Cache(port=http_port))
            wait_for("both hosts.toml", lambda: (root / on / "hosts.toml").exists()
                     and (root / off / "hosts.toml").exists(), log=agent.log)
            assert caches[0].requests[:1] == ["/v2/"] and caches[1].requests[:1] == ["/v2/"]
            on_toml = (root / on / "hosts.toml").read_text()
            assert f'[host."https://127.0.0.1:{https_port}"]' in on_toml
            assert f'ca = ["{root / CA_BUNDLE_FILE}"]' in on_toml
            assert 'server = "https://' + on + '"' in on_toml
            assert (root / CA_BUNDLE_FILE).read_text() == controller_bundle
            assert (root / on / MARKER).is_file() and (root / off / MARKER).is_file()
        finally:
            for cache in caches:
                cache.close()
        assert agent.stop() == 0
    kube.delete("ConfigMap", published["metadata"]["name"], ns)
    kube.delete("Shoot", name, f"garden-{project}")
    wait_for("the Shoot to go", lambda: kube.get("Shoot", name, f"garden-{project}") is None, timeout=60,
             log=standalone.log)


# --- the lifecycle, with ConfigMaps made here --------------------------------------------------------------

def test_lifecycle_with_local_caches(kube, control_plane, tmp_path):
    ns = f"nodeagent-{uuid.uuid4().hex[:5]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    root = tmp_path / "certs.d"
    (root / "docker.io").mkdir(parents=True)
    (root / "docker.io" / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n# the user\'s own\n')
    ca = certs.generate_ca("test-ca")
    plain = Cache(status=200)
    authy = Cache(status=401)  # a registry that wants a token: it answers, so it counts
    secure = Cache(tls=server_cert(ca), workdir=tmp_path)
    late_port, moved_port = free_port(), free_port()
    late: Cache | None = None
    moved: Cache | None = None
    a = entry("a.example", plain.url)
    b = entry("b.example:5000", secure.url)
    c = entry("c.example", f"http://127.0.0.1:{late_port}")
    d = entry("d.example", authy.url)
    docker = entry("docker.io", plain.url)
    kube.apply(node_config(ns, "first", [a, b, c, d, docker], ca=ca.cert_pem))
    time.sleep(1.1)  # creationTimestamp has seconds: "second" is younger
    a_dup = entry("a.example", f"http://127.0.0.1:{free_port()}")
    kube.apply(node_config(ns, "second", [a_dup]))
    agent = AgentProcess(control_plane.kubeconfig, tmp_path / "agent.log", root, ns).start()
    try:
        wait_for("a, b and d", lambda: all((root / u / "hosts.toml").exists()
                                           for u in ("a.example", "b.example:5000", "d.example")), log=agent.log)
        for e in (a, b, d):
            assert (root / e["upstream"] / "hosts.toml").read_text() == expected_hosts_toml(e, root)
            assert (root / e["upstream"] / MARKER).is_file()
        assert (root / CA_BUNDLE_FILE).read_text() == ca.cert_pem and (root / CA_MARKER).is_file()
        assert "/v2/" in plain.requests and "/v2/" in secure.requests and "/v2/" in authy.requests
        # c does not answer; the duplicate a.example of the younger ConfigMap lost; docker.io is the user's
        assert not (root / "c.example").exists()
        log = agent.log()
        assert f"c.example: the cache at http://127.0.0.1:{late_port} does not answer" in log
        assert (f"upstream a.example is published by ConfigMaps {ns}/first and {ns}/second: using {ns}/first"
                in log)
        assert f"docker.io: {root / 'docker.io'} is not ours (no {MARKER}): left as it is" in log
        assert (root / "docker.io" / "hosts.toml").read_text().endswith("# the user's own\n")
        assert sorted(p.name for p in (root / "docker.io").iterdir()) == ["hosts.toml"]

        # c's cache comes up: its hosts.toml follows
        late = Cache(port=late_port)
        wait_for("c", lambda: (root / "c.example" / "hosts.toml").exists(), log=agent.log)
        assert (root / "c.example" / "hosts.toml").read_text() == expected_hosts_toml(c, root)

        # a's cache moves to an endpoint that does not answer yet: the old file stays until it does
        a_moved = entry("a.example", f"http://127.0.0.1:{moved_port}")
        kube.apply(node_config(ns, "first", [a_moved, b, c, d, docker], ca=ca.cert_pem))
        wait_for("the agent to wait for a's new endpoint",
                 lambda: f"a.example: the cache at http://127.0.0.1:{moved_port} does not answer" in agent.log(),
                 log=agent.log)
        assert (root / "a.example" / "hosts.toml").read_text() == expected_hosts_toml(a, root)
        moved = Cache(port=moved_port)
        wait_for("a's new hosts.toml", lambda: (root / "a.example" / "hosts.toml").read_text()
                 == expected_hosts_toml(a_moved, root), log=agent.log)

        # c removed from the ConfigMap: its directory goes
        kube.apply(node_config(ns, "first", [a_moved, b, d, docker], ca=ca.cert_pem))
        wait_for("c's directory to go", lambda: not (root / "c.example").exists(), log=agent.log)

        # b switches to http: hosts.toml without the CA, and the CA bundle goes
        b_http = entry("b.example:5000", plain.url)
        kube.apply(node_config(ns, "first", [a_moved, b_http, d, docker]))
        wait_for("b over http and no CA bundle", lambda: not (root / CA_BUNDLE_FILE).exists() and
                 (root / "b.example:5000" / "hosts.toml").read_text() == expected_hosts_toml(b_http, root),
                 log=agent.log)
        assert not (root / CA_MARKER).exists()

        # the API server's answer is the truth: every ConfigMap gone, every directory of ours gone
        kube.delete("ConfigMap", "first", ns)
        kube.delete("ConfigMap", "second", ns)
        wait_for("only the user's directory", lambda: sorted(p.name for p in root.iterdir()) == ["docker.io"],
                 log=agent.log)
        assert tree(root) == {"docker.io/hosts.toml":
                              'server = "https://registry-1.docker.io"\n# the user\'s own\n'}
        assert not list(tmp_path.rglob("*.tmp"))
    finally:
        code = agent.stop()
        for cache in (plain, authy, secure, late, moved):
            if cache is not None:
                cache.close()
    assert code == 0, agent.log()
    assert "node agent: stopped" in agent.log()
    assert agent.log().count("is not ours") == 1  # said once, not every 0.3 s


def test_the_api_server_away_leaves_the_files(kube, control_plane, tmp_path):
    """A kubeconfig whose server does not answer: --once fails with exit 1 and touches nothing."""
    root = tmp_path / "certs.d"
    (root / "ghcr.io").mkdir(parents=True)
    (root / "ghcr.io" / MARKER).write_text("")
    (root / "ghcr.io" / "hosts.toml").write_text("kept")
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(config))
    done = subprocess.run(agent_args(broken, root, "kube-system", "--once"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "cannot list the node-config ConfigMaps, files left as they are" in done.stderr
    assert tree(root) == {f"ghcr.io/{MARKER}": "", "ghcr.io/hosts.toml": "kept"}


# --- watched, not polled (issue 21, item 5) ------------------------------------------------------------------

def _follows(root: Path, upstream: str, url: str, seconds: float) -> float:
    """How long until ``root/upstream/hosts.toml`` names ``url``; fails after ``seconds``."""
    t0 = time.monotonic()
    path = root / upstream / "hosts.toml"
    while time.monotonic() - t0 < seconds:
        if path.is_file() and f'[host."{url}"]' in path.read_text():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{path} did not name {url} within {seconds}s")


def test_a_change_reaches_the_files_at_once_without_polling(kube, control_plane, tmp_path):
    """The agent's timer is an hour: every change below can only come through its watch."""
    ns = f"nodeagent-{uuid.uuid4().hex[:5]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    root = tmp_path / "certs.d"
    kube.apply(node_config(ns, "watched", [entry("w.example", "http://127.0.0.1:5001", probe=False)]))
    with AgentProcess(control_plane.kubeconfig, tmp_path / "agent.log", root, ns, interval=3600) as agent:
        _follows(root, "w.example", "http://127.0.0.1:5001", 30)
        took = []
        for port in (5002, 5003, 5004):
            kube.apply(node_config(ns, "watched", [entry("w.example", f"http://127.0.0.1:{port}", probe=False)]))
            took.append(_follows(root, "w.example", f"http://127.0.0.1:{port}", 2.0))
        # a second ConfigMap, and its removal
        kube.apply(node_config(ns, "other", [entry("o.example", "http://127.0.0.1:5005", probe=False)]))
        took.append(_follows(root, "o.example", "http://127.0.0.1:5005", 2.0))
        kube.delete("ConfigMap", "other", ns)
        t0 = time.monotonic()
        wait_for("o.example to go", lambda: not (root / "o.example").exists(), timeout=2.0, interval=0.02,
                 log=agent.log)
        took.append(time.monotonic() - t0)
        print(f"\nnode agent: a ConfigMap change reached the files in {', '.join(f'{t:.2f}' for t in took)} s")
        assert agent.stop() == 0
    kube.delete("ConfigMap", "watched", ns)


@pytest.fixture
def own_control_plane(control_plane_bin_dir, tmp_path):
    """A control plane of this test's own, to compact and restart. Without the API server's watch cache a watch
    goes to etcd, which answers a compacted resourceVersion with 410 Gone, every time."""
    from extension.local.controlplane import LocalControlPlane

    cp = LocalControlPlane(workdir=tmp_path / "cp", bin_dir=control_plane_bin_dir, name="agent-410",
                           apiserver_args=["--watch-cache=false"])
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def _etcd(cp, call: str, body: dict) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(f"{cp.etcd_url}/v3/{call}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_after_410_gone_and_a_restart_of_the_api_server_the_agent_lists_again_and_follows(own_control_plane,
                                                                                           tmp_path):
    from .tcp_proxy import TcpProxy

    cp = own_control_plane
    kube = Kube(cp.api_client(), field_manager="nodeagent-test")
    ns = "nodeagent-410"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # the agent reaches the API server through a proxy that can cut it off, and that follows it to a new port
    proxy = TcpProxy("127.0.0.1", cp.port).start()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "agent-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    root = tmp_path / "certs.d"

    def publish(port: int) -> str:
        url = f"http://127.0.0.1:{port}"
        kube.apply(node_config(ns, "watched", [entry("w.example", url, probe=False)]))
        return url

    with AgentProcess(kubeconfig, tmp_path / "agent.log", root, ns, interval=3600) as agent:
        _follows(root, "w.example", publish(6001), 30)
        _follows(root, "w.example", publish(6002), 2.0)

        # 410: the agent cut off, a change meanwhile, etcd compacted past it; back, its watch from the old
        # resourceVersion is answered 410 Gone: it lists again and finds the change
        proxy.cut()
        wait_for("the agent to see its watch end", lambda: "informer node-config" in agent.log(), log=agent.log)
        url = publish(6003)
        kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated", "namespace": ns}})
        revision = int(_etcd(cp, "kv/range", {"key": "Lw=="})["header"]["revision"])  # key "/"
        _etcd(cp, "kv/compaction", {"revision": str(revision), "physical": True})
        proxy.restore()
        _follows(root, "w.example", url, 40)
        wait_for("the agent to list again", lambda: "resourceVersion too old, listing again" in agent.log()
                 or "410" in agent.log(), log=agent.log)
        _follows(root, "w.example", publish(6004), 2.0)  # and it watches again

        # the API server killed and started again (on another port, with the same etcd data): the agent waits,
        # comes back, and follows changes again
        os.kill(cp.pids["kube-apiserver"], signal.SIGKILL)
        cp.stop()
        cp.start()
        proxy.cut()
        proxy.target = ("127.0.0.1", cp.port)
        proxy.restore()
        kube = Kube(cp.api_client(), field_manager="nodeagent-test")
        _follows(root, "w.example", publish(6005), 45)
        _follows(root, "w.example", publish(6006), 2.0)
        assert (root / "w.example" / "hosts.toml").read_text() == expected_hosts_toml(
            entry("w.example", "http://127.0.0.1:6006", probe=False), root)
        assert agent.stop() == 0
    proxy.cut()


def test_the_node_auth_secret_is_watched_while_a_cache_needs_it(kube, control_plane, tmp_path):
    """New header values change the Secret and no ConfigMap: the agent follows them through its watch of the
    Secret (by name), which it holds only while an entry names a key. No header value is ever logged."""
    ns = f"nodeagent-{uuid.uuid4().hex[:5]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    root = tmp_path / "certs.d"
    private = entry("p.example", "http://127.0.0.1:5011", probe=False)
    private["hosts"][0]["nodeAuth"] = "registry-p-example"

    def secret(value: str) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry-cache-node-auth", "namespace": ns},
                "data": {"registry-p-example": base64.b64encode(value.encode()).decode()}}

    kube.apply(node_config(ns, "private", [private]))
    with AgentProcess(control_plane.kubeconfig, tmp_path / "agent.log", root, ns, interval=3600) as agent:
        wait_for("the agent to wait for the key", lambda: "key registry-p-example of Secret registry-cache-node-auth "
                 "is not there (yet)" in agent.log(), log=agent.log)
        assert not (root / "p.example").exists()
        kube.apply(secret("Basic Zmlyc3Q6b25l"))
        wait_for("the header", lambda: (root / "p.example" / "hosts.toml").is_file(), timeout=2.0, interval=0.02,
                 log=agent.log)
        assert '"Authorization" = "Basic Zmlyc3Q6b25l"' in (root / "p.example" / "hosts.toml").read_text()
        assert (root / "p.example" / "hosts.toml").stat().st_mode & 0o777 == 0o600
        kube.apply(secret("Basic c2Vjb25kOnR3bw=="))  # new credentials, the ConfigMap as it was
        wait_for("the new header", lambda: "c2Vjb25kOnR3bw==" in (root / "p.example" / "hosts.toml").read_text(),
                 timeout=2.0, interval=0.02, log=agent.log)
        # no entry names a key any more: the watch of the Secret ends, the hosts.toml has no header
        kube.apply(node_config(ns, "private", [entry("p.example", "http://127.0.0.1:5011", probe=False)]))
        wait_for("no header", lambda: "Authorization" not in (root / "p.example" / "hosts.toml").read_text(),
                 timeout=2.0, interval=0.02, log=agent.log)
        wait_for("the Secret's watch to end", lambda: "no longer watching Secret" in agent.log(), log=agent.log)
        assert agent.stop() == 0
    log = agent.log()
    assert log.count(f": watching Secret {ns}/registry-cache-node-auth") == 1
    assert "Zmlyc3Q6b25l" not in log and "c2Vjb25kOnR3bw==" not in log
    kube.delete("ConfigMap", "private", ns)
