"""The upstream credential check's pure parts: challenges, token requests, which token realms get the
credentials, conditions; and the alert rules (extension/component/monitoring.py, in manifests/monitoring/) name
the metrics the controller serves. Which realms the check sends credentials to, against real HTTP(S) servers on
loopback (in this process). The check against real registries: tests/e2e/test_upstream_credentials.py; on the
Extension: tests/integration/."""

from __future__ import annotations

import base64
import http.server
import json
import re
import socket
import ssl
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from api.secrets import Credentials
from extension import metrics
from extension.component import certs, monitoring
from extension.controller import conditions
from extension.upstreamcheck import (
    INVALID,
    UNEXPECTED,
    UNREACHABLE,
    VALID,
    CheckResult,
    Target,
    check,
    parse_challenge,
    realm_allowed,
    token_url,
)


def test_parse_challenge():
    assert parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"') == (
        "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"})
    assert parse_challenge('Basic realm="private upstream"') == ("basic", {"realm": "private upstream"})
    assert parse_challenge('Bearer realm="https://x/t?a=1", service=svc, scope="repository:a/b:pull"') == (
        "bearer", {"realm": "https://x/t?a=1", "service": "svc", "scope": "repository:a/b:pull"})
    assert parse_challenge(None) is None and parse_challenge("") is None


def test_token_url_as_docker_login():
    url = token_url("https://auth.example/token?client=x", "registry.example", "robot")
    parts = urlsplit(url)
    assert parts.netloc == "auth.example" and parse_qs(parts.query) == {
        "client": ["x"], "service": ["registry.example"], "account": ["robot"]}


def test_conditions_per_cache_and_transitions():
    now, later = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
    other = {"type": "SomethingElse", "status": "True", "lastTransitionTime": now, "lastUpdateTime": now,
             "reason": "x", "message": "y"}
    first = conditions.merge([other], [CheckResult("quay.io", VALID, 200, "GET /v2/ with the token at quay.io: 200"),
                                       CheckResult("a.io:5000", UNREACHABLE, None, "GET /v2/ at a.io:5000: no answer")],
                             now)
    assert [c["type"] for c in first] == ["SomethingElse", "UpstreamCredentialsValid-a.io:5000",
                                          "UpstreamCredentialsValid-quay.io"]
    quay = first[2]
    assert quay["status"] == "True" and quay["reason"] == "CredentialsAccepted" and "codes" not in quay
    assert quay["message"].startswith("upstream quay.io: GET /v2/ with the token at quay.io: 200")
    assert first[1]["status"] == "Unknown" and first[1]["codes"] == ["ERR_INFRA_DEPENDENCIES"]
    # the same state again: lastTransitionTime kept, nothing new to write
    again = conditions.merge(first, [CheckResult("quay.io", VALID, 200, "GET /v2/ with the token at quay.io: 200"),
                                     CheckResult("a.io:5000", UNREACHABLE, None, "GET /v2/ at a.io:5000: no answer")],
                             later)
    assert again[2]["lastTransitionTime"] == now and again[2]["lastUpdateTime"] == later
    assert conditions.same_state(first, again)
    # refused, and a cache gone: its condition goes
    refused = conditions.merge(again, [CheckResult("quay.io", INVALID, 401, "GET token at quay.io: 401")], later)
    assert [c["type"] for c in refused] == ["SomethingElse", "UpstreamCredentialsValid-quay.io"]
    assert refused[1]["status"] == "False" and refused[1]["lastTransitionTime"] == later
    assert refused[1]["codes"] == ["ERR_INFRA_UNAUTHORIZED"] and "update the credentials Secret" in refused[1]["message"]
    assert not conditions.same_state(again, refused)
    odd = conditions.merge([], [CheckResult("b.io", UNEXPECTED, 302, "GET /v2/ at b.io: 302")], now)[0]
    assert odd["status"] == "Unknown" and odd["reason"] == "UnexpectedAnswer"


def test_alert_rules_name_the_served_metrics():
    served = {metrics.UPSTREAM_CREDENTIALS_VALID._name, metrics.UPSTREAM_REACHABLE._name}
    rules = [r for r in monitoring.controller_rules() if re.search(r"registry_cache_upstream_", r["expr"])]
    assert {r["alert"] for r in rules} == {"RegistryCacheUpstreamCredentialsInvalid", "RegistryCacheUpstreamUnreachable"}
    # in the rule file for a Prometheus and in the controller's PrometheusRule for an operator
    rule_file = yaml.safe_load((monitoring.MANIFESTS_DIR / monitoring.RULES_FILE).read_text())
    operator = list(yaml.safe_load_all((monitoring.MANIFESTS_DIR / monitoring.OPERATOR_FILE).read_text()))[1]
    for groups in (rule_file["groups"], operator["spec"]["groups"]):
        assert {r["alert"] for r in rules} <= {r.get("alert") for g in groups for r in g["rules"]}
    for rule in rules:
        names = set(re.findall(r"registry_cache_[a-z_]+", rule["expr"]))
        assert names and names <= served, rule["expr"]
        assert set(re.findall(r"\$labels\.(\w+)", str(rule["annotations"]))) <= {"namespace", "upstream"}


# --- which token realms get the credentials: distribution 3.1's rule, https for an https remote ----------------

