"""Every credential format a user already has ends in the same username and password (api/credentials.py)
and in the same Gardener Secret (``registry-cache credentials create``). No message carries a value."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from api import credential_files as files
from api import credentials as c
from api.credential_files import read_mesos_archive, read_rkt_auth
from api.credentials import (
    CredentialsError,
    credential_errors,
    extract_credentials,
    match_rank,
    read_docker_config,
    read_dockercfg,
)
from api.field import Path as FieldPath
from api.secrets import (
    Credentials,
    SecretData,
    credentials_of,
    go_is_space,
    go_trim_space,
    secret_from_manifest,
    validate_upstream_secret,
)
from extension.cli.credentials import next_versioned_name, secret_manifest
from extension.cli.main import main

FIXTURES = Path(__file__).parent / "fixtures" / "credentials"
P = FieldPath("spec", "extensions").index(0).child("providerConfig", "caches").index(0).child("secretReferenceName")
HEAD = 'spec.extensions[0].providerConfig.caches[0].secretReferenceName: Invalid value: "creds": '
KEY = '"garden-dev/creds-v1"'
DCJ = f'the data entry ".dockerconfigjson" in the referenced secret {KEY}: '
PW = "S3cr3t-Pa55w0rd"  # appears in no message: checked by every error test through errors()

SA = {"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": "-----BEGIN...",
      "client_email": "x@p.iam.gserviceaccount.com", "client_id": "1", "auth_uri": "https://a",
      "token_uri": "https://t", "auth_provider_x509_cert_url": "https://c", "client_x509_cert_url": "https://d",
      "universe_domain": "googleapis.com"}


# --- builders --------------------------------------------------------------------------------------------
def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(data: dict, type_: str = "Opaque", immutable: bool | None = True) -> SecretData:
    return SecretData("garden-dev", "creds-v1", immutable,
                      {k: v.encode() if isinstance(v, str) else v for k, v in data.items()}, type_)


def dockerconfigjson(auths: dict, **extra) -> SecretData:
    return secret({".dockerconfigjson": json.dumps({"auths": auths, **extra})}, c.TYPE_DOCKERCONFIGJSON)


def dockercfg(auths: dict) -> SecretData:
    return secret({".dockercfg": json.dumps(auths)}, c.TYPE_DOCKERCFG)


def kep(data: dict, type_: str = c.TYPE_REGCREDENTIALS) -> SecretData:
    return secret(data, type_)


def errors(sec: SecretData, upstream: str = "quay.io", secrets_: tuple[str, ...] = (PW,), **kw) -> list[str]:
    out = [str(e) for e in credential_errors(sec, upstream, P, "creds", **kw)]
    for text in out:
        for value in secrets_:
            assert value not in text
    return out


def extracted(sec: SecretData, upstream: str = "quay.io") -> tuple[str, str]:
    assert errors(sec, upstream) == []
    got = extract_credentials(sec, upstream)
    return got.username, got.password


def mesos_archive(config: bytes, name: str = ".docker/config.json", gz: bool = True, extra=()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for member_name, content in [*extra, (name, config)]:
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --- Gardener's opaque Secret: validate_upstream_secret, unchanged ------------------------------------------
@pytest.mark.parametrize("data, immutable", [
    ({"username": "org+robot", "password": PW}, True),
    ({"username": "org+robot", "password": PW}, None),
    ({"username": "u", "password": PW, "extra": "x"}, True),
    ({"username": "u"}, True),
    ({"user": "u", "password": PW}, True),
    ({"username": "a b", "password": PW}, True),
    ({"username": "u", "password": " \t"}, True),
    ({"username": "_json_key", "password": json.dumps({**SA, "baz": "1"})}, True),
    ({}, True),
])
def test_opaque_secret_gets_exactly_gardeners_errors(data, immutable):
    sec = secret(data, immutable=immutable)
    assert c.secret_format(sec) == c.FORMAT_OPAQUE
    assert credential_errors(sec, "quay.io", P, "creds") == validate_upstream_secret(sec, P, "creds")
    assert credential_errors(sec, "quay.io", P, "creds", require_immutable=False) == \
        validate_upstream_secret(sec, P, "creds", require_immutable=False)


def test_opaque_secret_extracts_for_any_upstream():
    sec = secret({"username": "org+robot", "password": PW})
    for upstream in ("quay.io", "docker.io", "my-registry.io:5000"):
        assert extracted(sec, upstream) == ("org+robot", PW)
    with pytest.raises(CredentialsError, match='missing "password" data entry') as exc:
        extract_credentials(secret({"username": "u"}), "quay.io")
    assert PW not in str(exc.value)


def test_format_by_type_then_by_keys():
    assert c.secret_format(secret({"x": "1"}, c.TYPE_DOCKERCONFIGJSON)) == c.FORMAT_DOCKERCONFIGJSON
    assert c.secret_format(secret({"x": "1"}, c.TYPE_DOCKERCFG)) == c.FORMAT_DOCKERCFG
    assert c.secret_format(secret({"username": "u", "password": "p"}, c.TYPE_REGCREDENTIALS)) == c.FORMAT_KEP
    # `kubectl create secret generic --from-file=.dockerconfigjson=...` without --type
    assert c.secret_format(secret({".dockerconfigjson": "{}"})) == c.FORMAT_DOCKERCONFIGJSON
    assert c.secret_format(secret({".dockercfg": "{}"})) == c.FORMAT_DOCKERCFG
    assert c.secret_format(secret({"serverAddress": "quay.io", "username": "u", "password": "p"})) == c.FORMAT_KEP
    assert c.secret_format(secret({"registryToken": "t"})) == c.FORMAT_KEP
    assert c.secret_format(secret({"username": "u", "password": "p"}, "kubernetes.io/basic-auth")) == c.FORMAT_OPAQUE


# --- kubernetes.io/dockerconfigjson and dockercfg ---------------------------------------------------------
def test_dockerconfigjson_auth_username_password():
    assert extracted(dockerconfigjson({"quay.io": {"auth": b64(f"org+robot:{PW}")}})) == ("org+robot", PW)
    assert extracted(dockerconfigjson({"quay.io": {"username": "org+robot", "password": PW}})) == ("org+robot", PW)
    # the seed's kubectl output: all three, consistent
    assert extracted(dockerconfigjson({"quay.io": {"username": "org+robot", "password": PW, "email": "a@b.c",
                                                   "auth": b64(f"org+robot:{PW}")}})) == ("org+robot", PW)
    # the password may hold ':' (split at the first), unpadded base64 is accepted as the kubelet does
    assert extracted(dockerconfigjson({"quay.io": {"auth": b64(f"u:{PW}:x").rstrip("=")}})) == ("u", f"{PW}:x")
    assert extracted(dockerconfigjson({"quay.io": {"auth": b64("u:p=1")[:-2] + "\n" + b64("u:p=1")[-2:]}})) == \
        ("u", "p=1")


def test_auth_wins_over_username_password_as_in_docker_and_the_kubelet():
    sec = dockerconfigjson({"quay.io": {"username": "other", "password": "other-password",
                                        "auth": b64(f"org+robot:{PW}")}})
    assert extracted(sec) == ("org+robot", PW)
    # an empty auth counts as absent
    assert extracted(dockerconfigjson({"quay.io": {"auth": "", "username": "u", "password": PW}})) == ("u", PW)


def test_fields_are_matched_case_insensitively_as_go_does():
    assert extracted(dockerconfigjson({"quay.io": {"Auth": b64(f"u:{PW}")}})) == ("u", PW)
    assert extracted(dockerconfigjson({"quay.io": {"Username": "u", "Password": PW}})) == ("u", PW)


def test_identity_token():
    # no username: Docker's credential helper convention
    assert extracted(dockerconfigjson({"quay.io": {"identitytoken": PW}})) == ("<token>", PW)
    # what `docker login` stores after a token exchange (ACR): auth "user:" plus the token
    acr = "00000000-0000-0000-0000-000000000000"
    assert extracted(dockerconfigjson({"quay.io": {"auth": b64(f"{acr}:"), "identitytoken": PW}})) == (acr, PW)
    assert extracted(dockerconfigjson({"quay.io": {"username": "u", "identitytoken": PW}})) == ("u", PW)
    # the token wins over a password, as in Docker
    assert extracted(dockerconfigjson({"quay.io": {"username": "u", "password": "old", "identitytoken": PW}})) == \
        ("u", PW)


def test_dockercfg_legacy_top_level_is_the_auths_map():
    assert extracted(dockercfg({"quay.io": {"auth": b64(f"org+robot:{PW}"), "email": "x@y.z"}})) == ("org+robot", PW)
    assert extracted(secret({".dockercfg": json.dumps({"quay.io": {"auth": b64(f"u:{PW}")}})})) == ("u", PW)
    assert errors(dockercfg({"auths": {"quay.io": {"auth": b64(f"u:{PW}")}}})) == [
        HEAD + f'the data entry ".dockercfg" in the referenced secret {KEY}: the document has an "auths" map, as a '
               'config.json (.dockerconfigjson) has; a .dockercfg has the registries at the top level']


def test_docker_entry_errors_name_the_key_and_registry_never_the_value():
    def errs(entry, upstream="quay.io"):
        return errors(dockerconfigjson({"quay.io": entry, "ghcr.io": {"auth": b64(f"g:{PW}")}}), upstream)

    assert errs({"auth": PW + "!!"}) == [
        HEAD + DCJ + '"auth" of the entry "quay.io" is not valid base64; it must be base64(username:password)']
    assert errs({"auth": b64(PW)}) == [
        HEAD + DCJ + '"auth" of the entry "quay.io" does not decode to username:password (no \':\'); it must be '
                     'base64(username:password)']
    assert errs({"auth": base64.b64encode(b"u:\xff" + PW.encode()).decode()}) == [
        HEAD + DCJ + '"auth" of the entry "quay.io" does not decode to UTF-8 text; it must be '
                     'base64(username:password)']
    assert errs({"auth": b64(f":{PW}")}) == [HEAD + DCJ + 'the username in "auth" of the entry "quay.io" is empty']
    assert errs({"auth": b64("u:")}) == [HEAD + DCJ + 'the password in "auth" of the entry "quay.io" is empty']
    assert errs({"auth": b64(f"a b:{PW}")}) == [
        HEAD + DCJ + 'the username in "auth" of the entry "quay.io" contains whitespace']
    assert errs({"username": "u", "password": ""}) == [HEAD + DCJ + '"password" of the entry "quay.io" is empty']
    assert errs({"username": "", "password": PW}) == [HEAD + DCJ + '"username" of the entry "quay.io" is empty']
    assert errs({"username": "u"}) == [HEAD + DCJ + 'the entry "quay.io" has a "username" but no "password"']
    assert errs({"password": PW}) == [HEAD + DCJ + 'the entry "quay.io" has a "password" but no "username"']
    assert errs({"username": "u", "password": 12}) == [HEAD + DCJ + '"password" of the entry "quay.io" must be a string']
    assert errs(PW) == [HEAD + DCJ + 'the entry "quay.io" is not a JSON object']
    assert errs({"username": "u", "password": "\ud800" + PW}) == [
        HEAD + DCJ + '"password" of the entry "quay.io" is not valid UTF-8']
    assert errs({"email": "x@y.z"}) == [
        HEAD + DCJ + 'the entry "quay.io" for the upstream "quay.io" holds no credentials']
    [registry_token] = errs({"registrytoken": PW})
    assert registry_token.startswith(HEAD + DCJ + '"registrytoken" of the entry "quay.io" holds a registry token')
    assert "only with a username and password" in registry_token
    # a broken entry for another registry does not matter
    assert errs({"auth": b64(f"u:{PW}")}, "quay.io") == []
    assert errors(dockerconfigjson({"ghcr.io": {"auth": "!!"}, "quay.io": {"auth": b64(f"u:{PW}")}})) == []


def test_no_entry_for_the_upstream_names_it_and_the_registries_present():
    sec = dockerconfigjson({"https://index.docker.io/v1/": {"auth": b64(f"u:{PW}")},
                            "ghcr.io": {"auth": b64(f"g:{PW}")}})
    assert errors(sec) == [HEAD + DCJ + 'no credentials for the upstream "quay.io" (registries present: '
                                        '"https://index.docker.io/v1/", "ghcr.io")']
    assert errors(dockerconfigjson({})) == [
        HEAD + DCJ + 'no credentials for the upstream "quay.io" (registries present: none)']
    # Docker keeps them elsewhere: say so
    assert errors(dockerconfigjson({"quay.io": {}}, credsStore="desktop")) == [
        HEAD + DCJ + 'the entry "quay.io" for the upstream "quay.io" holds no credentials; Docker keeps credentials '
                     'in the store "docker-credential-desktop", not in this file: use --username and '
                     '--password-stdin']
    assert errors(dockerconfigjson({}, credHelpers={"quay.io": "quay"})) == [
        HEAD + DCJ + 'no credentials for the upstream "quay.io" (registries present: none); Docker keeps them with '
                     'the credential helper "docker-credential-quay", not in this file: use --username and '
                     '--password-stdin']


def test_docker_secret_level_errors():
    assert errors(secret({".dockerconfigjson": "{", "other": PW}, c.TYPE_DOCKERCONFIGJSON)) == [
        HEAD + f'the referenced secret {KEY} should have only the data entry ".dockerconfigjson", not also "other"',
        HEAD + DCJ + "the document is not valid JSON (line 1 column 2)"]
    assert errors(secret({".dockercfg": "{}"}, c.TYPE_DOCKERCONFIGJSON)) == [
        HEAD + f'the referenced secret {KEY} should have only the data entry ".dockerconfigjson", not also '
               '".dockercfg"',
        HEAD + f'missing ".dockerconfigjson" data entry in the referenced secret {KEY}']
    assert errors(secret({".dockerconfigjson": b"\xff{}"}, c.TYPE_DOCKERCONFIGJSON)) == [
        HEAD + DCJ + "the document is not valid UTF-8"]
    assert errors(secret({".dockerconfigjson": f'{{"auths": {{"quay.io": {{"auth": "{PW}"}}, }}'},
                         c.TYPE_DOCKERCONFIGJSON)) == [HEAD + DCJ + "the document is not valid JSON (line 1 column 52)"]
    assert errors(secret({".dockerconfigjson": "[]"}, c.TYPE_DOCKERCONFIGJSON)) == [
        HEAD + DCJ + 'the document must be a JSON object with an "auths" map']
    assert errors(secret({".dockerconfigjson": json.dumps({"quay.io": {"auth": b64(f"u:{PW}")}})},
                         c.TYPE_DOCKERCONFIGJSON)) == [
        HEAD + DCJ + 'the document has no "auths" map; its registries are at the top level, as in a legacy '
                     '.dockercfg (use that format for it)']
    assert errors(secret({".dockerconfigjson": json.dumps({"auths": []})}, c.TYPE_DOCKERCONFIGJSON)) == [
        HEAD + DCJ + 'the "auths" map must be a JSON object of registry to credentials']


def test_every_format_must_be_immutable_like_gardeners():
    sec = SecretData("garden-dev", "creds-v1", None, {".dockerconfigjson": json.dumps(
        {"auths": {"quay.io": {"auth": b64(f"u:{PW}")}}}).encode()}, c.TYPE_DOCKERCONFIGJSON)
    assert errors(sec) == [HEAD + f"the referenced secret {KEY} should be immutable"]
    assert errors(sec, require_immutable=False) == []
    assert extract_credentials(sec, "quay.io") == Credentials("u", PW)


# --- matching the entry to the upstream --------------------------------------------------------------------
@pytest.mark.parametrize("registry, upstream", [
    ("docker.io", "docker.io"), ("index.docker.io", "docker.io"), ("registry-1.docker.io", "docker.io"),
    ("https://index.docker.io/v1/", "docker.io"), ("https://registry-1.docker.io/v2/", "docker.io"),
    ("quay.io", "quay.io"), ("https://quay.io", "quay.io"), ("https://quay.io/v2/", "quay.io"),
    ("quay.io/org/team", "quay.io"), ("QUAY.IO", "quay.io"), ("quay.io:443", "quay.io"),
    ("https://quay.io:443/v1/", "quay.io"), ("http://r.example.io:80/", "r.example.io"), ("quay.io", "quay.io:443"),
    ("my-registry.io:5000", "my-registry.io:5000"), ("http://my-registry.io:5000/v2/", "my-registry.io:5000"),
    ("https://registry.example.io/v0/", "registry.example.io"),
])
def test_matches(registry, upstream):
    assert c.upstream_matches(registry, upstream)


@pytest.mark.parametrize("registry, upstream", [
    ("my-registry.io", "my-registry.io:5000"), ("my-registry.io:5000", "my-registry.io"),
    ("my-registry.io:5001", "my-registry.io:5000"), ("quay.io", "docker.io"), ("docker.io", "quay.io"),
    ("gcr.io", "eu.gcr.io"), ("eu.gcr.io", "gcr.io"), ("notquay.io", "quay.io"), ("quay.io.evil", "quay.io"),
    ("http://quay.io:443", "quay.io"), ("hub.docker.com", "docker.io"), ("", "quay.io"),
])
def test_does_not_match(registry, upstream):
    assert not c.upstream_matches(registry, upstream)


def _pick(auths: dict, upstream: str) -> str:
    """Which registry key wins: every key holds its own name as the password."""
    entries = {k: {"auth": b64(f"u:{k}")} for k in auths}
    return read_docker_config(json.dumps({"auths": entries}).encode()).for_upstream(upstream).password


def test_most_specific_entry_wins():
    keys = ["quay.io/org/team", "quay.io/org", "https://quay.io/v2/", "https://quay.io", "quay.io"]
    assert _pick(keys, "quay.io") == "quay.io"
    assert _pick(keys[:-1], "quay.io") == "https://quay.io"
    assert _pick(keys[:-2], "quay.io") == "https://quay.io/v2/"
    assert _pick(keys[:-3], "quay.io") == "quay.io/org"
    assert _pick(["my-registry.io:5000/v2/", "my-registry.io", "my-registry.io:5000/org"],
                 "my-registry.io:5000") == "my-registry.io:5000/v2/"


def test_docker_hub_prefers_the_key_docker_login_writes():
    keys = ["registry-1.docker.io", "index.docker.io", "docker.io", "https://index.docker.io/v1/"]
    assert _pick(keys, "docker.io") == "https://index.docker.io/v1/"
    assert _pick(keys[:-1], "docker.io") == "docker.io"
    assert _pick(["https://registry-1.docker.io/v2/", "index.docker.io"], "docker.io") == "index.docker.io"
    with pytest.raises(CredentialsError) as exc:
        _pick(keys[:2], "docker.io")
    assert str(exc.value) == ('the entries "registry-1.docker.io", "index.docker.io" match the upstream "docker.io" '
                              'equally well but hold different credentials: keep one of them')


def test_equally_specific_entries_with_the_same_credentials_are_fine():
    doc = {"auths": {"index.docker.io": {"auth": b64(f"u:{PW}")}, "registry-1.docker.io": {"auth": b64(f"u:{PW}")}}}
    assert read_docker_config(json.dumps(doc).encode()).for_upstream("docker.io") == Credentials("u", PW)
    assert match_rank("quay.io", "quay.io") < match_rank("https://quay.io", "quay.io") < \
        match_rank("quay.io/org", "quay.io") < match_rank("quay.io/org/team", "quay.io")


def test_the_seed_docker_config_fixture():
    rc = read_docker_config((FIXTURES / "config.json").read_bytes())
    assert rc.registries == ["https://index.docker.io/v1/", "quay.io", "https://registry.example.io/v0/"]
    assert rc.for_upstream("docker.io") == Credentials("fake-hub-user", "fake-hub-password")
    assert rc.for_upstream("quay.io") == Credentials("example+robot", "FAKEROBOTTOKEN0123456789")
    assert rc.for_upstream("registry.example.io") == Credentials("giffeeLover93", "passphrases are great!")
    with pytest.raises(CredentialsError, match='no credentials for the upstream "ghcr.io"'):
        rc.for_upstream("ghcr.io")


# --- the KEP shape -----------------------------------------------------------------------------------------
def test_kep_username_password_and_server_address():
    assert extracted(kep({"serverAddress": "quay.io", "username": "org+robot", "password": PW})) == ("org+robot", PW)
    assert extracted(kep({"serverAddress": "https://quay.io/v2/", "username": "u", "password": PW})) == ("u", PW)
    assert extracted(kep({"username": "u", "password": PW})) == ("u", PW)
    assert extracted(kep({"serverAddress": "quay.io", "username": "u", "password": PW}, "Opaque")) == ("u", PW)
    assert extracted(kep({"serverAddress": "https://index.docker.io/v1/", "username": "u", "password": PW}),
                     "docker.io") == ("u", PW)
    # a registry token next to a username and password is not needed
    assert extracted(kep({"username": "u", "password": PW, "registryToken": "t"})) == ("u", PW)


def test_kep_identity_token():
    assert extracted(kep({"serverAddress": "quay.io", "identityToken": PW})) == ("<token>", PW)
    assert extracted(kep({"username": "u", "identityToken": PW})) == ("u", PW)
    assert extracted(kep({"username": "u", "password": "old", "identityToken": PW})) == ("u", PW)


def test_kep_errors():
    assert errors(kep({"serverAddress": "ghcr.io", "username": "u", "password": PW})) == [
        HEAD + f'the data entry "serverAddress" in the referenced secret {KEY} names the registry "ghcr.io", not '
               'the upstream "quay.io"']
    [token] = errors(kep({"serverAddress": "quay.io", "registryToken": PW}))
    assert token == (HEAD + f'the data entry "registryToken" in the referenced secret {KEY} holds a registry token '
                            '(a bearer token for the registry), but the cache authenticates to its upstream only '
                            "with a username and password (what distribution's proxy asks its credential helper "
                            "for): give a username and password instead")
    assert errors(kep({"serverAddress": "quay.io", "username": "u"})) == [
        HEAD + f'missing "password" data entry in the referenced secret {KEY}']
    assert errors(kep({"serverAddress": "quay.io"})) == [
        HEAD + f'the referenced secret {KEY} has no "username" and "password" (or "identityToken")']
    assert errors(kep({"serverAddress": "quay.io", "username": "u", "password": PW, "auth": "x"})) == [
        HEAD + f'unexpected data entry "auth" in the referenced secret {KEY}: a registry credentials Secret has only '
               '"serverAddress", "username", "password", "identityToken", "registryToken"']
    assert errors(kep({"serverAddress": "quay.io", "username": "a b", "password": " "})) == [
        HEAD + f'the data entry "username" in the referenced secret {KEY} contains whitespace',
        HEAD + f'the data entry "password" in the referenced secret {KEY} is empty']
    assert errors(kep({"serverAddress": "quay.io", "username": "u", "password": b"\xff" + PW.encode()})) == [
        HEAD + f'the data entry "password" in the referenced secret {KEY} is not valid UTF-8']
    with pytest.raises(CredentialsError, match="registry token") as exc:
        extract_credentials(kep({"registryToken": PW}), "quay.io")
    assert PW not in str(exc.value)


# --- Quay robots and GCR _json_key -------------------------------------------------------------------------
def test_quay_robot_names_in_every_format():
    robot = "myorg+pull_robot"
    assert extracted(secret({"username": robot, "password": PW})) == (robot, PW)
    assert extracted(dockerconfigjson({"quay.io": {"auth": b64(f"{robot}:{PW}")}})) == (robot, PW)
    assert extracted(dockercfg({"quay.io": {"auth": b64(f"{robot}:{PW}")}})) == (robot, PW)
    assert extracted(kep({"serverAddress": "quay.io", "username": robot, "password": PW})) == (robot, PW)


def test_gcr_json_key():
    key_json = json.dumps(SA, indent=2)  # has ':' and newlines: split at the first ':' only
    assert extracted(dockerconfigjson({"https://gcr.io": {"auth": b64(f"_json_key:{key_json}")}}), "gcr.io") == \
        ("_json_key", key_json)
    assert extracted(kep({"serverAddress": "gcr.io", "username": "_json_key", "password": key_json}), "gcr.io") == \
        ("_json_key", key_json)
    bad = json.dumps({**SA, "private_key": PW, "refresh_token": PW})
    assert errors(dockerconfigjson({"gcr.io": {"username": "_json_key", "password": bad}}), "gcr.io") == [
        HEAD + 'forbidden ServiceAccount field "refresh_token" present in the password data entry in the referenced '
               f'secret {KEY} (".dockerconfigjson", entry "gcr.io")']
    [not_json] = errors(dockerconfigjson({"gcr.io": {"auth": b64("_json_key:{" + PW)}}), "gcr.io")
    assert not_json.startswith(HEAD + "failed to unmarshal ServiceAccount json from the password data entry in the "
                                      f'referenced secret {KEY} (".dockerconfigjson", entry "gcr.io"): invalid JSON')
    assert errors(kep({"username": "_json_key", "password": bad}), "gcr.io") == [
        HEAD + f'forbidden ServiceAccount field "refresh_token" present in the password data entry in the referenced '
               f'secret {KEY}']


# --- readers for files on disk -----------------------------------------------------------------------------
def test_read_dockercfg_fixture():
    rc = read_dockercfg((FIXTURES / "dockercfg.json").read_bytes())
    assert rc.for_upstream("quay.io") == Credentials("example+robot", "FAKEROBOTTOKEN0123456789")
    assert rc.for_upstream("docker.io") == Credentials("fake-hub-user", "fake-hub-password")
    with pytest.raises(CredentialsError, match='has an "auths" map'):
        read_dockercfg((FIXTURES / "config.json").read_bytes())


def test_read_rkt_auth():
    rc = read_rkt_auth((FIXTURES / "registry.example.io.json").read_bytes())
    assert rc.registries == ["https://registry.example.io/v0/"]
    assert rc.for_upstream("registry.example.io") == Credentials("giffeeLover93", "passphrases are great!")
    docker_auth = {"rktKind": "dockerAuth", "rktVersion": "v1", "registries": ["quay.io", "docker.io"],
                   "credentials": {"user": "org+robot", "password": PW}}
    rc = read_rkt_auth(json.dumps(docker_auth).encode())
    assert rc.for_upstream("quay.io") == rc.for_upstream("docker.io") == Credentials("org+robot", PW)


@pytest.mark.parametrize("change, message", [
    ({"rktKind": "other"}, '"rktKind" must be "auth" or "dockerAuth"'),
    ({"rktVersion": "v2"}, '"rktVersion" must be "v1"'),
    ({"domains": []}, '"domains" must be a non-empty list of registry names'),
    ({"type": "oauth", "credentials": {"token": PW}}, '"credentials.token" (type "oauth") holds a registry token'),
    ({"type": "digest"}, '"type" must be "basic"'),
    ({"credentials": {"user": "u"}}, '"credentials.password" must be a string'),
    ({"credentials": PW}, '"credentials" must be a JSON object'),
])
def test_read_rkt_auth_errors(change, message):
    doc = {**json.loads((FIXTURES / "registry.example.io.json").read_text()), **change}
    with pytest.raises(CredentialsError) as exc:
        read_rkt_auth(json.dumps(doc).encode())
    assert str(exc.value).startswith(message) and PW not in str(exc.value)


def test_read_mesos_archive():
    config = (FIXTURES / "config.json").read_bytes()
    expected = Credentials("example+robot", "FAKEROBOTTOKEN0123456789")
    assert read_mesos_archive(mesos_archive(config)).for_upstream("quay.io") == expected
    assert read_mesos_archive(mesos_archive(config, "./.docker/config.json")).for_upstream("quay.io") == expected
    assert read_mesos_archive(mesos_archive(config, gz=False)).for_upstream("quay.io") == expected
    other = [(".docker/other.json", b"{}"), ("../../etc/passwd", b"x")]
    assert read_mesos_archive(mesos_archive(config, extra=other)).for_upstream("quay.io") == expected


def _archive_with(*members: tarfile.TarInfo, contents: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            archive.addfile(member, io.BytesIO(contents) if member.isreg() else None)
    return buffer.getvalue()


def test_read_mesos_archive_errors(monkeypatch):
    def fails(data: bytes, message: str) -> None:
        with pytest.raises(CredentialsError) as exc:
            read_mesos_archive(data).for_upstream("quay.io")
        assert str(exc.value).startswith(message), str(exc.value)
        assert PW not in str(exc.value)

    fails(mesos_archive(b"{}", ".docker/other.json"), "the archive holds no .docker/config.json")
    fails(b"not an archive at all", "not a readable .tar.gz archive")
    fails(b"\x1f\x8b" + b"\x00" * 40, "not a readable .tar.gz archive")
    link = tarfile.TarInfo(".docker/config.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    fails(_archive_with(link), ".docker/config.json in the archive is not a regular file")
    twice = mesos_archive(b"{}", extra=[(".docker/config.json", b"{}")])
    fails(twice, "the archive holds .docker/config.json more than once")
    fails(mesos_archive(b" " * (c.MAX_DOCUMENT_BYTES + 1)), ".docker/config.json in the archive is larger than")
    fails(mesos_archive(f'{{"auths": {{"quay.io": {{"auth": "{PW}!"}}}}}}'.encode()),
          '"auth" of the entry "quay.io" is not valid base64')
    fails(mesos_archive(b"{"), ".docker/config.json in the archive: the document is not valid JSON")
    monkeypatch.setattr(files, "MAX_ARCHIVE_UNPACKED_BYTES", 64 << 10)
    bomb = mesos_archive(b"{}", extra=[("filler", b"\0" * (1 << 20))])
    assert len(bomb) < 10_000
    fails(bomb, "the archive unpacks to more than")


def test_password_from_stdin_drops_one_trailing_newline_like_docker_login():
    assert files.password_from_stdin(PW.encode() + b"\n") == PW
    assert files.password_from_stdin(PW.encode() + b"\r\n") == PW
    assert files.password_from_stdin(PW.encode() + b"\n\n") == PW + "\n"
    assert files.password_from_stdin(b" " + PW.encode()) == " " + PW
    with pytest.raises(CredentialsError, match="not valid UTF-8"):
        files.password_from_stdin(b"\xff")
    rc = files.from_username_password("org+robot", PW, "quay.io")
    assert rc.for_upstream("quay.io") == Credentials("org+robot", PW)


# --- next version of a Secret's name -----------------------------------------------------------------------
@pytest.mark.parametrize("existing, current, expected", [
    ([], "ro-docker-secret-v1", "ro-docker-secret-v2"),
    ([], "quay-credentials", "quay-credentials-v2"),
    (["quay-credentials-v2"], "quay-credentials", "quay-credentials-v3"),
    (["creds-v1", "creds-v7", "creds-v3", "other-v9", "creds-v2-v12"], "creds-v3", "creds-v8"),
    (["creds-v1"], "creds-v9", "creds-v10"),
    (["creds-v2-v12"], "creds-v2", "creds-v3"),
    ([], "creds-v", "creds-v-v2"),
])
def test_next_versioned_name(existing, current, expected):
    assert next_versioned_name(existing, current) == expected


def test_next_versioned_name_too_long():
    with pytest.raises(ValueError, match="longer than 253"):
        next_versioned_name([], "a" * 250 + "-v9")


# --- the command line --------------------------------------------------------------------------------------
def cli(*argv: str, stdin: bytes | None = None, monkeypatch=None, capsys=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["credentials", "create", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def secret_of(yaml_text: str) -> SecretData:
    return secret_from_manifest(yaml.safe_load(yaml_text))


COMMON = ("quay-credentials-v1", "--namespace", "garden-dev", "--upstream", "quay.io", "--dry-run")


def test_cli_dry_run_from_every_source(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "quay.tar.gz"
    archive.write_bytes(mesos_archive((FIXTURES / "config.json").read_bytes()))
    sources = [
        ("--from-docker-config", str(FIXTURES / "config.json")),
        ("--from-dockercfg", str(FIXTURES / "dockercfg.json")),
        ("--from-mesos-archive", str(archive)),
    ]
    outputs = []
    for source in sources:
        code, out, err = cli(*COMMON, *source, capsys=capsys)
        assert (code, err) == (0, "")
        outputs.append(out)
    code, out, err = cli(*COMMON, "--username", "example+robot", "--password-stdin",
                         stdin=b"FAKEROBOTTOKEN0123456789\n", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, err) == (0, "")
    outputs.append(out)
    assert len(set(outputs)) == 1
    assert yaml.safe_load(outputs[0]) == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "quay-credentials-v1", "namespace": "garden-dev"},
        "type": "Opaque", "immutable": True,
        "data": {"username": b64("example+robot"), "password": b64("FAKEROBOTTOKEN0123456789")}}
    sec = secret_of(outputs[0])
    assert validate_upstream_secret(sec, P, "creds") == []
    assert credentials_of(sec) == Credentials("example+robot", "FAKEROBOTTOKEN0123456789")


def test_cli_dry_run_from_rkt(capsys):
    code, out, err = cli("example-v1", "-n", "garden-dev", "--upstream", "registry.example.io", "--dry-run",
                         "--from-rkt", str(FIXTURES / "registry.example.io.json"), capsys=capsys)
    assert (code, err) == (0, "")
    assert credentials_of(secret_of(out)) == Credentials("giffeeLover93", "passphrases are great!")


def test_cli_docker_hub_entry(capsys):
    code, out, _ = cli("hub-v1", "-n", "garden-dev", "--upstream", "docker.io", "--dry-run",
                       "--from-docker-config", str(FIXTURES / "config.json"), capsys=capsys)
    assert code == 0
    assert credentials_of(secret_of(out)) == Credentials("fake-hub-user", "fake-hub-password")


def test_cli_bad_input_exits_2_naming_file_and_registry(tmp_path, monkeypatch, capsys):
    config = str(FIXTURES / "config.json")
    code, out, err = cli("ghcr-v1", "-n", "garden-dev", "--upstream", "ghcr.io", "--dry-run",
                         "--from-docker-config", config, capsys=capsys)
    assert (code, out) == (2, "")
    assert err == (f'error: {config}: no credentials for the upstream "ghcr.io" (registries present: '
                   '"https://index.docker.io/v1/", "quay.io", "https://registry.example.io/v0/")\n')
    assert "fake-hub-password" not in err and "FAKEROBOT" not in err

    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"auths": {"quay.io": {"auth": b64(f"a b:{PW}")}}}))
    code, out, err = cli(*COMMON, "--from-docker-config", str(bad), capsys=capsys)
    assert (code, out) == (2, "")
    assert err == f'error: {bad}: the username in "auth" of the entry "quay.io" contains whitespace\n'

    missing = tmp_path / "nope.json"
    assert cli(*COMMON, "--from-rkt", str(missing), capsys=capsys)[::2] == (2, f"error: {missing}: no such file\n")
    assert cli(*COMMON, "--from-rkt", str(tmp_path), capsys=capsys)[::2] == (2, f"error: {tmp_path}: not a file\n")

    code, _, err = cli(*COMMON, "--username", "u", capsys=capsys)
    assert (code, err) == (2, "error: --username needs --password-stdin: a password is never taken on the "
                              "command line\n")
    code, _, err = cli(*COMMON, "--from-rkt", str(FIXTURES / "registry.example.io.json"), "--password-stdin",
                       capsys=capsys)
    assert (code, err) == (2, "error: --password-stdin goes with --username, not with a file\n")
    code, _, err = cli(*COMMON, "--username", "u", "--password-stdin", stdin=b"\n", monkeypatch=monkeypatch,
                       capsys=capsys)
    assert (code, err) == (2, "error: --username: the password read from stdin is empty\n")

    code, _, err = cli("Bad_Name", "-n", "garden-dev", "--upstream", "https://quay.io", "--dry-run",
                       "--username", "u", "--password-stdin", stdin=PW.encode(), monkeypatch=monkeypatch,
                       capsys=capsys)
    assert code == 2
    assert err.splitlines()[0] == ("error: --upstream 'https://quay.io': give the host[:port] of caches[].upstream, "
                                   "without a scheme")
    assert err.splitlines()[1].startswith("error: NAME 'Bad_Name': a lowercase RFC 1123 subdomain")

    gcr = tmp_path / "gcr.json"
    gcr.write_text(json.dumps({"auths": {"gcr.io": {"username": "_json_key",
                                                    "password": json.dumps({**SA, "private_key": PW, "x": "1"})}}}))
    code, _, err = cli("gcr-v1", "-n", "garden-dev", "--upstream", "gcr.io", "--dry-run",
                       "--from-docker-config", str(gcr), capsys=capsys)
    assert code == 2
    assert err == (f'error: {gcr}: the Secret garden-dev/gcr-v1 would not be valid: forbidden ServiceAccount field '
                   '"x" present in the password data entry in the referenced secret "garden-dev/gcr-v1"\n')
    assert PW not in err


def test_cli_argparse_requires_exactly_one_source(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(*COMMON, capsys=capsys)
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli(*COMMON, "--from-rkt", "a", "--from-dockercfg", "b", capsys=capsys)


class FakeKube:
    def __init__(self, fail=None):
        self.created, self.fail = [], fail

    def create(self, obj):
        if self.fail:
            raise self.fail
        self.created.append(obj)
        return obj


def test_cli_creates_the_secret_without_printing_the_password(monkeypatch, capsys):
    from extension.runtime import kube

    fake = FakeKube()
    seen = []
    monkeypatch.setattr(kube.Kube, "from_kubeconfig", classmethod(lambda cls, path=None: seen.append(path) or fake))
    argv = ("quay-credentials-v1", "-n", "garden-dev", "--upstream", "quay.io", "--kubeconfig", "/k",
            "--username", "org+robot", "--password-stdin")
    code, out, err = cli(*argv, stdin=PW.encode() + b"\n", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (0, "secret/quay-credentials-v1 created\n")
    assert err == "garden-dev/quay-credentials-v1: username and password for quay.io (from --username)\n"
    assert seen == ["/k"]
    [obj] = fake.created
    assert credentials_of(secret_from_manifest(obj)) == Credentials("org+robot", PW)
    assert obj["immutable"] is True and obj["type"] == "Opaque" and "labels" not in obj["metadata"]

    conflict = kube.ApiError("POST", "/api/v1/namespaces/garden-dev/secrets", 409,
                             {"reason": "AlreadyExists", "message": 'secrets "quay-credentials-v1" already exists'})
    monkeypatch.setattr(kube.Kube, "from_kubeconfig", classmethod(lambda cls, path=None: FakeKube(conflict)))
    code, out, err = cli(*argv, stdin=PW.encode(), monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (1, "")
    assert "AlreadyExists" in err and "quay-credentials-v2" in err and PW not in err


# --- every format ends in the same credentials --------------------------------------------------------------
usernames = st.text(min_size=1, max_size=40).filter(
    lambda u: ":" not in u and not any(go_is_space(ch) or ch.isspace() for ch in u) and u != "_json_key")
passwords = st.text(min_size=1, max_size=60).filter(lambda p: go_trim_space(p) != "")


def every_format(username: str, password: str, upstream: str = "quay.io") -> dict[str, Credentials]:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = json.dumps({"auths": {upstream: {"auth": auth}}}).encode()
    rkt = json.dumps({"rktKind": "auth", "rktVersion": "v1", "domains": [f"https://{upstream}/v2/"], "type": "basic",
                      "credentials": {"user": username, "password": password}}).encode()
    secrets_ = {
        "opaque": secret({"username": username, "password": password}),
        "dockerconfigjson auth": secret({".dockerconfigjson": config}, c.TYPE_DOCKERCONFIGJSON),
        "dockerconfigjson username/password": dockerconfigjson(
            {f"https://{upstream}": {"username": username, "password": password}}),
        "dockercfg": dockercfg({upstream: {"auth": auth, "email": "x@example.com"}}),
        "kep": kep({"serverAddress": upstream, "username": username, "password": password}),
    }
    out = {}
    for name, sec in secrets_.items():
        assert credential_errors(sec, upstream, P, "creds") == [], name
        out[name] = extract_credentials(sec, upstream)
    out["config.json"] = read_docker_config(config).for_upstream(upstream)
    out["rkt"] = read_rkt_auth(rkt).for_upstream(upstream)
    out["mesos"] = read_mesos_archive(mesos_archive(config)).for_upstream(upstream)
    if not password.endswith(("\n", "\r")):  # `docker login --password-stdin` drops those too
        out["--username"] = files.from_username_password(
            username, files.password_from_stdin(password.encode() + b"\n"), upstream).for_upstream(upstream)
    return out


@settings(max_examples=150, deadline=None)
@given(username=usernames, password=passwords)
def test_every_format_extracts_the_same_credentials(username, password):
    got = every_format(username, password)
    assert set(got.values()) == {Credentials(username, password)}, {k: (v.username, v.password) for k, v in got.items()}


@settings(max_examples=50, deadline=None)
@given(username=usernames, password=passwords)
def test_every_format_makes_the_same_secret(username, password):
    manifests = {json.dumps(secret_manifest("n-v1", "garden-dev", creds), sort_keys=True)
                 for creds in every_format(username, password).values()}
    [manifest] = manifests
    assert validate_upstream_secret(secret_from_manifest(json.loads(manifest)), P, "creds") == []


@settings(max_examples=100, deadline=None)
@given(tail=st.text(max_size=40))
def test_no_error_carries_the_password(tail):
    password = "Zq9X" + tail  # a marker no message can hold by chance
    secrets_ = [
        dockerconfigjson({"quay.io": {"auth": base64.b64encode(f"a b:{password}".encode()).decode()}}),
        dockerconfigjson({"quay.io": {"auth": base64.b64encode(password.encode()).decode() + "!"}}),
        dockerconfigjson({"ghcr.io": {"username": "u", "password": password}}),
        dockerconfigjson({"quay.io": {"password": password}}),
        dockerconfigjson({"quay.io": {"registrytoken": password}}),
        secret({".dockerconfigjson": '{"auths": {"quay.io": {"password": "' + password}, c.TYPE_DOCKERCONFIGJSON),
        kep({"serverAddress": "ghcr.io", "username": "a b", "password": password, "other": password}),
        kep({"registryToken": password}),
        dockerconfigjson({"quay.io": {"username": "_json_key", "password": '{"x": "' + password + '"}'}}),
        dockerconfigjson({"quay.io": {"username": "_json_key", "password": password}}),
    ]
    for sec in secrets_:
        errs = credential_errors(sec, "quay.io", P, "creds")
        assert errs
        for err in errs:
            assert "Zq9X" not in str(err)
