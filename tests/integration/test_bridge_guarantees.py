"""Gardener's guarantees kept by the standalone bridge itself (no webhooks here: what gets past admission, e.g.
while the controller runs without --webhooks): seed namespaces never shared, nothing of another Shoot taken
over, and a failed sync retried. (Who may reference which Secret: the admission policies, tests in
test_trust_model.py.)"""

from __future__ import annotations

import pytest

from extension.runtime.kube import Kube

from .operator_process import OperatorProcess, wait_for
from .test_bridge import example_shoot

PROJECT = "guard"
NS = f"garden-{PROJECT}"


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube(control_plane.api_client(), field_manager="kubectl-test")
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return k


@pytest.fixture(scope="module")
def bridge(control_plane, kube, tmp_path_factory):
    with OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("guard") / "op.log", "--standalone") as op:
        yield op


def bridge_error(kube: Kube, name: str, namespace: str = NS) -> str:
    shoot = kube.get("Shoot", name, namespace) or {}
    return next((e["description"] for e in (shoot.get("status") or {}).get("lastErrors") or []
                 if e.get("taskID") == "registry-cache-bridge"), "")


def test_names_that_would_share_a_seed_namespace_are_refused(kube, bridge):
    """garden-guard/x--y and garden-guard--x/y would both be shoot--guard--x--y."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{NS}--x"}})
    shoot = example_shoot("x--y", PROJECT)
    kube.create(shoot)
    other = example_shoot("y", PROJECT + "--x")
    kube.create(other)
    error = wait_for("the refusal", lambda: bridge_error(kube, "x--y"), log=bridge.log)
    assert 'metadata.name: Invalid value: "x--y": name may not contain two consecutive hyphens' in error
    error = wait_for("the refusal", lambda: bridge_error(kube, "y", f"{NS}--x"), log=bridge.log)
    assert 'project "guard--x" (from the namespace garden-<project>): name may not contain two' in error
    assert kube.get("Namespace", "shoot--guard--x--y") is None
    assert kube.get("Cluster", "shoot--guard--x--y") is None


def test_a_namespace_cluster_or_extension_of_another_shoot_is_never_taken_over(kube, bridge):
    """A seed namespace already in use for another Shoot (left by an older bridge, or made by someone else):
    refused, said in the Shoot's status, nothing of it touched."""
    seed_ns = f"shoot--{PROJECT}--taken"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": seed_ns, "labels": {"registry-cache.gardener.cloud/bridge": "true"}}})
    foreign = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
               "metadata": {"name": "someone-else", "namespace": "garden-other"}, "spec": {}}
    kube.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster", "metadata": {"name": seed_ns},
                "spec": {"shoot": foreign, "seed": {}, "cloudProfile": {}}})
    kube.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                 "metadata": {"name": "registry-cache", "namespace": seed_ns},
                 "spec": {"type": "not-ours-to-touch"}})
    kube.create(example_shoot("taken", PROJECT))
    error = wait_for("the refusal", lambda: bridge_error(kube, "taken"), log=bridge.log)
    assert f"the seed namespace {seed_ns} of this Shoot is another's" in error
    assert f"Cluster {seed_ns} (of Shoot garden-other/someone-else)" in error
    assert f"Extension {seed_ns}/registry-cache (not made by the bridge)" in error
    assert kube.get("Cluster", seed_ns)["spec"]["shoot"]["metadata"]["name"] == "someone-else"
    ext = kube.get("Extension", "registry-cache", seed_ns)
    assert ext["spec"] == {"type": "not-ours-to-touch"} and not ext["metadata"].get("annotations")
    # deleting the refused Shoot leaves the other's objects alone, and the Shoot goes
    kube.delete("Shoot", "taken", NS)
    wait_for("the Shoot gone", lambda: kube.get("Shoot", "taken", NS) is None, log=bridge.log)
    assert kube.get("Cluster", seed_ns) is not None and kube.get("Extension", "registry-cache", seed_ns) is not None


