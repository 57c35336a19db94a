"""Standalone mode's trust model on the real API server (issue 17): an attacker with a Pod that reaches the webhook
port and Shoot rights in one project tries what review found.

- Who may reference which Secret, and who may configure the nodes, is decided by the admission policies inside
  the API server (manifests/policies): there is no record to forge. A forged AdmissionReview gets no answer at
  all: the webhook server takes only callers with the API server's client certificate.
- Every Shoot configures the same nodes: enabling or changing the extensions is a cluster operator's act, and
  one upstream has one owner across Shoots and both extension types (the webhook refuses, the bridge settles a
  race).
- Without the policies in force the bridge delivers nothing new and removes nothing it delivered.
- Without a client CA the webhooks answer anyone, and then read no Secret and name no other Shoot.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from extension.component import certs
from extension.constants import SHOOT_REFERENCES_POLICY, WEBHOOK_CONFIGURATION_NAME
from extension.runtime.kube import ApiError, Kube

from .operator_process import OperatorProcess, wait_for

NS = "garden-trust"
OTHER_NS = "garden-trustother"
RBAC = "rbac.authorization.k8s.io"
CREDENTIALS = "quay-creds-v1"
PASSWORD = "the-victims-password"
ATTACKER = "https://attacker.example"
BRIDGE_TASK = "registry-cache-bridge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube(control_plane.api_client(), field_manager="kubectl-test")
    for ns in (NS, OTHER_NS):
        k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    k.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CREDENTIALS, "namespace": NS},
             "type": "Opaque", "immutable": True,
             "data": {"username": base64.b64encode(b"victim+robot").decode(),
                      "password": base64.b64encode(PASSWORD.encode()).decode()}})
    # mallory: everything on Shoots of her project, nothing on its Secrets (a project viewer who may edit Shoots)
    grant(k, {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "shoot-editor", "namespace": NS},
             "rules": [{"apiGroups": ["core.gardener.cloud"], "resources": ["shoots"], "verbs": ["*"]}]})
    grant(k, {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "mallory", "namespace": NS},
             "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "shoot-editor"},
             "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "mallory"}]})
    # olga: a cluster operator, may configure the nodes' registries (and read the project's Secrets)
    grant(k, {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "olga-node-configuration"},
             "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "registry-cache:node-configuration"},
             "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "olga"}]})
    # (no aggregated ClusterRoles here: no kube-controller-manager; a Role that reads the project's Secrets)
    grant(k, {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "secret-reader", "namespace": NS},
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})
    grant(k, {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "olga", "namespace": NS},
             "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "secret-reader"},
             "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "olga"}]})
    grant(k, {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "olga-shoots", "namespace": NS},
             "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "shoot-editor"},
             "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "olga"}]})
    return k


def grant(kube: Kube, obj: dict) -> None:
    """Create an RBAC object (the client of the product knows no RBAC kinds); one that exists stays."""
    plural = {"Role": "roles", "RoleBinding": "rolebindings", "ClusterRoleBinding": "clusterrolebindings"}[obj["kind"]]
    namespace = obj["metadata"].get("namespace")
    path = f"/apis/{RBAC}/v1" + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    try:
        kube.request("POST", path, body=obj)
    except ApiError as exc:
        if not exc.conflict:
            raise


def as_user(control_plane, user: str) -> Kube:
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", user)
    return Kube(api, field_manager=user)


def operator_process(control_plane, tmp_path: Path, port: int, *extra: str) -> OperatorProcess:
    return OperatorProcess(control_plane.kubeconfig, tmp_path / f"op-{port}.log", "--standalone", "--webhooks",
                           "--webhook-port", str(port), "--webhook-address", "127.0.0.1", *extra)


@pytest.fixture
def operator(control_plane, kube, tmp_path_factory):
    """Per test: the tests that start a controller of their own must not meet this one."""
    port = free_port()
    with operator_process(control_plane, tmp_path_factory.mktemp("trust"), port, "--webhook-client-ca",
                          str(control_plane.webhook_client_ca_file)) as op:
        wait_for("the webhooks", lambda: kube.get("ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME),
                 log=op.log)
        op.port = port  # type: ignore[attr-defined]
        yield op


def shoot(name: str, namespace: str = NS, caches: list[dict] | None = None, resources: list[dict] | None = None,
          mirrors: list[dict] | None = None, annotations: dict | None = None) -> dict:
    extensions = []
    if caches is not None:
        extensions.append({"type": "registry-cache", "providerConfig": {
            "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig", "caches": caches}})
    if mirrors is not None:
        extensions.append({"type": "registry-mirror", "providerConfig": {
            "apiVersion": "mirror.extensions.gardener.cloud/v1alpha1", "kind": "MirrorConfig", "mirrors": mirrors}})
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {"extensions": extensions, "resources": resources or [],
                     "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}


def creds_resource(secret: str = CREDENTIALS) -> dict:
    return {"name": "creds", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret}}


def review(path: str, obj: dict, operation: str = "CREATE", old: dict | None = None,
           resource: tuple[str, str, str] = ("core.gardener.cloud", "v1beta1", "shoots")) -> dict:
    """The forgery of the issue: an AdmissionReview as the API server would send it, claiming system:masters."""
    group, version, plural = resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "00000000-0000-0000-0000-000000000001",
        "kind": {"group": group, "version": version, "kind": obj.get("kind", "")},
        "resource": {"group": group, "version": version, "resource": plural},
        "operation": operation, "namespace": obj["metadata"].get("namespace"), "name": obj["metadata"]["name"],
        "object": None if operation == "DELETE" else obj, "oldObject": old if operation != "CREATE" else None,
        "userInfo": {"username": "mallory", "groups": ["system:masters", "system:authenticated"]},
        "dryRun": False}}


def webhook_ca(kube: Kube) -> str:
    config = kube.get("ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME)
    return base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]).decode()


def post(port: int, hook: str, body: dict, ca_pem: str, client: tuple[Path, Path] | None = None) -> dict:
    context = ssl.create_default_context(cadata=ca_pem)
    if client is not None:
        context.load_cert_chain(*client)
    request = urllib.request.Request(f"https://127.0.0.1:{port}/{hook}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def bridge_error(kube: Kube, name: str, namespace: str = NS) -> str:
    obj = kube.get("Shoot", name, namespace) or {}
    return next((e["description"] for e in (obj.get("status") or {}).get("lastErrors") or []
                 if e.get("taskID") == BRIDGE_TASK), "")


def copies_of(kube: Kube, secret: str) -> list[str]:
    return [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in kube.list("Secret")
            if s["metadata"]["name"] == f"ref-{secret}"]


def test_a_forged_admission_review_gets_no_answer(kube, operator, control_plane, tmp_path):
    """Step 1 of the issue's attack: a Pod that reaches the webhook port POSTs an AdmissionReview claiming
    system:masters. The TLS handshake fails without the API server's client certificate, and with one of another
    CA; the API server's own certificate gets an answer (so the refusals above are the certificate's doing)."""
    ca_pem = webhook_ca(kube)
    forged = review("validate-shoot", shoot("evil", caches=[{"upstream": "evil.example", "remoteURL": ATTACKER,
                                                             "secretReferenceName": "creds"}],
                                            resources=[creds_resource()]))
    for hook in ("validate-shoot", "protect-secret", "mutate-osc", "admit-shoot-resources"):
        with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
            post(operator.port, hook, forged, ca_pem)
    other_ca = certs.generate_ca("mallorys-ca")
    mallory = certs.generate_client_cert(other_ca, "kube-apiserver")
    (tmp_path / "m.crt").write_text(mallory.cert_pem)
    (tmp_path / "m.key").write_text(mallory.key_pem)
    with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
        post(operator.port, "validate-shoot", forged, ca_pem, (tmp_path / "m.crt", tmp_path / "m.key"))
    real = (control_plane.certs_dir / "webhook-client.crt", control_plane.certs_dir / "webhook-client.key")
    answer = post(operator.port, "validate-shoot", forged, ca_pem, real)
    assert answer["response"]["uid"] == forged["request"]["uid"]
    assert "patch" not in answer["response"]  # and nothing it answers is a record of anything
    assert "may not get" not in json.dumps(answer)


def test_the_issues_attack_through_the_api_server_gets_nothing(kube, operator, control_plane):
    """Steps 2-4 of the issue's attack, by a user who may write the project's Shoots but not read its Secrets.
    Nothing she does gets the Secret copied or a cache pointed at her registry."""
    mallory, olga = as_user(control_plane, "mallory"), as_user(control_plane, "olga")
    forged_record = {"registry-cache.gardener.cloud/resources-admitted": "0" * 64}
    # referencing the Secret, with a "record" and without an extension: refused by the references policy
    with pytest.raises(ApiError) as refused:
        mallory.create(shoot("evil", resources=[creds_resource()], annotations=forged_record))
    assert refused.value.status == 403
    assert f'shoot cannot reference a resource you are not allowed to read: user "mallory" may not get every ' \
           f'Secret of {NS}/{CREDENTIALS}' in refused.value.message
    # a Shoot of her own, then a cache at her registry: refused by the node-configuration policy
    mallory.create(shoot("evil"))
    cache = {"upstream": "evil.example", "remoteURL": ATTACKER}
    with pytest.raises(ApiError) as refused:
        mallory.patch("Shoot", "evil", {"spec": {"extensions": shoot("x", caches=[cache])["spec"]["extensions"]}}, NS)
    assert 'spec.extensions[type=registry-cache]: user "mallory" may not use ' \
           'registryconfigs.registry.extensions.gardener.cloud' in refused.value.message
    # a cache an operator set up for her (with the Secret's entry: olga may read it): she can neither point it
    # elsewhere nor swap the entry to another Secret she cannot read
    olga.create(shoot("project", caches=[{"upstream": "project.example", "secretReferenceName": "creds"}],
                      resources=[creds_resource()]))
    with pytest.raises(ApiError) as refused:
        mallory.patch("Shoot", "project", [{"op": "replace", "path": "/spec/extensions/0/providerConfig/caches/0/"
                                            "remoteURL", "value": ATTACKER}], NS, merge=False)
    assert "may not use registryconfigs.registry.extensions.gardener.cloud" in refused.value.message
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other-creds", "namespace": NS},
                "type": "Opaque", "immutable": True, "data": {"username": "eA==", "password": "eA=="}})
    with pytest.raises(ApiError) as refused:
        mallory.patch("Shoot", "project", [{"op": "replace", "path": "/spec/resources/0/resourceRef/name",
                                            "value": "other-creds"}], NS, merge=False)
    assert f"may not get every Secret of {NS}/other-creds" in refused.value.message
    # what she may do: edit anything else of the Shoot (the bridge's label and finalizer edits pass the same way)
    mallory.patch("Shoot", "project", {"metadata": {"labels": {"team": "mallory"}}}, NS)
    # the operator's Shoot is delivered (its Secret copied); nothing of mallory's is, and nothing went to her
    wait_for("the operator's copy", lambda: copies_of(kube, CREDENTIALS), log=operator.log)
    assert copies_of(kube, CREDENTIALS) == [f"shoot--trust--project/ref-{CREDENTIALS}"]
    assert kube.get("Extension", "registry-cache", "shoot--trust--evil") is None
    for ext in kube.list("Extension"):
        assert ATTACKER not in json.dumps(ext["spec"])
    assert PASSWORD not in operator.log()


def test_only_a_cluster_wide_grant_lets_a_user_configure_the_nodes(kube, control_plane):
    """The permission is asked without a namespace: a RoleBinding of the ClusterRole in the project does not grant
    it, a ClusterRoleBinding does."""
    grant(kube, {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "nina-nodes", "namespace": NS},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "registry-cache:node-configuration"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "nina"}]})
    grant(kube, {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "nina", "namespace": NS},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "shoot-editor"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "nina"}]})
    nina = as_user(control_plane, "nina")
    mirror = [{"upstream": "nina.example", "hosts": [{"host": "https://mirror.nina.example"}]}]
    # (RBAC's view of a new binding takes a moment: until then the refusal is RBAC's own)
    refused = wait_for("the policy's refusal", lambda: "may not use" in (r := dry_run_refusal(
        nina, shoot("nina", mirrors=mirror))) and r)
    assert 'spec.extensions[type=registry-mirror]: user "nina" may not use ' \
           'mirrorconfigs.mirror.extensions.gardener.cloud' in refused
    grant(kube, {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "nina-nodes"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "registry-cache:node-configuration"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "nina"}]})
    wait_for("the grant", lambda: _creates(nina, shoot("nina", mirrors=mirror)))
    kube.delete("Shoot", "nina", NS)


def dry_run_refusal(kube: Kube, obj: dict) -> str:
    """The API server's refusal of creating ``obj`` (dry run: nothing is stored either way); empty if admitted."""
    namespace = obj["metadata"]["namespace"]
    try:
        kube.request("POST", f"/apis/core.gardener.cloud/v1beta1/namespaces/{namespace}/shoots", body=obj,
                     query=[("dryRun", "All")])
    except ApiError as exc:
        return exc.message
    return ""


