"""The Streamlit dashboard (issue 6), every page run by ``AppTest`` against a real running API
with known data (tests/support/dashboard_world.py), on SQLite and PostgreSQL. The numbers shown on
the KPI tiles must equal ``GET /v1/kpis`` for the same instant and filters; the actions go through
with the operator's own key, and are refused with a clear message with a key lacking the role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.db import Database
from dashboard import loaders
from dashboard import tiles as rules
from tests.support.dashboard_expected import expected_tiles, money
from tests.support.dashboard_world import AS_OF, TOKEN_ENV, World, running_world, z

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PAGES = ("views/flows.py", "views/exceptions.py", "views/replays.py", "views/reports.py")
TIMEOUT = 60


@pytest.fixture
def world(
    tmp_path: Path, database_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv(TOKEN_ENV, "mule-token-for-the-dashboard-tests")
    with running_world(tmp_path, database_url, database) as running:
        monkeypatch.setenv("SYNCWATCH_API_URL", running.url)
        monkeypatch.setenv("SYNCWATCH_API_KEY", running.keys["viewer"])
        st.cache_data.clear()
        yield running
    st.cache_data.clear()


def run_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> dict[str, tuple[str, str | None]]:
    return {metric.label: (metric.value, metric.delta) for metric in at.metric}


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("error", "warning", "info", "success") for e in getattr(at, kind)]
    return "\n".join(str(part) for part in parts)


def kpis(world: World, **filters: str) -> tuple[dict[str, Any], dict[str, Any]]:
    now = world.get("/v1/kpis", as_of=z(AS_OF), window="7d", **filters)
    before = world.get("/v1/kpis", as_of="2026-11-03T00:00:00Z", window="7d", **filters)
    return now, before


# --- the overview ---


def test_the_tiles_show_the_kpis_of_the_api(world: World) -> None:
    at = run_app()
    now, before = kpis(world)
    tiles = shown(at)
    assert {label: value for label, (value, _) in tiles.items()} == expected_tiles(now)
    # Worked out from the scenario, so that a wrong format cannot agree with itself.
    assert tiles["Stuck flows"][0] == "2"
    assert tiles["Revenue at risk (USD)"][0] == "5,000.00"
    assert tiles["Invoice dispute rate"][0] == "50.00%"
    # Due in W (deadline T0 + 72 h): A (met), P (Nov 4, met), C (Nov 9, missed): 2 / 3.
    assert tiles["Propagation success"][0] == "66.67%"
    assert tiles["Setup cycle time p50"] == ("10.00 h", "-10.00 h")  # 20 h the week before
    assert before["flows"]["contract_onboarding"]["duration_seconds"]["p50"] == 72000.0
    assert tiles["Billing lag p50"] == ("—", "no data")  # null: never shown as 0
    assert len(at.get("plotly_chart")) == 6  # 4 trends, stuck by stage, funnel
    assert_charts_show(world, at, now)


def test_large_amounts_are_compact_on_the_tile_and_exact_in_its_help() -> None:
    # The tile's rule, worked out by hand (so that the test's copy cannot agree with a wrong one).
    cases = {
        "5000": "5,000.00",
        "99999.99": "99,999.99",
        "100000": "100.00 k",
        "130606912.345": "130.61 M",
        "999999.999": "1.00 M",
        "-1234567.89": "-1.23 M",
        "1500000000": "1.50 B",
    }
    for amount, text in cases.items():
        assert rules.compact_money(amount) == money(amount) == text, amount
    now = {"revenue_at_risk": {"EUR": "130606912.34"}}
    before = {"revenue_at_risk": {"EUR": "130606912.34"}}
    (tile,) = rules._revenue(now, before)
    assert (tile.label, tile.value, tile.delta) == ("Revenue at risk (EUR)", "130.61 M", "0.00")
    assert "130,606,912.34 EUR" in tile.help
    assert tile.unchanged


def test_a_zero_change_is_neither_a_rise_nor_a_fall() -> None:
    figures = {
        "due": 2,
        "met": 1,
        "completed": 2,
        "open": 3,
        "stuck": 1,
        "success_rate": 0.5,
        "duration_seconds": {"count": 2, "p50": 3600.0, "p90": 7200.0},
    }
    answer = {"flows": {"contract_onboarding": figures}, "revenue_at_risk": {}}
    shown_tiles = {tile.label: tile for tile in rules.tiles(answer, answer)}
    for label in ("Propagation success", "Setup cycle time p50", "Open flows", "Stuck flows"):
        tile = shown_tiles[label]
        assert tile.delta in ("0.00 pp", "0.00 h", "0"), (label, tile.delta)
        assert tile.unchanged, label
    changed = dict(figures, stuck=2)
    after = {
        t.label: t
        for t in rules.tiles({**answer, "flows": {"contract_onboarding": changed}}, answer)
    }
    assert after["Stuck flows"].delta == "+1" and not after["Stuck flows"].unchanged


def chart(at: AppTest, title: str) -> dict[str, Any]:
    """The figure of the chart titled ``title``."""
    for element in at.get("plotly_chart"):
        figure: dict[str, Any] = json.loads(element.proto.spec)
        if figure["layout"]["title"]["text"] == title:
            return figure
    raise AssertionError(f"no chart {title!r}")


def assert_charts_show(world: World, at: AppTest, now: dict[str, Any], **filters: str) -> None:
    """The trends are ``/v1/kpis/series`` over the 7 days before as_of; the bars and the funnel
    are ``now``'s own numbers."""
    points = world.get(
        "/v1/kpis/series",
        **{"from": "2026-11-03T00:00:00Z"},
        to=z(AS_OF),
        step="1d",
        window=now_window(now),
        **filters,
    )
    success = {t["name"]: t for t in chart(at, "Success rate")["data"]}
    assert len(points) == 8 and points[-1]["as_of"] == z(AS_OF)
    assert list(success["Propagation success"]["x"]) == [p["as_of"] for p in points]
    assert list(success["Propagation success"]["y"]) == [
        p["flows"]["contract_onboarding"]["success_rate"] for p in points
    ]
    stuck = {t["name"]: list(t["y"]) for t in chart(at, "Open and stuck flows")["data"]}
    assert stuck["stuck"] == [sum(f["stuck"] for f in p["flows"].values()) for p in points]
    bars = {
        t["name"]: dict(zip(t["x"], t["y"], strict=True))
        for t in chart(at, "Stuck flows by stage")["data"]
    }
    assert bars == {name: f["stuck_by_stage"] for name, f in now["flows"].items()}
    [funnel] = chart(at, "Contract signed to first invoice")["data"]
    assert list(funnel["x"]) == [step["count"] for step in now["funnel"]]
    assert list(funnel["y"]) == [step["stage"] for step in now["funnel"]]


