"""The RabbitMQ consumer end to end (docs/brokers.md) on the real RabbitMQ on 127.0.0.1:5672:
``syncwatch consume`` as a subprocess is SIGKILLed mid-stream and started again; every message's
events are stored exactly once, the poison message is a dead letter with its reason, and the queue
is drained (every message acknowledged)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from core.db import Database
from core.migrate import upgrade
from tests.support.brokers import (
    Consumer,
    check_store,
    letters,
    messages,
    stored_keys,
    wait_until,
    write_config,
)
from tests.support.servers import pg_cluster

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
URL_ENV = "SYNCWATCH_TEST_BROKER_AMQP_URL"

pytestmark = pytest.mark.slow


@pytest.fixture
def channel() -> Iterator[Any]:
    """A channel on the local RabbitMQ. Fails (never skips) when the broker is down."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as error:  # pragma: no cover - broker down
        pytest.fail(f"RabbitMQ on 127.0.0.1:5672 is needed for the broker tests: {error!r}")
    channel = connection.channel()
    yield channel
    if connection.is_open:
        connection.close()


@pytest.fixture
def queue(channel: Any) -> Iterator[str]:
    name = f"syncwatch-test-consume-{uuid.uuid4().hex}"
    channel.queue_declare(queue=name, durable=True)
    yield name
    channel.queue_delete(queue=name)


def publish(channel: Any, queue: str, bodies: list[tuple[bytes, str | None]]) -> None:
    for body, content_type in bodies:
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(
                content_type=content_type, delivery_mode=pika.DeliveryMode.Persistent
            ),
        )


def backlog(channel: Any, queue: str) -> int:
    """Ready messages (once the consumer closed: also those it left unacknowledged)."""
    return int(channel.queue_declare(queue=queue, passive=True).method.message_count)


def test_a_killed_consumer_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
    database_url: str,
    database: Database,
    channel: Any,
    queue: str,
) -> None:
    out = messages(queue[-8:], 400)
    config = write_config(
        tmp_path / "syncwatch.yaml",
        "orders",
        {"kind": "rabbitmq", "url_env": URL_ENV, "queue": queue, "prefetch": 5},
    )
    consumer = Consumer(tmp_path, database_url, config, "orders")
    consumer.env[URL_ENV] = AMQP_URL
    first_half = len(out.bodies) // 4
    publish(channel, queue, out.bodies[:first_half])

    consumer.start()
    wait_until(lambda: len(stored_keys(database)) > 0, "the first events", consumer)
    publish(channel, queue, out.bodies[first_half:])
    wait_until(lambda: len(stored_keys(database)) > 40, "more events", consumer)
    consumer.kill()  # SIGKILL mid-stream: delivered, maybe stored, not acknowledged
    at_kill = len(set(stored_keys(database)))
    assert at_kill < len(out.keys), "the consumer was not killed mid-stream: publish more"

    consumer.start()
    wait_until(lambda: set(stored_keys(database)) == out.keys, "every event", consumer)
    wait_until(lambda: backlog(channel, queue) == 0, "the queue drained", consumer)
    assert consumer.stop() == 0, consumer.output()

    check_store(database, out, "rabbitmq:orders")
    assert backlog(channel, queue) == 0  # after the consumer closed: nothing left unacknowledged
    logged = consumer.full_output()
    assert "1 poison messages dead-lettered" in logged
    assert "guest:guest" not in logged  # the URL with its password is never logged


def test_a_poison_only_queue_is_dead_lettered_and_drained(
    tmp_path: Path, database_url: str, database: Database, channel: Any, queue: str
) -> None:
    """Poison messages are kept with their reason and acknowledged, not redelivered forever."""
    publish(
        channel,
        queue,
        [(b"\xff\xfe binary", "application/octet-stream"), (b"[1, 2", None), (b'"a string"', None)],
    )
    config = write_config(
        tmp_path / "syncwatch.yaml",
        "poison",
        {"kind": "rabbitmq", "url": "amqp://127.0.0.1:5672/%2F", "queue": queue},
    )
    consumer = Consumer(tmp_path, database_url, config, "poison")
    consumer.start()  # a URL without credentials: pika logs in as RabbitMQ's default guest
    wait_until(lambda: len(letters(database)) == 3, "three dead letters", consumer)
    wait_until(lambda: backlog(channel, queue) == 0, "the queue drained", consumer)
    assert consumer.stop() == 0
    reasons = sorted(letter.reason for letter in letters(database))
    assert any("content type" in r for r in reasons), reasons
    assert any("not valid JSON" in r for r in reasons), reasons
    assert any("event object or an array" in r for r in reasons), reasons
    assert stored_keys(database) == []


def test_messages_wait_in_the_queue_while_the_database_is_down(
    tmp_path: Path, channel: Any, queue: str
) -> None:
    """A batch the store cannot take is not acknowledged: RabbitMQ keeps it, and it is stored once
    the database is back (PostgreSQL, a cluster of the test's own that is stopped mid-run)."""
    with pg_cluster() as cluster:
        config = write_config(
            tmp_path / "syncwatch.yaml",
            "down",
            {
                "kind": "rabbitmq",
                "url_env": URL_ENV,
                "queue": queue,
                "prefetch": 10,
                "backoff_seconds": 0.2,
                "max_backoff_seconds": 1,
            },
        )
        consumer = Consumer(tmp_path, cluster.url, config, "down")
        consumer.env[URL_ENV] = AMQP_URL
        database = Database.from_url(cluster.url)
        upgrade(database)
        try:
            first = messages("up", 10)
            publish(channel, queue, first.bodies)
            consumer.start()
            wait_until(
                lambda: set(stored_keys(database)) == first.keys, "the first events", consumer
            )
            database.dispose()
            cluster.stop("fast")
            later = messages("down", 20)
            publish(channel, queue, later.bodies)
            wait_until(
                lambda: "not stored (StoreUnavailable" in consumer.full_output(),
                "a failed batch",
                consumer,
            )
            time.sleep(1)  # some retries while the database is down
            assert consumer.process is not None and consumer.process.poll() is None
            cluster.start()
            wait_until(
                lambda: set(stored_keys(database)) == first.keys | later.keys,
                "every event after the database came back",
                consumer,
            )
            wait_until(lambda: backlog(channel, queue) == 0, "the queue drained", consumer)
            assert consumer.stop() == 0, consumer.output()
            assert backlog(channel, queue) == 0
        finally:
            if consumer.process is not None:
                consumer.stop()
            database.dispose()
