"""Storing canonical events: idempotent on ``(source, id)``, the first stored wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.events import CanonicalEvent
from core.tables import events

#: PostgreSQL advisory lock taken by every ingest transaction, so that ingest sequence numbers
#: become visible in the order they were handed out (see docs/store.md: probes read by seq).
INGEST_LOCK_KEY = 0x5953_4E43  # "SYNC"


@dataclass(frozen=True)
class StoreOutcome:
    """Which of the given events were stored now (by position) and which were duplicates."""

    stored: list[int]
    duplicates: list[int]


def _row(event: CanonicalEvent, received_at: datetime) -> dict[str, Any]:
    data = event.data
    contract_id = data.get("contract_id")
    project_id = data.get("project_id")
    return {
        "source": event.source,
        "event_id": event.id,
        "type": event.type,
        "time": event.time,
        "correlation_id": event.correlation_id,
        "contract_id": contract_id if isinstance(contract_id, str) else None,
        "project_id": project_id if isinstance(project_id, str) else None,
        "subject": event.subject,
        "traceparent": event.traceparent,
        "specversion": event.specversion,
        "data": data,
        "extensions": event.extensions or None,
        "payload_hash": event.payload_hash,
        "received_at": received_at,
    }


def store_events(
    connection: Connection, batch: Sequence[CanonicalEvent], *, received_at: datetime
) -> StoreOutcome:
    """Insert the events that are new; within the batch and against the store, a repeated
    ``(source, id)`` is a duplicate. Runs inside the caller's transaction."""
    first_seen: dict[tuple[str, str], int] = {}
    duplicates: list[int] = []
    for index, event in enumerate(batch):
        key = (event.source, event.id)
        if key in first_seen:
            duplicates.append(index)
        else:
            first_seen[key] = index
    if not first_seen:
        return StoreOutcome(stored=[], duplicates=duplicates)

    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(INGEST_LOCK_KEY)))
        insert: Any = postgresql.insert(events)
    else:
        insert = sqlite.insert(events)
    statement = insert.on_conflict_do_nothing(index_elements=["source", "event_id"]).returning(
        events.c.source, events.c.event_id
    )
    rows = [_row(batch[index], received_at) for index in first_seen.values()]
    inserted = {(r.source, r.event_id) for r in connection.execute(statement, rows)}
    stored = []
    for key, index in first_seen.items():
        if key in inserted:
            stored.append(index)
        else:
            duplicates.append(index)
    duplicates.sort()
    return StoreOutcome(stored=stored, duplicates=duplicates)


def count_events(connection: Connection) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())
