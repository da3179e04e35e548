"""The probes' database work: reading events, writing resolved correlation IDs, flows and findings.
Thin: every decision is made by the pure modules (correlate, evaluate)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.events import CanonicalEvent
from core.tables import events, findings, flow_stages, flows, stuck_spans
from probes.evaluate import FindingFacts, FlowFacts, GroupResult
from probes.facts_codec import facts_from_row, flow_row

SYSTEM_ACTOR = "syncwatch"
STUCK = "stuck"
_CHUNK = 500
_MAX_CLOSURE_ROUNDS = 20

#: What correlation reads: no ``data`` (parsing it is most of the cost of reading an event); the
#: fallback keys are the contract_id and project_id columns, copied from it on ingest.
_KEY_COLUMNS = (
    events.c.seq,
    events.c.source,
    events.c.event_id,
    events.c.type,
    events.c.time,
    events.c.correlation_id,
    events.c.resolved_correlation_id,
    events.c.contract_id,
    events.c.project_id,
)
#: What evaluation reads: the keys, the trace context and the data.
_EVENT_COLUMNS = (*_KEY_COLUMNS, events.c.traceparent, events.c.data)


def _chunks(values: Iterable[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(connection: Connection, table: sa.Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def to_event(row: Any) -> CanonicalEvent:
    return CanonicalEvent(
        source=row.source,
        id=row.event_id,
        type=row.type,
        time=row.time,
        data=row.data,
        correlation_id=row.correlation_id,
        traceparent=row.traceparent,
    )


def to_key_event(row: Any) -> CanonicalEvent:
    """The event as :func:`probes.correlate.resolve` reads it (correlation ID, type, time, source,
    id and the fallback keys), from :data:`_KEY_COLUMNS`. The key columns hold ``data``'s value
    where it is a string and NULL otherwise (core.eventstore), so the keys resolve alike."""
    data: dict[str, Any] = {}
    if row.contract_id is not None:
        data["contract_id"] = row.contract_id
    if row.project_id is not None:
        data["project_id"] = row.project_id
    return CanonicalEvent(
        source=row.source,
        id=row.event_id,
        type=row.type,
        time=row.time,
        data=data,
        correlation_id=row.correlation_id,
    )


def load_events_after(connection: Connection, seq: int, limit: int) -> list[Any]:
    """The next events by seq, without ``data``: the runner needs only their keys."""
    query = sa.select(*_KEY_COLUMNS).where(events.c.seq > seq).order_by(events.c.seq).limit(limit)
    return list(connection.execute(query))


def load_key_closure(
    connection: Connection, contract_ids: set[str], project_ids: set[str]
) -> list[Any]:
    """Every event sharing a contract_id or project_id with the seeds, closed under the keys of
    what was loaded: enough to resolve each of them exactly as from the whole store. Rows of
    :data:`_KEY_COLUMNS`, for :func:`to_key_event`."""
    loaded: dict[int, Any] = {}
    seen_contracts: set[str] = set()
    seen_projects: set[str] = set()
    frontier_c, frontier_p = set(contract_ids), set(project_ids)
    for _ in range(_MAX_CLOSURE_ROUNDS):
        frontier_c -= seen_contracts
        frontier_p -= seen_projects
        if not frontier_c and not frontier_p:
            break
        seen_contracts |= frontier_c
        seen_projects |= frontier_p
        rows: list[Any] = []
        for chunk in _chunks(frontier_c):
            rows += connection.execute(
                sa.select(*_KEY_COLUMNS).where(events.c.contract_id.in_(chunk))
            ).all()
        for chunk in _chunks(frontier_p):
            rows += connection.execute(
                sa.select(*_KEY_COLUMNS).where(events.c.project_id.in_(chunk))
            ).all()
        frontier_c, frontier_p = set(), set()
        for row in rows:
            if row.seq in loaded:
                continue
            loaded[row.seq] = row
            if row.contract_id:
                frontier_c.add(row.contract_id)
            if row.project_id:
                frontier_p.add(row.project_id)
    return list(loaded.values())


def correlations_with_events_after(
    connection: Connection, seq: int, correlation_ids: Iterable[str]
) -> set[str]:
    """Those of ``correlation_ids`` that events after ``seq`` name explicitly."""
    found: set[str] = set()
    for chunk in _chunks(correlation_ids):
        rows = connection.execute(
            sa.select(events.c.correlation_id)
            .where(events.c.seq > seq, events.c.correlation_id.in_(chunk))
            .distinct()
        )
        found.update(row.correlation_id for row in rows)
    return found


def set_resolved(connection: Connection, changes: Mapping[int, str | None]) -> None:
    if not changes:
        return
    statement = (
        events.update()
        .where(events.c.seq == sa.bindparam("b_seq"))
        .values(resolved_correlation_id=sa.bindparam("b_corr"))
    )
    connection.execute(statement, [{"b_seq": seq, "b_corr": corr} for seq, corr in changes.items()])


def load_groups(
    connection: Connection, correlation_ids: Sequence[str]
) -> dict[str, list[CanonicalEvent]]:
    groups: dict[str, list[CanonicalEvent]] = {c: [] for c in correlation_ids}
    rows = connection.execute(
        sa.select(*_EVENT_COLUMNS).where(events.c.resolved_correlation_id.in_(correlation_ids))
    )
    for row in rows:
        groups[row.resolved_correlation_id].append(to_event(row))
    return groups


def save_groups(
    connection: Connection,
    correlation_ids: Sequence[str],
    results: Mapping[str, GroupResult],
    now: datetime,
) -> tuple[list[FlowFacts], list[FlowFacts]]:
    """Write the flows and findings of these correlation IDs; remove flows that no longer exist.
    Returns every flow evaluated, and those whose facts changed (only these are rewritten, with
    their stages and stuck spans: an event for one milestone leaves its contract's other flows
    as they were)."""
    stored = {
        row.flow_id: row.facts_hash
        for row in connection.execute(
            sa.select(flows.c.flow_id, flows.c.facts_hash).where(
                flows.c.correlation_id.in_(correlation_ids)
            )
        )
    }
    all_flows = [flow for result in results.values() for flow in result.flows]
    current = {flow.flow_id for flow in all_flows}
    stale = set(stored) - current
    if stale:
        connection.execute(flows.delete().where(flows.c.flow_id.in_(stale)))
        _delete_derived(connection, stale)
    rows = [flow_row(f, next_check_at=_next_check(f, now), now=now) for f in all_flows]
    changed = [
        (flow, row)
        for flow, row in zip(all_flows, rows, strict=True)
        if stored.get(flow.flow_id) != row["facts_hash"]
    ]
    if changed:
        _write_flows(connection, [flow for flow, _ in changed], [row for _, row in changed])
    desired = [finding for result in results.values() for finding in result.findings]
    sync_findings(connection, all_flows, desired, now, gone=stale)
    return all_flows, [flow for flow, _ in changed]


def _next_check(flow: FlowFacts, now: datetime) -> datetime | None:
    """When the sweep must look at the flow again: its next pending deadline or, sooner, the time
    of an event stamped after ``now`` (a source clock ahead of ours) that reaches a stage, ends the
    flow or changes a stage's middleware outcome: time alone changes its findings then too."""
    ends = [t for t in (flow.completed_at, flow.cancelled_at) if t is not None]
    if ends and min(ends) <= now:
        return None
    instants = (
        *ends,
        *(stage.reached_at for stage in flow.stages),
        *(mark.time for stage in flow.stages for mark in stage.integration),
    )
    ahead = [t for t in instants if t is not None and t > now]
    deadline = flow.next_check_at(now)
    if deadline is not None:
        ahead.append(deadline)  # may be exactly now: a deadline is passed only after it
    return min(ahead) if ahead else None


