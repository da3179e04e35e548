"""Replaying stuck flows: the shell around :mod:`alerts.replay` (the choice) and
:mod:`alerts.send` (the sending).

A replay is written in three steps, so that it is never sent twice and never lost:
1. in one write transaction: the idempotency key looked up, the flow locked (PostgreSQL) or the
   store's write lock held (SQLite), the guardrails checked against the store, the replay row
   written (``refused``, or ``sending`` with what will be sent) and audited;
2. the send, outside any transaction, with retries;
3. in a second transaction: the outcome (``sent`` or ``failed``), the answer, audited.
A process that dies in step 2 leaves the row in ``sending``: it is never sent again by itself;
:func:`follow_up` marks it ``failed`` ("interrupted") once no send could still be running.

The follow-up marks each sent replay ``effective`` once the flow reaches the stage, or
``ineffective`` when it has not after ``replay.follow_up_after``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alerts import followup
from alerts.replay import History, Plan, Refusal, fill_body, plan
from alerts.send import (
    Outbound,
    Published,
    SendResult,
    build_amqp,
    build_http,
    http_client,
    publish_amqp,
    send_http,
)
from core import jsoncodec, replaystore
from core.db import Database
from core.errors import Conflict, InvalidInput, NotFound
from core.replay_settings import ReplaySettings
from core.tables import events, findings, flows, replays
from probes.evaluate import FlowFacts
from probes.facts_codec import facts_from_row

log = logging.getLogger("syncwatch.replay")


@dataclass(frozen=True)
class ReplayRequest:
    flow_id: str
    reason: str
    actor: str  # the key's name, or cli:<user>
    trigger: str  # api | cli | alert
    force: bool = False
    idempotency_key: str | None = None
    alert_delivery_id: int | None = None


@dataclass(frozen=True)
class ReplayAnswer:
    replay: dict[str, Any]
    repeated: bool  # an earlier request with the same Idempotency-Key; nothing was sent now


class ReplayRefused(Conflict):
    """409 with the guardrail's reason; the refusal is recorded as a replay."""

    code = "replay_refused"


