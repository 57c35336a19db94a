"""Every rule of Gardener's pkg/apis/registry/validation and the Shoot admission, valid and invalid."""

import pytest

from api.validation import decode_and_default, validate_registry_config, validate_registry_config_update

from .helpers import PC, config, strs

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
C0 = "spec.extensions[0].providerConfig.caches[0]"


def errors_of(*caches):
    return strs(validate_registry_config(decode_and_default(config(*caches), PC), PC))


def update_errors(old_caches, new_caches):
    old = decode_and_default(config(*old_caches), PC)
    new = decode_and_default(config(*new_caches), PC)
    return strs(validate_registry_config_update(old, new, PC))


def test_docs_example_is_valid():
    assert errors_of(
        {"upstream": "docker.io", "volume": {"size": "100Gi"}},
        {"upstream": "ghcr.io"},
        {"upstream": "quay.io", "garbageCollection": {"ttl": "0s"}, "secretReferenceName": "quay-credentials"},
        {"upstream": "my-registry.io:5000", "remoteURL": "http://my-registry.io:5000",
         "serviceNameSuffix": "static-name"},
    ) == []


def test_at_least_one_cache():
    assert errors_of() == ["spec.extensions[0].providerConfig.caches: Required value: at least one cache must be provided"]


@pytest.mark.parametrize("upstream", ["example.com", "example.com:5000", "docker.io", "a.b.c-d.io:65535",
                                      "localhost:1", "10.0.0.1:5000"])
def test_valid_upstreams(upstream):
    assert errors_of({"upstream": upstream}) == []


@pytest.mark.parametrize("upstream, messages", [
    ("", [SUBDOMAIN_MSG]),
    ("docker.io.", [SUBDOMAIN_MSG]),
    (".docker.io", [SUBDOMAIN_MSG]),
    ("Docker.io", [SUBDOMAIN_MSG]),
    ("https://docker.io", [SUBDOMAIN_MSG]),
    ("example.com:0123", ["port '0123' is not valid, valid port must be in the range [1, 65535]"]),
    ("example.com:0", ["port '0' is not valid, valid port must be in the range [1, 65535]"]),
    ("example.com:65536", ["port '65536' is not valid, valid port must be in the range [1, 65535]"]),
    ("example.com:", [SUBDOMAIN_MSG]),
    ("example.com/foo", [SUBDOMAIN_MSG]),
    ("example.com?foo=bar", [SUBDOMAIN_MSG]),
    ("a" * 254, ["must be no more than 253 characters"]),
    ("A" * 254, ["must be no more than 253 characters", SUBDOMAIN_MSG]),
])
def test_invalid_upstreams(upstream, messages):
    import json
    assert errors_of({"upstream": upstream}) == [f"{C0}.upstream: Invalid value: {json.dumps(upstream)}: {m}"
                                                 for m in messages]


@pytest.mark.parametrize("url", ["https://example.com", "http://example.com:5000", "https://example.com/",
                                 "HTTPS://example.com", "https://registry-1.docker.io"])
@pytest.mark.parametrize("field", ["remoteURL", "proxy.httpProxy", "proxy.httpsProxy"])
def test_valid_urls(url, field):
    cache = {"upstream": "a.io"}
    if field == "remoteURL":
        cache["remoteURL"] = url
    else:
        cache["proxy"] = {field.split(".")[1]: url}
    assert errors_of(cache) == []


@pytest.mark.parametrize("url, details", [
    ("example.com", ["url must start with 'http://' or 'https://' scheme"]),
    ("mirror-host.io:8443", ["url must start with 'http://' or 'https://' scheme"]),
    ("ftp://example.com", ["url must start with 'http://' or 'https://' scheme"]),
    ("https://example.com/path", ["url must not contain a path"]),
    ("https://user:pass@example.com", ["url must not contain user info"]),
    ("https://example.com?x=1", ["url must not contain query parameters"]),
    ("https://example.com#frag", ["url must not contain a fragment"]),
    ("https://foo:bar@example.com/x", ["url must not contain a path", "url must not contain user info"]),
    ("https://example.com:80443", ["port '80443' is not valid, valid port must be in the range [1, 65535]"]),
    ("https://example.com:abc",
     ['failed to parse url: parse "https://example.com:abc": invalid port ":abc" after host']),
    ("http://foo!bar", [SUBDOMAIN_MSG]),
    ("https://", [SUBDOMAIN_MSG]),
    ("https://exa mple.com", ['failed to parse url: parse "https://exa mple.com": invalid character " " in host name']),
    ("https://example.com\n", ['failed to parse url: parse "https://example.com\\n": net/url: invalid control character in URL']),
    (":foo", ['failed to parse url: parse ":foo": missing protocol scheme']),
])
def test_invalid_remote_url(url, details):
    import json
    assert errors_of({"upstream": "a.io", "remoteURL": url}) == [
        f"{C0}.remoteURL: Invalid value: {json.dumps(url)}: {d}" for d in details]


