"""The KPIs count flows in SQL (kpis.inputs: flows, flow_stages, stuck_spans); flows.md defines
them on each flow's facts (probes.evaluate.FlowFacts). Over the conformance example, at many
instants and windows, on SQLite and PostgreSQL, the SQL counts must equal the definitions applied
to every flow's facts one by one: open, stuck by stage and queue, due and met, completed and their
durations, the funnel and the stage misses, with and without a dimension filter."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from collector.ingest import ingest
from core import jsoncodec
from core.db import Database
from core.tables import flows
from kpis import inputs
from kpis.compute import KpiQuery, micros
from probes.evaluate import MILESTONE, ONBOARDING, FlowFacts
from probes.exceptions import AGING_BUCKETS, aging_bucket
from probes.facts_codec import facts_from_row
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.runner import run_until_idle
from tests.support.examples import EXAMPLES

NOW = datetime(2026, 12, 10, tzinfo=UTC)
INSTANTS = [datetime(2026, 10, 25, tzinfo=UTC) + timedelta(hours=29 * i) for i in range(38)]
WINDOWS = [timedelta(days=7), timedelta(hours=30), timedelta(days=30)]


@pytest.fixture
def loaded(database: Database) -> tuple[Database, list[FlowFacts]]:
    events = jsoncodec.loads((EXAMPLES / "events.json").read_bytes())
    ingest(database, events, require_specversion=False, channel="test", content_type=None, now=NOW)
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    with database.read() as connection:
        facts = [facts_from_row(row) for row in connection.execute(sa.select(flows))]
    assert len(facts) > 200
    return database, facts


def _oracle(facts: list[FlowFacts], query: KpiQuery) -> dict[str, Any]:
    at, start = query.as_of, query.start
    chosen = [f for f in facts if all(getattr(f, k) == v for k, v in query.filters.items())]
    open_counts = Counter(f.flow_type for f in chosen if f.open(at))
    stuck = Counter()
    queues: dict[str, list[datetime]] = {}
    for flow in chosen:
        stage = flow.stuck_stage(at)
        if stage is not None:
            stuck[(flow.flow_type, stage.type)] += 1
            queues.setdefault(flow.stuck_queue(at) or "", []).append(stage.deadline_at)
    due = Counter()
    met = Counter()
    for flow in chosen:
        if flow.due_in(start, at):
            due[flow.flow_type] += 1
            met[flow.flow_type] += flow.met()
    durations = sorted(
        (f.flow_type, micros(f.completed_at - f.t0))
        for f in chosen
        if f.completed_at is not None and start < f.completed_at <= at
    )
    started = [f for f in chosen if f.flow_type == ONBOARDING and start < f.t0 <= at]
    invoiced = {f.correlation_id for f in facts if f.flow_type == MILESTONE and f.complete(at)}
    onboarding = DEFAULT_FLOW_TYPES[0]
    funnel = [(onboarding.start, len(started))]
    funnel += [
        (stage.type, sum(1 for f in started if f.stages[i].reached(at)))
        for i, stage in enumerate(onboarding.stages)
    ]
    funnel.append(("invoice.posted", sum(1 for f in started if f.correlation_id in invoiced)))
    misses = Counter()
    for flow in chosen:
        for stage in flow.stages:
            deadline = stage.deadline_at
            missed = start < deadline <= at and not stage.reached(deadline)
            if missed and not flow.complete(deadline) and not flow.cancelled(deadline):
                misses[(flow.flow_type, stage.type)] += 1
    return {
        "open": dict(open_counts),
        "stuck": dict(stuck),
        "queues": {
            queue: (len(opened), min(opened), _aging(opened, at))
            for queue, opened in queues.items()
        },
        "due": {t: (due[t], met[t]) for t in due},
        "durations": durations,
        "funnel": funnel,
        "misses": dict(misses),
    }


def _aging(opened: list[datetime], at: datetime) -> tuple[int, ...]:
    buckets = Counter(aging_bucket((at - instant).total_seconds()) for instant in opened)
    return tuple(buckets[name] for name, _ in AGING_BUCKETS)


def _sql(connection: Any, query: KpiQuery) -> dict[str, Any]:
    types = DEFAULT_FLOW_TYPES
    stuck, stuck_findings = inputs.load_stuck(connection, types, query)
    queues: dict[str, tuple[int, datetime, tuple[int, ...]]] = {}
    for part in stuck_findings:  # one per queue, flow type and stage: merged per queue
        count, oldest, aging = queues.get(part.queue, (0, part.oldest, (0, 0, 0, 0)))
        assert part.oldest is not None
        queues[part.queue] = (
            count + part.open,
            min(oldest, part.oldest),
            tuple(a + b for a, b in zip(aging, part.aging, strict=True)),
        )
    return {
        "open": {t: n for (_, t), n in inputs.load_open(connection, types, query).items()},
        "stuck": {(t, stage): n for (_, t, stage), n in stuck.items()},
        "queues": queues,
        "due": {t: v for (_, t), v in inputs.load_due(connection, types, query).items()},
        "durations": sorted((t, d) for _, t, d in inputs.load_durations(connection, types, query)),
        "funnel": inputs.load_funnel(connection, types, query),
        "misses": inputs.load_stage_misses(connection, types, query),
    }


@pytest.mark.parametrize("filters", [{}, {"region": "EMEA"}, {"legal_entity": "US01"}])
def test_sql_counts_equal_the_definitions_on_the_facts(
    loaded: tuple[Database, list[FlowFacts]], filters: dict[str, str]
) -> None:
    database, facts = loaded
    checked = Counter()
    with database.snapshot() as connection:
        for at in INSTANTS:
            for window in WINDOWS:
                query = KpiQuery(as_of=at, start=at - window, filters=filters)
                expected = _oracle(facts, query)
                assert _sql(connection, query) == expected, (at, window)
                checked["stuck"] += sum(expected["stuck"].values())
                checked["misses"] += sum(expected["misses"].values())
                checked["funnel"] += expected["funnel"][0][1]
    # the instants cover the interesting cases, not only empty answers
    assert checked["stuck"] > 100 and checked["misses"] > 20 and checked["funnel"] > 20