@pytest.mark.parametrize("remote, realm, allowed", [
    ("https://registry-1.docker.io", "https://auth.docker.io/token", True),  # Docker Hub: same eTLD+1
    ("https://quay.io", "https://quay.io/v2/auth", True),
    ("https://europe-docker.pkg.dev", "https://europe-docker.pkg.dev/v2/token", True),
    ("https://Registry.Example.com", "https://registry.example.com/token", True),  # case-insensitive
    ("https://registry.example.com", "https://auth.example.com/token", True),
    ("https://registry.example.com", "https://evil.example.net/token", False),  # another domain
    ("https://registry.example.com", "https://example.com.evil.net/token", False),
    ("https://a.github.io", "https://b.github.io/token", False),  # a public suffix's (private section) tenants
    ("https://registry.example.com", "http://registry.example.com/token", False),  # clear text for an https remote
    ("https://registry.example.com", "http://auth.example.com/token", False),
    ("http://registry.example.com", "http://auth.example.com/token", True),  # an http remote: as distribution
    ("http://registry.example.com", "https://registry.example.com/token", True),
    ("https://10.0.0.1:5000", "https://10.0.0.1:5000/token", True),  # an address: exactly that host and port
    ("https://10.0.0.1:5000", "https://10.0.0.1:5001/token", False),
    ("https://10.0.0.1", "https://10.0.0.2/token", False),
    ("https://localhost:5000", "https://localhost:5001/token", False),
    ("https://registry.example.com", "https://10.0.0.1/token", False),
    ("https://registry.example.com:5000", "https://registry.example.com/token", True),  # same domain
    ("https://co.uk", "https://other.co.uk/token", False),  # no registrable domain: only itself
    ("https://registry.example.com", "/token", False),  # not absolute
    ("https://registry.example.com", "ftp://registry.example.com/token", False),
    ("https://registry.example.com", "https://user@auth.example.com/token", True),  # user info is not the host
])
def test_realm_allowed(remote, realm, allowed):
    assert realm_allowed(remote, realm) is allowed


PASSWORD = "s3cret-Pa55"
TOKEN = "token-for-the-registry"


class _Registry(http.server.BaseHTTPRequestHandler):
    """A registry with token auth (``/v2/`` and its token service ``/token``), or a token service alone; it
    records every request: (scheme, path, the credentials in its Authorization header, if any)."""

    def do_GET(self):
        server = self.server
        tls = isinstance(self.connection, ssl.SSLSocket)
        auth = self.headers.get("Authorization") or ""
        basic = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else None
        server.seen.append(("https" if tls else "http", self.path.split("?")[0], basic))
        if self.path.startswith("/token"):
            ok = basic == f"robot:{PASSWORD}"
            self._answer(200 if ok else 401, {"token": TOKEN} if ok else {})
        elif auth == f"Bearer {TOKEN}":
            self._answer(200, {})
        else:
            self._answer(401, {}, {"WWW-Authenticate": f'Bearer realm="{server.realm}",service="registry.test"'})

    def _answer(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    """Plain HTTP and TLS on one port, as the first byte of a connection says (a TLS handshake starts with
    0x16): a realm of the same host and port over http reaches it, and so shows what was sent in clear text."""

    daemon_threads = True

    def __init__(self, host, context, realm_path="/token"):
        super().__init__((host, 0), _Registry)
        self.context, self.seen = context, []
        self.realm = f"https://{host}:{self.server_address[1]}{realm_path}"

    def get_request(self):
        sock, address = super().get_request()
        sock.settimeout(5)
        if sock.recv(1, socket.MSG_PEEK) == b"\x16":
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, address

    def url(self, scheme):
        return f"{scheme}://{self.server_address[0]}:{self.server_address[1]}"


@pytest.fixture
def servers(tmp_path):
    """A registry on 127.0.0.1 and a token service of another host on 127.0.0.2, both with a certificate of a
    CA the check trusts (and nothing else)."""
    ca = certs.generate_ca("upstream-check-test")
    pair = certs.generate_server_cert(ca, "registry", ["localhost"], ["127.0.0.1", "127.0.0.2"])
    (tmp_path / "tls.crt").write_text(pair.cert_pem)
    (tmp_path / "tls.key").write_text(pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    running = [_Server(host, context) for host in ("127.0.0.1", "127.0.0.2")]
    for server in running:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ssl.create_default_context(cadata=ca.cert_pem)
    yield running[0], running[1], client
    for server in running:
        server.shutdown()
        server.server_close()


def _check(registry, scheme, client):
    return check(Target("registry.test", registry.url(scheme), Credentials("robot", PASSWORD)), timeout=5,
                 ssl_context=client)


def test_the_credentials_go_to_the_registrys_own_realm(servers):
    registry, _, client = servers
    result = _check(registry, "https", client)
    assert (result.result, result.http_status) == (VALID, 200), result
    assert registry.seen == [("https", "/v2/", None), ("https", "/token", f"robot:{PASSWORD}"), ("https", "/v2/", None)]
    # an http remote may name an http realm of its own host
    registry.seen.clear()
    registry.realm = registry.url("http") + "/token"
    assert _check(registry, "http", client).result == VALID
    assert ("http", "/token", f"robot:{PASSWORD}") in registry.seen


def test_the_credentials_never_go_to_another_hosts_realm(servers):
    registry, elsewhere, client = servers
    registry.realm = elsewhere.realm  # https://127.0.0.2:<port>/token
    result = _check(registry, "https", client)
    assert elsewhere.seen == []  # not even asked
    assert (result.result, result.http_status) == (UNEXPECTED, 401), result
    assert f"token realm {elsewhere.url('https')}" in result.detail and PASSWORD not in result.detail
    assert all(basic is None for _, _, basic in registry.seen)


def test_the_credentials_never_go_in_clear_text_for_an_https_remote(servers):
    registry, _, client = servers
    registry.realm = registry.url("http") + "/token"  # the same host and port, over http
    result = _check(registry, "https", client)
    assert registry.seen == [("https", "/v2/", None)]  # nothing over http
    assert (result.result, result.http_status) == (UNEXPECTED, 401), result
    assert f"token realm {registry.url('http')}" in result.detail and "https URL" in result.detail
