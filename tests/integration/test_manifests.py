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

from extension.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUBERNETES_VERSION = "1.34.0"
CRD_GROUPS = {"extensions.gardener.cloud", "core.gardener.cloud"}  # kinds served by CRDs: no built-in schema
CONTROLLER_SA = ("registry-cache", "registry-cache")  # namespace, name
NODE_AGENT_SA = ("kube-system", "registry-cache-node-agent")
OWNER = "registry-cache.gardener.cloud/owner"


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

def test_default_renders_crds_controller_and_node_agent(default):
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
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhooks"}
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
    assert "pip wheel --wheel-dir /wheels -c constraints.txt ." in text
    runtime = text.split("FROM ${BASE}\n", 1)[1]
    assert "-c /wheels/constraints.txt" in runtime
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
    assert not any(x in line for line in ignore for x in ("tests", "hack", "manifests") if line.startswith("!"))


def test_the_constraints_pin_every_runtime_dependency_within_the_floors():
    """constraints.txt pins each runtime dependency (and what they need) to one version, allowed by pyproject."""
    import tomllib

    def numbers(version: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", version)[:3])

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, line
            pins[name.lower().replace("_", "-")] = version
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
    done = subprocess.run([kubectl(), "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side",
                           "--dry-run=server", "-f", "-"], input=text, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == len(default), done.stdout
    assert all("serverside-applied (server dry run)" in line for line in lines), done.stdout


def _apply_rbac(default: list[dict], kubeconfig: Path) -> None:
    """Apply (for real) the Namespace, ServiceAccounts and RBAC of manifests/default: not the workloads,
    which the local control plane (no scheduler, no kubelet) would not run anyway."""
    kinds = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    text = yaml.safe_dump_all([o for o in default if o["kind"] in kinds], sort_keys=False)
    done = subprocess.run([kubectl(), "--kubeconfig", str(kubeconfig), "apply", "--server-side",
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


@pytest.fixture(scope="module")
def rbac(default, control_plane, tmp_path_factory):
    admin = Kube(control_plane.api_client(), field_manager="test-manifests")
    _apply_rbac(default, control_plane.kubeconfig)
    workdir = tmp_path_factory.mktemp("rbac")
    return {
        "admin": admin,
        "controller": _token_kubeconfig(admin, control_plane.kubeconfig, CONTROLLER_SA, workdir / "controller"),
        "node-agent": _token_kubeconfig(admin, control_plane.kubeconfig, NODE_AGENT_SA, workdir / "node-agent"),
    }


def _forbidden(kube: Kube, method: str, path: str) -> bool:
    try:
        kube.request(method, path)
    except ApiError as exc:
        return exc.status == 403
    return False


def test_the_controller_runs_with_its_service_account(rbac, tmp_path):
    """A Shoot's life in standalone mode, every API call made with the manifests' ServiceAccount: enable
    (TLS on and off, HA, credentials), remove a cache (with a volume), reconcile, delete the Shoot."""
    admin = rbac["admin"]
    project, name = "rbac", f"rbac-{uuid.uuid4().hex[:5]}"
    garden_ns, seed_ns = f"garden-{project}", f"shoot--{project}--{name}"
    up = {k: f"{k}.{name}.example" for k in ("tls", "plain", "private")}
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": garden_ns}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "immutable": True, "type": "Opaque",
                 "metadata": {"name": f"{name}-creds-v1", "namespace": garden_ns},
                 "data": {"username": base64.b64encode(b"robot").decode(),
                          "password": base64.b64encode(b"s3cret").decode()}})
    caches = [{"upstream": up["tls"], "highAvailability": {"enabled": True}},
              {"upstream": up["plain"], "http": {"tls": False}},
              {"upstream": up["private"], "secretReferenceName": "creds"}]
    shoot = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
             "metadata": {"name": name, "namespace": garden_ns},
             "spec": {"extensions": [{"type": "registry-cache", "providerConfig": {
                 "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                 "caches": caches}}],
                 "resources": [{"name": "creds", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                 "name": f"{name}-creds-v1"}}],
                 "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}
    owned = f"{OWNER}={seed_ns}"

    def state():
        ext = admin.get("Extension", "registry-cache", seed_ns) or {}
        last = (ext.get("status") or {}).get("lastOperation") or {}
        return ext, last.get("state"), ext.get("metadata", {}).get("generation") == (
            ext.get("status") or {}).get("observedGeneration")

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
        assert len(ext["status"]["providerStatus"]["caches"]) == 3
        assert len(admin.list("StatefulSet", "kube-system", label_selector=owned)) == 3
        assert len(admin.list("PodDisruptionBudget", "kube-system", label_selector=owned)) == 1
        assert admin.get("Secret", f"ref-{name}-creds-v1", seed_ns) is not None
        # --node-auth: per cache credentials in the seed, their headers in the shared Secret, one key each
        assert len(admin.list("Secret", seed_ns, label_selector="registry-cache.gardener.cloud/node-auth")) == 3
        assert len(node_auth_keys()) == 3

        # a volume of the cache about to be removed (no StatefulSet controller here makes one)
        sts = "registry-" + up["tls"].replace(".", "-")
        admin.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": f"cache-volume-{sts}-0", "namespace": "kube-system",
                                  "labels": {OWNER: seed_ns}},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        shoot["spec"]["extensions"][0]["providerConfig"]["caches"] = caches[1:]
        admin.apply(shoot)
        wait_for("two caches", lambda: len(((state()[0].get("status") or {}).get("providerStatus") or {})
                                           .get("caches", [])) == 2 and state()[1] == "Succeeded", timeout=60,
                 log=op.log)
        assert len(admin.list("StatefulSet", "kube-system", label_selector=owned)) == 2
        assert admin.list("PodDisruptionBudget", "kube-system", label_selector=owned) == []
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
        assert admin.get("Cluster", seed_ns) is None
        for kind in ("StatefulSet", "Service", "Secret", "ConfigMap", "NetworkPolicy"):
            assert admin.list(kind, "kube-system", label_selector=owned) == [], kind
        assert node_auth_keys() == set()
        log = op.log()
    admin.delete("ValidatingWebhookConfiguration", "registry-cache.extensions.gardener.cloud")
    assert not re.search(r"(?<![,.:\d])\b403\b|[Ff]orbidden|Not enough permissions", log), log[-5000:]

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
                         ("GET", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/other")]:
        assert _forbidden(controller, method, path), (method, path)


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
