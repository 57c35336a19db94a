"""Packaging: the kustomize bases in manifests/, their Kubernetes schema, a server-side dry run against the
local control plane, and the RBAC put to work: the controller (standalone, a process) and the node agent
run with tokens of exactly the ServiceAccounts the manifests define, through a Shoot's whole life.
Also static checks of the Dockerfile (no Docker engine needed)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from extension.runtime.kube import KINDS, ApiError, Kube

from .operator_process import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUBERNETES_VERSION = "1.34.0"
CRD_GROUPS = {"extensions.gardener.cloud", "core.gardener.cloud"}  # kinds served by CRDs: no built-in schema
CONTROLLER_SA = ("registry-cache", "registry-cache")  # namespace, name
NODE_AGENT_SA = ("kube-system", "registry-cache-node-agent")
OWNER = "registry-cache.gardener.cloud/owner"
GUARD = "controller-writes.registry-cache.extensions.gardener.cloud"  # manifests/controller/guard.yaml
MIRROR_API = "mirror.extensions.gardener.cloud/v1alpha1"


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (needed for `kubectl kustomize` and the dry run)")
    return path


def kustomize(path: Path) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def group_of(obj: dict) -> str:
    return obj["apiVersion"].rpartition("/")[0]


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return kustomize(MANIFESTS / "default")


# --- rendering and schema -------------------------------------------------------------------------------

def test_default_renders_crds_policies_controller_and_node_agent(default):
    kinds = sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in default)
    assert kinds == sorted([
        ("CustomResourceDefinition", "", "clusters.extensions.gardener.cloud"),
        ("CustomResourceDefinition", "", "extensions.extensions.gardener.cloud"),
        ("CustomResourceDefinition", "", "shoots.core.gardener.cloud"),
        ("Namespace", "", "registry-cache"),
        ("ServiceAccount", "registry-cache", "registry-cache"),
        ("ClusterRole", "", "registry-cache"),
        ("ClusterRoleBinding", "", "registry-cache"),
        ("Role", "kube-system", "registry-cache"),
        ("RoleBinding", "kube-system", "registry-cache"),
        ("Role", "registry-cache", "registry-cache-controller"),
        ("RoleBinding", "registry-cache", "registry-cache-controller"),
        ("ValidatingAdmissionPolicy", "", GUARD),
        ("ValidatingAdmissionPolicyBinding", "", GUARD),
        # standalone mode's Shoot policies (manifests/policies): the bridge acts only while they are in force
        ("ValidatingAdmissionPolicy", "", "shoot-references.registry-cache.extensions.gardener.cloud"),
        ("ValidatingAdmissionPolicyBinding", "", "shoot-references.registry-cache.extensions.gardener.cloud"),
        ("ValidatingAdmissionPolicy", "", "shoot-node-configuration.registry-cache.extensions.gardener.cloud"),
        ("ValidatingAdmissionPolicyBinding", "", "shoot-node-configuration.registry-cache.extensions.gardener.cloud"),
        ("ClusterRole", "", "registry-cache:node-configuration"),
        ("Deployment", "registry-cache", "registry-cache-controller"),
        ("PodDisruptionBudget", "registry-cache", "registry-cache-controller"),
        ("Service", "registry-cache", "registry-cache-webhook"),
        ("ServiceAccount", "kube-system", "registry-cache-node-agent"),
        ("Role", "kube-system", "registry-cache-node-agent"),
        ("RoleBinding", "kube-system", "registry-cache-node-agent"),
        ("DaemonSet", "kube-system", "registry-cache-node-agent"),
    ])
    images = {c["image"] for o in default if o["kind"] in ("Deployment", "DaemonSet")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry-cache:0.1.0"}


def test_every_object_validates_against_the_kubernetes_schema(default):
    import kubernetes_validate

    gardener = kustomize(MANIFESTS / "gardener")
    checked = 0
    for obj in default + gardener:
        if group_of(obj) in CRD_GROUPS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == len(default)  # everything in default is built-in (CRDs are apiextensions.k8s.io)


def test_the_image_is_set_by_an_overlay(tmp_path):
    """What hack/kind-up.sh does: an overlay in a temp directory pointing at manifests/default (by a
    relative path: kustomize refuses absolute ones)."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "default", tmp_path)],
        "images": [{"name": "registry-cache", "newName": "example.org/rc", "newTag": "dev-123"}]}))
    objs = kustomize(tmp_path)
    images = {c["image"] for o in objs if o["kind"] in ("Deployment", "DaemonSet")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"example.org/rc:dev-123"}


