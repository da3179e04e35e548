"""Running the configured consumers: one thread each, until the stop event is set. A consumer that
fails unexpectedly is started again after a backoff, so one bad consumer never stops the others."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from collector.brokers import nats, rabbitmq
from collector.brokers.consume import Backoff, BrokerMetrics, Context, log, preset_mapper
from core.broker_settings import BrokerConsumer
from core.db import Database
from core.errors import ConfigError
from core.instruments import Instruments


def choose(consumers: dict[str, BrokerConsumer], names: Sequence[str]) -> dict[str, BrokerConsumer]:
    """The consumers named (all when none is); :class:`ConfigError` for an unknown name."""
    if not consumers:
        raise ConfigError("no broker consumers are configured: add a brokers: section")
    unknown = [name for name in names if name not in consumers]
    if unknown:
        raise ConfigError(
            f"no broker consumer named {', '.join(unknown)}; configured: {', '.join(consumers)}"
        )
    return {name: consumers[name] for name in names} if names else dict(consumers)


def contexts(
    consumers: dict[str, BrokerConsumer],
    database: Database,
    stop: threading.Event,
    registry: CollectorRegistry,
    clock: Callable[[], datetime],
    *,
    sources: Sequence[str] = (),
    preset_dirs: Sequence[Path] = (),
) -> list[Context]:
    """One context per consumer; the presets are loaded now, so a bad one stops start-up."""
    instruments = Instruments(registry, sources=sources)
    metrics = BrokerMetrics(registry)
    made = []
    for name, config in consumers.items():
        mapper = None
        if config.preset is not None:
            try:
                mapper = preset_mapper(config.preset, config.source, preset_dirs)
            except (ValueError, ImportError) as error:
                raise ConfigError(f"brokers.{name}.preset: {error}") from error
        made.append(Context(name, config, database, stop, instruments, metrics, clock, mapper))
    return made


def _keep_running(context: Context) -> None:
    run = rabbitmq.run if context.config.kind == "rabbitmq" else nats.run
    backoff = Backoff(context.config.backoff_seconds, context.config.max_backoff_seconds)
    while not context.stop.is_set():
        try:
            run(context)
        except Exception:
            delay = backoff.next()
            log.exception(
                "%s %s failed; started again in %.1f s", context.config.kind, context.name, delay
            )
            context.stop.wait(delay)


def start(contexts: Sequence[Context]) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_keep_running, args=(c,), name=f"broker-{c.name}", daemon=True)
        for c in contexts
    ]
    for thread in threads:
        thread.start()
    return threads
