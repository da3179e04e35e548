"""The in-process scheduler of ``syncwatch serve``: probe cycles every few seconds. Several
replicas may each run one: the probe runner claims each cycle in the database."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from apscheduler.schedulers.background import BackgroundScheduler

from core.db import Database
from core.settings import Settings
from core.web import utc_now
from probes.flowtypes import FlowType
from probes.runner import run_until_idle

log = logging.getLogger("syncwatch.scheduler")


def probe_job(database: Database, flow_types: Sequence[FlowType], batch_events: int) -> None:
    # Errors propagate to APScheduler, which logs them with the traceback; the next run retries.
    run_until_idle(database, flow_types, now=utc_now(), batch_events=batch_events)


def make_scheduler(
    database: Database, settings: Settings, flow_types: Sequence[FlowType]
) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")
    if settings.probes.enabled:
        scheduler.add_job(
            probe_job,
            "interval",
            seconds=settings.probes.interval_seconds,
            args=(database, flow_types, settings.probes.batch_events),
            id="probes",
            max_instances=1,
            coalesce=True,
            next_run_time=utc_now(),
        )
    return scheduler
