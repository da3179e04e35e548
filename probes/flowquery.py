"""Finding flows as of an instant: the SQL narrows by what is indexed (type, dimensions, T0,
completion, cancellation); the as-of state, stuck stage and queue come from the pure views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.errors import InvalidInput, NotFound
from core.tables import events, findings, flows
from probes.evaluate import INTEGRATION_TYPES, FlowFacts
from probes.facts_codec import facts_from_row
from probes.views import FlowSummary, summarize

STATES = ("open", "stuck", "complete", "cancelled")
SORTS = ("age", "value_at_risk")


@dataclass(frozen=True)
class FlowFilter:
    flow_type: str | None = None
    state: str | None = None
    stage: str | None = None  # the stuck stage
    queue: str | None = None  # the queue of the stuck finding
    legal_entity: str | None = None
    region: str | None = None
    service_line: str | None = None

    @property
    def needs_open(self) -> bool:
        return self.state in ("open", "stuck") or self.stage is not None or self.queue is not None


def _base(flt: FlowFilter, as_of: datetime) -> Any:
    query = sa.select(flows).where(flows.c.t0 <= as_of)
    for column, value in (
        (flows.c.flow_type, flt.flow_type),
        (flows.c.legal_entity, flt.legal_entity),
        (flows.c.region, flt.region),
        (flows.c.service_line, flt.service_line),
    ):
        if value is not None:
            query = query.where(column == value)
    not_complete = sa.or_(flows.c.completed_at.is_(None), flows.c.completed_at > as_of)
    not_cancelled = sa.or_(flows.c.cancelled_at.is_(None), flows.c.cancelled_at > as_of)
    if flt.needs_open:
        query = query.where(not_complete, not_cancelled)
    elif flt.state == "complete":
        query = query.where(flows.c.completed_at <= as_of)
    elif flt.state == "cancelled":
        query = query.where(flows.c.cancelled_at <= as_of, not_complete)
    return query


def list_flows(
    connection: Connection,
    flt: FlowFilter,
    *,
    as_of: datetime,
    sort: str,
    limit: int,
    offset: int,
) -> tuple[int, list[FlowSummary]]:
    """The total matching and one page, sorted by age (oldest first) or value at risk (largest
    first). Open and stuck flows are judged in Python (they are few); the other states page in
    SQL."""
    if sort == "value_at_risk" and not flt.needs_open:
        raise InvalidInput(
            "sort=value_at_risk needs state=open or state=stuck (or a stage or queue)"
        )
    query = _base(flt, as_of)
    if not flt.needs_open:
        total = connection.execute(
            sa.select(sa.func.count()).select_from(query.subquery())
        ).scalar_one()
        rows = connection.execute(
            query.order_by(flows.c.t0, flows.c.flow_id).limit(limit).offset(offset)
        )
        return int(total), [summarize(facts_from_row(row), as_of) for row in rows]
    summaries = [summarize(facts_from_row(row), as_of) for row in connection.execute(query)]
    selected = [
        s
        for s in summaries
        if (flt.state != "open" or s.state in ("open", "stuck"))  # flows.md: stuck flows are open
        and (flt.state != "stuck" or s.state == "stuck")
        and (flt.stage is None or s.stuck_stage == flt.stage)
        and (flt.queue is None or s.queue == flt.queue)
    ]
    if sort == "value_at_risk":
        selected.sort(key=lambda s: (-(s.value_at_risk or 0), s.flow.t0, s.flow.flow_id))
    else:
        selected.sort(key=lambda s: (s.flow.t0, s.flow.flow_id))
    return len(selected), selected[offset : offset + limit]


def get_flow(connection: Connection, flow_id: str) -> FlowFacts:
    row = connection.execute(sa.select(flows).where(flows.c.flow_id == flow_id)).first()
    if row is None:
        raise NotFound(f"no flow {flow_id!r}")
    return facts_from_row(row)


def flow_events(connection: Connection, flow: FlowFacts, as_of: datetime) -> list[dict[str, Any]]:
    """The events of the flow's correlation ID that concern it, up to ``as_of``, in time order."""
    stage_types = {stage.type for stage in flow.stages}
    rows = connection.execute(
        sa.select(
            events.c.seq,
            events.c.source,
            events.c.event_id,
            events.c.type,
            events.c.time,
            events.c.correlation_id,
            events.c.data,
            events.c.received_at,
        )
        .where(events.c.resolved_correlation_id == flow.correlation_id, events.c.time <= as_of)
        .order_by(events.c.time, events.c.source, events.c.event_id)
    )
    key_field = {"amendment_propagation": "amendment_id", "milestone_billing": "milestone_id"}.get(
        flow.flow_type
    )
    result = []
    for row in rows:
        data = row.data or {}
        relevant = (
            row.type in stage_types
            or (row.source, row.event_id) == (flow.start_source, flow.start_event_id)
            or row.type in ("contract.signed", "contract.terminated")
            or (row.type in INTEGRATION_TYPES and data.get("step") in stage_types)
        )
        if relevant and key_field and flow.subkey is not None and key_field in data:
            relevant = data.get(key_field) == flow.subkey or row.type.startswith("contract.")
        if relevant:
            result.append(
                {
                    "seq": row.seq,
                    "source": row.source,
                    "id": row.event_id,
                    "type": row.type,
                    "time": row.time,
                    "received_at": row.received_at,
                    "correlation_id": row.correlation_id,
                    "data": data,
                }
            )
    return result


def flow_findings(connection: Connection, flow_id: str) -> list[Any]:
    return list(
        connection.execute(
            sa.select(findings).where(findings.c.flow_id == flow_id).order_by(findings.c.opened_at)
        )
    )
