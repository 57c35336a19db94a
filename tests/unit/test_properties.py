"""No input that validation lets through can change the structure of what is rendered.

Usernames, passwords, URLs and names come back byte for byte when the rendered ``config.yml`` is parsed as
YAML, ``hosts.toml`` as TOML and the Kubernetes objects as YAML, whatever they contain: quotes, newlines,
``#``, ``{{``, ``: ``, unicode, control characters.
"""

import base64
import json
import subprocess
import tomllib

import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from api.field import Path
from api.secrets import SecretData, credentials_of, validate_upstream_secret
from api.validation import decode_and_default, validate_registry_config
from extension.component.certs import KeyPair
from extension.component.containerd import render_hosts_toml
from extension.component.objects import config_files, render_shoot
from extension.component.quoting import toml_quote, yaml_quote

from .helpers import PC, config

# Any unicode scalar value (no lone surrogates: they cannot be UTF-8 and so cannot be in a Secret or a file).
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
TRICKY = st.sampled_from(['"', "'", "\\", "\n", "\r\n", "#", "{{", "}}", "{%", ": ", "- ", "---", "...", "&a", "*a",
                          "!!python/object", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff",
                          "ü", "😀", "null", "true", "0x10", "1e3", "~", "[", "]", ",", "@", "`", "%"])
MIXED = st.lists(st.one_of(TRICKY, ANY_TEXT), max_size=6).map("".join)
FAKE_TLS = KeyPair("cert", "key")
SP = Path("spec", "extensions").index(0).child("providerConfig", "caches").index(0).child("secretReferenceName")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(MIXED)
@example("a\x00b")
@example("'; DROP")
@example("x\ny: 1")
@example("null\n")  # re.match with $ took it for plain: the same full-match bug as the node agent's
def test_yaml_quote_round_trips_anything(text):
    assert yaml.safe_load("k: " + yaml_quote(text)) == {"k": text}
    assert yaml.safe_load("- " + yaml_quote(text)) == [text]


@SETTINGS
@given(MIXED)
def test_toml_quote_round_trips_anything(text):
    assert tomllib.loads("k = " + toml_quote(text)) == {"k": text}
    assert tomllib.loads(f"[host.{toml_quote(text)}]\nx = 1") == {"host": {text: {"x": 1}}}


def _cache_with_credentials():
    return decode_and_default(config({"upstream": "quay.io", "secretReferenceName": "creds"}), PC).caches[0]


@SETTINGS
@given(username=MIXED, password=MIXED)
@example(username='u"\nproxy:\n  remoteurl: http://evil', password="x")
@example(username="u", password="p\n  username: root #")
@example(username="{{ 7*7 }}", password="{% raw %}")
def test_credentials_survive_the_credential_helper(username, password, tmp_path_factory):
    """config.yml holds no credentials; the rendered credential helper (run by /bin/sh, as distribution's
    proxy.exec runs it) answers with exactly the Secret's, from the rendered file beside it."""
    secret = SecretData("garden-dev", "creds", True, {"username": username.encode(), "password": password.encode()})
    assume(not validate_upstream_secret(secret, SP, "creds"))
    cache = _cache_with_credentials()
    files = config_files(cache, credentials_of(secret))
    parsed = yaml.safe_load(files["config.yml"])
    assert parsed["proxy"] == {"remoteurl": "https://quay.io", "ttl": "168h0m0s",
                               "exec": {"command": "/etc/distribution/credential-helper"}}
    assert set(parsed) == {"version", "log", "storage", "http", "health", "proxy"}
    workdir = tmp_path_factory.mktemp("helper")
    for name, text in files.items():
        (workdir / name).write_text(text, encoding="utf-8")
    (workdir / "credential-helper").chmod(0o755)
    done = subprocess.run([str(workdir / "credential-helper"), "get"], input="quay.io", capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"Username": username, "Secret": password}


