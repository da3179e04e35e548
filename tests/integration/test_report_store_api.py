"""Where weekly reports are kept and how they are served: GET /v1/reports and
GET /v1/reports/{week}.{html,pdf,md}, on SQLite and PostgreSQL, with the report time zone
Europe/Berlin and the app's clock at NOW (Thursday of 2026-W49)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.db import Database
from core.settings import load_settings
from kpis.reports import store
from kpis.reports.week import parse_week
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.reports import Counting

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)  # Thursday, ISO week 2026-W49
MADE_AT = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@pytest.fixture
def maker() -> Counting:
    return Counting()


@pytest.fixture
def client(
    tmp_path: Path, database_url: str, database: Database, maker: Counting
) -> Iterator[TestClient]:
    settings = load_settings(
        {
            "data_dir": tmp_path,
            "database_url": database_url,
            "reports": {"timezone": "Europe/Berlin", "keep_weeks": 4},
        }
    )
    app = create_app(settings, database, clock=lambda: NOW)
    app.state.report_maker = maker
    with TestClient(app) as test_client:
        yield test_client


def _keep(database: Database, week: str, **contents: bytes) -> None:
    with database.write() as connection:
        store.save(connection, parse_week(week), contents, now=MADE_AT, generated_by="test")


def test_the_list_is_empty_at_first(client: TestClient, keys: dict[str, str]) -> None:
    body = client.get("/v1/reports", headers=bearer(keys["viewer"])).json()
    assert body["items"] == []
    assert body["timezone"] == "Europe/Berlin"


def test_the_list_shows_kept_weeks_newest_first_with_their_local_bounds(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    _keep(database, "2026-W47", md=b"# 47")
    _keep(database, "2026-W48", pdf=b"%PDF-", md=b"# 48", html=b"<html>")
    body = client.get("/v1/reports", headers=bearer(keys["finance_ops"])).json()
    assert body["items"] == [
        {
            "week": "2026-W48",
            "formats": ["html", "md", "pdf"],
            "generated_at": "2026-11-30T06:00:00Z",
            # Monday 23 November 00:00 CET (UTC+1) to Monday 30 November 00:00 CET
            "start": "2026-11-22T23:00:00Z",
            "end": "2026-11-29T23:00:00Z",
        },
        {
            "week": "2026-W47",
            "formats": ["md"],
            "generated_at": "2026-11-30T06:00:00Z",
            "start": "2026-11-15T23:00:00Z",
            "end": "2026-11-22T23:00:00Z",
        },
    ]


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("html", "text/html; charset=utf-8"),
        ("pdf", "application/pdf"),
        ("md", "text/markdown; charset=utf-8"),
    ],
)
def test_a_kept_report_is_served_as_an_attachment_with_its_media_type(
    client: TestClient,
    keys: dict[str, str],
    database: Database,
    maker: Counting,
    fmt: str,
    media_type: str,
) -> None:
    content = f"the {fmt} of week 48".encode()
    _keep(database, "2026-W48", **{fmt: content})
    response = client.get(f"/v1/reports/2026-W48.{fmt}", headers=bearer(keys["oncall"]))
    assert response.status_code == 200, response.text
    assert response.content == content
    assert response.headers["content-type"] == media_type
    assert response.headers["content-disposition"] == (
        f'attachment; filename="syncwatch-report-2026-W48.{fmt}"'
    )
    assert maker.calls == []  # served from the store, not made again


def test_a_complete_week_not_kept_is_made_on_demand_kept_and_served(
    client: TestClient, keys: dict[str, str], database: Database, maker: Counting
) -> None:
    headers = bearer(keys["viewer"])
    first = client.get("/v1/reports/2026-W48.md", headers=headers)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "text/markdown; charset=utf-8"
    assert "2026-W48" in first.text
    assert maker.calls == [("2026-W48", ("md",))]
    # kept: listed, and the next download does not make it again
    items = client.get("/v1/reports", headers=headers).json()["items"]
    assert [(i["week"], i["formats"], i["generated_at"]) for i in items] == [
        ("2026-W48", ["md"], "2026-12-03T12:00:00Z")
    ]
    again = client.get("/v1/reports/2026-W48.md", headers=headers)
    assert again.content == first.content
    assert len(maker.calls) == 1
    with database.read() as connection:
        kept = store.get(connection, "2026-W48", "md")
    assert kept is not None
    assert kept.generated_by == "api:viewer"


def test_a_pdf_is_made_on_demand(client: TestClient, keys: dict[str, str], maker: Counting) -> None:
    response = client.get("/v1/reports/2026-W47.pdf", headers=bearer(keys["pmo"]))
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"%PDF-")
    assert response.headers["content-type"] == "application/pdf"
    assert maker.calls == [("2026-W47", ("pdf",))]


def test_a_week_older_than_the_kept_weeks_is_made_but_not_kept(
    client: TestClient, keys: dict[str, str], maker: Counting
) -> None:
    # keep_weeks 4 with 2026-W49 in progress keeps W45..W48
    response = client.get("/v1/reports/2026-W40.md", headers=bearer(keys["viewer"]))
    assert response.status_code == 200, response.text
    assert client.get("/v1/reports", headers=bearer(keys["viewer"])).json()["items"] == []


@pytest.mark.parametrize(
    ("week", "words"),
    [("2026-W49", "in progress"), ("2026-W50", "in the future"), ("2027-W10", "in the future")],
)
def test_a_week_that_has_not_ended_has_no_report(
    client: TestClient, keys: dict[str, str], maker: Counting, week: str, words: str
) -> None:
    response = client.get(f"/v1/reports/{week}.html", headers=bearer(keys["viewer"]))
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert words in error["message"]
    assert "Europe/Berlin" in error["message"]
    assert maker.calls == []


@pytest.mark.parametrize(
    "path",
    ["2026-W54.md", "2025-W53.md", "2026-48.md", "W48.pdf", "2026-W00.html", "2026-W48.docx"],
)
def test_a_bad_week_or_format_is_422(
    client: TestClient, keys: dict[str, str], maker: Counting, path: str
) -> None:
    response = client.get(f"/v1/reports/{path}", headers=bearer(keys["viewer"]))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid"
    assert maker.calls == []


def test_only_readers_may_read_reports(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    _keep(database, "2026-W48", md=b"# 48")
    for role in ("ingest", "alertmanager"):
        for path in ("/v1/reports", "/v1/reports/2026-W48.md"):
            response = client.get(path, headers=bearer(keys[role]))
            assert response.status_code == 403, (role, path)
    assert client.get("/v1/reports").status_code == 401


def test_prune_deletes_the_weeks_before_the_kept_ones(database: Database) -> None:
    for week in ("2025-W52", "2026-W01", "2026-W44", "2026-W45", "2026-W48"):
        _keep(database, week, md=b"#", pdf=b"%PDF-")
    with database.write() as connection:
        gone = store.prune(connection, current=parse_week("2026-W49"), keep_weeks=4)
    assert gone == ["2025-W52", "2026-W01", "2026-W44"]
    with database.read() as connection:
        assert [w.week for w in store.list_weeks(connection)] == ["2026-W48", "2026-W45"]


def test_saving_again_replaces_the_kept_bytes(database: Database) -> None:
    _keep(database, "2026-W48", md=b"old")
    with database.write() as connection:
        store.save(connection, "2026-W48", {"md": b"new!"}, now=NOW, generated_by="scheduler")
    with database.read() as connection:
        kept = store.get(connection, "2026-W48", "md")
    assert kept is not None
    assert (kept.content, kept.generated_at, kept.generated_by) == (b"new!", NOW, "scheduler")