def test_workloads_are_locked_down(default):
    [deployment] = by_kind(default, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["serviceAccountName"] == CONTROLLER_SA[1]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # two replicas, one leading (a Lease), both serving the webhooks; a rollout never has none ready
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}  # extension/probes.py
    [pdb] = by_kind(default, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"] == deployment["spec"]["selector"]
    [namespace] = by_kind(default, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    [daemonset] = by_kind(default, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["serviceAccountName"] == NODE_AGENT_SA[1]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    [hostpath] = [v for v in pod["volumes"] if "hostPath" in v]
    assert hostpath["hostPath"]["path"] == "/etc/containerd/certs.d"
    assert {"name": hostpath["name"], "mountPath": "/etc/containerd/certs.d"} in container["volumeMounts"]
    assert pod["tolerations"] == [{"operator": "Exists"}]


def test_container_args_are_what_the_command_line_accepts(default):
    """The image's ENTRYPOINT is `registry-cache`: the containers' args go to its command line."""
    from extension.cli import build_parser

    [deployment] = by_kind(default, "Deployment")
    args = build_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.command == "run" and args.standalone and args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.leader_election and args.leader_election_namespace is None  # POD_NAMESPACE

    [daemonset] = by_kind(default, "DaemonSet")
    args = build_parser().parse_args(daemonset["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (args.command, args.root, args.namespace, args.once) == (
        "node-agent", "/etc/containerd/certs.d", "kube-system", False)


def test_the_gardener_registration():
    [registration] = kustomize(MANIFESTS / "gardener")
    assert registration["apiVersion"] == "core.gardener.cloud/v1beta1"
    assert registration["kind"] == "ControllerRegistration"
    resources = registration["spec"]["resources"]
    assert [(r["kind"], r["type"]) for r in resources] == [("Extension", "registry-cache"),
                                                           ("Extension", "registry-mirror")]
    for resource in resources:
        assert "globallyEnabled" not in resource and "autoEnable" not in resource  # shoots opt in
        assert resource["workerlessSupported"] is False
    # The ControllerDeployment is generated from charts/registry-cache by hack/controller-deployment.py.
    assert registration["spec"]["deployment"]["deploymentRefs"] == [{"name": "extension-registry-cache"}]
    assert "ControllerDeployment" in (MANIFESTS / "gardener" / "controller-registration.yaml").read_text()


def test_the_dockerfile_ships_only_what_runs():
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${BASE}", "${BASE}"]
    [base] = re.findall(r"^ARG BASE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11[.\w-]*-slim[\w-]*@sha256:[0-9a-f]{64}", base), base  # pinned by digest
    assert re.findall(r"^COPY (?!--from)(.+)$", text, re.M) == [
        "pyproject.toml README.md constraints.txt ./", "api ./api", "extension ./extension"]
    # the dependencies by their hashes, the project's own wheel apart
    assert "pip wheel --wheel-dir /wheels --require-hashes -r constraints.txt" in text
    assert "pip wheel --wheel-dir /wheels --no-deps ." in text
    runtime = text.split("FROM ${BASE}\n", 1)[1]
    assert "--require-hashes -r /wheels/constraints.txt" in runtime and "--no-deps registry-cache" in runtime
    assert "USER 65532:65532" in runtime
    assert 'ENTRYPOINT ["registry-cache"]' in runtime and 'CMD ["run"]' in runtime
    assert "pip install --no-index" in runtime  # no network, no test extras in the runtime stage
    # the same on python:slim and on a Debian base (whose python3 is externally managed, PEP 668): a venv at
    # /opt/venv, without pip and setuptools once the program is in; the wheels are bind-mounted, not copied
    assert "python3 -m venv /opt/venv" in runtime and "pip uninstall --yes pip setuptools" in runtime
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in runtime
    assert "COPY" not in runtime and "--mount=type=secret" not in runtime  # the build's pip secrets stay there
    assert re.search(r"^ENV (?:.*\\\n)*\s*PATH=/opt/venv/bin:\$PATH$", runtime, re.M), runtime
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is excluded but the few things listed
    assert {"!pyproject.toml", "!README.md", "!constraints.txt", "!api/", "!extension/"} <= set(ignore)
    assert ignore.index("extension/local/") > ignore.index("!extension/")  # local-up: registry-cache-local's
    assert not any(x in line for line in ignore for x in ("tests", "hack", "manifests") if line.startswith("!"))


def test_the_constraints_pin_every_runtime_dependency_within_the_floors():
    """constraints.txt pins each runtime dependency (and what they need) to one version, allowed by pyproject, with
    the hashes of its files (pip's --require-hashes)."""
    import tomllib

    def numbers(version: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", version)[:3])

    pins: dict[str, str] = {}
    hashes: dict[str, int] = {}
    name = ""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith(" "):  # a requirement's continuation: its hashes
            assert re.fullmatch(r"\s+--hash=sha256:[0-9a-f]{64}( \\)?", line), line
            hashes[name] += 1
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)( \\)?", line)
        assert match, line
        name = match.group(1).lower().replace("_", "-")
        pins[name], hashes[name] = match.group(2), 0
    assert all(hashes.values()), hashes
    for dependency in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", dependency).group(0).lower().replace("_", "-")
        assert name in pins, name
        floor = re.search(r">=([\d.]+)", dependency)
        ceiling = re.search(r"<([\d.]+)", dependency)
        assert floor and numbers(pins[name]) >= numbers(floor.group(1)), (dependency, pins[name])
        assert not ceiling or numbers(pins[name]) < numbers(ceiling.group(1)), (dependency, pins[name])


# --- against the local control plane ---------------------------------------------------------------------

def test_server_side_dry_run(default, control_plane):
    # A dry run creates nothing, so the namespaced objects would find no namespace registry-cache: that one
    # is applied for real first (exactly as in the manifests), then everything runs dry.
    [namespace] = by_kind(default, "Namespace")
    done = subprocess.run([kubectl(), "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side",
                           "--field-manager", "test-manifests", "-f", "-"], input=yaml.safe_dump(namespace),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = yaml.safe_dump_all(default, sort_keys=False)
    # (--force-conflicts: conftest applied the CRDs and Shoot policies already, with another field manager)
    done = subprocess.run([kubectl(), "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side",
                           "--force-conflicts", "--dry-run=server", "-f", "-"], input=text, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == len(default), done.stdout
    assert all("serverside-applied (server dry run)" in line for line in lines), done.stdout


RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
              "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def _apply_rbac(default: list[dict], kubeconfig: Path) -> None:
    """Apply (for real) the Namespace, ServiceAccounts, RBAC and admission policies (the controller's guard, the
    Shoot policies) of manifests/default: not the workloads, which the local control plane (no scheduler, no
    kubelet) would not run anyway."""
    kinds = RBAC_KINDS
    text = yaml.safe_dump_all([o for o in default if o["kind"] in kinds], sort_keys=False)
    done = subprocess.run([kubectl(), "--kubeconfig", str(kubeconfig), "apply", "--server-side", "--force-conflicts",
                           "--field-manager", "test-manifests", "-f", "-"], input=text, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _token_kubeconfig(admin: Kube, kubeconfig: Path, sa: tuple[str, str], path: Path) -> Path:
    """A kubeconfig with a token of ServiceAccount ``sa`` (TokenRequest), for the same API server."""
    namespace, name = sa
    answer = admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                           body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 3600}})
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": name, "user": {"token": answer["status"]["token"]}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
        "current-context": name}))
    return path


def guard_refusal(kube: Kube, method: str, path: str, body: dict | list | None = None,
                  content_type: str = "application/json") -> str | None:
    """The guard's message when it refuses the request (made for real), None when the request went through. A
    refusal by anything else (RBAC, validation) fails the test: each limit is one RBAC lets through."""
    try:
        kube.request(method, path, body=body, content_type=content_type)
    except ApiError as exc:
        assert exc.status == 403 and GUARD in exc.message, exc.describe()
        return exc.message
    return None


def wait_guard_in_force(controller: Kube) -> None:
    """The API server takes a new policy into force a moment after it is written: until then a write the
    guard refuses would go through, and a test of it would prove nothing. Probed with a dry run."""
    probe = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "guard-probe", "namespace": "default"}}

    def refused() -> bool:
        try:
            controller.request("POST", "/api/v1/namespaces/default/secrets", body=probe, query=[("dryRun", "All")])
        except ApiError as exc:
            return exc.status == 403 and GUARD in exc.message
        return False
    wait_for("the guard policy to be in force", refused, timeout=30)


