"""``unreported_record`` findings (flows.md): a record that a reconciliation found in a source
system and syncwatch had never received as an event. The reconciliation stores the record as the
event and raises the finding in one transaction; the finding stays open in the
``integration_oncall`` queue until the source's own delivery of that ``(source, id)`` arrives (a
duplicate then: it resolves by itself, ``resolved_by`` = ``syncwatch``) or an operator resolves
it (the delivery was lost: on-call finds out why).

A finding is about a record, not a flow: its ``flow_id`` is ``record:{source}:{id}``. The probe
runner only touches the findings of the flows it evaluates, so it never withdraws one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.events import CanonicalEvent
from core.tables import findings
from probes.flowstore import SYSTEM_ACTOR

UNREPORTED = "unreported_record"
QUEUE = "integration_oncall"
PREFIX = "record:"
ARRIVED = "the source's own delivery of the event arrived (late)"
_CHUNK = 500


def record_flow_id(source: str, event_id: str) -> str:
    return f"{PREFIX}{source}:{event_id}"


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def finding_row(event: CanonicalEvent, *, connector: str, now: datetime) -> dict[str, Any]:
    """Pure: the finding of one record found missing; opened at the record's time."""
    return {
        "kind": UNREPORTED,
        "flow_id": record_flow_id(event.source, event.id),
        "key": "",
        "queue": QUEUE,
        "opened_at": event.time,
        "details": {
            "source": event.source,
            "id": event.id,
            "type": event.type,
            "time": event.time.isoformat(),
            "correlation_id": event.correlation_id,
            "connector": connector,
            "reconciled_at": now.isoformat(),
        },
        "created_at": now,
    }


def raise_findings(
    connection: Connection, missing: Sequence[CanonicalEvent], *, connector: str, now: datetime
) -> int:
    """Insert one open finding per event (a finding already there is left as it is); return how
    many were inserted. Runs inside the caller's transaction."""
    if not missing:
        return 0
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    rows = [finding_row(event, connector=connector, now=now) for event in missing]
    statement = (
        dialect.insert(findings)
        .on_conflict_do_nothing(index_elements=["kind", "flow_id", "key"])
        .returning(findings.c.id)
    )
    inserted = 0
    for row in rows:  # one by one: RETURNING with executemany is not portable
        if connection.execute(statement.values(**row)).first() is not None:
            inserted += 1
    return inserted


def resolve_arrived(
    connection: Connection, arrived: Sequence[CanonicalEvent], *, now: datetime
) -> int:
    """Resolve the open ``unreported_record`` findings of these events (duplicates of records a
    reconciliation stored): the delivery came after all. Returns how many were resolved."""
    flow_ids = sorted({record_flow_id(event.source, event.id) for event in arrived})
    resolved = 0
    for chunk in _chunks(flow_ids):
        result = connection.execute(
            findings.update()
            .where(
                findings.c.kind == UNREPORTED,
                findings.c.resolved_at.is_(None),
                findings.c.flow_id.in_(chunk),
            )
            .values(resolved_at=now, resolved_by=SYSTEM_ACTOR, resolution=ARRIVED)
        )
        resolved += result.rowcount or 0
    return resolved


def open_count(connection: Connection) -> int:
    return int(
        connection.execute(
            sa.select(sa.func.count())
            .select_from(findings)
            .where(findings.c.kind == UNREPORTED, findings.c.resolved_at.is_(None))
        ).scalar_one()
    )
