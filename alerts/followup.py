"""The follow-up of replays (api.md, Replay): a sent replay is ``effective`` once the flow reaches
the replayed stage, ``ineffective`` when it has not after ``replay.follow_up_after``; a replay left
``sending`` by a crash is ``failed`` ("interrupted") once no send could still be running, and is
never sent again by itself. Runs after each probe cycle (``syncwatch.scheduler``).

A replay's window also ends when the next replay of the same flow and stage is sent: the flow
moving after that is the later replay's doing, so a replay that had to be sent again is
``ineffective`` and only the one after which the flow moved is ``effective`` (api.md says only
"effective once the flow reaches the stage"; without this rule both would count as effective)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alerts.replay import follow_up as decide
from core import audit
from core.db import Database
from core.replay_settings import ReplaySettings
from core.tables import flows, replays
from probes.facts_codec import facts_from_row

SYSTEM_ACTOR = "syncwatch"


def record(
    connection: Connection,
    now: datetime,
    actor: str,
    action: str,
    replay_id: int,
    details: dict[str, Any],
) -> None:
    """An audit entry about one replay."""
    audit.record(
        connection,
        at=now,
        actor=actor,
        action=action,
        target_type="replay",
        target_id=str(replay_id),
        details=details,
    )


def follow_up(
    database: Database, settings: ReplaySettings, now: datetime, *, batch: int = 500
) -> dict[str, int]:
    """Conclude the sent replays whose flow moved or whose follow-up window passed, and fail the
    interrupted sends; ``batch`` replays per transaction. Returns counts by new outcome."""
    counts = {"effective": 0, "ineffective": 0, "failed": 0}
    with database.write() as connection:
        counts["failed"] = _fail_interrupted(connection, settings, now)
    after = 0
    while True:
        with database.write() as connection:
            rows = connection.execute(
                sa.select(replays)
                .where(replays.c.outcome == "sent", replays.c.id > after)
                .order_by(replays.c.id)
                .limit(batch)
            ).all()
            wanted = {row.flow_id for row in rows}
            flow_rows = {
                flow.flow_id: flow
                for flow in connection.execute(sa.select(flows).where(flows.c.flow_id.in_(wanted)))
            }
            sent_again = _sent_again(connection, wanted)
            for row in rows:
                until = row.follow_up_until or now
                for later_id, later_at in sent_again.get((row.flow_id, row.stage), ()):
                    if later_id > row.id:
                        until = min(until, later_at)
                        break
                outcome = _conclude(connection, row, flow_rows.get(row.flow_id), now, until)
                if outcome is not None:
                    counts[outcome] += 1
        if len(rows) < batch:
            return counts
        after = rows[-1].id


#: Outcomes of a replay that went (or is going) to the middleware.
SENT = ("sending", "sent", "effective", "ineffective")


def _sent_again(
    connection: Connection, flow_ids: set[str]
) -> dict[tuple[str, str], list[tuple[int, datetime]]]:
    """The replays sent of these flows, by flow and stage, in the order they were asked for."""
    found: dict[tuple[str, str], list[tuple[int, datetime]]] = {}
    if not flow_ids:
        return found
    for replay in connection.execute(
        sa.select(replays.c.id, replays.c.flow_id, replays.c.stage, replays.c.requested_at)
        .where(replays.c.flow_id.in_(flow_ids), replays.c.outcome.in_(SENT))
        .order_by(replays.c.id)
    ):
        found.setdefault((replay.flow_id, replay.stage), []).append(
            (replay.id, replay.requested_at)
        )
    return found


def _conclude(
    connection: Connection, row: Any, flow: Any | None, now: datetime, until: datetime
) -> str | None:
    decided: tuple[str, datetime | None] | None
    if flow is None:  # the flow no longer exists (its correlation was re-resolved)
        decided = ("ineffective", None) if now >= until else None
    else:
        decided = decide(facts_from_row(flow), row.stage, now, until)
    if decided is None:
        return None
    outcome, reached_at = decided
    connection.execute(
        replays.update()
        .where(replays.c.id == row.id)
        .values(outcome=outcome, concluded_at=now, stage_reached_at=reached_at)
    )
    details: dict[str, Any] = {"flow_id": row.flow_id, "stage": row.stage}
    if reached_at is not None:
        details["stage_reached_at"] = reached_at.isoformat()
    record(connection, now, SYSTEM_ACTOR, f"replay.{outcome}", row.id, details)
    return outcome


def longest_send(settings: ReplaySettings) -> timedelta:
    """An upper bound on one send, retries and backoff included, with a minute to spare."""
    backoff = sum(settings.backoff_seconds * 2**i for i in range(max(settings.attempts - 1, 0)))
    return timedelta(seconds=settings.attempts * settings.timeout_seconds * 2 + backoff + 60)


def _fail_interrupted(connection: Connection, settings: ReplaySettings, now: datetime) -> int:
    stale = connection.execute(
        sa.select(replays.c.id, replays.c.flow_id).where(
            replays.c.outcome == "sending",
            replays.c.requested_at < now - longest_send(settings),
        )
    ).all()
    for row in stale:
        connection.execute(
            replays.update()
            .where(replays.c.id == row.id)
            .values(
                outcome="failed",
                finished_at=now,
                message="interrupted: syncwatch stopped while sending; whether the "
                "middleware received it is unknown (it is not sent again by itself)",
            )
        )
        record(connection, now, SYSTEM_ACTOR, "replay.failed", row.id, {"flow_id": row.flow_id})
    return len(stale)
