"""The NATS JetStream consumer end to end (docs/brokers.md) on the real NATS server on
127.0.0.1:4222: ``syncwatch consume`` as a subprocess is SIGKILLed mid-stream and started again;
every message's events are stored exactly once, the poison message is a dead letter with its
reason, and the durable consumer has nothing pending or unacknowledged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import StreamConfig

from core.db import Database
from tests.support.brokers import (
    Consumer,
    check_store,
    letters,
    messages,
    stored_keys,
    wait_until,
    write_config,
)
from tests.support.servers import free_port

NATS_URL = "nats://127.0.0.1:4222"

pytestmark = pytest.mark.slow


async def _connect() -> nats.NATS:
    try:
        return await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
    except Exception as error:  # pragma: no cover - server down
        pytest.fail(
            f"NATS with JetStream on 127.0.0.1:4222 is needed for the broker tests: {error!r}"
        )


async def _add_stream(name: str, subject: str) -> None:
    nc = await _connect()
    await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{subject}.>"]))
    await nc.close()


async def _delete_stream(name: str) -> None:
    nc = await _connect()
    await nc.jetstream().delete_stream(name)
    await nc.close()


async def _publish(subject: str, bodies: list[tuple[bytes, str | None]]) -> None:
    nc = await _connect()
    js = nc.jetstream()
    for number, (body, content_type) in enumerate(bodies):
        headers = {"content-type": content_type} if content_type else None
        await js.publish(f"{subject}.m{number % 3}", body, headers=headers)
    await nc.close()


async def _pending(stream: str, durable: str) -> tuple[int, int]:
    """Messages not yet delivered, and delivered but not acknowledged."""
    nc = await _connect()
    info = await nc.jetstream().consumer_info(stream, durable)
    await nc.close()
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


def publish(subject: str, bodies: list[tuple[bytes, str | None]]) -> None:
    asyncio.run(_publish(subject, bodies))


def pending(stream: str, durable: str) -> tuple[int, int]:
    return asyncio.run(_pending(stream, durable))


@pytest.fixture
def stream() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:12]
    name, subject = f"SYNCWATCH_TEST_{tag}", f"syncwatch.test.{tag}"
    asyncio.run(_add_stream(name, subject))
    yield name, subject
    asyncio.run(_delete_stream(name))


def test_a_killed_consumer_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, database_url: str, database: Database, stream: tuple[str, str]
) -> None:
    name, subject = stream
    out = messages(name[-8:], 400)
    config = write_config(
        tmp_path / "syncwatch.yaml",
        "orders",
        {
            "kind": "nats",
            "url": NATS_URL,
            "stream": name,
            "subject": f"{subject}.>",
            "durable": "syncwatch-orders",
            "prefetch": 5,
            "ack_wait_seconds": 2,
        },
    )
    consumer = Consumer(tmp_path, database_url, config, "orders")
    first_quarter = len(out.bodies) // 4
    publish(subject, out.bodies[:first_quarter])

    consumer.start()
    wait_until(lambda: len(stored_keys(database)) > 0, "the first events", consumer)
    publish(subject, out.bodies[first_quarter:])
    wait_until(lambda: len(stored_keys(database)) > 40, "more events", consumer)
    consumer.kill()  # SIGKILL mid-stream: delivered, maybe stored, not acknowledged
    at_kill = len(set(stored_keys(database)))
    assert at_kill < len(out.keys), "the consumer was not killed mid-stream: publish more"

    consumer.start()  # the unacknowledged ones come again after ack_wait
    wait_until(lambda: set(stored_keys(database)) == out.keys, "every event", consumer)
    wait_until(lambda: pending(name, "syncwatch-orders") == (0, 0), "all acknowledged", consumer)
    assert consumer.stop() == 0, consumer.output()

    check_store(database, out, "nats:orders")
    assert pending(name, "syncwatch-orders") == (0, 0)
    assert "1 poison messages dead-lettered" in consumer.full_output()


def test_poison_and_binary_mode_messages(
    tmp_path: Path, database_url: str, database: Database, stream: tuple[str, str]
) -> None:
    """A poison message is kept with its reason and acknowledged, not redelivered forever; a
    CloudEvents binary-mode message (attributes in ce-* headers) is an event."""
    name, subject = stream

    async def _send() -> None:
        nc = await _connect()
        js = nc.jetstream()
        await js.publish(f"{subject}.a", b"\x00 not json")
        await js.publish(
            f"{subject}.b",
            b'{"step": "project.created", "execution_id": "EX-9"}',
            headers={
                "ce-specversion": "1.0",
                "ce-id": "bin-1",
                "ce-source": "middleware/mulesoft",
                "ce-type": "integration.failed",
                "ce-time": "2026-11-20T10:00:00Z",
                "ce-correlationid": "Q2C-BIN",
                "content-type": "application/json",
            },
        )
        await nc.close()

    asyncio.run(_send())
    config = write_config(
        tmp_path / "syncwatch.yaml",
        "mixed",
        {"kind": "nats", "stream": name, "subject": f"{subject}.>", "durable": "mixed"},
    )
    consumer = Consumer(tmp_path, database_url, config, "mixed")
    port = free_port()
    consumer.start("--metrics-port", str(port))  # no url: nats://localhost:4222
    wait_until(lambda: len(letters(database)) == 1, "the dead letter", consumer)
    wait_until(lambda: len(stored_keys(database)) == 1, "the binary-mode event", consumer)
    wait_until(lambda: pending(name, "mixed") == (0, 0), "all acknowledged", consumer)
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'syncwatch_broker_messages_total{consumer="mixed",outcome="poison"} 1.0' in metrics
    assert 'syncwatch_broker_messages_total{consumer="mixed",outcome="stored"} 1.0' in metrics
    assert (
        'syncwatch_events_received_total{outcome="accepted",source="middleware/mulesoft",'
        'type="integration.failed"} 1.0'
    ) in metrics
    assert consumer.stop() == 0
    assert stored_keys(database) == [("middleware/mulesoft", "bin-1")]
    [letter] = letters(database)
    assert "not valid JSON" in letter.reason
    assert letter.channel == "nats:mixed"
