"""The RabbitMQ consumer (AMQP 0-9-1, pika's blocking connection): a prefetch-bounded batch is
stored in one transaction and acknowledged with one ``basic.ack(multiple)`` AFTER the commit. A
batch the store cannot take is not acknowledged: after a backoff it is rejected with requeue, so
RabbitMQ delivers it again; a crash leaves it unacknowledged, so RabbitMQ delivers it again too.
The connection is made again with backoff when the broker goes away."""

from __future__ import annotations

import contextlib
from typing import Any

from collector.brokers.consume import (
    Backoff,
    Context,
    Message,
    log,
    log_batch,
    log_store_failure,
    store_batch,
)
from collector.brokers.messages import normalize_headers


def _message(properties: Any, body: bytes) -> Message:
    headers = properties.headers or {}
    return Message(body=body, headers=normalize_headers(headers, properties.content_type))


def _pause(connection: Any, context: Context, seconds: float) -> None:
    """Wait (serving the connection's heartbeats) until the time is up or the stop is asked."""
    remaining = seconds
    while remaining > 0 and not context.stop.is_set():
        step = min(remaining, 0.25)
        connection.sleep(step)
        remaining -= step


def _handle(
    connection: Any, channel: Any, context: Context, batch: list[Any], backoff: Backoff
) -> None:
    messages = [_message(properties, body) for _, properties, body in batch]
    last_tag = batch[-1][0].delivery_tag
    try:
        result = store_batch(context, messages)
    except Exception as error:  # the store: nothing written; the broker keeps the messages
        delay = backoff.next()
        log_store_failure(context, error, len(messages), delay)
        _pause(connection, context, delay)
        channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
        return
    channel.basic_ack(delivery_tag=last_tag, multiple=True)
    backoff.reset()
    log_batch(context, result)


def _consume(connection: Any, context: Context, backoff: Backoff) -> None:
    config = context.config
    channel = connection.channel()
    channel.basic_qos(prefetch_count=config.prefetch)
    batch: list[Any] = []
    try:
        for method, properties, body in channel.consume(
            config.queue, inactivity_timeout=config.batch_wait_seconds
        ):
            if method is not None:
                batch.append((method, properties, body))
                if len(batch) < config.prefetch:
                    continue
            if batch:
                _handle(connection, channel, context, batch, backoff)
                batch = []
            if context.stop.is_set():
                break
    finally:
        if channel.is_open:
            channel.cancel()  # messages delivered but not handled go back to the queue


def run(context: Context) -> None:
    """Consume until ``context.stop`` is set; the batch in hand is finished first."""
    import pika
    from pika import exceptions as amqp_errors

    parameters = pika.URLParameters(context.config.resolved_url())
    backoff = Backoff(context.config.backoff_seconds, context.config.max_backoff_seconds)
    where = f"rabbitmq {context.name} (queue {context.config.queue})"
    while not context.stop.is_set():
        try:
            connection = pika.BlockingConnection(parameters)
        except amqp_errors.AMQPError as error:
            delay = backoff.next()
            context.metrics.connections.labels(context.name, "failed").inc()
            log.warning("%s: cannot connect (%r); again in %.1f s", where, error, delay)
            context.stop.wait(delay)
            continue
        context.metrics.connections.labels(context.name, "connected").inc()
        log.info("%s: connected", where)
        try:
            _consume(connection, context, backoff)
        except amqp_errors.AMQPError as error:
            delay = backoff.next()
            log.warning("%s: connection lost (%r); again in %.1f s", where, error, delay)
            context.stop.wait(delay)
        finally:
            if connection.is_open:
                with contextlib.suppress(amqp_errors.AMQPError):  # already going away
                    connection.close()
    log.info("%s: stopped", where)