def test_invalid_proxy_urls_have_their_paths():
    assert errors_of({"upstream": "a.io", "proxy": {"httpProxy": "proxy:3128", "httpsProxy": "https://p/x"}}) == [
        f"{C0}.proxy.httpProxy: Invalid value: \"proxy:3128\": url must start with 'http://' or 'https://' scheme",
        f'{C0}.proxy.httpsProxy: Invalid value: "https://p/x": url must not contain a path',
    ]


@pytest.mark.parametrize("size, shown", [("0", "0"), ("-1Gi", "-1Gi"), ("0Mi", "0"), ("-1.", "-1.")])
def test_size_must_be_positive(size, shown):
    assert errors_of({"upstream": "a.io", "volume": {"size": size}}) == [
        f'{C0}.volume.size: Invalid value: "{shown}": must be greater than 0']


def test_storage_class_name():
    assert errors_of({"upstream": "a.io", "volume": {"storageClassName": "premium.ssd-1"}}) == []
    assert errors_of({"upstream": "a.io", "volume": {"storageClassName": "invalid/name"}}) == [
        f'{C0}.volume.storageClassName: Invalid value: "invalid/name": {SUBDOMAIN_MSG}']
    assert errors_of({"upstream": "a.io", "volume": {"storageClassName": "n" * 254}}) == [
        f'{C0}.volume.storageClassName: Invalid value: "{"n" * 254}": must be no more than 253 characters']


def test_ttl():
    assert errors_of({"upstream": "a.io", "garbageCollection": {"ttl": "0s"}}) == []
    assert errors_of({"upstream": "a.io", "garbageCollection": {"ttl": "1.5h"}}) == []
    assert errors_of({"upstream": "a.io", "garbageCollection": {"ttl": "-1h"}}) == [
        f'{C0}.garbageCollection.ttl: Invalid value: "-1h0m0s": ttl must be a non-negative duration']


def test_service_name_suffix():
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "a" * 54}) == []
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "foo.io"}) == [
        f'{C0}.serviceNameSuffix: Invalid value: "foo.io": must not contain dots']
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "Foo"}) == [
        f'{C0}.serviceNameSuffix: Invalid value: "Foo": {LABEL_MSG}']
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "a" * 55}) == [
        f"{C0}.serviceNameSuffix: Too long: may not be more than 54 bytes"]
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "a" * 64}) == [
        f'{C0}.serviceNameSuffix: Invalid value: "{"a" * 64}": must be no more than 63 characters',
        f"{C0}.serviceNameSuffix: Too long: may not be more than 54 bytes"]


def test_service_name_suffix_unique_and_not_colliding():
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "same"},
                     {"upstream": "b.io", "serviceNameSuffix": "same"}) == [
        'spec.extensions[0].providerConfig.caches[1].serviceNameSuffix: Duplicate value: "same"']
    assert errors_of({"upstream": "docker.io"}, {"upstream": "quay.io", "serviceNameSuffix": "docker-io"}) == [
        'spec.extensions[0].providerConfig.caches[1].serviceNameSuffix: Invalid value: "docker-io": '
        'cannot collide with "docker.io" upstream']
    assert errors_of({"upstream": "myproj-releases.common.repositories.cloud.com"},
                     {"upstream": "b.io", "serviceNameSuffix": "myproj-releases-common-repositories-c-3f834"}) == [
        'spec.extensions[0].providerConfig.caches[1].serviceNameSuffix: Invalid value: '
        '"myproj-releases-common-repositories-c-3f834": cannot collide with '
        '"myproj-releases.common.repositories.cloud.com" upstream']
    # a suffix equal to its own generated name is fine
    assert errors_of({"upstream": "docker.io", "serviceNameSuffix": "docker-io"}) == []


def test_duplicate_upstreams():
    assert errors_of({"upstream": "docker.io"}, {"upstream": "ghcr.io"}, {"upstream": "docker.io"}) == [
        'spec.extensions[0].providerConfig.caches[2].upstream: Duplicate value: "docker.io"']


def test_all_errors_at_once():
    errors = errors_of({"upstream": "https://a.io", "volume": {"size": "0"}, "garbageCollection": {"ttl": "-1s"}},
                       {"upstream": "b.io", "remoteURL": "ftp://b.io", "serviceNameSuffix": "x.y"})
    assert [e.split(":")[0] for e in errors] == [
        f"{C0}.upstream", f"{C0}.volume.size", f"{C0}.garbageCollection.ttl",
        "spec.extensions[0].providerConfig.caches[1].remoteURL",
        "spec.extensions[0].providerConfig.caches[1].serviceNameSuffix"]


# --- update rules -------------------------------------------------------------------------------------


