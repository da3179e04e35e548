"""GET /metrics (metrics.md) and the running totals behind it: every metric of the contract is
exposed with its labels; the deadline counter counts each flow once, when decided, and never
revises it; the duration histogram's buckets include each deadline and carry exemplars pointing at
the flow's trace; a change of buckets rebuilds the totals; the key and exemplar settings; bounded
labels of the process's own counters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.db import Database
from core.errors import ConfigError
from core.settings import load_settings
from probes.flowtypes import DEFAULT_FLOW_TYPES, configured_flow_types
from probes.outcomes import duration_buckets
from probes.runner import run_until_idle
from probes.traceids import trace_id
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.builders import make_event

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"

#: metrics.md: every name with its labels
CONTRACT = {
    "syncwatch_events_received_total": {"source", "type", "outcome"},
    "syncwatch_source_last_event_timestamp_seconds": {"source"},
    "syncwatch_source_lag_seconds_bucket": {"source", "le"},
    "syncwatch_flows_deadline_total": {"flow_type", "outcome"},
    "syncwatch_flow_duration_seconds_bucket": {"flow_type", "le"},
    "syncwatch_flows_open": {"flow_type"},
    "syncwatch_flows_stuck": {"flow_type", "stage"},
    "syncwatch_revenue_at_risk": {"currency"},
    "syncwatch_findings_open": {"queue", "kind"},
    "syncwatch_finding_oldest_opened_timestamp_seconds": {"queue"},
    "syncwatch_uncorrelated_events": set(),
    "syncwatch_dead_letters": {"reason"},
    "syncwatch_replays_total": {"outcome"},
    "syncwatch_probe_last_success_timestamp_seconds": set(),
    "syncwatch_probe_lag_events": set(),
    "syncwatch_probe_cycle_duration_seconds_bucket": {"le"},
    # gained by syncwatch (docs/metrics.md): the alert rules' settings, and exact auto-replays
    "syncwatch_slo_objective": {"flow_type"},
    "syncwatch_slo_min_decided_flows": set(),
    "syncwatch_source_silent_after_seconds": {"source"},
    "syncwatch_flows_stuck_on_integration_failure": {"flow_type", "stage"},
}


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def onboarding(correlation: str, stages: dict[str, float], value: str = "1000.00") -> list[Any]:
    contract = make_event("contract.signed", time=at(0), correlationid=correlation)
    contract["data"] = {**contract["data"], "contract_value": value}
    return [contract] + [
        make_event(stage, time=at(hours), correlationid=correlation)
        for stage, hours in stages.items()
    ]


ALL_STAGES = {
    "customer.synced": 1,
    "project.created": 2,
    "billing_plan.created": 3,
    "project.activated": 10,
}


@pytest.fixture
def client(settings: Any, database: Database) -> Iterator[TestClient]:
    now = {"value": T0 + timedelta(days=30)}
    app = create_app(settings, database, clock=lambda: now["value"])
    app.state.test_now = now
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, keys: dict[str, str], events: list[Any]) -> None:
    answer = client.post("/v1/events", json=events, headers=bearer(keys["ingest"]))
    assert answer.status_code == 200, answer.text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
def configured(tmp_path: Path, database_url: str, database: Database) -> Iterator[TestClient]:
    """A client whose settings configure the SLO and the sources."""
    settings = load_settings(
        {
            "data_dir": tmp_path,
            "database_url": database_url,
            "slo": {
                "objectives": {"milestone_billing": 0.99},
                "default_objective": 0.9,
                "min_decided_flows": 20,
            },
            "sources": {
                "clm/ironclad": {"silent_after": "6h"},
                "crm/never": {"silent_after": "1h"},
                "erp/netsuite": {},
            },
        }
    )
    app = create_app(settings, database, clock=lambda: T0 + timedelta(days=30))
    with TestClient(app) as test_client:
        yield test_client


def test_every_metric_of_the_contract_is_exposed_with_its_labels(
    configured: TestClient, keys: dict[str, str], database: Database
) -> None:
    client = configured
    post(client, keys, onboarding("M-1", ALL_STAGES) + onboarding("M-2", {}))
    post(client, keys, [{"not": "an event"}])  # a dead letter
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(days=30))
    client.app.state.instruments.probe_cycle_finished(0.2)  # type: ignore[attr-defined]
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            seen.setdefault(sample.name, set()).update(sample.labels)
    for name, labels in CONTRACT.items():
        assert name in seen, f"{name} missing from /metrics"
        assert seen[name] == labels, name
    assert all(name.startswith("syncwatch_") for name in seen)
    assert not any(name.endswith("_created") for name in seen)


def test_state_gauges_equal_the_kpis_at_the_same_instant(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    post(client, keys, onboarding("S-1", ALL_STAGES))
    post(client, keys, onboarding("S-2", {"customer.synced": 1}, value="2500.50"))
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(days=30))
    found = samples(client.get("/metrics").text)
    kpis = client.get("/v1/kpis", headers=bearer(keys["viewer"])).json()
    onboarding_kpis = kpis["flows"]["contract_onboarding"]
    assert value(found, "syncwatch_flows_open", flow_type="contract_onboarding") == 1
    assert onboarding_kpis["open"] == 1
    assert (
        value(
            found, "syncwatch_flows_stuck", flow_type="contract_onboarding", stage="project.created"
        )
        == onboarding_kpis["stuck_by_stage"]["project.created"]
        == 1
    )
    assert value(found, "syncwatch_revenue_at_risk", currency="EUR") == 2500.50
    assert kpis["revenue_at_risk"] == {"EUR": "2500.50"}
    assert value(found, "syncwatch_findings_open", queue="pmo", kind="stuck") == 1
    oldest = value(found, "syncwatch_finding_oldest_opened_timestamp_seconds", queue="pmo")
    as_of = datetime.fromisoformat(kpis["as_of"].replace("Z", "+00:00"))
    assert oldest == as_of.timestamp() - kpis["exceptions"]["pmo"]["oldest_age_seconds"]
    assert (
        "syncwatch_finding_oldest_opened_timestamp_seconds",
        frozenset({("queue", "legal_ops")}),
    ) not in found


def test_the_deadline_counter_counts_once_when_decided_and_is_never_revised(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    post(client, keys, onboarding("D-1", {}))  # deadline T0 + 72 h
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(hours=50))
    found = samples(client.get("/metrics").text)
    missed = ("syncwatch_flows_deadline_total", "contract_onboarding", "missed")
    assert value(found, missed[0], flow_type=missed[1], outcome="missed") == 0  # undecided
    # the deadline passes with no event: the sweep decides "missed", once, however often it runs
    for hours in (73, 80, 90):
        run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(hours=hours))
    found = samples(client.get("/metrics").text)
    assert value(found, missed[0], flow_type=missed[1], outcome="missed") == 1
    # a late correction: the ERP's events say the flow was complete at 60 h after all
    post(
        client,
        keys,
        [make_event(t, time=at(h), correlationid="D-1") for t, h in ALL_STAGES.items()][:3],
    )
    post(client, keys, [make_event("project.activated", time=at(60), correlationid="D-1")])
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(hours=100))
    found = samples(client.get("/metrics").text)
    assert value(found, missed[0], flow_type=missed[1], outcome="missed") == 1
    assert value(found, missed[0], flow_type=missed[1], outcome="met") == 0
    # ... which /v1/kpis shows: the flow met its deadline
    kpis = client.get(
        "/v1/kpis",
        params={"as_of": (T0 + timedelta(hours=100)).isoformat(), "window": "7d"},
        headers=bearer(keys["viewer"]),
    ).json()
    assert kpis["flows"]["contract_onboarding"]["met"] == 1
    # the duration was recorded once, when the completion was seen
    assert (
        value(found, "syncwatch_flow_duration_seconds_count", flow_type="contract_onboarding") == 1
    )
    assert (
        value(found, "syncwatch_flow_duration_seconds_sum", flow_type="contract_onboarding")
        == 60 * 3600
    )


def test_duration_buckets_include_each_deadline_and_carry_exemplars(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    post(client, keys, onboarding("E-1", ALL_STAGES))  # completes at 10 h
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(days=30))
    text = client.get("/metrics", headers={"Accept": OPENMETRICS}).text
    bounds = duration_buckets(DEFAULT_FLOW_TYPES)
    for hours in (4, 24, 48, 72, 120):
        assert hours * 3600.0 in bounds
    line = next(
        line
        for line in text.splitlines()
        if line.startswith(
            'syncwatch_flow_duration_seconds_bucket{flow_type="contract_onboarding",le="43200.0"}'
        )
    )
    match = re.search(r"# \{(.*)\} (\S+) (\S+)$", line)
    assert match is not None, line
    assert f'trace_id="{trace_id("contract_onboarding:E-1")}"' in match.group(1)
    assert 'correlation_id="E-1"' in match.group(1)
    assert float(match.group(2)) == 36000.0
    assert float(match.group(3)) == (T0 + timedelta(hours=10)).timestamp()
    # the 8 h bucket holds nothing yet; the 12 h bucket and all above hold the flow
    assert 'le="28800.0"} 0.0' in text
    # the text format carries no exemplars
    assert "trace_id" not in client.get("/metrics").text


def test_changed_deadlines_rebuild_the_duration_buckets(
    settings: Any, database: Database, keys: dict[str, str], client: TestClient
) -> None:
    post(client, keys, onboarding("B-1", ALL_STAGES))
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(days=30))
    config = {
        "contract_onboarding": {
            "deadlines": {
                "customer.synced": "1h",
                "project.created": "2h",
                "billing_plan.created": "3h",
                "project.activated": "11h",
            }
        }
    }
    custom = configured_flow_types(config)
    post(client, keys, onboarding("B-2", ALL_STAGES))
    run_until_idle(database, custom, now=T0 + timedelta(days=30))
    app = create_app(
        settings.model_copy(update={"flows": config}),
        database,
        clock=lambda: T0 + timedelta(days=30),
    )
    with TestClient(app) as other:
        found = samples(other.get("/metrics").text)
    # both flows (10 h) are in the new 11 h bucket, counted from the recorded durations
    assert (
        value(
            found,
            "syncwatch_flow_duration_seconds_bucket",
            flow_type="contract_onboarding",
            le="39600.0",
        )
        == 2
    )
    assert (
        value(found, "syncwatch_flow_duration_seconds_count", flow_type="contract_onboarding") == 2
    )


def test_metrics_can_require_a_key_and_drop_exemplars(
    tmp_path: Path, database_url: str, database: Database, keys: dict[str, str]
) -> None:
    settings = load_settings(
        {
            "data_dir": tmp_path,
            "database_url": database_url,
            "metrics": {"require_key": True, "exemplars": False},
        }
    )
    with TestClient(create_app(settings, database)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(keys["ingest"])).status_code == 403
        post(client, keys, onboarding("K-1", ALL_STAGES))
        run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(days=30))
        answer = client.get("/metrics", headers={**bearer(keys["viewer"]), "Accept": OPENMETRICS})
        assert answer.status_code == 200
        assert "syncwatch_flow_duration_seconds_bucket" in answer.text
        assert "trace_id" not in answer.text


def test_events_received_are_counted_with_bounded_labels(
    client: TestClient, keys: dict[str, str]
) -> None:
    known = make_event("contract.signed", source="clm/ironclad")
    unknown_type = make_event("contract.exotic", source="clm/ironclad")
    post(client, keys, [known, known, unknown_type, {"id": "x", "source": "erp/x"}])
    found = samples(client.get("/metrics").text)
    name = "syncwatch_events_received_total"
    assert (
        value(found, name, source="clm/ironclad", type="contract.signed", outcome="accepted") == 1
    )
    assert (
        value(found, name, source="clm/ironclad", type="contract.signed", outcome="duplicate") == 1
    )
    assert value(found, name, source="clm/ironclad", type="other", outcome="accepted") == 1
    assert value(found, name, source="erp/x", type="other", outcome="rejected") == 1
    many = [make_event("invoice.posted", source=f"erp/s{i}") for i in range(130)]
    post(client, keys, many)
    sources = {
        dict(labels)["source"]
        for (metric, labels) in samples(client.get("/metrics").text)
        if metric == name
    }
    assert "other" in sources
    assert len(sources) <= 100 + 1


def test_probe_lag_and_last_success(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    post(client, keys, onboarding("L-1", {}))
    found = samples(client.get("/metrics").text)
    assert value(found, "syncwatch_probe_lag_events") == 1
    assert ("syncwatch_probe_last_success_timestamp_seconds", frozenset()) not in found
    cycle_at = T0 + timedelta(days=2)
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=cycle_at)
    found = samples(client.get("/metrics").text)
    assert value(found, "syncwatch_probe_lag_events") == 0
    assert value(found, "syncwatch_probe_last_success_timestamp_seconds") == cycle_at.timestamp()


def test_slo_settings_are_exposed_for_every_flow_type(configured: TestClient) -> None:
    found = samples(configured.get("/metrics").text)
    objectives = {
        dict(labels)["flow_type"]: number
        for (name, labels), number in found.items()
        if name == "syncwatch_slo_objective"
    }
    assert objectives == {
        "contract_onboarding": 0.9,
        "amendment_propagation": 0.9,
        "milestone_billing": 0.99,
    }
    assert value(found, "syncwatch_slo_min_decided_flows") == 20


def test_slo_defaults_and_bad_objectives(
    client: TestClient, tmp_path: Path, database_url: str, database: Database
) -> None:
    found = samples(client.get("/metrics").text)
    assert value(found, "syncwatch_slo_objective", flow_type="milestone_billing") == 0.95
    assert value(found, "syncwatch_slo_min_decided_flows") == 10
    base = {"data_dir": tmp_path, "database_url": database_url}
    for objective in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"slo\.objectives"):
            load_settings({**base, "slo": {"objectives": {"milestone_billing": objective}}})
    with pytest.raises(ConfigError, match=r"slo\.default_objective"):
        load_settings({**base, "slo": {"default_objective": 1}})
    with pytest.raises(ConfigError, match=r"slo\.surprise"):
        load_settings({**base, "slo": {"surprise": 1}})
    unknown = load_settings({**base, "slo": {"objectives": {"renewal": 0.99}}})
    with pytest.raises(ConfigError, match="renewal"):
        create_app(unknown, database)


def test_silence_thresholds_of_configured_sources(
    configured: TestClient, keys: dict[str, str], database: Database
) -> None:
    post(configured, keys, onboarding("Q-1", {}))  # contract.signed from clm/ironclad
    found = samples(configured.get("/metrics").text)
    thresholds = {
        dict(labels)["source"]: number
        for (name, labels), number in found.items()
        if name == "syncwatch_source_silent_after_seconds"
    }
    # erp/netsuite has no silent_after: never silent, no threshold
    assert thresholds == {"clm/ironclad": 6 * 3600.0, "crm/never": 3600.0}
    newest = {
        dict(labels)["source"]: number
        for (name, labels), number in found.items()
        if name == "syncwatch_source_last_event_timestamp_seconds"
    }
    # a configured source that never sent an event has no newest-event series (the rules alert
    # on its threshold without one), rather than a 0
    assert newest == {"clm/ironclad": T0.timestamp()}


def test_flows_stuck_on_an_integration_failure(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    # I-1 fails in the middleware on project.created; I-2 just never gets its customer synced
    failed = make_event(
        "integration.failed",
        time=at(1.5),
        correlationid="I-1",
        data={"step": "project.created", "execution_id": "EX-9", "error": "timeout"},
    )
    post(client, keys, [*onboarding("I-1", {"customer.synced": 1}), failed])
    post(client, keys, onboarding("I-2", {}))
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=T0 + timedelta(days=30))
    found = samples(client.get("/metrics").text)
    name = "syncwatch_flows_stuck_on_integration_failure"
    on_integration = {
        (dict(labels)["flow_type"], dict(labels)["stage"]): number
        for (metric, labels), number in found.items()
        if metric == name
    }
    # every stage of every flow type, zeros included
    assert set(on_integration) == {
        (flow_type.name, stage.type)
        for flow_type in DEFAULT_FLOW_TYPES
        for stage in flow_type.stages
    }
    assert on_integration[("contract_onboarding", "project.created")] == 1
    assert sum(on_integration.values()) == 1
    stuck = "syncwatch_flows_stuck"
    assert value(found, stuck, flow_type="contract_onboarding", stage="customer.synced") == 1
    assert value(found, stuck, flow_type="contract_onboarding", stage="project.created") == 1
    assert value(found, "syncwatch_findings_open", queue="integration_oncall", kind="stuck") == 1
