"""Replays: the history, and a replay of a stuck flow with a reason, made with the operator's own
key (oncall). Each form submission carries its own Idempotency-Key, so that a retried request
never sends twice; a guardrail's refusal (409) is shown with its reason."""

from __future__ import annotations

import uuid
from typing import Any

import streamlit as st

from dashboard import loaders, ui
from dashboard.client import ApiClient, flow_path

OUTCOMES = ("all", "sent", "refused", "failed", "effective", "ineffective", "sending")
#: The outcome first: what an on-call engineer looks for.
COLUMNS = (
    "id",
    "outcome",
    "flow_id",
    "stage",
    "requested_at",
    "trigger",
    "requested_by",
    "reason",
    "refusal",
    "message",
)


def outcome_text(replay: dict[str, Any]) -> str:
    text = f"Replay {replay['id']} of {replay['flow_id']}: {replay['outcome']}"
    if replay.get("message"):
        text += f" ({replay['message']})"
    return text + "."


def replay_form() -> None:
    with st.form("replay_form"):
        st.markdown("**Replay a stuck flow** (needs the oncall role)")
        flow_id = st.text_input("Flow ID", key="replay_flow_id")
        reason = st.text_input("Reason", key="replay_reason", help="kept in the audit log")
        if not st.form_submit_button("Replay", key="replay_submit"):
            return
    if not flow_id.strip() or not reason.strip():
        st.warning("Give the flow ID and a reason.")
        return
    idempotency_key = str(uuid.uuid4())  # one per submission: a retry of it never sends twice

    def call(api: ApiClient, key: str) -> Any:
        return api.post(
            flow_path(flow_id.strip(), "/replay"),
            {"reason": reason.strip()},
            key=key,
            headers={"Idempotency-Key": idempotency_key},
        )

    ui.act(call, role="oncall", done=outcome_text)


def history() -> None:
    outcome = st.selectbox("Outcome", OUTCOMES, key="replays_outcome")
    params = {"limit": 200, "outcome": None if outcome == "all" else outcome}
    answer = ui.load(lambda: loaders.replays(params))
    if answer is None:
        return
    items: list[dict[str, Any]] = answer["items"]
    if not items:
        st.info("No replays yet.")
        return
    ui.table(items, COLUMNS, key="replays_table")


def page() -> None:
    st.title("Replays")
    ui.flash()
    ui.operator_key()
    replay_form()
    st.subheader("History")
    history()


page()
