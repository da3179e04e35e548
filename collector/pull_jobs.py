"""The pull connectors and reconciliations in the scheduler of ``syncwatch serve``: each one every
``interval``, claimed once per interval over all replicas (collector.pull.scheduled_cycle)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from apscheduler.schedulers.base import BaseScheduler

from collector.pull import Clock, Planned, plan, scheduled_cycle
from core.db import Database
from core.pull_settings import PullSettings

log = logging.getLogger("syncwatch.pull")


def pull_job(database: Database, planned: Planned, clock: Clock) -> None:
    """One scheduled cycle; a failure is logged, and the next interval tries again from the
    stored cursor."""
    try:
        report = scheduled_cycle(
            database, planned.kind, planned.name, planned.settings, planned.mapper, clock=clock
        )
    except Exception:
        log.exception("%s %s: the cycle failed", planned.kind, planned.name)
        return
    if report is not None and report.error is None:
        log.info("%s %s: %s", planned.kind, planned.name, report.as_dict())


def add_pull_jobs(
    scheduler: BaseScheduler,
    database: Database,
    settings: PullSettings,
    clock: Clock,
    preset_dirs: Sequence[Path] = (),
) -> None:
    """Raises ValueError (an unknown preset) at start-up rather than at the first cycle."""
    for planned in plan(settings, preset_dirs=preset_dirs):
        scheduler.add_job(
            pull_job,
            "interval",
            seconds=planned.settings.interval.total_seconds(),
            args=(database, planned, clock),
            id=f"{planned.kind}:{planned.name}",
            max_instances=1,
            coalesce=True,
            next_run_time=clock(),
        )
