"""The pure parts of standalone mode's trust model: upstream claims, the refusals' wording for callers that are
and are not known to be the API server, and what makes an admission policy or binding not in force."""

from __future__ import annotations

import copy

from extension.references import Claim, ReferenceIndex, claim_refusal, refusal_message, upstream_claims
from extension.standalone.policies import binding_problems, policy_problems
from extension.webhook.shoot import claim_errors, shoot_errors

from .helpers import config, resource, shoot

MIRROR = {"apiVersion": "mirror.extensions.gardener.cloud/v1alpha1", "kind": "MirrorConfig",
          "mirrors": [{"upstream": "m.io", "hosts": [{"host": "https://mirror.m.io"}]}]}


def at(s, namespace, name, created="2026-01-01T00:00:00Z"):
    s = copy.deepcopy(s)
    s["metadata"] = {"namespace": namespace, "name": name, "creationTimestamp": created}
    return s


def test_claims_read_both_types_leniently():
    s = shoot(config({"upstream": "a.io"}, {"upstream": 7}))
    s["spec"]["extensions"].append({"type": "registry-mirror", "providerConfig": MIRROR})
    assert upstream_claims(s) == {"a.io": "registry-cache", "m.io": "registry-mirror"}
    s["spec"]["extensions"][0]["disabled"] = True
    assert upstream_claims(s) == {"m.io": "registry-mirror"}
    assert upstream_claims(s, still_counts=False) == {}


def test_the_oldest_claim_owns_an_upstream():
    index = ReferenceIndex()
    old = at(shoot(config({"upstream": "a.io"})), "garden-x", "old", "2026-01-01T00:00:00Z")
    new = at(shoot(config({"upstream": "a.io"})), "garden-y", "new", "2026-02-01T00:00:00Z")
    index.update(new)
    index.update(old)
    assert [c.shoot for c in index.claims("a.io")] == ["old", "new"]
    assert index.held_by_others(new, older_only=True) == {"a.io": Claim("2026-01-01T00:00:00Z", "garden-x", "old",
                                                                         "registry-cache")}
    assert index.held_by_others(old, older_only=True) == {}  # the owner
    assert set(index.held_by_others(old)) == {"a.io"}  # but another claims it
    index.remove("garden-x", "old")
    assert index.held_by_others(new, older_only=True) == {}
    assert index.claims("a.io") == [Claim("2026-02-01T00:00:00Z", "garden-y", "new", "registry-cache")]
    index.update(at(shoot(config({"upstream": "b.io"})), "garden-y", "new"))  # the Shoot moved to b.io
    assert index.claims("a.io") == []


def test_a_request_is_refused_only_for_the_upstreams_it_adds():
    index = ReferenceIndex()
    index.update(at(shoot(config({"upstream": "a.io"})), "garden-x", "holder"))
    mine = at(shoot(config({"upstream": "b.io"}, {"upstream": "a.io"})), "garden-y", "mine")
    [error] = claim_errors(mine, None, index)
    assert error == ("spec.extensions[0].providerConfig.caches[1].upstream: Forbidden: upstream a.io is already "
                     "cached by a Shoot of another project: without Gardener all Shoots share this cluster's nodes, "
                     "and each upstream has one owner")
    assert claim_errors(mine, mine, index) == []  # held already (a race the bridge settles): its own to keep
    neighbour = at(shoot(MIRROR, extension_type="registry-mirror"), "garden-x", "neighbour")
    neighbour["spec"]["extensions"][0]["providerConfig"]["mirrors"][0]["upstream"] = "a.io"
    assert 'is already cached by Shoot "holder" of this namespace' in claim_errors(neighbour, None, index)[0]
    assert "is already cached by a Shoot of this namespace" in claim_errors(neighbour, None, index, False)[0]


def test_refusals_name_shoots_only_to_the_api_server():
    from extension.references import Use
    users = [Use("a", "creds", ("q.io",)), Use("b", "creds", ("r.io",))]
    assert 'Shoot "a"' in refusal_message("ns", "s", users)
    anonymous = refusal_message("ns", "s", users, named=False)
    assert anonymous.startswith("Secret ns/s is still in use by 2 Shoots of this namespace")
    assert '"a"' not in anonymous and "q.io" not in anonymous
    assert "of another project" in claim_refusal("a.io", Claim("~", "garden-x", "s", "registry-mirror"), "garden-y")
    assert "already mirrored by" in claim_refusal("a.io", Claim("~", "garden-x", "s", "registry-mirror"), "garden-y")


def test_an_unauthenticated_caller_learns_nothing_of_the_secrets():
    """The webhook without a client CA never reads the referenced Secrets: no word of their keys or registries."""
    s = shoot(config({"upstream": "quay.io", "secretReferenceName": "c"}), resources=[resource("c", "bad-v1")])
    secret = {"metadata": {"name": "bad-v1", "namespace": "garden-dev"}, "type": "kubernetes.io/dockerconfigjson",
              "immutable": True, "data": {".dockerconfigjson": "eyJhdXRocyI6IHsic2VjcmV0LmV4YW1wbGUiOiB7fX19"}}
    read: list[str] = []

    def get(namespace, name):
        read.append(name)
        return copy.deepcopy(secret)
    assert any("secret.example" in e for e in shoot_errors(s, None, get))
    read.clear()
    assert shoot_errors(s, None, get, authenticated=False) == [] and read == []
    s["spec"]["resources"] = []  # what the spec alone says is still said
    assert "failed to find referenced resource with name c" in shoot_errors(s, None, get, authenticated=False)[0]


def test_a_policy_or_binding_that_does_not_guard_every_shoot():
    name = "p"
    assert policy_problems(name, None) == ["ValidatingAdmissionPolicy p is missing"]
    assert policy_problems(name, {"spec": {"failurePolicy": "Fail", "validations": [{"expression": "x"}]}}) == []
    assert "failurePolicy Ignore" in policy_problems(name, {"spec": {"failurePolicy": "Ignore",
                                                                     "validations": [{"expression": "x"}]}})[0]
    assert "no validations" in policy_problems(name, {"spec": {}})[0]
    good = {"spec": {"policyName": "p", "validationActions": ["Deny"], "matchResources": {
        "namespaceSelector": {}, "objectSelector": {}, "matchPolicy": "Equivalent"}}}
    assert binding_problems(name, good) == []
    assert binding_problems(name, None) == ["ValidatingAdmissionPolicyBinding p is missing"]
    audit = copy.deepcopy(good)
    audit["spec"]["validationActions"] = ["Audit"]
    assert "does not Deny" in binding_problems(name, audit)[0]
    narrowed = copy.deepcopy(good)
    narrowed["spec"]["matchResources"]["namespaceSelector"] = {"matchLabels": {"x": "y"}}
    assert "fewer Shoots than all" in binding_problems(name, narrowed)[0]
    other = copy.deepcopy(good)
    other["spec"]["policyName"] = "q"
    assert "binds 'q'" in binding_problems(name, other)[0]
