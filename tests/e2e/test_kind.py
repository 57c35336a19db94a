"""Gardener's registry-cache e2e scenarios (tests/e2e/scenarios.py) on a kind cluster, where Docker exists.

The same scenario code as on the one-node cluster (tests/e2e/test_node.py); only the cluster differs. The
cluster comes from hack/kind-up.sh (reused when it exists): the image built from the Dockerfile, the CRDs,
the controller (`registry-cache run --standalone`) and the node agent DaemonSet. The upstreams are
distribution registries (the caches' own image, registry:3.1.1 by digest) in the cluster itself, plain HTTP on their Service's cluster IP
(``<clusterIP>:5000``: a node reaches it through kube-proxy when it falls back, and nothing beyond the
cluster has it), one private (htpasswd); test images are busybox, made unique by a label and pushed with
crane from a Job. kind nodes are Docker containers: their files are read with ``docker exec``, a cache
process is frozen through ``crictl`` on the node, containerd's log is its journal.

Needs a Docker engine, kind and kubectl, and access from the cluster to docker.io and gcr.io (the
registry, busybox and crane images). Without Docker or kind every scenario skips and says what is missing.
The token-auth private upstream of an earlier version of these scenarios is still checked here, without kind,
with the distribution and crane binaries of hack/registry-bins.sh (the last test).

    python -m pytest tests/e2e/test_kind.py       # KIND_CLUSTER_NAME (default registry-cache)
    REGISTRY_CACHE_KIND_KEEP=1 python -m pytest tests/e2e/test_kind.py   # keep a cluster it created
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from api import names
from extension.component import certs
from extension.constants import DEFAULT_IMAGE
from extension.local.registries import bcrypt_hash, parse_access_log, parse_authorized

from .scenarios import *  # noqa: F403 - the scenarios, run on kind
from .scenarios import E2ECluster, Image, wait_for

REPO = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "registry-cache")
CONTEXT = f"kind-{CLUSTER}"
KEEP = os.environ.get("REGISTRY_CACHE_KIND_KEEP") == "1"
API_VERSION = "registry.extensions.gardener.cloud/v1alpha3"
UPSTREAMS_NAMESPACE = "registry-cache-e2e-upstreams"
REGISTRY_IMAGE = DEFAULT_IMAGE  # the upstreams run the caches' own image (distribution 3.1.1)
CRANE_IMAGE = "gcr.io/go-containerregistry/crane:debug"
BASE_IMAGE = "docker.io/library/busybox:1.36.1"


def missing_tools() -> list[str]:
    missing = []
    docker = shutil.which("docker")
    if docker is None:
        missing.append("the docker CLI and a Docker engine (kind runs its nodes as Docker containers)")
    else:
        try:
            info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                  text=True, timeout=30)
            reason = " ".join((info.stderr or info.stdout).split())[:200]
        except subprocess.TimeoutExpired:
            info, reason = None, "no answer in 30s"
        if info is None or info.returncode != 0:
            missing.append(f"a Docker engine (the docker CLI is there, but `docker info` failed: {reason})")
    if shutil.which("kind") is None:
        missing.append("the kind binary (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
    if shutil.which("kubectl") is None:
        missing.append("kubectl")
    return missing


class KindUpstream:
    """distribution in the cluster: a Deployment with a volume, its Service, plain HTTP on the cluster IP."""

    def __init__(self, cluster: KindCluster, role: str, users: dict[str, str] | None):
        self.cluster, self.role, self.users = cluster, role, dict(users or {})
        self.name = f"upstream-{role}"
        cluster.apply(*self._objects())
        svc = wait_for(f"the Service of {self.name}", lambda: (cluster.get("service", self.name, UPSTREAMS_NAMESPACE)
                                                              or {}).get("spec", {}).get("clusterIP"), timeout=60)
        self.host = f"{svc}:5000"
        self.remote_url = f"http://{self.host}"
        self.wait_ready()

    def _objects(self) -> list[dict]:
        ns, labels = UPSTREAMS_NAMESPACE, {"app": f"upstream-{self.role}"}
        config: dict = {"version": 0.1, "log": {"level": "info"}, "http": {"addr": ":5000"},
                        "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}}}
        if self.users:
            config["auth"] = {"htpasswd": {"realm": self.name, "path": "/auth/htpasswd"}}
        htpasswd = "".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items())
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": self.name, "namespace": ns},
             "stringData": {"config.yml": yaml.safe_dump(config), "htpasswd": htpasswd}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": self.name, "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": self.name, "namespace": ns},
             "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                          "name": "registry", "image": REGISTRY_IMAGE, "args": ["/etc/upstream/config.yml"],
                          "ports": [{"containerPort": 5000}], "readinessProbe": {"tcpSocket": {"port": 5000}},
                          "volumeMounts": [{"name": "config", "mountPath": "/etc/upstream", "readOnly": True},
                                           {"name": "config", "mountPath": "/auth", "readOnly": True},
                                           {"name": "data", "mountPath": "/var/lib/registry"}]}],
                          "volumes": [{"name": "config", "secret": {"secretName": self.name}},
                                      {"name": "data", "persistentVolumeClaim": {"claimName": self.name}}]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": self.name, "namespace": ns},
             "spec": {"selector": labels, "ports": [{"port": 5000, "targetPort": 5000}]}},
        ]

    def wait_ready(self) -> None:
        wait_for(f"{self.name} ready", lambda: ((self.cluster.get("deployment", self.name, UPSTREAMS_NAMESPACE) or {})
                                                .get("status") or {}).get("readyReplicas") == 1, timeout=300)

    def _log(self) -> str:
        return self.cluster.kubectl("logs", "-n", UPSTREAMS_NAMESPACE, f"deployment/{self.name}", "--tail=-1",
                                    check=False).stdout

    def push(self, repository: str, tag: str) -> Image:
        ref = f"{self.host}/{repository}:{tag}"
        job = f"push-{uuid.uuid4().hex[:8]}"
        login = ""
        if self.users:
            user = sorted(self.users)[-1]
            login = f'crane auth login --insecure {self.host} -u {user} -p "$PASSWORD" && '
        script = (f"{login}crane mutate --insecure {BASE_IMAGE} --label e2e={uuid.uuid4().hex} "
                  f"--entrypoint sleep --cmd 3600 -t {ref} >/dev/null && crane digest --insecure {ref} && "
                  f"crane manifest --insecure {ref}")
        env = [{"name": "DOCKER_CONFIG", "value": "/tmp/docker"}]
        if self.users:
            env.append({"name": "PASSWORD", "value": self.users[sorted(self.users)[-1]]})
        self.cluster.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job, "namespace": UPSTREAMS_NAMESPACE},
                            "spec": {"backoffLimit": 3, "template": {"spec": {"restartPolicy": "Never", "containers": [{
                                "name": "crane", "image": CRANE_IMAGE, "command": ["sh", "-c", script], "env": env}]}}}})
        wait_for(f"Job {job}", lambda: ((self.cluster.get("job", job, UPSTREAMS_NAMESPACE) or {}).get("status") or {})
                 .get("succeeded", 0) >= 1, timeout=300)
        out = self.cluster.kubectl("logs", "-n", UPSTREAMS_NAMESPACE, f"job/{job}").stdout
        digest, manifest = out.split("\n", 1)
        blobs = json.loads(manifest)
        self.cluster.delete("job", job, UPSTREAMS_NAMESPACE, wait=False)
        return Image(ref, repository, digest.strip(), frozenset(
            [blobs["config"]["digest"], *(layer["digest"] for layer in blobs["layers"])]))

    def mark(self) -> int:
        return len(self._log())

    def fetched(self, since: int):
        return parse_access_log(self._log()[since:])

    def users_of_blob_fetches(self, since: int) -> set[str]:
        return {u for u, uri, agent in parse_authorized(self._log()[since:])
                if "/blobs/" in uri and agent.startswith("Go-http-client/")}

    def reconfigure(self, users: dict[str, str]) -> None:
        self.users = dict(users)
        self.cluster.apply(*self._objects())
        self.cluster.kubectl("rollout", "restart", "-n", UPSTREAMS_NAMESPACE, f"deployment/{self.name}")
        self.cluster.kubectl("rollout", "status", "-n", UPSTREAMS_NAMESPACE, f"deployment/{self.name}",
                             "--timeout=300s", timeout=330)


class KindCluster(E2ECluster):
    name = "kind"

    def __init__(self, context: str, name: str):
        self.context, self.cluster_name = context, name
        self._upstreams: dict[str, KindUpstream] = {}
        self._users: dict[str, str] = {}
        self._frozen: list[tuple[str, str]] = []

    def kubectl_argv(self, *args: str) -> list[str]:
        return ["kubectl", "--context", self.context, *args]

    def nodes(self) -> list[str]:
        out = subprocess.run(["kind", "get", "nodes", "--name", self.cluster_name], capture_output=True, text=True,
                             check=True).stdout
        return [n for n in out.split() if n]

    def node_file(self, node: str, path: str) -> str | None:
        done = subprocess.run(["docker", "exec", node, "cat", path], capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else None

    def upstream(self, role: str) -> KindUpstream:
        if role not in self._upstreams:
            users = None
            if role == "private":
                self._users = {"robot-v1": uuid.uuid4().hex}
                users = self._users
            self._upstreams[role] = KindUpstream(self, role, users)
        return self._upstreams[role]

    def credentials(self) -> tuple[str, str]:
        user = sorted(self._users)[-1]
        return user, self._users[user]

    def new_credentials(self) -> tuple[str, str]:
        user = f"robot-v{len(self._users) + 1}"
        self._users[user] = uuid.uuid4().hex
        self._upstreams["private"].reconfigure(self._users)
        return user, self._users[user]

    def revoke_credentials(self, keep: tuple[str, str]) -> None:
        self._users = {keep[0]: keep[1]}
        self._upstreams["private"].reconfigure(self._users)

    def stop_upstream(self, up: KindUpstream) -> None:
        self.kubectl("scale", "-n", UPSTREAMS_NAMESPACE, f"deployment/{up.name}", "--replicas=0")
        wait_for(f"{up.name} stopped", lambda: not self.select("pods", UPSTREAMS_NAMESPACE, f"app={up.name}"),
                 timeout=120)

    def start_upstream(self, up: KindUpstream) -> None:
        self.kubectl("scale", "-n", UPSTREAMS_NAMESPACE, f"deployment/{up.name}", "--replicas=1")
        up.wait_ready()

    def forget_image(self, image: Image) -> None:
        for node in self.nodes():
            subprocess.run(["docker", "exec", node, "crictl", "rmi", image.ref], capture_output=True, timeout=60)

    def _cache_pod(self, upstream: str) -> dict | None:
        return self.get("pod", f"{names.resource_name(upstream)}-0", "kube-system")

    def cache_holds(self, upstream: str, image: Image) -> bool:
        pod = self._cache_pod(upstream)
        if not pod:
            return False
        v2 = "/var/lib/registry/docker/registry/v2"
        paths = [f"{v2}/repositories/{image.repository}/_manifests/revisions/sha256/{image.digest.split(':', 1)[1]}"]
        paths += [f"{v2}/blobs/sha256/{d.split(':', 1)[1][:2]}/{d.split(':', 1)[1]}/data" for d in image.blobs]
        test = " && ".join(f"test -e {p}" for p in paths)
        return self.kubectl("exec", "-n", "kube-system", pod["metadata"]["name"], "-c", "registry-cache", "--",
                            "sh", "-c", test, check=False).returncode == 0

    def freeze_cache(self, upstream: str) -> bool:
        pod = self._cache_pod(upstream)
        if not pod or not (pod.get("status") or {}).get("containerStatuses"):
            return False
        node = pod["spec"]["nodeName"]
        container = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        pid = subprocess.run(["docker", "exec", node, "crictl", "inspect", "--output", "go-template", "--template",
                              "{{.info.pid}}", container], capture_output=True, text=True).stdout.strip()
        if not pid.isdigit():
            return False
        subprocess.run(["docker", "exec", node, "kill", "-STOP", pid], check=True)
        self._frozen.append((node, pid))
        return True

    def thaw_cache(self, upstream: str) -> None:
        for node, pid in self._frozen:
            subprocess.run(["docker", "exec", node, "kill", "-CONT", pid], capture_output=True)
        self._frozen = []

    def containerd_log(self) -> str | None:
        return "".join(subprocess.run(["docker", "exec", node, "journalctl", "-u", "containerd", "--no-pager"],
                                      capture_output=True, text=True).stdout for node in self.nodes())

    def controller_manager_log(self) -> str | None:
        done = self.kubectl("logs", "-n", "kube-system", "-l", "component=kube-controller-manager", "--tail=-1",
                            check=False)
        return done.stdout if done.returncode == 0 else None

    def logs(self) -> str:
        done = self.kubectl("logs", "-n", "registry-cache", "deployment/registry-cache-controller", "--tail=60",
                            check=False)
        agent = self.kubectl("logs", "-n", "kube-system", "daemonset/registry-cache-node-agent", "--tail=40",
                             check=False)
        return f"--- controller\n{done.stdout}{done.stderr}\n--- node agent\n{agent.stdout}{agent.stderr}"


@pytest.fixture(scope="module")
def cluster() -> KindCluster:
    missing = missing_tools()
    if missing:
        pytest.skip("the kind e2e scenarios need " + "; ".join(missing) + ". Where those exist, "
                    "`python -m pytest tests/e2e/test_kind.py` runs hack/kind-up.sh and the scenarios; here they "
                    "run on the one-node cluster (tests/e2e/test_node.py).")
    existed = CLUSTER in subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True).stdout.split()
    up = subprocess.run([str(REPO / "hack" / "kind-up.sh")], capture_output=True, text=True, timeout=3600,
                        env={**os.environ, "KIND_CLUSTER_NAME": CLUSTER})
    if up.returncode != 0:
        pytest.fail(f"hack/kind-up.sh failed ({up.returncode}):\n" + "\n".join(up.stderr.splitlines()[-30:]),
                    pytrace=False)
    c = KindCluster(CONTEXT, CLUSTER)
    from . import scenarios
    c.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": scenarios.PROJECT_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": scenarios.WORKLOAD_NAMESPACE}})
    yield c
    if not existed and not KEEP:
        subprocess.run([str(REPO / "hack" / "kind-down.sh")], env={**os.environ, "KIND_CLUSTER_NAME": CLUSTER},
                       capture_output=True, timeout=600)


# --- on this machine: a token-auth private upstream, with the real registry and crane ------------------------

# A token server for the private upstream: real private registries (Gardener's e2e uses Artifact Registry)
# hand out bearer tokens, so the cache's credentials go to a token realm here, not in a basic-auth header
# (tests/e2e/test_pull_through.py covers a basic-auth upstream). It runs from the project's image (Python +
# cryptography), answers GET /token for one user, and signs with a key whose certificate the registry
# trusts (x5c header).
TOKEN_SERVER = r'''
import base64, datetime, json, os, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

KEY = serialization.load_pem_private_key(open(os.environ["TOKEN_KEY"], "rb").read(), None)
CERT = x509.load_pem_x509_certificate(open(os.environ["TOKEN_CERT"], "rb").read())
EXPECTED = "Basic " + base64.b64encode(f"{os.environ['TOKEN_USERNAME']}:{os.environ['TOKEN_PASSWORD']}".encode()).decode()

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def sign(claims):
    ec_key = isinstance(KEY, ec.EllipticCurvePrivateKey)
    header = {"typ": "JWT", "alg": "ES256" if ec_key else "RS256",
              "x5c": [base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode()]}
    data = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    if ec_key:
        r, s = decode_dss_signature(KEY.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = KEY.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return data.decode() + "." + b64(signature)

BACKEND = os.environ.get("TOKEN_BACKEND")  # set: the registry itself is reached through this server (one origin)

class Handler(BaseHTTPRequestHandler):
    def forward(self):
        import urllib.error, urllib.request
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept", "user-agent")}
        request = urllib.request.Request(BACKEND + self.path, headers=headers, method=self.command)
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as e:
            response = e
        body = response.read()
        self.send_response(response.status if hasattr(response, "status") else response.code)
        for key, value in response.headers.items():
            if key.lower() not in ("date", "server", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        return self.forward() if BACKEND else self.answer(404, {"error": "not found"})

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/token":
            return self.forward() if BACKEND else self.answer(404, {"error": "not found"})
        # TOKEN_ANONYMOUS_PULL=1: as docker.io, a request without credentials gets a token to pull
        anonymous = "Authorization" not in self.headers and os.environ.get("TOKEN_ANONYMOUS_PULL") == "1"
        if self.headers.get("Authorization") != EXPECTED and not anonymous:
            return self.answer(401, {"error": "wrong or no credentials"})
        allowed = ("pull",) if anonymous else ("pull", "push")
        query = parse_qs(url.query)
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository":
                access.append({"type": kind, "name": name,
                               "actions": [a for a in actions.split(",") if a in allowed]})
        if anonymous:
            self.log_message("anonymous token: %s", json.dumps(access))
        now = int(time.time())
        token = sign({"iss": os.environ["TOKEN_ISSUER"], "sub": "" if anonymous else os.environ["TOKEN_USERNAME"],
                      "aud": os.environ["TOKEN_SERVICE"], "exp": now + 300, "nbf": now - 10, "iat": now,
                      "jti": uuid.uuid4().hex, "access": access})
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.answer(200, {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

ThreadingHTTPServer(("", int(os.environ.get("TOKEN_PORT", "8080"))), Handler).serve_forever()
'''



def token_registry_config(realm: str, rootcertbundle: str, rootdirectory: str, addr: str) -> dict:
    """distribution's config.yml for a registry that wants tokens from :data:`TOKEN_SERVER`."""
    return {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": rootdirectory}, "delete": {"enabled": True}},
        "http": {"addr": addr},
        "auth": {"token": {"realm": realm, "service": "private-registry", "issuer": "registry-cache-e2e",
                           "rootcertbundle": rootcertbundle}},
    }


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float = 20) -> None:
    import socket

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    wait_for(f"port {port}", listening, timeout=timeout, interval=0.1)


