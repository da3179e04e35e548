"""Property: any order of delivery, any re-deliveries, any split into batches and probe cycles give
the same flows and findings as one runner that saw everything at once (on SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.ingest import ingest
from core import jsoncodec
from core.db import Database
from core.tables import findings, flows
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.runner import run_cycle, run_until_idle
from tests.support import databases
from tests.support.examples import EXAMPLES

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _scenario() -> list[dict[str, Any]]:
    """The example's events of a dozen correlation IDs, chosen for their faults, plus every event
    without a correlationid (fallback keys and uncorrelated ones)."""
    events = jsoncodec.loads((EXAMPLES / "events.json").read_bytes())
    correlations = sorted({e["correlationid"] for e in events if e.get("correlationid")})
    chosen = set(correlations[::7])
    return [e for e in events if e.get("correlationid") in chosen or not e.get("correlationid")]


SCENARIO = _scenario()


class Snapshot(tuple[Any, Any]):
    """The flows and findings of a store; a short repr keeps Hypothesis's reports readable."""

    def __repr__(self) -> str:
        return f"Snapshot({len(self[0])} flows, {len(self[1])} findings)"


def _snapshot(database: Database) -> Snapshot:
    with database.read() as connection:
        flow_rows = connection.execute(
            sa.select(
                flows.c.flow_id,
                flows.c.t0,
                flows.c.deadline_at,
                flows.c.completed_at,
                flows.c.cancelled_at,
                flows.c.value,
                flows.c.currency,
                flows.c.facts,
            ).order_by(flows.c.flow_id)
        ).all()
        finding_rows = connection.execute(
            sa.select(
                findings.c.kind,
                findings.c.flow_id,
                findings.c.key,
                findings.c.queue,
                findings.c.opened_at,
                findings.c.resolved_at,
            ).order_by(findings.c.kind, findings.c.flow_id, findings.c.key)
        ).all()
    return Snapshot(([tuple(r) for r in flow_rows], [tuple(r) for r in finding_rows]))


def _fresh(kind: str, template: Path, tmp: Path, pg_url: str | None) -> Database:
    if kind == "sqlite":
        return Database.from_url(databases.sqlite_copy(template, tmp))
    assert pg_url is not None
    database = Database.from_url(pg_url)
    databases.empty_pg(database)
    return database


def _load(database: Database, batches: list[list[dict[str, Any]]], cycle_sizes: list[int]) -> None:
    for index, batch in enumerate(batches):
        ingest(
            database, batch, require_specversion=False, channel="test", content_type=None, now=NOW
        )
        run_cycle(
            database,
            DEFAULT_FLOW_TYPES,
            now=NOW,
            batch_events=cycle_sizes[index % len(cycle_sizes)],
        )
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reference(
    store_kind: str, sqlite_template: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Any, Any]:
    pg_url = request.getfixturevalue("pg_url") if store_kind == "postgresql" else None
    database = _fresh(store_kind, sqlite_template, tmp_path, pg_url)
    _load(database, [SCENARIO], [100_000])
    snapshot = _snapshot(database)
    database.dispose()
    assert snapshot[0], "the scenario must produce flows"
    return snapshot


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    order=st.permutations(range(len(SCENARIO))),
    redelivered=st.lists(st.integers(0, len(SCENARIO) - 1), max_size=40),
    cuts=st.lists(st.integers(1, len(SCENARIO) - 1), max_size=8),
    cycle_sizes=st.lists(st.integers(1, 200), min_size=1, max_size=5),
)
def test_any_delivery_gives_the_same_flows_and_findings(
    store_kind: str,
    reference: Snapshot,
    sqlite_template: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    order: list[int],
    redelivered: list[int],
    cuts: list[int],
    cycle_sizes: list[int],
) -> None:
    stream = [SCENARIO[i] for i in order] + [SCENARIO[i] for i in redelivered]
    bounds = [0, *sorted(set(cuts)), len(stream)]
    batches = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    pg_url = request.getfixturevalue("pg_url") if store_kind == "postgresql" else None
    database = _fresh(store_kind, sqlite_template, tmp_path, pg_url)
    try:
        _load(database, batches, cycle_sizes)
        assert _snapshot(database) == reference
    finally:
        database.dispose()
