"""The caches' monitoring checked by Prometheus' own promtool (built by hack/promtool-bin.sh, cached).

- ``promtool check rules`` on the rule file of manifests/monitoring and on the rules the controller delivers
  (Gardener's PrometheusRule in the seed, the operator's in the shoot);
- ``promtool check config`` on manifests/monitoring/prometheus.yml (scrape jobs with Kubernetes SD, the rule file);
- ``promtool test rules`` of every alert and recording rule against sample series
  (tests/integration/monitoring/registry-cache.rules.test.yaml), and the same tests failing on rules changed in
  the ways a mistake would change them (a threshold, a ``for``, a label, a regex, a job selector, an aggregation):
  the tests can fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from extension.component import monitoring

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULE_TESTS = Path(__file__).parent / "monitoring" / "registry-cache.rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        pytest.skip("no Go toolchain to build promtool (hack/promtool-bin.sh)")
    proc = subprocess.run(["bash", str(REPO / "hack" / "promtool-bin.sh")], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"hack/promtool-bin.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_rule_file_checks(promtool):
    done = run(promtool, "check", "rules", str(MONITORING / monitoring.RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout + done.stderr


def test_the_rules_the_controller_delivers_check(promtool, tmp_path):
    labels = {"app.kubernetes.io/name": "registry-cache"}
    rules = [o for o in monitoring.gardener_objects("shoot--dev--a") if o["kind"] == "PrometheusRule"]
    rules += [o for o in monitoring.operator_objects("kube-system", labels, {"PrometheusRule"})]
    assert len(rules) == 2
    for i, rule in enumerate(rules):
        path = tmp_path / f"rule-{i}.yaml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        done = run(promtool, "check", "rules", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS: 5 rules found" in done.stdout + done.stderr


def test_the_prometheus_configuration_checks(promtool):
    done = run(promtool, "check", "config", monitoring.PROMETHEUS_FILE, cwd=MONITORING)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_and_recording_rule_against_sample_series(promtool):
    done = run(promtool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = yaml.safe_load(RULE_TESTS.read_text())
    alerts = {t["alertname"] for case in tested["tests"] for t in case.get("alert_rule_test", [])}
    records = {t["expr"] for case in tested["tests"] for t in case.get("promql_expr_test", [])}
    rules = [r for group in monitoring.rule_groups() for r in group["rules"]]
    assert alerts == {r["alert"] for r in rules if "alert" in r}
    assert records == {r["record"] for r in rules if "record" in r}


@pytest.mark.parametrize("change", [
    ("< 5", "< 50"),  # UsageCritical's threshold
    ("for: 1h", "for: 2h"),  # both volume alerts wait longer
    ("4 * 24 * 3600", "24 * 3600"),  # FullInFourDays looks one day ahead only
    ('statefulset=~"registry-.+"', 'statefulset=~".+"'),  # NotReady for any StatefulSet
    ("visibility: operator", "visibility: owner"),  # the controller alert's label
    ("sum by (upstream_host) (rate(registry_proxy_pulled_bytes_total[5m]))",
     "sum by (type) (rate(registry_proxy_pulled_bytes_total[5m]))"),  # recording per type, not per upstream
    ("for: 10m", "for: 1h"),  # CredentialsInvalid waits an hour
    ("max by (namespace, upstream) (registry_cache_upstream_credentials_valid) == 0",
     "max by (namespace, upstream) (registry_cache_upstream_credentials_valid) == 1"),  # inverted
    ("severity: info", "severity: warning"),  # an unreachable upstream as loud as refused credentials
    ("max by (namespace, upstream) (registry_cache_upstream_reachable) == 0",
     "max by (upstream) (registry_cache_upstream_reachable) == 0"),  # the shoot namespace lost
    # the controller's runtime
    ("max by (namespace, pod, informer) (max_over_time(registry_cache_informer_synced",
     "max by (namespace, pod, informer) (min_over_time(registry_cache_informer_synced"),  # a restart's zero fires
    ("max by (namespace, name) (leader_election_master_status",
     "min by (namespace, name) (leader_election_master_status"),  # a follower's zero is no leader
    ('leader_election_master_status{job="registry-cache-controller"}) > 1',
     "leader_election_master_status) > 1"),  # kube-controller-manager's leaders are not ours
    ("for: 2m", "for: 0m"),  # a handover's overlap of one scrape as two leaders
    ('deriv(workqueue_depth{job="registry-cache-controller"}[15m]) > 0',
     'deriv(workqueue_depth{job="registry-cache-controller"}[15m]) >= 0'),  # a queue stuck at a plateau
    ('min_over_time(workqueue_depth{job="registry-cache-controller"}[15m]) > 0',
     'max_over_time(workqueue_depth{job="registry-cache-controller"}[15m]) > 0'),  # a queue that empties
], ids=["threshold", "for", "horizon", "statefulset-regex", "label", "recording-grouping", "credentials-for",
        "credentials-expr", "unreachable-severity", "unreachable-grouping", "informer-restart", "no-leader-follower",
        "two-leaders-job", "two-leaders-for", "queue-plateau", "queue-empties"])
def test_the_rule_tests_fail_on_a_changed_rule(promtool, tmp_path, change):
    rules = (MONITORING / monitoring.RULES_FILE).read_text()
    assert change[0] in rules
    changed_dir = tmp_path / "manifests" / "monitoring"
    changed_dir.mkdir(parents=True)
    (changed_dir / monitoring.RULES_FILE).write_text(rules.replace(change[0], change[1]))
    tests_dir = tmp_path / "tests" / "integration" / "monitoring"
    tests_dir.mkdir(parents=True)
    shutil.copy(RULE_TESTS, tests_dir / RULE_TESTS.name)
    assert run(promtool, "check", "rules", str(changed_dir / monitoring.RULES_FILE)).returncode == 0
    done = run(promtool, "test", "rules", str(tests_dir / RULE_TESTS.name))
    assert done.returncode != 0, done.stdout + done.stderr
