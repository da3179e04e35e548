"""Making a week's report and keeping it: what the API (on demand) and the weekly job share. The
maker is :func:`kpis.reports.make.make`; tests may pass another callable of the same shape."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from core.db import Database
from core.report_settings import ReportSettings
from core.settings import SourceSettings
from kpis.reports import store
from kpis.reports.week import IsoWeek, week_of
from probes.flowtypes import FlowType


class Maker(Protocol):
    def __call__(
        self,
        database: Database,
        flow_types: Sequence[FlowType],
        week: str,
        *,
        tz: ZoneInfo,
        formats: Sequence[str] = ...,
        top_stuck: int = ...,
        sources: dict[str, SourceSettings] | None = ...,
    ) -> dict[str, bytes]: ...


def default_maker() -> Maker:
    """The real report maker, imported when first needed (it pulls in the PDF renderer)."""
    from kpis.reports.make import make

    return make


def produce(
    database: Database,
    flow_types: Sequence[FlowType],
    week: IsoWeek,
    settings: ReportSettings,
    *,
    formats: Sequence[str],
    now: datetime,
    generated_by: str,
    sources: dict[str, SourceSettings] | None = None,
    maker: Maker | None = None,
) -> dict[str, bytes]:
    """Make the formats of ``week``'s report and keep them, unless the week is older than the
    weeks kept (then it is only made and returned: the next prune would delete it anyway)."""
    make = maker or default_maker()
    contents = make(
        database,
        flow_types,
        str(week),
        tz=settings.tz,
        formats=list(formats),
        top_stuck=settings.top_stuck,
        sources=sources,
    )
    missing = set(formats) - set(contents)
    if missing:
        raise RuntimeError(f"the report maker did not make {', '.join(sorted(missing))}")
    if week >= store.oldest_kept(week_of(now, settings.tz), settings.keep_weeks):
        with database.write() as connection:
            store.save(
                connection,
                week,
                {fmt: contents[fmt] for fmt in formats},
                now=now,
                generated_by=generated_by,
            )
    return contents
