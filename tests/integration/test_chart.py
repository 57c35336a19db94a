"""The Helm chart for a Gardener seed (charts/registry-cache) and the ControllerDeployment that carries it
(hack/controller-deployment.py): rendered by a real helm (hack/helm-bin.sh builds it with Go), checked
against the Kubernetes schema and `helm lint`, applied by server-side dry run to the local control plane,
the packed chart rendering exactly like the directory; and the chart's RBAC put to work: the controller in
seed mode (`run --gardener --webhooks seed`) with a token of the chart's ServiceAccount, the shoot a second
API server reached through gardenlet's `gardener` kubeconfig Secret. Mode standalone: the same objects as
`kubectl kustomize manifests/default` (Helm's own label and annotations aside), the linked manifests/ files
packed by `helm package` and hack/controller-deployment.py, a local cluster's values; its RBAC and guard policy at
work: tests/integration/test_manifests.py (parametrized over both installations)."""

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

from extension.runtime.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "registry-cache"
KUBERNETES_VERSION = "1.34.0"
RELEASE, NAMESPACE = "registry-cache", "extension-registry-cache-test"  # as gardenlet: a namespace of its own
IMAGE = "registry.example:5000/gardener/registry-cache:1.2.3"
WEBHOOK_CONFIGURATION = "registry-cache.extensions.gardener.cloud"
OWNER = "registry-cache.gardener.cloud/owner"
SEED_GUARD = "seed-controller-writes.registry-cache.extensions.gardener.cloud"  # manifests/controller/guard.yaml


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (needed for the server-side dry run)")
    return path


def template(helm: str, chart: Path, values: Path | None = None, *extra: str) -> subprocess.CompletedProcess:
    cmd = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *extra]
    if values is not None:
        cmd += ["--values", str(values)]
    # helm reads no kubeconfig for `template`, but keep it away from the user's anyway
    env = {**os.environ, "KUBECONFIG": os.devnull, "HELM_CACHE_HOME": "/nonexistent-helm-cache"}
    return subprocess.run(cmd, capture_output=True, check=False, text=True, timeout=60, env=env)


def objects(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


@pytest.fixture(scope="module")
def controller_deployment(tmp_path_factory) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "hack" / "controller-deployment.py"), "--image", IMAGE],
                          capture_output=True, check=False, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def values_file(controller_deployment, tmp_path_factory) -> Path:
    """helm.values of the ControllerDeployment, plus what gardenlet adds (the chart ignores it)."""
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    values = {**controller_deployment["helm"]["values"],
              "gardener": {"version": "v1.120.0", "seed": {"name": "local", "provider": "local"}}}
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def rendered(helm, values_file) -> str:
    done = template(helm, CHART, values_file)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def rendered_objects(rendered) -> list[dict]:
    return objects(rendered)


# --- the ControllerDeployment -----------------------------------------------------------------------------

def test_the_controller_deployment(controller_deployment):
    doc = controller_deployment
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "core.gardener.cloud/v1", "ControllerDeployment", "extension-registry-cache")
    assert doc["helm"]["values"] == {"image": {"repository": "registry.example:5000/gardener/registry-cache",
                                               "tag": "1.2.3"}}
    registration = yaml.safe_load((REPO / "manifests" / "gardener" / "controller-registration.yaml").read_text())
    assert registration["spec"]["deployment"]["deploymentRefs"] == [{"name": doc["metadata"]["name"]}]


