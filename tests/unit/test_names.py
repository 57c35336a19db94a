import pytest

from api import names


@pytest.mark.parametrize("upstream, label, name", [
    ("docker.io", "docker.io", "registry-docker-io"),
    ("my-registry.io", "my-registry.io", "registry-my-registry-io"),
    ("my-registry.io:5000", "my-registry.io-5000", "registry-my-registry-io-5000"),
    ("europe-docker.pkg.dev", "europe-docker.pkg.dev", "registry-europe-docker-pkg-dev"),
    # vectors of the Go extension's tests: 43 characters at most, 37 + "-" + 5 hex of sha256(upstream)
    ("my-very-long-registry.very-long-subdomain.io", "my-very-long-registry.very-long-subdo-2fae3",
     "registry-my-very-long-registry-very-long-subdo-2fae3"),
    ("my-very-long-registry.long-subdomain.io:8443", "my-very-long-registry.long-subdomain.-8cb9e",
     "registry-my-very-long-registry-long-subdomain--8cb9e"),
    ("my-very-long-registry.long-subdomain.io-8443", "my-very-long-registry.long-subdomain.-e91ed",
     "registry-my-very-long-registry-long-subdomain--e91ed"),
    ("myproj-releases.common.repositories.cloud.com", "myproj-releases.common.repositories.c-3f834",
     "registry-myproj-releases-common-repositories-c-3f834"),
])
def test_label_and_resource_name(upstream, label, name):
    assert names.upstream_label_value(upstream) == label
    assert len(label) <= 43
    assert names.resource_name(upstream) == name
    assert names.labels(upstream) == {"app": name, "upstream-host": label}


def test_exactly_43_characters_is_not_cut():
    upstream = "a" * 40 + ".io"
    assert names.upstream_label_value(upstream) == upstream


def test_service_name():
    assert names.service_name("docker.io", None) == "registry-docker-io"
    assert names.service_name("my-registry.io:5000", "static-name") == "registry-static-name"


def test_default_remote_url():
    assert names.default_remote_url("docker.io") == "https://registry-1.docker.io"
    assert names.default_remote_url("ghcr.io") == "https://ghcr.io"
    assert names.default_remote_url("my-registry.io:5000") == "https://my-registry.io:5000"