def _creates(kube: Kube, obj: dict, not_yet: str = "may not use") -> bool:
    """Create ``obj``; False while the refusal still says ``not_yet`` (what the API server or the webhook learns a
    moment late: RBAC's caches, the webhook's index of claims)."""
    try:
        kube.create(obj)
    except ApiError as exc:
        if not_yet in exc.message:
            return False
        raise
    return True


def test_an_upstream_has_one_owner_across_shoots_and_types(kube, operator):
    """A cache of one Shoot and a cache or a mirror of another for the same upstream would both configure every
    node: the later one is refused, naming the holder only within its namespace."""
    kube.create(shoot("owner", caches=[{"upstream": "claimed.example"}]))
    # (the webhook answers from its index, which the watch brings up to date a moment after the create)
    refused = wait_for("the refusal", lambda: dry_run_refusal(kube, shoot("thief", OTHER_NS,
                                                                            caches=[{"upstream": "claimed.example"}])),
                       log=operator.log)
    assert 'spec.extensions[0].providerConfig.caches[0].upstream: Forbidden: upstream claimed.example is already ' \
           'cached by a Shoot of another project' in refused
    refused = dry_run_refusal(kube, shoot("neighbour", mirrors=[{"upstream": "claimed.example",
                                                                 "hosts": [{"host": "https://mirror.example"}]}]))
    assert 'spec.extensions[0].providerConfig.mirrors[0].upstream: Forbidden: upstream claimed.example is ' \
           'already cached by Shoot "owner" of this namespace' in refused
    # once the owner lets go, the upstream is free
    kube.delete("Shoot", "owner", NS)
    wait_for("the owner gone", lambda: kube.get("Shoot", "owner", NS) is None, timeout=60, log=operator.log)
    # (the webhook's index learns of the delete from its watch, a moment later)
    wait_for("the upstream free", lambda: _creates(kube, shoot("thief", OTHER_NS,
                                                               caches=[{"upstream": "claimed.example"}]),
                                                   not_yet="is already cached by"),
             log=operator.log)
    kube.delete("Shoot", "thief", OTHER_NS)
    wait_for("the thief gone", lambda: kube.get("Shoot", "thief", OTHER_NS) is None, timeout=60, log=operator.log)


