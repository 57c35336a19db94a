"""Credential provider plugins per cache: the Secret type (api/credential_provider.py), what is rendered for such a
cache, and the rendered credential helper running a plugin under busybox (the cache image's sh and awk).

The plugin in the helper tests is a small script that answers what a test tells it to (a file beside it), so that
every answer and failure a plugin can give is tried; the real plugin binary runs in tests/e2e."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from api import credential_provider as cp
from api.admission import check_credentials
from api.credentials import FORMAT_CREDENTIAL_PROVIDER, credential_errors, secret_format, upstream_auth
from api.field import Path as FieldPath
from api.secrets import Credentials, SecretData
from api.validation import decode_and_default
from extension import constants as c
from extension.component.certs import generate_ca, generate_server_cert
from extension.component.objects import (
    RenderOptions,
    config_files,
    render_cache,
    render_config_yml,
    render_provider_helper,
)
from extension.component.quoting import sh_quote
from extension.controller.providers import parse_lines

P = FieldPath("spec", "extensions").index(0).child("providerConfig", "caches").index(0).child("secretReferenceName")
HEAD = 'spec.extensions[0].providerConfig.caches[0].secretReferenceName: Invalid value: "ecr": '
KEY = '"garden-dev/ecr-v1"'
SECRET_VALUE = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # an AWS-style secret key: in no message, no log line
ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def provider_secret(data: dict, immutable: bool | None = True, type_: str = cp.TYPE_CREDENTIAL_PROVIDER) -> SecretData:
    return SecretData("garden-dev", "ecr-v1", immutable,
                      {k: v.encode() if isinstance(v, str) else v for k, v in data.items()}, type_)


ECR_DATA = {
    "name": "ecr-credential-provider",
    "image": "registry.example.com/tools/ecr-credential-provider:v1.31.0",
    "args": '["get-credentials"]',
    "env": f"- name: AWS_ACCESS_KEY_ID\n  value: AKIAIOSFODNN7EXAMPLE\n- name: AWS_SECRET_ACCESS_KEY\n"
           f"  value: {SECRET_VALUE}\n",
    "defaultCacheDuration": "12h",
}


def errors(sec: SecretData, **kw) -> list[str]:
    out = [str(e) for e in credential_errors(sec, ECR, P, "ecr", **kw)]
    for text in out:
        assert SECRET_VALUE not in text and "AKIAIOSFODNN7EXAMPLE" not in text
    return out


# --- the Secret ----------------------------------------------------------------------------------------------
def test_the_ecr_example_reads_as_a_plugin():
    sec = provider_secret(ECR_DATA)
    assert secret_format(sec) == FORMAT_CREDENTIAL_PROVIDER
    assert errors(sec) == []
    provider = upstream_auth(sec, ECR)
    assert provider == cp.CredentialProvider(
        "ecr-credential-provider", ECR_DATA["image"], "/bin/ecr-credential-provider", ("get-credentials",),
        (("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"), ("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)),
        cp.API_VERSION_V1, 12 * 3600)
    for shown in (repr(provider), str(provider), cp.describe(provider)):
        assert SECRET_VALUE not in shown and "AKIAIOSFODNN7EXAMPLE" not in shown and "get-credentials" not in shown


def test_defaults_and_every_optional_key():
    minimal = upstream_auth(provider_secret({"name": "p", "image": "busybox"}), ECR)
    assert isinstance(minimal, cp.CredentialProvider)
    assert (minimal.binary_path, minimal.args, minimal.env, minimal.api_version, minimal.default_cache_seconds) == \
        ("/bin/p", (), (), cp.API_VERSION_V1, 0)
    full = upstream_auth(provider_secret({
        "name": "p.v2_x", "image": "10.0.0.1:5000/a/b-c@sha256:" + "a" * 64, "binaryPath": "/opt/plugins/p",
        "args": "- --v=2\n- 'with space'\n", "env": '[{"name": "A_1", "value": ""}]',
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1beta1", "defaultCacheDuration": "1m30.9s"}), ECR)
    assert isinstance(full, cp.CredentialProvider)
    assert (full.binary_path, full.args, full.env, full.api_version, full.default_cache_seconds) == \
        ("/opt/plugins/p", ("--v=2", "with space"), (("A_1", ""),), "credentialprovider.kubelet.k8s.io/v1beta1", 90)


@pytest.mark.parametrize("data, immutable, wanted", [
    ({}, True, ['missing "name" data entry in the referenced secret ' + KEY,
                'missing "image" data entry in the referenced secret ' + KEY]),
    (ECR_DATA, None, [f"the referenced secret {KEY} should be immutable"]),
    ({**ECR_DATA, "password": SECRET_VALUE}, True,
     [f'unexpected data entry "password" in the referenced secret {KEY}: a credential provider Secret has only '
      '"name", "image", "binaryPath", "args", "env", "apiVersion", "defaultCacheDuration"']),
    ({**ECR_DATA, "name": "../../bin/sh"}, True,
     [f'the data entry "name" in the referenced secret {KEY} must be a file name of at most 128 characters: '
      "letters, digits, '.', '_' and '-', starting with a letter or digit"]),
    ({**ECR_DATA, "image": "Not An Image"}, True,
     [f'the data entry "image" in the referenced secret {KEY} is not an image reference '
      "([registry/]repository[:tag][@digest])"]),
    ({**ECR_DATA, "binaryPath": "bin/x"}, True,
     [f'the data entry "binaryPath" in the referenced secret {KEY} must be an absolute path to a file (letters, '
      "digits and ._+@=,/- only, no '.' or '..' parts)"]),
    ({**ECR_DATA, "binaryPath": "/bin/../etc/shadow"}, True,
     [f'the data entry "binaryPath" in the referenced secret {KEY} must be an absolute path to a file (letters, '
      "digits and ._+@=,/- only, no '.' or '..' parts)"]),
    ({**ECR_DATA, "args": "get-credentials"}, True,
     [f'the data entry "args" in the referenced secret {KEY} must be a YAML (or JSON) list, not a string']),
    ({**ECR_DATA, "args": f'["a", 1, {{"k": "{SECRET_VALUE}"}}]'}, True,
     [f'the data entry "args" in the referenced secret {KEY}: item 1 must be a string, not a number',
      f'the data entry "args" in the referenced secret {KEY}: item 2 must be a string, not a map']),
    ({**ECR_DATA, "args": f'["{SECRET_VALUE}'}, True,
     [f'the data entry "args" in the referenced secret {KEY} is not a YAML (or JSON) list at line 1 column 43']),
    ({**ECR_DATA, "env": f"- name: 1BAD\n  value: {SECRET_VALUE}\n- name: A\n  value: 3\n- name: A\n  value: x\n"
                         f"- {SECRET_VALUE}\n- name: B\n  value: y\n  valueFrom: z\n"}, True,
     [f"the data entry \"env\" in the referenced secret {KEY}: item 0: \"name\" must be an environment variable "
      "name (letters, digits and '_', not starting with a digit)",
      f'the data entry "env" in the referenced secret {KEY}: item 1: "value" must be a string',
      f'the data entry "env" in the referenced secret {KEY}: item 2: the name "A" is given more than once',
      f'the data entry "env" in the referenced secret {KEY}: item 3 must be a map with "name" and "value", not a '
      "string",
      f'the data entry "env" in the referenced secret {KEY}: item 4 has the field "valueFrom": only "name" and '
      '"value" are allowed']),
    ({**ECR_DATA, "apiVersion": "v1"}, True,
     [f'the data entry "apiVersion" in the referenced secret {KEY} must be one of '
      '"credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1", '
      '"credentialprovider.kubelet.k8s.io/v1alpha1"']),
    ({**ECR_DATA, "defaultCacheDuration": "12 hours"}, True,
     [f'the data entry "defaultCacheDuration" in the referenced secret {KEY} is not a Go duration '
      '(e.g. "12h", "30m")']),
    ({**ECR_DATA, "defaultCacheDuration": "-1h"}, True,
     [f'the data entry "defaultCacheDuration" in the referenced secret {KEY} must not be negative']),
    ({**ECR_DATA, "env": b"\xff\xfe"}, True,
     [f'the data entry "env" in the referenced secret {KEY} is not valid UTF-8']),
    ({**ECR_DATA, "args": '["a\\u0000b"]'}, True,
     [f'the data entry "args" in the referenced secret {KEY}: item 0 contains a NUL character']),
])
def test_every_problem_is_named_with_the_secret_and_key_never_a_value(data, immutable, wanted):
    assert errors(provider_secret(data, immutable)) == [HEAD + w for w in wanted]


def test_the_seed_copy_need_not_be_immutable_and_reading_a_bad_secret_says_why_without_values():
    assert errors(provider_secret(ECR_DATA, None), require_immutable=False) == []
    bad = provider_secret({**ECR_DATA, "env": f"- name: X\n  value: [{SECRET_VALUE}]\n"})
    with pytest.raises(ValueError) as raised:
        upstream_auth(bad, ECR)
    assert '"value" must be a string' in str(raised.value) and SECRET_VALUE not in str(raised.value)


def test_only_the_type_makes_a_plugin_secret():
    """Keys alone do not: an Opaque Secret with name and image is Gardener's and fails as such."""
    sec = provider_secret({"name": "p", "image": "busybox"}, type_="Opaque")
    assert secret_format(sec) != FORMAT_CREDENTIAL_PROVIDER
    assert any('missing "username" data entry' in e for e in errors(sec))


