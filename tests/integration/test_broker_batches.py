"""One consumer batch (collector.brokers.consume.store_batch) on SQLite and PostgreSQL: every
message's events and dead letters in one transaction, duplicates across the messages counted, and
nothing written when the store is unavailable (so nothing may be acknowledged)."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from collector.brokers.consume import BrokerMetrics, Context, Message, store_batch
from collector.brokers.messages import normalize_headers
from core import jsoncodec
from core.broker_settings import BrokerConsumer
from core.db import Database
from core.errors import StoreUnavailable
from core.instruments import Instruments
from core.web import utc_now
from tests.support.brokers import letters, stored_keys
from tests.support.builders import make_event
from tests.support.servers import free_port


def _context(database: Database) -> Context:
    registry = CollectorRegistry()
    return Context(
        name="orders",
        config=BrokerConsumer(kind="rabbitmq", queue="q", source="erp/netsuite"),
        database=database,
        stop=threading.Event(),
        instruments=Instruments(registry),
        metrics=BrokerMetrics(registry),
        clock=utc_now,
    )


def _message(body: object, content_type: str | None = None) -> Message:
    raw = body if isinstance(body, bytes) else jsoncodec.dumps(body)
    return Message(raw, normalize_headers({}, content_type))


def test_a_batch_is_stored_in_one_go(database: Database) -> None:
    first = make_event(id="e-1")
    batch = [
        _message(first),
        _message([make_event(id="e-2"), first]),  # e-1 again, in another message of the batch
        _message(b"not json", "application/json"),
        _message([make_event(id="e-3", drop=["source"]), make_event(id="bad", drop=["type"])]),
    ]
    result = store_batch(_context(database), batch)
    assert (result.messages, result.accepted, result.duplicates) == (4, 3, 1)
    assert (result.rejected, result.poison) == (1, 1)
    assert sorted(stored_keys(database)) == [
        ("clm/ironclad", "e-1"),
        ("clm/ironclad", "e-2"),
        ("erp/netsuite", "e-3"),  # the consumer's source filled in
    ]
    kept = sorted(letters(database), key=lambda letter: letter.id)
    assert [letter.channel for letter in kept] == ["rabbitmq:orders"] * 2
    assert kept[0].raw == b"not json"
    assert "not valid JSON" in kept[0].reason
    assert kept[1].event_id == "bad"
    assert "type" in kept[1].reason

    again = store_batch(_context(database), batch[:2])  # redelivered after a lost ack
    assert (again.accepted, again.duplicates) == (0, 3)
    assert len(stored_keys(database)) == 3


def test_nothing_is_written_when_the_store_is_unavailable() -> None:
    down = Database.from_url(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(StoreUnavailable):
            store_batch(_context(down), [_message(make_event()), _message(b"poison")])
    finally:
        down.dispose()
