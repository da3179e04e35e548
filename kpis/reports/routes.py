"""``GET /v1/reports`` and ``GET /v1/reports/{week}.{html,pdf,md}`` (api.md), for readers.

A complete past week whose report is not kept (yet, or in that format) is made on demand, kept and
served; a week that has not ended yet has no report (404, saying when it can be made)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from core.apikeys import Principal
from core.errors import NotFound
from core.roles import READERS
from core.web import ClockDep, DatabaseDep, ExactJSONResponse, SettingsDep, require
from kpis.reports import store
from kpis.reports.produce import Maker, produce
from kpis.reports.week import IsoWeek, parse_week, week_of, window

router = APIRouter(prefix="/v1", default_response_class=ExactJSONResponse, tags=["reports"])

Reader = Annotated[Principal, Depends(require(*READERS))]


class Format(StrEnum):
    HTML = "html"
    PDF = "pdf"
    MD = "md"


@router.get("/reports")
async def list_reports(caller: Reader, database: DatabaseDep, settings: SettingsDep) -> Any:
    """The kept weekly reports, the newest week first: each week's formats, when it was made, and
    its ``start`` and ``end`` (Monday 00:00 local time in ``reports.timezone``, in UTC)."""

    def read() -> list[store.StoredWeek]:
        with database.read() as connection:
            return store.list_weeks(connection)

    tz = settings.reports.tz
    items = []
    for kept in await run_in_threadpool(read):
        span = window(parse_week(kept.week), tz)
        items.append(
            {
                "week": kept.week,
                "formats": list(kept.formats),
                "generated_at": kept.generated_at,
                "start": span.start,
                "end": span.as_of,
            }
        )
    return {
        "items": items,
        "timezone": settings.reports.timezone,
        "keep_weeks": settings.reports.keep_weeks,
    }


@router.get(
    "/reports/{week}.{fmt}",
    response_class=Response,
    responses={
        200: {
            "description": "the report, as an attachment",
            "content": {media: {} for media in store.MEDIA_TYPES.values()},
        },
        404: {"description": "the week has not ended yet"},
        422: {"description": "not an ISO week such as 2026-W48, or an unknown format"},
    },
)
async def get_report(
    request: Request,
    caller: Reader,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: ClockDep,
    week: Annotated[str, Path(description="an ISO week such as 2026-W48", max_length=20)],
    fmt: Annotated[Format, Path(description="html, pdf or md")],
) -> Response:
    """The week's report in one format: kept bytes, or made now when the week is complete."""
    wanted = parse_week(week)  # InvalidInput (422) for anything but a week such as 2026-W48
    report = await run_in_threadpool(_kept_or_made, request, wanted, fmt.value, caller, clock())
    return Response(
        content=report.content,
        media_type=report.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{report.filename}"',
            "Last-Modified": report.generated_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        },
    )


def _kept_or_made(
    request: Request, week: IsoWeek, fmt: str, caller: Principal, now: Any
) -> store.StoredReport:
    database = request.app.state.database
    settings = request.app.state.settings.reports
    with database.read() as connection:
        kept = store.get(connection, week, fmt)
    if kept is not None:
        return kept
    tz = settings.tz
    end = window(week, tz).as_of
    if end > now:
        when = "is in progress" if week == week_of(now, tz) else "is in the future"
        raise NotFound(
            f"no report for {week}: the week {when}; its report can be made from "
            f"{end.isoformat()} (Monday 00:00 {settings.timezone})",
            details={"week": str(week), "complete_at": end.isoformat()},
        )
    maker: Maker | None = getattr(request.app.state, "report_maker", None)
    contents = produce(
        database,
        request.app.state.flow_types,
        week,
        settings,
        formats=[fmt],
        now=now,
        generated_by=f"api:{caller.name}",
        sources=request.app.state.settings.sources,
        maker=maker,
    )
    return store.StoredReport(
        str(week), fmt, contents[fmt], store.MEDIA_TYPES[fmt], now, f"api:{caller.name}"
    )