def now_window(now: dict[str, Any]) -> str:
    start = datetime.fromisoformat(now["window"]["start"].replace("Z", "+00:00"))
    return f"{(AS_OF - start).days}d"


def test_a_filter_chosen_in_the_widgets_goes_to_the_api(world: World) -> None:
    at = run_app()
    assert "AMER" in at.selectbox(key="overview_region").options
    at.selectbox(key="overview_region").select("AMER").run()
    assert not at.exception
    now, before = kpis(world, region="AMER")
    tiles = shown(at)
    assert {label: value for label, (value, _) in tiles.items()} == expected_tiles(now)
    # Only B (AMER), signed Nov 9: nothing AMER in the previous period, so the change is +1.
    assert sum(f["stuck"] for f in before["flows"].values()) == 0
    assert tiles["Stuck flows"] == ("1", "+1")
    assert "Revenue at risk (EUR)" not in tiles
    assert tiles["Invoice dispute rate"] == ("—", "no data")  # left out with a filter
    assert_charts_show(world, at, now, region="AMER")

    at.selectbox(key="overview_window").select("30d").run()
    assert not at.exception
    month = world.get("/v1/kpis", as_of=z(AS_OF), window="30d", region="AMER")
    assert shown(at)["Open flows"][0] == str(sum(f["open"] for f in month["flows"].values()))


