"""Cached reads of the API for the pages: ``st.cache_data`` with a short ttl, keyed by the API's
URL, the read key, the path and the query, so that every widget interaction does not ask the API
again, while the auto-refresh (dashboard/app.py) still sees new data. Errors are not cached."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from dashboard.client import ApiClient, Download, Params, flow_path, query_of

#: Seconds a read is reused.
TTL_SECONDS = 30
#: Seconds the dimension values (the filters' choices) are reused: they change slowly.
DIMENSION_TTL_SECONDS = 300
DIMENSIONS = ("legal_entity", "region", "service_line")


def client() -> ApiClient:
    """The configured client (raises ``NotConfigured`` when ``SYNCWATCH_API_URL`` is unset)."""
    return ApiClient.from_env()


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _get(base_url: str, key: str, path: str, query: tuple[tuple[str, str], ...]) -> Any:
    return ApiClient(base_url, key).get(path, dict(query))


@st.cache_data(ttl=DIMENSION_TTL_SECONDS, show_spinner=False)
def _get_slow(base_url: str, key: str, path: str, query: tuple[tuple[str, str], ...]) -> Any:
    return ApiClient(base_url, key).get(path, dict(query))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _download(base_url: str, key: str, path: str) -> Download:
    return ApiClient(base_url, key).download(path)


def read(path: str, params: Params | None = None) -> Any:
    """``GET path`` with the read key, cached for :data:`TTL_SECONDS`."""
    api = client()
    return _get(api.base_url, api.key, path, query_of(params))


def kpis(params: Params) -> dict[str, Any]:
    answer: dict[str, Any] = read("/v1/kpis", params)
    return answer


def series(params: Params) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = read("/v1/kpis/series", params)
    return answer


def flows(params: Params) -> dict[str, Any]:
    answer: dict[str, Any] = read("/v1/flows", params)
    return answer


def flow(flow_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = read(flow_path(flow_id))
    return answer


def exceptions(params: Params) -> dict[str, Any]:
    answer: dict[str, Any] = read("/v1/exceptions", params)
    return answer


def replays(params: Params) -> dict[str, Any]:
    answer: dict[str, Any] = read("/v1/replays", params)
    return answer


def reports() -> list[dict[str, Any]]:
    answer: Mapping[str, Any] = read("/v1/reports")
    items: list[dict[str, Any]] = list(answer.get("items") or [])
    return items


def report_file(week: str, fmt: str) -> Download:
    api = client()
    return _download(api.base_url, api.key, f"/v1/reports/{week}.{fmt}")


#: The group of flows whose contract.signed lacks the dimension (kpis.md); not a filter value.
UNKNOWN_GROUP = "unknown"


def dimension_values(dimension: str, window: str) -> list[str]:
    """The values of a dimension that have something to show in the window (the groups of an
    unfiltered ``group_by`` answer), sorted; cached for :data:`DIMENSION_TTL_SECONDS`."""
    api = client()
    query = query_of({"group_by": dimension, "window": window, "further": False})
    answer: Mapping[str, Any] = _get_slow(api.base_url, api.key, "/v1/kpis", query)
    # "unknown" groups the flows without the dimension: the API's filters match values only
    return sorted(value for value in answer.get("groups") or {} if value != UNKNOWN_GROUP)


def forget() -> None:
    """Drop every cached read (after an action, or on "Refresh now")."""
    st.cache_data.clear()
