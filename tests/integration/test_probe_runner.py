"""The probe runner against the store (SQLite and PostgreSQL): the conformance example's queues from
shuffled, batched, re-delivered events; time passing with no event; integration-failure routing;
late links; operator actions against re-evaluation; two runner processes at once."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from collector.ingest import ingest
from core import jsoncodec
from core.apikeys import Principal
from core.db import Database
from core.errors import Conflict
from core.roles import Role
from core.tables import dead_letters, events, findings, flows, probe_state
from probes import exceptions
from probes.facts_codec import facts_from_row
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.runner import CycleReport, run_cycle, run_until_idle
from tests.support import databases
from tests.support.builders import make_event
from tests.support.examples import EXAMPLES

EVENTS: list[dict[str, Any]] = jsoncodec.loads((EXAMPLES / "events.json").read_bytes())
EXPECTED: dict[str, Any] = jsoncodec.loads((EXAMPLES / "expected-7d.json").read_bytes())
NOW = datetime(2026, 11, 30, tzinfo=UTC)
T = datetime(2026, 11, 2, 9, tzinfo=UTC)  # T0 of the hand-made flows
CORR = "Q2C-RUN-1"
ONB = f"contract_onboarding:{CORR}"


def h(hours: float, seconds: float = 0) -> datetime:
    return T + timedelta(hours=hours, seconds=seconds)


def event(type_: str, at: datetime, data: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    attrs.setdefault("correlationid", CORR)
    return make_event(type_, time=at.isoformat(), data=data, **attrs)


def signed(at: datetime = T, correlation: str = CORR, **data: Any) -> dict[str, Any]:
    base = {
        "contract_id": "CTR-RUN-1",
        "contract_value": "125000.00",
        "currency": "EUR",
        "legal_entity": "DE01",
        "milestones": [{"milestone_id": "M1", "amount": "50000.00"}],
    }
    return event("contract.signed", at, {**base, **data}, correlationid=correlation)


def put(database: Database, *items: dict[str, Any]) -> None:
    result = ingest(
        database, list(items), require_specversion=False, channel="test", content_type=None, now=NOW
    )
    assert not result.rejected, result.rejected


def cycle(database: Database, now: datetime, **options: Any) -> CycleReport:
    report = run_cycle(database, DEFAULT_FLOW_TYPES, now=now, **options)
    assert not report.skipped
    return report


def all_findings(database: Database, **where: Any) -> list[Any]:
    query = sa.select(findings).order_by(findings.c.id)
    for name, value in where.items():
        query = query.where(findings.c[name] == value)
    with database.read() as connection:
        return list(connection.execute(query))


def flow_facts(database: Database) -> dict[str, Any]:
    with database.read() as connection:
        return {row.flow_id: facts_from_row(row) for row in connection.execute(sa.select(flows))}


def links(database: Database) -> dict[str, str | None]:
    """The resolved correlation ID of each stored event, by type."""
    with database.read() as connection:
        rows = connection.execute(sa.select(events.c.type, events.c.resolved_correlation_id))
        return {row.type: row.resolved_correlation_id for row in rows}


# --- conformance at the queue level ---


@pytest.mark.parametrize("seed", [7, 2026])
def test_example_queues_whatever_the_order_batching_and_redelivery(
    database: Database, seed: int
) -> None:
    rng = random.Random(seed)
    stream = EVENTS + rng.sample(EVENTS, 90)  # re-delivered events are duplicates
    rng.shuffle(stream)
    position = 0
    while position < len(stream):
        size = rng.randint(1, 80)
        put(database, *stream[position : position + size])
        position += size
        cycle(database, NOW, batch_events=rng.randint(1, 40))
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)

    open_rows = [
        row for row in all_findings(database) if row.resolved_at is None and row.opened_at <= NOW
    ]
    for queue, expected in EXPECTED["exceptions"].items():
        rows = [row for row in open_rows if row.queue == queue]
        assert len(rows) == expected["open"], queue
        oldest = (NOW - min(row.opened_at for row in rows)).total_seconds()
        assert oldest == pytest.approx(float(expected["oldest_age_seconds"]), abs=0.001), queue
        aging = Counter(
            exceptions.aging_bucket((NOW - row.opened_at).total_seconds()) for row in rows
        )
        assert {b: aging[b] for b in expected["aging"]} == expected["aging"], queue

    stuck: Counter[tuple[str, str]] = Counter()
    for facts in flow_facts(database).values():
        stage = facts.stuck_stage(NOW)
        if stage is not None:
            stuck[facts.flow_type, stage.type] += 1
    for flow_type, figures in EXPECTED["flows"].items():
        by_stage = {s: stuck[flow_type, s] for s in figures["stuck_by_stage"]}
        assert by_stage == figures["stuck_by_stage"], flow_type
    assert sum(stuck.values()) == sum(f["stuck"] for f in EXPECTED["flows"].values())

    # Pairs in conflict and duplicate projects as of NOW (an operator's resolution would not
    # change these counts; nothing withdrew them).
    held = Counter(row.kind for row in all_findings(database) if row.opened_at <= NOW)
    assert held["duplicate_project"] == EXPECTED["duplicate_projects"] == 1
    assert held["amendment_conflict"] == EXPECTED["amendment_conflicts"] == 3
    with database.read() as connection:
        uncorrelated = connection.execute(
            sa.select(sa.func.count())
            .select_from(events)
            .where(events.c.resolved_correlation_id.is_(None), events.c.time <= NOW)
        ).scalar_one()
    assert uncorrelated == EXPECTED["uncorrelated_events"] == 7


# --- time passing ---


def test_a_flow_becomes_stuck_with_no_new_event_and_the_sweep_is_bounded(
    database: Database,
) -> None:
    put(database, signed())
    first = cycle(database, h(3))
    assert (first.events, first.correlations) == (1, 1)
    assert set(flow_facts(database)) == {ONB}
    assert not flow_facts(database)[ONB].stuck(h(3))
    assert all_findings(database) == []

    at_deadline = cycle(database, h(4))  # stuck only once the deadline is *before* now
    assert (at_deadline.events, at_deadline.swept) == (0, 0)
    assert all_findings(database) == []

    swept = cycle(database, h(4, 1))
    assert (swept.events, swept.swept >= 1) == (0, True)
    [stuck] = all_findings(database)
    assert (stuck.kind, stuck.flow_id, stuck.key) == ("stuck", ONB, "customer.synced")
    assert (stuck.queue, stuck.opened_at, stuck.resolved_at) == ("finance_ops", h(4), None)

    put(database, event("customer.synced", h(5), {"customer_id": "CUST-1"}))
    reached = cycle(database, h(6))
    assert (reached.events, reached.correlations) == (1, 1)
    [closed] = all_findings(database)
    assert closed.id == stuck.id
    assert (closed.resolved_by, closed.resolved_at) == ("syncwatch", h(5))

    idle = cycle(database, h(20))  # nothing new and nothing due: no work at all
    assert (idle.events, idle.correlations, idle.swept) == (0, 0, 0)

    later = cycle(database, h(24, 1))
    assert later.swept >= 1
    opened = all_findings(database, key="project.created")
    assert [(f.kind, f.queue, f.opened_at, f.resolved_at) for f in opened] == [
        ("stuck", "pmo", h(24), None)
    ]
    again = cycle(database, h(24, 2))
    assert (again.events, again.correlations, again.swept) == (0, 0, 0)
    assert len(all_findings(database)) == 2


def test_stuck_findings_follow_events_stamped_at_or_after_the_runners_now(
    database: Database,
) -> None:
    """A source clock a little ahead of syncwatch's: the finding ends at the event's time, even
    when no cycle sees an event after that instant."""
    put(database, signed(), event("customer.synced", h(30), {"customer_id": "C"}))
    cycle(database, h(30))  # customer.synced reached exactly now: project.created is stuck now
    assert flow_facts(database)[ONB].stuck_stage(h(30)).type == "project.created"
    assert [(f.key, f.opened_at, f.resolved_at) for f in all_findings(database)] == [
        ("customer.synced", h(4), h(30)),
        ("project.created", h(24), None),
    ]

    put(database, event("project.created", h(31), {"project_id": "P", "contract_id": "C"}))
    cycle(database, h(30, 1800))  # stamped half an hour ahead: still stuck as of now
    assert all_findings(database, key="project.created")[0].resolved_at is None
    cycle(database, h(32))  # nothing new: time alone ends the period at the event's time
    [ended] = all_findings(database, key="project.created")
    assert (ended.resolved_by, ended.resolved_at) == ("syncwatch", h(31))

    amendment = {"contract_id": "CTR-RUN-1", "amendment_id": "A1"}
    put(database, event("contract.amended", h(40), amendment))
    cycle(database, h(64, 1))
    [open_] = all_findings(database, key="billing_plan.updated")
    assert (open_.opened_at, open_.resolved_at) == (h(64), None)
    put(database, event("billing_plan.updated", h(66), {"amendment_id": "A1"}))
    cycle(database, h(65))  # the flow completes an hour after now
    assert all_findings(database, key="billing_plan.updated")[0].resolved_at is None
    cycle(database, h(67))
    [done] = all_findings(database, key="billing_plan.updated")
    assert (done.resolved_by, done.resolved_at) == ("syncwatch", h(66))


# --- integration failures route stuck findings to integration_oncall ---


def test_a_failing_integration_routes_the_stuck_finding_to_oncall_and_back(
    database: Database,
) -> None:
    def middleware(outcome: str, at: datetime, **data: Any) -> dict[str, Any]:
        return event(f"integration.{outcome}", at, {"step": "project.created", **data})

    # The failure names a milestone: it concerns that milestone's flow only, not onboarding.
    put(database, signed(), middleware("failed", h(11), milestone_id="M1"))
    put(database, event("customer.synced", h(1), {"customer_id": "CUST-1"}))
    cycle(database, h(25))
    [stuck] = all_findings(database, kind="stuck")
    assert (stuck.key, stuck.queue, stuck.opened_at) == ("project.created", "pmo", h(24))

    put(database, middleware("dead_lettered", h(26), execution_id="X"))
    cycle(database, h(27))
    [routed] = all_findings(database, kind="stuck")
    assert (routed.id, routed.queue, routed.resolved_at) == (stuck.id, "integration_oncall", None)

    put(database, middleware("succeeded", h(28), execution_id="X"))
    cycle(database, h(29))
    [back] = all_findings(database, kind="stuck")
    assert (back.id, back.queue, back.resolved_at) == (stuck.id, "pmo", None)

    put(database, middleware("failed", h(30)))
    cycle(database, h(31))
    assert all_findings(database, kind="stuck")[0].queue == "integration_oncall"


# --- an event that arrives before its link ---


@pytest.mark.parametrize("link", ["correlationid", "contract_id"])
def test_an_uncorrelated_event_is_resolved_when_its_link_arrives(
    database: Database, link: str
) -> None:
    activated = event(
        "project.activated", h(30), {"project_id": "PRJ-LATE"}, drop=["correlationid"]
    )
    put(database, activated)
    cycle(database, h(31))
    assert links(database) == {"project.activated": None}
    assert flow_facts(database) == {}

    # With "contract_id", project.created is resolved only through the contract.signed that
    # arrives after it: a chain of two fallback keys, linked in a later cycle.
    drop = ["correlationid"] if link == "contract_id" else []
    project = {"project_id": "PRJ-LATE", "contract_id": "CTR-RUN-1"}
    put(database, event("project.created", h(5), project, drop=drop))
    cycle(database, h(32))
    assert links(database)["project.activated"] == (CORR if link == "correlationid" else None)
    put(database, signed())  # the flow's start arrives last
    cycle(database, h(33))
    resolved = {"project.activated": CORR, "project.created": CORR, "contract.signed": CORR}
    assert links(database) == resolved
    stages = {s.type: s.reached_at for s in flow_facts(database)[ONB].stages}
    assert stages["project.activated"] == h(30)
    assert stages["project.created"] == h(5)


# --- operators against re-evaluation ---


def test_an_operator_resolution_survives_re_evaluation_and_sweeps(database: Database) -> None:
    put(database, signed())
    cycle(database, h(5))
    [stuck] = all_findings(database)
    lead = Principal("finance-lead", frozenset({Role.FINANCE_OPS}))
    acted_at = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)
    with database.write() as connection:
        exceptions.act(connection, stuck.id, "resolve", caller=lead, now=acted_at, note="on it")

    put(database, event("integration.failed", h(6), {"step": "customer.synced"}))
    cycle(database, h(7))  # re-evaluated by an event: the flow is still stuck there
    cycle(database, h(24, 1))  # swept: the next stage falls due too
    put(database, event("customer.synced", h(26), {"customer_id": "CUST-1"}))
    cycle(database, h(27))

    [kept] = all_findings(database, key="customer.synced")
    assert (kept.resolved_by, kept.resolved_at, kept.resolution) == (
        "finance-lead",
        acted_at,
        "on it",
    )
    [project] = all_findings(database, key="project.created")
    assert (project.opened_at, project.resolved_at) == (h(24), None)


def test_a_finding_the_events_withdraw_is_resolved_or_removed(database: Database) -> None:
    """A late, earlier billing plan that matches the contract withdraws the term mismatch: kept and
    resolved by syncwatch when an operator acted on it, removed when nobody did."""
    wrong = {"milestones": [{"milestone_id": "M1", "amount": "1.00"}]}
    right = {"milestones": [{"milestone_id": "M1", "amount": "50000.00"}]}
    other = "Q2C-RUN-2"
    put(
        database,
        signed(),
        event("billing_plan.created", h(30), wrong),
        signed(correlation=other, contract_id="CTR-RUN-2"),
        event("billing_plan.created", h(30), wrong, correlationid=other),
    )
    cycle(database, h(31))
    acked, untouched = all_findings(database, kind="term_mismatch")
    assert (acked.flow_id, untouched.flow_id) == (ONB, f"contract_onboarding:{other}")
    assert (acked.queue, acked.opened_at, acked.resolved_at) == ("finance_ops", h(30), None)
    clerk = Principal("finance-clerk", frozenset({Role.FINANCE_OPS}))
    with database.write() as connection:
        exceptions.act(connection, acked.id, "ack", caller=clerk, now=h(32))

    put(
        database,
        event("billing_plan.created", h(20), right),
        event("billing_plan.created", h(20), right, correlationid=other),
    )
    cycle(database, h(33))
    [withdrawn] = all_findings(database, kind="term_mismatch")
    assert withdrawn.id == acked.id
    assert (withdrawn.resolved_by, withdrawn.resolved_at) == ("syncwatch", h(33))
    assert withdrawn.resolution.startswith("withdrawn")
    assert withdrawn.acknowledged_by == "finance-clerk"  # the operator's action is kept
    with database.write() as connection, pytest.raises(Conflict, match="resolved already"):
        exceptions.act(connection, withdrawn.id, "resolve", caller=clerk, now=h(34))

    put(database, event("billing_plan.created", h(10), wrong))  # earlier still: raised again
    cycle(database, h(35))
    [raised] = all_findings(database, kind="term_mismatch")
    assert (raised.id, raised.opened_at, raised.resolved_at) == (acked.id, h(10), None)


# --- two runner processes at once ---


def _runner_worker(url: str, seed: int, stop: Any, ready: Any, results: Any) -> None:
    """A runner replica in another process: cycles with a fixed now until told to stop."""
    database = Database.from_url(url)
    rng = random.Random(seed)
    done = skipped = picked = 0
    error = None
    try:
        while not stop.is_set():
            report = run_cycle(
                database, DEFAULT_FLOW_TYPES, now=NOW, batch_events=rng.randint(5, 60)
            )
            done += 1
            skipped += report.skipped
            picked += report.events
            if done == 1:
                ready.release()
            time.sleep(rng.random() * 0.01)
    except Exception as failure:  # reported to the test, which fails with it
        error = repr(failure)
        ready.release()
    finally:
        database.dispose()
        results.put((error, done, skipped, picked))


FINDING_COLUMNS = ("kind", "flow_id", "key", "queue", "opened_at", "resolved_at", "resolved_by")


def _snapshot(database: Database) -> tuple[list[Any], ...]:
    """Flows (but when last written), findings (but operator state) and resolved IDs."""
    queries = (
        sa.select(*(c for c in flows.c if c.name != "updated_at")).order_by(flows.c.flow_id),
        sa.select(*(findings.c[n] for n in FINDING_COLUMNS), findings.c.details).order_by(
            findings.c.kind, findings.c.flow_id, findings.c.key
        ),
        sa.select(events.c.source, events.c.event_id, events.c.resolved_correlation_id).order_by(
            events.c.source, events.c.event_id
        ),
    )
    with database.read() as connection:
        return tuple([tuple(row) for row in connection.execute(query)] for query in queries)


def _wipe(database: Database) -> None:
    if database.dialect == "postgresql":
        databases.empty_pg(database)
        return
    with database.write() as connection:
        for table in (events, dead_letters, flows, findings, probe_state):
            connection.execute(table.delete())


@pytest.mark.timeout(60)
def test_two_runner_processes_while_events_arrive_equal_one_runner(database: Database) -> None:
    started = time.monotonic()
    put(database, *EVENTS)
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    ref_flows, ref_findings, ref_links = _snapshot(database)
    assert len(ref_flows) > 200
    assert any(f[5] is not None for f in ref_findings)  # stuck periods that ended before NOW
    _wipe(database)
    assert _snapshot(database) == ([], [], [])

    url = database.engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    stop, ready, results = context.Event(), context.Semaphore(0), context.Queue()
    workers = [
        context.Process(target=_runner_worker, args=(url, seed, stop, ready, results))
        for seed in (1, 2)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            assert ready.acquire(timeout=20), "a runner process did not start"
        rng = random.Random(99)
        stream = EVENTS + rng.sample(EVENTS, 60)
        rng.shuffle(stream)
        for position in range(0, len(stream), 40):
            put(database, *stream[position : position + 40])
            time.sleep(0.02)
    finally:
        stop.set()
        outcomes = [results.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0]
    assert [o[0] for o in outcomes] == [None, None]
    assert sum(o[3] for o in outcomes) > 0  # the replicas did the work, concurrently
    assert all(o[1] >= 1 for o in outcomes)

    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    got_flows, got_findings, got_links = _snapshot(database)
    assert got_links == ref_links
    assert got_flows == ref_flows
    # What the replicas saw on the way (a stage whose event came later, a conflict that an earlier
    # event withdrew) left no trace: the same findings, opened and resolved at the same instants.
    assert got_findings == ref_findings
    assert time.monotonic() - started < 30
