"""The one KPI implementation every surface calls: the API, the Prometheus exporter, and (over the
API) the dashboard and the weekly reports. One read transaction per answer, so an answer is a
consistent snapshot of the store."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.db import Database
from core.errors import InvalidInput
from core.settings import SourceSettings
from kpis import inputs
from kpis.compute import DIMENSIONS, KpiQuery, build
from probes.flowtypes import FlowType

_SPAN = re.compile(r"^([1-9]\d{0,4})([dh])$")
MAX_SERIES_POINTS = 1000
DEFAULT_WINDOW = timedelta(days=7)


def parse_span(value: str, name: str) -> timedelta:
    """``Nd`` or ``Nh`` (kpis.md)."""
    match = _SPAN.match(value.strip())
    if not match:
        raise InvalidInput(f"{name}: must be a number of days or hours such as 7d or 12h")
    amount = int(match.group(1))
    return timedelta(days=amount) if match.group(2) == "d" else timedelta(hours=amount)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"{name}: must be RFC 3339 with an offset (Z or +hh:mm)")
    return value


def make_query(
    *,
    as_of: datetime,
    window: str | None = None,
    start: datetime | None = None,
    group_by: str | None = None,
    filters: Mapping[str, str | None] | None = None,
    further: bool = True,
) -> KpiQuery:
    """Check the parameters of kpis.md and build the query (InvalidInput names what is wrong)."""
    as_of = _aware(as_of, "as_of").astimezone(UTC)
    if start is not None and window is not None:
        raise InvalidInput("give either window or start, not both")
    if start is not None:
        start = _aware(start, "start").astimezone(UTC)
        if start >= as_of:
            raise InvalidInput("start: must be before as_of")
    else:
        start = as_of - (DEFAULT_WINDOW if window is None else parse_span(window, "window"))
    if group_by is not None and group_by not in DIMENSIONS:
        raise InvalidInput(f"group_by: must be one of {', '.join(DIMENSIONS)}")
    chosen = {k: v for k, v in (filters or {}).items() if v is not None}
    for key in chosen:
        if key not in DIMENSIONS:  # pragma: no cover - the routes pass only the dimensions
            raise InvalidInput(f"unknown filter {key!r}")
    return KpiQuery(as_of=as_of, start=start, group_by=group_by, filters=chosen, further=further)


def kpis(
    database: Database,
    flow_types: Sequence[FlowType],
    query: KpiQuery,
    *,
    sources: dict[str, SourceSettings] | None = None,
) -> dict[str, Any]:
    with database.snapshot() as connection:
        loaded = inputs.load(connection, flow_types, query, sources=sources)
    return build(query, flow_types, loaded)


def series_instants(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    if end < start:
        raise InvalidInput("to: must not be before from")
    count = int((end - start) / step) + 1
    if count > MAX_SERIES_POINTS:
        raise InvalidInput(
            f"the series would have {count} points; at most {MAX_SERIES_POINTS}: "
            "narrow from/to or take a longer step"
        )
    return [start + step * index for index in range(count)]


def series(
    database: Database,
    flow_types: Sequence[FlowType],
    queries: Sequence[KpiQuery],
    *,
    sources: dict[str, SourceSettings] | None = None,
) -> list[dict[str, Any]]:
    """The answer at each query's instant, in one read transaction (one snapshot)."""
    answers = []
    with database.snapshot() as connection:
        for query in queries:
            loaded = inputs.load(connection, flow_types, query, sources=sources)
            answers.append(build(query, flow_types, loaded))
    return answers
