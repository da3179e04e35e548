"""Pull connectors (docs/pull.md) against a real local HTTP source: paging with a cursor, a 429
with Retry-After in the middle, a stop in the middle of a page and a restart that resumes from
the stored cursor, every record stored exactly once; 4xx stops, 5xx retries, credentials from the
environment and never logged. Both databases."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from collector.pull import (
    PULL_CHANNEL,
    Mapper,
    load_cursor,
    make_mapper,
    retry_after_seconds,
    run_connector,
    scheduled_cycle,
)
from core.db import Database
from core.pull_settings import ConnectorSettings, PullSettings
from core.tables import dead_letters, events, job_runs
from tests.support.pullsource import SourceState, source_server

PRESETS = Path(__file__).resolve().parents[1] / "fixtures" / "presets"
TOKEN = "s3cret-pull-token-9f8e"
BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def contract(number: int, *, updated: datetime, status: str = "signed") -> dict[str, Any]:
    return {
        "contractId": f"C-{number:03d}",
        "status": status,
        "signedAt": stamp(BASE + timedelta(minutes=number)),
        "updatedAt": stamp(updated),
        "value": f"{1000 + number}.00",
        "currency": "EUR",
        "entity": "ACME GmbH",
    }


@pytest.fixture
def source() -> Iterator[tuple[SourceState, str]]:
    state = SourceState(required_authorization=f"Bearer {TOKEN}")
    with source_server(state) as url:
        yield state, url


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULL_TEST_TOKEN", TOKEN)


def connector(url: str, **overrides: Any) -> ConnectorSettings:
    values: dict[str, Any] = {
        "url": f"{url}/contracts",
        "params": {
            "modified_since": "{since}",
            "page_token": "{token}",
            "limit": "{page_size}",
        },
        "records": "data.items",
        "next": "paging.next",
        "preset": "pulltest_clm",
        "modified_field": "updatedAt",
        "page_size": 5,
        "token_env": "PULL_TEST_TOKEN",
        "backoff_seconds": 1,
        "max_backoff_seconds": 60,
    }
    values.update(overrides)
    return ConnectorSettings(**values)


def mapper() -> Mapper:
    return make_mapper("pulltest_clm", [PRESETS])


def stored_ids(database: Database) -> list[str]:
    with database.read() as connection:
        return sorted(
            connection.execute(
                sa.select(events.c.event_id).where(events.c.source == "clm/pulltest")
            ).scalars()
        )


def expected_ids(numbers: range | list[int]) -> list[str]:
    return sorted(f"contract-C-{n:03d}-signed" for n in numbers)


class Crash(Exception):
    """The process dies while it maps a record (the page's transaction never commits)."""


def crashing_on(contract_id: str) -> Mapper:
    inner = mapper()

    def mapped(record: Any) -> list[dict[str, Any]]:
        if record.get("contractId") == contract_id:
            raise Crash(contract_id)
        return inner(record)

    return mapped


def test_pages_back_off_on_429_and_resume_after_a_restart_exactly_once(
    database: Database,
    source: tuple[SourceState, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, url = source
    # 23 records; two share an updatedAt (ordered by id at the source)
    state.records = [contract(n, updated=BASE + timedelta(minutes=min(n, 21))) for n in range(23)]
    state.fail_when[("page_token", "5")] = (429, {"Retry-After": "7"})
    settings = connector(url)
    caplog.set_level(logging.DEBUG)

    # first process: pages 1 and 2 stored (a 429 in between), then it dies on page 3
    waits: list[float] = []
    with pytest.raises(Crash):
        run_connector(database, "clm", settings, crashing_on("C-012"), sleep=waits.append)
    assert waits == [7.0]  # exactly what Retry-After said, once
    assert stored_ids(database) == expected_ids(range(10))
    with database.read() as connection:
        kept = load_cursor(connection, "clm")
    assert kept.cursor is None  # the window is not done: the cursor has not moved
    assert kept.state["page_token"] == "10"  # ... but the page token of the stored pages has

    # a restart: a fresh connector (new client, new mapper) resumes from the stored cursor
    waits = []
    report = run_connector(database, "clm", connector(url), mapper(), sleep=waits.append)
    assert report.error is None and waits == []
    assert (report.accepted, report.duplicates, report.rejected) == (13, 0, 0)
    assert stored_ids(database) == expected_ids(range(23))
    resumed = [r for r in state.requests if r.query.get("page_token") == "10"]
    assert len(resumed) == 2  # the crashed attempt and the resumed one; never page 1 again
    assert all(r.authorization == f"Bearer {TOKEN}" for r in state.requests)
    with database.read() as connection:
        kept = load_cursor(connection, "clm")
    assert kept.cursor == stamp(BASE + timedelta(minutes=21))  # the latest updatedAt read
    assert "page_token" not in kept.state

    # the next cycle asks from the cursor (>=): the records at that instant again (duplicates),
    # and the new ones; an unmappable record is dead-lettered once, however often it is read
    state.records += [
        contract(23, updated=BASE + timedelta(minutes=30)),
        contract(24, updated=BASE + timedelta(minutes=31)),
        contract(25, updated=BASE + timedelta(minutes=31), status="withdrawn"),
        contract(26, updated=BASE + timedelta(minutes=31), status="draft"),
    ]
    state.requests.clear()
    report = run_connector(database, "clm", connector(url), mapper())
    assert state.requests[0].query["modified_since"] == stamp(BASE + timedelta(minutes=21))
    assert (report.accepted, report.duplicates, report.rejected) == (2, 2, 1)
    report = run_connector(database, "clm", connector(url), mapper())
    assert (report.accepted, report.duplicates, report.rejected) == (0, 1, 0)
    assert stored_ids(database) == expected_ids([*range(25)])
    with database.read() as connection:
        letters = connection.execute(sa.select(dead_letters.c.reason, dead_letters.c.channel)).all()
    assert len(letters) == 1
    assert letters[0].channel == PULL_CHANNEL and "no rule matches" in letters[0].reason

    assert TOKEN not in caplog.text  # the credential is never logged


def test_the_sources_own_token_as_cursor_with_canonical_records(
    database: Database, source: tuple[SourceState, str]
) -> None:
    state, url = source
    state.records = [
        {
            "id": f"feed-{n}",
            "source": "erp/pulltest",
            "type": "project.created",
            "time": stamp(BASE + timedelta(minutes=n)),
            "data": {"project_id": f"P-{n}", "contract_id": f"C-{n:03d}"},
        }
        for n in range(7)
    ]
    now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    state.fail_next.append(
        (503, {"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)})
    )
    settings = ConnectorSettings(
        url=f"{url}/feed",
        params={"cursor": "{token}", "limit": "{page_size}"},
        records="items",
        next="next_cursor",
        cursor="token",
        page_size=3,
        token_env="PULL_TEST_TOKEN",
    )
    waits: list[float] = []
    report = run_connector(
        database, "feed", settings, make_mapper(None), sleep=waits.append, clock=lambda: now
    )
    assert waits == [30.0]  # Retry-After as an HTTP date
    assert (report.accepted, report.duplicates, report.error) == (7, 0, None)
    with database.read() as connection:
        assert load_cursor(connection, "feed").cursor == "7"
    state.records.append({**state.records[0], "id": "feed-7"})
    report = run_connector(database, "feed", settings, make_mapper(None))
    assert (report.accepted, report.duplicates) == (1, 0)
    with database.read() as connection:
        assert load_cursor(connection, "feed").cursor == "8"
        count = connection.execute(
            sa.select(sa.func.count()).select_from(events).where(events.c.source == "erp/pulltest")
        ).scalar_one()
    assert count == 8


def test_a_4xx_stops_the_cycle_and_5xx_is_retried_with_a_capped_backoff(
    database: Database,
    source: tuple[SourceState, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, url = source
    state.records = [contract(n, updated=BASE + timedelta(minutes=n)) for n in range(3)]
    monkeypatch.setenv("PULL_TEST_TOKEN", "wrong-token-abc")
    caplog.set_level(logging.DEBUG)
    never: list[float] = []
    report = run_connector(database, "clm", connector(url), mapper(), sleep=never.append)
    assert report.error is not None and "401" in report.error
    assert never == []
    assert len(state.requests) == 1  # never retried
    assert stored_ids(database) == []
    with database.read() as connection:
        kept = load_cursor(connection, "clm")
    assert kept.cursor is None and "401" in kept.state["last_error"]["reason"]
    assert "wrong-token-abc" not in caplog.text
    assert any(
        r.levelno == logging.ERROR and "connector clm" in r.getMessage() for r in caplog.records
    )

    monkeypatch.setenv("PULL_TEST_TOKEN", TOKEN)
    state.requests.clear()
    state.fail_next += [(500, {}), (502, {"Retry-After": "100000"}), (500, {})]
    waits: list[float] = []
    report = run_connector(
        database, "clm", connector(url, attempts=3), mapper(), sleep=waits.append
    )
    assert waits == [1.0, 60.0]  # doubled backoff, then Retry-After capped at 60 s
    assert report.error is not None and "gave up after 3 attempts" in report.error
    report = run_connector(database, "clm", connector(url), mapper(), sleep=waits.append)
    assert report.error is None and stored_ids(database) == expected_ids(range(3))


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Tue, 03 Nov 2026 12:01:30 GMT", now) == 90.0
    assert retry_after_seconds("Tue, 03 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_a_scheduled_cycle_is_claimed_once_per_interval(
    database: Database, source: tuple[SourceState, str]
) -> None:
    state, url = source
    state.records = [contract(n, updated=BASE + timedelta(minutes=n)) for n in range(4)]
    settings = connector(url, interval="5m")
    now = datetime(2026, 11, 3, 12, 1, 30, tzinfo=UTC)
    first = scheduled_cycle(
        database, "connector", "clm", settings, mapper(), clock=lambda: now, replica="a"
    )
    second = scheduled_cycle(
        database,
        "connector",
        "clm",
        settings,
        mapper(),
        clock=lambda: now + timedelta(seconds=40),
        replica="b",
    )
    assert first is not None and first.accepted == 4
    assert second is None  # the other replica had this interval
    with database.read() as connection:
        runs = connection.execute(sa.select(job_runs)).all()
    assert [(r.job, r.claimed_by, r.outcome) for r in runs] == [("pull:clm", "a", "done")]
    assert runs[0].scheduled_for == datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    third = scheduled_cycle(
        database,
        "connector",
        "clm",
        settings,
        mapper(),
        clock=lambda: now + timedelta(minutes=5),
        replica="b",
    )
    assert third is not None and (third.accepted, third.duplicates) == (0, 1)


def test_syncwatch_pull_runs_one_cycle_now(
    database_url: str,
    database: Database,
    source: tuple[SourceState, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncwatch.cli import app

    state, url = source
    state.records = [contract(n, updated=BASE + timedelta(minutes=n)) for n in range(6)]
    config = tmp_path / "syncwatch.yaml"
    config.write_text(
        f"""
preset_dirs: [{PRESETS}]
pull:
  connectors:
    clm:
      url: {url}/contracts
      params: {{modified_since: "{{since}}", page_token: "{{token}}", limit: "{{page_size}}"}}
      records: data.items
      next: paging.next
      preset: pulltest_clm
      modified_field: updatedAt
      page_size: 4
      token_env: PULL_TEST_TOKEN
""",
        encoding="utf-8",
    )
    for name in list(__import__("os").environ):
        if name.startswith("SYNCWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(config))
    monkeypatch.setenv("SYNCWATCH_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["pull", "clm"])
    assert result.exit_code == 0, result.output
    assert "clm" in result.output
    assert stored_ids(database) == expected_ids(range(6))
    result = CliRunner().invoke(app, ["pull", "nosuch"])
    assert result.exit_code == 2 and "nosuch" in result.output


def test_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        connector("http://x", params={"since": "{sinse}"})
    with pytest.raises(ValueError, match="modified_field"):
        connector("http://x", modified_field=None)
    with pytest.raises(ValueError, match="not set"):
        connector("http://x", token_env="PULL_TEST_NOT_SET")
    with pytest.raises(ValueError, match="next"):
        connector("http://x", cursor="token", next=None)
    with pytest.raises(ValueError, match="either a connector or a reconciliation"):
        PullSettings(
            connectors={"a": connector("http://x")},
            reconcile={"a": {"url": "http://x", "params": {}}},
        )


def test_serve_schedules_each_enabled_connector_and_reconciliation(
    database: Database, tmp_path: Path
) -> None:
    from core.settings import load_settings
    from probes.flowtypes import configured_flow_types
    from syncwatch.scheduler import make_scheduler

    clm = {
        "url": "http://clm.invalid/contracts",
        "params": {"modified_since": "{since}"},
        "preset": "pulltest_clm",
        "modified_field": "updatedAt",
    }
    pull: dict[str, Any] = {
        "connectors": {
            "clm": {**clm, "interval": "2m"},
            "off": {**clm, "enabled": False},
        },
        "reconcile": {
            "clm_signed": {
                "url": "http://clm.invalid/signed",
                "params": {"from": "{since}"},
                "preset": "pulltest_clm",
            }
        },
    }
    settings = load_settings({"data_dir": tmp_path, "preset_dirs": [str(PRESETS)], "pull": pull})
    scheduler = make_scheduler(database, settings, configured_flow_types(None))
    job = scheduler.get_job("connector:clm")
    assert job is not None and job.trigger.interval == timedelta(minutes=2)
    assert scheduler.get_job("reconcile:clm_signed") is not None
    assert scheduler.get_job("connector:off") is None
    off = load_settings(
        {"data_dir": tmp_path, "preset_dirs": [str(PRESETS)], "pull": {**pull, "enabled": False}}
    )
    assert (
        make_scheduler(database, off, configured_flow_types(None)).get_job("connector:clm") is None
    )
    bad = {**pull, "reconcile": {"r": {**pull["reconcile"]["clm_signed"], "preset": "nosuch"}}}
    with pytest.raises(ValueError, match=r"pull\.reconcile\.r\.preset"):
        make_scheduler(
            database,
            load_settings({"data_dir": tmp_path, "preset_dirs": [str(PRESETS)], "pull": bad}),
            configured_flow_types(None),
        )
