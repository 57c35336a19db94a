"""Gardener's registry-cache e2e scenarios on a kind cluster, in standalone mode.

The cluster comes from hack/kind-up.sh (reused when it exists): the image built from the Dockerfile, the
CRDs, the controller (`registry-cache run --standalone`) and the node agent DaemonSet. Every scenario
drives a Shoot in ``garden-local`` as a user would (kubectl), and checks what Gardener's e2e checks:

- the Extension reconciles (status Succeeded for the Shoot's generation);
- every node has ``/etc/containerd/certs.d/<upstream>/hosts.toml`` exactly as the controller means it
  (and the CA bundle for TLS caches), and loses it when the cache is removed;
- a Pod with an image of that upstream runs, and the image is in the cache's storage: containerd pulled
  through the cache and did not fall back to the upstream.

Scenarios (test/e2e/cache/*.go of gardener-extension-registry-cache): enable, add, remove, disable;
TLS off then on; a private upstream with credentials; hibernate and reconcile; force delete.

Needs a Docker engine, kind and kubectl, and network access from the cluster to docker.io, public.ecr.aws,
ghcr.io, registry.k8s.io and gcr.io. Without Docker or kind every scenario skips and says what is missing.
The private upstream's parts (token server, token-auth registry config) are also checked without kind, with
the distribution and crane binaries of hack/registry-bins.sh (the last test here).

    python -m pytest tests/e2e/test_kind.py       # KIND_CLUSTER_NAME (default registry-cache)
    REGISTRY_CACHE_KIND_KEEP=1 python -m pytest tests/e2e/test_kind.py   # keep a cluster it created
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from api import names
from api.v1alpha3 import RegistryStatus
from extension.component import certs
from extension.component.containerd import hosts_toml_for_status
from extension.constants import CA_BUNDLE_PATH, CERTS_DIR, DEFAULT_DIAL_TIMEOUT, DEFAULT_IMAGE
from extension.nodeagent.plan import ca_certificates

REPO = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "registry-cache")
CONTEXT = f"kind-{CLUSTER}"
KEEP = os.environ.get("REGISTRY_CACHE_KIND_KEEP") == "1"
PROJECT_NAMESPACE = "garden-local"
WORKLOAD_NAMESPACE = "registry-cache-e2e"
API_VERSION = "registry.extensions.gardener.cloud/v1alpha3"
OWNER = "registry-cache.gardener.cloud/owner"
OPERATION = "gardener.cloud/operation"

# Images as Gardener's e2e uses them (by digest where it pins one); every scenario pulls images no other
# scenario pulls, so that a node never has an image already (it would not pull it through the cache).
DOCKER_NGINX_1230 = "docker.io/library/nginx@sha256:db345982a2f2a4257c6f699a499feb1d79451a1305e8022f16456ddc3ad6b94c"
DOCKER_NGINX_1240 = "docker.io/library/nginx@sha256:066476749f229923b9de29cc9a0738ea2d45923b16a2b388449ea549673f97d8"
ECR_NGINX_1199 = "public.ecr.aws/nginx/nginx@sha256:f248a8862fa9b21badbe043518f52f143946e2dc705300e8534f8ca624a291b2"
GHCR_ALPINE_3188 = "ghcr.io/jitesoft/alpine:3.18.8"
GHCR_ALPINE_3194 = "ghcr.io/jitesoft/alpine:3.19.4"
K8S_NGINX_1154 = "registry.k8s.io/e2e-test-images/nginx@sha256:db048754ae68ae337d8fa96494c96d2a1204c3320f5dcf7e8e71085adec85da6"
K8S_BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
SLEEP = ["sh", "-c", "sleep 3600"]

T = TypeVar("T")


# --- what is needed ----------------------------------------------------------------------------------------

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


def wait_for(what: str, probe: Callable[[], T], timeout: float = 300, interval: float = 3,
             details: Callable[[], str] | None = None) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = details() if details else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}\n{extra}")


# --- the cluster -------------------------------------------------------------------------------------------

class Kind:
    """kubectl against the kind context, and the nodes (Docker containers) for their files."""

    def __init__(self, context: str, name: str, image: str):
        self.context, self.name, self.image = context, name, image

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(["kubectl", "--context", self.context, *args], input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        ns = ["-n", namespace] if namespace else []
        done = self.kubectl("get", resource, name, *ns, "-o", "json", "--ignore-not-found", check=False)
        if done.returncode != 0:
            raise AssertionError(f"kubectl get {resource} {name}: {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    def select(self, resource: str, namespace: str, selector: str) -> list[dict]:
        return json.loads(self.kubectl("get", resource, "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]

    def apply(self, *objs: dict) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "e2e", "-f", "-",
                     input=yaml.safe_dump_all(objs, sort_keys=False))

    def patch(self, resource: str, name: str, patch: dict, namespace: str | None = None,
              check: bool = True) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("patch", resource, name, *ns, "--type", "merge", "-p", json.dumps(patch), check=check)

    def delete(self, resource: str, name: str, namespace: str | None = None, wait: bool = True) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("delete", resource, name, *ns, "--ignore-not-found", f"--wait={str(wait).lower()}",
                     "--timeout=300s", timeout=330)

    def nodes(self) -> list[str]:
        out = subprocess.run(["kind", "get", "nodes", "--name", self.name], capture_output=True, text=True,
                             check=True).stdout
        return [n for n in out.split() if n]

    def node_file(self, node: str, path: str) -> str | None:
        done = subprocess.run(["docker", "exec", node, "cat", path], capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else None

    def controller_logs(self) -> str:
        done = self.kubectl("logs", "-n", "registry-cache", "deployment/registry-cache-controller", "--tail=60",
                            check=False)
        agent = self.kubectl("logs", "-n", "kube-system", "daemonset/registry-cache-node-agent", "--tail=40",
                             check=False)
        return f"--- controller\n{done.stdout}{done.stderr}\n--- node agent\n{agent.stdout}{agent.stderr}"


@pytest.fixture(scope="module")
def kind() -> Kind:
    missing = missing_tools()
    if missing:
        pytest.skip("the kind e2e scenarios need " + "; ".join(missing) + ". Where those exist, "
                    "`python -m pytest tests/e2e/test_kind.py` runs hack/kind-up.sh and the scenarios.")
    existed = CLUSTER in subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True).stdout.split()
    up = subprocess.run([str(REPO / "hack" / "kind-up.sh")], capture_output=True, text=True, timeout=3600,
                        env={**os.environ, "KIND_CLUSTER_NAME": CLUSTER})
    if up.returncode != 0:
        pytest.fail(f"hack/kind-up.sh failed ({up.returncode}):\n" + "\n".join(up.stderr.splitlines()[-30:]),
                    pytrace=False)
    cluster = Kind(CONTEXT, CLUSTER, up.stdout.strip().splitlines()[-1])
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROJECT_NAMESPACE}},
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": WORKLOAD_NAMESPACE}})
    yield cluster
    if not existed and not KEEP:
        subprocess.run([str(REPO / "hack" / "kind-down.sh")], env={**os.environ, "KIND_CLUSTER_NAME": CLUSTER},
                       capture_output=True, timeout=600)


# --- Shoots, as a user writes them ----------------------------------------------------------------------------

def seed_namespace(shoot: str) -> str:
    return f"shoot--local--{shoot}"


def shoot_manifest(name: str, caches: list[dict] | None, resources: list[dict] | None = None,
                   hibernated: bool = False) -> dict:
    spec: dict[str, Any] = {
        "cloudProfile": {"name": "local"}, "region": "local",
        "kubernetes": {"version": "1.32.0"},
        "provider": {"type": "local", "workers": [{"name": "local", "machine": {"type": "local"},
                                                   "cri": {"name": "containerd"}, "minimum": 1, "maximum": 1}]},
        "hibernation": {"enabled": hibernated},
        "extensions": [],
        "resources": resources or [],
    }
    if caches is not None:
        spec["extensions"] = [{"type": "registry-cache", "providerConfig": {
            "apiVersion": API_VERSION, "kind": "RegistryConfig", "caches": caches}}]
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": PROJECT_NAMESPACE}, "spec": spec}


def cache(upstream: str, **extra: Any) -> dict:
    return {"upstream": upstream, "volume": {"size": "2Gi"}, **extra}


def wait_reconciled(kind: Kind, shoot: str, upstreams: list[str], timeout: float = 600) -> dict:
    """The Extension has taken the Shoot's current caches: Succeeded for its generation, no pending
    operation, providerStatus with exactly these upstreams."""
    ns = seed_namespace(shoot)

    def done() -> dict | None:
        ext = kind.get("extensions.extensions.gardener.cloud", "registry-cache", ns)
        if ext is None:
            return None
        status = ext.get("status") or {}
        caches = ((status.get("providerStatus") or {}).get("caches")) or []
        ok = (status.get("lastOperation", {}).get("state") == "Succeeded"
              and status.get("observedGeneration") == ext["metadata"]["generation"]
              and OPERATION not in (ext["metadata"].get("annotations") or {})
              and sorted(c["upstream"] for c in caches) == sorted(upstreams))
        return ext if ok else None

    return wait_for(f"Extension {ns}/registry-cache to reconcile {upstreams}", done, timeout=timeout,
                    details=kind.controller_logs)


def wait_applied(kind: Kind, ext: dict, timeout: float = 300) -> None:
    """Every node has each upstream's hosts.toml as the controller means it, and the CA bundle for TLS
    caches (WaitUntilRegistryCacheConfigurationsAreApplied + VerifyHostsTOMLFilesCreatedForAllNodes)."""
    status = RegistryStatus.model_validate(ext["status"]["providerStatus"])
    wanted = hosts_toml_for_status(status, dial_timeout=DEFAULT_DIAL_TIMEOUT)  # the controller's default
    bundle = None
    if status.ca_secret_name:
        secret = kind.get("secret", status.ca_secret_name, ext["metadata"]["namespace"])
        bundle = base64.b64decode(secret["data"]["bundle.crt"]).decode()
    for node in kind.nodes():
        for upstream, text in wanted.items():
            path = f"{CERTS_DIR}/{upstream}/hosts.toml"
            wait_for(f"{path} on {node}", lambda: kind.node_file(node, path) == text, timeout=timeout,
                     details=lambda: f"on the node: {kind.node_file(node, path)!r}\nwanted: {text!r}\n"
                                     + kind.controller_logs())
        if bundle:
            wait_for(f"{CA_BUNDLE_PATH} on {node} with the CA of {ext['metadata']['namespace']}",
                     lambda: all(c in (kind.node_file(node, CA_BUNDLE_PATH) or "") for c in ca_certificates(bundle)),
                     timeout=timeout, details=kind.controller_logs)


def wait_removed(kind: Kind, upstreams: list[str], timeout: float = 300) -> None:
    """VerifyHostsTOMLFilesDeletedForAllNodes."""
    for node in kind.nodes():
        for upstream in upstreams:
            path = f"{CERTS_DIR}/{upstream}/hosts.toml"
            wait_for(f"{path} to be removed from {node}", lambda: kind.node_file(node, path) is None,
                     timeout=timeout, details=kind.controller_logs)


def repository_of(image: str, upstream: str) -> str:
    rest = image[len(upstream) + 1:]
    return rest.split("@", 1)[0].rsplit(":", 1)[0] if "@" in rest else rest.rsplit(":", 1)[0]


def verify_registry_cache(kind: Kind, upstream: str, image: str, command: list[str] | None = None) -> None:
    """VerifyRegistryCache: a Pod with the image runs, and the cache holds the image (so containerd pulled
    it through the cache and did not fall back to the upstream)."""
    name = f"pull-{uuid.uuid4().hex[:6]}"
    container: dict[str, Any] = {"name": "c", "image": image, "imagePullPolicy": "IfNotPresent"}
    if command:
        container["command"] = command
    kind.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": WORKLOAD_NAMESPACE},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 1}})
    try:
        wait_for(f"Pod {name} ({image}) to run",
                 lambda: ((kind.get("pod", name, WORKLOAD_NAMESPACE) or {}).get("status") or {}).get("phase")
                 == "Running", timeout=300,
                 details=lambda: kind.kubectl("describe", "pod", name, "-n", WORKLOAD_NAMESPACE, check=False).stdout)
        selector = f"{names.UPSTREAM_HOST_LABEL}={names.upstream_label_value(upstream)}"
        pods = kind.select("pods", "kube-system", selector)
        assert pods, f"no cache Pod for {upstream} ({selector})"
        repository = repository_of(image, upstream)
        path = f"/var/lib/registry/docker/registry/v2/repositories/{repository}/_manifests"
        if "@sha256:" in image:
            path += "/revisions/sha256/" + image.rsplit("@sha256:", 1)[1]
        wait_for(f"{path} in the cache of {upstream}", lambda: any(
            kind.kubectl("exec", "-n", "kube-system", p["metadata"]["name"], "-c", "registry-cache", "--",
                         "test", "-d", path, check=False).returncode == 0 for p in pods), timeout=120)
    finally:
        kind.delete("pod", name, WORKLOAD_NAMESPACE, wait=False)


def delete_shoot(kind: Kind, name: str) -> None:
    kind.delete("shoot", name, PROJECT_NAMESPACE, wait=False)  # the bridge's finalizer waits for the cleanup
    wait_for(f"Shoot {name} to be gone", lambda: kind.get("shoot", name, PROJECT_NAMESPACE) is None, timeout=600,
             details=kind.controller_logs)


def assert_nothing_left(kind: Kind, shoot: str) -> None:
    owned = f"{OWNER}={seed_namespace(shoot)}"
    for resource in ("statefulsets", "services", "secrets", "configmaps", "networkpolicies",
                     "poddisruptionbudgets"):
        assert kind.select(resource, "kube-system", owned) == [], f"{resource} of {shoot} left in kube-system"


@pytest.fixture
def shoots(kind):
    """Shoots a test made: deleted at the end whatever happened, so that the next scenario starts clean."""
    made: list[str] = []
    yield made
    for name in made:
        try:
            delete_shoot(kind, name)
        except AssertionError as exc:  # the test's own failure is the one to report
            print(f"cleanup of Shoot {name} failed: {exc}")


# --- the scenarios ---------------------------------------------------------------------------------------

def test_create_enable_add_remove_disable_delete(kind, shoots):
    """create_enable_add_remove_disable_delete.go"""
    name = "e2e-cache-def"
    shoots.append(name)
    kind.apply(shoot_manifest(name, None))

    kind.apply(shoot_manifest(name, [cache("docker.io")]))
    ext = wait_reconciled(kind, name, ["docker.io"])
    wait_applied(kind, ext)
    verify_registry_cache(kind, "docker.io", DOCKER_NGINX_1230)

    kind.apply(shoot_manifest(name, [cache("docker.io"), cache("public.ecr.aws")]))
    ext = wait_reconciled(kind, name, ["docker.io", "public.ecr.aws"])
    wait_applied(kind, ext)
    verify_registry_cache(kind, "public.ecr.aws", ECR_NGINX_1199)

    kind.apply(shoot_manifest(name, [cache("docker.io")]))
    ext = wait_reconciled(kind, name, ["docker.io"])
    wait_removed(kind, ["public.ecr.aws"])
    wait_applied(kind, ext)
    assert kind.get("statefulset", names.resource_name("public.ecr.aws"), "kube-system") is None

    kind.apply(shoot_manifest(name, None))
    wait_for("the Extension to go", lambda: kind.get("extensions.extensions.gardener.cloud", "registry-cache",
                                                     seed_namespace(name)) is None, details=kind.controller_logs)
    wait_removed(kind, ["docker.io"])
    assert_nothing_left(kind, name)

    delete_shoot(kind, name)


def test_create_disable_tls_enable_tls_delete(kind, shoots):
    """create_disable_tls_enable_tls_delete.go"""
    name = "e2e-cache-tls"
    shoots.append(name)
    kind.apply(shoot_manifest(name, [cache("ghcr.io", http={"tls": True})]))
    ext = wait_reconciled(kind, name, ["ghcr.io"])
    assert ext["status"]["providerStatus"]["caches"][0]["endpoint"].startswith("https://")
    wait_applied(kind, ext)

    kind.apply(shoot_manifest(name, [cache("ghcr.io", http={"tls": False})]))
    ext = wait_for("the http endpoint", lambda: (e := wait_reconciled(kind, name, ["ghcr.io"]))
                   ["status"]["providerStatus"]["caches"][0]["endpoint"].startswith("http://") and e)
    assert "caSecretName" not in ext["status"]["providerStatus"]
    wait_applied(kind, ext)
    verify_registry_cache(kind, "ghcr.io", GHCR_ALPINE_3188, SLEEP)

    kind.apply(shoot_manifest(name, [cache("ghcr.io", http={"tls": True})]))
    ext = wait_for("the https endpoint", lambda: (e := wait_reconciled(kind, name, ["ghcr.io"]))
                   ["status"]["providerStatus"]["caches"][0]["endpoint"].startswith("https://") and e)
    wait_applied(kind, ext)
    verify_registry_cache(kind, "ghcr.io", GHCR_ALPINE_3194, SLEEP)

    delete_shoot(kind, name)
    wait_removed(kind, ["ghcr.io"])
    assert_nothing_left(kind, name)


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

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/token":
            return self.answer(404, {"error": "not found"})
        if self.headers.get("Authorization") != EXPECTED:
            return self.answer(401, {"error": "wrong or no credentials"})
        query = parse_qs(url.query)
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository":
                access.append({"type": kind, "name": name,
                               "actions": [a for a in actions.split(",") if a in ("pull", "push")]})
        now = int(time.time())
        token = sign({"iss": os.environ["TOKEN_ISSUER"], "sub": os.environ["TOKEN_USERNAME"],
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

PRIVATE_NAMESPACE = "registry-cache-e2e-private"
PRIVATE_REGISTRY = f"private-registry.{PRIVATE_NAMESPACE}.svc.cluster.local:5000"
TOKEN_REALM = f"http://token-server.{PRIVATE_NAMESPACE}.svc.cluster.local:8080/token"
PRIVATE_IMAGE = f"{PRIVATE_REGISTRY}/e2e/busybox:1.36.1"
CRANE_IMAGE = "gcr.io/go-containerregistry/crane:debug"


def token_registry_config(realm: str, rootcertbundle: str, rootdirectory: str, addr: str) -> dict:
    """distribution's config.yml for a registry that wants tokens from :data:`TOKEN_SERVER`."""
    return {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": rootdirectory}, "delete": {"enabled": True}},
        "http": {"addr": addr},
        "auth": {"token": {"realm": realm, "service": "private-registry", "issuer": "registry-cache-e2e",
                           "rootcertbundle": rootcertbundle}},
    }