def test_no_data_yet_is_said_and_null_kpis_are_not_zero(
    tmp_path: Path, database_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "mule-token-for-the-dashboard-tests")
    with running_world(tmp_path, database_url, database, load=False) as empty:
        monkeypatch.setenv("SYNCWATCH_API_URL", empty.url)
        monkeypatch.setenv("SYNCWATCH_API_KEY", empty.keys["viewer"])
        st.cache_data.clear()
        at = run_app()
        assert "No data yet" in texts(at)
        tiles = shown(at)
        for label in ("Propagation success", "Setup cycle time p90", "Invoice dispute rate"):
            assert tiles[label] == ("—", "no data"), label
        assert tiles["Stuck flows"][0] == "0"
        for page, message in zip(
            PAGES,
            (
                "No stuck flows yet.",
                "No open findings in pmo.",
                "No replays yet.",
                "No reports kept yet",
            ),
            strict=True,
        ):
            at = run_app(page)
            assert message in texts(at), page
    st.cache_data.clear()


# --- the other pages ---


def test_the_flows_page_lists_stuck_flows_and_shows_one(world: World) -> None:
    at = run_app("views/flows.py")
    stuck = sum(f["stuck"] for f in world.get("/v1/kpis", as_of=z(AS_OF))["flows"].values())
    assert at.caption[0].value.startswith(f"{stuck} stuck flows as of 2026-11-10 00:00 UTC")
    # Oldest first: C (T0 Nov 6), then B (T0 Nov 9).
    assert list(at.dataframe[0].value["flow_id"]) == [
        "contract_onboarding:Q2C-C",
        "contract_onboarding:Q2C-B",
    ]
    at.selectbox(key="flows_sort").select("value_at_risk").run()
    api = world.get("/v1/flows", state="stuck", sort="value_at_risk")
    assert api["items"][0]["flow_id"] == "contract_onboarding:Q2C-B"  # 5000.00 before 2000.00
    assert list(at.dataframe[0].value["flow_id"]) == [item["flow_id"] for item in api["items"]]
    # read as people read them: money exact with separators, ages in days
    table = at.dataframe[0].value
    assert list(table["value_at_risk"]) == [
        f"{Decimal(item['value_at_risk']):,.2f} {item['currency']}" for item in api["items"]
    ]
    assert table["value_at_risk"].iloc[0] == "5,000.00 USD"
    assert list(table["age_seconds"]) == [
        round(item["age_seconds"] / 86400, 1) for item in api["items"]
    ]
    at.text_input(key="flow_id").input("contract_onboarding:Q2C-B").run()
    assert not at.exception
    assert at.subheader[0].value == "contract_onboarding:Q2C-B"
    assert len(at.get("plotly_chart")) == 1  # the timeline
    markdown = " ".join(m.value for m in at.markdown)
    assert "**Events** (2)" in markdown and "**Findings** (1)" in markdown
    flow = world.get("/v1/flows/contract_onboarding:Q2C-B")
    events = next(t.value for t in at.dataframe if "type" in t.value.columns)
    assert list(events["id"]) == [event["id"] for event in flow["events"]]
    assert list(events["source"]) == [event["source"] for event in flow["events"]]