def test_the_raw_chart_is_deterministic_and_laid_out_like_helm_package(controller_deployment, tmp_path):
    import io
    import tarfile

    again = subprocess.run([sys.executable, str(REPO / "hack" / "controller-deployment.py"), "--image", IMAGE],
                           capture_output=True, check=False, text=True, timeout=60)
    assert yaml.safe_load(again.stdout)["helm"]["rawChart"] == controller_deployment["helm"]["rawChart"]
    raw = base64.b64decode(controller_deployment["helm"]["rawChart"])
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    expected = sorted(f"registry-cache/{p.relative_to(CHART).as_posix()}" for p in CHART.rglob("*") if p.is_file())
    assert names == expected
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_the_raw_chart_renders_like_the_directory(helm, controller_deployment, values_file, rendered, tmp_path):
    tgz = tmp_path / "registry-cache-0.1.0.tgz"
    tgz.write_bytes(base64.b64decode(controller_deployment["helm"]["rawChart"]))
    done = template(helm, tgz, values_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout == rendered


# --- rendering, schema, lint ------------------------------------------------------------------------------

def test_what_the_chart_renders(rendered_objects):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered_objects)
    assert kinds == [("ClusterRole", "extensions.gardener.cloud:registry-cache"),
                     ("ClusterRoleBinding", "extensions.gardener.cloud:registry-cache"),
                     ("Deployment", "registry-cache"), ("PodDisruptionBudget", "registry-cache"),
                     ("Role", "extensions.gardener.cloud:registry-cache"),
                     ("RoleBinding", "extensions.gardener.cloud:registry-cache"),
                     ("Service", "registry-cache-webhook"), ("ServiceAccount", "registry-cache"),
                     ("ValidatingAdmissionPolicy", SEED_GUARD), ("ValidatingAdmissionPolicyBinding", SEED_GUARD)]
    for obj in rendered_objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                               "ValidatingAdmissionPolicyBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]
    [binding] = by_kind(rendered_objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "registry-cache", "namespace": NAMESPACE}]
    # the guard for this release's ServiceAccount; only where the seed serves ValidatingAdmissionPolicy v1
    [guard] = by_kind(rendered_objects, "ValidatingAdmissionPolicy")
    assert guard["spec"]["matchConditions"][0]["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:registry-cache'")
    assert by_kind(rendered_objects, "ValidatingAdmissionPolicyBinding")[0]["spec"]["policyName"] == SEED_GUARD


def test_a_seed_before_kubernetes_1_30_gets_no_guard(helm, values_file):
    done = template(helm, CHART, values_file, "--kube-version", "1.29.5")
    assert done.returncode == 0, done.stderr
    assert not [o for o in objects(done.stdout) if o["kind"].startswith("ValidatingAdmissionPolicy")]


