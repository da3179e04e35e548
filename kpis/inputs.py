"""Reading what the KPIs need out of the store, for one instant, window and grouping. The database
counts by index (due and met, open flows, stuck flows and their findings' aging from the stuck
spans, the funnel and stage misses from the flow stages, windows of event types); only the
durations of the flows completed in the window and the values at risk come back as rows (exact
percentiles and Decimal sums are computed here). No flow's facts are decoded. The arithmetic and
the answer's shape are :mod:`kpis.compute`'s."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core import replaystore
from core.deadletters import reason_code
from core.settings import SourceSettings
from core.tables import (
    dead_letters,
    events,
    findings,
    flow_stages,
    flows,
    probe_state,
    stuck_spans,
)
from kpis.compute import (
    OPERATOR_KINDS,
    UNKNOWN,
    GlobalInputs,
    KpiInputs,
    KpiQuery,
    QueueStats,
    aging_thresholds,
)
from probes.evaluate import INTEGRATION_FAILED, MILESTONE, ONBOARDING
from probes.flowstore import STUCK, SYSTEM_ACTOR
from probes.flowtypes import FlowType
from probes.runner import STATE_NAME
from probes.views import REVENUE_FLOW_TYPES


def _group_column(query: KpiQuery) -> Any:
    if query.group_by is None:
        return sa.literal(None).label("grp")
    return flows.c[query.group_by].label("grp")


def _group(value: str | None, query: KpiQuery) -> str | None:
    if query.group_by is None:
        return None
    return UNKNOWN if value is None else value


def _filtered(statement: Any, query: KpiQuery, table: sa.Table = flows) -> Any:
    for dimension, value in query.filters.items():
        statement = statement.where(table.c[dimension] == value)
    return statement


def _types(flow_types: Sequence[FlowType]) -> list[str]:
    return [flow_type.name for flow_type in flow_types]


def _not_withdrawn() -> Any:
    """Operator findings are resolved by syncwatch only when the events no longer raise them;
    except ``unreported_record``, which syncwatch resolves when the late delivery arrives."""
    return sa.or_(
        findings.c.resolved_by.is_(None),
        findings.c.resolved_by != SYSTEM_ACTOR,
        findings.c.kind == "unreported_record",
    )


def load_due(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> dict[tuple[str | None, str], tuple[int, int]]:
    met = sa.func.sum(sa.case((flows.c.completed_at <= flows.c.deadline_at, 1), else_=0))
    statement = (
        sa.select(flows.c.flow_type, _group_column(query), sa.func.count(), met)
        .where(
            flows.c.flow_type.in_(_types(flow_types)),
            flows.c.deadline_at > query.start,
            flows.c.deadline_at <= query.as_of,
            # flows.md: a cancelled flow is due only when its deadline was not after it
            sa.or_(flows.c.cancelled_at.is_(None), flows.c.deadline_at <= flows.c.cancelled_at),
        )
        .group_by(flows.c.flow_type, sa.literal_column("grp"))
    )
    rows = connection.execute(_filtered(statement, query))
    return {
        (_group(grp, query), flow_type): (int(count), int(met or 0))
        for flow_type, grp, count, met in rows
    }


def load_durations(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> list[tuple[str | None, str, int]]:
    statement = sa.select(flows.c.flow_type, _group_column(query), flows.c.duration_us).where(
        flows.c.flow_type.in_(_types(flow_types)),
        flows.c.completed_at > query.start,
        flows.c.completed_at <= query.as_of,
    )
    return [
        (_group(grp, query), flow_type, int(duration))
        for flow_type, grp, duration in connection.execute(_filtered(statement, query))
    ]


def load_open(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> dict[tuple[str | None, str], int]:
    """Flows open as of the instant: existing, neither complete nor cancelled by then. Two parts
    (still open, and ended after the instant), each a range of the index on ended_at, so the
    planner never walks every flow."""
    parts = []
    for ended in (flows.c.ended_at.is_(None), flows.c.ended_at > query.as_of):
        part = sa.select(flows.c.flow_type, _group_column(query)).where(
            ended, flows.c.t0 <= query.as_of
        )
        parts.append(_filtered(part, query))
    union = sa.union_all(*parts).subquery()
    statement = sa.select(union.c.flow_type, union.c.grp, sa.func.count()).group_by(
        union.c.flow_type, union.c.grp
    )
    names = set(_types(flow_types))
    return {
        (_group(grp, query), flow_type): int(count)
        for flow_type, grp, count in connection.execute(statement)
        if flow_type in names
    }


def _stuck_at(query: KpiQuery, flow_types: Sequence[FlowType]) -> list[Any]:
    """The stuck spans holding at the instant (probes.evaluate.StuckSpan)."""
    at = query.as_of
    return [
        stuck_spans.c.flow_type.in_(_types(flow_types)),
        stuck_spans.c.opened_at < at,
        stuck_spans.c.since <= at,
        sa.or_(stuck_spans.c.until.is_(None), stuck_spans.c.until > at),
    ]


def _span_group(query: KpiQuery) -> Any:
    column = stuck_spans.c[query.group_by] if query.group_by else sa.literal(None)
    return column.label("grp")


def load_stuck(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> tuple[dict[tuple[str | None, str, str], int], list[QueueStats]]:
    """One pass over the stuck spans holding at the instant: the flows stuck by group, flow type
    and stuck stage; and their stuck findings by group and queue (one per stuck flow, in the
    queue of its stuck stage, opened at that stage's deadline), less those an operator had
    resolved by then (the flow stays stuck; its finding leaves the queue)."""
    resolved = findings.alias("resolved_stuck")
    operator_resolved = sa.and_(
        resolved.c.kind == STUCK,
        resolved.c.resolved_by.is_not(None),
        resolved.c.resolved_by != SYSTEM_ACTOR,
        resolved.c.resolved_at <= query.as_of,
    )
    joined: Any = stuck_spans
    finding_open: Any = sa.true().label("finding_open")
    # Operators rarely resolve a stuck finding (it resolves by itself): join only when some were
    any_resolved = connection.execute(sa.select(resolved.c.id).where(operator_resolved).limit(1))
    if any_resolved.first() is not None:
        joined = stuck_spans.outerjoin(
            resolved,
            sa.and_(
                operator_resolved,
                resolved.c.flow_id == stuck_spans.c.flow_id,
                resolved.c.key == stuck_spans.c.stage,
            ),
        )
        finding_open = resolved.c.id.is_(None).label("finding_open")
    statement = (
        sa.select(
            _span_group(query),
            stuck_spans.c.queue,
            finding_open,
            stuck_spans.c.flow_type,
            stuck_spans.c.stage,
            *_aging_columns(stuck_spans.c.opened_at, query.as_of),
        )
        .select_from(joined)
        .where(*_stuck_at(query, flow_types))
        .group_by(
            sa.literal_column("grp"),
            stuck_spans.c.queue,
            sa.literal_column("finding_open"),
            stuck_spans.c.flow_type,
            stuck_spans.c.stage,
        )
    )
    stuck: dict[tuple[str | None, str, str], int] = defaultdict(int)
    queues = []
    for grp, queue, is_open, flow_type, stage, count, oldest, *aging in connection.execute(
        _filtered(statement, query, stuck_spans)
    ):
        group = _group(grp, query)
        stuck[(group, flow_type, stage)] += int(count)
        if is_open:
            buckets = tuple(int(n or 0) for n in aging)
            queues.append(QueueStats(group, queue, STUCK, int(count), oldest, buckets))
    return dict(stuck), queues


def load_stuck_in_queue(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery, queue: str
) -> dict[tuple[str, str], int]:
    """The flows stuck at the instant whose stuck stage is in ``queue`` (for integration_oncall:
    stuck on an integration failure), by flow type and stuck stage. Findings that an operator
    resolved do not matter here: the flow is stuck there all the same."""
    statement = (
        sa.select(stuck_spans.c.flow_type, stuck_spans.c.stage, sa.func.count())
        .where(*_stuck_at(query, flow_types), stuck_spans.c.queue == queue)
        .group_by(stuck_spans.c.flow_type, stuck_spans.c.stage)
    )
    rows = connection.execute(statement)
    return {(flow_type, stage): int(count) for flow_type, stage, count in rows}


def load_revenue(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> dict[tuple[str | None, str], Decimal]:
    """flows.md: stuck onboarding contract values plus stuck milestone amounts, per currency,
    summed exactly: by PostgreSQL as NUMERIC, or here as Decimal (never a floating sum)."""
    conditions = [
        *_stuck_at(query, flow_types),
        stuck_spans.c.flow_type.in_(REVENUE_FLOW_TYPES),
        stuck_spans.c.value.is_not(None),
        stuck_spans.c.currency.is_not(None),
    ]
    group = _span_group(query)
    totals: dict[tuple[str | None, str], Decimal] = defaultdict(Decimal)
    if connection.dialect.name == "postgresql":
        amount = sa.func.sum(sa.cast(stuck_spans.c.value, sa.Numeric()))
        statement = (
            sa.select(group, stuck_spans.c.currency, amount)
            .where(*conditions)
            .group_by(sa.literal_column("grp"), stuck_spans.c.currency)
        )
    else:
        statement = sa.select(group, stuck_spans.c.currency, stuck_spans.c.value).where(*conditions)
    for grp, currency, value in connection.execute(_filtered(statement, query, stuck_spans)):
        totals[(_group(grp, query), currency)] += Decimal(value)
    return dict(totals)


def _aging_columns(opened_at: Any, as_of: datetime) -> list[Any]:
    """count, oldest opened_at, and the four aging buckets (lower bound inclusive), in SQL."""
    one, three, seven = aging_thresholds(as_of)
    buckets = [
        opened_at > one,
        sa.and_(opened_at <= one, opened_at > three),
        sa.and_(opened_at <= three, opened_at > seven),
        opened_at <= seven,
    ]
    return [
        sa.func.count(),
        sa.func.min(opened_at),
        *(sa.func.sum(sa.case((bucket, 1), else_=0)) for bucket in buckets),
    ]


def _queue_stats(rows: Any, query: KpiQuery) -> list[QueueStats]:
    return [
        QueueStats(
            _group(grp, query),
            queue,
            kind,
            int(count),
            oldest,
            tuple(int(n or 0) for n in aging),
        )
        for grp, queue, kind, count, oldest, *aging in rows
    ]


def load_open_findings(connection: Connection, query: KpiQuery) -> list[QueueStats]:
    """Operator findings open as of the instant: opened by then and not resolved by then."""
    group = flows.c[query.group_by] if query.group_by else sa.literal(None)
    source: Any = findings
    if query.group_by or query.filtered:
        source = findings.outerjoin(flows, flows.c.flow_id == findings.c.flow_id)
    statement = (
        sa.select(
            group.label("grp"),
            findings.c.queue,
            findings.c.kind,
            *_aging_columns(findings.c.opened_at, query.as_of),
        )
        .select_from(source)
        .where(
            findings.c.kind.in_(OPERATOR_KINDS),
            findings.c.opened_at <= query.as_of,
            sa.or_(findings.c.resolved_at.is_(None), findings.c.resolved_at > query.as_of),
            _not_withdrawn(),
        )
        .group_by(sa.literal_column("grp"), findings.c.queue, findings.c.kind)
    )
    return _queue_stats(connection.execute(_filtered(statement, query)), query)


def load_funnel(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> list[tuple[str, int]]:
    """Of the contract_onboarding flows with T0 in the window: how many there are, how many
    reached each stage by the instant, and how many have a milestone_billing flow of the same
    correlation ID complete by then (the first invoice)."""
    onboarding = next((ft for ft in flow_types if ft.name == ONBOARDING), None)
    if onboarding is None:
        return []
    started_flows = sa.select(flows.c.flow_id).where(
        flows.c.flow_type == ONBOARDING, flows.c.t0 > query.start, flows.c.t0 <= query.as_of
    )
    started_flows = _filtered(started_flows, query)
    started = connection.execute(
        sa.select(sa.func.count()).select_from(started_flows.subquery())
    ).scalar_one()
    statement = (
        sa.select(flow_stages.c.idx, sa.func.count())
        .where(
            flow_stages.c.flow_type == ONBOARDING,
            flow_stages.c.t0 > query.start,
            flow_stages.c.t0 <= query.as_of,
            flow_stages.c.reached_at <= query.as_of,
        )
        .group_by(flow_stages.c.idx)
    )
    if query.filtered:
        statement = statement.where(flow_stages.c.flow_id.in_(started_flows.scalar_subquery()))
    reached = {int(idx): int(count) for idx, count in connection.execute(statement)}
    rows = [(onboarding.start, int(started))]
    rows += [(stage.type, reached.get(i, 0)) for i, stage in enumerate(onboarding.stages)]
    milestone = next((ft for ft in flow_types if ft.name == MILESTONE), None)
    if milestone is not None:
        rows.append((milestone.final.type, _first_invoices(connection, query)))
    return rows


def _first_invoices(connection: Connection, query: KpiQuery) -> int:
    """How many onboarding flows with T0 in the window have a milestone_billing flow of the same
    correlation ID complete by the instant. PostgreSQL plans the EXISTS by the correlation ID
    index; SQLite (without statistics) would walk every completed milestone flow for each one,
    so there the milestone flows are looked up by correlation ID and checked here."""
    started = sa.select(flows.c.correlation_id).where(
        flows.c.flow_type == ONBOARDING, flows.c.t0 > query.start, flows.c.t0 <= query.as_of
    )
    started = _filtered(started, query)
    if connection.dialect.name == "postgresql":
        billed = flows.alias("billed")
        invoiced = sa.exists().where(
            billed.c.correlation_id == flows.c.correlation_id,
            billed.c.flow_type == MILESTONE,
            billed.c.completed_at <= query.as_of,
        )
        counted = sa.select(sa.func.count()).select_from(started.where(invoiced).subquery())
        return int(connection.execute(counted).scalar_one())
    started_ids = [value for (value,) in connection.execute(started)]
    found: set[str] = set()
    for chunk in _chunks(started_ids):
        rows_of_chunk = connection.execute(
            sa.select(flows.c.correlation_id, flows.c.flow_type, flows.c.completed_at).where(
                flows.c.correlation_id.in_(chunk)
            )
        )
        found.update(
            correlation
            for correlation, flow_type, completed_at in rows_of_chunk
            if flow_type == MILESTONE and completed_at is not None and completed_at <= query.as_of
        )
    return sum(1 for correlation in started_ids if correlation in found)


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def load_stage_misses(
    connection: Connection, flow_types: Sequence[FlowType], query: KpiQuery
) -> dict[tuple[str, str], int]:
    """Stage deadlines in the window that were missed: the stage not reached by its deadline
    while the flow was neither complete nor cancelled by then (a stage skipped by a flow that
    completed earlier is no miss; a late stage is one)."""
    deadline = flow_stages.c.deadline_at
    statement = (
        sa.select(flow_stages.c.flow_type, flow_stages.c.stage, sa.func.count())
        .where(
            flow_stages.c.flow_type.in_(_types(flow_types)),
            deadline > query.start,
            deadline <= query.as_of,
            sa.or_(flow_stages.c.reached_at.is_(None), flow_stages.c.reached_at > deadline),
            sa.or_(flow_stages.c.ended_at.is_(None), flow_stages.c.ended_at > deadline),
        )
        .group_by(flow_stages.c.flow_type, flow_stages.c.stage)
    )
    if query.filtered:
        statement = statement.join(flows, flows.c.flow_id == flow_stages.c.flow_id)
        statement = _filtered(statement, query)
    return {
        (flow_type, stage): int(count) for flow_type, stage, count in connection.execute(statement)
    }


def _event_counts(connection: Connection, types: Sequence[str], query: KpiQuery) -> dict[str, int]:
    rows = connection.execute(
        sa.select(events.c.type, sa.func.count())
        .where(
            events.c.type.in_(types),
            events.c.time > query.start,
            events.c.time <= query.as_of,
        )
        .group_by(events.c.type)
    )
    return {event_type: int(count) for event_type, count in rows}


def integration_failures(connection: Connection, query: KpiQuery) -> dict[str, int]:
    step = events.c.data["step"].as_string()
    rows = connection.execute(
        sa.select(step, sa.func.count())
        .where(
            events.c.type.in_(INTEGRATION_FAILED),
            events.c.time > query.start,
            events.c.time <= query.as_of,
        )
        .group_by(step)
    )
    counts: dict[str, int] = defaultdict(int)
    for value, count in rows:
        counts[value if value else UNKNOWN] += int(count)
    return dict(counts)


def probed_seq(connection: Connection) -> int:
    """The last event the probes have looked at."""
    value = connection.execute(
        sa.select(probe_state.c.last_seq).where(probe_state.c.name == STATE_NAME)
    ).scalar()
    return int(value or 0)


def uncorrelated_events(connection: Connection, as_of: datetime) -> int:
    """Events, up to the instant, whose correlation ID the probes could not resolve (events the
    probes have not looked at yet are not counted: they are not known to be uncorrelated)."""
    return int(
        connection.execute(
            sa.select(sa.func.count()).where(
                events.c.resolved_correlation_id.is_(None),
                events.c.time <= as_of,
                events.c.seq <= probed_seq(connection),
            )
        ).scalar_one()
    )


def finding_counts(connection: Connection, as_of: datetime) -> dict[str, int]:
    """Operator findings raised by the instant, resolved or not (kpis.md: resolving a duplicate
    project closes it in the queues, it does not change the count)."""
    rows = connection.execute(
        sa.select(findings.c.kind, sa.func.count())
        .where(
            findings.c.kind.in_(("duplicate_project", "amendment_conflict")),
            findings.c.opened_at <= as_of,
            _not_withdrawn(),
        )
        .group_by(findings.c.kind)
    )
    return {kind: int(count) for kind, count in rows}


def dead_letter_counts(connection: Connection, query: KpiQuery) -> dict[str, int]:
    rows = connection.execute(
        sa.select(dead_letters.c.reason).where(
            dead_letters.c.received_at > query.start, dead_letters.c.received_at <= query.as_of
        )
    )
    counts: dict[str, int] = defaultdict(int)
    for (reason,) in rows:
        counts[reason_code(reason)] += 1
    return dict(counts)


def silent_sources(
    connection: Connection, sources: dict[str, SourceSettings], as_of: datetime
) -> list[dict[str, Any]]:
    """Configured sources whose newest event (by event time, up to the instant) is older than
    their threshold, or that never sent one."""
    result = []
    for source, config in sorted(sources.items()):
        threshold = config.silent_after
        if threshold is None:
            continue
        last_at: datetime | None = connection.execute(
            sa.select(sa.func.max(events.c.time)).where(
                events.c.source == source, events.c.time <= as_of
            )
        ).scalar()
        silent_for = None if last_at is None else as_of - last_at
        if silent_for is None or silent_for > threshold:
            result.append(
                {
                    "source": source,
                    "last_event_at": last_at,
                    "silent_seconds": None if silent_for is None else silent_for.total_seconds(),
                    "threshold_seconds": threshold.total_seconds(),
                }
            )
    return result


def load(
    connection: Connection,
    flow_types: Sequence[FlowType],
    query: KpiQuery,
    *,
    sources: dict[str, SourceSettings] | None = None,
) -> KpiInputs:
    """Everything :func:`kpis.compute.build` needs for ``query``, in one read transaction."""
    globals_ = None
    if not query.filtered:
        counts = finding_counts(connection, query.as_of)
        invoices = _event_counts(connection, ("invoice.posted", "invoice.disputed"), query)
        globals_ = GlobalInputs(
            duplicate_projects=counts.get("duplicate_project", 0),
            amendment_conflicts=counts.get("amendment_conflict", 0),
            integration_failures=integration_failures(connection, query),
            invoices_posted=invoices.get("invoice.posted", 0),
            invoices_disputed=invoices.get("invoice.disputed", 0),
            uncorrelated_events=uncorrelated_events(connection, query.as_of),
            dead_letters=dead_letter_counts(connection, query) if query.further else {},
            silent_sources=silent_sources(connection, sources or {}, query.as_of)
            if query.further
            else (),
        )
    further = query.further
    stuck, stuck_findings = load_stuck(connection, flow_types, query)
    return KpiInputs(
        due=load_due(connection, flow_types, query),
        durations=load_durations(connection, flow_types, query),
        open=load_open(connection, flow_types, query),
        stuck=stuck,
        revenue=load_revenue(connection, flow_types, query),
        queues=[*stuck_findings, *load_open_findings(connection, query)],
        funnel=load_funnel(connection, flow_types, query) if further else (),
        stage_misses=load_stage_misses(connection, flow_types, query) if further else {},
        globals=globals_,
        replays=replaystore.counts_in_window(connection, query.start, query.as_of, query.filters)
        if further
        else {},
    )