def test_the_queues_show_the_open_findings_and_aging_of_the_api(world: World) -> None:
    at = run_app("views/exceptions.py")
    queues = world.get("/v1/kpis", as_of=z(AS_OF))["exceptions"]
    buckets = {"lt_1d": "< 1 d", "1d_3d": "1-3 d", "3d_7d": "3-7 d", "gt_7d": "> 7 d"}
    expected = {}
    for queue, figures in queues.items():
        expected[f"{queue} open"] = str(figures["open"])
        for bucket, label in buckets.items():
            expected[f"{queue} {label}"] = str(figures["aging"][bucket])
    assert {label: value for label, (value, _) in shown(at).items()} == expected
    # B's finding (its failure on Nov 9, 11:00) is less than a day old; C waits in pmo.
    assert (expected["integration_oncall open"], expected["integration_oncall < 1 d"]) == ("1", "1")
    assert expected["pmo open"] == "1"
    # each finding with what it is about (a stuck flow's stage, a term mismatch's differences)
    shown_details = {
        finding_id: text
        for table in at.dataframe
        if "details" in table.value.columns
        for finding_id, text in zip(table.value["id"], table.value["details"], strict=True)
    }
    api_details = {
        item["id"]: item["details"]
        for queue in queues
        for item in world.get("/v1/exceptions", queue=queue)["items"]
    }
    assert shown_details.keys() == api_details.keys() and api_details
    for finding_id, details in api_details.items():
        assert shown_details[finding_id] == "; ".join(
            f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in details.items()
        )
    overview = run_app().dataframe[-1].value  # the overview's table: the same numbers
    assert dict(zip(overview["queue"], overview["open"], strict=True)) == {
        queue: figures["open"] for queue, figures in queues.items()
    }


def audited(world: World, action: str) -> list[str]:
    """The actors of the audit log's entries of ``action`` (read with the admin key)."""
    return [e["actor"] for e in world.get("/v1/audit", "admin", action=action)["items"]]


def operator(at: AppTest, key: str) -> None:
    at.text_input(key="operator_key_input").input(key).run()


def test_an_exception_is_acknowledged_then_resolved_with_the_operators_key(world: World) -> None:
    at = run_app("views/exceptions.py")
    operator(at, world.keys["oncall"])
    [finding] = world.get("/v1/exceptions", queue="integration_oncall")["items"]
    at.radio(key="act_integration_oncall_action").set_value("acknowledge")
    at.button(key="act_integration_oncall_apply").click().run()
    assert not at.exception
    assert f"Finding {finding['id']}: acknowledge done." in texts(at)
    [acked] = world.get("/v1/exceptions", queue="integration_oncall")["items"]
    assert acked["acknowledged_by"] == "oncall"  # the operator's key, not the read key
    assert audited(world, "finding.ack") == ["oncall"]

    at.radio(key="act_integration_oncall_action").set_value("resolve")
    at.text_input(key="act_integration_oncall_note").input("retried by hand")
    at.button(key="act_integration_oncall_apply").click().run()
    assert not at.exception
    assert world.get("/v1/exceptions", queue="integration_oncall")["items"] == []
    [done] = world.get("/v1/exceptions", queue="integration_oncall", status="resolved")["items"]
    assert (done["resolved_by"], done["resolution"]) == ("oncall", "retried by hand")
    assert audited(world, "finding.resolve") == ["oncall"]


def test_a_key_without_the_role_gets_a_clear_message(world: World) -> None:
    at = run_app("views/exceptions.py")
    at.button(key="act_pmo_apply").click().run()  # no key typed: never the dashboard's read key
    assert "Enter your own API key above first" in texts(at)
    operator(at, world.keys["viewer"])
    at.button(key="act_pmo_apply").click().run()
    assert not at.exception
    assert "Your key lacks the role pmo" in texts(at)
    assert world.get("/v1/exceptions", queue="pmo")["items"][0]["acknowledged_by"] is None
    assert audited(world, "finding.ack") == []