def test_the_shoot_admission_follows_the_reference_to_a_plugin():
    shoot = {"metadata": {"namespace": "garden-dev"},
             "spec": {"resources": [{"name": "ecr", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                    "name": "ecr-v1"}}]}}
    config = decode_and_default({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                                 "caches": [{"upstream": ECR, "secretReferenceName": "ecr"}]},
                                FieldPath("providerConfig"))
    found, errs = check_credentials(shoot, config, FieldPath("providerConfig"),
                                    lambda ns, name: provider_secret(ECR_DATA) if name == "ecr-v1" else None)
    assert errs == [] and isinstance(found[ECR], cp.CredentialProvider)


# --- shell words -----------------------------------------------------------------------------------------------
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
def test_sh_quote_is_one_word_with_exactly_the_value(value):
    assert shlex.split(sh_quote(value)) == [value]


# --- rendering -------------------------------------------------------------------------------------------------
def _cache(upstream: str = ECR, tls: bool = False):
    return decode_and_default({"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
                               "caches": [{"upstream": upstream, "secretReferenceName": "ecr",
                                           "http": {"tls": tls}}]}, FieldPath("providerConfig")).caches[0]


def _objects(provider):
    objects = render_cache(_cache(), provider, None, RenderOptions())
    secret = next(o.obj for o in objects if o.kind == "Secret")
    sts = next(o.obj for o in objects if o.kind == "StatefulSet")
    return objects, {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}, sts