def test_every_object_validates_against_the_kubernetes_schema(rendered_objects):
    import kubernetes_validate

    for obj in rendered_objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_the_seed_controller(rendered_objects):
    """The image's ENTRYPOINT is `registry-cache`: the args go to its command line."""
    from extension.cli import build_parser

    [deployment] = by_kind(rendered_objects, "Deployment")
    # two replicas, one leading (a Lease), both serving the webhook; a rollout never has none ready
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}  # extension/probes.py
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    [pdb] = by_kind(rendered_objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"] == deployment["spec"]["selector"]
    argv = container["args"]
    assert "--gardener" in argv
    assert argv[argv.index("--webhooks") + 1] == "seed"
    assert "--standalone" not in argv
    args = build_parser().parse_args(argv)
    assert args.command == "run" and args.gardener and args.webhooks == "seed" and not args.standalone
    assert args.leader_election and args.leader_election_namespace is None  # POD_NAMESPACE
    assert args.webhook_service == f"{NAMESPACE}/registry-cache-webhook"
    assert (args.metrics_address, args.liveness) == ("0.0.0.0:8081", "http://0.0.0.0:8080/healthz")
    assert container["image"] == IMAGE
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8081, "healthz": 8080, "webhooks": args.webhook_port} and args.webhook_port == 9443
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8081"
    # locked down like manifests/controller/deployment.yaml
    assert pod["spec"]["serviceAccountName"] == "registry-cache"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    # the webhook Service reaches the container
    [service] = by_kind(rendered_objects, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    hook = next(p for p in service["spec"]["ports"] if p["name"] == "webhooks")
    assert (hook["port"], hook["targetPort"]) == (443, "webhooks")


def test_the_rbac_is_for_a_seed(rendered_objects):
    [role] = by_kind(rendered_objects, "ClusterRole")
    granted = {(group, resource, verb, tuple(rule.get("resourceNames", ())))
               for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert not any("*" in (g, r, v) for g, r, v, _ in granted)
    resources = {r for _, r, _, _ in granted}
    assert resources == {"extensions", "extensions/status", "clusters", "secrets",
                         "mutatingwebhookconfigurations",
                         "configmaps", "prometheusrules", "scrapeconfigs",  # (the caches' monitoring)
                         "events"}  # (on an object nested too deep to decode)
    assert {v for g, r, v, n in granted if r == "events"} == {"create"}
    # a seed has no Shoots; gardenlet makes the namespaces; the Shoot/Secret webhooks belong to the garden
    assert not resources & {"shoots", "namespaces", "validatingwebhookconfigurations"}
    assert {v for g, r, v, n in granted if r == "mutatingwebhookconfigurations" and not n} == {"create"}
    assert {v for g, r, v, n in granted if r == "clusters"} == {"get", "list", "watch"}  # read; watched (metadata)


def test_helm_lint(helm, values_file):
    done = subprocess.run([helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values",
                           str(values_file)], capture_output=True, check=False, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_one_replica_has_no_disruption_budget_and_none_is_refused(helm):
    done = template(helm, CHART, None, "--set", "replicas=1")
    assert done.returncode == 0, done.stderr
    assert "PodDisruptionBudget" not in done.stdout and "--leader-election" in done.stdout
    done = template(helm, CHART, None, "--set", "replicas=0")
    assert done.returncode != 0 and "replicas must be at least 1" in done.stderr


# --- mode standalone: what `kubectl apply -k manifests/default` installs -------------------------------------

STANDALONE_NS = "registry-cache"  # where manifests/default puts the controller
HELM_LABELS = ("app.kubernetes.io/instance",)  # the release's own label; no other differs from manifests/
# A local cluster's values: its node's registry, the client CA of its API server, containerd's hosts directory
# under the cluster's workdir, and what its tests need of the controller
LOCAL_VALUES = {
    "image": {"repository": "127.0.0.1:5000/registry-cache/registry-cache", "tag": "0123456789abcdef"},
    "cacheImage": "127.0.0.1:5000/registry:3.1.1",
    "nodeAgent": {"hostPath": "/var/lib/registry-cache-local/node/certs.d"},
    "extraArgs": ["--no-upstream-check", "--dial-timeout", "200ms"],
}


def standalone(helm: str, chart: Path = CHART, *extra: str) -> subprocess.CompletedProcess:
    return template(helm, chart, None, "--namespace", STANDALONE_NS, "--set", "mode=standalone", *extra)


def kustomize(path: Path) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, check=False, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return objects(done.stdout)


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def without_helms_own(obj: dict) -> dict:
    """The object without what is Helm's: the release's label, helm.sh/ annotations (the CRDs' resource-policy)."""
    obj = yaml.safe_load(yaml.safe_dump(obj))
    meta = obj["metadata"]
    for name in HELM_LABELS:
        (meta.get("labels") or {}).pop(name, None)
    for name in [a for a in meta.get("annotations") or {} if a.startswith("helm.sh/")]:
        meta["annotations"].pop(name)
    for field in ("labels", "annotations"):
        if meta.get(field) == {}:
            del meta[field]
    return obj


@pytest.fixture(scope="module")
def standalone_objects(helm) -> list[dict]:
    done = standalone(helm)
    assert done.returncode == 0, done.stderr
    return objects(done.stdout)


def test_standalone_renders_what_kustomize_renders(standalone_objects):
    """`helm install --set mode=standalone` and `kubectl apply -k manifests/default` install the same objects:
    the same kinds, names, namespaces and everything else, apart from Helm's own label and annotations and the
    release namespace (which Helm creates, and manifests/default as a Namespace of its own)."""
    kustomized = {key(o): o for o in kustomize(REPO / "manifests" / "default")}
    assert kustomized.pop(("Namespace", "", STANDALONE_NS))
    charted = {key(o): without_helms_own(o) for o in standalone_objects}
    assert len(charted) == len(standalone_objects)  # no object twice
    assert sorted(charted) == sorted(kustomized)
    different = [k for k in kustomized if charted[k] != kustomized[k]]
    assert not different, "\n".join(
        f"{k}:\n{yaml.safe_dump(kustomized[k], sort_keys=True)}--- chart:\n{yaml.safe_dump(charted[k], sort_keys=True)}"
        for k in different[:2])
    # what was set aside is only that
    for obj in standalone_objects:
        if obj["kind"] == "CustomResourceDefinition":
            assert obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # kept on uninstall


def test_the_chart_links_manifests_files_instead_of_copying_them():
    """The CRDs, the Shoot policies and the guard are manifests/' files, linked (the chart cannot reach beyond its
    directory): a copy could drift from them."""
    files = sorted(p for p in (CHART / "files").rglob("*") if not p.is_dir())
    assert files and all(p.is_symlink() for p in files), files
    targets = {p.resolve().relative_to(REPO).as_posix() for p in files}
    assert targets == {f"manifests/crds/{p.name}" for p in (REPO / "manifests" / "crds").glob("10-crd-*.yaml")} | {
        "manifests/policies/shoots.yaml", "manifests/controller/guard.yaml"}


def test_standalone_from_a_packed_chart_renders_like_the_directory(helm, tmp_path):
    """`helm package` and hack/controller-deployment.py both put the linked files' content into the archive."""
    done = subprocess.run([helm, "package", str(CHART), "--destination", str(tmp_path)], capture_output=True,
                          check=False, text=True, timeout=60, env={**os.environ, "HELM_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    [packaged] = tmp_path.glob("registry-cache-*.tgz")
    raw = tmp_path / "raw.tgz"
    done = subprocess.run([sys.executable, str(REPO / "hack" / "controller-deployment.py"), "--tgz", str(raw)],
                          capture_output=True, check=False, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = standalone(helm)
    assert expected.returncode == 0, expected.stderr
    for archive in (packaged, raw):
        done = standalone(helm, archive)
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected.stdout, archive.name


def test_standalone_with_a_local_clusters_values(helm, tmp_path):
    """What the local cluster sets: image, the caches' image, the API server's webhook client CA, containerd's
    hosts directory, extra arguments; the controller's command line is one the CLI accepts."""
    from extension.cli import build_parser
    from extension.component import certs

    ca = certs.generate_ca("webhook-client-ca").cert_pem
    (tmp_path / "ca.crt").write_text(ca)
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(LOCAL_VALUES))
    done = standalone(helm, CHART, "--values", str(tmp_path / "values.yaml"), "--set-file",
                      f"webhook.clientCA={tmp_path / 'ca.crt'}")
    assert done.returncode == 0, done.stderr
    objs = {key(o): o for o in objects(done.stdout)}
    image = "127.0.0.1:5000/registry-cache/registry-cache:0123456789abcdef"
    deployment = objs[("Deployment", STANDALONE_NS, "registry-cache-controller")]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == image
    args = build_parser().parse_args(container["args"])
    assert args.command == "run" and args.standalone and args.webhooks == "all" and args.leader_election
    assert args.webhook_service == f"{STANDALONE_NS}/registry-cache-webhook"
    assert args.image == "127.0.0.1:5000/registry:3.1.1" and args.no_upstream_check and args.dial_timeout == "200ms"
    # the client CA: a ConfigMap, mounted, named on the command line
    config_map = objs[("ConfigMap", STANDALONE_NS, "registry-cache-webhook-client-ca")]
    assert config_map["data"]["ca.crt"].strip() == ca.strip()
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "webhook-client-ca"]
    assert args.webhook_client_ca == mount["mountPath"] + "/ca.crt" and mount["readOnly"] is True
    assert {"name": "webhook-client-ca", "configMap": {"name": config_map["metadata"]["name"]}} in pod["volumes"]
    assert "priorityClassName" not in pod  # no seed's class in a plain cluster
    # the node agent: containerd's hosts directory of the node, mounted at its own path
    daemonset = objs[("DaemonSet", "kube-system", "registry-cache-node-agent")]
    [agent] = daemonset["spec"]["template"]["spec"]["containers"]
    host = "/var/lib/registry-cache-local/node/certs.d"
    assert agent["image"] == image
    assert build_parser().parse_args(agent["args"]).root == host
    [volume] = [v for v in daemonset["spec"]["template"]["spec"]["volumes"] if "hostPath" in v]
    assert volume["hostPath"]["path"] == host
    assert {"name": volume["name"], "mountPath": host} in agent["volumeMounts"]
    # the guard names the release's ServiceAccount
    guard = objs[("ValidatingAdmissionPolicy", "", "controller-writes.registry-cache.extensions.gardener.cloud")]
    assert guard["spec"]["matchConditions"][0]["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{STANDALONE_NS}:registry-cache'")
    import kubernetes_validate

    for obj in objs.values():
        if obj["kind"] != "CustomResourceDefinition":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_standalone_in_another_namespace_and_its_switches(helm):
    done = template(helm, CHART, None, "--namespace", "rc", "--set", "mode=standalone", "--set", "crds.enabled=false",
                    "--set", "replicas=1", "--set", "image.tag=sha256:" + "a" * 64)
    assert done.returncode == 0, done.stderr
    objs = {key(o): o for o in objects(done.stdout)}
    assert not [k for k in objs if k[0] in ("CustomResourceDefinition", "PodDisruptionBudget")]
    deployment = objs[("Deployment", "rc", "registry-cache-controller")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry-cache@sha256:" + "a" * 64 and deployment["spec"]["replicas"] == 1
    assert "rc/registry-cache-webhook" in container["args"]
    guard = objs[("ValidatingAdmissionPolicy", "", "controller-writes.registry-cache.extensions.gardener.cloud")]
    assert "system:serviceaccount:rc:registry-cache" in guard["spec"]["matchConditions"][0]["expression"]
    assert {"name": "ownNamespace", "expression": "'rc'"} in guard["spec"]["variables"]
    for kind, name in [("ClusterRoleBinding", "registry-cache"), ("RoleBinding", "registry-cache")]:
        [binding] = [o for k, o in objs.items() if k[0] == kind and k[2] == name]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "registry-cache", "namespace": "rc"}]
    # Kubernetes before 1.30 serves no ValidatingAdmissionPolicy v1; a mode that does not exist
    done = standalone(helm, CHART, "--kube-version", "1.29.5")
    assert done.returncode != 0 and "needs Kubernetes 1.30 or later" in done.stderr
    done = template(helm, CHART, None, "--set", "mode=seed")
    assert done.returncode != 0 and "mode must be gardener or standalone" in done.stderr


def test_helm_lint_standalone(helm):
    done = subprocess.run([helm, "lint", "--strict", str(CHART), "--namespace", STANDALONE_NS, "--set",
                           "mode=standalone"], capture_output=True, check=False, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


# --- against the local control plane ---------------------------------------------------------------------

def _apply(kubeconfig: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl(), "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                           "--field-manager", "test-chart", *extra, "-f", "-"], input=text, capture_output=True,
                          check=False, text=True, timeout=120)


def _ensure_namespace(kubeconfig: Path) -> None:
    """gardenlet creates the release namespace; a dry run would not, so it is made for real."""
    done = _apply(kubeconfig, yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NAMESPACE}}))
    assert done.returncode == 0, done.stderr


def test_server_side_dry_run(rendered, rendered_objects, control_plane):
    _ensure_namespace(control_plane.kubeconfig)
    done = _apply(control_plane.kubeconfig, rendered, "--dry-run=server")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == len(rendered_objects), done.stdout
    assert all("serverside-applied (server dry run)" in line for line in lines), done.stdout


def test_standalone_server_side_dry_run(helm, control_plane, tmp_path):
    """Mode standalone with a client CA, by server-side dry run (the release namespace made for real first, as
    `helm install --create-namespace`; --force-conflicts: the session applied the CRDs and Shoot policies already)."""
    from extension.component import certs

    (tmp_path / "ca.crt").write_text(certs.generate_ca("webhook-client-ca").cert_pem)
    done = standalone(helm, CHART, "--set-file", f"webhook.clientCA={tmp_path / 'ca.crt'}")
    assert done.returncode == 0, done.stderr
    done_ns = _apply(control_plane.kubeconfig, yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                                 "metadata": {"name": STANDALONE_NS}}))
    assert done_ns.returncode == 0, done_ns.stderr
    applied = _apply(control_plane.kubeconfig, done.stdout, "--dry-run=server", "--force-conflicts")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    lines = [line for line in applied.stdout.splitlines() if line.strip()]
    assert len(lines) == len(objects(done.stdout)), applied.stdout
    assert all("serverside-applied (server dry run)" in line for line in lines), applied.stdout


