"""FlowFacts to and from the ``flows`` table: indexed columns for what queries filter on, the rest
(stages, integration marks, trace links) as JSON with RFC 3339 times."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from probes.evaluate import FlowFacts, IntegrationMark, StageFacts

_MICROSECOND = timedelta(microseconds=1)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def facts_json(facts: FlowFacts) -> dict[str, Any]:
    return {
        "start": [facts.start_source, facts.start_event_id],
        "traceparents": list(facts.traceparents),
        "stages": [
            {
                "type": stage.type,
                "queue": stage.queue,
                "deadline_at": _iso(stage.deadline_at),
                "reached_at": _iso(stage.reached_at),
                "integration": [
                    [_iso(m.time), m.source, m.event_id, m.failed, m.execution_id]
                    for m in stage.integration
                ],
            }
            for stage in facts.stages
        ],
    }


#: Columns of a flow row that are not its facts (they change with the instant of evaluation).
_NOT_FACTS = frozenset({"next_check_at", "updated_at", "facts_hash"})


def facts_hash(row: dict[str, Any]) -> str:
    """A digest of what the events say about a flow (its row less the evaluation instant): equal
    digests, equal facts, so the probes skip rewriting a flow that did not change."""
    content = {key: value for key, value in row.items() if key not in _NOT_FACTS}
    return hashlib.blake2b(
        orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).hexdigest()


def flow_row(facts: FlowFacts, *, next_check_at: datetime | None, now: datetime) -> dict[str, Any]:
    row = {
        "flow_id": facts.flow_id,
        "flow_type": facts.flow_type,
        "correlation_id": facts.correlation_id,
        "subkey": facts.subkey,
        "t0": facts.t0,
        "deadline_at": facts.deadline_at,
        "completed_at": facts.completed_at,
        "cancelled_at": facts.cancelled_at,
        "ended_at": facts.completed_at or facts.cancelled_at,
        "duration_us": None if facts.duration is None else facts.duration // _MICROSECOND,
        "next_check_at": next_check_at,
        "legal_entity": facts.legal_entity,
        "region": facts.region,
        "service_line": facts.service_line,
        "value": None if facts.value is None else str(facts.value),
        "currency": facts.currency,
        "facts": facts_json(facts),
        "updated_at": now,
    }
    row["facts_hash"] = facts_hash(row)
    return row


def facts_from_row(row: Any) -> FlowFacts:
    blob = row.facts
    stages = tuple(
        StageFacts(
            type=stage["type"],
            queue=stage["queue"],
            deadline_at=_required_time(stage["deadline_at"]),
            reached_at=_time(stage["reached_at"]),
            integration=tuple(
                IntegrationMark(_required_time(t), source, event_id, failed, execution_id)
                for t, source, event_id, failed, execution_id in stage["integration"]
            ),
        )
        for stage in blob["stages"]
    )
    start_source, start_event_id = blob["start"]
    return FlowFacts(
        flow_id=row.flow_id,
        flow_type=row.flow_type,
        correlation_id=row.correlation_id,
        subkey=row.subkey,
        t0=row.t0,
        start_source=start_source,
        start_event_id=start_event_id,
        deadline_at=row.deadline_at,
        stages=stages,
        completed_at=row.completed_at,
        cancelled_at=row.cancelled_at,
        legal_entity=row.legal_entity,
        region=row.region,
        service_line=row.service_line,
        value=None if row.value is None else Decimal(row.value),
        currency=row.currency,
        traceparents=tuple(blob["traceparents"]),
    )
