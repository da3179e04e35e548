"""``GET /v1/kpis`` and ``GET /v1/kpis/series`` (kpis.md), for readers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from core.apikeys import Principal
from core.roles import READERS
from core.web import ClockDep, DatabaseDep, ExactJSONResponse, SettingsDep, require
from kpis import service

router = APIRouter(prefix="/v1", default_response_class=ExactJSONResponse, tags=["kpis"])

Reader = Annotated[Principal, Depends(require(*READERS))]
Dimension = Annotated[
    str | None, Query(pattern="^(legal_entity|region|service_line)$", description="group by")
]
Filter = Annotated[str | None, Query(max_length=255)]
Further = Annotated[
    bool, Query(description="include funnel, stage_misses, data_quality and replays")
]


@router.get("/kpis")
async def get_kpis(
    request: Request,
    caller: Reader,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: ClockDep,
    as_of: Annotated[datetime | None, Query(description="RFC 3339; default now")] = None,
    window: Annotated[str | None, Query(description="Nd or Nh; default 7d")] = None,
    start: Annotated[datetime | None, Query(description="RFC 3339, instead of window")] = None,
    group_by: Dimension = None,
    legal_entity: Filter = None,
    region: Filter = None,
    service_line: Filter = None,
    further: Further = True,
) -> Any:
    """The KPIs as of ``as_of`` over the window (as_of - window, as_of] or (start, as_of]."""
    query = service.make_query(
        as_of=clock() if as_of is None else as_of,
        window=window,
        start=start,
        group_by=group_by,
        filters={"legal_entity": legal_entity, "region": region, "service_line": service_line},
        further=further,
    )
    return await run_in_threadpool(
        service.kpis,
        database,
        request.app.state.flow_types,
        query,
        sources=settings.sources,
    )


@router.get("/kpis/series")
async def get_kpis_series(
    request: Request,
    caller: Reader,
    database: DatabaseDep,
    settings: SettingsDep,
    from_: Annotated[datetime, Query(alias="from", description="RFC 3339, the first as_of")],
    to: Annotated[datetime, Query(description="RFC 3339, the last as_of at most")],
    step: Annotated[str, Query(description="Nd or Nh")] = "1d",
    window: Annotated[str | None, Query(description="Nd or Nh; default 7d")] = None,
    group_by: Dimension = None,
    legal_entity: Filter = None,
    region: Filter = None,
    service_line: Filter = None,
    further: Further = True,
) -> Any:
    """The answer of ``/v1/kpis`` at as_of = from, from + step, ... up to ``to``, as a list."""
    first = service.make_query(as_of=from_, window=window).as_of
    last = service.make_query(as_of=to, window=window).as_of
    instants = service.series_instants(first, last, service.parse_span(step, "step"))
    filters = {"legal_entity": legal_entity, "region": region, "service_line": service_line}
    queries = [
        service.make_query(
            as_of=instant, window=window, group_by=group_by, filters=filters, further=further
        )
        for instant in instants
    ]
    return await run_in_threadpool(
        service.series, database, request.app.state.flow_types, queries, sources=settings.sources
    )