def test_the_bridge_settles_a_claim_the_webhook_did_not_see(kube, control_plane, tmp_path):
    """Shoots stored while the Shoot webhook was away (or in a race): the older claim owns the upstream, the
    newer Shoot is refused by the bridge and gets nothing."""
    kube.create(shoot("first", caches=[{"upstream": "raced.example"}]))
    kube.create(shoot("second", OTHER_NS, mirrors=[{"upstream": "raced.example",
                                                     "hosts": [{"host": "https://mirror.raced.example"}]}]))
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", "--standalone") as op:
        error = wait_for("the refusal", lambda: bridge_error(kube, "second", OTHER_NS), log=op.log)
        assert "upstream raced.example is already cached by a Shoot of another project" in error
        wait_for("the owner's Extension", lambda: kube.get("Extension", "registry-cache", "shoot--trust--first"),
                 log=op.log)
        assert kube.get("Extension", "registry-mirror", "shoot--trustother--second") is None
        for obj in (("first", NS), ("second", OTHER_NS)):
            kube.delete("Shoot", *obj)
        wait_for("both gone", lambda: not kube.get("Shoot", "first", NS) and not kube.get("Shoot", "second", OTHER_NS),
                 timeout=60, log=op.log)


def test_without_the_policies_nothing_new_is_delivered_and_nothing_is_removed(kube, control_plane, tmp_path):
    """A controller that finds the references policy's binding gone (deleted by mistake, or never installed)
    copies no Secret and delivers no Extension for any Shoot, says why on each, and keeps what it delivered
    before: no copy deleted, no Extension put in Error (before, a lost admission key did both)."""
    kube.create(shoot("kept", caches=[{"upstream": "kept.example", "secretReferenceName": "creds"}],
                      resources=[creds_resource()]))
    seed_ns = "shoot--trust--kept"
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op1.log", "--standalone") as op:
        wait_for("the copy", lambda: kube.get("Secret", f"ref-{CREDENTIALS}", seed_ns), log=op.log)
        wait_for("Succeeded", lambda: _state(kube, seed_ns) == "Succeeded", timeout=60, log=op.log)
    base = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    binding = kube.request("GET", f"{base}/{SHOOT_REFERENCES_POLICY}")
    kube.request("DELETE", f"{base}/{SHOOT_REFERENCES_POLICY}")
    try:
        kube.create(shoot("unguarded", caches=[{"upstream": "unguarded.example", "secretReferenceName": "creds"}],
                          resources=[creds_resource()]))
        with OperatorProcess(control_plane.kubeconfig, tmp_path / "op2.log", "--standalone", "--resync-period",
                             "2") as op:
            error = wait_for("the refusal", lambda: bridge_error(kube, "unguarded"), log=op.log)
            assert f"ValidatingAdmissionPolicyBinding {SHOOT_REFERENCES_POLICY} is missing" in error
            assert "nothing new is delivered" in error
            wait_for("the same on the older Shoot", lambda: bridge_error(kube, "kept"), log=op.log)
            wait_for("a resync", lambda: "periodic resync" in op.log(), log=op.log)
            assert kube.get("Extension", "registry-cache", "shoot--trust--unguarded") is None
            assert kube.get("Secret", f"ref-{CREDENTIALS}", "shoot--trust--unguarded") is None
            assert kube.get("Secret", f"ref-{CREDENTIALS}", seed_ns) is not None
            assert _state(kube, seed_ns) == "Succeeded"
    finally:
        binding["metadata"] = {"name": SHOOT_REFERENCES_POLICY, "labels": binding["metadata"].get("labels") or {}}
        kube.request("POST", base, body=binding)
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op3.log", "--standalone") as op:
        wait_for("the Shoot delivered", lambda: kube.get("Secret", f"ref-{CREDENTIALS}", "shoot--trust--unguarded"),
                 log=op.log)
        wait_for("the note gone", lambda: not bridge_error(kube, "kept"), log=op.log)
        for name in ("kept", "unguarded"):
            kube.delete("Shoot", name, NS)
        wait_for("both gone", lambda: not kube.get("Shoot", "kept", NS) and not kube.get("Shoot", "unguarded", NS),
                 timeout=60, log=op.log)


