"""The Alertmanager webhook receiver (payload version 4) and the automatic replays it asks for.

``record`` stores each alert of a notification once, keyed on its fingerprint and start time
(Alertmanager repeats notifications; the same alert delivered again does nothing more), and
answers at once. ``process_pending`` then works in the background: for each new firing alert that
carries ``syncwatch_auto_replay="true"``, ``flow_type`` and ``stage``, it replays the flows of that
type stuck at that stage on an integration failure at that moment, oldest first, under the
replay guardrails, at most ``replay.auto.max_per_alert`` for the alert and
``replay.auto.max_per_hour`` over all alerts. A delivery left half-done by a crash is taken up
again; each flow's replay carries an idempotency key made of the alert and the flow, so it is
never sent twice."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from alerts.replays import Replayer, ReplayRefused, ReplayRequest
from core import audit
from core.db import Database
from core.errors import InvalidInput, NotFound
from core.tables import alert_deliveries, replays, stuck_spans

log = logging.getLogger("syncwatch.alertmanager")

AUTO_REPLAY_LABEL = "syncwatch_auto_replay"
INTEGRATION_QUEUE = "integration_oncall"
#: A delivery claimed this long ago and not finished was interrupted: take it up again.
STALE_CLAIM = timedelta(minutes=10)


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)


class Notification(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(max_length=10_000)


@dataclass(frozen=True)
class Received:
    alerts: int
    new: int  # stored for the first time
    to_replay: int  # new firing automatic-replay alerts, waiting for the background work

    def as_dict(self) -> dict[str, int]:
        return {"alerts": self.alerts, "new": self.new, "to_replay": self.to_replay}


def wants_replay(alert: Alert) -> bool:
    labels = alert.labels
    return (
        alert.status == "firing"
        and labels.get(AUTO_REPLAY_LABEL) == "true"
        and bool(labels.get("flow_type"))
        and bool(labels.get("stage"))
    )


def record(
    connection: Connection,
    notification: Notification,
    *,
    received_by: str,
    now: datetime,
    auto_enabled: bool,
) -> Received:
    new = to_replay = 0
    for alert in notification.alerts:
        pending = auto_enabled and wants_replay(alert)
        values = {
            "fingerprint": alert.fingerprint,
            "starts_at": alert.startsAt,
            "alertname": alert.labels.get("alertname"),
            "status": alert.status,
            "labels": alert.labels,
            "received_by": received_by,
            "received_at": now,
            "state": "pending" if pending else "ignored",
        }
        inserted = connection.execute(
            _insert_new(connection).values(**values).returning(alert_deliveries.c.id)
        ).first()
        if inserted is None:
            if alert.status == "resolved":
                connection.execute(
                    alert_deliveries.update()
                    .where(
                        alert_deliveries.c.fingerprint == alert.fingerprint,
                        alert_deliveries.c.starts_at == alert.startsAt,
                    )
                    .values(status="resolved")
                )
            continue
        new += 1
        to_replay += pending
    audit.record(
        connection,
        at=now,
        actor=received_by,
        action="alertmanager.notify",
        target_type="alert_group",
        target_id=notification.groupKey[:255] or None,
        details={"status": notification.status, "alerts": len(notification.alerts), "new": new},
    )
    return Received(len(notification.alerts), new, to_replay)


def _insert_new(connection: Connection) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(alert_deliveries).on_conflict_do_nothing(
        index_elements=["fingerprint", "starts_at"]
    )


@dataclass
class Outcome:
    delivery_id: int
    stuck: int = 0
    replays: list[int] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    skipped_by_limit: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stuck": self.stuck,
            "replays": self.replays,
            "refused": self.refused,
            "skipped_by_limit": self.skipped_by_limit,
        }


def process_pending(
    database: Database, replayer: Replayer, clock: Callable[[], datetime]
) -> list[Outcome]:
    """Work off every pending delivery (claimed one at a time, so replicas share the work)."""
    done = []
    while (claimed := _claim(database, clock())) is not None:
        done.append(_process(database, replayer, clock, claimed))
    return done


def _claim(database: Database, now: datetime) -> Any | None:
    table = alert_deliveries
    claimable = sa.or_(
        table.c.state == "pending",
        sa.and_(table.c.state == "working", table.c.claimed_at < now - STALE_CLAIM),
    )
    with database.write() as connection:
        first = sa.select(table.c.id).where(claimable).order_by(table.c.id).limit(1)
        claimed = connection.execute(
            table.update()
            .where(table.c.id == first.scalar_subquery(), claimable)
            .values(state="working", claimed_at=now)
            .returning(table.c.id, table.c.fingerprint, table.c.starts_at, table.c.labels)
        ).first()
        return claimed


def _process(
    database: Database, replayer: Replayer, clock: Callable[[], datetime], delivery: Any
) -> Outcome:
    labels: dict[str, str] = delivery.labels
    outcome = Outcome(delivery.id)
    now = clock()
    with database.read() as connection:
        flow_ids = stuck_on_failure(connection, labels["flow_type"], labels["stage"], now)
        # this delivery's own earlier replays (taken up again after a crash) are counted by
        # the loop below, as repeats: not twice
        budget = replayer.settings.auto.max_per_hour - auto_replays_since(
            connection, now - timedelta(hours=1), excluding_delivery=delivery.id
        )
    outcome.stuck = len(flow_ids)
    limit = max(0, min(replayer.settings.auto.max_per_alert, budget))
    actor = f"alertmanager:{labels.get('alertname', 'alert')}"
    reason = (
        f"automatic replay: alert {labels.get('alertname', '?')} ({delivery.fingerprint}) "
        f"firing since {delivery.starts_at.isoformat()}"
    )
    for index, flow_id in enumerate(flow_ids):
        if len(outcome.replays) >= limit:
            outcome.skipped_by_limit = len(flow_ids) - index
            break
        ask = ReplayRequest(
            flow_id=flow_id,
            reason=reason,
            actor=actor,
            trigger="alert",
            idempotency_key=_key(delivery.fingerprint, delivery.starts_at, flow_id),
            alert_delivery_id=delivery.id,
        )
        try:
            answer = replayer.request(ask, clock())
        except ReplayRefused as refusal:
            code = str((refusal.details or {}).get("refusal"))
            outcome.refused[code] = outcome.refused.get(code, 0) + 1
            continue
        except (NotFound, InvalidInput) as error:  # the flow vanished since it was listed
            outcome.refused[error.code] = outcome.refused.get(error.code, 0) + 1
            continue
        outcome.replays.append(int(answer.replay["id"]))
    finished = clock()
    with database.write() as connection:
        connection.execute(
            alert_deliveries.update()
            .where(alert_deliveries.c.id == delivery.id)
            .values(state="done", processed_at=finished, result=outcome.as_dict())
        )
        audit.record(
            connection,
            at=finished,
            actor=actor,
            action="alertmanager.auto_replay",
            target_type="alert",
            target_id=delivery.fingerprint,
            details={"starts_at": delivery.starts_at.isoformat(), **outcome.as_dict()},
        )
    if outcome.skipped_by_limit:
        log.warning(
            "alert %s: %d stuck flows not replayed (auto-replay limits)",
            delivery.fingerprint,
            outcome.skipped_by_limit,
        )
    return outcome


def stuck_on_failure(
    connection: Connection, flow_type: str, stage: str, now: datetime
) -> list[str]:
    """The flows of the type stuck at the stage on an integration failure as of ``now``, oldest
    stuck finding first."""
    spans = stuck_spans.c
    rows = connection.execute(
        sa.select(spans.flow_id)
        .where(
            spans.flow_type == flow_type,
            spans.stage == stage,
            spans.queue == INTEGRATION_QUEUE,
            spans.opened_at < now,
            spans.since <= now,
            sa.or_(spans.until.is_(None), spans.until > now),
        )
        .order_by(spans.opened_at, spans.flow_id)
    )
    return [row.flow_id for row in rows]


def auto_replays_since(
    connection: Connection, since: datetime, *, excluding_delivery: int | None = None
) -> int:
    """Automatic replays sent (or tried) since ``since``; refused ones send nothing. Those of
    the delivery ``excluding_delivery`` are left out."""
    query = sa.select(sa.func.count()).where(
        replays.c.trigger == "alert",
        replays.c.outcome != "refused",
        replays.c.requested_at > since,
    )
    if excluding_delivery is not None:
        query = query.where(
            sa.or_(
                replays.c.alert_delivery_id.is_(None),
                replays.c.alert_delivery_id != excluding_delivery,
            )
        )
    count = connection.execute(query).scalar_one()
    return int(count)


def _key(fingerprint: str, starts_at: datetime, flow_id: str) -> str:
    digest = hashlib.sha256(f"{fingerprint}|{starts_at.isoformat()}|{flow_id}".encode())
    return "alert-" + digest.hexdigest()
