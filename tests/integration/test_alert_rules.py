"""The shipped Prometheus rules and Alertmanager routing (alerts/): Debian's promtool checks the
rules and runs their unit tests (each alert firing and staying quiet), amtool checks the
Alertmanager configuration and where each queue and severity is routed; every alert has its
labels, annotations and runbook section, and uses only metrics.md's metric names. No database,
no server: each check is one short run of promtool or amtool. A missing promtool or amtool fails
these tests (never skips them)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import prometheus
from tests.support.examples import PROJECT

pytestmark = [pytest.mark.prometheus]

ALERTS = PROJECT / "alerts"
RULES = ALERTS / "rules" / "syncwatch.rules.yml"
RULE_TESTS = ALERTS / "rules" / "syncwatch.rules.test.yml"
ALERTMANAGER = ALERTS / "alertmanager" / "alertmanager.yml"
RUNBOOKS = PROJECT / "docs" / "runbooks.md"
METRICS_MD = PROJECT.parent / "shared" / "spec" / "metrics.md"
#: syncwatch's own documentation of the metrics: the metrics it adds to the spec's
OWN_METRICS_MD = PROJECT / "docs" / "metrics.md"
RUNBOOK_URL = "https://github.com/syncwatch/syncwatch/blob/main/docs/runbooks.md#"

QUEUES = ("finance_ops", "legal_ops", "pmo", "integration_oncall")
SEVERITIES = ("page", "ticket", "info")
#: Metrics whose own `queue` label routes an alert that sets none.
QUEUE_LABELLED = ("syncwatch_findings_open", "syncwatch_finding_oldest_opened_timestamp_seconds")
#: A metric name in an expression; not the tail of a recording rule's name (`syncwatch:x_y`).
METRIC_NAME = re.compile(r"(?<![\w:])syncwatch_[a-z_]+")
RECORDED_NAME = re.compile(r"(?<![\w:])syncwatch:[a-z0-9_:]+")


def run(tool: str, *args: str | Path) -> str:
    """Run promtool or amtool (failing the test when it is not installed); assert it exits 0 and
    return what it printed on stdout."""
    result = subprocess.run(
        [prometheus.binary(tool), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"{tool} {' '.join(map(str, args))} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@cache
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "record" in rule]


def alert_id(rule: dict[str, Any]) -> str:
    labels = rule.get("labels", {})
    return f"{rule['alert']}[{labels.get('severity')},{labels.get('long_window', '')}]"


# --- promtool and amtool --------------------------------------------------------------------------


def test_promtool_check_rules_passes() -> None:
    output = run("promtool", "check", "rules", RULES)
    assert "SUCCESS" in output, output


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    # rule_files in the test file are relative to it
    output = run("promtool", "test", "rules", RULE_TESTS)
    assert "SUCCESS" in output, output


def test_the_unit_tests_cover_every_alert_firing_and_staying_quiet() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fired: list[dict[str, str]] = []
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                fired.append({**alert["exp_labels"], "alertname": check["alertname"]})
            if not check.get("exp_alerts"):
                quiet.add(check["alertname"])
    # every rule, each severity and window of the same alert included, fires in some test
    unseen = [
        alert_id(rule)
        for rule in alerting_rules()
        if not any(
            {**rule.get("labels", {}), "alertname": rule["alert"]}.items() <= labels.items()
            for labels in fired
        )
    ]
    assert unseen == [], "alerting rules that no test sees firing"
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - quiet == set(), "alerts that no test sees staying quiet"


def test_amtool_check_config_passes() -> None:
    output = run("amtool", "check-config", ALERTMANAGER)
    assert "SUCCESS" in output, output


def route(*labels: str) -> str:
    """The receivers (comma-separated) that Alertmanager sends an alert with ``labels`` to."""
    return run(
        "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels
    ).strip()


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("owner", [*(f"queue={queue}" for queue in QUEUES), "team=platform"])
def test_each_queue_and_severity_reaches_its_receiver(owner: str, severity: str) -> None:
    name = owner.split("=", 1)[1]
    expected = f"{name}-page" if severity == "page" else name
    assert route("alertname=SyncwatchTest", owner, f"severity={severity}") == expected


def test_auto_replay_alerts_reach_syncwatch_and_the_humans_of_their_queue() -> None:
    labels = [
        "alertname=SyncwatchFlowsStuckOnIntegrationFailure",
        "syncwatch_auto_replay=true",
        "flow_type=contract_onboarding",
        "stage=customer.synced",
        "queue=integration_oncall",
    ]
    assert route(*labels, "severity=info") == "syncwatch,integration_oncall"
    assert route(*labels, "severity=page") == "syncwatch,integration_oncall-page"


def test_alerts_without_an_owner_reach_the_platform_team() -> None:
    assert route("alertname=SyncwatchTest", "severity=ticket") == "platform"
    assert route("alertname=SyncwatchTest", "severity=page") == "platform-page"


def test_syncwatchs_receiver_is_the_alertmanager_webhook_with_a_key_from_a_file() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    (webhook,) = receivers["syncwatch"]["webhook_configs"]
    assert webhook["url"].endswith("/v1/alertmanager")
    assert webhook["send_resolved"] is True
    assert set(webhook["http_config"]["authorization"]) <= {"type", "credentials_file"}
    assert webhook["http_config"]["authorization"]["credentials_file"]
    # no secret in the file: credentials only ever come from files
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            authorization = hook.get("http_config", {}).get("authorization", {})
            assert "credentials" not in authorization, receiver["name"]
            assert ".example.invalid" in hook["url"], f"{receiver['name']}: not a placeholder"


# --- the rules themselves -------------------------------------------------------------------------


@pytest.mark.parametrize("rule", alerting_rules(), ids=alert_id)
def test_every_alert_has_severity_owner_and_annotations(rule: dict[str, Any]) -> None:
    labels = rule.get("labels", {})
    annotations = rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES
    if "queue" in labels:
        assert labels["queue"] in QUEUES
    elif "team" in labels:
        assert labels["team"] == "platform"
    else:
        # the queue comes from the metric
        assert any(name in rule["expr"] for name in QUEUE_LABELLED), "no queue and no team"
        assert "queue" not in re.findall(r"without \(([^)]*)\)", rule["expr"])
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"no {key}"
    assert "{{" in annotations["description"], "the description shows no value"
    assert annotations["runbook_url"] == RUNBOOK_URL + rule["alert"].lower()
    if labels.get("syncwatch_auto_replay") == "true":
        # the receiver needs flow_type and stage: they come from syncwatch_flows_stuck
        assert "syncwatch_flows_stuck" in rule["expr"]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", markdown, flags=re.MULTILINE):
        text = re.sub(r"[`*_]", "", heading).strip().lower()
        anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return anchors


def test_every_alert_has_a_runbook_section() -> None:
    anchors = github_anchors(RUNBOOKS.read_text(encoding="utf-8"))
    missing = {
        rule["alert"]
        for rule in alerting_rules()
        if rule["annotations"]["runbook_url"].split("#", 1)[1] not in anchors
    }
    assert missing == set(), f"no section in docs/runbooks.md for {sorted(missing)}"


def table_metric_names(path: Path) -> set[str]:
    """The metrics of the metrics tables of ``path``, with the series names of its histograms."""
    names = set()
    for name, kind in re.findall(
        r"^\|\s*`(syncwatch_[a-z_]+)`\s*\|\s*(\w+)\s*\|", path.read_text(), flags=re.M
    ):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@cache
def spec_metric_names() -> set[str]:
    """metrics.md's metrics (the spec's, and those docs/metrics.md adds: names may be gained,
    never renamed), with the series names of its histograms."""
    names = table_metric_names(METRICS_MD)
    assert len(names) > 10, f"could not read the metrics table of {METRICS_MD}"
    added = table_metric_names(OWN_METRICS_MD)
    assert added, f"could not read the table of added metrics of {OWN_METRICS_MD}"
    return names | added


def rule_texts() -> list[tuple[str, str]]:
    """(rule, text) for every expression and annotation (templates may query)."""
    texts = []
    for rule in [*recording_rules(), *alerting_rules()]:
        name = rule.get("alert") or rule["record"]
        texts.append((name, rule["expr"]))
        texts += [(name, text) for text in rule.get("annotations", {}).values()]
    return texts


def test_the_rules_use_only_metrics_md_metric_names() -> None:
    unknown = {
        (rule, metric)
        for rule, text in rule_texts()
        for metric in METRIC_NAME.findall(text)
        if metric not in spec_metric_names()
    }
    assert unknown == set(), f"metrics not in metrics.md: {sorted(unknown)}"


def test_every_recorded_series_the_rules_read_is_recorded() -> None:
    recorded = {rule["record"] for rule in recording_rules()}
    assert all(name.startswith("syncwatch:") for name in recorded)
    unknown = {
        (rule, name)
        for rule, text in rule_texts()
        for name in RECORDED_NAME.findall(text)
        if name not in recorded
    }
    assert unknown == set(), f"recording rules that do not exist: {sorted(unknown)}"


def test_the_yaml_files_ship_with_the_package() -> None:
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["alerts"]
    shipped = {path for pattern in patterns for path in ALERTS.glob(pattern)}
    assert {RULES, RULE_TESTS, ALERTMANAGER} <= shipped
