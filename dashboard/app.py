"""The syncwatch dashboard: ``streamlit run dashboard/app.py`` (or ``syncwatch dashboard``).

Reads the API at ``SYNCWATCH_API_URL`` with the read-only key ``SYNCWATCH_API_KEY``, over HTTP
only. Multipage through ``st.navigation``; auto-refresh through a small fragment that reruns the
whole app every N seconds (no extra package)."""

from __future__ import annotations

import time
from datetime import timedelta

import streamlit as st

from dashboard import loaders

#: Label -> seconds between refreshes (0: off).
REFRESH_CHOICES = {"Off": 0, "30 s": 30, "1 min": 60, "5 min": 300}
DEFAULT_REFRESH = "1 min"
_REFRESHED_AT = "_refreshed_at"


def _auto_refresh(seconds: int) -> None:
    """Rerun the whole app every ``seconds``. The fragment's timer ticks on its own; a tick
    reruns the app only when the last full run is that old (a full run resets the clock, so a
    full run never triggers another at once)."""
    st.session_state[_REFRESHED_AT] = time.monotonic()
    if not seconds:
        return

    @st.fragment(run_every=timedelta(seconds=seconds))
    def ticker() -> None:
        age = time.monotonic() - st.session_state.get(_REFRESHED_AT, 0.0)
        if age >= seconds - 0.5:
            st.rerun(scope="app")

    ticker()


def main() -> None:
    st.set_page_config(page_title="syncwatch", page_icon=":material/monitoring:", layout="wide")
    pages = [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/flows.py", title="Flows", icon=":material/account_tree:"),
        st.Page("views/exceptions.py", title="Exceptions", icon=":material/flag:"),
        st.Page("views/replays.py", title="Replays", icon=":material/replay:"),
        st.Page("views/reports.py", title="Reports", icon=":material/description:"),
    ]
    page = st.navigation(pages)
    with st.sidebar:
        choice = st.selectbox(
            "Auto-refresh",
            list(REFRESH_CHOICES),
            index=list(REFRESH_CHOICES).index(DEFAULT_REFRESH),
            key="auto_refresh",
            help=f"Reads are cached for {loaders.TTL_SECONDS} s.",
        )
        if st.button("Refresh now", key="refresh_now"):
            loaders.forget()
    _auto_refresh(REFRESH_CHOICES[choice])
    page.run()


main()
