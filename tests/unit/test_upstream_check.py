"""The upstream credential check's pure parts: challenges, token requests, conditions; and the alert rules
(extension/component/monitoring.py, in manifests/monitoring/) name the metrics the controller serves. The check
against real registries: tests/e2e/test_upstream_credentials.py; on the Extension: tests/integration/."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import yaml

from extension import metrics
from extension.component import monitoring
from extension.controller import conditions
from extension.upstreamcheck import INVALID, UNEXPECTED, UNREACHABLE, VALID, CheckResult, parse_challenge, token_url


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