def test_what_a_plugin_cache_is_made_of():
    provider = upstream_auth(provider_secret(ECR_DATA), ECR)
    objects, files, sts = _objects(provider)
    assert sorted(files) == ["config.yml", "credential-helper", "credential-provider.awk", "credential-provider.conf"]
    assert yaml.safe_load(files["config.yml"])["proxy"]["exec"] == {"command": c.CREDENTIAL_HELPER_PATH,
                                                                  "lifetime": "5s"}
    pod = sts["spec"]["template"]["spec"]
    init = pod["initContainers"]
    assert [x["name"] for x in init] == ["credential-provider"]
    assert init[0]["image"] == ECR_DATA["image"]
    assert init[0]["command"] == ["cp", "/bin/ecr-credential-provider",
                                  "/credential-provider/bin/ecr-credential-provider"]
    assert init[0]["securityContext"] == pod["containers"][0]["securityContext"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["credential-provider-bin"] == {"name": "credential-provider-bin", "readOnly": True,
                                                 "mountPath": "/credential-provider/bin"}
    assert mounts["credential-provider-state"]["mountPath"] == "/credential-provider/state"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["credential-provider-state"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    items = {i["key"]: i.get("mode") for i in volumes["config-volume"]["secret"]["items"]}
    assert items == {"config.yml": None, "credential-helper": 0o755, "credential-provider.awk": None,
                     "credential-provider.conf": 0o440}
    # the plugin's secrets are only in the conf file (mode 0440), never in an object's spec, the helper or config.yml
    for obj in objects:
        if obj.kind != "Secret":
            assert SECRET_VALUE not in obj.text
    for name, text in files.items():
        assert (SECRET_VALUE in text) == (name == "credential-provider.conf"), name
    assert f"export AWS_SECRET_ACCESS_KEY={sh_quote(SECRET_VALUE)}" in files["credential-provider.conf"]


@pytest.mark.parametrize("tls", [True, False])
def test_a_plugin_cache_behind_the_front(tls):
    """`run --front-image` and a plugin Secret in one Pod: the plugin is distribution's (the init container, its
    two emptyDirs mounted in the registry-cache container, the helper in proxy.exec with its lifetime); the front
    serves the cache's port (with the cache's certificate when TLS is on) and mounts neither the plugin's
    directories nor the config Secret. distribution listens on the Pod's loopback only, without TLS."""
    provider = upstream_auth(provider_secret(ECR_DATA), ECR)
    cache = _cache(tls=tls)
    keypair = generate_server_cert(generate_ca(), "registry-x", ["registry-x"], ["10.0.0.1"]) if tls else None
    objects = render_cache(cache, provider, keypair, RenderOptions(front_image="registry-cache:front"))
    secret = next(o.obj for o in objects if o.kind == "Secret" and "config.yml" in o.obj["data"])
    files = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(files) == ["config.yml", "credential-helper", "credential-provider.awk", "credential-provider.conf"]
    assert files["config.yml"] == render_config_yml(cache, front=True, provider=True)
    config_yml = yaml.safe_load(files["config.yml"])
    assert config_yml["http"]["addr"] == f"127.0.0.1:{c.BACKEND_PORT}" and "tls" not in config_yml["http"]
    assert config_yml["proxy"]["exec"] == {"command": c.CREDENTIAL_HELPER_PATH, "lifetime": "5s"}
    assert files["credential-helper"] == render_provider_helper(ECR, provider)

    pod = next(o.obj for o in objects if o.kind == "StatefulSet")["spec"]["template"]["spec"]
    assert [x["name"] for x in pod["initContainers"]] == [c.CREDENTIAL_PROVIDER_INIT_CONTAINER]
    registry, front = pod["containers"]
    assert (registry["name"], front["name"]) == (c.CONTAINER_NAME, c.FRONT_CONTAINER_NAME)
    assert {m["name"]: m["mountPath"] for m in registry["volumeMounts"]} == {
        c.VOLUME_NAME: c.CACHE_PATH, "config-volume": "/etc/distribution",
        c.CREDENTIAL_PROVIDER_BIN_VOLUME: c.CREDENTIAL_PROVIDER_BIN_DIR,
        c.CREDENTIAL_PROVIDER_STATE_VOLUME: c.CREDENTIAL_PROVIDER_STATE_DIR}
    assert {m["name"]: m["mountPath"] for m in front["volumeMounts"]} == (
        {c.VOLUME_NAME: c.CACHE_PATH, "certs-volume": c.FRONT_CERTS_PATH} if tls else {c.VOLUME_NAME: c.CACHE_PATH})
    assert [p["containerPort"] for p in front["ports"]] == [c.SERVER_PORT]
    assert [p["containerPort"] for p in registry["ports"]] == [c.DEBUG_PORT]
    assert bool([a for a in front["args"] if a.startswith("--tls-")]) == tls
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"config-volume", c.CREDENTIAL_PROVIDER_BIN_VOLUME, c.CREDENTIAL_PROVIDER_STATE_VOLUME,
                            *(["certs-volume"] if tls else [])}
    items = {i["key"]: i.get("mode") for i in volumes["config-volume"]["secret"]["items"]}
    assert items == {"config.yml": None, "credential-helper": 0o755, "credential-provider.awk": None,
                     "credential-provider.conf": 0o440}
    for obj in objects:  # the plugin's secrets stay in the config Secret's 0440 file
        if obj.kind != "Secret":
            assert SECRET_VALUE not in obj.text
    # the same plugin cache without the front differs only by what the front changes
    alone = render_cache(cache, provider, keypair, RenderOptions())
    alone_pod = next(o.obj for o in alone if o.kind == "StatefulSet")["spec"]["template"]["spec"]
    assert alone_pod["initContainers"] == pod["initContainers"]
    assert [c_["name"] for c_ in alone_pod["containers"]] == [c.CONTAINER_NAME]


def test_a_cache_with_a_username_and_password_is_rendered_as_before():
    files = config_files(_cache(), Credentials("u", "p"))
    assert sorted(files) == ["config.yml", "credential-helper", "upstream-credentials"]
    assert "lifetime" not in files["config.yml"] and files["config.yml"] == render_config_yml(_cache())
    _, _, sts = _objects(Credentials("u", "p"))
    assert "initContainers" not in sts["spec"]["template"]["spec"]


def test_renewal_is_not_in_the_pod_spec():
    """What the plugin answers is not rendered: two renders of the same Secret are the same objects (the
    config Secret's content-hashed name, the StatefulSet), so nothing rolls the Pod while tokens renew. Another
    Secret (the reference swapped) is another config Secret and rolls it."""
    provider = upstream_auth(provider_secret(ECR_DATA), ECR)
    first, again = _objects(provider), _objects(provider)
    assert [o.text for o in first[0]] == [o.text for o in again[0]]
    other = upstream_auth(provider_secret({**ECR_DATA, "env": "- name: AWS_ACCESS_KEY_ID\n  value: v2\n"}), ECR)
    swapped = _objects(other)
    assert swapped[2]["spec"]["template"] != first[2]["spec"]["template"]


# --- the helper, run -------------------------------------------------------------------------------------------
BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="busybox (the cache image's sh and awk) is not installed")
APPLETS = ("sh", "awk", "cat", "date", "head", "mv", "rm", "sleep", "timeout", "tr", "wc", "printf", "echo", "env")

