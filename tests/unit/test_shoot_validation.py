"""The Shoot-level checks of the admission webhook: extension lookup, CRI, providerConfig, references."""

import json

import pytest

from api.admission import validate_shoot
from api.secrets import SecretData

from .helpers import config, resource, shoot, strs

GOOD_SECRET = SecretData("garden-dev", "quay-v1", True, {"username": b"org+robot", "password": b"pw"})
PCP = "spec.extensions[0].providerConfig"


def getter(*secrets):
    return lambda ns, name: next((s for s in secrets if s.namespace == ns and s.name == name), None)


def test_shoot_without_extension_passes_untouched():
    s = shoot(config({"upstream": "x"}), extension_type="other")
    s["spec"]["provider"]["workers"][0]["cri"]["name"] = "docker"
    result = validate_shoot(s)
    assert result.ok and result.config is None and result.extension_path is None


def test_disabled_extension_is_not_validated():
    s = shoot(config())
    s["spec"]["extensions"][0]["disabled"] = True
    assert validate_shoot(s).ok


def test_extension_not_first():
    s = shoot(config())
    s["spec"]["extensions"].insert(0, {"type": "shoot-dns-service"})
    assert strs(validate_shoot(s).errors) == [
        "spec.extensions[1].providerConfig.caches: Required value: at least one cache must be provided"]


def test_cri_must_be_containerd_for_every_worker():
    s = shoot(config({"upstream": "docker.io"}), workers=[
        {"name": "a", "cri": {"name": "containerd"}}, {"name": "b", "cri": {"name": "docker"}}, {"name": "c"}])
    assert strs(validate_shoot(s).errors) == [
        'spec.provider.workers[1].cri.name: Invalid value: "docker": container runtime needs to be containerd when '
        "the registry-cache extension is enabled"]


def test_provider_config_required():
    assert strs(validate_shoot(shoot(None)).errors) == [
        f"{PCP}: Required value: providerConfig is required for the registry-cache extension"]


def test_decode_errors_are_reported_with_cri_errors():
    s = shoot({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
               "caches": [{"upstream": "a.io", "bogus": 1}]}, workers=[{"name": "a", "cri": {"name": "docker"}}])
    errs = strs(validate_shoot(s).errors)
    assert errs[0].startswith("spec.provider.workers[0].cri.name: Invalid value")
    assert errs[1].startswith(f"{PCP}.caches[0].bogus: Forbidden: unknown field")


def test_secret_reference_resolved_and_checked():
    s = shoot(config({"upstream": "quay.io", "secretReferenceName": "quay"}), resources=[resource("quay", "quay-v1")])
    result = validate_shoot(s, get_secret=getter(GOOD_SECRET))
    assert result.ok, strs(result.errors)
    assert result.config.caches[0].volume.size.canonical() == "10Gi"  # defaulted


def test_missing_reference_wrong_kind_missing_secret_bad_secret():
    s = shoot(config({"upstream": "a.io", "secretReferenceName": "nope"},
                     {"upstream": "b.io", "secretReferenceName": "cm"},
                     {"upstream": "c.io", "secretReferenceName": "gone"},
                     {"upstream": "d.io", "secretReferenceName": "mutable"}),
              resources=[resource("cm", "some-config", kind="ConfigMap"), resource("gone", "gone-v1"),
                         resource("mutable", "mutable-v1")])
    mutable = SecretData("garden-dev", "mutable-v1", False, {"username": b"u", "password": b"p"})
    assert strs(validate_shoot(s, get_secret=getter(mutable)).errors) == [
        f'{PCP}.caches[0].secretReferenceName: Invalid value: "nope": failed to find referenced resource with name '
        "nope and kind Secret",
        f'{PCP}.caches[1].secretReferenceName: Invalid value: "cm": failed to find referenced resource with name cm '
        "and kind Secret",
        f'{PCP}.caches[2].secretReferenceName: Invalid value: "gone": failed to get secret garden-dev/gone-v1 for '
        'secretReferenceName gone: secrets "gone-v1" not found',
        f'{PCP}.caches[3].secretReferenceName: Invalid value: "mutable": the referenced secret '
        f'{json.dumps("garden-dev/mutable-v1")} should be immutable',
    ]


def test_update_rules_apply_on_update():
    old = shoot(config({"upstream": "a.io", "volume": {"size": "10Gi"}}))
    new = shoot(config({"upstream": "a.io", "volume": {"size": "20Gi"}}))
    assert strs(validate_shoot(new, old).errors) == [
        f'{PCP}.caches[0].volume.size: Invalid value: "20Gi": field is immutable']
    assert validate_shoot(new).ok  # as a create it is fine


def test_unchanged_update_is_not_revalidated_but_a_swapped_reference_is():
    cfg = config({"upstream": "quay.io", "secretReferenceName": "quay"})
    old = shoot(cfg, resources=[resource("quay", "quay-v1")])
    same = shoot(cfg, resources=[resource("quay", "quay-v1")])
    assert validate_shoot(same, old, get_secret=getter()).ok  # as Gardener: unchanged config, nothing checked
    swapped = shoot(cfg, resources=[resource("quay", "quay-v2")])
    assert strs(validate_shoot(swapped, old, get_secret=getter(GOOD_SECRET)).errors) == [
        f'{PCP}.caches[0].secretReferenceName: Invalid value: "quay": failed to get secret garden-dev/quay-v2 for '
        'secretReferenceName quay: secrets "quay-v2" not found']


def test_adding_the_extension_on_update_is_validated_as_create():
    old = shoot(config(), extension_type="other")
    new = shoot(config({"upstream": "a.io", "volume": {"size": "20Gi"}}))
    assert validate_shoot(new, old).ok


@pytest.mark.parametrize("namespace, name, error", [
    ("garden-dev", "x--y", 'metadata.name: Invalid value: "x--y": name may not contain two consecutive hyphens'),
    ("garden-dev--x", "y", 'metadata.namespace: Invalid value: "garden-dev--x": project "dev--x" (from the '
                           'namespace garden-<project>): name may not contain two consecutive hyphens'),
    ("garden-garden", "foo", 'metadata.namespace: Invalid value: "garden-garden": the project garden has the '
                             'namespace garden'),
    ("dev", "foo", 'metadata.namespace: Invalid value: "dev": must be a project namespace: garden or '
                   'garden-<project>'),
])
def test_names_that_would_share_a_seed_namespace_are_refused(namespace, name, error):
    """garden-dev/x--y and garden-dev--x/y would both be shoot--dev--x--y (so would garden/foo and
    garden-garden/foo): Gardener refuses -- in Shoot and project names."""
    s = shoot(config({"upstream": "docker.io"}))
    s["metadata"] = {"name": name, "namespace": namespace}
    assert strs(validate_shoot(s).errors) == [error]
    s["metadata"] = {"name": "x-y", "namespace": "garden"}
    assert validate_shoot(s).errors == []