# On this machine the token server and the upstream are two loopback ports. distribution 3.1 sends the cache's
# credentials only to a bearer realm on the upstream's own host:port, or on a host name of the same registrable
# domain (as in the cluster: both under cluster.local); never to another port of 127.0.0.1 or localhost. So
# here a front on one port serves /token from the token server and relays everything else to the registry,
# as a registry that is its own token server does.
FRONT = r'''
import http.client, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = ("127.0.0.1", int(os.environ["FRONT_TOKEN_PORT"]))
REGISTRY = ("127.0.0.1", int(os.environ["FRONT_REGISTRY_PORT"]))
HOP = ("connection", "transfer-encoding", "content-length", "keep-alive")

class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def relay(self):
        body = None
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        elif self.headers.get("Content-Length"):
            body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}  # Host stays
        conn = http.client.HTTPConnection(*(TOKEN if self.path.startswith("/token") else REGISTRY), timeout=60)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = relay

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["FRONT_PORT"])), Front).serve_forever()
'''


def _private_upstream_pull_through(tools, tmp_path: Path, realm_on_upstream: bool) -> tuple[subprocess.CompletedProcess,
                                                                                              str, str, Path]:
    """The private-registry scenario's upstream (TOKEN_SERVER, token_registry_config) with a cache from exactly
    the config.yml the controller renders (the credentials of the referenced Secret). crane logs in and pushes
    through the front; without credentials the upstream refuses. With ``realm_on_upstream`` the realm is the
    front's (the upstream's) host:port, else the token server's own port on ``localhost``. Returns crane's pull
    through the cache by a client without credentials, the username, what the token server logged during that
    pull, and the cache's storage."""
    import signal
    import sys
    import tarfile

    from api.field import Path as FieldPath
    from api.secrets import Credentials
    from api.validation import decode_and_default
    from extension.component.objects import config_files
    from extension.constants import CREDENTIAL_HELPER_KEY

    token_port, registry_port, front_port, cache_port, debug_port = (_free_port() for _ in range(5))
    signing = certs.generate_ca("registry-cache-e2e-token")
    (tmp_path / "tls.crt").write_text(signing.cert_pem)
    (tmp_path / "tls.key").write_text(signing.key_pem)
    (tmp_path / "token_server.py").write_text(TOKEN_SERVER)
    (tmp_path / "front.py").write_text(FRONT)
    username, password = "e2e-robot", uuid.uuid4().hex
    upstream = f"127.0.0.1:{front_port}"
    realm = f"http://{upstream}/token" if realm_on_upstream else f"http://localhost:{token_port}/token"
    (tmp_path / "upstream.yml").write_text(yaml.safe_dump(token_registry_config(
        realm, str(tmp_path / "tls.crt"), str(tmp_path / "upstream-data"), f"127.0.0.1:{registry_port}")))
    config = decode_and_default({"apiVersion": API_VERSION, "kind": "RegistryConfig", "caches": [
        {"upstream": upstream, "remoteURL": f"http://{upstream}", "http": {"tls": False}}]}, FieldPath("x"))
    files = config_files(config.caches[0], Credentials(username, password))
    for name, text in files.items():  # the config Secret's files, the credential helper where config.yml names it
        (tmp_path / name).write_text(text)
    (tmp_path / CREDENTIAL_HELPER_KEY).chmod(0o755)
    cache_config = yaml.safe_load(files["config.yml"])
    cache_config["proxy"]["exec"]["command"] = str(tmp_path / CREDENTIAL_HELPER_KEY)
    cache_config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "cache-data")
    cache_config["http"]["addr"] = f"127.0.0.1:{cache_port}"
    cache_config["http"]["debug"]["addr"] = f"127.0.0.1:{debug_port}"
    (tmp_path / "cache.yml").write_text(yaml.safe_dump(cache_config))
    with tarfile.open(tmp_path / "layer.tar", "w") as tar:
        tar.add(tmp_path / "tls.crt", arcname="hello.txt")

    env = {**os.environ, "TOKEN_KEY": str(tmp_path / "tls.key"), "TOKEN_CERT": str(tmp_path / "tls.crt"),
           "TOKEN_ISSUER": "registry-cache-e2e", "TOKEN_SERVICE": "private-registry", "TOKEN_USERNAME": username,
           "TOKEN_PASSWORD": password, "TOKEN_PORT": str(token_port), "FRONT_PORT": str(front_port),
           "FRONT_TOKEN_PORT": str(token_port), "FRONT_REGISTRY_PORT": str(registry_port)}
    procs = []
    try:
        for name, argv, port in [("token-server", [sys.executable, str(tmp_path / "token_server.py")], token_port),
                                 ("upstream", [str(tools.registry), "serve", str(tmp_path / "upstream.yml")],
                                  registry_port),
                                 ("front", [sys.executable, str(tmp_path / "front.py")], front_port)]:
            procs.append(subprocess.Popen(argv, env=env, stdout=open(tmp_path / f"{name}.log", "wb"),
                                          stderr=subprocess.STDOUT))
            _wait_port(port)
        procs.append(subprocess.Popen([str(tools.registry), "serve", str(tmp_path / "cache.yml")],
                                      stdout=open(tmp_path / "cache.log", "wb"), stderr=subprocess.STDOUT))
        _wait_port(cache_port)

        def crane(*args: str, config: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(tools.crane), *args], capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "DOCKER_CONFIG": str(tmp_path / config)})

        assert crane("auth", "login", upstream, "-u", username, "-p", password, config="pusher").returncode == 0
        pushed = crane("append", "--insecure", "-f", str(tmp_path / "layer.tar"), "-t", f"{upstream}/e2e/test:1",
                       config="pusher")
        assert pushed.returncode == 0, pushed.stderr
        anonymous = crane("manifest", "--insecure", f"{upstream}/e2e/test:1", config="nobody")
        assert anonymous.returncode != 0 and "401" in anonymous.stderr, anonymous.stderr
        before = len((tmp_path / "token-server.log").read_bytes())  # crane's own token requests
        pulled = crane("pull", "--insecure", f"127.0.0.1:{cache_port}/e2e/test:1", str(tmp_path / "out.tar"),
                       config="nobody")
        pulled.stderr += (tmp_path / "cache.log").read_text()[-3000:]
        tokens = (tmp_path / "token-server.log").read_bytes()[before:].decode()
        return pulled, username, tokens, tmp_path / "cache-data"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_the_private_upstream_of_the_kind_scenario_works_with_distribution(tools, tmp_path):
    """Runs here (no kind): the token server and the token-auth registry config of the private-registry
    scenario, with distribution 3 (the cache's version) and crane built by hack/registry-bins.sh. A cache from
    exactly the rendered config.yml pulls through the token-auth upstream for a client without credentials, and
    asked the token server with the Secret's username."""
    pulled, username, tokens, data = _private_upstream_pull_through(tools, tmp_path, realm_on_upstream=True)
    assert pulled.returncode == 0, pulled.stderr
    assert (data / "docker/registry/v2/repositories/e2e/test/_manifests/tags/1").is_dir()
    assert f"account={username}" in tokens  # the cache asked for a token with the Secret's username


def test_distribution_sends_credentials_only_to_a_realm_of_the_upstream(tools, tmp_path):
    """What distribution 3.1 changed for the proxy (upstream commit f215e513, "proxy: bind bearer realms to
    upstream trust boundary"): a bearer realm on another host:port of a literal IP or localhost gets no
    credentials, so the cache cannot pull from such an upstream (3.0 sent them there). The token server is
    never asked for the cache's username."""
    pulled, username, tokens, _ = _private_upstream_pull_through(tools, tmp_path, realm_on_upstream=False)
    assert pulled.returncode != 0, "distribution 3.1 must not follow a realm on another loopback port"
    assert f"account={username}" not in tokens
