"""Plotly figures of the pages, from the API's answers, without I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import plotly.graph_objects as go

from dashboard.tiles import label_of

_LAYOUT: dict[str, Any] = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "height": 320}
_STATUS_COLORS = {
    "reached": "#2e7d32",
    "late": "#f9a825",
    "missed": "#c62828",
    "pending": "#90a4ae",
    "skipped": "#cfd8dc",
}


def success_trend(series: Sequence[Mapping[str, Any]]) -> Any:
    """The success rate of each flow type at each as_of of the series (gaps where null)."""
    figure = go.Figure()
    instants = [point["as_of"] for point in series]
    flow_types = list((series[0].get("flows") or {}) if series else {})
    for flow_type in flow_types:
        values = [point["flows"][flow_type]["success_rate"] for point in series]
        figure.add_trace(
            go.Scatter(x=instants, y=values, mode="lines+markers", name=label_of(flow_type))
        )
    figure.update_layout(
        title="Success rate", yaxis={"tickformat": ".0%", "range": [0, 1.05]}, **_LAYOUT
    )
    return figure


def stuck_trend(series: Sequence[Mapping[str, Any]]) -> Any:
    """Open and stuck flows (all flow types) at each as_of of the series."""
    instants = [point["as_of"] for point in series]
    figure = go.Figure()
    highest = 0
    for kind in ("open", "stuck"):
        values = [sum(f[kind] for f in point["flows"].values()) for point in series]
        highest = max([highest, *values])
        figure.add_trace(go.Scatter(x=instants, y=values, mode="lines+markers", name=kind))
    figure.update_layout(title="Open and stuck flows", yaxis=count_axis(highest), **_LAYOUT)
    return figure


def cycle_trend(series: Sequence[Mapping[str, Any]], flow_type: str, title: str) -> Any:
    """p50 and p90 of a flow type's durations, in hours, at each as_of of the series."""
    instants = [point["as_of"] for point in series]
    figure = go.Figure()
    for pct in ("p50", "p90"):
        values = []
        for point in series:
            seconds = (point["flows"].get(flow_type) or {}).get("duration_seconds", {}).get(pct)
            values.append(None if seconds is None else seconds / 3600)
        figure.add_trace(go.Scatter(x=instants, y=values, mode="lines+markers", name=pct))
    figure.update_layout(title=title, yaxis={"title": "hours"}, **_LAYOUT)
    return figure


def stuck_by_stage(answer: Mapping[str, Any]) -> Any:
    """Stuck flows per stage, one bar group per flow type."""
    figure = go.Figure()
    highest = 0
    for flow_type, figures in (answer.get("flows") or {}).items():
        stages = figures.get("stuck_by_stage") or {}
        highest = max([highest, *(int(count) for count in stages.values())])
        figure.add_trace(go.Bar(x=list(stages), y=list(stages.values()), name=flow_type))
    figure.update_layout(
        title="Stuck flows by stage", barmode="group", yaxis=count_axis(highest), **_LAYOUT
    )
    return figure


def count_axis(highest: int) -> dict[str, Any]:
    """A y axis for counts: integer ticks only (every integer when the counts are small)."""
    axis: dict[str, Any] = {"tickformat": ",d", "rangemode": "tozero"}
    if highest <= 10:
        axis.update(tick0=0, dtick=1, range=[0, max(highest, 1) * 1.05])
    return axis


def funnel(steps: Sequence[Mapping[str, Any]]) -> Any:
    """From contract signed to first invoice (kpis.md, ``funnel``)."""
    figure = go.Figure(
        go.Funnel(
            y=[step["stage"] for step in steps],
            x=[step["count"] for step in steps],
            textinfo="value+percent initial",
        )
    )
    figure.update_layout(title="Contract signed to first invoice", **_LAYOUT)
    return figure


def _instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def flow_timeline(flow: Mapping[str, Any]) -> Any:
    """Each stage as a bar from T0 to when it was reached (or to as_of when not), colored by its
    status, with its deadline as a diamond."""
    t0 = _instant(flow.get("t0"))
    as_of = _instant(flow.get("as_of"))
    figure = go.Figure()
    for row in flow.get("stages") or []:
        end = _instant(row.get("reached_at")) or as_of
        status = row.get("status", "pending")
        if t0 is not None and end is not None:
            figure.add_trace(
                go.Bar(
                    y=[row["stage"]],
                    x=[(end - t0).total_seconds() * 1000],
                    base=[t0],
                    orientation="h",
                    marker_color=_STATUS_COLORS.get(status, "#90a4ae"),
                    name=status,
                    showlegend=False,
                    hovertext=f"{row['stage']}: {status}",
                )
            )
    deadlines = [(row["stage"], row.get("deadline_at")) for row in flow.get("stages") or []]
    figure.add_trace(
        go.Scatter(
            y=[stage for stage, _ in deadlines],
            x=[_instant(at) for _, at in deadlines],
            mode="markers",
            marker={"symbol": "diamond", "size": 12, "color": "#000"},
            name="deadline",
        )
    )
    figure.update_layout(title="Stages against their deadlines", xaxis={"type": "date"}, **_LAYOUT)
    return figure
