"""Retention: what the scheduler of ``syncwatch serve`` deletes once a day, and ``syncwatch db
prune`` on demand (api.md; ``retention`` in the settings; docs/deployment.md, Retention).

Each rule deletes only what nothing needs any more:

- ``closed_flows`` (off by default): a correlation ID whose every flow ended (completed or
  cancelled) before the horizon, with no event received since, no finding still unresolved and no
  replay still being sent or followed up, goes whole: its events, flows, stages, stuck spans,
  outcomes, findings and replays. A correlation ID is never cut in part, because the probes
  re-evaluate a correlation ID from all of its events.
- ``retried_dead_letters``: dead letters re-ingested successfully (their event is stored) whose
  retry is older than the horizon. Pending dead letters are kept: nothing rejected is lost.
- ``alert_deliveries``: Alertmanager deliveries of alerts that have resolved and were handled,
  received before the horizon (a still-firing alert keeps its row, so a repeat of its notification
  is still recognised).
- ``job_runs``: finished runs of the claimed jobs, scheduled before the horizon.

The audit log is never pruned (the database refuses it). Functions take the database and the
instant; each batch is its own short transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core import audit
from core.db import Database
from core.deadletters import RETRIED
from core.jobruns import claim, finish, replica_name
from core.settings import RetentionSettings
from core.tables import (
    alert_deliveries,
    dead_letters,
    events,
    findings,
    flow_outcomes,
    flow_stages,
    flows,
    job_runs,
    replays,
    stuck_spans,
)

log = logging.getLogger("syncwatch.retention")

JOB = "retention"
#: Who the audit log names for the scheduler's deletions.
ACTOR = "syncwatch"
#: Replay outcomes that still need their flow: being sent, or sent and waiting for the follow-up.
_REPLAYS_IN_FLIGHT = ("sending", "sent")
_CHUNK = 500


@dataclass(frozen=True)
class Pruned:
    """What one run deleted (or, dry, would delete), by table."""

    correlations: int = 0
    events: int = 0
    flows: int = 0
    findings: int = 0
    replays: int = 0
    dead_letters: int = 0
    alert_deliveries: int = 0
    job_runs: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @property
    def total(self) -> int:
        return sum(int(getattr(self, f.name)) for f in fields(self)) - self.correlations

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def closed_correlations(
    connection: Connection, horizon: datetime, *, after: str = "", limit: int = 500
) -> list[str]:
    """Correlation IDs (in order, after ``after``) whose every flow ended before ``horizon``, with
    no event received since, no unresolved finding and no replay in flight."""
    own = flows.alias("own")
    # an event not yet correlated by the probes is found by the correlation ID it was sent with
    recent_event = sa.exists().where(
        sa.or_(
            events.c.resolved_correlation_id == flows.c.correlation_id,
            events.c.correlation_id == flows.c.correlation_id,
        ),
        events.c.received_at >= horizon,
    )
    unresolved = sa.exists().where(
        findings.c.flow_id == own.c.flow_id,
        own.c.correlation_id == flows.c.correlation_id,
        findings.c.resolved_at.is_(None),
    )
    in_flight = sa.exists().where(
        replays.c.flow_id == own.c.flow_id,
        own.c.correlation_id == flows.c.correlation_id,
        replays.c.outcome.in_(_REPLAYS_IN_FLIGHT),
    )
    query = (
        sa.select(flows.c.correlation_id)
        .where(flows.c.correlation_id > after)
        .group_by(flows.c.correlation_id)
        .having(
            sa.func.count() == sa.func.count(flows.c.ended_at),
            sa.func.max(flows.c.ended_at) < horizon,
            ~recent_event,
            ~unresolved,
            ~in_flight,
        )
        .order_by(flows.c.correlation_id)
        .limit(limit)
    )
    return list(connection.execute(query).scalars())


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _remove(connection: Connection, table: sa.Table, condition: Any, dry_run: bool) -> int:
    if dry_run:
        query = sa.select(sa.func.count()).select_from(table).where(condition)
        return int(connection.execute(query).scalar_one())
    return int(connection.execute(table.delete().where(condition)).rowcount)


def _remove_correlations(
    connection: Connection, correlation_ids: Sequence[str], dry_run: bool
) -> Pruned:
    flow_ids = list(
        connection.execute(
            sa.select(flows.c.flow_id).where(flows.c.correlation_id.in_(correlation_ids))
        ).scalars()
    )
    counts = {"findings": 0, "replays": 0}
    for chunk in _chunks(flow_ids):
        counts["findings"] += _remove(connection, findings, findings.c.flow_id.in_(chunk), dry_run)
        counts["replays"] += _remove(connection, replays, replays.c.flow_id.in_(chunk), dry_run)
        for table in (flow_stages, stuck_spans, flow_outcomes):
            _remove(connection, table, table.c.flow_id.in_(chunk), dry_run)
    return Pruned(
        correlations=len(correlation_ids),
        flows=_remove(connection, flows, flows.c.correlation_id.in_(correlation_ids), dry_run),
        events=_remove(
            connection, events, events.c.resolved_correlation_id.in_(correlation_ids), dry_run
        ),
        **counts,
    )


def _without_jit(connection: Connection) -> None:
    """PostgreSQL compiles the grouped search with its JIT (its estimate is far above the real
    cost), which took 0.38 s of a 0.39 s batch on 100,000 flows: off for this transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SET LOCAL jit = off"))


