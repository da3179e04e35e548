"""The raw bulk-insert baseline: the same rows, into the same kind of database and schema, with
nothing but the driver between them.

The rows are built before the clock starts, the way ``core.eventstore`` builds them (validated
events, ``_row``), then turned into the values the driver stores: JSON as text (``extensions``
of ``None`` as JSON ``null``, as SQLAlchemy's JSON type stores it), times as naive UTC text on
SQLite (SQLAlchemy's format) and ``timestamptz`` on PostgreSQL. The timed loop is only the insert,
in transactions of one batch (1,000 rows), each committed durably, as the ingest API commits each
request:

- SQLite: ``sqlite3`` ``executemany`` of a plain ``INSERT``, WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch (the store's own settings, core/db.py);
- PostgreSQL: psycopg 3 ``COPY events (...) FROM STDIN`` per batch, committed per batch.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg

from core import jsoncodec
from core.db import SQLITE_BUSY_TIMEOUT_MS
from core.events import validate_event
from core.eventstore import BULK_COLUMNS, _row

COLUMNS = BULK_COLUMNS  # the columns store_events' bulk paths write, in their order
_JSON = {"data", "extensions"}
_TIMES = {"time", "received_at"}
#: Bodies whose rows are built (untimed) before they are inserted (timed).
CHUNK_BODIES = 50


def _sqlite_time(value: datetime) -> str:
    value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def build_rows(
    bodies: Iterable[bytes], dialect: str, received_at: datetime
) -> list[list[tuple[Any, ...]]]:
    """One list of row tuples per body, ready for the driver (untimed)."""
    batches = []
    for body in bodies:
        rows = []
        for item in jsoncodec.loads(body):
            row = _row(validate_event(item), received_at)
            values: list[Any] = []
            for column in COLUMNS:
                value = row[column]
                if column in _JSON:
                    value = jsoncodec.dumps_str(value)
                elif column in _TIMES and dialect == "sqlite":
                    value = _sqlite_time(value)
                values.append(value)
            rows.append(tuple(values))
        batches.append(rows)
    return batches


def _chunks(bodies: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for body in bodies:
        chunk.append(body)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def insert_sqlite(path: str, bodies: Iterable[bytes], received_at: datetime) -> dict[str, float]:
    """Rows are built a chunk of bodies at a time (untimed), so memory stays bounded."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    statement = (
        f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )
    totals = _Totals()
    for chunk in _chunks(bodies, CHUNK_BODIES):
        batches = build_rows(chunk, "sqlite", received_at)
        with totals.timing(batches):
            for rows in batches:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(statement, rows)
                connection.execute("COMMIT")
    connection.close()
    return totals.result()


def insert_postgresql(
    conninfo: str, bodies: Iterable[bytes], received_at: datetime
) -> dict[str, float]:
    statement = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN"
    totals = _Totals()
    with psycopg.connect(conninfo) as connection:
        for chunk in _chunks(bodies, CHUNK_BODIES):
            batches = build_rows(chunk, "postgresql", received_at)
            with totals.timing(batches):
                for rows in batches:
                    with connection.cursor() as cursor, cursor.copy(statement) as copy:
                        for row in rows:
                            copy.write_row(row)
                    connection.commit()
    return totals.result()


class _Totals:
    """Wall and CPU time of the timed parts only."""

    def __init__(self) -> None:
        self.rows = 0
        self.wall = 0.0
        self.cpu = 0.0

    @contextmanager
    def timing(self, batches: list[list[tuple[Any, ...]]]) -> Iterator[None]:
        cpu = time.process_time()
        started = time.perf_counter()
        yield
        self.wall += time.perf_counter() - started
        self.cpu += time.process_time() - cpu
        self.rows += sum(len(rows) for rows in batches)

    def result(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "wall_seconds": self.wall,
            "rows_per_second": self.rows / self.wall if self.wall else 0.0,
            "client_cpu_seconds": self.cpu,
        }