@SETTINGS
@given(username=MIXED, password=MIXED)
def test_credentials_survive_the_config_secret(username, password):
    secret = SecretData("garden-dev", "creds", True, {"username": username.encode(), "password": password.encode()})
    assume(not validate_upstream_secret(secret, SP, "creds"))
    cfg = decode_and_default(config({"upstream": "quay.io", "secretReferenceName": "creds"}), PC)
    out = render_shoot(cfg, {"quay.io": credentials_of(secret)}, {"quay.io": FAKE_TLS})
    config_secret = next(o.obj for o in out.objects if o.name.startswith("registry-quay-io-config-"))
    text = base64.b64decode(config_secret["data"]["upstream-credentials"]).decode()
    assert json.loads(text) == {"Username": username, "Secret": password} and text.count("\n") == 1


# URLs validation accepts: http(s), a DNS-1123 host, an optional port, nothing else but an optional "/".
LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
HOST = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PORT = st.integers(1, 65535)
URL = st.builds(lambda scheme, host, port, slash: f"{scheme}://{host}{port}{slash}",
                st.sampled_from(["http", "https", "HTTP", "Https"]), HOST,
                st.one_of(st.just(""), PORT.map(lambda p: f":{p}")), st.sampled_from(["", "/"]))
UPSTREAM = st.builds(lambda host, port: f"{host}{port}", HOST, st.one_of(st.just(""), PORT.map(lambda p: f":{p}")))


@SETTINGS
@given(upstream=UPSTREAM, remote=URL, http_proxy=URL, https_proxy=URL,
       suffix=st.one_of(st.none(), LABEL.filter(lambda s: len(s) <= 54)),
       storage_class=st.one_of(st.none(), HOST), tls=st.booleans(), ha=st.booleans())
def test_urls_and_names_survive_every_object(upstream, remote, http_proxy, https_proxy, suffix, storage_class, tls, ha):
    cache = {"upstream": upstream, "remoteURL": remote, "proxy": {"httpProxy": http_proxy, "httpsProxy": https_proxy},
             "http": {"tls": tls}, "highAvailability": {"enabled": ha}}
    if suffix is not None:
        cache["serviceNameSuffix"] = suffix
    if storage_class is not None:
        cache["volume"] = {"storageClassName": storage_class}
    cfg = decode_and_default(config(cache), PC)
    assume(not validate_registry_config(cfg, PC))
    out = render_shoot(cfg, tls={upstream: FAKE_TLS})
    for obj in out.objects:
        assert yaml.safe_load(obj.text) == obj.obj
    config_secret = next(o.obj for o in out.objects if "-config-" in o.name)
    assert yaml.safe_load(base64.b64decode(config_secret["data"]["config.yml"]))["proxy"]["remoteurl"] == remote
    service = out.by_kind("Service")[0]
    assert service["metadata"]["annotations"] == {"upstream": upstream, "remote-url": remote,
                                                  "scheme": "https" if tls else "http"}
    assert service["metadata"]["name"] == (f"registry-{suffix}" if suffix else service["metadata"]["name"])
    sts = out.by_kind("StatefulSet")[0]
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "HTTP_PROXY", "value": http_proxy}, {"name": "HTTPS_PROXY", "value": https_proxy}]
    vct = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert vct.get("storageClassName") == storage_class
    hosts = tomllib.loads(render_hosts_toml(upstream, remote, "https://10.0.0.1:5000"))
    assert hosts["server"] == remote and list(hosts["host"]) == ["https://10.0.0.1:5000"]


@SETTINGS
@given(upstream=MIXED, server=MIXED, endpoint=MIXED)
def test_hosts_toml_structure_is_fixed_whatever_the_strings(upstream, server, endpoint):
    # stronger than validation needs: even unvalidated strings cannot add keys or tables
    parsed = tomllib.loads(render_hosts_toml(upstream, server, "https://" + endpoint))
    assert parsed["server"] == server
    assert list(parsed["host"]) == ["https://" + endpoint]
    assert set(parsed) == {"server", "host"}
