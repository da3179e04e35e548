"""Runs of scheduled jobs that must happen once however many replicas run the scheduler
(PITFALLS.md: APScheduler does not coordinate processes). Every replica fires the job; the one whose
insert of the ``(job, scheduled_for)`` row into ``job_runs`` succeeds (ON CONFLICT DO NOTHING)
does the work and records its outcome on that row. Functions take the caller's connection."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.tables import job_runs


def replica_name() -> str:
    """Who claims: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


def claim(
    connection: Connection, job: str, scheduled_for: datetime, *, by: str, now: datetime
) -> bool:
    """Insert the run's row; True when this caller inserted it (and so does the work)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(job_runs)
        .values(job=job, scheduled_for=scheduled_for, claimed_by=by, claimed_at=now)
        .on_conflict_do_nothing(index_elements=["job", "scheduled_for"])
        .returning(job_runs.c.job)
    )
    return connection.execute(statement).first() is not None


def finish(
    connection: Connection,
    job: str,
    scheduled_for: datetime,
    *,
    outcome: str,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Record the claimed run's outcome (``done``, ``failed``) and details."""
    connection.execute(
        job_runs.update()
        .where(job_runs.c.job == job, job_runs.c.scheduled_for == scheduled_for)
        .values(finished_at=now, outcome=outcome, details=details)
    )
