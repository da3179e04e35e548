"""Flows: the stuck and open flows, sortable by age and value at risk, paginated; and one flow's
stage timeline against its deadlines, its events, findings and replays."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import charts, loaders, ui
from dashboard.tables import money, when

STATES = ("stuck", "open", "complete", "cancelled")
SORTS = {"age": "Age (oldest first)", "value_at_risk": "Value at risk (largest first)"}
PAGE_SIZE = 50
COLUMNS = [
    "flow_id",
    "state",
    "stuck_stage",
    "queue",
    "age_seconds",
    "value_at_risk",
    "legal_entity",
    "region",
    "service_line",
]


def listing() -> list[dict[str, Any]]:
    """The list with its widgets; the flows shown."""
    left, middle, right = st.columns(3)
    state = left.selectbox("State", STATES, key="flows_state")
    sort = middle.selectbox("Sort by", list(SORTS), format_func=SORTS.__getitem__, key="flows_sort")
    page_number = int(right.number_input("Page", min_value=1, value=1, step=1, key="flows_page"))
    params: dict[str, str | int] = {
        "state": state,
        "sort": sort,
        "limit": PAGE_SIZE,
        "offset": (page_number - 1) * PAGE_SIZE,
    }
    answer = ui.load(lambda: loaders.flows(params))
    if answer is None:
        return []
    items: list[dict[str, Any]] = answer["items"]
    total = answer["total"]
    st.caption(f"{total} {state} flows as of {when(answer['as_of'])}; page {page_number}.")
    if not items:
        st.info(f"No {state} flows" + (" on this page." if total else " yet."))
        return []
    ui.table(items, COLUMNS, key="flows_table")
    return items


def detail(flow_id: str) -> None:
    flow = ui.load(lambda: loaders.flow(flow_id))
    if flow is None:
        return
    st.subheader(flow_id)
    facts = {
        "state": flow.get("state"),
        "T0": when(flow.get("t0"), seconds=True),
        "deadline": when(flow.get("deadline_at")),
        "stuck stage": flow.get("stuck_stage"),
        "queue": flow.get("queue"),
        "value at risk": money(flow.get("value_at_risk"), flow.get("currency")),
    }
    st.dataframe([facts], hide_index=True, key="flow_facts")
    if flow.get("stages"):
        st.plotly_chart(charts.flow_timeline(flow), key="flow_timeline")
        ui.table(
            flow["stages"], ("stage", "deadline_at", "reached_at", "status"), key="flow_stages"
        )
    for title, name, columns in (
        ("Events", "events", ("time", "type", "source", "id")),
        (
            "Findings",
            "findings",
            ("id", "kind", "queue", "opened_at", "resolved_at", "assignee", "details"),
        ),
        ("Replays", "replays", ("id", "requested_at", "requested_by", "reason", "outcome")),
    ):
        rows = flow.get(name) or []
        st.markdown(f"**{title}** ({len(rows)})")
        if rows:
            ui.table(rows, columns, key=f"flow_{name}")


def page() -> None:
    st.title("Flows")
    items = listing()
    st.divider()
    choices = [item["flow_id"] for item in items]
    typed = st.text_input("Flow ID", key="flow_id", placeholder="or pick one from the list")
    picked = st.selectbox("Flow", ["", *choices], key="flow_pick") if choices else ""
    chosen = typed.strip() or picked
    if chosen:
        detail(chosen)


page()
