"""Making the weekly report: the one entry point that the command line, the API and the scheduler
call. The content comes from :mod:`kpis.reports.gather` (the one KPI implementation), the formats
from the renderers."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from core.db import Database
from core.errors import InvalidInput
from core.report_settings import REPORT_FORMATS
from core.settings import SourceSettings
from kpis.reports import render_html, render_md, render_pdf
from kpis.reports.content import WeeklyReport
from kpis.reports.gather import gather
from kpis.reports.week import parse_week
from probes.flowtypes import FlowType

FORMATS = REPORT_FORMATS


def parse_formats(text: str) -> tuple[str, ...]:
    """``html,pdf,md`` (any order, no repeats) -> the formats, checked."""
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown or not chosen:
        raise InvalidInput(f"format: choose among {', '.join(FORMATS)} (got {text!r})")
    return chosen


def render(report: WeeklyReport, formats: Sequence[str] = FORMATS) -> dict[str, bytes]:
    """The report in each of ``formats``: format -> bytes (UTF-8 for html and md)."""
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise InvalidInput(f"format: choose among {', '.join(FORMATS)} (got {unknown[0]!r})")
    result: dict[str, bytes] = {}
    html = render_html.render(report) if {"html", "pdf"} & set(formats) else ""
    for fmt in formats:
        if fmt == "html":
            result[fmt] = html.encode()
        elif fmt == "pdf":
            result[fmt] = render_pdf.render(html)
        else:
            result[fmt] = render_md.render(report).encode()
    return result


def make(
    database: Database,
    flow_types: Sequence[FlowType],
    week: str,
    *,
    tz: ZoneInfo,
    formats: Sequence[str] = FORMATS,
    top_stuck: int = 20,
    sources: dict[str, SourceSettings] | None = None,
) -> dict[str, bytes]:
    """The report of ISO week ``week`` (``2026-W48``) in time zone ``tz``: format -> bytes.

    ``sources`` are the configured sources (``settings.sources``), for the data-quality figure
    "silent sources", as ``GET /v1/kpis`` passes them; without them none is reported silent."""
    report = gather(
        database, flow_types, parse_week(week), tz=tz, top_stuck=top_stuck, sources=sources
    )
    return render(report, formats)
