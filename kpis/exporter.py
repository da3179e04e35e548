"""``GET /metrics`` (metrics.md) through prometheus-client: a custom collector that reads the state
metrics out of the store at each scrape, with the same KPI code as ``/v1/kpis`` (so every replica
says the same, and a restart loses nothing), plus the process's own instruments. A scrape reads
the open flows, the open findings and a few small tables; never the history: the counters and the
duration histogram are running totals kept by the probe runner (probes.outcomes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from core import deadletters, replaystore
from core.apikeys import Principal
from core.db import Database
from core.errors import ConfigError
from core.instruments import MAX_SOURCES
from core.roles import READERS
from core.settings import SloSettings, SourceSettings
from core.tables import events, metric_totals, probe_state
from core.web import Clock, require_if
from kpis import compute, inputs
from kpis.compute import OPERATOR_KINDS, KpiQuery, QueueStats
from probes.flowtypes import QUEUES, FlowType
from probes.outcomes import (
    DEADLINE_METRIC,
    DURATION_METRIC,
    INF_LABEL,
    SUM_LABEL,
    bucket_label,
    duration_buckets,
)
from probes.runner import STATE_NAME

DEADLINE_OUTCOMES = ("met", "missed")
FINDING_KINDS = ("stuck", *OPERATOR_KINDS)
#: The queue of the stuck stages that wait on an integration failure (automatic replays).
INTEGRATION_QUEUE = "integration_oncall"
#: OpenMetrics caps an exemplar's label names and values at 128 characters in all.
EXEMPLAR_RUNES = 128


@dataclass(frozen=True)
class StoreState:
    now: datetime
    open: dict[str, int]  # by flow type
    stuck: dict[tuple[str, str], int]  # (flow type, stage)
    stuck_on_integration: dict[tuple[str, str], int]  # (flow type, stage), integration_oncall
    revenue: dict[str, Decimal]  # by currency
    queues: list[QueueStats]  # open findings by queue and kind
    uncorrelated: int
    dead_letters: dict[str, int]
    replays: dict[str, int]  # replaystore.totals: never decreasing
    totals: list[Any]  # metric_totals rows
    last_cycle_at: datetime | None
    probe_lag: int
    source_last_event: dict[str, datetime]


def read_state(
    connection: Connection,
    flow_types: Sequence[FlowType],
    now: datetime,
    sources: Sequence[str] = (),
) -> StoreState:
    """The state metrics as of ``now``, by the KPI code of /v1/kpis (kpis.inputs); ``sources``
    are the configured sources, whose newest event is read even beyond MAX_SOURCES."""
    query = KpiQuery(as_of=now, start=now, further=False)
    probe = connection.execute(
        sa.select(probe_state.c.last_seq, probe_state.c.last_cycle_at).where(
            probe_state.c.name == STATE_NAME
        )
    ).first()
    last_seq = probe.last_seq if probe is not None else 0
    stuck, stuck_findings = inputs.load_stuck(connection, flow_types, query)
    lag = connection.execute(
        sa.select(sa.func.count()).select_from(events).where(events.c.seq > last_seq)
    ).scalar_one()
    return StoreState(
        now=now,
        open={t: n for (_, t), n in inputs.load_open(connection, flow_types, query).items()},
        stuck={(t, stage): n for (_, t, stage), n in stuck.items()},
        stuck_on_integration=inputs.load_stuck_in_queue(
            connection, flow_types, query, INTEGRATION_QUEUE
        ),
        revenue={c: v for (_, c), v in inputs.load_revenue(connection, flow_types, query).items()},
        queues=[
            *stuck_findings,
            *inputs.load_open_findings(connection, query),
        ],
        uncorrelated=inputs.uncorrelated_events(connection, now),
        dead_letters=deadletters.count_pending_by_reason(connection),
        replays=replaystore.totals(connection),
        totals=list(connection.execute(sa.select(metric_totals))),
        last_cycle_at=probe.last_cycle_at if probe is not None else None,
        probe_lag=int(lag),
        source_last_event=source_last_events(connection, sources),
    )


#: The distinct sources by a loose index scan over ix_events_source_time: one index probe per
#: source, not a scan of every event (SQLite and PostgreSQL both walk it this way).
_SOURCES = sa.text(
    """
    WITH RECURSIVE seen(source) AS (
        SELECT MIN(source) FROM events
        UNION ALL
        SELECT (SELECT MIN(source) FROM events WHERE source > seen.source)
        FROM seen WHERE seen.source IS NOT NULL
    )
    SELECT source FROM seen WHERE source IS NOT NULL LIMIT :limit
    """
)


def source_last_events(
    connection: Connection, configured: Sequence[str] = ()
) -> dict[str, datetime]:
    """The event time of the newest event of each source (at most MAX_SOURCES sources found by
    the scan, plus the configured sources that sent any event)."""
    sources = [row.source for row in connection.execute(_SOURCES, {"limit": MAX_SOURCES})]
    sources += [source for source in configured if source not in sources]
    result: dict[str, datetime] = {}
    for source in sources:
        newest = connection.execute(
            sa.select(sa.func.max(events.c.time)).where(events.c.source == source)
        ).scalar()
        if newest is not None:
            result[source] = newest
    return result


def _exemplar(blob: Any) -> Exemplar | None:
    if not isinstance(blob, dict) or "trace_id" not in blob:
        return None
    labels = {"trace_id": str(blob["trace_id"])}
    correlation = blob.get("correlation_id")
    if isinstance(correlation, str):
        size = sum(len(k) + len(v) for k, v in labels.items()) + len("correlation_id")
        if size + len(correlation) <= EXEMPLAR_RUNES:
            labels["correlation_id"] = correlation
    return Exemplar(labels, float(blob["value"]), float(blob["timestamp"]))


def families(
    state: StoreState,
    flow_types: Sequence[FlowType],
    *,
    exemplars: bool,
    slo: SloSettings | None = None,
    source_settings: Mapping[str, SourceSettings] | None = None,
) -> Iterator[Metric]:
    """The store's metrics families of metrics.md, from one snapshot, and the settings that the
    shipped alert rules compare them with (``slo``, the sources' ``silent_after``)."""
    names = [flow_type.name for flow_type in flow_types]
    opened = GaugeMetricFamily(
        "syncwatch_flows_open", "Open flows now (stuck ones included)", labels=["flow_type"]
    )
    stuck = GaugeMetricFamily(
        "syncwatch_flows_stuck", "Stuck flows now, by stuck stage", labels=["flow_type", "stage"]
    )
    section = compute.flow_section(flow_types, {}, {}, state.open, state.stuck)
    for flow_type in flow_types:
        figures = section[flow_type.name]
        opened.add_metric([flow_type.name], figures["open"])
        for stage, count in figures["stuck_by_stage"].items():
            stuck.add_metric([flow_type.name, stage], count)
    yield opened
    yield stuck
    on_integration = GaugeMetricFamily(
        "syncwatch_flows_stuck_on_integration_failure",
        "Stuck flows now whose stuck stage waits in the integration_oncall queue",
        labels=["flow_type", "stage"],
    )
    for flow_type in flow_types:
        for stage in flow_type.stages:
            count = state.stuck_on_integration.get((flow_type.name, stage.type), 0)
            on_integration.add_metric([flow_type.name, stage.type], count)
    yield on_integration

    risk = GaugeMetricFamily(
        "syncwatch_revenue_at_risk",
        "Revenue at risk now: stuck onboarding contract values and stuck milestone amounts",
        labels=["currency"],
    )
    for currency, amount in compute.money(state.revenue).items():
        risk.add_metric([currency], float(amount))
    yield risk

    findings_open = GaugeMetricFamily(
        "syncwatch_findings_open", "Open findings now, by queue and kind", labels=["queue", "kind"]
    )
    oldest = GaugeMetricFamily(
        "syncwatch_finding_oldest_opened_timestamp_seconds",
        "opened_at of the oldest open finding of the queue (absent when the queue is empty)",
        labels=["queue"],
    )
    counts = {(queue, kind): 0 for queue in QUEUES for kind in FINDING_KINDS}
    first: dict[str, datetime] = {}
    for part in state.queues:
        counts[(part.queue, part.kind)] = counts.get((part.queue, part.kind), 0) + part.open
        if part.oldest is not None and (part.queue not in first or part.oldest < first[part.queue]):
            first[part.queue] = part.oldest
    for (queue, kind), count in sorted(counts.items()):
        findings_open.add_metric([queue, kind], count)
    for queue, instant in sorted(first.items()):
        oldest.add_metric([queue], instant.timestamp())
    yield findings_open
    yield oldest

    sources = GaugeMetricFamily(
        "syncwatch_source_last_event_timestamp_seconds",
        "Event time of the newest event from the source",
        labels=["source"],
    )
    for source, newest in sorted(state.source_last_event.items()):
        sources.add_metric([source], newest.timestamp())
    yield sources

    yield GaugeMetricFamily(
        "syncwatch_uncorrelated_events",
        "Events whose correlation ID the probes could not resolve",
        value=state.uncorrelated,
    )
    letters = GaugeMetricFamily(
        "syncwatch_dead_letters", "Dead letters not yet retried successfully", labels=["reason"]
    )
    for reason, count in sorted(state.dead_letters.items()):
        letters.add_metric([reason], count)
    yield letters

    yield from _totals(state, flow_types, names, exemplars=exemplars)
    yield from _settings(names, slo or SloSettings(), source_settings or {})

    replays = CounterMetricFamily("syncwatch_replays", "Replays by outcome", labels=["outcome"])
    for outcome in replaystore.OUTCOMES:
        replays.add_metric([outcome], state.replays.get(outcome, 0))
    yield replays

    last = GaugeMetricFamily(
        "syncwatch_probe_last_success_timestamp_seconds",
        "End of the last successful probe cycle",
    )
    if state.last_cycle_at is not None:
        last.add_metric([], state.last_cycle_at.timestamp())
    yield last
    yield GaugeMetricFamily(
        "syncwatch_probe_lag_events",
        "Ingested events the probes have not processed yet",
        value=state.probe_lag,
    )


def _settings(
    names: Sequence[str], slo: SloSettings, sources: Mapping[str, SourceSettings]
) -> Iterator[Metric]:
    """The configured objectives and thresholds (docs/alerts.md): the same on every replica
    that runs the same configuration."""
    objective = GaugeMetricFamily(
        "syncwatch_slo_objective",
        "Share of decided flows that must meet their deadline over 30 days (configuration)",
        labels=["flow_type"],
    )
    for name in names:
        objective.add_metric([name], slo.objectives.get(name, slo.default_objective))
    yield objective
    yield GaugeMetricFamily(
        "syncwatch_slo_min_decided_flows",
        "Decided flows a burn-rate alert's long window needs (configuration)",
        value=slo.min_decided_flows,
    )
    silent = GaugeMetricFamily(
        "syncwatch_source_silent_after_seconds",
        "No event for longer than this makes the source silent (configuration)",
        labels=["source"],
    )
    for source, settings in sorted(sources.items()):
        if settings.silent_after is not None:
            silent.add_metric([source], settings.silent_after.total_seconds())
    yield silent


def _totals(
    state: StoreState, flow_types: Sequence[FlowType], names: list[str], *, exemplars: bool
) -> Iterator[Metric]:
    deadline = CounterMetricFamily(
        "syncwatch_flows_deadline",
        "Flows whose deadline outcome was decided, counted once when decided",
        labels=["flow_type", "outcome"],
    )
    decided = {
        (row.flow_type, row.label): row.value
        for row in state.totals
        if row.metric == DEADLINE_METRIC
    }
    for name in names:
        for outcome in DEADLINE_OUTCOMES:
            deadline.add_metric([name, outcome], decided.get((name, outcome), 0))
    yield deadline

    bounds = duration_buckets(flow_types)
    labels = [bucket_label(bound) for bound in bounds] + [INF_LABEL]
    histogram = HistogramMetricFamily(
        "syncwatch_flow_duration_seconds",
        "Durations of completed flows (completed_at - T0)",
        labels=["flow_type"],
    )
    for name in names:
        rows = {
            row.label: row
            for row in state.totals
            if row.metric == DURATION_METRIC and row.flow_type == name
        }
        buckets: list[Any] = []
        cumulative = 0.0
        for label in labels:
            row = rows.get(label)
            cumulative += row.value if row is not None else 0
            exemplar = _exemplar(row.exemplar) if exemplars and row is not None else None
            le = "+Inf" if label == INF_LABEL else label
            buckets.append((le, cumulative, exemplar) if exemplar else (le, cumulative))
        total = rows.get(SUM_LABEL)
        histogram.add_metric([name], buckets, total.value if total is not None else 0.0)
    yield histogram


class StoreCollector(Collector):
    """Reads the store at each scrape (one snapshot transaction)."""

    def __init__(
        self,
        database: Database,
        flow_types: Sequence[FlowType],
        clock: Clock,
        *,
        exemplars: bool = True,
        slo: SloSettings | None = None,
        sources: Mapping[str, SourceSettings] | None = None,
    ) -> None:
        self._database = database
        self._flow_types = tuple(flow_types)
        self._clock = clock
        self._exemplars = exemplars
        self._slo = slo or SloSettings()
        self._sources = dict(sources or {})
        unknown = set(self._slo.objectives) - {flow_type.name for flow_type in self._flow_types}
        if unknown:
            raise ConfigError(
                f"slo.objectives: unknown flow types {sorted(unknown)} (configured: "
                f"{[flow_type.name for flow_type in self._flow_types]})"
            )

    def collect(self) -> Iterator[Metric]:
        with self._database.snapshot() as connection:
            state = read_state(connection, self._flow_types, self._clock(), list(self._sources))
        yield from families(
            state,
            self._flow_types,
            exemplars=self._exemplars,
            slo=self._slo,
            source_settings=self._sources,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no scrape at registration time


router = APIRouter(tags=["metrics"])
MetricsReader = Annotated[
    Principal | None, Depends(require_if(lambda s: s.metrics.require_key, *READERS))
]


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}, "application/openmetrics-text": {}}}},
)
async def metrics(request: Request, caller: MetricsReader) -> Response:
    """Prometheus text format, or OpenMetrics (with exemplars) when the scraper asks for it."""
    registry: CollectorRegistry = request.app.state.registry
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await run_in_threadpool(encoder, registry)
    return Response(content=body, media_type=content_type)