def _write_flows(
    connection: Connection, facts: Sequence[FlowFacts], rows: Sequence[dict[str, Any]]
) -> None:
    """Upsert the flow rows and rewrite their stages and stuck spans."""
    insert = _insert(connection, flows)
    columns = {name: insert.excluded[name] for name in rows[0] if name != "flow_id"}
    connection.execute(insert.on_conflict_do_update(index_elements=["flow_id"], set_=columns), rows)
    _delete_derived(connection, [f.flow_id for f in facts])
    stage_rows, span_rows = derived_rows(facts)
    if stage_rows:
        connection.execute(flow_stages.insert(), stage_rows)
    if span_rows:
        connection.execute(stuck_spans.insert(), span_rows)


def derived_rows(facts: Sequence[FlowFacts]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``flow_stages`` and ``stuck_spans`` rows of these flows (see core.tables)."""
    stage_rows = []
    span_rows = []
    for flow in facts:
        ended_at = flow.completed_at or flow.cancelled_at
        for index, stage in enumerate(flow.stages):
            stage_rows.append(
                {
                    "flow_id": flow.flow_id,
                    "idx": index,
                    "flow_type": flow.flow_type,
                    "stage": stage.type,
                    "t0": flow.t0,
                    "deadline_at": stage.deadline_at,
                    "reached_at": stage.reached_at,
                    "ended_at": ended_at,
                }
            )
        for index, span in enumerate(flow.stuck_spans()):
            span_rows.append(
                {
                    "flow_id": flow.flow_id,
                    "seq": index,
                    "flow_type": flow.flow_type,
                    "stage": span.stage,
                    "queue": span.queue,
                    "opened_at": span.opened_at,
                    "since": span.since,
                    "until": span.until,
                    "legal_entity": flow.legal_entity,
                    "region": flow.region,
                    "service_line": flow.service_line,
                    "value": None if flow.value is None else str(flow.value),
                    "currency": flow.currency,
                }
            )
    return stage_rows, span_rows


def _delete_derived(connection: Connection, flow_ids: Iterable[str]) -> None:
    for chunk in _chunks(flow_ids):
        connection.execute(flow_stages.delete().where(flow_stages.c.flow_id.in_(chunk)))
        connection.execute(stuck_spans.delete().where(stuck_spans.c.flow_id.in_(chunk)))


def _touched(row: Any) -> bool:
    """Whether an operator acted on the finding: then the runner never deletes it."""
    operator_resolved = row.resolved_at is not None and row.resolved_by != SYSTEM_ACTOR
    return row.acknowledged_at is not None or row.assignee is not None or operator_resolved


def _stuck_findings(
    flow: FlowFacts, now: datetime
) -> list[tuple[FindingFacts, datetime | None, str]]:
    """The stuck findings of a flow up to ``now``, with when and why each resolved by itself."""
    result = []
    for period in flow.stuck_periods(now):
        stage = period.stage
        finding = FindingFacts(
            STUCK, flow.flow_id, period.queue, period.opened_at, stage.type, {"stage": stage.type}
        )
        why = ""
        if period.ended_at is not None:
            if stage.reached_at == period.ended_at:
                why = "stage reached"
            else:
                why = "flow complete" if flow.completed_at == period.ended_at else "flow cancelled"
        result.append((finding, period.ended_at, why))
    return result


def sync_findings(
    connection: Connection,
    flow_facts: Sequence[FlowFacts],
    operator_findings: Sequence[FindingFacts],
    now: datetime,
    *,
    gone: Iterable[str] = (),
) -> None:
    """Make the findings table say what the events say: the operator findings they raise, and
    each flow's stuck findings up to ``now`` (resolved by ``syncwatch`` at the event time that
    ended them). A finding the events no longer raise is deleted, unless an operator acted on it:
    then it is kept, resolved as withdrawn. Operators' actions are never undone."""
    flow_ids = [flow.flow_id for flow in flow_facts] + list(gone)
    if not flow_ids:
        return
    wanted: dict[tuple[str, str, str], tuple[FindingFacts, datetime | None, str]] = {
        (f.kind, f.flow_id, f.key): (f, None, "") for f in operator_findings
    }
    for flow in flow_facts:
        for finding, ended_at, why in _stuck_findings(flow, now):
            wanted[(finding.kind, finding.flow_id, finding.key)] = (finding, ended_at, why)
    existing: dict[tuple[str, str, str], Any] = {}
    for chunk in _chunks(flow_ids):
        for stored in connection.execute(sa.select(findings).where(findings.c.flow_id.in_(chunk))):
            existing[(stored.kind, stored.flow_id, stored.key)] = stored

    inserts: list[dict[str, Any]] = []
    for key, (finding, ended_at, why) in wanted.items():
        system_state = {
            "resolved_at": ended_at,
            "resolved_by": SYSTEM_ACTOR if ended_at is not None else None,
            "resolution": why or None,
        }
        row = existing.get(key)
        if row is None:
            inserts.append(
                {
                    "kind": finding.kind,
                    "flow_id": finding.flow_id,
                    "key": finding.key,
                    "queue": finding.queue,
                    "opened_at": finding.opened_at,
                    "details": finding.details,
                    "created_at": now,
                    **system_state,
                }
            )
            continue
        values: dict[str, Any] = {}
        if row.queue != finding.queue:
            values["queue"] = finding.queue
        if row.opened_at != finding.opened_at:
            values["opened_at"] = finding.opened_at
        if row.details != finding.details:
            values["details"] = finding.details
        operator_resolved = row.resolved_at is not None and row.resolved_by != SYSTEM_ACTOR
        if not operator_resolved and (row.resolved_at, row.resolution) != (
            system_state["resolved_at"],
            system_state["resolution"],
        ):
            values.update(system_state)
        if values:
            connection.execute(findings.update().where(findings.c.id == row.id).values(**values))
    if inserts:
        connection.execute(findings.insert(), inserts)

    for key, row in existing.items():
        if key in wanted:
            continue
        if not _touched(row):
            connection.execute(findings.delete().where(findings.c.id == row.id))
        elif row.resolved_at is None:
            connection.execute(
                findings.update()
                .where(findings.c.id == row.id)
                .values(
                    resolved_at=now,
                    resolved_by=SYSTEM_ACTOR,
                    resolution="withdrawn: the events no longer raise it",
                )
            )


