"""The weekly report job of the scheduler: at ``reports.weekday`` ``hour``:``minute`` in
``reports.timezone`` it makes the report of the week just ended (the latest complete ISO week),
keeps it, deletes the reports older than ``keep_weeks`` and delivers it.

Every replica runs the same APScheduler job; APScheduler does not coordinate processes, so each run
is claimed in the database: the replica whose insert of the ``(job, scheduled_for)`` row into
``job_runs`` succeeds (ON CONFLICT DO NOTHING) does the work, every other one does nothing. The
run's outcome and the delivery's are recorded on that row. Making the report is tried
``delivery_attempts`` times; a failure is logged and recorded, never raised into the scheduler."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from core.db import Database
from core.jobruns import claim, finish, replica_name
from core.report_settings import ReportSettings
from core.settings import SourceSettings
from core.web import Clock, utc_now
from kpis.reports import store
from kpis.reports.deliver import Sleep, deliver
from kpis.reports.produce import Maker, produce
from kpis.reports.week import last_complete_week, week_of
from probes.flowtypes import FlowType

log = logging.getLogger("syncwatch.reports")

JOB = "weekly_report"
#: A run that starts this late after its time (the process was busy or paused) still runs.
MISFIRE_GRACE_SECONDS = 6 * 3600


def trigger(settings: ReportSettings) -> CronTrigger:
    """Weekly at the configured local time. Never ``CronTrigger.from_crontab``: in APScheduler 3
    its day-of-week numbers are off by one (``1`` is Tuesday; PITFALLS.md)."""
    return CronTrigger(
        day_of_week=settings.weekday,
        hour=settings.hour,
        minute=settings.minute,
        second=0,
        timezone=settings.tz,
    )


def latest_slot(settings: ReportSettings, now: datetime) -> datetime:
    """The latest time at or before ``now`` the trigger fires: the run a job started at ``now``
    belongs to (APScheduler does not tell a job its scheduled time)."""
    cron = trigger(settings)
    slot: datetime | None = None
    candidate = cron.get_next_fire_time(None, now - timedelta(days=8))
    while candidate is not None and candidate <= now:
        slot = candidate
        candidate = cron.get_next_fire_time(candidate, candidate + timedelta(seconds=1))
    assert slot is not None  # a weekly trigger fires within any 8 days
    return slot


def _claim_with_retries(
    database: Database,
    slot: datetime,
    replica: str,
    clock: Clock,
    settings: ReportSettings,
    sleep: Sleep,
) -> bool:
    """Claim the run; a database that does not answer is asked again (nothing was claimed)."""
    for attempt in range(1, settings.delivery_attempts + 1):
        try:
            with database.write() as connection:
                if claim(connection, JOB, slot, by=replica, now=clock()):
                    return True
            log.info("weekly report of %s: already claimed by another replica", slot.isoformat())
            return False
        except Exception:
            log.exception(
                "weekly report of %s: claiming the run failed (attempt %d)", slot, attempt
            )
            if attempt < settings.delivery_attempts:
                sleep(settings.delivery_backoff_seconds * 2 ** (attempt - 1))
    return False


@dataclass(frozen=True)
class Run:
    scheduled_for: datetime
    week: str
    outcome: str  # done, failed
    details: dict[str, Any]


def weekly_report_job(
    database: Database,
    settings: ReportSettings,
    flow_types: Sequence[FlowType],
    *,
    scheduled_for: datetime | None = None,
    sources: dict[str, SourceSettings] | None = None,
    clock: Clock = utc_now,
    maker: Maker | None = None,
    sleep: Sleep = time.sleep,
    replica: str | None = None,
) -> Run | None:
    """One weekly run; None when another replica (or an earlier call) claimed it. Never raises
    for a failure of making or delivering the report: it is logged and recorded in ``job_runs``."""
    now = clock()
    slot = scheduled_for or latest_slot(settings, now)
    claimed = _claim_with_retries(database, slot, replica or replica_name(), clock, settings, sleep)
    if not claimed:
        return None
    week = last_complete_week(slot, settings.tz)
    details: dict[str, Any] = {"week": str(week), "formats": list(settings.formats)}
    contents: dict[str, bytes] | None = None
    errors: list[str] = []
    for attempt in range(1, settings.delivery_attempts + 1):
        try:
            contents = produce(
                database,
                flow_types,
                week,
                settings,
                formats=settings.formats,
                now=clock(),
                generated_by="scheduler",
                sources=sources,
                maker=maker,
            )
            break
        except Exception as error:  # logged, retried, recorded; the scheduler goes on
            errors.append(f"{type(error).__name__}: {error}"[:500])
            log.exception("weekly report %s: making it failed (attempt %d)", week, attempt)
            if attempt < settings.delivery_attempts:
                sleep(settings.delivery_backoff_seconds * 2 ** (attempt - 1))
    details["make_attempts"] = len(errors) + (contents is not None)
    if errors:
        details["make_errors"] = errors
    if contents is not None:
        details["delivery"] = deliver(str(week), contents, settings, sleep=sleep)
        try:
            with database.write() as connection:
                pruned = store.prune(
                    connection,
                    current=week_of(clock(), settings.tz),
                    keep_weeks=settings.keep_weeks,
                )
            details["pruned"] = pruned
        except Exception as error:  # the report was made and sent: record, do not raise
            log.exception("weekly report %s: deleting old reports failed", week)
            details["prune_error"] = f"{type(error).__name__}: {error}"[:500]
    outcome = "done" if contents is not None else "failed"
    try:
        with database.write() as connection:
            finish(connection, JOB, slot, outcome=outcome, details=details, now=clock())
    except Exception:
        log.exception("weekly report %s: recording the run's outcome failed", week)
    return Run(slot, str(week), outcome, details)


def add_weekly_report_job(
    scheduler: Any,
    database: Database,
    settings: ReportSettings,
    flow_types: Sequence[FlowType],
    sources: dict[str, SourceSettings] | None = None,
) -> None:
    """Add the job to an APScheduler 3 scheduler. When the process starts within the misfire
    grace time after a scheduled run (a restart or a rolling deployment at 07:00), the job also
    runs once at start: the claim makes it a no-op when another replica already did the run."""
    now = utc_now()
    catch_up = now - latest_slot(settings, now) <= timedelta(seconds=MISFIRE_GRACE_SECONDS)
    scheduler.add_job(
        weekly_report_job,
        trigger(settings),
        args=(database, settings, flow_types),
        kwargs={"sources": sources},
        id=JOB,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=MISFIRE_GRACE_SECONDS,
        **({"next_run_time": now} if catch_up else {}),
    )
