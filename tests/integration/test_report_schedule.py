"""The weekly report job: when it fires (Monday 07:00 in Europe/Berlin, across DST changes), that it
runs once however many schedulers run it (claimed in ``job_runs``), what it keeps, prunes and
records, and that a failure is retried and recorded without reaching the scheduler."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.db import Database
from core.report_settings import ReportSettings
from core.settings import load_settings
from core.tables import job_runs
from kpis.reports import schedule, store
from kpis.reports.week import parse_week
from probes.flowtypes import configured_flow_types
from syncwatch.scheduler import make_scheduler
from tests.support.reports import Counting, Webhook
from tests.support.servers import free_port

BERLIN = ReportSettings(timezone="Europe/Berlin")
FLOW_TYPES = configured_flow_types(None)
#: Monday 30 November 2026, 07:00 CET
SLOT = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def _fire_times(settings: ReportSettings, after: datetime, count: int) -> list[datetime]:
    trigger = schedule.trigger(settings)
    times: list[datetime] = []
    previous = None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        times.append(fire.astimezone(UTC))
        previous, now = fire, fire + timedelta(seconds=1)
    return times


def test_the_trigger_fires_on_monday_0700_berlin_across_the_autumn_change() -> None:
    # Summer time ends on Sunday 25 October 2026: 07:00 CEST is 05:00Z, 07:00 CET is 06:00Z
    times = _fire_times(BERLIN, datetime(2026, 10, 13, tzinfo=UTC), 3)
    assert times == [
        datetime(2026, 10, 19, 5, 0, tzinfo=UTC),
        datetime(2026, 10, 26, 6, 0, tzinfo=UTC),
        datetime(2026, 11, 2, 6, 0, tzinfo=UTC),
    ]
    assert all(t.astimezone(BERLIN.tz).strftime("%a %H:%M") == "Mon 07:00" for t in times)


def test_the_trigger_fires_on_monday_0700_berlin_across_the_spring_change() -> None:
    # Summer time starts on Sunday 28 March 2027
    times = _fire_times(BERLIN, datetime(2027, 3, 16, tzinfo=UTC), 3)
    assert times == [
        datetime(2027, 3, 22, 6, 0, tzinfo=UTC),
        datetime(2027, 3, 29, 5, 0, tzinfo=UTC),
        datetime(2027, 4, 5, 5, 0, tzinfo=UTC),
    ]


def test_another_weekday_and_time() -> None:
    settings = ReportSettings(timezone="America/New_York", weekday="fri", hour=17, minute=30)
    assert _fire_times(settings, datetime(2026, 12, 1, tzinfo=UTC), 1) == [
        datetime(2026, 12, 4, 22, 30, tzinfo=UTC)  # 17:30 EST
    ]


def test_the_latest_slot_is_the_run_a_late_start_belongs_to() -> None:
    assert schedule.latest_slot(BERLIN, SLOT) == SLOT
    assert schedule.latest_slot(BERLIN, SLOT + timedelta(hours=3)) == SLOT
    assert schedule.latest_slot(BERLIN, SLOT - timedelta(seconds=1)) == SLOT - timedelta(days=7)


def test_make_scheduler_adds_the_weekly_job_only_when_enabled(
    tmp_path: Path, database: Database
) -> None:
    base = {"data_dir": tmp_path, "probes": {"enabled": False}}
    enabled = load_settings({**base, "reports": {"timezone": "Europe/Berlin"}})
    job = make_scheduler(database, enabled, FLOW_TYPES).get_job(schedule.JOB)
    assert job is not None
    assert job.misfire_grace_time >= 3600
    assert str(job.trigger.timezone) == "Europe/Berlin"
    assert "day_of_week='mon'" in str(job.trigger)
    disabled = load_settings({**base, "reports": {"enabled": False}})
    assert make_scheduler(database, disabled, FLOW_TYPES).get_job(schedule.JOB) is None


def _runs(database: Database) -> list[Any]:
    with database.read() as connection:
        return list(connection.execute(sa.select(job_runs)).all())


def test_two_schedulers_on_one_database_make_and_deliver_the_report_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas (two engines on one database) fire the same run at the same moment."""
    maker = Counting()
    with Webhook() as hook:
        monkeypatch.setenv("TEST_REPORT_WEBHOOK", hook.url)
        settings = ReportSettings(
            timezone="Europe/Berlin",
            formats=["md", "html"],
            chat={"url_env": "TEST_REPORT_WEBHOOK", "format": "slack"},
            delivery_backoff_seconds=0,
        )
        replicas = [Database.from_url(database_url) for _ in range(2)]
        start = threading.Barrier(2)
        results: list[Any] = [None, None]

        def run(index: int) -> None:
            start.wait()
            results[index] = schedule.weekly_report_job(
                replicas[index],
                settings,
                FLOW_TYPES,
                scheduled_for=SLOT,
                clock=lambda: SLOT + timedelta(seconds=2),
                maker=maker,
                replica=f"replica-{index}",
            )

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for replica in replicas:
            replica.dispose()
        received = list(hook.received)

    done = [r for r in results if r is not None]
    assert len(done) == 1, results
    assert maker.calls == [("2026-W48", ("html", "md"))]
    assert len(received) == 1
    assert "2026-W48" in received[0]["text"]
    assert done[0].outcome == "done"
    assert done[0].details["delivery"]["chat"]["outcome"] == "sent"
    check = Database.from_url(database_url)
    try:
        (row,) = _runs(check)
        assert (row.job, row.scheduled_for, row.outcome) == ("weekly_report", SLOT, "done")
        assert row.claimed_by in {"replica-0", "replica-1"}
        assert row.details["week"] == "2026-W48"
        with check.read() as connection:
            assert [w.formats for w in store.list_weeks(connection)] == [("html", "md")]
    finally:
        check.dispose()