def prune(
    database: Database, settings: RetentionSettings, now: datetime, *, dry_run: bool = False
) -> Pruned:
    """Apply every rule of ``settings`` as of ``now``. With ``dry_run`` nothing is deleted and the
    counts say what would be."""
    total = Pruned()
    if settings.closed_flows is not None:
        horizon = now - settings.closed_flows
        after = ""
        while True:
            with database.write() as connection:
                _without_jit(connection)
                batch = closed_correlations(
                    connection, horizon, after=after, limit=settings.batch_correlations
                )
                if not batch:
                    break
                total += _remove_correlations(connection, batch, dry_run)
            after = batch[-1]
    with database.write() as connection:
        total += Pruned(
            dead_letters=_older(
                connection,
                settings.retried_dead_letters,
                now,
                dead_letters,
                dead_letters.c.last_attempt_at,
                dead_letters.c.status == RETRIED,
                dry_run=dry_run,
            ),
            alert_deliveries=_older(
                connection,
                settings.alert_deliveries,
                now,
                alert_deliveries,
                alert_deliveries.c.received_at,
                sa.and_(
                    alert_deliveries.c.status == "resolved",
                    alert_deliveries.c.state.in_(("done", "ignored")),
                ),
                dry_run=dry_run,
            ),
            job_runs=_older(
                connection,
                settings.job_runs,
                now,
                job_runs,
                job_runs.c.scheduled_for,
                job_runs.c.finished_at.is_not(None),
                dry_run=dry_run,
            ),
        )
    return total


def _older(
    connection: Connection,
    keep: timedelta | None,
    now: datetime,
    table: sa.Table,
    column: Any,
    condition: Any,
    *,
    dry_run: bool,
) -> int:
    if keep is None:
        return 0
    return _remove(connection, table, sa.and_(condition, column < now - keep), dry_run)


def latest_slot(settings: RetentionSettings, now: datetime) -> datetime:
    """The daily run (``hour``:``minute`` UTC) at or before ``now``."""
    slot = now.replace(hour=settings.hour, minute=settings.minute, second=0, microsecond=0)
    return slot if slot <= now else slot - timedelta(days=1)


def record(connection: Connection, pruned: Pruned, *, actor: str, now: datetime) -> None:
    """The audit entry of a run that deleted something."""
    if pruned.total:
        audit.record(
            connection,
            at=now,
            actor=actor,
            action="retention.prune",
            target_type="store",
            details=pruned.as_dict(),
        )


def retention_job(
    database: Database,
    settings: RetentionSettings,
    now: datetime,
    *,
    replica: str | None = None,
) -> Pruned | None:
    """The scheduler's daily run, claimed in ``job_runs`` so that one replica does it; None when
    another one did. A failure is logged and recorded, never raised into the scheduler (what was
    deleted before it stays deleted; the next run goes on)."""
    slot = latest_slot(settings, now)
    try:
        with database.write() as connection:
            if not claim(connection, JOB, slot, by=replica or replica_name(), now=now):
                return None
        done = prune(database, settings, now)
    except Exception as error:
        log.exception("retention run of %s failed", slot.isoformat())
        cause = getattr(error, "details", None)  # a StoreUnavailable carries the driver's words
        message = f"{type(error).__name__}: {error}" + (f" ({cause})" if cause else "")
        details: dict[str, Any] = {"error": message[:500]}
        outcome, pruned = "failed", None
    else:
        details, outcome, pruned = done.as_dict(), "done", done
        log.info("retention run of %s deleted %s", slot.isoformat(), details)
    try:
        with database.write() as connection:
            if pruned is not None:
                record(connection, pruned, actor=ACTOR, now=now)
            finish(connection, JOB, slot, outcome=outcome, details=details, now=now)
    except Exception:
        log.exception("retention run of %s: recording its outcome failed", slot.isoformat())
    return pruned
