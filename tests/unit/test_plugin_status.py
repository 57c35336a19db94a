"""How the controller learns how a cache's credential provider plugin fares (extension/controller/providers.py):
from the cache Pod's init container and the helper's lines in its log, never by running the plugin. Into the
Extension's condition UpstreamCredentialsValid-<upstream>, the metric behind RegistryCacheUpstreamCredentialsInvalid,
and the health condition for a plugin that never got into the Pod. The lines here are the helper's own
(tests/unit/test_credential_provider.py checks the helper writes what parse_lines reads)."""

from __future__ import annotations

from typing import Any

from extension import metrics
from extension.controller import conditions
from extension.controller.health import PLUGIN_HINT, caches_condition
from extension.controller.providers import PluginChecks, parse_lines
from extension.controller.upstreams import UpstreamChecks
from extension.runtime.kube import ApiError
from extension.upstreamcheck import (
    PLUGIN_ANSWERED,
    PLUGIN_FAILED,
    PLUGIN_INVALID_ANSWER,
    PLUGIN_MISSING,
    PLUGIN_NOT_ASKED,
    PluginTarget,
)

UP = "10.0.0.5:5000"
TARGET = PluginTarget(UP, "test-credential-provider", "registry.local/plugin:v1", "registry-10-0-0-5-5000")
NOW = "2026-01-01T00:00:00Z"


def line(event: str, msg: str, reason: str = "", level: str = "info", upstream: str = UP, expires: str = "") -> str:
    return (f'time="2026-01-01T00:00:00Z" level={level} msg="{msg}" component=registry-cache-credential-provider '
            f"upstream={upstream} provider=test-credential-provider event={event}"
            + (f" reason={reason}" if reason else "") + (f" expires={expires}" if expires else ""))


RENEWED = line("renewed", "the plugin answered with credentials kept for 30s, renewed from 2026-01-01T00:00:24Z",
               expires="2026-01-01T00:00:30Z")
DOWN = line("failed", "the plugin exited with status 1: test-credential-provider: getting a token: Post "
                      "http://10.0.0.9:8443/credentials: dial tcp 10.0.0.9:8443: connect: connection refused",
            "PluginFailed", "error")
ACCESS = '10.244.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "containerd/1.6"'


def pod(name: str, uid: str = "u1", init: dict[str, Any] | None = None, running: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if running else "Pending",
                              "conditions": [{"type": "Ready", "status": "True" if running else "False"}]}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "credential-provider", **init}]
    status["containerStatuses"] = [{"name": "registry-cache", "restartCount": 0,
                                    "state": {"running": {}} if running else {"waiting": {"reason": "PodInitializing"}}}]
    return {"metadata": {"name": name, "uid": uid, "labels": {"upstream-host": "10.0.0.5-5000",
                                                              "app.kubernetes.io/name": "registry-cache"}},
            "status": status}


class FakeShoot:
    """The two reads the checks make: the cache Pods and a container's log."""

    def __init__(self, pods: list[dict[str, Any]], logs: dict[str, str]):
        self.pods, self.logs = pods, logs
        self.asked: list[tuple[str, Any]] = []

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        self.asked.append(("list", (kind, namespace, label_selector)))
        return self.pods

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int | None = None,
                limit_bytes: int | None = None) -> str:
        self.asked.append(("log", (namespace, name, container, tail_lines, limit_bytes)))
        if isinstance(self.logs.get(name), Exception):
            raise self.logs[name]
        return self.logs.get(name, "")


def check(shoot: FakeShoot, checks: PluginChecks | None = None):
    checks = checks or PluginChecks(lambda ns: shoot)  # type: ignore[arg-type,return-value]
    [result] = checks("shoot--dev--p", [TARGET])
    return result, checks


def test_the_helpers_lines_are_read_and_nothing_else():
    text = "\n".join([ACCESS, RENEWED, 'level=info msg="component=registry-cache-credential-provider in a message"',
                      line("renewed", "another upstream's", upstream="quay.io"), DOWN, "\x00garbage=1"])
    lines = parse_lines(text, UP)
    assert [(x.event, x.reason) for x in lines] == [("renewed", ""), ("failed", "PluginFailed")]
    assert lines[0].expires == "2026-01-01T00:00:30Z"
    hostile = line("failed", "\x1b[31mred\x07" + "x" * 1000, "PluginFailed")
    [parsed] = parse_lines(hostile, UP)
    assert parsed.message.startswith("?[31mred?") and len(parsed.message) == 300


def test_the_last_line_of_each_pod_decides_and_reads_are_bounded():
    shoot = FakeShoot([pod("registry-10-0-0-5-5000-0")], {"registry-10-0-0-5-5000-0": f"{DOWN}\n{ACCESS}\n{RENEWED}"})
    result, _ = check(shoot)
    assert result.result == PLUGIN_ANSWERED
    assert result.detail == ("credential provider plugin test-credential-provider of Pod registry-10-0-0-5-5000-0: "
                             "renewed its credentials at 2026-01-01T00:00:00Z, its credentials valid until "
                             "2026-01-01T00:00:30Z")
    assert ("list", ("Pod", "kube-system", "app.kubernetes.io/name=registry-cache")) in shoot.asked
    assert ("log", ("kube-system", "registry-10-0-0-5-5000-0", "registry-cache", 2000, 2 << 20)) in shoot.asked

    shoot.logs["registry-10-0-0-5-5000-0"] = f"{RENEWED}\n{DOWN}"
    result, _ = check(shoot)
    assert result.result == PLUGIN_FAILED and "connection refused" in result.detail