# --- the chart's RBAC at work -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chart_token(rendered_objects, control_plane, tmp_path_factory) -> Path:
    """The chart's ServiceAccount, RBAC and guard policy applied for real (not the Deployment: no kubelet here), and
    a kubeconfig with a token of that ServiceAccount."""
    _ensure_namespace(control_plane.kubeconfig)
    rbac = [o for o in rendered_objects if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                                          "RoleBinding", "ValidatingAdmissionPolicy",
                                                          "ValidatingAdmissionPolicyBinding")]
    done = _apply(control_plane.kubeconfig, yaml.safe_dump_all(rbac))
    assert done.returncode == 0, done.stdout + done.stderr
    admin = Kube(control_plane.api_client(), field_manager="test-chart")
    answer = admin.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/registry-cache/token",
                           body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 3600}})
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    cluster = config["clusters"][0]
    path = tmp_path_factory.mktemp("chart-rbac") / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "sa", "user": {"token": answer["status"]["token"]}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
        "current-context": "sa"}))
    wait_for("the guard policy to be in force", lambda: _guard_refusal(
        Kube.from_kubeconfig(str(path)), "POST", "/api/v1/namespaces/default/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe"}}, dry_run=True), timeout=30)
    return path


def _guard_refusal(kube: Kube, method: str, path: str, body: dict | None = None, dry_run: bool = False) -> str:
    """The seed guard's message when it refuses the request, "" when the request went through or something else
    refused it."""
    try:
        kube.request(method, path, body=body, query=[("dryRun", "All")] if dry_run else [])
    except ApiError as exc:
        return exc.message if exc.status == 403 and SEED_GUARD in exc.message else ""
    return ""