def test_a_run_prunes_old_reports_and_a_second_call_does_nothing(database: Database) -> None:
    with database.write() as connection:
        for week in ("2026-W20", "2026-W30", "2026-W47"):
            store.save(connection, parse_week(week), {"md": b"#"}, now=SLOT, generated_by="test")
    settings = ReportSettings(timezone="Europe/Berlin", formats=["md"], keep_weeks=10)
    maker = Counting()
    first = schedule.weekly_report_job(
        database, settings, FLOW_TYPES, clock=lambda: SLOT + timedelta(minutes=1), maker=maker
    )
    assert first is not None
    assert first.scheduled_for == SLOT  # found from the clock, as under APScheduler
    assert first.details["pruned"] == ["2026-W20", "2026-W30"]
    with database.read() as connection:
        assert [w.week for w in store.list_weeks(connection)] == ["2026-W48", "2026-W47"]
    again = schedule.weekly_report_job(
        database, settings, FLOW_TYPES, clock=lambda: SLOT + timedelta(hours=1), maker=maker
    )
    assert again is None
    assert len(maker.calls) == 1


def test_a_failing_maker_is_retried_logged_and_recorded_without_raising(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[str] = []
    pauses: list[float] = []

    def broken(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        attempts.append(args[2])
        raise RuntimeError("the KPI query timed out")

    settings = ReportSettings(delivery_attempts=3, delivery_backoff_seconds=5)
    with caplog.at_level(logging.WARNING, logger="syncwatch.reports"):
        run = schedule.weekly_report_job(
            database,
            settings,
            FLOW_TYPES,
            scheduled_for=SLOT,
            clock=lambda: SLOT,
            maker=broken,
            sleep=pauses.append,
        )
    assert run is not None
    assert run.outcome == "failed"
    assert attempts == ["2026-W48"] * 3
    assert pauses == [5, 10]
    assert "the KPI query timed out" in caplog.text
    (row,) = _runs(database)
    assert row.outcome == "failed"
    assert row.finished_at is not None
    assert row.details["make_errors"] == ["RuntimeError: the KPI query timed out"] * 3


def _settings_with_slot_ago(ago: timedelta) -> ReportSettings:
    slot = datetime.now(UTC) - ago
    weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[slot.weekday()]
    return ReportSettings(weekday=weekday, hour=slot.hour, minute=slot.minute)  # UTC


def test_a_start_shortly_after_a_scheduled_run_catches_it_up(
    tmp_path: Path, database: Database
) -> None:
    base = {"data_dir": tmp_path, "probes": {"enabled": False}}
    for ago, catches_up in ((timedelta(hours=1), True), (timedelta(days=2), False)):
        reports = _settings_with_slot_ago(ago).model_dump()
        scheduler = make_scheduler(
            database, load_settings({**base, "reports": reports}), FLOW_TYPES
        )
        scheduler.start(paused=True)  # computes the pending jobs' next run times
        try:
            job = scheduler.get_job(schedule.JOB)
            soon = job.next_run_time <= datetime.now(UTC) + timedelta(minutes=1)
            assert soon is catches_up, (ago, job.next_run_time)
        finally:
            scheduler.shutdown(wait=False)


def test_two_running_schedulers_run_the_weekly_job_once(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas, each with its own APScheduler and engine on one database, started together a
    minute after the weekly slot: both fire the job at once (the catch-up run), one makes, keeps
    and delivers the report, the other finds the run claimed and does nothing."""
    with Webhook() as hook:
        monkeypatch.setenv("TEST_REPORT_WEBHOOK", hook.url)
        reports = {
            **_settings_with_slot_ago(timedelta(minutes=1)).model_dump(exclude={"chat"}),
            "formats": ["md"],
            "chat": {"url_env": "TEST_REPORT_WEBHOOK"},
        }
        settings = load_settings(
            {
                "data_dir": tmp_path,
                "database_url": database_url,
                "probes": {"enabled": False},
                "reports": reports,
            }
        )
        replicas = [Database.from_url(database_url) for _ in range(2)]
        schedulers = [make_scheduler(replica, settings, FLOW_TYPES) for replica in replicas]
        try:
            for scheduler in schedulers:
                scheduler.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = _runs(replicas[0])
                fired = all(
                    s.get_job(schedule.JOB).next_run_time > datetime.now(UTC) + timedelta(days=1)
                    for s in schedulers
                )
                if fired and runs and runs[0].finished_at is not None:
                    break
                time.sleep(0.2)
        finally:
            for scheduler in schedulers:
                scheduler.shutdown(wait=True)
            for replica in replicas:
                replica.dispose()
        received = list(hook.received)
    check = Database.from_url(database_url)
    try:
        (run,) = _runs(check)
        assert run.outcome == "done", run.details
        with check.read() as connection:
            assert [(w.week, w.formats) for w in store.list_weeks(connection)] == [
                (run.details["week"], ("md",))
            ]
    finally:
        check.dispose()
    assert len(received) == 1
    assert run.details["week"] in received[0]["text"]


def test_a_database_that_does_not_answer_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Database.from_url(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    pauses: list[float] = []
    maker = Counting()
    try:
        with caplog.at_level(logging.WARNING, logger="syncwatch.reports"):
            run = schedule.weekly_report_job(
                down,
                ReportSettings(delivery_backoff_seconds=1),
                FLOW_TYPES,
                scheduled_for=SLOT,
                clock=lambda: SLOT,
                maker=maker,
                sleep=pauses.append,
            )
    finally:
        down.dispose()
    assert run is None
    assert pauses == [1, 2]
    assert maker.calls == []
    assert caplog.text.count("claiming the run failed") == 3
