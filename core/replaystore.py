"""Reading the replays table (written by ``alerts.replays``): the listing of ``GET /v1/replays``,
the replays of one flow, and the counts by outcome behind the ``replays`` KPI and
``syncwatch_replays_total``. Here, at the bottom, because the flow view (probes) and the KPIs read
them too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.errors import NotFound
from core.tables import flows, replays

#: kpis.md: replays by outcome. ``sent`` is a replay sent and not yet followed up.
OUTCOMES = ("sent", "refused", "failed", "effective", "ineffective")


@dataclass(frozen=True)
class ReplayFilter:
    flow_id: str | None = None
    outcome: str | None = None  # refused, sending, sent, failed, effective, ineffective
    trigger: str | None = None  # api, cli, alert
    requested_by: str | None = None
    since: datetime | None = None


def as_dict(row: Any) -> dict[str, Any]:
    """The public shape of a replay: who, why, when, what was sent, the answer, whether the flow
    then moved."""
    moved = None
    if row.outcome in ("effective", "ineffective"):
        moved = row.outcome == "effective"
    return {
        "id": row.id,
        "flow_id": row.flow_id,
        "flow_type": row.flow_type,
        "correlation_id": row.correlation_id,
        "stage": row.stage,
        "source": row.source,
        "execution_id": row.execution_id,
        "failure_event_id": row.failure_event_id,
        "trigger": row.trigger,
        "requested_by": row.requested_by,
        "reason": row.reason,
        "forced": row.forced,
        "requested_at": row.requested_at,
        "outcome": row.outcome,
        "refusal": row.refusal,
        "message": row.message,
        "finished_at": row.finished_at,
        "attempts": row.attempts,
        "request": row.request,
        "response": row.response,
        "follow_up_until": row.follow_up_until,
        "concluded_at": row.concluded_at,
        "moved": moved,
        "stage_reached_at": row.stage_reached_at,
    }


def get(connection: Connection, replay_id: int) -> Any:
    row = connection.execute(sa.select(replays).where(replays.c.id == replay_id)).first()
    if row is None:
        raise NotFound(f"no replay {replay_id}")
    return row


def listing(
    connection: Connection, flt: ReplayFilter, *, before_id: int | None = None, limit: int = 100
) -> list[Any]:
    """Newest first; page with ``before_id`` (the smallest id of the previous page)."""
    query = sa.select(replays).order_by(replays.c.id.desc()).limit(limit)
    for column, value in (
        (replays.c.flow_id, flt.flow_id),
        (replays.c.outcome, flt.outcome),
        (replays.c.trigger, flt.trigger),
        (replays.c.requested_by, flt.requested_by),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.since is not None:
        query = query.where(replays.c.requested_at >= flt.since)
    if before_id is not None:
        query = query.where(replays.c.id < before_id)
    return list(connection.execute(query))


def of_flow(connection: Connection, flow_id: str) -> list[dict[str, Any]]:
    """The replays of one flow, oldest first."""
    rows = connection.execute(
        sa.select(replays).where(replays.c.flow_id == flow_id).order_by(replays.c.id)
    )
    return [as_dict(row) for row in rows]


def _outcome_as_of(as_of: datetime) -> Any:
    """A replay's outcome as it stood at ``as_of`` (NULL while it was still being sent)."""
    return sa.case(
        (replays.c.concluded_at <= as_of, replays.c.outcome),
        (
            replays.c.finished_at <= as_of,
            sa.case(
                (replays.c.outcome.in_(("refused", "failed")), replays.c.outcome),
                else_=sa.literal("sent"),
            ),
        ),
        else_=sa.null(),
    )


def counts_in_window(
    connection: Connection,
    start: datetime,
    as_of: datetime,
    filters: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """kpis.md ``replays``: the replays requested in (start, as_of], by their outcome as of
    ``as_of``; with ``filters`` (dimension -> value), only those of flows with these values."""
    outcome = _outcome_as_of(as_of).label("outcome")
    query = sa.select(outcome, sa.func.count()).where(
        replays.c.requested_at > start, replays.c.requested_at <= as_of
    )
    if filters:
        query = query.join(flows, flows.c.flow_id == replays.c.flow_id).where(
            *(flows.c[dimension] == value for dimension, value in filters.items())
        )
    rows = connection.execute(query.group_by(outcome))
    found: Mapping[Any, int] = {row[0]: row[1] for row in rows}
    return {name: int(found.get(name, 0)) for name in OUTCOMES}


def totals(connection: Connection) -> dict[str, int]:
    """``syncwatch_replays_total``: never decreasing. ``sent`` counts every replay that was sent
    (those later found effective or ineffective included); ``effective`` and ``ineffective``
    count the follow-ups; ``refused`` and ``failed`` the others."""
    rows = connection.execute(
        sa.select(replays.c.outcome, sa.func.count()).group_by(replays.c.outcome)
    )
    found = {row[0]: int(row[1]) for row in rows}
    result = {name: found.get(name, 0) for name in OUTCOMES}
    result["sent"] = found.get("sent", 0) + found.get("effective", 0) + found.get("ineffective", 0)
    return result
