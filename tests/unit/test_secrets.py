import base64
import json

import pytest

from api.field import Path
from api.secrets import SecretData, SecretFormatError, secret_from_manifest, validate_upstream_secret

P = Path("spec", "extensions").index(0).child("providerConfig", "caches").index(0).child("secretReferenceName")
HEAD = 'spec.extensions[0].providerConfig.caches[0].secretReferenceName: Invalid value: "creds": '
KEY = '"garden-dev/creds-v1"'


def secret(data, immutable=True):
    return SecretData("garden-dev", "creds-v1", immutable, {k: v.encode() if isinstance(v, str) else v
                                                            for k, v in data.items()})


def errors(sec):
    return [str(e) for e in validate_upstream_secret(sec, P, "creds")]


def test_valid():
    assert errors(secret({"username": "org+robot", "password": "s3cr3t"})) == []


def test_must_be_immutable():
    assert errors(secret({"username": "u", "password": "p"}, immutable=None)) == [
        HEAD + f"the referenced secret {KEY} should be immutable"]
    assert errors(secret({"username": "u", "password": "p"}, immutable=False)) == [
        HEAD + f"the referenced secret {KEY} should be immutable"]


def test_exactly_two_entries():
    assert errors(secret({"username": "u", "password": "p", "extra": "x"})) == [
        HEAD + f"the referenced secret {KEY} should have only two data entries"]
    assert errors(secret({"username": "u"})) == [
        HEAD + f"the referenced secret {KEY} should have only two data entries",
        HEAD + f'missing "password" data entry in the referenced secret {KEY}']
    assert errors(secret({"user": "u", "password": "p"})) == [
        HEAD + f'missing "username" data entry in the referenced secret {KEY}']


def test_username_and_password_content():
    assert errors(secret({"username": "", "password": "p"})) == [
        HEAD + f'the data entry "username" in the referenced secret {KEY} is empty']
    assert errors(secret({"username": " ", "password": "p"})) == [
        HEAD + f'the data entry "username" in the referenced secret {KEY} is empty',
        HEAD + f'the data entry "username" in the referenced secret {KEY} contains whitespace']
    assert errors(secret({"username": "a b", "password": "p"})) == [
        HEAD + f'the data entry "username" in the referenced secret {KEY} contains whitespace']
    assert errors(secret({"username": "a\u00a0b", "password": "p"})) == [
        HEAD + f'the data entry "username" in the referenced secret {KEY} contains whitespace']
    assert errors(secret({"username": "u", "password": " \t"})) == [
        HEAD + f'the data entry "password" in the referenced secret {KEY} is empty']
    assert errors(secret({"username": "u", "password": b"\xff\xfe"})) == [
        HEAD + f'the data entry "password" in the referenced secret {KEY} is not valid UTF-8']


SA = {"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": "-----BEGIN...",
      "client_email": "x@p.iam.gserviceaccount.com", "client_id": "1", "auth_uri": "https://a",
      "token_uri": "https://t", "auth_provider_x509_cert_url": "https://c", "client_x509_cert_url": "https://d",
      "universe_domain": "googleapis.com"}


def test_json_key():
    assert errors(secret({"username": "_json_key", "password": json.dumps(SA)})) == []
    assert errors(secret({"username": "_json_key", "password": json.dumps({**SA, "auths": {}, "baz": "1"})})) == [
        HEAD + f'failed to unmarshal ServiceAccount json from the password data entry in the referenced secret {KEY}: '
               'field "auths" must be a string',
        HEAD + f'forbidden ServiceAccount field "auths" present in the password data entry in the referenced secret {KEY}',
        HEAD + f'forbidden ServiceAccount field "baz" present in the password data entry in the referenced secret {KEY}',
    ]
    errs = errors(secret({"username": "_json_key", "password": '{"type": "service_account",\n "private_key": "SECRET'}))
    assert len(errs) == 1 and "failed to unmarshal ServiceAccount json" in errs[0] and "SECRET" not in errs[0]
    assert errors(secret({"username": "_json_key", "password": "[1]"})) == [
        HEAD + f"failed to unmarshal ServiceAccount json from the password data entry in the referenced secret {KEY}: "
               "expected a JSON object, got list"]
    # only the exact username triggers the check
    assert errors(secret({"username": "_json_key_base64", "password": "not json"})) == []


def test_errors_never_contain_values():
    password = "hunter2-very-secret"
    for data in ({"username": "a b", "password": password}, {"username": password + " x", "password": "p"},
                 {"username": "_json_key", "password": password}, {"username": "_json_key", "password": "[" + password}):
        text = "\n".join(errors(secret(data, immutable=False)))
        assert text and password not in text


def test_secret_from_manifest_data_and_string_data():
    s = secret_from_manifest({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c", "namespace": "n"},
                              "immutable": True,
                              "data": {"username": base64.b64encode(b"u").decode(), "password": "cA=="},
                              "stringData": {"password": "override"}})
    assert s.data == {"username": b"u", "password": b"override"} and s.immutable is True and s.key == "n/c"
    assert "override" not in repr(s)


@pytest.mark.parametrize("obj, message", [
    ({"kind": "ConfigMap"}, "expected a v1 Secret"),
    ({"apiVersion": "v1", "kind": "Secret", "metadata": {}}, "metadata.name is required"),
    ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}, "data": {"password": "%%%"}},
     r"data\[password\] is not valid base64"),
    ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}, "stringData": {"password": 1}},
     r"stringData\[password\] must be a string"),
])
def test_secret_from_manifest_errors(obj, message):
    with pytest.raises(SecretFormatError, match=message) as info:
        secret_from_manifest(obj, "f.yaml")
    assert "%%%" not in str(info.value)
