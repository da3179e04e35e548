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
from core.tables import events, findings, flows
from probes.evaluate import FindingFacts, FlowFacts, GroupResult
from probes.facts_codec import facts_from_row, flow_row

SYSTEM_ACTOR = "syncwatch"
STUCK = "stuck"
_CHUNK = 500
_MAX_CLOSURE_ROUNDS = 20

_EVENT_COLUMNS = (
    events.c.seq,
    events.c.source,
    events.c.event_id,
    events.c.type,
    events.c.time,
    events.c.correlation_id,
    events.c.resolved_correlation_id,
    events.c.contract_id,
    events.c.project_id,
    events.c.traceparent,
    events.c.data,
)


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


def load_events_after(connection: Connection, seq: int, limit: int) -> list[Any]:
    query = sa.select(*_EVENT_COLUMNS).where(events.c.seq > seq).order_by(events.c.seq).limit(limit)
    return list(connection.execute(query))


def load_key_closure(
    connection: Connection, contract_ids: set[str], project_ids: set[str]
) -> list[Any]:
    """Every event sharing a contract_id or project_id with the seeds, closed under the keys of
    what was loaded: enough to resolve each of them exactly as from the whole store."""
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
                sa.select(*_EVENT_COLUMNS).where(events.c.contract_id.in_(chunk))
            ).all()
        for chunk in _chunks(frontier_p):
            rows += connection.execute(
                sa.select(*_EVENT_COLUMNS).where(events.c.project_id.in_(chunk))
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
) -> set[str]:
    """Write the flows and findings of these correlation IDs; remove flows that no longer exist."""
    existing = {
        row.flow_id
        for row in connection.execute(
            sa.select(flows.c.flow_id).where(flows.c.correlation_id.in_(correlation_ids))
        )
    }
    all_flows = [flow for result in results.values() for flow in result.flows]
    current = {flow.flow_id for flow in all_flows}
    stale = existing - current
    if stale:
        connection.execute(flows.delete().where(flows.c.flow_id.in_(stale)))
    if all_flows:
        upsert_flows(connection, all_flows, now)
    desired = [finding for result in results.values() for finding in result.findings]
    sync_findings(connection, all_flows, desired, now, gone=stale)
    return current


def upsert_flows(connection: Connection, facts: Sequence[FlowFacts], now: datetime) -> None:
    rows = [flow_row(f, next_check_at=f.next_check_at(now), now=now) for f in facts]
    insert = _insert(connection, flows)
    columns = {name: insert.excluded[name] for name in rows[0] if name != "flow_id"}
    connection.execute(insert.on_conflict_do_update(index_elements=["flow_id"], set_=columns), rows)


def _stuck_finding(flow: FlowFacts, now: datetime) -> FindingFacts | None:
    stage = flow.stuck_stage(now)
    if stage is None:
        return None
    queue = flow.stuck_queue(now) or stage.queue
    return FindingFacts(
        STUCK, flow.flow_id, queue, stage.deadline_at, stage.type, {"stage": stage.type}
    )


def _self_resolved_at(
    flow: FlowFacts | None, stage_type: str, now: datetime
) -> tuple[datetime, str]:
    """When a stuck finding stopped holding (an event-time instant), and why."""
    if flow is None:
        return now, "the flow no longer exists"
    candidates = []
    stage = next((s for s in flow.stages if s.type == stage_type), None)
    if stage is not None and stage.reached_at is not None:
        candidates.append((stage.reached_at, "stage reached"))
    if flow.completed_at is not None:
        candidates.append((flow.completed_at, "flow complete"))
    if flow.cancelled_at is not None:
        candidates.append((flow.cancelled_at, "flow cancelled"))
    return min(candidates) if candidates else (now, "no longer stuck")


def sync_findings(
    connection: Connection,
    flow_facts: Sequence[FlowFacts],
    operator_findings: Sequence[FindingFacts],
    now: datetime,
    *,
    gone: Iterable[str] = (),
) -> None:
    """Make the findings table match: the operator findings the events raise, and each flow's
    stuck finding as of ``now``. Findings that no longer hold are resolved by ``syncwatch``
    (operators' acknowledgements and assignments stay)."""
    by_flow = {flow.flow_id: flow for flow in flow_facts}
    flow_ids = list(by_flow) + list(gone)
    if not flow_ids:
        return
    desired = list(operator_findings)
    for flow in flow_facts:
        stuck = _stuck_finding(flow, now)
        if stuck is not None:
            desired.append(stuck)
    wanted = {(f.kind, f.flow_id, f.key): f for f in desired}
    existing: dict[tuple[str, str, str], Any] = {}
    for chunk in _chunks(flow_ids):
        for stored in connection.execute(sa.select(findings).where(findings.c.flow_id.in_(chunk))):
            existing[(stored.kind, stored.flow_id, stored.key)] = stored

    inserts: list[dict[str, Any]] = []
    for key, finding in wanted.items():
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
        if row.resolved_at is not None and row.resolved_by == SYSTEM_ACTOR:
            values.update(resolved_at=None, resolved_by=None, resolution=None)
        if values:
            connection.execute(findings.update().where(findings.c.id == row.id).values(**values))
    if inserts:
        connection.execute(findings.insert(), inserts)

    for key, row in existing.items():
        if key in wanted or row.resolved_at is not None:
            continue
        if row.kind == STUCK:
            at, why = _self_resolved_at(by_flow.get(row.flow_id), row.key, now)
        else:
            at, why = now, "withdrawn: the events no longer raise it"
        connection.execute(
            findings.update()
            .where(findings.c.id == row.id)
            .values(resolved_at=at, resolved_by=SYSTEM_ACTOR, resolution=why)
        )


def sweep_due(
    connection: Connection, now: datetime, *, exclude: set[str], limit: int = 5000
) -> int:
    """Re-evaluate, as of ``now``, the flows whose next deadline has passed (no event needed)."""
    rows = connection.execute(
        sa.select(flows)
        .where(flows.c.next_check_at < now)
        .order_by(flows.c.next_check_at)
        .limit(limit)
    ).all()
    due = [facts_from_row(row) for row in rows if row.flow_id not in exclude]
    if not due:
        return 0
    existing_operator = _operator_findings_of(connection, [f.flow_id for f in due])
    sync_findings(connection, due, existing_operator, now)
    statement = (
        flows.update()
        .where(flows.c.flow_id == sa.bindparam("b_id"))
        .values(next_check_at=sa.bindparam("b_next"), updated_at=now)
    )
    connection.execute(
        statement, [{"b_id": f.flow_id, "b_next": f.next_check_at(now)} for f in due]
    )
    return len(due)


def _operator_findings_of(connection: Connection, flow_ids: Sequence[str]) -> list[FindingFacts]:
    """The operator findings already stored (a sweep changes only stuck findings)."""
    result = []
    for chunk in _chunks(flow_ids):
        rows = connection.execute(
            sa.select(findings).where(findings.c.flow_id.in_(chunk), findings.c.kind != STUCK)
        )
        for row in rows:
            if row.resolved_at is not None and row.resolved_by == SYSTEM_ACTOR:
                continue  # withdrawn: stays withdrawn until the events raise it again
            result.append(
                FindingFacts(
                    row.kind, row.flow_id, row.queue, row.opened_at, row.key, row.details or {}
                )
            )
    return result