def sweep_due(
    connection: Connection, now: datetime, *, exclude: set[str], limit: int = 5000
) -> list[FlowFacts]:
    """Re-evaluate, as of ``now``, the flows whose next deadline has passed (no event needed);
    return them."""
    rows = connection.execute(
        sa.select(flows)
        .where(flows.c.next_check_at < now)
        .order_by(flows.c.next_check_at)
        .limit(limit)
    ).all()
    due = [facts_from_row(row) for row in rows if row.flow_id not in exclude]
    if not due:
        return []
    existing_operator = _operator_findings_of(connection, [f.flow_id for f in due])
    sync_findings(connection, due, existing_operator, now)
    statement = (
        flows.update()
        .where(flows.c.flow_id == sa.bindparam("b_id"))
        .values(next_check_at=sa.bindparam("b_next"), updated_at=now)
    )
    connection.execute(statement, [{"b_id": f.flow_id, "b_next": _next_check(f, now)} for f in due])
    return due


def _operator_findings_of(connection: Connection, flow_ids: Sequence[str]) -> list[FindingFacts]:
    """The operator findings already stored (a sweep changes only stuck findings)."""
    result = []
    for chunk in _chunks(flow_ids):
        rows = connection.execute(
            sa.select(findings).where(findings.c.flow_id.in_(chunk), findings.c.kind != STUCK)
        )
        for row in rows:
            if row.resolved_at is not None and row.resolved_by == SYSTEM_ACTOR:
                continue  # withdrawn: an operator acted on it, and the events no longer raise it
            result.append(
                FindingFacts(
                    row.kind, row.flow_id, row.queue, row.opened_at, row.key, row.details or {}
                )
            )
    return result