def _forbidden(kube: Kube, method: str, path: str) -> bool:
    try:
        kube.request(method, path)
    except ApiError as exc:
        return exc.status == 403
    return False


def test_the_seed_controller_runs_with_the_charts_service_account(chart_token, control_plane,
                                                                   second_control_plane, tmp_path):
    """gardenlet's side by hand (shoot namespace with its label, Cluster, `gardener` kubeconfig Secret,
    Extension), the controller with the chart's ServiceAccount: Create with TLS, the OperatingSystemConfig
    webhook, Delete, a clean shutdown; no request refused."""
    from extension.local.controlplane import apply_manifests, wait_for_crds_established

    api = control_plane.api_client()
    apply_manifests(api, [REPO / "manifests" / "seed-crds"])
    wait_for_crds_established(api, ["operatingsystemconfigs.extensions.gardener.cloud"], timeout=30)
    admin = Kube(api, field_manager="test-chart")
    shoot = Kube(second_control_plane.api_client(), field_manager="test-chart")
    name = f"chart-{uuid.uuid4().hex[:5]}"
    ns, upstream = f"shoot--chart--{name}", f"{name}.example"
    owned = f"{OWNER}={ns}"
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": ns, "labels": {"extensions.extensions.gardener.cloud/registry-cache": "true"}}})
    admin.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gardener", "namespace": ns},
                 "data": {"kubeconfig": base64.b64encode(second_control_plane.kubeconfig.read_bytes()).decode()}})
    admin.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster", "metadata": {"name": ns},
                 "spec": {"seed": {}, "cloudProfile": {}, "shoot": {
                     "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                     "metadata": {"name": name, "namespace": "garden-chart"},
                     "spec": {"provider": {"type": "local",
                                           "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}}})

    def state():
        ext = admin.get("Extension", "registry-cache", ns) or {}
        return ((ext.get("status") or {}).get("lastOperation") or {}).get("state"), ext

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # as the chart runs it, but the API server reaches the webhook at 127.0.0.1 instead of a Service
    with OperatorProcess(chart_token, tmp_path / "controller.log", "--gardener", "--webhooks", "seed",
                         "--webhook-address", "127.0.0.1", "--webhook-port", str(port), "--leader-election",
                         env={"POD_NAMESPACE": NAMESPACE}) as op:
        wait_for("the mutating webhook", lambda: admin.get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION),
                 log=op.log)
        admin.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                      "metadata": {"name": "registry-cache", "namespace": ns},
                      "spec": {"type": "registry-cache", "providerConfig": {
                          "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                          "caches": [{"upstream": upstream}]}}})
        ext = wait_for("the Extension to succeed", lambda: (s := state())[0] == "Succeeded" and s[1], timeout=90,
                       log=op.log)
        [cache] = ext["status"]["providerStatus"]["caches"]
        assert [o["metadata"]["name"] for o in shoot.list("StatefulSet", "kube-system", label_selector=owned)] \
            == [f"registry-{upstream.replace('.', '-')}"]
        assert admin.list("StatefulSet", "kube-system", label_selector=owned) == []  # not in the seed
        assert admin.get("Secret", "ca-extension-registry-cache-bundle", ns) is not None

        osc = admin.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
                            "metadata": {"name": "worker", "namespace": ns},
                            "spec": {"type": "gardenlinux", "purpose": "reconcile",
                                     "criConfig": {"name": "containerd"}}})
        [registry] = osc["spec"]["criConfig"]["containerd"]["registries"]
        assert (registry["upstream"], registry["hosts"][0]["url"]) == (upstream, cache["endpoint"])

        admin.delete("Extension", "registry-cache", ns)
        wait_for("the Extension to be gone", lambda: admin.get("Extension", "registry-cache", ns) is None,
                 timeout=90, log=op.log)
        assert shoot.list("StatefulSet", "kube-system", label_selector=owned) == []
        assert admin.list("Secret", ns, label_selector="registry-cache.gardener.cloud/secret") == []  # TLS gone
    log = (tmp_path / "controller.log").read_text()
    assert admin.get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION) is None  # removed on shutdown
    assert not re.search(r"(?<![,.:\d])\b403\b|[Ff]orbidden|Not enough permissions", log), log[-5000:]

    # and not more than that
    controller = Kube.from_kubeconfig(str(chart_token))
    for method, path in [("GET", "/apis/core.gardener.cloud/v1beta1/shoots"), ("GET", "/api/v1/namespaces"),
                         ("GET", "/api/v1/pods"), ("GET", "/api/v1/namespaces/kube-system/configmaps"),
                         ("GET", "/apis/apps/v1/namespaces/kube-system/statefulsets"),
                         ("PATCH", "/apis/extensions.gardener.cloud/v1alpha1/clusters/x"),
                         ("GET", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"),
                         ("DELETE", f"/apis/extensions.gardener.cloud/v1alpha1/namespaces/{ns}/extensions/x")]:
        assert _forbidden(controller, method, path), (method, path)
    # what RBAC grants cluster-wide (Secrets, ConfigMaps) and by no name (webhook configurations), the guard limits
    # to what the controller writes: each of these, made for real, is the guard's refusal
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
    token = {**secret, "type": "kubernetes.io/service-account-token", "metadata": {
        "name": "x", "annotations": {"kubernetes.io/service-account.name": "registry-cache"}}}
    for method, path, body in [
            ("POST", "/api/v1/namespaces/kube-system/secrets", secret),
            ("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret),  # (only registry-cache-webhook-tls)
            ("POST", f"/api/v1/namespaces/{ns}/secrets", token),  # a shoot namespace, but a ServiceAccount's token
            ("POST", "/api/v1/namespaces/kube-system/configmaps",
             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            ("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
             {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
              "metadata": {"name": "pods.example.com"}, "webhooks": []})]:
        assert _guard_refusal(controller, method, path, body), (method, path)


def test_the_caches_coalescing_front_runs_the_charts_own_image(helm, values_file, rendered_objects):
    """`front.enabled` (the default) gives the controller `--front-image` with the chart's own image (the front is
    `python -m extension.front` of the product); `front.image` names another; `front.enabled=false` leaves the cache
    Pods as Gardener's (distribution alone)."""
    from extension.cli import build_parser

    def front_image(objs: list[dict]) -> str | None:
        [deployment] = by_kind(objs, "Deployment")
        args = build_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        return args.front_image

    assert front_image(rendered_objects) == IMAGE
    other = template(helm, CHART, values_file, "--set", "front.image=example.org/front:1")
    assert other.returncode == 0, other.stderr
    assert front_image(objects(other.stdout)) == "example.org/front:1"
    off = template(helm, CHART, values_file, "--set", "front.enabled=false")
    assert off.returncode == 0, off.stderr
    assert front_image(objects(off.stdout)) is None
    done = standalone(helm)
    assert done.returncode == 0, done.stderr
    controller = [o for o in objects(done.stdout) if o["kind"] == "Deployment" and "controller" in o["metadata"]["name"]]
    assert front_image(controller) == "registry-cache:0.1.0"  # what manifests/default runs, image and front alike
