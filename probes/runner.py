"""The probe runner: one cycle picks up the events ingested since the last cycle (by ingest
sequence number), resolves correlation IDs where new links appeared, re-evaluates the correlation
IDs those events touch, then sweeps the flows whose next deadline has passed, so that a flow becomes
stuck with no new event at all. Its work grows with what is new and what fell due, never with the
history.

A cycle is one transaction. On PostgreSQL it first takes an advisory lock and skips the cycle when
another replica holds it; on SQLite write transactions are exclusive. So any number of replicas
can run cycles: none does work twice and no update is lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.db import Database
from core.tables import events, probe_state
from probes import flowstore, outcomes
from probes.correlate import resolve
from probes.evaluate import FlowFacts, evaluate_group
from probes.flowtypes import FlowType

log = logging.getLogger("syncwatch.probes")

PROBE_LOCK_KEY = 0x5357_5052  # "SWPR"
STATE_NAME = "probe"
LINKING_TYPES = ("contract.signed", "project.created")
_CHUNK = 500


@dataclass(frozen=True)
class CycleReport:
    skipped: bool  # another replica was running a cycle
    events: int  # new events picked up
    correlations: int  # correlation IDs re-evaluated
    swept: int  # flows re-evaluated because a deadline passed
    last_seq: int
    more: bool  # the batch limit was hit: run again
    seconds: float


def _take_lock(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return True
    return bool(
        connection.execute(sa.select(sa.func.pg_try_advisory_xact_lock(PROBE_LOCK_KEY))).scalar()
    )


def _last_seq(connection: Connection) -> int:
    row = connection.execute(
        sa.select(probe_state.c.last_seq).where(probe_state.c.name == STATE_NAME)
    ).first()
    if row is None:
        connection.execute(probe_state.insert().values(name=STATE_NAME, last_seq=0))
        return 0
    return int(row.last_seq)


def run_cycle(
    database: Database,
    flow_types: Sequence[FlowType],
    *,
    now: datetime,
    batch_events: int = 5000,
    traces: bool = False,
) -> CycleReport:
    """One cycle as of ``now``. With ``traces``, flows whose trace state changed are marked for
    the OpenTelemetry exporter."""
    started = time.perf_counter()
    with database.write() as connection:
        if not _take_lock(connection):
            return CycleReport(True, 0, 0, 0, 0, False, time.perf_counter() - started)
        last_seq = _last_seq(connection)
        new = flowstore.load_events_after(connection, last_seq, batch_events)
        affected = _correlate(connection, new, last_seq)
        new_last = new[-1].seq if new else last_seq
        if len(new) >= batch_events:
            # Catching up on a backlog: a correlation ID that has events still waiting is
            # evaluated when the last of them is taken (it names the ID), not once per batch.
            affected -= flowstore.correlations_with_events_after(connection, new_last, affected)
        buckets = outcomes.duration_buckets(flow_types)
        outcomes.ensure_buckets(connection, buckets)
        changed = _evaluate(connection, flow_types, affected, now)
        # flows whose facts did not change were not rewritten: the sweep looks at them as usual
        swept = flowstore.sweep_due(connection, now, exclude={f.flow_id for f in changed})
        outcomes.record(connection, [*changed, *swept], now, buckets=buckets, traces=traces)
        connection.execute(
            probe_state.update()
            .where(probe_state.c.name == STATE_NAME)
            .values(last_seq=new_last, last_cycle_at=now)
        )
    report = CycleReport(
        skipped=False,
        events=len(new),
        correlations=len(affected),
        swept=len(swept),
        last_seq=new_last,
        more=len(new) >= batch_events,
        seconds=time.perf_counter() - started,
    )
    if report.events or report.swept:
        log.info(
            "probe cycle: %d events, %d correlation IDs, %d flows swept, %.3f s",
            report.events,
            report.correlations,
            report.swept,
            report.seconds,
        )
    return report


def run_until_idle(
    database: Database,
    flow_types: Sequence[FlowType],
    *,
    now: datetime,
    batch_events: int = 5000,
    max_cycles: int = 10_000,
    traces: bool = False,
) -> list[CycleReport]:
    """Cycles until no new event is left (bounded by ``max_cycles``)."""
    reports = []
    for _ in range(max_cycles):
        report = run_cycle(database, flow_types, now=now, batch_events=batch_events, traces=traces)
        reports.append(report)
        if not report.more:
            break
    return reports


def _correlate(connection: Connection, new: Sequence[Any], last_seq: int) -> set[str]:
    """Set ``resolved_correlation_id`` where it is new or changed; return every correlation ID
    whose set of events changed (old and new ones)."""
    if not new:
        return set()
    affected: set[str] = {row.correlation_id for row in new if row.correlation_id}
    connection.execute(
        events.update()
        .where(
            events.c.seq > last_seq,
            events.c.seq <= new[-1].seq,
            events.c.correlation_id.is_not(None),
        )
        .values(resolved_correlation_id=events.c.correlation_id)
    )
    seed_contracts: set[str] = set()
    seed_projects: set[str] = set()
    for row in new:
        if row.correlation_id is None or row.type in LINKING_TYPES:
            if row.contract_id:
                seed_contracts.add(row.contract_id)
            if row.project_id:
                seed_projects.add(row.project_id)
    if not seed_contracts and not seed_projects:
        return affected
    pool = flowstore.load_key_closure(connection, seed_contracts, seed_projects)
    resolved = resolve(flowstore.to_key_event(row) for row in pool)
    changes: dict[int, str | None] = {}
    for row in pool:
        if row.correlation_id is not None:
            continue
        found = resolved[(row.source, row.event_id)]
        if found != row.resolved_correlation_id:
            changes[row.seq] = found
            if row.resolved_correlation_id is not None:
                affected.add(row.resolved_correlation_id)
        if found is not None:
            affected.add(found)
    flowstore.set_resolved(connection, changes)
    return affected


def _evaluate(
    connection: Connection, flow_types: Sequence[FlowType], affected: set[str], now: datetime
) -> list[FlowFacts]:
    """Re-evaluate every flow of the affected correlation IDs; return those whose facts changed."""
    evaluated: list[FlowFacts] = []
    ordered = sorted(affected)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        by_correlation = flowstore.load_groups(connection, chunk)
        results = {
            correlation: evaluate_group(correlation, group, flow_types)
            for correlation, group in by_correlation.items()
        }
        evaluated += flowstore.save_groups(connection, chunk, results, now)[1]
    return evaluated
