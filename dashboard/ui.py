"""What the pages share: messages for the API's errors, and the operator's own key for actions.

The operator's key is asked for in the page and kept only in this browser session's
``st.session_state`` (never on disk, never in the configured read key's place), so that an action
is done, and audited, as that person, with the API's roles."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import streamlit as st

from dashboard import loaders, tables
from dashboard.client import (
    ApiClient,
    ApiError,
    Conflict,
    Forbidden,
    NotConfigured,
    Unauthorized,
    Unreachable,
)

T = TypeVar("T")
OPERATOR_KEY = "operator_key"
FLASH = "_flash"


def read_error(error: ApiError) -> None:
    """Explain an error of a read made with the configured key."""
    if isinstance(error, NotConfigured):
        st.error(f"The dashboard is not configured: {error.message}")
    elif isinstance(error, Unreachable):
        st.error(f"API unreachable: {error.message}. Is `syncwatch serve` running?")
    elif isinstance(error, Unauthorized):
        st.error(
            f"The API refused the dashboard's key (401): check SYNCWATCH_API_KEY ({error.message})."
        )
    elif isinstance(error, Forbidden):
        st.error(f"The dashboard's key may not read this (403): {error.message}.")
    else:
        st.error(f"The API answered {error.status or 'nothing'}: {error.message}")


def load(fetch: Callable[[], T]) -> T | None:
    """``fetch()``, or None after showing why it failed."""
    try:
        return fetch()
    except ApiError as error:
        read_error(error)
        return None


def operator_key() -> str:
    """The operator's own key, asked for once per browser session."""
    saved: str = st.session_state.get(OPERATOR_KEY, "")
    typed = st.text_input(
        "Your API key (for actions)",
        value=saved,
        type="password",
        key=f"{OPERATOR_KEY}_input",
        help="Actions are made, and audited, with your own key and its roles; it is kept only "
        "in this browser session. The dashboard's own key only reads.",
    )
    st.session_state[OPERATOR_KEY] = typed.strip()
    return typed.strip()


def act(
    call: Callable[[ApiClient, str], Any], *, role: str, done: str | Callable[[Any], str]
) -> None:
    """Make an action with the operator's key. On success the page reruns with fresh data and
    ``done`` (or ``done(answer)``) at its top; on failure the reason is shown here."""
    key: str = st.session_state.get(OPERATOR_KEY, "")
    if not key:
        st.warning("Enter your own API key above first: actions are never made with the read key.")
        return None
    try:
        answer = call(loaders.client(), key)
    except Forbidden as error:
        st.error(f"Your key lacks the role {role} for this action (403): {error.message}.")
    except Unauthorized as error:
        st.error(f"Your key was refused (401): {error.message}. Check it, or ask for a new one.")
    except Conflict as error:
        refusal = (error.details or {}).get("refusal") if isinstance(error.details, dict) else None
        extra = f" (refusal: {refusal})" if refusal else ""
        st.error(f"Refused (409): {error.message}{extra}")
    except ApiError as error:
        read_error(error)
    else:
        # Fresh reads everywhere, and the outcome shown at the top of the page after the rerun.
        loaders.forget()
        st.session_state[FLASH] = done(answer) if callable(done) else done
        st.rerun()
    return None


def flash() -> None:
    """Show the outcome of the action made just before this rerun."""
    message = st.session_state.pop(FLASH, None)
    if message:
        st.success(message)


def table(items: Iterable[Mapping[str, Any]], columns: Sequence[str], *, key: str) -> None:
    """The items' ``columns`` as a table people read (dashboard/tables.py)."""
    config: dict[str, Any] = dict(tables.headers(columns))
    if "age_seconds" in config:
        config["age_seconds"] = st.column_config.NumberColumn(config["age_seconds"], format="%.1f")
    st.dataframe(tables.rows(items, columns), hide_index=True, key=key, column_config=config)