def test_a_replay_goes_to_the_middleware_and_a_refusal_is_explained(world: World) -> None:
    at = run_app("views/replays.py")
    assert "No replays yet." in texts(at)
    operator(at, world.keys["oncall"])
    at.text_input(key="replay_flow_id").input("contract_onboarding:Q2C-B")
    at.text_input(key="replay_reason").input("ERP fixed")
    at.button(key="replay_submit").click().run()
    assert not at.exception
    assert "contract_onboarding:Q2C-B: sent" in texts(at)
    assert world.middleware.paths == ["/executions/EX-B/retry"]
    [replay] = world.get("/v1/replays")["items"]
    assert (replay["requested_by"], replay["reason"]) == ("oncall", "ERP fixed")
    assert audited(world, "replay.request") == ["oncall"]
    assert audited(world, "replay.sent") == ["oncall"]
    assert list(at.dataframe[0].value["id"]) == [replay["id"]]

    at.text_input(key="replay_flow_id").input("contract_onboarding:Q2C-C")
    at.button(key="replay_submit").click().run()  # stuck, but not on an integration failure
    assert "Refused (409)" in texts(at) and "refusal:" in texts(at)
    assert world.middleware.paths == ["/executions/EX-B/retry"]

    operator(at, world.keys["viewer"])
    at.button(key="replay_submit").click().run()
    assert "Your key lacks the role oncall" in texts(at)


def test_the_report_of_any_past_week_is_made_from_the_page(world: World) -> None:
    at = run_app("views/reports.py")
    assert "No reports kept yet" in texts(at)
    at.text_input(key="report_week").input("2026-48").run()
    assert "not an ISO week" in texts(at)
    at.text_input(key="report_week").input("2999-W01").run()
    assert "in the future" in texts(at)  # the API's 404, said in the page
    at.text_input(key="report_week").input("2026-W44").run()
    at.selectbox(key="report_format").select("md").run()
    assert not at.exception, at.exception
    kept = httpx.get(
        world.url + "/v1/reports",
        headers={"Authorization": f"Bearer {world.keys['viewer']}"},
        timeout=60,
    ).json()
    assert [(item["week"], item["formats"]) for item in kept["items"]] == [
        ("2026-W44", ["html", "md"])
    ]  # html: the default format, shown first
    made = httpx.get(
        world.url + "/v1/reports/2026-W44.md",
        headers={"Authorization": f"Bearer {world.keys['viewer']}"},
        timeout=60,
    )
    assert made.text.strip() in [m.value.strip() for m in at.markdown]  # shown in the page
    assert "Download 2026-W44.md" in [b.label for b in at.get("download_button")]


def test_the_reports_page_lists_the_reports_to_download(world: World) -> None:
    at = run_app("views/reports.py")
    assert "No reports kept yet" in texts(at)
    # The API makes a complete week's report on demand, and keeps it.
    made = httpx.get(
        world.url + "/v1/reports/2026-W45.md",
        headers={"Authorization": f"Bearer {world.keys['viewer']}"},
        timeout=60,
    )
    assert made.status_code == 200, made.text
    st.cache_data.clear()
    at = run_app("views/reports.py")
    assert [button.label for button in at.get("download_button")][:1] == ["2026-W45.md"]
    assert loaders.report_file("2026-W45", "md").content == made.content
    at.selectbox(key="report_open").select("2026-W45").run()
    assert not at.exception
    assert made.text.strip() in [m.value.strip() for m in at.markdown]  # opened in the page


# --- when the API cannot be read ---


def test_an_unreachable_api_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCWATCH_API_URL", "http://127.0.0.1:9")  # discard: nothing listens
    monkeypatch.setenv("SYNCWATCH_API_KEY", "any")
    st.cache_data.clear()
    for page in (None, *PAGES):
        at = run_app(page)
        assert "API unreachable" in texts(at), page


def test_a_wrong_key_is_named(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCWATCH_API_KEY", "not-a-key")
    for page in (None, *PAGES):
        at = run_app(page)
        assert "refused the dashboard's key (401)" in texts(at), page