def private_upstream(image: str, signing: certs.KeyPair, username: str, password: str) -> list[dict]:
    """A registry (distribution 3, the cache's own image) with token auth, its token server, and a Job that
    copies busybox into it with the credentials."""
    ns = PRIVATE_NAMESPACE
    labels = lambda app: {"app": app}
    registry_config = token_registry_config(TOKEN_REALM, "/signing/tls.crt", "/var/lib/registry", ":5000")
    token_env = [{"name": "TOKEN_KEY", "value": "/signing/tls.key"}, {"name": "TOKEN_CERT", "value": "/signing/tls.crt"},
                 {"name": "TOKEN_ISSUER", "value": "registry-cache-e2e"},
                 {"name": "TOKEN_SERVICE", "value": "private-registry"},
                 {"name": "TOKEN_USERNAME", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "username"}}},
                 {"name": "TOKEN_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "password"}}}]

    def deployment(app: str, container: dict, volumes: list[dict]) -> dict:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": ns},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels(app)},
                         "template": {"metadata": {"labels": labels(app)},
                                      "spec": {"containers": [container], "volumes": volumes}}}}

    def service(app: str, port: int) -> dict:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": labels(app), "ports": [{"port": port, "targetPort": port}]}}

    signing_volume = {"name": "signing", "secret": {"secretName": "token-signing"}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token-signing", "namespace": ns},
         "stringData": {"tls.crt": signing.cert_pem, "tls.key": signing.key_pem}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials", "namespace": ns},
         "stringData": {"username": username, "password": password}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "private-registry", "namespace": ns},
         "data": {"token_server.py": TOKEN_SERVER, "config.yml": yaml.safe_dump(registry_config)}},
        deployment("token-server", {
            "name": "token-server", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python", "/scripts/token_server.py"], "env": token_env,
            "ports": [{"containerPort": 8080}], "readinessProbe": {"tcpSocket": {"port": 8080}},
            "volumeMounts": [{"name": "signing", "mountPath": "/signing", "readOnly": True},
                             {"name": "scripts", "mountPath": "/scripts", "readOnly": True}]},
            [signing_volume, {"name": "scripts", "configMap": {"name": "private-registry"}}]),
        service("token-server", 8080),
        deployment("private-registry", {
            "name": "registry", "image": DEFAULT_IMAGE, "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 5000}], "readinessProbe": {"tcpSocket": {"port": 5000}},
            "volumeMounts": [{"name": "signing", "mountPath": "/signing", "readOnly": True},
                             {"name": "config", "mountPath": "/etc/distribution/config.yml",
                              "subPath": "config.yml", "readOnly": True},
                             {"name": "data", "mountPath": "/var/lib/registry"}]},
            [signing_volume, {"name": "config", "configMap": {"name": "private-registry"}},
             {"name": "data", "emptyDir": {}}]),
        service("private-registry", 5000),
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "push", "namespace": ns},
         "spec": {"backoffLimit": 6, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{
             "name": "crane", "image": CRANE_IMAGE,
             "command": ["sh", "-c", 'crane auth login "$REGISTRY" -u "$USERNAME" -p "$PASSWORD" && '
                                     'crane copy --insecure docker.io/library/busybox:1.36.1 "$IMAGE"'],
             "env": [{"name": "REGISTRY", "value": PRIVATE_REGISTRY}, {"name": "IMAGE", "value": PRIVATE_IMAGE},
                     {"name": "DOCKER_CONFIG", "value": "/tmp/docker"},
                     {"name": "USERNAME", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "username"}}},
                     {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "password"}}}],
         }]}}}},
    ]


