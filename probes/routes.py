"""HTTP routes of the probes: flows as of an instant, and the role queues of findings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from core import replaystore
from core.apikeys import Principal
from core.db import Database
from core.errors import InvalidInput
from core.roles import READERS, Role
from core.web import ClockDep, DatabaseDep, ExactJSONResponse, require
from probes import exceptions, flowquery
from probes.exceptions import ExceptionFilter
from probes.flowquery import FlowFilter
from probes.views import summarize, timeline

router = APIRouter(prefix="/v1", default_response_class=ExactJSONResponse)

Reader = Annotated[Principal, Depends(require(*READERS))]
#: Any queue role may try to act; the finding's own queue decides (probes.exceptions).
Actor = Annotated[
    Principal, Depends(require(Role.FINANCE_OPS, Role.LEGAL_OPS, Role.PMO, Role.ONCALL))
]


def _as_of(value: datetime | None, clock: Any) -> datetime:
    if value is None:
        now: datetime = clock()
        return now
    if value.tzinfo is None:
        raise InvalidInput("as_of: must be RFC 3339 with an offset (Z or +hh:mm)")
    return value


@router.get("/flows", tags=["flows"])
def list_flows(
    caller: Reader,
    database: DatabaseDep,
    clock: ClockDep,
    type: str | None = None,
    state: Annotated[str | None, Query(pattern="^(open|stuck|complete|cancelled)$")] = None,
    stage: Annotated[str | None, Query(description="flows stuck at this stage")] = None,
    queue: Annotated[str | None, Query(description="flows stuck in this queue")] = None,
    legal_entity: str | None = None,
    region: str | None = None,
    service_line: str | None = None,
    as_of: Annotated[datetime | None, Query(description="RFC 3339; default now")] = None,
    sort: Annotated[str, Query(pattern="^(age|value_at_risk)$")] = "age",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Flows that exist as of ``as_of`` (T0 <= as_of), filtered and paginated; oldest first, or
    largest value at risk first. Each with its state, stuck stage, queue, age and value at risk."""
    instant = _as_of(as_of, clock)
    flt = FlowFilter(type, state, stage, queue, legal_entity, region, service_line)
    with database.read() as connection:
        total, page = flowquery.list_flows(
            connection, flt, as_of=instant, sort=sort, limit=limit, offset=offset
        )
    return {
        "as_of": instant,
        "total": total,
        "offset": offset,
        "limit": limit,
        "items": [summary.as_dict() for summary in page],
    }


@router.get("/flows/{flow_id:path}", tags=["flows"])
def get_flow(
    flow_id: str,
    caller: Reader,
    database: DatabaseDep,
    clock: ClockDep,
    as_of: Annotated[datetime | None, Query(description="RFC 3339; default now")] = None,
) -> dict[str, Any]:
    """One flow as of ``as_of``: T0, deadline, every stage with its deadline and reached time, its
    events, its findings and its replays."""
    instant = _as_of(as_of, clock)
    with database.read() as connection:
        flow = flowquery.get_flow(connection, flow_id)
        events = flowquery.flow_events(connection, flow, instant)
        rows = flowquery.flow_findings(connection, flow_id)
        replays = replaystore.of_flow(connection, flow_id)
    body = summarize(flow, instant).as_dict() if flow.exists(instant) else {"state": "not_started"}
    return {
        **body,
        "flow_id": flow.flow_id,
        "as_of": instant,
        "stages": timeline(flow, instant),
        "events": events,
        "findings": [exceptions.as_dict(row, instant) for row in rows],
        "replays": replays,
        "traceparents": list(flow.traceparents),
    }


@router.get("/exceptions", tags=["exceptions"])
def list_exceptions(
    caller: Reader,
    database: DatabaseDep,
    clock: ClockDep,
    queue: Annotated[
        str | None, Query(pattern="^(finance_ops|legal_ops|pmo|integration_oncall)$")
    ] = None,
    kind: str | None = None,
    status: Annotated[
        str, Query(pattern="^(open|acknowledged|unacknowledged|resolved|all)$")
    ] = "open",
    assignee: str | None = None,
    flow_id: str | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Findings in the role queues, newest first, with their age and aging bucket (kpis.md)."""
    now = clock()
    flt = ExceptionFilter(queue, kind, status, assignee, flow_id)
    with database.read() as connection:
        rows = exceptions.listing(connection, flt, before_id=before_id, limit=limit, now=now)
    return {
        "items": [exceptions.as_dict(row, now) for row in rows],
        "next_before_id": rows[-1].id if len(rows) == limit else None,
    }


class AssignBody(BaseModel):
    assignee: str = Field(min_length=1, max_length=255)


class ResolveBody(BaseModel):
    resolution: str | None = Field(default=None, max_length=2000)


def _act(
    database: Database, finding_id: int, action: str, caller: Principal, now: datetime, **extra: Any
) -> dict[str, Any]:
    with database.write() as connection:
        exceptions.act(connection, finding_id, action, caller=caller, now=now, **extra)
        row = exceptions.get(connection, finding_id)
    return exceptions.as_dict(row, now)


@router.post("/exceptions/{finding_id}/ack", tags=["exceptions"])
async def acknowledge(
    finding_id: int, caller: Actor, database: DatabaseDep, clock: ClockDep
) -> dict[str, Any]:
    """Acknowledge a finding of your queue (or as admin). Audited."""
    return await run_in_threadpool(_act, database, finding_id, "ack", caller, clock())


@router.post("/exceptions/{finding_id}/assign", tags=["exceptions"])
async def assign(
    finding_id: int, body: AssignBody, caller: Actor, database: DatabaseDep, clock: ClockDep
) -> dict[str, Any]:
    """Assign a finding of your queue to a person or team. Audited."""
    return await run_in_threadpool(
        _act, database, finding_id, "assign", caller, clock(), assignee=body.assignee
    )


@router.post("/exceptions/{finding_id}/resolve", tags=["exceptions"])
async def resolve(
    finding_id: int,
    caller: Actor,
    database: DatabaseDep,
    clock: ClockDep,
    body: ResolveBody | None = None,
) -> dict[str, Any]:
    """Resolve a finding of your queue, with an optional note; 409 when resolved. Audited."""
    note = body.resolution if body is not None else None
    return await run_in_threadpool(
        _act, database, finding_id, "resolve", caller, clock(), note=note
    )