def test_update_size_immutable():
    assert update_errors([{"upstream": "a.io", "volume": {"size": "10Gi"}}],
                         [{"upstream": "a.io", "volume": {"size": "20Gi"}}]) == [
        f'{C0}.volume.size: Invalid value: "20Gi": field is immutable']
    # the default is a value too
    assert update_errors([{"upstream": "a.io"}], [{"upstream": "a.io", "volume": {"size": "20Gi"}}]) == [
        f'{C0}.volume.size: Invalid value: "20Gi": field is immutable']
    # semantic equality, as Kubernetes compares quantities
    assert update_errors([{"upstream": "a.io", "volume": {"size": "1Gi"}}],
                         [{"upstream": "a.io", "volume": {"size": "1024Mi"}}]) == []


def test_update_storage_class_immutable():
    assert update_errors([{"upstream": "a.io", "volume": {"storageClassName": "a"}}],
                         [{"upstream": "a.io", "volume": {"storageClassName": "b"}}]) == [
        f'{C0}.volume.storageClassName: Invalid value: "b": field is immutable']
    assert update_errors([{"upstream": "a.io", "volume": {"storageClassName": "a"}}], [{"upstream": "a.io"}]) == [
        f"{C0}.volume.storageClassName: Invalid value: null: field is immutable"]


def test_update_gc_cannot_be_enabled_again():
    msg = "garbage collection cannot be enabled (ttl > 0) once it is disabled (ttl = 0)"
    assert update_errors([{"upstream": "a.io", "garbageCollection": {"ttl": "0s"}}],
                         [{"upstream": "a.io", "garbageCollection": {"ttl": "1h"}}]) == [
        f'{C0}.garbageCollection.ttl: Invalid value: "1h0m0s": {msg}']
    assert update_errors([{"upstream": "a.io", "garbageCollection": {"ttl": "0s"}}], [{"upstream": "a.io"}]) == [
        f'{C0}.garbageCollection.ttl: Invalid value: "168h0m0s": {msg}']
    assert update_errors([{"upstream": "a.io", "garbageCollection": {"ttl": "1h"}}],
                         [{"upstream": "a.io", "garbageCollection": {"ttl": "0s"}}]) == []


def test_update_paths_use_the_new_index_and_allow_adding_and_removing():
    assert update_errors([{"upstream": "a.io"}, {"upstream": "b.io", "volume": {"size": "1Gi"}}],
                         [{"upstream": "c.io"}, {"upstream": "b.io", "volume": {"size": "2Gi"}}]) == [
        'spec.extensions[0].providerConfig.caches[1].volume.size: Invalid value: "2Gi": field is immutable']


def test_update_other_fields_are_mutable():
    assert update_errors([{"upstream": "a.io"}],
                         [{"upstream": "a.io", "remoteURL": "https://b.io", "http": {"tls": False},
                           "highAvailability": {"enabled": True}, "proxy": {"httpProxy": "http://p:1"},
                           "secretReferenceName": "x", "serviceNameSuffix": "z"}]) == []


def test_upstreams_whose_generated_names_collide():
    """a.io and a-io (b.io:5000 and b.io-5000) would share one StatefulSet, its Secrets and, without
    serviceNameSuffix, one Service: refused on the second upstream, with and without serviceNameSuffix."""
    assert errors_of({"upstream": "a.io"}, {"upstream": "a-io"}) == [
        'spec.extensions[0].providerConfig.caches[1].upstream: Duplicate value: "a-io": generates the same '
        'resource name registry-a-io as upstream "a.io"']
    assert errors_of({"upstream": "b.io-5000"}, {"upstream": "b.io:5000"}) == [
        'spec.extensions[0].providerConfig.caches[1].upstream: Duplicate value: "b.io:5000": generates the same '
        'resource name registry-b-io-5000 as upstream "b.io-5000"']
    # distinct Services, but still one StatefulSet and its Secrets
    assert errors_of({"upstream": "a.io", "serviceNameSuffix": "one"},
                     {"upstream": "a-io", "serviceNameSuffix": "two"}) == [
        'spec.extensions[0].providerConfig.caches[1].upstream: Duplicate value: "a-io": generates the same '
        'resource name registry-a-io as upstream "a.io"']
    assert errors_of({"upstream": "a.io"}, {"upstream": "a-io", "serviceNameSuffix": "two"}) == [
        'spec.extensions[0].providerConfig.caches[1].upstream: Duplicate value: "a-io": generates the same '
        'resource name registry-a-io as upstream "a.io"']
    assert errors_of({"upstream": "a.io"}, {"upstream": "a.io.example"}) == []


def test_upstream_named_like_the_ca_bundle_file():
    """Its directory in containerd's certs.d would be the CA bundle file every https cache needs."""
    assert errors_of({"upstream": "ca-bundle.pem"}) == [
        f'{C0}.upstream: Invalid value: "ca-bundle.pem": must not be ca-bundle.pem: nodes keep the caches\' CA '
        "bundle in containerd's hosts directory under that name, where this upstream's directory would be"]
    assert errors_of({"upstream": "ca-bundle.pem:5000"}) == []