def _crd(group: str, version: str, kind: str, plural: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "annotations": {
                "api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/63797"}},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


OPTIONAL_CRDS = [_crd("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler", "verticalpodautoscalers"),
                 _crd("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
                 _crd("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors")]


@pytest.fixture(scope="module")
def optional_kinds(control_plane):
    """The kinds the controller delivers only where they are served (a VPA per cache, the caches' PrometheusRule
    and PodMonitor), served by minimal CRDs for this module, so that those writes go through the RBAC and guard
    too; the CRDs this module added are removed again (other modules expect the control plane without them)."""
    from extension.local.controlplane import wait_for_crds_established

    admin = Kube(control_plane.api_client(), field_manager="test-manifests")
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

    def exists(name: str) -> bool:
        try:
            admin.request("GET", f"{path}/{name}")
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    added = [o["metadata"]["name"] for o in OPTIONAL_CRDS if not exists(o["metadata"]["name"])]
    for obj in OPTIONAL_CRDS:
        admin.request("PATCH", f"{path}/{obj['metadata']['name']}", body=obj, query=[("fieldManager", "test-manifests")],
                      content_type="application/apply-patch+yaml")
    wait_for_crds_established(admin.api, [o["metadata"]["name"] for o in OPTIONAL_CRDS], timeout=30)
    yield
    for name in added:
        admin.request("DELETE", f"{path}/{name}")
    wait_for("the CRDs this module added to be gone", lambda: not any(exists(n) for n in added), timeout=60)


@pytest.fixture(scope="module", params=["manifests", "chart"])
def installed(request, default) -> list[dict]:
    """What is installed: manifests/default, or the Helm chart in mode standalone (release namespace
    registry-cache, the Namespace of manifests/default standing in for `helm install --create-namespace`)."""
    if request.param == "manifests":
        return default
    helm = request.getfixturevalue("helm")
    done = subprocess.run([helm, "template", "registry-cache", str(REPO / "charts" / "registry-cache"), "--namespace",
                           CONTROLLER_SA[0], "--set", "mode=standalone"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": os.devnull})
    assert done.returncode == 0, done.stderr
    return by_kind(default, "Namespace") + [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rbac(installed, control_plane, tmp_path_factory):
    """The ServiceAccounts, RBAC and policies of what is installed, and nothing left of the other: the objects of
    these kinds are deleted first (both installations name them alike)."""
    admin = Kube(control_plane.api_client(), field_manager="test-manifests")
    stale = [o for o in installed if o["kind"] in RBAC_KINDS - {"Namespace", "ServiceAccount"}]
    done = subprocess.run([kubectl(), "--kubeconfig", str(control_plane.kubeconfig), "delete", "--ignore-not-found",
                           "--wait", "-f", "-"], input=yaml.safe_dump_all(stale), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    _apply_rbac(installed, control_plane.kubeconfig)
    workdir = tmp_path_factory.mktemp("rbac")
    out = {
        "admin": admin,
        "controller": _token_kubeconfig(admin, control_plane.kubeconfig, CONTROLLER_SA, workdir / "controller"),
        "node-agent": _token_kubeconfig(admin, control_plane.kubeconfig, NODE_AGENT_SA, workdir / "node-agent"),
    }
    wait_guard_in_force(Kube.from_kubeconfig(str(out["controller"])))
    return out


def _forbidden(kube: Kube, method: str, path: str) -> bool:
    try:
        kube.request(method, path)
    except ApiError as exc:
        return exc.status == 403
    return False


def test_the_controller_runs_with_its_service_account(rbac, optional_kinds, tmp_path):
    """A Shoot's life in standalone mode, every API call made with the manifests' ServiceAccount under their guard
    policy: enable both extension types (caches with TLS on and off, HA, credentials, node-auth; a mirror with a
    private CA bundle), remove a cache (with a volume) and the mirror's private host, reconcile, delete the Shoot.
    The Shoot wants VPA and its caches' monitoring (PrometheusRule, PodMonitor): those kinds are served here. The
    referenced Secrets are protected while in use and released after."""
    from extension.component import certs

    admin = rbac["admin"]
    project, name = "rbac", f"rbac-{uuid.uuid4().hex[:5]}"
    garden_ns, seed_ns = f"garden-{project}", f"shoot--{project}--{name}"
    up = {k: f"{k}.{name}.example" for k in ("tls", "plain", "private", "mirrored")}
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": garden_ns}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "immutable": True, "type": "Opaque",
                 "metadata": {"name": f"{name}-creds-v1", "namespace": garden_ns},
                 "data": {"username": base64.b64encode(b"robot").decode(),
                          "password": base64.b64encode(b"s3cret").decode()}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "immutable": True, "type": "Opaque",
                 "metadata": {"name": f"{name}-ca-v1", "namespace": garden_ns},
                 "data": {"bundle.crt": base64.b64encode(certs.generate_ca("rbac-mirror-ca").cert_pem.encode())
                          .decode()}})
    caches = [{"upstream": up["tls"], "highAvailability": {"enabled": True}},
              {"upstream": up["plain"], "http": {"tls": False}},
              {"upstream": up["private"], "secretReferenceName": "creds"}]
    hosts = [{"host": f"https://mirror.{up['mirrored']}", "capabilities": ["pull", "resolve"]},
             {"host": f"https://private.{up['mirrored']}:8443", "caBundleSecretReferenceName": "ca"}]

    def extensions(caches: list[dict], hosts: list[dict]) -> list[dict]:
        return [{"type": "registry-cache", "providerConfig": {
                    "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                    "caches": caches}},
                {"type": "registry-mirror", "providerConfig": {
                    "apiVersion": MIRROR_API, "kind": "MirrorConfig",
                    "mirrors": [{"upstream": up["mirrored"], "hosts": hosts}]}}]

    def reference(ref: str) -> dict:
        return {"name": ref, "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": f"{name}-{ref}-v1"}}

    shoot = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
             "metadata": {"name": name, "namespace": garden_ns},
             "spec": {"extensions": extensions(caches, hosts),
                      "resources": [reference("creds"), reference("ca")],
                      "kubernetes": {"verticalPodAutoscaler": {"enabled": True}},
                      "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}
    owned = f"{OWNER}={seed_ns}"

    def state(extension_type: str = "registry-cache"):
        ext = admin.get("Extension", extension_type, seed_ns) or {}
        last = (ext.get("status") or {}).get("lastOperation") or {}
        return ext, last.get("state"), ext.get("metadata", {}).get("generation") == (
            ext.get("status") or {}).get("observedGeneration")

    def protected(ref: str) -> bool:  # the reference protection's finalizer on a Secret of the Shoot's project
        secret = admin.get("Secret", f"{name}-{ref}-v1", garden_ns) or {}
        return "gardener.cloud/reference-protection" in (secret.get("metadata", {}).get("finalizers") or [])

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    def node_auth_keys() -> set[str]:  # this Shoot's keys of the one node-auth Secret all Extensions share
        shared = admin.get("Secret", "registry-cache-node-auth", "kube-system") or {}
        return {k for k in (shared.get("data") or {}) if k.endswith(name.replace(".", "-") + "-example")}

    with OperatorProcess(rbac["controller"], tmp_path / "controller.log", "--standalone", "--webhooks", "--node-auth",
                         "--webhook-address", "127.0.0.1", "--webhook-port", str(port), "--leader-election",
                         env={"POD_NAMESPACE": "registry-cache"}) as op:
        wait_for("the webhooks", lambda: admin.get("ValidatingWebhookConfiguration",
                                                   "registry-cache.extensions.gardener.cloud"), log=op.log)
        admin.apply(shoot)
        ext = wait_for("the Extension to succeed", lambda: (s := state())[1] == "Succeeded" and s[0],
                       timeout=90, log=op.log)
        wait_for("the mirror's Extension to succeed", lambda: state("registry-mirror")[1] == "Succeeded",
                 timeout=60, log=op.log)
        assert len(ext["status"]["providerStatus"]["caches"]) == 3
        assert len(admin.list("StatefulSet", "kube-system", label_selector=owned)) == 3
        assert len(admin.list("PodDisruptionBudget", "kube-system", label_selector=owned)) == 1
        assert len(admin.list("VerticalPodAutoscaler", "kube-system", label_selector=owned)) == 3
        monitors = [(k, o["metadata"]["name"]) for k in ("PrometheusRule", "PodMonitor")
                    for o in admin.list(k, "kube-system", label_selector="app.kubernetes.io/managed-by=registry-cache")]
        assert {k for k, _ in monitors} == {"PrometheusRule", "PodMonitor"}, monitors
        assert admin.get("Secret", f"ref-{name}-creds-v1", seed_ns) is not None
        assert admin.get("Secret", f"ref-{name}-ca-v1", seed_ns) is not None
        [mirror_config] = admin.list("ConfigMap", "kube-system",
                                     label_selector=f"app.kubernetes.io/managed-by=registry-mirror,{owned}")
        assert f"private.{up['mirrored']}" in mirror_config["data"]["registries.yaml"]
        wait_for("the referenced Secrets to be protected", lambda: protected("creds") and protected("ca"),
                 log=op.log)
        # --node-auth: per cache credentials in the seed, their headers in the shared Secret, one key each
        assert len(admin.list("Secret", seed_ns, label_selector="registry-cache.gardener.cloud/node-auth")) == 3
        assert len(node_auth_keys()) == 3

        # a volume of the cache about to be removed (no StatefulSet controller here makes one)
        sts = "registry-" + up["tls"].replace(".", "-")
        admin.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": f"cache-volume-{sts}-0", "namespace": "kube-system",
                                  "labels": {OWNER: seed_ns}},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        # one cache fewer, the mirror without its private host (and so without the CA bundle's reference)
        shoot["spec"]["extensions"] = extensions(caches[1:], hosts[:1])
        shoot["spec"]["resources"] = [reference("creds")]
        admin.apply(shoot)
        wait_for("two caches", lambda: len(((state()[0].get("status") or {}).get("providerStatus") or {})
                                           .get("caches", [])) == 2 and state()[1] == "Succeeded", timeout=60,
                 log=op.log)
        wait_for("the mirror without its private host", lambda: state("registry-mirror")[2] and f"private.{up['mirrored']}"
                 not in admin.list("ConfigMap", "kube-system", label_selector=f"app.kubernetes.io/managed-by="
                                   f"registry-mirror,{owned}")[0]["data"]["registries.yaml"], timeout=60, log=op.log)
        wait_for("the CA bundle's Secret to be released", lambda: not protected("ca"), log=op.log)
        assert admin.get("Secret", f"ref-{name}-ca-v1", seed_ns) is None
        assert len(admin.list("StatefulSet", "kube-system", label_selector=owned)) == 2
        assert admin.list("PodDisruptionBudget", "kube-system", label_selector=owned) == []
        assert len(admin.list("VerticalPodAutoscaler", "kube-system", label_selector=owned)) == 2
        assert len(node_auth_keys()) == 2  # server-side apply dropped the removed cache's key
        pvc = admin.get("PersistentVolumeClaim", f"cache-volume-{sts}-0", "kube-system")
        assert pvc is None or pvc["metadata"].get("deletionTimestamp"), "the removed cache's volume was kept"

        # the reconcile annotation, as gardenlet sets it; the node credentials are reused, not made anew
        node_auth = {x["metadata"]["name"]: x["data"] for x in admin.list(
            "Secret", seed_ns, label_selector="registry-cache.gardener.cloud/node-auth")}
        admin.patch("Extension", "registry-cache", {"metadata": {"annotations": {
            "gardener.cloud/operation": "reconcile"}}}, seed_ns)
        wait_for("the annotation to be taken", lambda: "gardener.cloud/operation" not in (
            state()[0]["metadata"].get("annotations") or {}) and state()[1] == "Succeeded", timeout=60, log=op.log)
        assert {x["metadata"]["name"]: x["data"] for x in admin.list(
            "Secret", seed_ns, label_selector="registry-cache.gardener.cloud/node-auth")} == node_auth

        admin.delete("Shoot", name, garden_ns)
        wait_for("the Shoot to be gone", lambda: admin.get("Shoot", name, garden_ns) is None, timeout=90, log=op.log)
        assert admin.get("Extension", "registry-cache", seed_ns) is None
        assert admin.get("Extension", "registry-mirror", seed_ns) is None
        assert admin.get("Cluster", seed_ns) is None
        for kind in ("StatefulSet", "Service", "Secret", "ConfigMap", "NetworkPolicy", "VerticalPodAutoscaler"):
            assert admin.list(kind, "kube-system", label_selector=owned) == [], kind
        if not admin.list("StatefulSet", "kube-system", label_selector="app.kubernetes.io/managed-by=registry-cache"):
            for kind, monitor in monitors:  # shared by the caches of the cluster: removed with the last one
                wait_for(f"{kind} {monitor} to be removed", lambda: admin.get(kind, monitor, "kube-system") is None,
                         log=op.log)
        assert node_auth_keys() == set()
        wait_for("the credentials' Secret to be released", lambda: not protected("creds"), log=op.log)
        log = op.log()
    admin.delete("ValidatingWebhookConfiguration", "registry-cache.extensions.gardener.cloud")
    assert not re.search(r"(?<![,.:\d])\b403\b|[Ff]orbidden|Not enough permissions|denied request", log), log[-5000:]

    # and not more than that: a few things the controller's ServiceAccount cannot do
    controller = Kube.from_kubeconfig(str(rbac["controller"]))
    for method, path in [("GET", "/api/v1/pods"), ("GET", "/api/v1/nodes"),
                         ("GET", "/api/v1/namespaces/default/configmaps"),
                         ("GET", "/apis/apps/v1/namespaces/default/statefulsets"),
                         ("DELETE", f"/api/v1/namespaces/{garden_ns}"),
                         ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles"),
                         # nothing makes SubjectAccessReviews any more: the admission policies ask the authorizer
                         ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews"),
                         # the policies it checks by name, and no other
                         ("GET", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"),
                         ("GET", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/other"),
                         # its Lease by name
                         ("GET", "/apis/coordination.k8s.io/v1/namespaces/registry-cache/leases/other"),
                         # the logs of Pods beyond kube-system
                         ("GET", "/api/v1/namespaces/default/pods/x-0/log")]:
        assert _forbidden(controller, method, path), (method, path)
    # what it reads of a cache with a credential provider plugin: a cache Pod's log in kube-system (no such Pod
    # here: 404, not 403; controller/providers.py reads the logs of Pods the kubelets run)
    with pytest.raises(ApiError) as missing:
        controller.request("GET", "/api/v1/namespaces/kube-system/pods/registry-x-0/log")
    assert missing.value.status == 404, missing.value.describe()


def test_the_guard_refuses_every_write_beyond_the_controllers(rbac):
    """RBAC grants the controller Secret writes cluster-wide, Service and ConfigMap writes in all of kube-system,
    Namespaces, Leases and webhook configurations by any name (the limits it cannot express). With the controller's
    own token each of those is tried for real and must be refused by the guard policy (manifests/controller/
    guard.yaml); a few writes the controller does make go through, so that the refusals are the guard's limits and
    not a guard that refuses everything."""
    admin = rbac["admin"]
    controller = Kube.from_kubeconfig(str(rbac["controller"]))
    suffix = uuid.uuid4().hex[:5]
    garden_ns, shoot_ns = f"garden-guard{suffix}", f"shoot--guard{suffix}--x"
    merge = "application/merge-patch+json"
    for ns in (garden_ns, shoot_ns):
        admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # what a cluster holds that is not the controller's
    admin.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                 "data": {"config.conf": "mode: iptables"}})
    admin.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"coredns-{suffix}",
                                                                       "namespace": "kube-system"}})
    admin.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"dns-{suffix}", "namespace": "kube-system"},
                 "spec": {"ports": [{"port": 53}]}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"bootstrap-{suffix}",
                                                                    "namespace": "kube-system"}})
    admin.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": f"data-{suffix}", "namespace": "kube-system"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app", "namespace": garden_ns},
                 "data": {"password": base64.b64encode(b"hunter2").decode()}})
    # a cache as Gardener's extension labels it (taken over in a switch), and one that only borrows its labels
    gardeners = {"app": f"registry-g{suffix}", "upstream-host": f"g{suffix}.example.com"}
    for name in (f"registry-g{suffix}", f"db-{suffix}"):
        admin.apply({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {
            "name": name, "namespace": "kube-system", "labels": gardeners}, "spec": {
            "selector": {"matchLabels": gardeners}, "serviceName": "", "template": {
                "metadata": {"labels": gardeners}, "spec": {"containers": [{"name": "c", "image": "registry"}]}}}})
    for name in (f"cache-volume-registry-g{suffix}-0", f"data-registry-g{suffix}-0"):
        admin.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
            "name": name, "namespace": "kube-system", "labels": gardeners},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": f"registry-g{suffix}", "namespace": "kube-system", "labels": gardeners}})
    admin.apply({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                 "metadata": {"name": "x", "namespace": garden_ns},
                 "spec": {"provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}})

    def secret(name: str, namespace: str, **extra: object) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, **extra}

    token = {"type": "kubernetes.io/service-account-token"}
    token_meta = {"annotations": {"kubernetes.io/service-account.name": "registry-cache-node-agent"},
                  "labels": {"app.kubernetes.io/managed-by": "registry-cache"}}
    core, ks = "/api/v1/namespaces", "/api/v1/namespaces/kube-system"
    attempts = [
        # a ServiceAccount's token, even labelled as the controller's own and in a shoot namespace
        ("service-account-token Secret in kube-system", "POST", f"{ks}/secrets",
         {**secret(f"node-agent-token-{suffix}", "kube-system", **token), "metadata": {
             "name": f"node-agent-token-{suffix}", "namespace": "kube-system", **token_meta}}, None),
        ("service-account-token Secret in a shoot namespace", "POST", f"{core}/{shoot_ns}/secrets",
         secret("token", shoot_ns, **token, metadata={"name": "token", "namespace": shoot_ns,
                                                       "annotations": token_meta["annotations"]}), None),
        # kube-system: what is not labelled as the controller's
        ("patch ConfigMap kube-system/kube-proxy", "PATCH", f"{ks}/configmaps/kube-proxy",
         {"data": {"config.conf": "mode: evil"}}, merge),
        ("delete ConfigMap kube-system/kube-proxy", "DELETE", f"{ks}/configmaps/kube-proxy", None, None),
        ("label an unlabelled ConfigMap of kube-system as the controller's", "PATCH",
         f"{ks}/configmaps/coredns-{suffix}",
         {"metadata": {"labels": {"app.kubernetes.io/managed-by": "registry-cache"}}}, merge),
        ("patch an unlabelled Service of kube-system", "PATCH", f"{ks}/services/dns-{suffix}",
         {"metadata": {"annotations": {"x": "y"}}}, merge),
        ("delete an unlabelled Service of kube-system", "DELETE", f"{ks}/services/dns-{suffix}", None, None),
        ("delete an unlabelled volume claim of kube-system", "DELETE", f"{ks}/persistentvolumeclaims/data-{suffix}",
         None, None),
        ("patch an unlabelled Secret of kube-system", "PATCH", f"{ks}/secrets/bootstrap-{suffix}",
         {"data": {"token": base64.b64encode(b"x").decode()}}, merge),
        ("label an unlabelled volume claim of kube-system as a cache's", "PATCH",
         f"{ks}/persistentvolumeclaims/data-{suffix}",
         {"metadata": {"labels": {"registry-cache.gardener.cloud/owner": shoot_ns}}}, merge),
        # Gardener's labels on something not named as that cache: no switch takes it over
        ("delete a StatefulSet with a cache's labels, not named after it", "DELETE",
         f"/apis/apps/v1/namespaces/kube-system/statefulsets/db-{suffix}", None, None),
        ("label a volume claim with a cache's labels, not named after it, as the controller's", "PATCH",
         f"{ks}/persistentvolumeclaims/data-registry-g{suffix}-0",
         {"metadata": {"labels": {"registry-cache.gardener.cloud/owner": shoot_ns}}}, merge),
        ("delete a Secret with Gardener's cache labels", "DELETE", f"{ks}/secrets/registry-g{suffix}", None, None),
        ("change Gardener's volume claim without making it the controller's", "PATCH",
         f"{ks}/persistentvolumeclaims/cache-volume-registry-g{suffix}-0",
         {"metadata": {"annotations": {"x": "y"}}}, merge),
        # Secrets elsewhere
        ("create a Secret in default", "POST", f"{core}/default/secrets", secret(f"s-{suffix}", "default"), None),
        ("create a Secret in its own namespace", "POST", f"{core}/registry-cache/secrets",
         secret(f"s-{suffix}", "registry-cache"), None),
        ("change a project Secret's data", "PATCH", f"{core}/{garden_ns}/secrets/app",
         {"data": {"password": base64.b64encode(b"changed").decode()}}, merge),
        ("put another finalizer on a project Secret", "PATCH", f"{core}/{garden_ns}/secrets/app",
         {"metadata": {"finalizers": ["example.com/keep"]}}, merge),
        ("label a project Secret otherwise", "PATCH", f"{core}/{garden_ns}/secrets/app",
         {"metadata": {"labels": {"registry-cache.gardener.cloud/referenced": "true", "x": "y"}}}, merge),
        ("delete a project Secret", "DELETE", f"{core}/{garden_ns}/secrets/app", None, None),
        # namespaces, Clusters, Extensions, Shoots, Leases, webhook configurations
        ("label a foreign namespace", "PATCH", "/api/v1/namespaces/default",
         {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}, merge),
        ("create a namespace not shoot--*", "POST", "/api/v1/namespaces",
         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"evil-{suffix}"}}, None),
        ("create a Cluster not shoot--*", "POST", "/apis/extensions.gardener.cloud/v1alpha1/clusters",
         {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster", "metadata": {"name": f"x-{suffix}"},
          "spec": {"shoot": {}, "seed": {}, "cloudProfile": {}}}, None),
        ("create an Extension outside a shoot namespace", "POST",
         f"/apis/extensions.gardener.cloud/v1alpha1/namespaces/{garden_ns}/extensions",
         {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
          "metadata": {"name": "registry-cache", "namespace": garden_ns}, "spec": {"type": "registry-cache"}}, None),
        ("hibernate a Shoot (its spec)", "PATCH", f"/apis/core.gardener.cloud/v1beta1/namespaces/{garden_ns}/shoots/x",
         {"spec": {"hibernation": {"enabled": True}}}, merge),
        ("create another Lease in its namespace", "POST",
         "/apis/coordination.k8s.io/v1/namespaces/registry-cache/leases",
         {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": f"other-{suffix}"}}, None),
        ("create another MutatingWebhookConfiguration", "POST",
         "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
         {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
          "metadata": {"name": f"pods-{suffix}"}, "webhooks": []}, None),
        ("create an Event as another component", "POST", f"{core}/default/events",
         {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e-{suffix}", "namespace": "default"},
          "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"}, "reason": "Killing",
          "type": "Normal", "message": "x", "reportingComponent": "kubelet", "source": {"component": "kubelet"}},
         None),
        ("create another ValidatingWebhookConfiguration", "POST",
         "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
         {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
          "metadata": {"name": f"pods-{suffix}"}, "webhooks": []}, None),
    ]
    let_through = [what for what, method, path, body, content_type in attempts
                   if guard_refusal(controller, method, path, body, content_type or "application/json") is None]
    assert let_through == [], let_through
    assert admin.get("ConfigMap", "kube-proxy", "kube-system")["data"] == {"config.conf": "mode: iptables"}
    assert admin.get("Secret", "app", garden_ns) is not None

    # what the controller does write goes through: the guard is a limit, not a wall
    allowed = [
        ("POST", f"{ks}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": f"ours-{suffix}", "namespace": "kube-system",
            "labels": {"app.kubernetes.io/managed-by": "registry-cache"}}}, None),
        ("DELETE", f"{ks}/configmaps/ours-{suffix}", None, None),
        ("POST", f"{core}/{shoot_ns}/secrets", secret("tls", shoot_ns), None),
        ("PATCH", f"{core}/{garden_ns}/secrets/app", {"metadata": {
            "finalizers": ["gardener.cloud/reference-protection"],
            "labels": {"registry-cache.gardener.cloud/referenced": "true"}}}, merge),
        ("PATCH", f"{core}/{garden_ns}/secrets/app", {"metadata": {
            "finalizers": None, "labels": {"registry-cache.gardener.cloud/referenced": None}}}, merge),
        ("PATCH", f"/apis/core.gardener.cloud/v1beta1/namespaces/{garden_ns}/shoots/x",
         {"metadata": {"labels": {"extensions.extensions.gardener.cloud/registry-cache": "true"}}}, merge),
        # the switch from Gardener's extension: its cache's claim labelled as the controller's, its StatefulSet
        # deleted (extension/component/registrycache.py, _take_over: with orphan propagation, which this API server
        # without a garbage collector would never finish)
        ("PATCH", f"{ks}/persistentvolumeclaims/cache-volume-registry-g{suffix}-0",
         {"metadata": {"labels": {"registry-cache.gardener.cloud/owner": shoot_ns}}}, merge),
        ("DELETE", f"/apis/apps/v1/namespaces/kube-system/statefulsets/registry-g{suffix}", None, None),
        # the bridge's entry of status.lastErrors when it refuses a Shoot
        ("PATCH", f"/apis/core.gardener.cloud/v1beta1/namespaces/{garden_ns}/shoots/x/status",
         {"status": {"lastErrors": [{"taskID": "registry-cache-bridge", "description": "registry-cache: refused",
                                     "codes": ["ERR_CONFIGURATION_PROBLEM"]}]}}, merge),
    ]
    # the Warning Event on an object nested too deep to decode, as extension/runtime/kube.py records it
    controller.undecodable({"metadata": {"name": "x", "namespace": garden_ns, "uid": suffix, "resourceVersion": "1"}},
                           KINDS["Shoot"])
    assert any(e["involvedObject"]["name"] == "x" for e in admin.request(
        "GET", f"{core}/{garden_ns}/events")["items"]), "the controller's Event was not recorded"
    for method, path, body, content_type in allowed:
        controller.request(method, path, body=body, content_type=content_type or "application/json")
    admin.delete("Shoot", "x", garden_ns)
    # behind the webhook Service (as the Deployment runs it): the replicas' shared serving certificate, made once
    # and issued again for other names (create, then patch), and the look at the Service's endpoints at shutdown
    from extension.webhook import server

    admin.delete("Secret", "registry-cache-webhook-tls", "registry-cache")
    first = server.shared_serving_cert(controller, "registry-cache", ["registry-cache-webhook.registry-cache.svc"])
    again = server.shared_serving_cert(controller, "registry-cache", ["registry-cache-webhook.elsewhere.svc"])
    assert first.ca_pem == again.ca_pem and first.certfile.read_text() != again.certfile.read_text()
    assert server.other_replica_serving(controller, "registry-cache", "registry-cache-webhook", "me") is False
    admin.delete("Secret", "registry-cache-webhook-tls", "registry-cache")


