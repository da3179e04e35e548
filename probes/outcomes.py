"""What the probe runner decides once per flow and never revises (metrics.md): the deadline outcome
(``met`` when completed by the deadline, ``missed`` when the deadline passed first) and the
duration of a completed flow, kept in ``flow_outcomes`` and summed into ``metric_totals`` in the
same transaction, so a scrape of /metrics reads a few rows and every replica exposes the same
counters. It also keeps each flow's trace state for the OpenTelemetry exporter.

:func:`decide` is pure; :func:`record` is the thin database shell around it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.tables import flow_outcomes, metric_totals
from probes.evaluate import FlowFacts
from probes.flowtypes import FlowType
from probes.traceids import trace_id
from probes.views import state

DEADLINE_METRIC = "flows_deadline"
DURATION_METRIC = "flow_duration"
BUCKETS_METRIC = "flow_duration_buckets"  # one row: the bounds the totals were counted with
SUM_LABEL = "sum"
INF_LABEL = "+Inf"
TRACED_STATES = ("complete", "stuck", "cancelled")
#: Buckets of syncwatch_flow_duration_seconds besides every stage deadline of every flow type.
BASE_BUCKETS = tuple(
    hours * 3600.0 for hours in (0.25, 1, 4, 8, 12, 24, 48, 72, 96, 120, 168, 336, 720)
)
_CHUNK = 500


def duration_buckets(flow_types: Sequence[FlowType]) -> tuple[float, ...]:
    """The upper bounds (seconds) of the duration histogram: a fixed set plus each flow type's
    stage deadlines, so that "completed within the deadline" is a bucket of its own."""
    bounds = set(BASE_BUCKETS)
    for flow_type in flow_types:
        bounds.update(stage.deadline.total_seconds() for stage in flow_type.stages)
    return tuple(sorted(bounds))


def bucket_label(bound: float) -> str:
    return INF_LABEL if bound == float("inf") else repr(float(bound))


def bucket_of(seconds: float, bounds: Sequence[float]) -> str:
    """The label of the smallest bucket holding ``seconds`` (buckets are stored non-cumulative)."""
    for bound in bounds:
        if seconds <= bound:
            return bucket_label(bound)
    return INF_LABEL


@dataclass(frozen=True)
class Decision:
    deadline_outcome: str | None  # met, missed, or None while undecided
    duration_seconds: float | None  # None until the completion is seen
    trace_state: str | None


def decide(flow: FlowFacts, now: datetime) -> Decision:
    """As of ``now``: the deadline outcome, if decided; the duration, if complete; the state a
    trace would show, if the flow is complete, stuck or cancelled."""
    if not flow.exists(now):
        return Decision(None, None, None)
    outcome = None
    if flow.complete(now) and flow.met():
        outcome = "met"
    elif flow.deadline_at < now and flow.counts_as_due():
        outcome = "missed"
    duration = None
    if flow.complete(now) and flow.duration is not None:
        duration = flow.duration.total_seconds()
    current = state(flow, now)
    return Decision(outcome, duration, current if current in TRACED_STATES else None)


def _insert(connection: Connection, table: sa.Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _add_totals(connection: Connection, increments: dict[tuple[str, str, str], float]) -> None:
    if not increments:
        return
    insert = _insert(connection, metric_totals)
    statement = insert.on_conflict_do_update(
        index_elements=["metric", "flow_type", "label"],
        set_={"value": metric_totals.c.value + insert.excluded.value},
    )
    connection.execute(
        statement,
        [
            {"metric": metric, "flow_type": flow_type, "label": label, "value": value}
            for (metric, flow_type, label), value in sorted(increments.items())
        ],
    )


def _set_exemplars(
    connection: Connection, exemplars: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for (flow_type, label), exemplar in sorted(exemplars.items()):
        connection.execute(
            metric_totals.update()
            .where(
                metric_totals.c.metric == DURATION_METRIC,
                metric_totals.c.flow_type == flow_type,
                metric_totals.c.label == label,
            )
            .values(exemplar=exemplar)
        )


def _existing(connection: Connection, flow_ids: Iterable[str]) -> dict[str, Any]:
    ids = list(flow_ids)
    found: dict[str, Any] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = connection.execute(
            sa.select(flow_outcomes).where(flow_outcomes.c.flow_id.in_(ids[start : start + _CHUNK]))
        )
        found.update((row.flow_id, row) for row in rows)
    return found


def record(
    connection: Connection,
    flows: Sequence[FlowFacts],
    now: datetime,
    *,
    buckets: Sequence[float],
    traces: bool = False,
) -> None:
    """Record what is newly decided for these flows; with ``traces``, also mark the flows whose
    trace state changed for export."""
    if not flows:
        return
    existing = _existing(connection, (flow.flow_id for flow in flows))
    increments: dict[tuple[str, str, str], float] = {}
    exemplars: dict[tuple[str, str], dict[str, Any]] = {}
    inserts: list[dict[str, Any]] = []
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for flow in flows:
        decision = decide(flow, now)
        row = existing.get(flow.flow_id)
        values: dict[str, Any] = {}
        if decision.deadline_outcome and (row is None or row.deadline_outcome is None):
            values["deadline_outcome"] = decision.deadline_outcome
            values["deadline_decided_at"] = now
            key = (DEADLINE_METRIC, flow.flow_type, decision.deadline_outcome)
            increments[key] = increments.get(key, 0) + 1
        if decision.duration_seconds is not None and (row is None or row.duration_seconds is None):
            seconds = decision.duration_seconds
            values["duration_seconds"] = seconds
            values["completion_seen_at"] = now
            label = bucket_of(seconds, buckets)
            key = (DURATION_METRIC, flow.flow_type, label)
            increments[key] = increments.get(key, 0) + 1
            sum_key = (DURATION_METRIC, flow.flow_type, SUM_LABEL)
            increments[sum_key] = increments.get(sum_key, 0) + seconds
            assert flow.completed_at is not None  # complete: decide() gave a duration
            exemplars[(flow.flow_type, label)] = {
                "correlation_id": flow.correlation_id,
                "trace_id": trace_id(flow.flow_id),
                "value": seconds,
                "timestamp": flow.completed_at.timestamp(),
            }
        if traces:
            current = row.trace_state if row is not None else None
            if decision.trace_state != current:
                values["trace_state"] = decision.trace_state
                traced = row.traced_state if row is not None else None
                if decision.trace_state is not None and decision.trace_state != traced:
                    values["trace_pending"] = True
        if row is None:
            if values or flow.exists(now):
                inserts.append(
                    {
                        "flow_id": flow.flow_id,
                        "flow_type": flow.flow_type,
                        "deadline_outcome": None,
                        "deadline_decided_at": None,
                        "duration_seconds": None,
                        "completion_seen_at": None,
                        "trace_state": None,
                        "trace_pending": False,
                        **values,
                    }
                )
        elif values:
            updates.setdefault(tuple(sorted(values)), []).append({"b_id": flow.flow_id, **values})
    for columns, rows in updates.items():  # one executemany per set of changed columns
        statement = (
            flow_outcomes.update()
            .where(flow_outcomes.c.flow_id == sa.bindparam("b_id"))
            .values({name: sa.bindparam(name) for name in columns})
        )
        connection.execute(statement, rows)
    if inserts:
        connection.execute(flow_outcomes.insert(), inserts)
    _add_totals(connection, increments)
    _set_exemplars(connection, exemplars)


def ensure_buckets(connection: Connection, buckets: Sequence[float]) -> bool:
    """When the configured buckets changed (a deadline was configured differently), rebuild the
    duration histogram's totals from the recorded durations. True when it rebuilt them."""
    bounds = [float(b) for b in buckets]
    config = connection.execute(
        sa.select(metric_totals.c.exemplar).where(
            metric_totals.c.metric == BUCKETS_METRIC,
            metric_totals.c.flow_type == "",
            metric_totals.c.label == "bounds",
        )
    ).first()
    if config is not None and config.exemplar == {"bounds": bounds}:
        return False
    connection.execute(
        metric_totals.delete().where(metric_totals.c.metric.in_([DURATION_METRIC, BUCKETS_METRIC]))
    )
    connection.execute(
        metric_totals.insert().values(
            metric=BUCKETS_METRIC,
            flow_type="",
            label="bounds",
            value=0,
            exemplar={"bounds": bounds},
        )
    )
    increments: dict[tuple[str, str, str], float] = {}
    rows = connection.execute(
        sa.select(flow_outcomes.c.flow_type, flow_outcomes.c.duration_seconds).where(
            flow_outcomes.c.duration_seconds.is_not(None)
        )
    )
    for flow_type, seconds in rows:
        label_key = (DURATION_METRIC, flow_type, bucket_of(seconds, bounds))
        increments[label_key] = increments.get(label_key, 0) + 1
        sum_key = (DURATION_METRIC, flow_type, SUM_LABEL)
        increments[sum_key] = increments.get(sum_key, 0) + seconds
    _add_totals(connection, increments)
    return True
