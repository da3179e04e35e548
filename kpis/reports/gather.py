"""Reading what a weekly report needs out of the store (the thin I/O shell around
:mod:`kpis.reports.content`): the KPI answers of the report's week and the 7 before it, each with
that week's ``start`` and as_of, from :mod:`kpis.service` (so exactly the numbers of
``GET /v1/kpis?start=..&as_of=..``), and the stuck flows at the week's end, largest value at risk
first, as ``GET /v1/flows?state=stuck&sort=value_at_risk&as_of=..`` lists them."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from core.db import Database
from core.settings import SourceSettings
from kpis import service
from kpis.reports.content import WeeklyReport, build_report
from kpis.reports.week import TREND_WEEKS, IsoWeek, last_weeks, window
from probes.flowquery import FlowFilter, list_flows
from probes.flowtypes import FlowType


def gather(
    database: Database,
    flow_types: Sequence[FlowType],
    week: IsoWeek,
    *,
    tz: ZoneInfo,
    top_stuck: int = 20,
    sources: dict[str, SourceSettings] | None = None,
) -> WeeklyReport:
    if top_stuck < 0:
        raise ValueError("top_stuck must not be negative")
    weeks = last_weeks(week, TREND_WEEKS)
    windows = [window(w, tz) for w in weeks]
    queries = [service.make_query(as_of=w.as_of, start=w.start) for w in windows]
    answers = service.series(database, flow_types, queries, sources=sources)
    end = windows[-1]
    with database.snapshot() as connection:
        total, stuck = list_flows(
            connection,
            FlowFilter(state="stuck"),
            as_of=end.as_of,
            sort="value_at_risk",
            limit=top_stuck,
            offset=0,
        )
    return build_report(end, weeks, flow_types, answers, stuck_total=total, stuck=stuck)
