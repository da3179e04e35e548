"""Reports: the weekly KPI reports kept by the API, to open in the page (HTML, else Markdown) and
to download in each format kept; and the report of any other complete week, made by the API on
demand (and then kept)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from dashboard import loaders, ui
from dashboard.tables import when

MEDIA = {"html": "text/html", "md": "text/markdown", "pdf": "application/pdf"}
#: Formats shown in the page, preferred first (a PDF is only downloaded).
READABLE = ("html", "md")
#: Pixels of the frame an HTML report is shown in.
HTML_HEIGHT = 900
WEEK = re.compile(r"^\d{4}-W\d{2}$")


def downloads(items: list[dict[str, Any]]) -> None:
    for item in items:
        week = item["week"]
        columns = st.columns(len(MEDIA) + 1)
        columns[0].markdown(f"**{week}**  \nmade {when(item.get('generated_at')) or '?'}")
        for column, fmt in zip(columns[1:], item.get("formats") or [], strict=False):
            column.download_button(
                f"{week}.{fmt}",
                _fetcher(week, fmt),  # fetched when clicked, not on every run
                file_name=f"syncwatch-report-{week}.{fmt}",
                mime=MEDIA.get(fmt, "application/octet-stream"),
                key=f"report_{week}_{fmt}",
            )


def opened(items: list[dict[str, Any]]) -> None:
    """The chosen week's report, shown in the page."""
    formats = {item["week"]: item.get("formats") or [] for item in items}
    weeks = [week for week, kept in formats.items() if set(READABLE) & set(kept)]
    if not weeks:
        return
    week = st.selectbox("Open a report", ["", *weeks], key="report_open")
    if not week:
        return
    show(week, next(fmt for fmt in READABLE if fmt in formats[week]))


def show(week: str, fmt: str) -> None:
    report = ui.load(lambda: loaders.report_file(week, fmt))
    if report is not None:
        render(report.content, fmt)


def render(content: bytes, fmt: str) -> None:
    text = content.decode("utf-8")
    if fmt == "html":
        st.iframe(text, height=HTML_HEIGHT)  # self-contained: inline CSS, SVG charts
    else:
        st.markdown(text)


def another_week() -> None:
    """Any complete past week: the API makes its report on demand and keeps it."""
    st.subheader("Another week")
    left, right = st.columns([2, 1])
    week = left.text_input("ISO week", placeholder="2026-W48", key="report_week").strip()
    fmt = right.selectbox("Format", list(MEDIA), key="report_format")
    if not week:
        return
    if not WEEK.match(week):
        st.warning(f"{week!r} is not an ISO week such as 2026-W48.")
        return
    report = ui.load(lambda: loaders.report_file(week, fmt))
    if report is None:
        return
    st.download_button(
        f"Download {week}.{fmt}",
        report.content,
        file_name=f"syncwatch-report-{week}.{fmt}",
        mime=MEDIA[fmt],
        key="report_week_download",
    )
    if fmt in READABLE:
        render(report.content, fmt)


def page() -> None:
    st.title("Weekly reports")
    items = ui.load(loaders.reports)
    if items is None:
        return
    if items:
        downloads(items)
        st.divider()
        opened(items)
    else:
        st.info(
            "No reports kept yet: the scheduler makes one each week; ask for any past week below."
        )
    st.divider()
    another_week()


def _fetcher(week: str, fmt: str) -> Callable[[], bytes]:
    def fetch() -> bytes:
        return loaders.report_file(week, fmt).content

    return fetch


page()
