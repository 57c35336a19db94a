import copy

from extension.references import ReferenceIndex, Use, counts, refusal_message, secret_uses

from .helpers import config, resource, shoot


def named(s, name):
    s["metadata"]["name"] = name
    return s


def test_only_secrets_used_as_secret_reference_name_count():
    s = shoot(config({"upstream": "quay.io", "secretReferenceName": "quay"}, {"upstream": "ghcr.io"}),
              resources=[resource("quay", "quay-v1"), resource("unused", "other-v1"), resource("cm", "x", "ConfigMap")])
    assert secret_uses(s) == {"quay-v1": Use("crazy-botany", "quay", ("quay.io",))}


def test_invalid_provider_config_still_protects():
    s = shoot({"caches": [{"upstream": 7, "secretReferenceName": "c", "bogus": True}]}, resources=[resource("c", "c-v1")])
    assert list(secret_uses(s)) == ["c-v1"]


def test_deleted_shoot_counts_until_its_cleanup():
    s = shoot(config())
    assert counts(s, "bridge")
    s["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    s["metadata"]["finalizers"] = ["bridge"]
    assert counts(s, "bridge")
    s["metadata"]["finalizers"] = []
    assert not counts(s, "bridge")
    assert counts(s, None)  # without a bridge: until it is gone


def test_index_tracks_changes_and_reports_changed_keys():
    index = ReferenceIndex()
    a = named(shoot(config({"upstream": "q.io", "secretReferenceName": "c"}), resources=[resource("c", "v1")]), "a")
    b = named(shoot(config({"upstream": "r.io", "secretReferenceName": "c"}), resources=[resource("c", "v1")]), "b")
    assert index.update(a) == {("garden-dev", "v1")}
    assert index.update(a) == set()  # no change
    index.update(b)
    assert [u.shoot for u in index.users("garden-dev", "v1")] == ["a", "b"]
    a2 = named(shoot(config({"upstream": "q.io", "secretReferenceName": "c"}), resources=[resource("c", "v2")]), "a")
    assert index.update(a2) == {("garden-dev", "v1"), ("garden-dev", "v2")}
    assert [u.shoot for u in index.users("garden-dev", "v1")] == ["b"]
    assert index.remove("garden-dev", "b") == {("garden-dev", "v1")}
    assert index.users("garden-dev", "v1") == []
    assert index.secrets() == {("garden-dev", "v2")}


def test_refusal_message_names_the_shoot_the_entry_and_what_to_do():
    text = refusal_message("garden-dev", "quay-v1", [Use("crazy-botany", "quay-credentials", ("quay.io",))])
    assert text.startswith('Secret garden-dev/quay-v1 is still in use by Shoot "crazy-botany" (spec.resources '
                           'entry "quay-credentials", used as secretReferenceName by the registry cache for quay.io)')
    assert "Point the spec.resources entry at a new Secret first" in text


def _mirrors(*mirrors: dict) -> dict:
    return {"apiVersion": "mirror.extensions.gardener.cloud/v1alpha1", "kind": "MirrorConfig", "mirrors": list(mirrors)}


def test_a_mirrors_ca_bundle_secret_counts_too():
    """caBundleSecretReferenceName of a registry-mirror host is a use as much as a cache's secretReferenceName."""
    s = shoot(_mirrors({"upstream": "quay.io", "hosts": [{"host": "https://a.internal", "caBundleSecretReferenceName": "ca"},
                                                         {"host": "https://b.internal", "caBundleSecretReferenceName": "ca"},
                                                         {"host": "https://public.example"}]},
                       {"upstream": "ghcr.io", "hosts": [{"host": "https://c.internal",
                                                          "caBundleSecretReferenceName": "other"}]}),
              resources=[resource("ca", "ca-v1"), resource("other", "other-v1", "ConfigMap")],
              extension_type="registry-mirror")
    assert secret_uses(s) == {"ca-v1": Use("crazy-botany", "ca", (), (("quay.io", "https://a.internal"),
                                                                      ("quay.io", "https://b.internal")))}
    # both extensions in one Shoot, one entry used by both (admission refuses that; the index still protects it)
    both = shoot(config({"upstream": "docker.io", "secretReferenceName": "creds"}), resources=[
        resource("creds", "creds-v1"), resource("ca", "ca-v1")])
    both["spec"]["extensions"].append({"type": "registry-mirror", "providerConfig": _mirrors(
        {"upstream": "quay.io", "hosts": [{"host": "https://a.internal", "caBundleSecretReferenceName": "ca"},
                                          {"host": "https://b.internal", "caBundleSecretReferenceName": "creds"}]})})
    assert secret_uses(both) == {
        "creds-v1": Use("crazy-botany", "creds", ("docker.io",), (("quay.io", "https://b.internal"),)),
        "ca-v1": Use("crazy-botany", "ca", (), (("quay.io", "https://a.internal"),))}
    # read leniently, as the caches' references: a broken providerConfig still protects what it names
    broken = shoot({"mirrors": [{"upstream": 7, "hosts": [{"caBundleSecretReferenceName": "ca", "x": 1}, "junk"]},
                                "junk"]}, resources=[resource("ca", "ca-v1")], extension_type="registry-mirror")
    assert list(secret_uses(broken)) == ["ca-v1"]
    disabled = copy.deepcopy(s)
    disabled["spec"]["extensions"][0]["disabled"] = True
    assert secret_uses(disabled) == {}


def test_refusal_message_names_the_mirror_hosts():
    text = refusal_message("garden-dev", "ca-v1", [Use("crazy-botany", "ca", (), (("quay.io", "https://a.internal"),
                                                                                 ("quay.io", "https://b.internal")))])
    assert text.startswith('Secret garden-dev/ca-v1 is still in use by Shoot "crazy-botany" (spec.resources entry '
                           '"ca", used as caBundleSecretReferenceName by the registry mirrors https://a.internal and '
                           "https://b.internal for quay.io)")
    assert "Point the spec.resources entry at a new Secret first" in text
    both = refusal_message("garden-dev", "x", [Use("s", "x", ("docker.io",), (("quay.io", "https://a.internal"),))])
    assert ('(spec.resources entry "x", used as secretReferenceName by the registry cache for docker.io and as '
            "caBundleSecretReferenceName by the registry mirror https://a.internal for quay.io)") in both