class Replayer:
    """Sends replays; made once per app (or CLI command) with the settings."""

    def __init__(
        self,
        database: Database,
        settings: ReplaySettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.settings = settings
        self.sleep = sleep
        self.client = http_client(settings, transport)

    def close(self) -> None:
        self.client.close()

    # --- asking for a replay ---

    def request(self, ask: ReplayRequest, now: datetime) -> ReplayAnswer:
        """Check, record, send, record. Raises :class:`ReplayRefused` (409) for a guardrail,
        NotFound for an unknown flow, InvalidInput when the idempotency key belongs to another
        flow."""
        try:
            with self.database.write() as connection:
                earlier = self._earlier(connection, ask)
                if earlier is not None:
                    return self._repeat(earlier)
                row_id, outbound = self._record(connection, ask, now)
        except sa.exc.IntegrityError:
            # another request with the same key won the race: answer as it did
            with self.database.read() as connection:
                earlier = self._earlier(connection, ask)
            if earlier is None:
                raise
            return self._repeat(earlier)
        if outbound is None:  # refused
            with self.database.read() as connection:
                row = replaystore.get(connection, row_id)
            raise _refused(row)
        result = self._send(outbound)
        with self.database.write() as connection:
            self._finish(connection, row_id, result, now=now)
            row = replaystore.get(connection, row_id)
        return ReplayAnswer(replaystore.as_dict(row), repeated=False)

    def _earlier(self, connection: Connection, ask: ReplayRequest) -> Any | None:
        if ask.idempotency_key is None:
            return None
        row = connection.execute(
            sa.select(replays).where(replays.c.idempotency_key == ask.idempotency_key)
        ).first()
        if row is not None and row.flow_id != ask.flow_id:
            raise InvalidInput(
                f"Idempotency-Key {ask.idempotency_key!r} was used for flow {row.flow_id}: "
                "use a new key for a new replay"
            )
        return row

    def _repeat(self, row: Any) -> ReplayAnswer:
        if row.outcome == "refused":
            raise _refused(row)
        return ReplayAnswer(replaystore.as_dict(row), repeated=True)

    def _record(
        self, connection: Connection, ask: ReplayRequest, now: datetime
    ) -> tuple[int, Outbound | Published | None]:
        query = sa.select(flows).where(flows.c.flow_id == ask.flow_id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()  # one replay decision per flow at a time
        flow_row = connection.execute(query).first()
        if flow_row is None:
            raise NotFound(f"no flow {ask.flow_id!r}")
        facts = facts_from_row(flow_row)
        decision = plan(
            facts,
            now,
            self._history(connection, ask.flow_id, now),
            self.settings.targets,
            force=ask.force,
            max_per_flow=self.settings.max_per_flow,
            per_flow_period=self.settings.per_flow_period,
        )
        values: dict[str, Any] = {
            "flow_id": facts.flow_id,
            "flow_type": facts.flow_type,
            "correlation_id": facts.correlation_id,
            "trigger": ask.trigger,
            "requested_by": ask.actor,
            "reason": ask.reason,
            "forced": ask.force,
            "idempotency_key": ask.idempotency_key,
            "alert_delivery_id": ask.alert_delivery_id,
            "requested_at": now,
        }
        if isinstance(decision, Refusal):
            values |= {
                "stage": decision.stage,
                "outcome": "refused",
                "refusal": decision.code,
                "message": decision.message,
                "finished_at": now,
            }
        else:
            values |= {
                "stage": decision.stage,
                "source": decision.source,
                "execution_id": decision.failure.execution_id,
                "failure_event_id": decision.failure.event_id,
                "outcome": "sending",
            }
        row_id = int(
            connection.execute(
                replays.insert().values(**values).returning(replays.c.id)
            ).scalar_one()
        )
        details: dict[str, Any] = {
            "flow_id": facts.flow_id,
            "reason": ask.reason,
            "trigger": ask.trigger,
        }
        if ask.force:
            details["forced"] = True
        if isinstance(decision, Refusal):
            details["refusal"] = decision.code
            followup.record(connection, now, ask.actor, "replay.refused", row_id, details)
            return row_id, None
        outbound = self._build(connection, facts, decision, row_id, ask)
        connection.execute(
            replays.update().where(replays.c.id == row_id).values(request=outbound.stored())
        )
        details |= {"stage": decision.stage, "source": decision.source}
        followup.record(connection, now, ask.actor, "replay.request", row_id, details)
        return row_id, outbound

    def _history(self, connection: Connection, flow_id: str, now: datetime) -> History:
        mine = replays.c.flow_id == flow_id
        recent = connection.execute(
            sa.select(sa.func.count()).where(
                mine,
                replays.c.outcome != "refused",
                replays.c.requested_at > now - self.settings.per_flow_period,
            )
        ).scalar_one()
        sending = connection.execute(
            sa.select(sa.func.count()).where(mine, replays.c.outcome == "sending")
        ).scalar_one()
        conflict = connection.execute(
            sa.select(sa.func.count()).where(
                findings.c.flow_id == flow_id,
                findings.c.kind == "amendment_conflict",
                findings.c.resolved_at.is_(None),
                findings.c.opened_at <= now,
            )
        ).scalar_one()
        return History(int(recent), bool(sending), bool(conflict))

    def _build(
        self,
        connection: Connection,
        facts: FlowFacts,
        decision: Plan,
        row_id: int,
        ask: ReplayRequest,
    ) -> Outbound | Published:
        target = self.settings.targets[decision.source]
        values = {
            "execution_id": decision.failure.execution_id or "",
            "correlation_id": facts.correlation_id,
            "flow_id": facts.flow_id,
            "flow_type": facts.flow_type,
            "stage": decision.stage,
            "replay_id": str(row_id),
        }
        key = f"syncwatch-replay-{row_id}"
        if target.http is not None:
            return build_http(target.http, values, fill_body(target.http.body, values), key)
        assert target.amqp is not None
        original = connection.execute(
            sa.select(events).where(
                events.c.source == facts.start_source, events.c.event_id == facts.start_event_id
            )
        ).one()
        headers = {
            "syncwatch-replay-id": str(row_id),
            "syncwatch-flow-id": facts.flow_id,
            "syncwatch-stage": decision.stage,
            "syncwatch-execution-id": decision.failure.execution_id or "",
            "idempotency-key": key,
        }
        return build_amqp(target.amqp, values, _cloudevent(original), headers)

    def _send(self, outbound: Outbound | Published) -> SendResult:
        try:
            if isinstance(outbound, Outbound):
                return send_http(outbound, self.settings, self.client, sleep=self.sleep)
            if outbound.target is None:
                raise RuntimeError("an AMQP replay without its target")
            return publish_amqp(outbound, outbound.target, self.settings, sleep=self.sleep)
        except Exception as error:  # recorded as failed, never lost in a log line
            log.exception("replay send failed")
            return SendResult(False, 0, {"error": type(error).__name__}, str(error)[:500])

    def _finish(
        self, connection: Connection, row_id: int, result: SendResult, now: datetime
    ) -> None:
        values: dict[str, Any] = {
            "outcome": "sent" if result.ok else "failed",
            "finished_at": now,
            "attempts": result.attempts,
            "response": result.response,
            "message": result.message,
        }
        if result.ok:
            values["follow_up_until"] = now + self.settings.follow_up_after
        connection.execute(replays.update().where(replays.c.id == row_id).values(**values))
        row = replaystore.get(connection, row_id)
        action = "replay.sent" if result.ok else "replay.failed"
        details = {"flow_id": row.flow_id, "attempts": result.attempts, **result.response}
        details.pop("body", None)
        followup.record(connection, now, row.requested_by, action, row_id, details)

    # --- following up ---

    def follow_up(self, now: datetime, *, batch: int = 500) -> dict[str, int]:
        """:func:`alerts.followup.follow_up` with this replayer's database and settings."""
        return followup.follow_up(self.database, self.settings, now, batch=batch)


def _refused(row: Any) -> ReplayRefused:
    return ReplayRefused(
        row.message,
        details={
            "refusal": row.refusal,
            "replay": jsoncodec.loads(jsoncodec.dumps(replaystore.as_dict(row))),
        },
    )


def _cloudevent(row: Any) -> bytes:
    """The stored event as a structured-mode CloudEvent (JSON)."""
    event: dict[str, Any] = {
        "specversion": row.specversion,
        "id": row.event_id,
        "source": row.source,
        "type": row.type,
        "time": row.time,
        "datacontenttype": "application/json",
        "data": row.data,
    }
    for name, value in (
        ("correlationid", row.correlation_id),
        ("subject", row.subject),
        ("traceparent", row.traceparent),
    ):
        if value is not None:
            event[name] = value
    for name, value in (row.extensions or {}).items():
        event.setdefault(name, value)
    return jsoncodec.dumps(event)
