"""The process's own Prometheus instruments (metrics.md): events received by this process, the
lag of each source, and probe cycle durations. They live on a registry handed in by the app (never
the global one), and their labels stay bounded: event types outside the vocabulary count as
``other``, and sources beyond the configured ones and the first :data:`MAX_SOURCES` seen as
``other``."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from core.vocabulary import EVENT_TYPES

MAX_SOURCES = 100
OTHER = "other"
#: received time minus event time: seconds to a week (the delayed-synchronisation window)
LAG_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)
CYCLE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Instruments:
    def __init__(self, registry: CollectorRegistry, *, sources: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._sources = set(sources)
        self._configured = len(self._sources)
        self.events_received = Counter(
            "syncwatch_events_received",
            "Events received by this process, by source, type and outcome",
            ["source", "type", "outcome"],
            registry=registry,
        )
        self.source_lag = Histogram(
            "syncwatch_source_lag_seconds",
            "Received time minus event time of the events accepted by this process",
            ["source"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.probe_cycle = Histogram(
            "syncwatch_probe_cycle_duration_seconds",
            "Durations of the probe cycles run by this process",
            buckets=CYCLE_BUCKETS,
            registry=registry,
        )

    def _source(self, source: object) -> str:
        if not isinstance(source, str) or not source:
            return "unknown"
        with self._lock:
            if source in self._sources:
                return source
            if len(self._sources) < self._configured + MAX_SOURCES:
                self._sources.add(source)
                return source
        return OTHER

    @staticmethod
    def _type(event_type: object) -> str:
        return event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else OTHER

    def received(
        self, source: object, event_type: object, outcome: str, lag_seconds: float | None = None
    ) -> None:
        """One event: ``accepted``, ``duplicate`` or ``rejected``; the lag of accepted ones."""
        label = self._source(source)
        self.events_received.labels(label, self._type(event_type), outcome).inc()
        if lag_seconds is not None:
            self.source_lag.labels(label).observe(max(lag_seconds, 0.0))

    def probe_cycle_finished(self, seconds: float) -> None:
        self.probe_cycle.observe(seconds)
