"""The in-process scheduler of ``syncwatch serve``: probe cycles every few seconds, each followed
by the replays' follow-up and the automatic replays Alertmanager asked for (those the receiver's
background task did not finish), with ``tracing.enabled`` the export of flow traces, and once a day
the retention run. Several replicas may each run one: the probe runner claims each cycle in the
database, each alert delivery, each replay and each retention run is claimed in the database too (a
trace exported twice repeats the same IDs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from alerts.receiver import process_pending
from alerts.replays import Replayer
from collector.pull_jobs import add_pull_jobs
from core.db import Database
from core.instruments import Instruments
from core.retention import retention_job
from core.settings import RetentionSettings, Settings
from core.web import Clock, utc_now
from kpis.reports.schedule import add_weekly_report_job
from probes.flowtypes import FlowType
from probes.runner import run_until_idle
from syncwatch.telemetry import trace_export_job

log = logging.getLogger("syncwatch.scheduler")


def probe_job(
    database: Database,
    flow_types: Sequence[FlowType],
    batch_events: int,
    traces: bool = False,
    instruments: Instruments | None = None,
    replayer: Replayer | None = None,
    clock: Clock = utc_now,
) -> None:
    # Errors propagate to APScheduler, which logs them with the traceback; the next run retries.
    reports = run_until_idle(
        database, flow_types, now=clock(), batch_events=batch_events, traces=traces
    )
    if instruments is not None:
        for report in reports:
            if not report.skipped:
                instruments.probe_cycle_finished(report.seconds)
    if replayer is not None:
        replayer.follow_up(clock())
        process_pending(database, replayer, clock)


def daily_retention_job(database: Database, settings: RetentionSettings, clock: Clock) -> None:
    retention_job(database, settings, clock())


def make_scheduler(
    database: Database,
    settings: Settings,
    flow_types: Sequence[FlowType],
    instruments: Instruments | None = None,
    replayer: Replayer | None = None,
    clock: Clock = utc_now,
) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")
    if settings.probes.enabled:
        scheduler.add_job(
            probe_job,
            "interval",
            seconds=settings.probes.interval_seconds,
            args=(
                database,
                flow_types,
                settings.probes.batch_events,
                settings.tracing.enabled,
                instruments,
                replayer,
                clock,
            ),
            id="probes",
            max_instances=1,
            coalesce=True,
            next_run_time=utc_now(),
        )
    if settings.tracing.enabled:
        scheduler.add_job(
            trace_export_job,
            "interval",
            seconds=settings.tracing.export_interval_seconds,
            args=(database, settings.tracing),
            id="trace_export",
            max_instances=1,
            coalesce=True,
        )
    if settings.reports.enabled:
        # weekly, in reports.timezone; claimed in the database, so it runs once over all replicas
        add_weekly_report_job(scheduler, database, settings.reports, flow_types, settings.sources)
    if settings.pull.enabled:
        # each pull connector and reconciliation every interval, claimed once over all replicas
        add_pull_jobs(scheduler, database, settings.pull, clock, settings.preset_dirs)
    if settings.retention.enabled:
        # daily at retention.hour:minute UTC; claimed once over all replicas
        scheduler.add_job(
            daily_retention_job,
            CronTrigger(
                hour=settings.retention.hour,
                minute=settings.retention.minute,
                second=0,
                timezone="UTC",
            ),
            args=(database, settings.retention, clock),
            id="retention",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=6 * 3600,
        )
    return scheduler