PLUGIN = r"""#!/bin/sh
# answers what the test put beside it: response.json, exit-code, stderr.txt, delay; records what it was given
here="${0%/*}/../plugin-control"
cat > "$here/request.json"
n=$(cat "$here/runs" 2>/dev/null || echo 0); echo $((n + 1)) > "$here/runs"
printf '%s\n' "$@" > "$here/args"
env > "$here/env"
[ -f "$here/delay" ] && sleep "$(cat "$here/delay")"
[ -f "$here/stderr.txt" ] && cat "$here/stderr.txt" >&2
[ -f "$here/response.json" ] && cat "$here/response.json"
exit "$(cat "$here/exit-code" 2>/dev/null || echo 0)"
"""

def response(password: str = SECRET_VALUE, cache: str | None = "10m", key: str = ECR, **extra) -> str:
    body = {"kind": "CredentialProviderResponse", "apiVersion": cp.API_VERSION_V1, "cacheKeyType": "Registry",
            "auth": {key: {"username": "AWS", "password": password}}, **extra}
    if cache is not None:
        body["cacheDuration"] = cache
    return json.dumps(body)


class Helper:
    """A cache's config Secret written out as the Pod mounts it, the plugin directory and the state directory."""

    def __init__(self, root: Path, data: dict, timeout: int | None = None):
        self.root = root
        self.config, self.bin, self.state, self.control = (root / d for d in ("config", "bin", "state",
                                                                             "plugin-control"))
        for d in (self.config, self.bin, self.state, self.control, root / "path"):
            d.mkdir()
        self.provider = upstream_auth(provider_secret(data), ECR)
        assert isinstance(self.provider, cp.CredentialProvider)
        files = config_files(_cache(), self.provider)
        if timeout is not None:
            files["credential-helper"] = render_provider_helper(ECR, self.provider, timeout=timeout)
        for name, text in files.items():
            (self.config / name).write_text(text)
        (self.config / "credential-helper").chmod(0o755)
        (self.config / "credential-provider.conf").chmod(0o440)
        self.plugin = self.bin / self.provider.name
        self.plugin.write_text(PLUGIN)
        self.plugin.chmod(0o755)
        for applet in APPLETS:
            os.symlink(BUSYBOX, root / "path" / applet)

    def tell(self, name: str, text: str) -> None:
        (self.control / name).write_text(text)

    def runs(self) -> int:
        return int((self.control / "runs").read_text()) if (self.control / "runs").exists() else 0

    def kept(self) -> tuple[int, int, int, int]:
        """(fetched, expires, usable until, renewed from) of the kept answer, in seconds since the epoch."""
        fetched, expires, usable, renew = map(int, (self.state / "answer").read_text().split("\n")[0].split())
        return fetched, expires, usable, renew

    def elapse(self, seconds: int) -> None:
        """As if ``seconds`` had passed since the kept answer and the last log line (busybox's sh runs its own
        date, whatever PATH says: the times are moved back instead)."""
        first, rest = (self.state / "answer").read_text().split("\n", 1)
        (self.state / "answer").write_text(" ".join(str(int(x) - seconds) for x in first.split()) + "\n" + rest)
        if (self.state / "logged").exists():
            (self.state / "logged").write_text(f"{int((self.state / 'logged').read_text()) - seconds}\n")

    def get(self, server: str = ECR) -> subprocess.CompletedProcess:
        env = {"PATH": str(self.root / "path"), "HOME": str(self.root),
               "REGISTRY_CACHE_CREDENTIAL_PROVIDER_BIN_DIR": str(self.bin),
               "REGISTRY_CACHE_CREDENTIAL_PROVIDER_STATE_DIR": str(self.state),
               "AWS_REGION": "from-the-container", "AWS_ACCESS_KEY_ID": "overridden"}
        done = subprocess.run([BUSYBOX, "sh", str(self.config / "credential-helper"), "get"], input=server,
                              capture_output=True, text=True, env=env, timeout=60)
        # the answer is a credential: never on stderr (the cache's log)
        assert SECRET_VALUE not in done.stderr and "fresh-token" not in done.stderr
        return done

    def lines(self, done: subprocess.CompletedProcess) -> list[dict[str, str]]:
        """The helper's lines on stderr; the controller reads each of them (extension/controller/providers.py)."""
        out = [_logfmt(x) for x in done.stderr.splitlines() if f"component={c.CREDENTIAL_PROVIDER_LOG_COMPONENT}" in x]
        read = parse_lines(done.stderr, ECR)
        assert [(x.event, x.reason, x.message, x.expires) for x in read] == \
            [(x["event"], x.get("reason", ""), x["msg"][:300], x.get("expires", "")) for x in out]
        return out


