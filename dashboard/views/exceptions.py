"""Exceptions: each role's queue with its aging buckets; acknowledge, assign, resolve with the
operator's own key (the queue's role, or admin)."""

from __future__ import annotations

from functools import partial
from typing import Any

import streamlit as st

from dashboard import loaders, tiles, ui
from dashboard.client import ApiClient
from dashboard.tables import when

#: Queue -> the role that acts on it (flows.md, api.md).
QUEUES = {
    "finance_ops": "finance_ops",
    "legal_ops": "legal_ops",
    "pmo": "pmo",
    "integration_oncall": "oncall",
}
#: Findings shown per queue (the newest).
LIMIT = 500
STATUSES = ("open", "unacknowledged", "acknowledged", "resolved", "all")
COLUMNS = (
    "id",
    "kind",
    "details",
    "opened_at",
    "aging",
    "flow_id",
    "acknowledged_by",
    "assignee",
    "resolved_by",
)


def actions(queue: str, items: list[dict[str, Any]]) -> None:
    open_ids = [item["id"] for item in items if item.get("resolved_at") is None]
    if not open_ids:
        return
    role = QUEUES[queue]
    with st.form(f"act_{queue}"):
        st.markdown(f"**Act on a finding** (needs the {role} role, or admin)")
        finding = st.selectbox("Finding", open_ids, key=f"act_{queue}_finding")
        action = st.radio(
            "Action",
            ("acknowledge", "assign", "resolve"),
            horizontal=True,
            key=f"act_{queue}_action",
        )
        assignee = st.text_input("Assign to", key=f"act_{queue}_assignee")
        note = st.text_input("Resolution note", key=f"act_{queue}_note")
        if not st.form_submit_button("Apply", key=f"act_{queue}_apply"):
            return
    if action == "assign" and not assignee.strip():
        st.warning("Name who to assign the finding to.")
        return
    path = f"/v1/exceptions/{finding}/" + {"acknowledge": "ack"}.get(action, action)
    body = {"assign": {"assignee": assignee.strip()}, "resolve": {"resolution": note or None}}.get(
        action
    )

    def call(api: ApiClient, key: str) -> Any:
        return api.post(path, body, key=key)

    ui.act(call, role=role, done=f"Finding {finding}: {action} done.")


def show_queue(queue: str, status: str, summary: dict[str, Any], items: list[Any]) -> None:
    """The queue's open findings and aging buckets (``/v1/kpis``, the same numbers as the
    overview), then its findings of the chosen status (``/v1/exceptions``) and the actions."""
    columns = st.columns(len(tiles.AGING) + 1)
    columns[0].metric(f"{queue} open", summary["open"])
    for column, (bucket, shown) in zip(columns[1:], tiles.AGING.items(), strict=True):
        column.metric(f"{queue} {shown}", summary["aging"][bucket])
    if not items:
        st.info(f"No {status} findings in {queue}.")
        return
    ui.table(items, COLUMNS, key=f"queue_{queue}")
    actions(queue, items)


def page() -> None:
    st.title("Exceptions")
    ui.flash()
    ui.operator_key()
    status = st.selectbox("Status", STATUSES, key="exceptions_status")
    summary = ui.load(lambda: loaders.kpis({"further": False}))
    if summary is None:
        return
    listed = {}
    for queue in QUEUES:
        params: dict[str, str | int] = {"queue": queue, "status": status, "limit": LIMIT}
        answer = ui.load(partial(loaders.exceptions, params))
        if answer is None:
            return
        listed[queue] = answer["items"]
    st.caption(f"Open findings and their age as of {when(summary['as_of'])}.")
    labels = [f"{queue} ({summary['exceptions'][queue]['open']} open)" for queue in QUEUES]
    for queue, tab in zip(QUEUES, st.tabs(labels), strict=True):
        with tab:
            show_queue(queue, status, summary["exceptions"][queue], listed[queue])


page()
