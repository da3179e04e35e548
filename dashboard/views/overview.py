"""Overview: the KPI tiles with their change against the previous period, trends, stuck flows by
stage, the funnel; filtered by legal entity, region, service line and window (kpis.md)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import streamlit as st

from dashboard import charts, loaders, tiles, ui
from dashboard.tables import when

WINDOWS = ("24h", "7d", "30d", "90d")
DEFAULT_WINDOW = "7d"
#: Points of the trend charts (as_of - 7 steps ... as_of).
TREND_STEPS = 7
ALL = "All"
FILTERS = {"legal_entity": "Legal entity", "region": "Region", "service_line": "Service line"}


def span(text: str) -> timedelta:
    """``7d`` or ``24h`` as a timedelta."""
    amount = int(text[:-1])
    return timedelta(days=amount) if text.endswith("d") else timedelta(hours=amount)


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def chosen() -> dict[str, Any]:
    """The query parameters the filter widgets held at the end of the last run (the defaults on
    the first): known before the widgets are drawn, so that the reads can start at once."""
    window = st.session_state.get("overview_window", DEFAULT_WINDOW)
    params: dict[str, Any] = {"window": window if window in WINDOWS else DEFAULT_WINDOW}
    for dimension in FILTERS:
        choice = st.session_state.get(f"overview_{dimension}", ALL)
        if choice != ALL:
            params[dimension] = choice
    return params


def filters(choices: dict[str, Future[list[str]]]) -> dict[str, Any] | None:
    """The filter widgets, with the choices being read in ``choices``; the query parameters
    they select (None when the API failed)."""
    columns = st.columns(len(FILTERS) + 1)
    window = columns[0].selectbox(
        "Window", WINDOWS, index=WINDOWS.index(DEFAULT_WINDOW), key="overview_window"
    )
    params: dict[str, Any] = {"window": window}
    for column, (dimension, label) in zip(columns[1:], FILTERS.items(), strict=True):
        values = ui.load(choices[dimension].result)
        if values is None:
            return None
        choice = column.selectbox(label, [ALL, *values], key=f"overview_{dimension}")
        if choice != ALL:
            params[dimension] = choice
    return params


class Reads:
    """The overview's reads, made concurrently on worker threads through the cached loaders
    (``st.cache_data`` with ``show_spinner=False`` needs no ScriptRunContext: its store is the
    process's), in two waves: this period's KPIs and the three filters' choices at once, then,
    as soon as this period's as_of is known, the previous period's KPIs and the trend series at
    once. The page draws from the futures in its own order (tiles first, charts after)."""

    def __init__(self, pool: ThreadPoolExecutor, params: dict[str, Any]) -> None:
        self.pool = pool
        self.params = params
        window = params["window"]
        self.choices = {
            dimension: pool.submit(loaders.dimension_values, dimension, window)
            for dimension in FILTERS
        }
        self.current = pool.submit(loaders.kpis, params)
        self._then: Future[tuple[Future[dict[str, Any]], Future[list[dict[str, Any]]]]]
        self._then = pool.submit(self._second_wave)

    def _second_wave(self) -> tuple[Future[dict[str, Any]], Future[list[dict[str, Any]]]]:
        current = self.current.result()
        return (
            self.pool.submit(loaders.kpis, previous_query(self.params, current)),
            self.pool.submit(loaders.series, series_query(self.params, current)),
        )

    def previous(self) -> dict[str, Any]:
        return self._then.result()[0].result()

    def series(self) -> list[dict[str, Any]]:
        return self._then.result()[1].result()


def previous_as_of(params: dict[str, Any], current: dict[str, Any]) -> datetime:
    return instant(current["as_of"]) - span(params["window"])


def previous_query(params: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    return {**params, "as_of": z(previous_as_of(params, current)), "further": False}


def series_query(params: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    step = "1d" if params["window"].endswith("d") else "1h"
    as_of = instant(current["as_of"])
    return {
        **params,
        "from": z(as_of - TREND_STEPS * span(step)),
        "to": current["as_of"],
        "step": step,
        "further": False,
    }


def show_tiles(current: dict[str, Any], previous: dict[str, Any] | None) -> None:
    shown = tiles.tiles(current, previous)
    per_row = 4
    for start in range(0, len(shown), per_row):
        columns = st.columns(per_row)
        for column, tile in zip(columns, shown[start : start + per_row], strict=False):
            empty = tile.value == tiles.NO_DATA
            still = empty or tile.unchanged
            column.metric(
                tile.label,
                tile.value,
                "no data" if empty else tile.delta,
                "off" if still else tile.delta_color,
                help=tile.help or None,
                delta_arrow="off" if still else "auto",
                border=True,
            )


def show_charts(current: dict[str, Any], points: list[dict[str, Any]] | None) -> None:
    left, right = st.columns(2)
    if points:
        left.plotly_chart(charts.success_trend(points), key="chart_success")
        right.plotly_chart(charts.stuck_trend(points), key="chart_stuck")
        left.plotly_chart(
            charts.cycle_trend(points, "contract_onboarding", "Setup cycle time"),
            key="chart_setup",
        )
        right.plotly_chart(
            charts.cycle_trend(points, "milestone_billing", "Billing lag"), key="chart_billing"
        )
    left.plotly_chart(charts.stuck_by_stage(current), key="chart_stuck_by_stage")
    if current.get("funnel"):
        right.plotly_chart(charts.funnel(current["funnel"]), key="chart_funnel")


def show_queues(current: dict[str, Any]) -> None:
    st.subheader("Exception queues")
    st.dataframe(tiles.queue_rows(current), hide_index=True, key="overview_queues")


def page() -> None:
    st.title("Overview")
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="overview") as pool:
        reads = Reads(pool, chosen())
        params = filters(reads.choices)
        if params is None:
            return
        if params != reads.params:  # a chosen value no longer offered: the widget fell back
            reads = Reads(pool, params)
        draw(reads)


def draw(reads: Reads) -> None:
    params = reads.params
    current = ui.load(reads.current.result)
    if current is None:
        return
    previous = ui.load(reads.previous)
    window = current["window"]
    st.caption(
        f"As of {when(current['as_of'])}: the last {params['window']}, from "
        f"{when(window['start'])} to {when(window['end'])}, with changes against the "
        f"{params['window']} before (as of {when(z(previous_as_of(params, current)))})."
    )
    if not tiles.has_data(current):
        st.info("No data yet: no flow is due, completed or open in this window and filter.")
    show_tiles(current, previous)
    show_queues(current)
    show_charts(current, ui.load(reads.series))


page()