def test_a_sync_that_failed_is_retried(kube, bridge):
    """A Shoot created during an API hiccup got no Extension until it changed: the bridge retries with backoff.
    The hiccup is real: a ValidatingAdmissionPolicy refuses the seed namespace for a while."""
    seed_ns = f"shoot--{PROJECT}--hiccup"
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": "registry-cache-test-hiccup"},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                               "operations": ["CREATE", "UPDATE"],
                                                               "resources": ["namespaces"]}]},
                       "validations": [{"expression": f"!object.metadata.name.startsWith('{seed_ns}')",
                                        "message": "hiccup"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "registry-cache-test-hiccup"},
               "spec": {"policyName": "registry-cache-test-hiccup", "validationActions": ["Deny"]}}
    base = "/apis/admissionregistration.k8s.io/v1"
    kube.request("POST", f"{base}/validatingadmissionpolicies", body=policy)
    kube.request("POST", f"{base}/validatingadmissionpolicybindings", body=binding)
    try:
        probe = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{seed_ns}-probe"}}

        def refused() -> bool:
            try:
                kube.request("POST", "/api/v1/namespaces", body=probe, query=[("dryRun", "All")])
            except Exception as exc:  # the policy is in force once it refuses
                return "hiccup" in str(exc)
            return False
        wait_for("the policy in force", refused)
        kube.create({**example_shoot("hiccup", PROJECT), "spec": {**example_shoot("hiccup", PROJECT)["spec"],
                                                                   "resources": []}})
        wait_for("the bridge to fail", lambda: f"{NS}/hiccup: the API server refused" in bridge.log(), log=bridge.log)
    finally:
        kube.request("DELETE", f"{base}/validatingadmissionpolicybindings/registry-cache-test-hiccup")
        kube.request("DELETE", f"{base}/validatingadmissionpolicies/registry-cache-test-hiccup")
    # no change to the Shoot: the retry alone brings the Extension
    wait_for("the Extension after the retry", lambda: kube.get("Extension", "registry-cache", seed_ns),
             timeout=60, log=bridge.log)


def mirror_shoot(name: str, project: str = PROJECT) -> dict:
    """A Shoot that uses only registry-mirror, its private mirror's CA bundle in the Secret ca-v1."""
    upstream = f"{name}.example"
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": f"garden-{project}"},
            "spec": {"extensions": [{"type": "registry-mirror", "providerConfig": {
                "apiVersion": "mirror.extensions.gardener.cloud/v1alpha1", "kind": "MirrorConfig",
                "mirrors": [{"upstream": upstream, "hosts": [{"host": f"https://private.{upstream}",
                                                              "caBundleSecretReferenceName": "ca"}]}]}}],
                     "resources": [{"name": "ca", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                  "name": "ca-v1"}}],
                     "provider": {"type": "local", "workers": [{"name": "w", "cri": {"name": "containerd"}}]}}}


def test_a_registry_mirror_shoot_has_the_same_guarantees(kube, bridge):
    """Issue 9's guarantees for the second extension type: a registry-mirror Extension of another in the seed
    namespace refuses the Shoot and is never touched (nor deleted with the refused Shoot); the CA bundle Secret
    of a mirror is copied; the Shoot is labelled for registry-mirror alone."""
    seed_ns = f"shoot--{PROJECT}--mirror-taken"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": seed_ns, "labels": {"registry-cache.gardener.cloud/bridge": "true"}}})  # an older bridge's
    kube.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                 "metadata": {"name": "registry-mirror", "namespace": seed_ns},
                 "spec": {"type": "not-ours-to-touch"}})
    kube.create(mirror_shoot("mirror-taken"))
    error = wait_for("the refusal", lambda: bridge_error(kube, "mirror-taken"), log=bridge.log)
    assert f"Extension {seed_ns}/registry-mirror (not made by the bridge)" in error
    assert kube.get("Cluster", seed_ns) is None
    assert kube.get("Extension", "registry-mirror", seed_ns)["spec"] == {"type": "not-ours-to-touch"}
    kube.delete("Shoot", "mirror-taken", NS)
    wait_for("the Shoot gone", lambda: kube.get("Shoot", "mirror-taken", NS) is None, log=bridge.log)
    assert kube.get("Extension", "registry-mirror", seed_ns)["spec"] == {"type": "not-ours-to-touch"}

    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ca-v1", "namespace": NS},
                "immutable": True, "type": "Opaque", "data": {"bundle.crt": "LS0tLS0="}})
    kube.create(mirror_shoot("mirror-copied"))
    seed_ns = f"shoot--{PROJECT}--mirror-copied"
    ext = wait_for("the Extension", lambda: kube.get("Extension", "registry-mirror", seed_ns), log=bridge.log)
    assert ext["metadata"]["annotations"]["registry-cache.gardener.cloud/shoot"] == f"{NS}/mirror-copied"
    assert kube.get("Extension", "registry-cache", seed_ns) is None
    wait_for("the copy", lambda: kube.get("Secret", "ref-ca-v1", seed_ns), log=bridge.log)
    assert bridge_error(kube, "mirror-copied") == ""
    labels = kube.get("Shoot", "mirror-copied", NS)["metadata"].get("labels") or {}
    assert labels.get("extensions.extensions.gardener.cloud/registry-mirror") == "true"
    assert "extensions.extensions.gardener.cloud/registry-cache" not in labels
    namespace_labels = kube.get("Namespace", seed_ns)["metadata"]["labels"]
    assert namespace_labels.get("extensions.extensions.gardener.cloud/registry-mirror") == "true"
    assert "extensions.extensions.gardener.cloud/registry-cache" not in namespace_labels
