import pytest

from api.decode import decode_registry_config
from api.field import ValidationFailed
from api.v1alpha3 import set_defaults

from .helpers import PC, config, strs


def decode_errors(raw):
    with pytest.raises(ValidationFailed) as info:
        decode_registry_config(raw, PC)
    return strs(info.value.errors)


def test_decodes_every_field():
    cfg = decode_registry_config(config({
        "upstream": "my-registry.io:5000", "remoteURL": "http://my-registry.io:5000",
        "volume": {"size": "100Gi", "storageClassName": "premium"}, "garbageCollection": {"ttl": "1h30m"},
        "secretReferenceName": "creds", "proxy": {"httpProxy": "http://proxy:3128", "httpsProxy": "http://p:3129"},
        "http": {"tls": False}, "highAvailability": {"enabled": True}, "serviceNameSuffix": "static-name",
    }), PC)
    c = cfg.caches[0]
    assert (c.upstream, c.remote_url, c.secret_reference_name, c.service_name_suffix) == (
        "my-registry.io:5000", "http://my-registry.io:5000", "creds", "static-name")
    assert c.volume.size.canonical() == "100Gi" and c.volume.storage_class_name == "premium"
    assert str(c.garbage_collection.ttl) == "1h30m0s"
    assert c.proxy.http_proxy == "http://proxy:3128" and c.proxy.https_proxy == "http://p:3129"
    assert c.http.tls is False and c.high_availability.enabled is True
    wire = cfg.to_wire()["caches"][0]
    assert set(wire) == {"upstream", "remoteURL", "volume", "garbageCollection", "secretReferenceName", "proxy",
                         "http", "highAvailability", "serviceNameSuffix"}


def test_defaults_as_gardener():
    cfg = set_defaults(decode_registry_config(config({"upstream": "docker.io"}), PC))
    c = cfg.caches[0]
    assert c.volume.size.canonical() == "10Gi"
    assert str(c.garbage_collection.ttl) == "168h0m0s"
    assert c.http.tls is True
    assert c.high_availability is None and c.remote_url is None


def test_defaults_keep_what_is_set_and_go_zero_values():
    cfg = set_defaults(decode_registry_config(config(
        {"upstream": "a.io", "volume": {"storageClassName": "fast"}, "garbageCollection": {}, "http": {}}), PC))
    c = cfg.caches[0]
    assert c.volume.size.canonical() == "10Gi" and c.volume.storage_class_name == "fast"
    # Go leaves a struct that is present at its zero values: ttl 0s (GC off), tls false
    assert c.garbage_collection.ttl.nanoseconds == 0
    assert c.http.tls is False


def test_size_may_be_a_number():
    assert decode_registry_config(config({"upstream": "a.io", "volume": {"size": 1073741824}}), PC) \
        .caches[0].volume.size.canonical() == "1073741824"


@pytest.mark.parametrize("raw, expected", [
    (None, ["spec.extensions[0].providerConfig: Required value: providerConfig of the registry-cache extension is required"]),
    ("text", ['spec.extensions[0].providerConfig: Invalid value: "text": expected an object of kind RegistryConfig']),
    ({"kind": "RegistryConfig", "caches": []},
     ["spec.extensions[0].providerConfig.apiVersion: Required value: must be registry.extensions.gardener.cloud/v1alpha3"]),
    ({"kind": "RegistryConfig"},
     ["spec.extensions[0].providerConfig.apiVersion: Required value: must be registry.extensions.gardener.cloud/v1alpha3"]),
    ({"apiVersion": "registry.extensions.gardener.cloud/v1alpha2", "kind": "RegistryConfig"},
     ['spec.extensions[0].providerConfig.apiVersion: Unsupported value: "registry.extensions.gardener.cloud/v1alpha2": '
      'supported values: "registry.extensions.gardener.cloud/v1alpha3"']),
    ({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "MirrorConfig"},
     ['spec.extensions[0].providerConfig.kind: Unsupported value: "MirrorConfig": supported values: "RegistryConfig"']),
])
def test_type_meta(raw, expected):
    assert decode_errors(raw) == expected


def test_strict_reports_every_problem_with_its_path():
    errors = decode_errors(config(
        {"upstream": 1, "volume": {"size": "1.5Gx", "bar": 1}, "http": {"tls": "true"}, "foo": 2},
        {"upstream": "ok.io", "garbageCollection": {"ttl": "7d"}},
        {"remoteURL": "https://x.io"},
        "not-an-object",
    ))
    assert 'spec.extensions[0].providerConfig.caches[0].upstream: Invalid value: 1: expected a string' in errors
    assert any(e.startswith('spec.extensions[0].providerConfig.caches[0].volume.size: Invalid value: "1.5Gx": ')
               for e in errors)
    assert any(e.startswith("spec.extensions[0].providerConfig.caches[0].volume.bar: Forbidden: unknown field")
               for e in errors)
    assert 'spec.extensions[0].providerConfig.caches[0].http.tls: Invalid value: "true": expected a boolean (true or false)' in errors
    assert any(e.startswith("spec.extensions[0].providerConfig.caches[0].foo: Forbidden: unknown field; known fields "
                            "here are: upstream, remoteURL") for e in errors)
    assert "spec.extensions[0].providerConfig.caches[1].garbageCollection.ttl: Invalid value: \"7d\": time: unknown unit 'd' in duration '7d'" in errors
    assert 'spec.extensions[0].providerConfig.caches[3]: Invalid value: "not-an-object": expected an object' in errors
    assert len(errors) == 7  # a cache without upstream decodes (Go: ""), validation reports it


def test_null_and_missing_take_go_zero_values():
    cfg = decode_registry_config({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "caches": [
        None, {"upstream": None, "http": {"tls": None}, "highAvailability": {"enabled": None},
               "volume": {"size": " 1Gi "}}]}, PC)
    assert cfg.kind == "RegistryConfig"  # Go takes a missing kind from the apiVersion
    assert [c.upstream for c in cfg.caches] == ["", ""]
    c = cfg.caches[1]
    assert (c.http.tls, c.high_availability.enabled) == (False, False)
    assert str(c.volume.size) == "1Gi"  # surrounding spaces trimmed as Quantity.UnmarshalJSON does
    assert decode_registry_config({**config(), "caches": None}, PC).caches == []


def test_null_pointer_fields_are_unset():
    cfg = decode_registry_config(config({"upstream": "a.io", "volume": None, "proxy": None}), PC)
    assert cfg.caches[0].volume is None and cfg.caches[0].proxy is None


def test_wrong_container_types():
    assert decode_errors({**config(), "caches": {"upstream": "a"}}) == [
        'spec.extensions[0].providerConfig.caches: Invalid value: "{...}": expected a list']
