"""Overview: the KPI tiles with their change against the previous period, trends, stuck flows by
stage, the funnel; filtered by legal entity, region, service line and window (kpis.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import streamlit as st

from dashboard import charts, loaders, tiles, ui
from dashboard.client import ApiError

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


def filters() -> dict[str, Any] | None:
    """The filter widgets; the query parameters they select (None when the API failed)."""
    columns = st.columns(len(FILTERS) + 1)
    window = columns[0].selectbox(
        "Window", WINDOWS, index=WINDOWS.index(DEFAULT_WINDOW), key="overview_window"
    )
    params: dict[str, Any] = {"window": window}
    for column, (dimension, label) in zip(columns[1:], FILTERS.items(), strict=True):
        try:
            values = loaders.dimension_values(dimension, window)
        except ApiError as error:
            ui.read_error(error)
            return None
        choice = column.selectbox(label, [ALL, *values], key=f"overview_{dimension}")
        if choice != ALL:
            params[dimension] = choice
    return params


def show_tiles(current: dict[str, Any], previous: dict[str, Any] | None) -> None:
    shown = tiles.tiles(current, previous)
    per_row = 4
    for start in range(0, len(shown), per_row):
        columns = st.columns(per_row)
        for column, tile in zip(columns, shown[start : start + per_row], strict=False):
            empty = tile.value == tiles.NO_DATA
            column.metric(
                tile.label,
                tile.value,
                "no data" if empty else tile.delta,
                "off" if empty else tile.delta_color,
                help=tile.help or None,
                delta_arrow="off" if empty else "auto",
                border=True,
            )


def show_charts(current: dict[str, Any], params: dict[str, Any]) -> None:
    window = params["window"]
    step = "1d" if window.endswith("d") else "1h"
    as_of = instant(current["as_of"])
    query = {
        **params,
        "from": z(as_of - TREND_STEPS * span(step)),
        "to": current["as_of"],
        "step": step,
        "further": False,
    }
    points = ui.load(lambda: loaders.series(query))
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
    params = filters()
    if params is None:
        return
    current = ui.load(lambda: loaders.kpis(params))
    if current is None:
        return
    previous_as_of = instant(current["as_of"]) - span(params["window"])
    previous = ui.load(
        lambda: loaders.kpis({**params, "as_of": z(previous_as_of), "further": False})
    )
    window = current["window"]
    st.caption(
        f"As of {current['as_of']}, window ({window['start']}, {window['end']}]; "
        f"changes against the previous period, as of {z(previous_as_of)}."
    )
    if not tiles.has_data(current):
        st.info("No data yet: no flow is due, completed or open in this window and filter.")
    show_tiles(current, previous)
    show_charts(current, params)
    show_queues(current)


page()
