"""Storing canonical events: idempotent on ``(source, id)``, the first stored wins."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

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
    new = [batch[index] for index in first_seen.values()]
    inserted: set[tuple[str, str]] | None = None
    if dialect == "postgresql":
        # The rows go into a session-local staging table before the lock: only the INSERT below
        # hands out sequence numbers, so only it needs to wait for the other ingest transactions.
        _stage_postgresql(connection, new, received_at)
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(INGEST_LOCK_KEY)))
        inserted = _insert_staged_postgresql(connection)
    elif dialect == "sqlite":
        inserted = _insert_sqlite(connection, new, received_at)
    if inserted is None:
        insert: Any = (
            postgresql.insert(events) if dialect == "postgresql" else sqlite.insert(events)
        )
        statement = insert.on_conflict_do_nothing(index_elements=["source", "event_id"]).returning(
            events.c.source, events.c.event_id
        )
        rows = [_row(event, received_at) for event in new]
        inserted = {(r.source, r.event_id) for r in connection.execute(statement, rows)}
    stored = []
    for key, index in first_seen.items():
        if key in inserted:
            stored.append(index)
        else:
            duplicates.append(index)
    duplicates.sort()
    return StoreOutcome(stored=stored, duplicates=duplicates)


# The bulk paths below store exactly what the SQLAlchemy statement above stores (the same values
# through the same bind processors, rows in batch order so that seq follows it, the same ON
# CONFLICT) at a fraction of its cost per row: SQLAlchemy's multi-row VALUES with RETURNING spends
# most of an ingest request's time in Python (on PostgreSQL, psycopg re-parses the 14,000
# placeholders of every batch). Measured with bench/ingest (docs/benchmarks.md).

#: The columns the bulk paths write, in this order; seq and resolved_correlation_id are left out.
BULK_COLUMNS = (
    "source",
    "event_id",
    "type",
    "time",
    "correlation_id",
    "contract_id",
    "project_id",
    "subject",
    "traceparent",
    "specversion",
    "data",
    "extensions",
    "payload_hash",
    "received_at",
)
_COLUMN_LIST = ", ".join(BULK_COLUMNS)


def _same(value: Any) -> Any:
    return value


def _processor(column: str, dialect: Dialect) -> Callable[[Any], Any]:
    """The bind processor SQLAlchemy applies to ``column`` on ``dialect`` (UTCDateTime, JSON)."""
    process = events.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _values(
    new: Sequence[CanonicalEvent], received_at: datetime, dialect: Dialect
) -> list[tuple[Any, ...]]:
    """The rows of ``new`` as driver values, in ``BULK_COLUMNS`` order."""
    time_value = _processor("time", dialect)
    data_value = _processor("data", dialect)
    extensions_value = _processor("extensions", dialect)
    received = _processor("received_at", dialect)(received_at)
    values = []
    for event in new:
        row = _row(event, received_at)
        values.append(
            (
                row["source"],
                row["event_id"],
                row["type"],
                time_value(row["time"]),
                row["correlation_id"],
                row["contract_id"],
                row["project_id"],
                row["subject"],
                row["traceparent"],
                row["specversion"],
                data_value(row["data"]),
                extensions_value(row["extensions"]),
                row["payload_hash"],
                received,
            )
        )
    return values


_SQLITE_ROW = "(" + ", ".join("?" * len(BULK_COLUMNS)) + ")"
#: Rows per INSERT statement on SQLite (at most; fewer where the library allows fewer variables).
_SQLITE_ROWS_PER_STATEMENT = 1000
_SQLITE_MAX_ROWID = 2**63 - 1


def _sqlite_insert(rows: int) -> str:
    return (
        f"INSERT INTO events ({_COLUMN_LIST}) VALUES {', '.join([_SQLITE_ROW] * rows)} "
        "ON CONFLICT (source, event_id) DO NOTHING"
    )


def _insert_sqlite(
    connection: Connection, new: Sequence[CanonicalEvent], received_at: datetime
) -> set[tuple[str, str]] | None:
    """Multi-row INSERTs of up to 1,000 rows (not executemany: one statement runs in one step of
    the library with the GIL released, where executemany takes the GIL back for every row and so
    queues behind the other requests' parsing; about 25 % more events/s end to end). The
    transaction holds SQLite's write lock (BEGIN IMMEDIATE), so the rows inserted now are exactly
    those above the largest seq before: SQLite gives a new row the largest rowid plus one while
    that is below the maximum (else None: the caller takes the general path)."""
    before = connection.exec_driver_sql("SELECT max(seq) FROM events").scalar() or 0
    if before > _SQLITE_MAX_ROWID - len(new):
        return None
    driver: Any = connection.connection.driver_connection  # a sqlite3.Connection
    per_statement = min(
        _SQLITE_ROWS_PER_STATEMENT,
        driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(BULK_COLUMNS),
    )
    values = _values(new, received_at, connection.dialect)
    inserted = 0
    for start in range(0, len(values), per_statement):
        chunk = values[start : start + per_statement]
        parameters = tuple(value for row in chunk for value in row)
        inserted += connection.exec_driver_sql(_sqlite_insert(len(chunk)), parameters).rowcount
    if inserted == len(new):
        return {(event.source, event.id) for event in new}
    rows = connection.exec_driver_sql(
        "SELECT source, event_id FROM events WHERE seq > ?", (before,)
    )
    return {(source, event_id) for source, event_id in rows}


_PG_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS syncwatch_events_stage ("
    "n integer NOT NULL, source text, event_id text, type text, time timestamptz, "
    "correlation_id text, contract_id text, project_id text, subject text, traceparent text, "
    "specversion text, data jsonb, extensions jsonb, payload_hash text, "
    "received_at timestamptz) ON COMMIT DELETE ROWS"
)
_PG_COPY = f"COPY syncwatch_events_stage (n, {_COLUMN_LIST}) FROM STDIN"
_PG_INSERT = (
    f"INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM syncwatch_events_stage "
    "ORDER BY n ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id"
)


def _stage_postgresql(
    connection: Connection, new: Sequence[CanonicalEvent], received_at: datetime
) -> None:
    """COPY the rows into a session-local staging table (emptied at commit); the INSERT ...
    SELECT of :func:`_insert_staged_postgresql` takes them from there (COPY has no ON CONFLICT of
    its own)."""
    connection.exec_driver_sql(_PG_STAGE)
    values = _values(new, received_at, connection.dialect)
    driver: Any = connection.connection.driver_connection  # a psycopg.Connection
    try:
        with driver.cursor() as cursor, cursor.copy(_PG_COPY) as copy:
            for number, row in enumerate(values):
                copy.write_row((number, *row))
    except psycopg.Error as error:
        # What SQLAlchemy does for its own statements: wrap the driver's error, and invalidate a
        # connection that died (so that the pool replaces it and the caller answers 503).
        invalidated = connection.dialect.is_disconnect(error, driver, None)  # type: ignore[arg-type]
        if invalidated:
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            _PG_COPY,
            None,
            error,
            psycopg.Error,
            connection_invalidated=invalidated,
            dialect=connection.dialect,
        ) from error


def _insert_staged_postgresql(connection: Connection) -> set[tuple[str, str]]:
    """The staged rows in batch order, with ON CONFLICT DO NOTHING RETURNING: the new ones."""
    rows = connection.exec_driver_sql(_PG_INSERT)
    return {(source, event_id) for source, event_id in rows}


def count_events(connection: Connection) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())
