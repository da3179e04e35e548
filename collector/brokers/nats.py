"""The NATS JetStream consumer: a durable pull consumer (explicit acks, ``max_ack_pending`` =
prefetch) whose fetched batch is stored in one transaction and acknowledged AFTER the commit. A
batch the store cannot take is ``nak``-ed with a growing delay, so JetStream delivers it again
later; a crash leaves it unacknowledged, so JetStream delivers it again after ``ack_wait``. The
client reconnects by itself when the server goes away; a failed first connection is tried again
with backoff."""

from __future__ import annotations

import asyncio
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


def _message(msg: Any) -> Message:
    return Message(body=bytes(msg.data), headers=normalize_headers(msg.headers or {}, None))


async def _handle(nc: Any, context: Context, msgs: list[Any], backoff: Backoff) -> None:
    messages = [_message(msg) for msg in msgs]
    try:
        result = await asyncio.to_thread(store_batch, context, messages)
    except Exception as error:  # the store: nothing written; JetStream keeps the messages
        delay = backoff.next()
        log_store_failure(context, error, len(messages), delay)
        for msg in msgs:
            await msg.nak(delay=delay)
        await nc.flush()
        return
    for msg in msgs:
        await msg.ack()
    await nc.flush()  # the acks have reached the server
    backoff.reset()
    log_batch(context, result)


async def _consume(nc: Any, context: Context, backoff: Backoff) -> None:
    from nats import errors as nats_errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = context.config
    assert config.subject is not None
    js = nc.jetstream()
    subscription = await js.pull_subscribe(
        config.subject,
        durable=config.durable,
        stream=config.stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=config.ack_wait_seconds,
            max_ack_pending=config.prefetch,
        ),
    )
    log.info("nats %s: consuming %s from stream %s", context.name, config.durable, config.stream)
    wait = max(config.batch_wait_seconds, 0.1)
    try:
        while not context.stop.is_set():
            try:
                msgs = await subscription.fetch(config.prefetch, timeout=wait)
            except nats_errors.TimeoutError:
                continue
            if msgs:
                await _handle(nc, context, msgs, backoff)
    finally:
        await subscription.unsubscribe()


async def _run(context: Context) -> None:
    import nats
    from nats import errors as nats_errors
    from nats.js import errors as js_errors

    config = context.config
    backoff = Backoff(config.backoff_seconds, config.max_backoff_seconds)
    where = f"nats {context.name} (stream {config.stream}, consumer {config.durable})"

    async def on_error(error: Exception) -> None:
        log.warning("%s: %r", where, error)

    async def on_disconnected() -> None:
        log.warning("%s: disconnected; reconnecting", where)

    async def on_reconnected() -> None:
        context.metrics.connections.labels(context.name, "reconnected").inc()
        log.info("%s: reconnected", where)

    while not context.stop.is_set():
        try:
            nc = await nats.connect(
                config.resolved_url(),
                name=f"syncwatch-{context.name}",
                connect_timeout=5,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=min(config.backoff_seconds, 2.0),
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        except (nats_errors.Error, OSError, TimeoutError) as error:
            delay = backoff.next()
            context.metrics.connections.labels(context.name, "failed").inc()
            log.warning("%s: cannot connect (%r); again in %.1f s", where, error, delay)
            await asyncio.to_thread(context.stop.wait, delay)
            continue
        context.metrics.connections.labels(context.name, "connected").inc()
        try:
            await _consume(nc, context, backoff)
        except (nats_errors.Error, js_errors.Error, OSError, TimeoutError) as error:
            delay = backoff.next()
            log.warning("%s: %r; again in %.1f s", where, error, delay)
            await asyncio.to_thread(context.stop.wait, delay)
        finally:
            try:
                await nc.close()
            except (nats_errors.Error, OSError):  # pragma: no cover - already going away
                log.debug("%s: close failed", where)
    log.info("%s: stopped", where)


def run(context: Context) -> None:
    """Consume until ``context.stop`` is set; the batch in hand is finished first."""
    asyncio.run(_run(context))