def test_the_node_agent_runs_with_its_service_account(rbac, tmp_path):
    done = subprocess.run([sys.executable, "-m", "extension.cli", "node-agent", "--kubeconfig", str(rbac["node-agent"]),
                           "--root", str(tmp_path / "certs.d"), "--namespace", "kube-system", "--once",
                           "--probe-timeout", "0.5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"(?<![,.:\d])\b403\b|[Ff]orbidden", done.stderr), done.stderr
    agent = Kube.from_kubeconfig(str(rbac["node-agent"]))
    # the one node-auth Secret by name, nothing else of Secrets
    assert not _forbidden(agent, "GET", "/api/v1/namespaces/kube-system/secrets/registry-cache-node-auth")
    for method, path in [("GET", "/api/v1/namespaces/kube-system/secrets"),
                         ("GET", "/api/v1/namespaces/kube-system/secrets/registry-cache-node-auth-x"),
                         ("GET", "/api/v1/namespaces/kube-system/configmaps/any"),
                         ("GET", "/api/v1/namespaces/default/configmaps"),
                         ("GET", "/api/v1/configmaps")]:
        assert _forbidden(agent, method, path), (method, path)
    # what the running agent does: LIST and WATCH the ConfigMaps, and the one Secret by name (fieldSelector)
    configmaps, secrets = "/api/v1/namespaces/kube-system/configmaps", "/api/v1/namespaces/kube-system/secrets"
    by_name = [("fieldSelector", "metadata.name=registry-cache-node-auth")]
    watch = [("watch", "1"), ("timeoutSeconds", "1")]
    agent.request("GET", configmaps, query=[("labelSelector", "registry-cache.gardener.cloud/node-config=true")])
    agent.request("GET", configmaps, query=watch)
    agent.request("GET", secrets, query=by_name)
    agent.request("GET", secrets, query=by_name + watch)
    for query in ([("fieldSelector", "metadata.name=registry-cache-node-auth-x")], watch,
                  [("fieldSelector", "metadata.namespace=kube-system")]):
        with pytest.raises(ApiError) as refused:
            agent.request("GET", secrets, query=query)
        assert refused.value.status == 403, query
