"""The bulk insert paths of ``core.eventstore`` (multi-row INSERTs on SQLite, COPY through a
staging table on PostgreSQL) store exactly what the general SQLAlchemy statement stores, report the
same outcome, and turn a connection lost in the middle of a COPY into a 503 like any other
statement."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core import eventstore, jsoncodec
from core.db import Database
from core.errors import StoreUnavailable
from core.events import CanonicalEvent, validate_event
from core.migrate import upgrade
from tests.support import databases
from tests.support.builders import make_event

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _events() -> list[CanonicalEvent]:
    """Events of several shapes: money as strings and as JSON numbers, a big integer, text beyond
    ASCII, extensions, a subject, a traceparent, an event of an unknown type."""
    raw: list[dict[str, Any]] = [
        make_event("contract.signed"),
        make_event("project.created", subject="PRJ-1 created", tenant="acme"),
        make_event(
            "milestone.completed",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        make_event("integration.failed", datacontenttype="application/json"),
        make_event("connector.heartbeat", data={"note": "Zürich — 中文", "n": 2**63}),
    ]
    raw.append(
        make_event(
            "invoice.posted",
            data={"invoice_id": "INV-1", "amount": 1250.5, "big": 10**30, "currency": "EUR"},
        )
    )
    # Through the JSON codec, as the API receives them: 1250.5 becomes Decimal("1250.5").
    return [validate_event(jsoncodec.loads(json.dumps(event))) for event in raw]


def _batches(events: list[CanonicalEvent]) -> list[list[CanonicalEvent]]:
    """New events, a repeat within a batch, repeats of stored events, a batch of repeats only."""
    first, second, third = events[:3], events[3:], events
    return [first, [*second, second[0]], third, [events[1], events[1]]]


def _store_all(database: Database, batches: list[list[CanonicalEvent]]) -> list[Any]:
    outcomes = []
    for number, batch in enumerate(batches):
        with database.write() as connection:
            outcome = eventstore.store_events(
                connection, batch, received_at=T0 + timedelta(seconds=number, microseconds=7)
            )
        outcomes.append((outcome.stored, outcome.duplicates))
    return outcomes


def _rows(database: Database) -> list[Any]:
    with database.read() as connection:
        return [
            tuple(row) for row in connection.exec_driver_sql("SELECT * FROM events ORDER BY seq")
        ]


@pytest.fixture
def second_database(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """Another empty store of the same kind as ``database``."""
    if database_url.startswith("sqlite"):
        other = Database.from_url(f"sqlite:///{tmp_path / 'general.db'}")
        upgrade(other)
        yield other
        other.dispose()
    else:
        url = databases.create_pg_database("sw_test_bulk")
        other = Database.from_url(url)
        upgrade(other)
        yield other
        other.dispose()
        databases.drop_pg_database(url)


@pytest.mark.parametrize("rows_per_statement", [1000, 2])
def test_bulk_path_stores_what_the_general_statement_stores(
    database: Database,
    second_database: Database,
    monkeypatch: pytest.MonkeyPatch,
    rows_per_statement: int,
) -> None:
    monkeypatch.setattr(eventstore, "_SQLITE_ROWS_PER_STATEMENT", rows_per_statement)
    events = _events()
    bulk = _store_all(database, _batches(events))
    monkeypatch.setattr(eventstore, "_insert_sqlite", lambda *args: None)
    monkeypatch.setattr(eventstore, "_insert_staged_postgresql", lambda *args: None)
    general = _store_all(second_database, _batches(events))
    assert bulk == general
    assert bulk[0] == ([0, 1, 2], [])
    assert bulk[1] == ([0, 1, 2], [3])
    assert bulk[2] == ([], [0, 1, 2, 3, 4, 5])
    assert bulk[3] == ([], [0, 1])
    stored = _rows(database)
    assert len(stored) == len(events)
    assert stored == _rows(second_database)
    # seq follows the order of the batch
    assert [row[2] for row in stored] == [event.id for event in events]


def test_a_batch_with_some_stored_events_stores_only_the_new_ones(database: Database) -> None:
    events = _events()
    with database.write() as connection:
        eventstore.store_events(connection, [events[1], events[4]], received_at=T0)
    with database.write() as connection:
        outcome = eventstore.store_events(connection, events, received_at=T0)
    assert outcome.stored == [0, 2, 3, 5]
    assert outcome.duplicates == [1, 4]
    assert [row[2] for row in _rows(database)] == [events[i].id for i in (1, 4, 0, 2, 3, 5)]


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[Database]:
    database = Database.from_url(pg_url)
    databases.empty_pg(database)
    yield database
    database.dispose()


def test_a_connection_lost_during_the_copy_is_a_503_and_the_pool_recovers(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = pg_database
    events = _events()
    real_values = eventstore._values
    name = database.engine.url.database

    def kill_then_values(*args: Any) -> Any:
        # Runs after the staging table statement, right before the COPY.
        admin_url = databases.PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        return real_values(*args)

    monkeypatch.setattr(eventstore, "_values", kill_then_values)
    with pytest.raises(StoreUnavailable), database.write() as connection:
        eventstore.store_events(connection, events[:3], received_at=T0)
    monkeypatch.setattr(eventstore, "_values", real_values)
    with database.write() as connection:
        outcome = eventstore.store_events(connection, events, received_at=T0)
    assert outcome.stored == list(range(len(events)))