def _state(kube: Kube, seed_ns: str) -> str:
    ext = kube.get("Extension", "registry-cache", seed_ns) or {}
    return ((ext.get("status") or {}).get("lastOperation") or {}).get("state", "")


def test_unauthenticated_webhooks_read_no_secret_and_name_no_shoot(kube, control_plane, tmp_path):
    """Without --webhook-client-ca anyone who reaches the port gets an answer: it then says nothing read from a
    Secret (which registries a dockerconfigjson holds) or from another Shoot (who uses a Secret, who holds an
    upstream). """
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "docker-creds", "namespace": NS},
                "type": "kubernetes.io/dockerconfigjson", "immutable": True,
                "data": {".dockerconfigjson": base64.b64encode(json.dumps({"auths": {
                    "secret-registry.example": {"auth": base64.b64encode(b"u:p").decode()}}}).encode()).decode()}})
    kube.create(shoot("the-users-shoot", caches=[{"upstream": "used.example", "secretReferenceName": "creds"}],
                      resources=[creds_resource()]))
    port = free_port()
    with operator_process(control_plane, tmp_path, port) as op:
        wait_for("the webhooks", lambda: kube.get("ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME),
                 log=op.log)
        wait_for("the registration", lambda: f"127.0.0.1:{port}" in json.dumps(
            kube.get("ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION_NAME)), log=op.log)
        assert "answer any caller" in op.log()
        ca_pem = webhook_ca(kube)
        probe = shoot("probe", caches=[{"upstream": "quay.io", "secretReferenceName": "creds"}],
                      resources=[creds_resource("docker-creds")])
        answer = json.dumps(post(port, "validate-shoot", review("validate-shoot", probe), ca_pem))
        assert "secret-registry.example" not in answer and "docker-creds" not in answer, answer
        thief = shoot("thief2", OTHER_NS, caches=[{"upstream": "used.example"}])
        answer = json.dumps(post(port, "validate-shoot", review("validate-shoot", thief), ca_pem))
        assert "already cached by a Shoot of another project" in answer
        in_use = kube.get("Secret", CREDENTIALS, NS)
        wait_for("the index", lambda: "in use" in json.dumps(post(
            port, "protect-secret", review("protect-secret", in_use, "DELETE", in_use, ("", "v1", "secrets")), ca_pem)),
            log=op.log)
        answer = json.dumps(post(port, "protect-secret", review("protect-secret", in_use, "DELETE", in_use,
                                                                 ("", "v1", "secrets")), ca_pem))
        assert "Shoots of this namespace (spec.resources)" in answer, answer  # "project" and "the-users-shoot"
        assert "the-users-shoot" not in answer and '\\"project\\"' not in answer, answer
        kube.delete("Shoot", "the-users-shoot", NS)
        wait_for("the Shoot gone", lambda: kube.get("Shoot", "the-users-shoot", NS) is None, timeout=60, log=op.log)
