"""The in-process scheduler of ``syncwatch serve``: probe cycles every few seconds, and with
``tracing.enabled`` the export of flow traces. Several replicas may each run one: the probe runner
claims each cycle in the database (a trace exported twice repeats the same IDs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from apscheduler.schedulers.background import BackgroundScheduler

from core.db import Database
from core.instruments import Instruments
from core.settings import Settings
from core.web import utc_now
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
) -> None:
    # Errors propagate to APScheduler, which logs them with the traceback; the next run retries.
    reports = run_until_idle(
        database, flow_types, now=utc_now(), batch_events=batch_events, traces=traces
    )
    if instruments is not None:
        for report in reports:
            if not report.skipped:
                instruments.probe_cycle_finished(report.seconds)


def make_scheduler(
    database: Database,
    settings: Settings,
    flow_types: Sequence[FlowType],
    instruments: Instruments | None = None,
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
    return scheduler