def _logfmt(line: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(line))


@pytest.fixture
def helper(tmp_path):
    if BUSYBOX is None:
        pytest.skip("busybox (the cache image's sh and awk) is not installed")
    return Helper(tmp_path, ECR_DATA)


@needs_busybox
def test_the_helper_runs_the_plugin_as_the_kubelet_does_and_keeps_its_answer(helper):
    helper.tell("response.json", response(cache="100s"))
    done = helper.get()
    assert done.returncode == 0, done
    assert json.loads(done.stdout) == {"ServerURL": ECR, "Username": "AWS", "Secret": SECRET_VALUE}
    request = json.loads((helper.control / "request.json").read_text())
    assert request == {"apiVersion": cp.API_VERSION_V1, "kind": "CredentialProviderRequest", "image": ECR}
    assert (helper.control / "args").read_text() == "get-credentials\n"
    env = dict(x.split("=", 1) for x in (helper.control / "env").read_text().splitlines() if "=" in x)
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRET_VALUE and env["AWS_ACCESS_KEY_ID"] == "AKIAIOSFODNN7EXAMPLE"
    assert env["AWS_REGION"] == "from-the-container"  # the container's environment is passed on
    [line] = helper.lines(done)
    assert (line["level"], line["event"], line["upstream"], line["provider"]) == \
        ("info", "renewed", ECR, "ecr-credential-provider")
    fetched, expires, usable, renew = helper.kept()
    assert (expires - fetched, usable, renew) == (100, expires - 5, fetched + 80)
    assert line["expires"] == dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # the answer kept only for the cache's user
    for path in helper.state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert SECRET_VALUE in (helper.state / "answer").read_text()

    # within 4/5 of the cacheDuration (and 5 s before its end): from memory, the plugin not asked; no line
    # within a minute of the last one, then one that says the credentials are in use and until when
    helper.elapse(30)
    again = helper.get()
    assert json.loads(again.stdout)["Secret"] == SECRET_VALUE and helper.runs() == 1
    assert helper.lines(again) == []
    helper.elapse(48)
    heartbeat = helper.get()
    assert helper.runs() == 1 and [(x["event"], x["expires"]) for x in helper.lines(heartbeat)] == \
        [("cached", dt.datetime.fromtimestamp(helper.kept()[1], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))]
    # renewed from 80 s on
    helper.tell("response.json", response(password="fresh-token", cache="100s"))
    helper.elapse(3)
    renewed = helper.get()
    assert json.loads(renewed.stdout)["Secret"] == "fresh-token" and helper.runs() == 2
    assert [x["event"] for x in helper.lines(renewed)] == ["renewed"]


