"""What every broker consumer does with a batch of messages: decode each, store them all through
the one ingest path in one transaction, and tell the caller whether it may acknowledge them."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from collector import mapping
from collector.brokers.messages import Mapper, Poison, decode
from collector.ingest import Part, count, ingest_parts
from core.broker_settings import BrokerConsumer
from core.db import Database
from core.deadletters import NewDeadLetter
from core.instruments import Instruments

log = logging.getLogger("syncwatch.brokers")


@dataclass(frozen=True)
class Message:
    """One broker message, broker-neutral: its body and normalized headers."""

    body: bytes
    headers: Mapping[str, str]


@dataclass
class BatchResult:
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    #: events of readable messages that were invalid (dead-lettered one by one)
    rejected: int = 0
    #: whole messages that could not be read as events (dead-lettered whole)
    poison: int = 0
    reasons: list[str] = field(default_factory=list)


class Backoff:
    """Waits after failures: ``first``, doubled each time up to ``maximum``; reset on success."""

    def __init__(self, first: float, maximum: float) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first


class BrokerMetrics:
    """Messages handled by the consumers of this process, by consumer and outcome (``stored``,
    ``poison``, ``requeued``), and the (re)connections."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "syncwatch_broker_messages",
            "Broker messages handled by this process, by consumer and outcome",
            ["consumer", "outcome"],
            registry=registry,
        )
        self.connections = Counter(
            "syncwatch_broker_connections",
            "Connections made by this process's broker consumers, by consumer and outcome",
            ["consumer", "outcome"],
            registry=registry,
        )


@dataclass
class Context:
    """What a running consumer needs: its settings, the store, the stop signal, the metrics."""

    name: str
    config: BrokerConsumer
    database: Database
    stop: threading.Event
    instruments: Instruments
    metrics: BrokerMetrics
    clock: Callable[[], datetime]
    mapper: Mapper | None = None

    @property
    def channel(self) -> str:
        """The dead letters' channel: ``rabbitmq:NAME`` or ``nats:NAME``."""
        return f"{self.config.kind}:{self.name}"[:50]


def preset_mapper(preset_name: str, source: str | None, preset_dirs: Sequence[Path] = ()) -> Mapper:
    """A mapper from the mapping engine's preset (collector.mapping, docs/mapping.md), with
    ``source`` as its default source when given; raises ValueError naming the preset when it
    cannot be loaded."""
    try:
        preset = mapping.load_preset(preset_name, preset_dirs)
    except (mapping.PresetError, OSError) as error:
        raise ValueError(f"the mapping preset {preset_name!r} cannot be loaded: {error}") from error
    if source is not None:
        preset = dataclasses.replace(preset, source=source)

    def mapper(payload: Any, headers: Mapping[str, str]) -> list[Any]:
        try:
            return list(mapping.map_payload(preset, payload, headers=headers))
        except mapping.MappingError as error:
            raise Poison(error.reason) from error

    return mapper


def store_batch(context: Context, messages: Sequence[Message]) -> BatchResult:
    """Decode and store the batch in one transaction. When it returns, every message is durably
    stored (its events, or its dead letters) and may be acknowledged; when it raises (the store is
    unavailable), nothing was written and none may be."""
    config = context.config
    parts: list[Part] = []
    unreadable: list[NewDeadLetter] = []
    result = BatchResult(messages=len(messages))
    for message in messages:
        try:
            parts.append(
                decode(
                    message.body,
                    message.headers,
                    max_events=config.max_events,
                    mapper=context.mapper,
                    source=config.source,
                )
            )
        except Poison as poison:
            result.poison += 1
            result.reasons.append(poison.reason)
            unreadable.append(
                NewDeadLetter(
                    reason=poison.reason,
                    raw=message.body,
                    channel=context.channel,
                    content_type=message.headers.get("content-type"),
                    source=config.source,
                )
            )
    now = context.clock()
    outcome = ingest_parts(
        context.database, parts, unreadable=unreadable, channel=context.channel, now=now
    )
    result.accepted, result.duplicates = outcome.accepted, outcome.duplicates
    result.rejected = len(outcome.rejected)
    result.reasons.extend(r.error for r in outcome.rejected)
    count(outcome, context.instruments, now)
    for _ in unreadable:
        context.instruments.received(config.source, None, "rejected")
    context.metrics.messages.labels(context.name, "stored").inc(len(messages) - result.poison)
    context.metrics.messages.labels(context.name, "poison").inc(result.poison)
    return result


def log_batch(context: Context, result: BatchResult) -> None:
    level = logging.WARNING if result.poison or result.rejected else logging.DEBUG
    log.log(
        level,
        "%s %s: %d messages stored and acknowledged: %d events accepted, %d duplicates, "
        "%d rejected, %d poison messages dead-lettered%s",
        context.config.kind,
        context.name,
        result.messages,
        result.accepted,
        result.duplicates,
        result.rejected,
        result.poison,
        f" (first reason: {result.reasons[0][:300]})" if result.reasons else "",
    )


def log_store_failure(context: Context, error: Exception, messages: int, delay: float) -> None:
    context.metrics.messages.labels(context.name, "requeued").inc(messages)
    log.warning(
        "%s %s: %d messages not stored (%s: %s); not acknowledged, tried again in %.1f s",
        context.config.kind,
        context.name,
        messages,
        type(error).__name__,
        str(error)[:300],
        delay,
    )