def test_create_enable_for_private_registry_delete(kind, shoots):
    """create_enable_for_private_registry_delete.go: the upstream needs credentials, the cache has them
    (from the Shoot's referenced Secret), the Pod has none. The node cannot even resolve the upstream's
    name (cluster DNS): the Pod runs only if the cache served the image."""
    username, password = "e2e-robot", uuid.uuid4().hex
    kind.apply(*private_upstream(kind.image, certs.generate_ca("registry-cache-e2e-token"), username, password))
    try:
        wait_for("the image in the private upstream", lambda: (
            (kind.get("job", "push", PRIVATE_NAMESPACE) or {}).get("status", {}).get("succeeded", 0) >= 1),
            timeout=600, details=lambda: kind.kubectl("logs", "-n", PRIVATE_NAMESPACE, "job/push", check=False).stdout)

        name = "e2e-cache-prv"
        shoots.append(name)
        secret = f"{name}-credentials-v1"
        kind.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                    "metadata": {"name": secret, "namespace": PROJECT_NAMESPACE},
                    "stringData": {"username": username, "password": password}})
        resources = [{"name": "private-credentials",
                      "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret}}]
        kind.apply(shoot_manifest(name, [cache(PRIVATE_REGISTRY, remoteURL=f"http://{PRIVATE_REGISTRY}",
                                               secretReferenceName="private-credentials")], resources))
        ext = wait_reconciled(kind, name, [PRIVATE_REGISTRY])
        wait_applied(kind, ext)
        verify_registry_cache(kind, PRIVATE_REGISTRY, PRIVATE_IMAGE, SLEEP)

        delete_shoot(kind, name)
        wait_removed(kind, [PRIVATE_REGISTRY])
        assert_nothing_left(kind, name)
        kind.delete("secret", secret, PROJECT_NAMESPACE)
    finally:
        kind.delete("namespace", PRIVATE_NAMESPACE, wait=False)


def test_create_enabled_hibernate_reconcile_delete(kind, shoots):
    """create_enabled_hibernate_reconcile_delete.go; kind keeps its node, so waking up is checked too."""
    name = "e2e-cache-hib"
    shoots.append(name)
    kind.apply(shoot_manifest(name, [cache("registry.k8s.io")]))
    ext = wait_reconciled(kind, name, ["registry.k8s.io"])
    wait_applied(kind, ext)
    verify_registry_cache(kind, "registry.k8s.io", K8S_NGINX_1154)

    kind.apply(shoot_manifest(name, [cache("registry.k8s.io")], hibernated=True))
    ext = wait_for("the hibernated reconcile", lambda: (e := wait_reconciled(kind, name, ["registry.k8s.io"]))
                   and "hibernated" in e["status"]["lastOperation"]["description"] and e)
    assert kind.get("statefulset", names.resource_name("registry.k8s.io"), "kube-system") is not None

    # gardenlet's reconcile: the operation annotation on the Extension, removed when taken
    kind.kubectl("annotate", "extensions.extensions.gardener.cloud", "registry-cache", "-n", seed_namespace(name),
                 f"{OPERATION}=reconcile", "--overwrite")
    wait_reconciled(kind, name, ["registry.k8s.io"])

    kind.apply(shoot_manifest(name, [cache("registry.k8s.io")], hibernated=False))
    ext = wait_for("the woken-up reconcile", lambda: (e := wait_reconciled(kind, name, ["registry.k8s.io"]))
                   and "hibernated" not in e["status"]["lastOperation"]["description"] and e)
    wait_applied(kind, ext)
    verify_registry_cache(kind, "registry.k8s.io", K8S_BUSYBOX, SLEEP)

    delete_shoot(kind, name)
    wait_removed(kind, ["registry.k8s.io"])
    assert_nothing_left(kind, name)


def test_create_enabled_force_delete(kind, shoots):
    """create_enabled_force_delete.go. Without gardenlet, force deletion is what it does to a stuck Shoot:
    the Extension is deleted and its finalizer removed without waiting for the controller, then the
    Shoot's finalizer. The Shoot must be gone at once; the caches it leaves behind in this (same) cluster
    are adopted by a Shoot of the same name and removed with its normal deletion."""
    name = "e2e-cache-fd"
    shoots.append(name)
    kind.apply(shoot_manifest(name, [cache("docker.io")]))
    ext = wait_reconciled(kind, name, ["docker.io"])
    wait_applied(kind, ext)
    verify_registry_cache(kind, "docker.io", DOCKER_NGINX_1240)

    ns = seed_namespace(name)
    kind.delete("shoot", name, PROJECT_NAMESPACE, wait=False)
    kind.delete("extensions.extensions.gardener.cloud", "registry-cache", ns, wait=False)
    # (the controller may finish its Delete first and the objects be gone already: no check)
    kind.patch("extensions.extensions.gardener.cloud", "registry-cache", {"metadata": {"finalizers": None}}, ns,
               check=False)
    kind.patch("shoot", name, {"metadata": {"finalizers": None}}, PROJECT_NAMESPACE, check=False)
    wait_for("the force-deleted Shoot to be gone", lambda: kind.get("shoot", name, PROJECT_NAMESPACE) is None,
             timeout=60)
    wait_for("the Extension to be gone", lambda: kind.get("extensions.extensions.gardener.cloud",
                                                          "registry-cache", ns) is None, timeout=60)
    ready = kind.get("deployment", "registry-cache-controller", "registry-cache")
    assert ready and ready["status"].get("readyReplicas") == 1, kind.controller_logs()

    kind.apply(shoot_manifest(name, [cache("docker.io")]))
    ext = wait_reconciled(kind, name, ["docker.io"])
    wait_applied(kind, ext)
    delete_shoot(kind, name)
    wait_removed(kind, ["docker.io"])
    assert_nothing_left(kind, name)


# --- on this machine: the private upstream's parts, with the real registry and crane ------------------------

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
    from extension.component.objects import render_config_yml

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
    cache_config = yaml.safe_load(render_config_yml(config.caches[0], Credentials(username, password)))
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