def test_what_a_pod_said_is_kept_while_its_log_says_nothing_new_and_forgotten_with_the_pod():
    shoot = FakeShoot([pod("registry-10-0-0-5-5000-0")], {"registry-10-0-0-5-5000-0": DOWN})
    result, checks = check(shoot)
    assert result.result == PLUGIN_FAILED
    shoot.logs["registry-10-0-0-5-5000-0"] = ACCESS * 3  # busy, nothing needed credentials lately
    assert check(shoot, checks)[0].result == PLUGIN_FAILED
    shoot.pods = [pod("registry-10-0-0-5-5000-0", uid="u2")]  # a new Pod: what the old one said is gone
    result, _ = check(shoot, checks)
    assert result.result == PLUGIN_NOT_ASKED
    assert result.detail == ("no Pod of registry-10-0-0-5-5000 reports on its credential provider plugin "
                             "test-credential-provider yet")


def test_a_plugin_the_init_container_could_not_copy_is_missing():
    cp_failed = {"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "message": "cp: can't stat '/bin/nope': No such file "
                                                                        "or directory\n"}}}
    shoot = FakeShoot([pod("registry-10-0-0-5-5000-0", init=cp_failed, running=False)], {})
    result, _ = check(shoot)
    assert result.result == PLUGIN_MISSING
    assert result.detail == ("the init container credential-provider of Pod registry-10-0-0-5-5000-0 did not copy "
                             "the plugin: CrashLoopBackOff, exit 1: cp: can't stat '/bin/nope': No such file or "
                             "directory (image registry.local/plugin:v1)")
    assert not [a for a in shoot.asked if a[0] == "log"]
    pull = {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image "
                                                                           "\"registry.local/plugin:v1\""}}}
    shoot.pods = [pod("registry-10-0-0-5-5000-0", init=pull, running=False)]
    result, _ = check(shoot)
    assert result.result == PLUGIN_MISSING and "ImagePullBackOff (Back-off pulling image" in result.detail
    # and the health condition names it too, with what to do
    status, reason, message = caches_condition([{"metadata": {"name": "registry-10-0-0-5-5000"},
                                                 "spec": {"replicas": 1}, "status": {"readyReplicas": 0}}],
                                               [pod("registry-10-0-0-5-5000-0", init=cp_failed, running=False)])
    assert (status, reason) == ("False", "CachesNotReady")
    assert ("registry-10-0-0-5-5000-0: init container credential-provider: CrashLoopBackOff, restarted 4 times; "
            "last exit 1: cp: can't stat '/bin/nope': No such file or directory") in message
    assert PLUGIN_HINT in message


def test_of_two_replicas_the_worse_is_named():
    shoot = FakeShoot([pod("registry-10-0-0-5-5000-0"), pod("registry-10-0-0-5-5000-1", uid="u9")],
                      {"registry-10-0-0-5-5000-0": RENEWED,
                       "registry-10-0-0-5-5000-1": line("failed", "the plugin's answer is larger than 64 KiB",
                                                        "InvalidAnswer", "error")})
    result, _ = check(shoot)
    assert result.result == PLUGIN_INVALID_ANSWER and "Pod registry-10-0-0-5-5000-1" in result.detail
    assert "registry-10-0-0-5-5000-0" not in result.detail


def test_a_log_that_cannot_be_read_is_unknown_not_a_failure():
    shoot = FakeShoot([pod("registry-10-0-0-5-5000-0")],
                      {"registry-10-0-0-5-5000-0": ApiError("GET", "/api/v1/.../log", 403, {"message": "forbidden"})})
    result, _ = check(shoot)
    assert result.result == PLUGIN_NOT_ASKED and "cannot read the log of Pod registry-10-0-0-5-5000-0" in result.detail


def test_conditions_and_the_metric_the_alert_reads():
    shoot = FakeShoot([pod("registry-10-0-0-5-5000-0")], {"registry-10-0-0-5-5000-0": DOWN})
    checks = UpstreamChecks(checker=lambda targets, timeout, deadline: [],
                            plugin_checker=PluginChecks(lambda ns: shoot))  # type: ignore[arg-type,return-value]
    checks.set_targets("shoot--dev--p", [TARGET])
    results = checks.run("shoot--dev--p")
    assert results is not None
    [cond] = conditions.merge([], results, NOW)
    assert (cond["type"], cond["status"], cond["reason"], cond["codes"]) == (
        f"UpstreamCredentialsValid-{UP}", "False", "CredentialProviderFailed", ["ERR_INFRA_DEPENDENCIES"])
    assert cond["message"].startswith(f"upstream {UP}: credential provider plugin test-credential-provider of Pod "
                                      "registry-10-0-0-5-5000-0 at 2026-01-01T00:00:00Z: the plugin exited with "
                                      "status 1: ")
    assert "its token endpoint may be away" in cond["message"]
    valid = metrics.UPSTREAM_CREDENTIALS_VALID.labels("shoot--dev--p", UP)
    assert valid._value.get() == 0
    assert ("shoot--dev--p", UP) not in {tuple(s.labels.values()) for m in metrics.UPSTREAM_REACHABLE.collect()
                                        for s in m.samples}
    shoot.logs["registry-10-0-0-5-5000-0"] = RENEWED
    [cond] = conditions.merge([cond], checks.run("shoot--dev--p") or [], NOW)
    assert (cond["status"], cond["reason"]) == ("True", "CredentialProviderAnswered") and "codes" not in cond
    assert valid._value.get() == 1
    shoot.pods = []
    [cond] = conditions.merge([cond], checks.run("shoot--dev--p") or [], NOW)
    assert (cond["status"], cond["reason"]) == ("Unknown", "CredentialProviderNotAsked")
    assert ("shoot--dev--p", UP) not in {tuple(s.labels.values()) for m in
                                        metrics.UPSTREAM_CREDENTIALS_VALID.collect() for s in m.samples}
    checks.forget("shoot--dev--p")
