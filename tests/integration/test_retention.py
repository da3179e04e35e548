"""Retention (core/retention.py): which correlation IDs go whole and which stay, dead letters,
alert deliveries and job runs, the dry run, the audit entry, the daily job claimed once over
replicas, ``syncwatch db prune``, and the settings' guard."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from collector.ingest import ingest
from core import audit
from core.db import Database
from core.deadletters import claim_for_retry, mark_retried
from core.errors import ConfigError
from core.jobruns import claim, finish
from core.retention import Pruned, closed_correlations, latest_slot, prune, retention_job
from core.settings import RetentionSettings, load_settings
from core.tables import (
    alert_deliveries,
    dead_letters,
    events,
    findings,
    flow_outcomes,
    flow_stages,
    flows,
    job_runs,
    replays,
    stuck_spans,
)
from kpis.service import kpis, make_query
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.runner import run_until_idle
from tests.support.builders import make_event

T = datetime(2026, 1, 5, 9, tzinfo=UTC)  # T0 of the old flows
RECENT = datetime(2026, 11, 2, 9, tzinfo=UTC)  # T0 of the recent flows
NOW = datetime(2026, 12, 1, tzinfo=UTC)
KEEP = RetentionSettings(closed_flows="180d")  # horizon 2026-06-04

ONBOARDING_STAGES = (
    "customer.synced",
    "project.created",
    "billing_plan.created",
    "project.activated",
)


def _contract(correlation: str, at: datetime, **data: Any) -> dict[str, Any]:
    base = {
        "contract_id": f"CTR-{correlation}",
        "contract_value": "90000.00",
        "currency": "EUR",
        "legal_entity": "DE01",
    }
    base.update(data)
    return make_event(
        "contract.signed",
        time=at.isoformat(),
        correlationid=correlation,
        data={k: v for k, v in base.items() if v is not None},
    )


def _stages(correlation: str, t0: datetime, upto: int = 4) -> list[dict[str, Any]]:
    return [
        make_event(
            stage,
            time=(t0 + timedelta(hours=index + 1)).isoformat(),
            correlationid=correlation,
            data={"contract_id": f"CTR-{correlation}", "project_id": f"PRJ-{correlation}"},
        )
        for index, stage in enumerate(ONBOARDING_STAGES[:upto])
    ]


def _put(database: Database, items: list[dict[str, Any]], received: datetime) -> None:
    result = ingest(
        database, items, require_specversion=False, channel="test", content_type=None, now=received
    )
    assert not result.rejected, result.rejected


def _world(database: Database) -> None:
    """OLD: complete long ago (goes). OPEN: signed long ago, never set up (stays: open).
    FRESH: complete recently (stays). LATE: complete long ago, but an event arrived recently
    (stays). FLAGGED: complete long ago with its data-incomplete finding still open (stays).
    REPLAYED: complete long ago with a replay still followed up (stays)."""
    later = T + timedelta(days=4)
    for name in ("OLD", "LATE", "REPLAYED"):
        _put(database, [_contract(name, T), *_stages(name, T)], later)
    _put(database, [_contract("FLAGGED", T, legal_entity=None), *_stages("FLAGGED", T)], later)
    _put(database, [_contract("OPEN", T)], later)
    _put(database, [_contract("FRESH", RECENT), *_stages("FRESH", RECENT)], RECENT)
    # a re-sent record of LATE's, received recently (with an id of its own: not a duplicate)
    _put(database, _stages("LATE", T, upto=1), NOW - timedelta(days=1))
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    with database.write() as connection:
        connection.execute(
            replays.insert().values(
                flow_id="contract_onboarding:REPLAYED",
                trigger="api",
                requested_by="oncall-ana",
                reason="stuck",
                outcome="sent",
                requested_at=T + timedelta(days=1),
            )
        )


def _count(database: Database, table: sa.Table, *where: Any) -> int:
    with database.read() as connection:
        query = sa.select(sa.func.count()).select_from(table)
        return int(connection.execute(query.where(*where)).scalar_one())


def _correlations(database: Database) -> set[str]:
    with database.read() as connection:
        return set(connection.execute(sa.select(flows.c.correlation_id).distinct()).scalars())


def test_only_correlations_closed_before_the_horizon_and_settled_go(database: Database) -> None:
    _world(database)
    with database.read() as connection:
        assert closed_correlations(connection, NOW - KEEP.closed_flows) == ["OLD"]  # type: ignore[operator]
    old_events = _count(database, events, events.c.resolved_correlation_id == "OLD")
    assert old_events == 5
    with database.read() as connection:
        old_flow = connection.execute(
            sa.select(flows.c.flow_id).where(flows.c.correlation_id == "OLD")
        ).scalar_one()
    assert _count(database, flow_stages, flow_stages.c.flow_id == old_flow) == 4

    pruned = prune(database, KEEP, NOW)

    assert pruned.correlations == 1
    assert pruned.flows == 1
    assert pruned.events == 5
    assert _correlations(database) == {"OPEN", "FRESH", "LATE", "FLAGGED", "REPLAYED"}
    assert _count(database, events, events.c.resolved_correlation_id == "OLD") == 0
    for table in (flow_stages, stuck_spans, flow_outcomes, findings, replays):
        assert _count(database, table, table.c.flow_id == old_flow) == 0
    # what stays is whole: every event and stage of the others
    assert _count(database, events, events.c.resolved_correlation_id == "LATE") == 6
    assert _count(database, flow_stages, flow_stages.c.flow_id.like("%:FRESH")) == 4
    # a second run finds nothing more
    assert prune(database, KEEP, NOW).correlations == 0


def test_nothing_of_the_flows_goes_by_default(database: Database) -> None:
    _world(database)
    before = _count(database, events)
    assert prune(database, RetentionSettings(), NOW).correlations == 0
    assert _count(database, events) == before


def test_the_probes_go_on_after_a_prune(database: Database) -> None:
    """A new flow beside the pruned correlations is evaluated as usual, and the KPIs of any window
    after the horizon do not change."""
    _world(database)
    query = make_query(as_of=NOW, start=NOW - KEEP.closed_flows)  # type: ignore[operator]
    before = kpis(database, DEFAULT_FLOW_TYPES, query)
    assert prune(database, KEEP, NOW).correlations == 1
    assert kpis(database, DEFAULT_FLOW_TYPES, query) == before
    _put(database, [_contract("NEW", NOW - timedelta(hours=2))], NOW)
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    assert "NEW" in _correlations(database)
    assert "OLD" not in _correlations(database)


def test_a_dry_run_counts_the_same_and_deletes_nothing(database: Database) -> None:
    _world(database)
    before = _count(database, events)
    dry = prune(database, KEEP, NOW, dry_run=True)
    assert _count(database, events) == before
    assert dry == prune(database, KEEP, NOW)
    assert dry.events == 5


def test_many_correlations_go_in_batches(database: Database) -> None:
    items: list[dict[str, Any]] = []
    for number in range(7):
        items += [_contract(f"B{number}", T), *_stages(f"B{number}", T)]
    _put(database, items, T + timedelta(days=4))
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    settings = RetentionSettings(closed_flows="180d", batch_correlations=3)
    assert prune(database, settings, NOW, dry_run=True).correlations == 7
    assert prune(database, settings, NOW).correlations == 7
    assert _count(database, events) == 0
    assert _count(database, flows) == 0


def _dead_letter(database: Database, received: datetime) -> int:
    result = ingest(
        database,
        [{"id": "x", "source": "erp/netsuite"}],
        require_specversion=False,
        channel="test",
        content_type=None,
        now=received,
    )
    assert len(result.rejected) == 1
    with database.read() as connection:
        return int(connection.execute(sa.select(sa.func.max(dead_letters.c.id))).scalar_one())


def test_retried_dead_letters_go_after_their_horizon_and_pending_ones_stay(
    database: Database,
) -> None:
    pending = _dead_letter(database, T)
    old_retry = _dead_letter(database, T)
    new_retry = _dead_letter(database, T)
    with database.write() as connection:
        for letter, at in (
            (old_retry, NOW - timedelta(days=31)),
            (new_retry, NOW - timedelta(days=29)),
        ):
            claim_for_retry(connection, letter)
            mark_retried(connection, letter, at=at, by="oncall-ana", event_seq=None)

    assert prune(database, RetentionSettings(), NOW).dead_letters == 1

    with database.read() as connection:
        left = set(connection.execute(sa.select(dead_letters.c.id)).scalars())
    assert left == {pending, new_retry}
    assert prune(database, RetentionSettings(retried_dead_letters=None), NOW).dead_letters == 0


def _delivery(database: Database, fingerprint: str, status: str, state: str, at: datetime) -> None:
    with database.write() as connection:
        connection.execute(
            alert_deliveries.insert().values(
                fingerprint=fingerprint,
                starts_at=at,
                status=status,
                labels={"alertname": "SyncwatchFlowsStuck"},
                received_by="alertmanager",
                received_at=at,
                state=state,
            )
        )


def test_alert_deliveries_go_once_resolved_handled_and_old(database: Database) -> None:
    old = NOW - timedelta(days=91)
    _delivery(database, "resolved-done", "resolved", "done", old)
    _delivery(database, "resolved-ignored", "resolved", "ignored", old)
    _delivery(database, "still-firing", "firing", "done", old)  # a repeat must still be known
    _delivery(database, "resolved-pending", "resolved", "pending", old)
    _delivery(database, "resolved-recent", "resolved", "done", NOW - timedelta(days=89))

    assert prune(database, RetentionSettings(), NOW).alert_deliveries == 2

    with database.read() as connection:
        left = set(connection.execute(sa.select(alert_deliveries.c.fingerprint)).scalars())
    assert left == {"still-firing", "resolved-pending", "resolved-recent"}


def test_finished_job_runs_go_after_their_horizon(database: Database) -> None:
    with database.write() as connection:
        for job, days, done in (("a", 91, True), ("b", 91, False), ("c", 89, True)):
            slot = NOW - timedelta(days=days)
            claim(connection, job, slot, by="test", now=slot)
            if done:
                finish(connection, job, slot, outcome="done", details={}, now=slot)
    assert prune(database, RetentionSettings(), NOW).job_runs == 1
    with database.read() as connection:
        assert set(connection.execute(sa.select(job_runs.c.job)).scalars()) == {"b", "c"}


def test_the_daily_job_runs_once_over_replicas_and_is_audited(database: Database) -> None:
    _world(database)
    first = retention_job(database, KEEP, NOW + timedelta(hours=4), replica="replica-1")
    second = retention_job(database, KEEP, NOW + timedelta(hours=5), replica="replica-2")
    assert first is not None and first.correlations == 1
    assert second is None  # the same day's run, claimed by replica-1

    with database.read() as connection:
        run = connection.execute(sa.select(job_runs).where(job_runs.c.job == "retention")).one()
        entries = audit.entries(connection, action="retention.prune")
    assert run.scheduled_for == datetime(2026, 12, 1, 3, 17, tzinfo=UTC)
    assert run.claimed_by == "replica-1"
    assert run.outcome == "done"
    assert run.details == first.as_dict()
    assert [(e.actor, e.target_type, e.details) for e in entries] == [
        ("syncwatch", "store", first.as_dict())
    ]
    # the next day's run deletes nothing and writes no audit entry
    assert retention_job(database, KEEP, NOW + timedelta(days=1, hours=4)) == Pruned()
    with database.read() as connection:
        assert len(audit.entries(connection, action="retention.prune")) == 1


def test_a_failing_run_is_recorded_not_raised(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with database.write() as connection:  # a store the run cannot finish on
        connection.execute(sa.text("ALTER TABLE alert_deliveries RENAME TO away"))
    try:
        assert retention_job(database, KEEP, NOW, replica="replica-1") is None
    finally:
        with database.write() as connection:
            connection.execute(sa.text("ALTER TABLE away RENAME TO alert_deliveries"))
    with database.read() as connection:
        run = connection.execute(sa.select(job_runs).where(job_runs.c.job == "retention")).one()
    assert run.outcome == "failed"
    assert "alert_deliveries" in run.details["error"]
    assert "retention run of" in caplog.text


def test_the_daily_slot() -> None:
    settings = RetentionSettings(hour=3, minute=17)
    at = datetime(2026, 12, 1, 3, 17, tzinfo=UTC)
    assert latest_slot(settings, at) == at
    assert latest_slot(settings, at + timedelta(hours=20)) == at
    assert latest_slot(settings, at - timedelta(seconds=1)) == at - timedelta(days=1)


def test_a_horizon_that_cuts_into_the_kpi_windows_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"retention.closed_flows .*at least 90d"):
        load_settings({"retention": {"closed_flows": "30d"}})
    with pytest.raises(ConfigError, match=r"retention.job_runs .*not a duration"):
        load_settings({"retention": {"job_runs": "soon"}})
    assert load_settings({"retention": {"closed_flows": "400d"}}).retention.closed_flows == (
        timedelta(days=400)
    )


def test_db_prune_from_the_command_line(
    database_url: str, database: Database, tmp_path: Path
) -> None:
    _world(database)
    config = tmp_path / "syncwatch.yaml"
    config.write_text("retention:\n  closed_flows: 180d\n")
    env = {
        **os.environ,
        "SYNCWATCH_DATABASE_URL": database_url,
        "SYNCWATCH_DATA_DIR": str(tmp_path),
        "SYNCWATCH_CONFIG": str(config),
    }
    command = [sys.executable, "-m", "syncwatch", "db", "prune"]
    dry = subprocess.run(
        [*command, "--dry-run"], check=False, env=env, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "would be deleted" in dry.stdout
    assert "OLD" in _correlations(database)

    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in done.stdout.splitlines()
        if line.count("│") == 3
    }
    assert lines["correlations"] == "1"
    assert lines["events"] == "5"
    assert "OLD" not in _correlations(database)
    with database.read() as connection:
        entries = audit.entries(connection, action="retention.prune")
    assert len(entries) == 1 and entries[0].actor.startswith("cli:")
