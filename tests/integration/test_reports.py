"""The weekly KPI report (issue 7) against the KPI API, on SQLite and PostgreSQL: every number of
the report for ISO week 2026-W48 (UTC: (Nov 23 00:00Z, Nov 30 00:00Z]) is the number of
GET /v1/kpis with that week's ``start`` and as_of; the trends are the answers of the 7 weeks
before (and GET /v1/kpis/series gives the same); the stuck flows are GET /v1/flows?state=stuck
&sort=value_at_risk. Then the formats: the PDF read back with pdftotext (and a page drawn with
pdftoppm), the HTML parsed for outside references, the Markdown searched for the numbers."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from core.db import Database
from core.settings import Settings, load_settings
from kpis.reports import display
from kpis.reports.content import WeeklyReport
from kpis.reports.gather import gather
from kpis.reports.make import make, render
from kpis.reports.week import parse_week, window
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.integration.test_kpis_api import (
    FLOW_TYPES,
    amended,
    ask,
    dispute,
    done,
    integration,
    invoice,
    milestone,
    nov,
    onboarding,
    plan_updated,
    post,
    probe,
    z,
)
from tests.support.reportfiles import assert_self_contained, draw_page, pdf_text

WEEK = "2026-W48"
CLOCK = nov(27)  # the API's clock: dead letters are received in W48
NOW = nov(30) + timedelta(days=1)  # the probes run after the week
SOURCES = {"erp/netsuite": {"silent_after": "1d"}, "clm/ironclad": {"silent_after": "30d"}}
TOP = 3


@pytest.fixture
def report_settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings({"data_dir": tmp_path, "database_url": database_url, "sources": SOURCES})


@pytest.fixture
def client(report_settings: Settings, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(report_settings, database, clock=lambda: CLOCK)) as test_client:
        yield test_client


def scenario() -> list[dict[str, Any]]:
    return [
        # earlier weeks, for the trend: W42 met, W44 missed, W45 met
        *onboarding("T-42", nov(-19), done(20)),
        *onboarding("T-44", nov(-5), done(80)),
        *onboarding("T-45", nov(2), done(20)),
        *onboarding("A-5", nov(10), {"customer.synced": 1}, value="1000.00"),  # stuck
        # W47
        *onboarding("P-1", nov(16), done(75)),  # due Nov 19, missed (activated late)
        *onboarding("P-2", nov(16), done(80)),  # likewise
        *onboarding("A-1", nov(21), done(30)),  # due Nov 24 (W48), met
        milestone("A-3", "A-3-M1", nov(18, 6), amount="7000.00"),  # no invoice: stuck
        # W48
        *onboarding("A-2", nov(23, 12), done(70)),  # due Nov 26 12:00, met
        *onboarding("A-3", nov(22), {"customer.synced": 1, "project.created": 2}, value="90000.00"),
        *onboarding("A-4", nov(24), {}, value="250000.00", currency="USD"),
        milestone("A-1", "A-1-M1", nov(23, 10), amount="5000.00"),
        invoice("A-1", "INV-1", nov(25), milestone_id="A-1-M1"),
        dispute("A-1", "INV-1", nov(27)),
        amended("P-1", "AM-1", nov(24)),
        plan_updated("P-1", "AM-1", nov(24, 5)),
        amended("A-1", "AM-2", nov(25)),  # never propagated: stuck
        integration("failed", "A-4", "customer.synced", nov(24, 2)),
        invoice(None, "INV-U", nov(26)),  # uncorrelated
    ]


def load_scenario(client: TestClient, keys: dict[str, str], database: Database) -> None:
    post(client, keys, scenario())
    bad = {**invoice("A-2", "INV-X", nov(26)), "time": "yesterday"}
    answer = client.post("/v1/events", json=[bad], headers=bearer(keys["ingest"]))
    assert answer.status_code == 200 and len(answer.json()["rejected"]) == 1
    probe(database, NOW)


def number(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def at(answer: Mapping[str, Any], path: tuple[str, ...], zero: bool) -> Decimal | None:
    node: Any = answer
    for key in path:
        if key not in node:
            return Decimal(0) if zero else None
        node = node[key]
    return number(node)


def expected_paths(answers: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    """Every KPI of kpis.md in the answers: the report must show each, no more."""
    last = answers[-1]
    paths: set[tuple[str, ...]] = set()
    for flow_type in last["flows"]:
        for key in ("due", "met", "success_rate", "completed", "open", "stuck"):
            paths.add(("flows", flow_type, key))
        for key in ("mean", "p50", "p90", "p95", "max"):
            paths.add(("flows", flow_type, "duration_seconds", key))
    for name in ("revenue_at_risk", "integration_failures"):
        paths |= {(name, key) for answer in answers for key in answer[name]}
    paths |= {
        (name,)
        for name in (
            "invoice_dispute_rate",
            "duplicate_projects",
            "amendment_conflicts",
            "uncorrelated_events",
        )
    }
    paths |= {("exceptions", queue, "open") for queue in last["exceptions"]}
    return paths


def api_answers(client: TestClient, key: str) -> list[dict[str, Any]]:
    """GET /v1/kpis for W41..W48, each with its start and as_of."""
    week = parse_week(WEEK)
    spans = [window(week.shifted(offset), UTC) for offset in range(-7, 1)]
    answers = []
    for span in spans:
        answer = ask(client, key, start=span.start, as_of=span.as_of)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
    return answers


def test_report_numbers_equal_the_kpi_api(
    client: TestClient, keys: dict[str, str], database: Database, report_settings: Settings
) -> None:
    load_scenario(client, keys, database)
    report = gather(
        database, FLOW_TYPES, parse_week(WEEK), tz=ZoneInfo("UTC"), top_stuck=TOP,
        sources=report_settings.sources,
    )  # fmt: skip
    answers = api_answers(client, keys["viewer"])
    assert answers[-1]["window"] == {"start": "2026-11-23T00:00:00Z", "end": "2026-11-30T00:00:00Z"}
    series = ask(
        client, keys["viewer"], "/v1/kpis/series",
        **{"from": nov(30) - timedelta(weeks=7), "to": nov(30), "step": "7d", "window": "7d"},
    )  # fmt: skip
    assert series.status_code == 200, series.text
    assert series.json() == answers  # in UTC a week is 7 days: the series form is the same

    # every KPI, its previous week, change and 8-week trend
    lines = report.lines()
    assert {line.metric.path for line in lines} == expected_paths(answers)
    for line in lines:
        zero = line.metric.missing_is_zero
        trend = tuple(at(answer, line.metric.path, zero) for answer in answers)
        assert line.trend == trend, line.metric
        assert (line.value, line.previous) == (trend[-1], trend[-2])
        if trend[-1] is None or trend[-2] is None:
            assert line.change is None
        else:
            assert line.change == trend[-1] - trend[-2]
    by_path = {line.metric.path: line for line in lines}
    # worked out by hand: onboarding due in W48 are A-1 (met), A-2 (met), A-3 and A-4 (missed)
    rate = by_path[("flows", "contract_onboarding", "success_rate")]
    assert (rate.value, rate.previous, rate.change) == (Decimal("0.5"), Decimal(0), Decimal("0.5"))
    assert by_path[("revenue_at_risk", "USD")].value == Decimal("250000.00")
    # INV-1 disputed, of INV-1 and INV-U posted
    assert by_path[("invoice_dispute_rate",)].value == Decimal("0.5")

    # stuck flows at the week's end, the largest value at risk first
    flows = client.get(
        "/v1/flows",
        params={"state": "stuck", "sort": "value_at_risk", "as_of": z(nov(30)), "limit": TOP},
        headers=bearer(keys["viewer"]),
    ).json()
    assert report.stuck_total == flows["total"] == 5  # A-3-M1, AM-2
    assert [
        (s.contract, s.flow_type, s.stage, s.queue, s.age_seconds, s.value_at_risk, s.currency)
        for s in report.stuck
    ] == [
        (
            f["correlation_id"], f["flow_type"], f["stuck_stage"], f["queue"],
            number(f["age_seconds"]), number(f["value_at_risk"]), f["currency"],
        )
        for f in flows["items"]
    ]  # fmt: skip
    assert [s.contract for s in report.stuck] == ["A-4", "A-3", "A-3"]
    assert [s.value_at_risk for s in report.stuck] == [Decimal(v) for v in (250000, 90000, 7000)]

    # the further figures, as of the week's end
    answer = answers[-1]
    assert report.stuck_by_stage == {k: v["stuck_by_stage"] for k, v in answer["flows"].items()}
    assert {q.queue: {"open": q.open, "oldest_age_seconds": q.oldest_age_seconds,
                      "aging": dict(q.aging)} for q in report.exceptions} == {
        queue: {**entry, "oldest_age_seconds": number(entry["oldest_age_seconds"])}
        for queue, entry in answer["exceptions"].items()
    }  # fmt: skip
    assert report.stage_misses == answer["stage_misses"]
    assert report.stage_misses["contract_onboarding"]["customer.synced"] == 1
    assert report.replays == answer["replays"]
    assert [list(step) for step in report.funnel] == [
        [s["stage"], s["count"]] for s in answer["funnel"]
    ]
    quality = answer["data_quality"]
    assert report.uncorrelated_events == quality["uncorrelated_events"] == 1
    assert report.dead_letters == quality["dead_letters"] and sum(report.dead_letters.values()) == 1
    assert [s["source"] for s in report.silent_sources] == [
        s["source"] for s in quality["silent_sources"]
    ]
    assert [s["source"] for s in report.silent_sources] == ["erp/netsuite"]

    check_formats(report, tmp_pdf_dir=Path(report_settings.data_dir))


def _row(*cells: str) -> re.Pattern[str]:
    return re.compile(r"\s+".join(re.escape(cell) for cell in cells))


def check_formats(report: WeeklyReport, tmp_pdf_dir: Path) -> None:
    files = render(report)
    html, md = files["html"].decode(), files["md"].decode()
    assert_self_contained(html)
    text = pdf_text(files["pdf"], tmp_pdf_dir)
    assert "Weekly KPI report 2026-W48" in text and "(UTC, 168 h)" in text
    for line in report.lines():
        cells = (line.metric.label, display.value(line), display.previous(line))
        assert _row(*cells, display.change(line)).search(text), cells
        assert f"| {' | '.join(cells)} | {display.change(line)} |" in md, cells
    for s in report.stuck:
        money = display.money(s.value_at_risk, s.currency)
        assert _row(s.contract, s.flow_type).search(text) and money in text
        assert f"| {s.contract} | {s.flow_type} | {s.stage} | {display.age(s.age_seconds)} |" in md
    # numbers written by hand, as a reader sees them
    for shown in ("50.00 %", "+50.00 pp", "250,000.00 USD", "90,000.00 EUR", "A-4"):
        assert shown in text and shown in md, shown
    assert "Mon 23 Nov 2026 00:00 UTC" in text and "Mon 30 Nov 2026 00:00 UTC" in md
    assert _row("customer.synced", "1").search(text)  # missed stage deadline
    page = draw_page(files["pdf"], tmp_pdf_dir)
    assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and page.stat().st_size > 10_000


def test_dst_week_in_berlin_uses_its_own_window(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    """2026-W13 in Europe/Berlin ends on the day the clocks go forward: 167 h, from Sunday
    23:00Z to Sunday 22:00Z. A flow completed on Sunday March 22 at 23:30 CET (22:30Z) belongs
    to W12: a 7 x 24 h window would count it in W13."""
    berlin = ZoneInfo("Europe/Berlin")
    t0 = datetime(2026, 3, 20, tzinfo=UTC)
    finished = datetime(2026, 3, 22, 22, 30, tzinfo=UTC)
    post(client, keys, onboarding("DST-1", t0, done(finished - t0)))
    probe(database, datetime(2026, 4, 1, tzinfo=UTC))
    span = window(parse_week("2026-W13"), berlin)
    assert (span.start, span.as_of) == (
        datetime(2026, 3, 22, 23, tzinfo=UTC),
        datetime(2026, 3, 29, 22, tzinfo=UTC),
    )
    report = gather(database, FLOW_TYPES, parse_week("2026-W13"), tz=berlin)
    by_path = {line.metric.path: line for line in report.lines()}
    completed = by_path[("flows", "contract_onboarding", "completed")]
    due = by_path[("flows", "contract_onboarding", "due")]
    assert (completed.value, completed.previous) == (0, 1)
    assert due.value == 1  # the deadline, Monday 01:00 CET, is in W13
    viewer = keys["viewer"]
    exact = ask(client, viewer, start=span.start, as_of=span.as_of).json()
    assert exact["flows"]["contract_onboarding"]["completed"] == 0
    assert (
        ask(client, viewer, as_of=span.as_of, window="7d").json()["flows"]["contract_onboarding"][
            "completed"
        ]
        == 1
    )
    text = render(report, ["md"])["md"].decode()
    assert "Mon 23 Mar 2026 00:00 CET – Mon 30 Mar 2026 00:00 CEST (Europe/Berlin, 167 h)" in text


def test_empty_store_gives_a_no_data_report(database: Database, tmp_path: Path) -> None:
    files = make(database, FLOW_TYPES, WEEK, tz=ZoneInfo("Europe/Berlin"))
    assert set(files) == {"html", "pdf", "md"}
    md, html = files["md"].decode(), files["html"].decode()
    text = pdf_text(files["pdf"], tmp_path)
    for body in (md, html, text):
        assert "No data for this week" in body
    assert _row("success rate", "—", "—", "—").search(text)  # null, not 0
    assert "| success rate | — | — | — |" in md
    assert "0 flows stuck" in text
    assert_self_contained(html)


def test_the_html_report_renders_offline_in_chromium(
    client: TestClient, keys: dict[str, str], database: Database, tmp_path: Path
) -> None:
    """The HTML file opened from disk in Debian's headless Chromium with the network switched
    off: every chart is drawn (each image decoded, none broken) and nothing was fetched."""
    from tests.support.browser import chromium

    load_scenario(client, keys, database)
    path = tmp_path / "syncwatch-report-2026-W48.html"
    path.write_bytes(make(database, FLOW_TYPES, WEEK, tz=ZoneInfo("UTC"), formats=["html"])["html"])
    with chromium(width=1100, height=1400) as driver:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        driver.get(path.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        title = driver.title
        driver.save_screenshot(str(tmp_path / "report.png"))
    assert title == "Weekly KPI report 2026-W48"
    assert len(images) > 10
    assert all(complete and width > 0 for complete, width, _ in images), images
    assert [name for name in fetched if not name.startswith("data:")] == []