@needs_busybox
@pytest.mark.parametrize("cache, default, kept", [("0s", "12h", 0), (None, "12h", 43200), (None, "0s", 0),
                                                  ("1h", "0s", 3600), ("3s", "0s", 3)])
def test_the_cache_duration_or_the_default(tmp_path, cache, default, kept):
    helper = Helper(tmp_path, {**ECR_DATA, "defaultCacheDuration": default})
    helper.tell("response.json", response(cache=cache))
    assert helper.get().returncode == 0
    fetched, expires, usable, renew = helper.kept()
    assert expires - fetched == kept
    assert usable == expires - c.CREDENTIAL_PROVIDER_LIFETIME_SECONDS
    assert renew == min(fetched + kept * 4 // 5, usable)
    helper.get()  # asked again at once when the answer is not kept longer than distribution keeps it
    assert helper.runs() == (1 if kept * 4 // 5 > 1 and kept > c.CREDENTIAL_PROVIDER_LIFETIME_SECONDS + 1 else 2)


@needs_busybox
def test_a_failing_plugin_is_named_and_the_credentials_of_before_are_used_while_valid(helper):
    helper.tell("response.json", response(cache="100s"))
    assert helper.get().returncode == 0
    helper.tell("exit-code", "3")
    helper.tell("stderr.txt", 'starting\nGetAuthorizationToken: dial tcp 10.0.0.1:443: connection refused "\\x\n\n')
    helper.elapse(90)  # due for renewal, still valid for distribution's 5 s (until 95)
    done = helper.get()
    assert done.returncode == 0 and json.loads(done.stdout)["Secret"] == SECRET_VALUE
    [line] = helper.lines(done)
    assert (line["level"], line["event"], line["reason"]) == ("error", "failed", "PluginFailed")
    assert line["msg"].startswith("the plugin exited with status 3: GetAuthorizationToken: dial tcp 10.0.0.1:443: "
                                  "connection refused x; the credentials it gave at "), line["msg"]
    helper.elapse(5)  # not valid for distribution's 5 s any more: no answer
    done = helper.get()
    assert done.returncode == 1
    assert done.stdout.startswith("credential-helper: the plugin exited with status 3: GetAuthorizationToken")
    assert [(x["event"], x["reason"]) for x in helper.lines(done)] == [("failed", "PluginFailed")]
    # once it answers again
    helper.tell("exit-code", "0")
    assert json.loads(helper.get().stdout)["Secret"] == SECRET_VALUE


@needs_busybox
@pytest.mark.parametrize("case, reason, says", [
    ("missing", "PluginMissing", "the plugin {bin}/ecr-credential-provider is not there (the init container copies "
                                 "it from its image)"),
    ("not-executable", "PluginMissing", "the plugin {bin}/ecr-credential-provider is not executable"),
    # (busybox runs a file it cannot exec as a script: "not found", 127)
    ("not-a-program", "PluginMissing", "the plugin {bin}/ecr-credential-provider cannot be run (exit status 127: "
                                       "not a program for this machine?): {bin}/ecr-credential-provider: 1: ?ELF???: "
                                       "not found"),
    ("garbage", "InvalidAnswer", "the answer is not a CredentialProviderResponse: not a JSON object"),
    ("wrong-version", "InvalidAnswer", "the answer is not a CredentialProviderResponse: apiVersion is not "
                                       "credentialprovider.kubelet.k8s.io/v1"),
    ("no-key-type", "InvalidAnswer", "the answer is not a CredentialProviderResponse: no cacheKeyType"),
    ("other-registry", "NoCredentials", "the answer has 1 auth entries, none for " + ECR),
    ("too-large", "InvalidAnswer", "the plugin's answer is larger than 64 KiB"),
    ("no-conf", "PluginFailed", "cannot read the plugin's arguments and environment ({config}/credential-provider.conf)"),
])
def test_each_failure_is_named_without_the_answer(helper, case, reason, says):
    if case == "missing":
        helper.plugin.unlink()
    elif case == "not-executable":
        helper.plugin.chmod(0o644)
    elif case == "not-a-program":
        helper.plugin.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 100)
    elif case == "garbage":
        helper.tell("response.json", f"password={SECRET_VALUE}")
    elif case == "wrong-version":
        helper.tell("response.json", response(apiVersion="credentialprovider.kubelet.k8s.io/v1alpha1"))
    elif case == "no-key-type":
        helper.tell("response.json", response(cacheKeyType=None))
    elif case == "other-registry":
        helper.tell("response.json", response(key="quay.io"))
    elif case == "too-large":
        helper.tell("response.json", response(padding="x" * 70000))
    elif case == "no-conf":
        (helper.config / "credential-provider.conf").unlink()
    done = helper.get()
    assert done.returncode == 1
    message = says.format(bin=helper.bin, config=helper.config)
    assert done.stdout == f"credential-helper: {message}\n"
    [line] = helper.lines(done)
    assert (line["level"], line["event"], line["reason"], line["msg"]) == ("error", "failed", reason, message)
    assert SECRET_VALUE not in done.stdout
    assert not (helper.state / "answer").exists()


@needs_busybox
def test_a_plugin_that_does_not_answer_in_time(tmp_path):
    helper = Helper(tmp_path, ECR_DATA, timeout=1)
    helper.tell("delay", "5")
    helper.tell("response.json", response())
    done = helper.get()
    assert done.returncode == 1 and done.stdout == "credential-helper: the plugin did not answer within 1s\n"
    assert [x["reason"] for x in helper.lines(done)] == ["PluginFailed"]


@needs_busybox
@pytest.mark.parametrize("pattern, chosen", [
    ("*.dkr.ecr.*.amazonaws.com", "glob"), (f"https://{ECR}/", "exact"), (f"{ECR}/team", None),
    (f"{ECR}:443", None), ("*.amazonaws.com", None), ("123456789012.dkr.ecr.eu-west-[0-9].amazonaws.com", "glob"),
])
def test_auth_entries_are_matched_as_the_kubelet_matches_them(helper, pattern, chosen):
    """The kubelet's URLsMatchStr: a glob per dot-separated part, the same port, no repository path (the
    request names the upstream alone); an exact host wins over a pattern."""
    body = json.loads(response())
    body["auth"] = {pattern: {"username": "AWS", "password": "glob" if pattern != f"https://{ECR}/" else "exact"}}
    if chosen == "glob":
        # also matches; the kubelet tries it after the other (in reverse sorted order)
        body["auth"]["*.*.ecr.*.amazonaws.com"] = {"username": "AWS", "password": "other-glob"}
    helper.tell("response.json", json.dumps(body))
    done = helper.get()
    if chosen is None:
        assert done.returncode == 1 and "none for" in done.stdout
    else:
        assert json.loads(done.stdout)["Secret"] == chosen
