"""The KPIs of ``spec/kpis.md``, pure: from the inputs that :mod:`kpis.inputs` reads out of the
store and the query (instant, window, grouping), the exact answer. Nothing here does I/O or reads
the clock, so the API, the exporter, the dashboard and the reports all get the same numbers.

Exactness: ratios, means and percentiles are computed on exact fractions (durations in integer
microseconds) and rounded once, half to even; money is Decimal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from probes.exceptions import AGING_BUCKETS, aging_bucket
from probes.flowtypes import QUEUES, FlowType
from probes.views import REVENUE_FLOW_TYPES

DIMENSIONS = ("legal_entity", "region", "service_line")
UNKNOWN = "unknown"
#: Findings an operator resolves (``stuck`` findings are derived from the flows' facts).
OPERATOR_KINDS = (
    "duplicate_project",
    "amendment_conflict",
    "term_mismatch",
    "contract_data_incomplete",
    "unreported_record",
)
REPLAY_OUTCOMES = ("sent", "refused", "failed", "effective", "ineffective")
PERCENTILES = (("p50", Fraction(1, 2)), ("p90", Fraction(9, 10)), ("p95", Fraction(19, 20)))
CENT = Decimal("0.01")
_MICROS = 1_000_000


@dataclass(frozen=True)
class KpiQuery:
    as_of: datetime
    start: datetime  # the window is (start, as_of]
    group_by: str | None = None
    filters: Mapping[str, str] = field(default_factory=dict)  # dimension -> value
    further: bool = True  # funnel, stage_misses, data_quality, replays

    @property
    def filtered(self) -> bool:
        return bool(self.filters)

    def in_window(self, instant: datetime) -> bool:
        return self.start < instant <= self.as_of


@dataclass(frozen=True)
class OpenFinding:
    """An operator finding open as of the query's instant."""

    group: str | None
    kind: str
    queue: str
    opened_at: datetime


@dataclass(frozen=True)
class GlobalInputs:
    """The figures not tied to a contract (left out under a dimension filter)."""

    duplicate_projects: int
    amendment_conflicts: int
    integration_failures: Mapping[str, int]
    invoices_posted: int
    invoices_disputed: int
    uncorrelated_events: int
    dead_letters: Mapping[str, int]  # received in the window, by reason code
    silent_sources: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class StuckFlow:
    """A flow stuck as of the query's instant: its stuck stage, the queue of its stuck finding,
    when that finding opened (the stage's deadline) and the flow's value."""

    group: str | None
    flow_type: str
    stage: str
    queue: str
    opened_at: datetime
    value: Decimal | None
    currency: str | None
    #: False once an operator resolved the stuck finding: it leaves its queue, the flow is still
    #: stuck (flows.md: a finding is open while not resolved)
    finding_open: bool = True


@dataclass(frozen=True)
class KpiInputs:
    #: (group, flow_type) -> (due, met)
    due: Mapping[tuple[str | None, str], tuple[int, int]]
    #: (group, flow_type, duration in microseconds) of the flows completed in the window
    durations: Sequence[tuple[str | None, str, int]]
    #: (group, flow_type) -> flows open as of the instant (stuck ones included)
    open: Mapping[tuple[str | None, str], int]
    stuck: Sequence[StuckFlow]
    findings: Sequence[OpenFinding]
    #: the groups that have flows as of the instant (with group_by)
    groups: Sequence[str] = ()
    #: (stage, count) in funnel order, counted by the store
    funnel: Sequence[tuple[str, int]] = ()
    #: (flow_type, stage) -> missed stage deadlines in the window
    stage_misses: Mapping[tuple[str, str], int] = field(default_factory=dict)
    globals: GlobalInputs | None = None
    replays: Mapping[str, int] = field(default_factory=dict)


# --- the arithmetic ---


def ratio(numerator: int, denominator: int) -> float | None:
    """kpis.md: 4 decimals, half to even, on the exact ratio; None when the denominator is 0."""
    if denominator == 0:
        return None
    return float(round(Fraction(numerator, denominator), 4))


def _seconds(micros: Fraction | int) -> float:
    return float(round(Fraction(micros) / _MICROS, 3))


def percentile(ordered: Sequence[int], q: Fraction) -> Fraction:
    """numpy's default (linear) method: interpolate between the closest ranks, exactly."""
    position = (len(ordered) - 1) * q
    lower = int(position)  # floor: position >= 0
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def duration_stats(micros: Iterable[int]) -> dict[str, Any]:
    ordered = sorted(micros)
    if not ordered:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "max": None}
    stats: dict[str, Any] = {
        "count": len(ordered),
        "mean": _seconds(Fraction(sum(ordered), len(ordered))),
    }
    for name, q in PERCENTILES:
        stats[name] = _seconds(percentile(ordered, q))
    stats["max"] = _seconds(ordered[-1])
    return stats


def micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _MICROS + delta.microseconds


def money(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    return {
        currency: str(amount.quantize(CENT, rounding=ROUND_HALF_EVEN))
        for currency, amount in sorted(amounts.items())
    }


def exceptions_summary(
    opened: Iterable[tuple[str, datetime]], as_of: datetime, queues: Sequence[str] = QUEUES
) -> dict[str, Any]:
    """Per queue: open findings, the oldest one's age and the aging buckets (lower bound
    inclusive). Every queue appears, with zeros when empty."""
    by_queue: dict[str, list[datetime]] = {queue: [] for queue in queues}
    for queue, opened_at in opened:
        by_queue.setdefault(queue, []).append(opened_at)
    summary = {}
    for queue, instants in by_queue.items():
        aging = dict.fromkeys((name for name, _ in AGING_BUCKETS), 0)
        for instant in instants:
            aging[aging_bucket((as_of - instant).total_seconds())] += 1
        oldest = min(instants) if instants else None
        summary[queue] = {
            "open": len(instants),
            "oldest_age_seconds": None if oldest is None else _seconds(micros(as_of - oldest)),
            "aging": aging,
        }
    return summary


# --- one section (the whole answer, or one group) ---


def flow_section(
    flow_types: Sequence[FlowType],
    due: Mapping[str, tuple[int, int]],
    durations: Mapping[str, Sequence[int]],
    open_counts: Mapping[str, int],
    stuck: Sequence[StuckFlow],
) -> dict[str, Any]:
    section = {}
    for flow_type in flow_types:
        name = flow_type.name
        due_count, met = due.get(name, (0, 0))
        stuck_by_stage = dict.fromkeys((stage.type for stage in flow_type.stages), 0)
        for flow in stuck:
            if flow.flow_type == name:
                stuck_by_stage[flow.stage] = stuck_by_stage.get(flow.stage, 0) + 1
        completed = durations.get(name, ())
        section[name] = {
            "due": due_count,
            "met": met,
            "success_rate": ratio(met, due_count),
            "completed": len(completed),
            "duration_seconds": duration_stats(completed),
            "open": open_counts.get(name, 0),
            "stuck": sum(stuck_by_stage.values()),
            "stuck_by_stage": stuck_by_stage,
        }
    return section


def revenue_at_risk(stuck: Iterable[StuckFlow]) -> dict[str, str]:
    """flows.md: stuck onboarding contract values plus stuck milestone amounts, per currency."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for flow in stuck:
        if flow.flow_type in REVENUE_FLOW_TYPES and flow.value is not None and flow.currency:
            totals[flow.currency] += flow.value
    return money(totals)


def _section(
    flow_types: Sequence[FlowType],
    inputs: KpiInputs,
    as_of: datetime,
    group: str | None,
    everything: bool,
) -> dict[str, Any]:
    def mine(g: str | None) -> bool:
        return everything or g == group

    due: dict[str, tuple[int, int]] = {}
    for (g, flow_type), (count, met) in inputs.due.items():
        if mine(g):
            before = due.get(flow_type, (0, 0))
            due[flow_type] = (before[0] + count, before[1] + met)
    durations: dict[str, list[int]] = defaultdict(list)
    for g, flow_type, value in inputs.durations:
        if mine(g):
            durations[flow_type].append(value)
    open_counts: dict[str, int] = defaultdict(int)
    for (g, flow_type), count in inputs.open.items():
        if mine(g):
            open_counts[flow_type] += count
    stuck = [flow for flow in inputs.stuck if mine(flow.group)]
    opened = [(flow.queue, flow.opened_at) for flow in stuck if flow.finding_open]
    opened += [(f.queue, f.opened_at) for f in inputs.findings if mine(f.group)]
    return {
        "flows": flow_section(flow_types, due, durations, open_counts, stuck),
        "revenue_at_risk": revenue_at_risk(stuck),
        "exceptions": exceptions_summary(opened, as_of),
    }


# --- further figures ---


def _window(query: KpiQuery) -> dict[str, datetime]:
    return {"start": query.start, "end": query.as_of}


def build(query: KpiQuery, flow_types: Sequence[FlowType], inputs: KpiInputs) -> dict[str, Any]:
    """The answer of ``GET /v1/kpis`` (kpis.md's shape), with the further figures when asked."""
    answer: dict[str, Any] = {"as_of": query.as_of, "window": _window(query)}
    answer.update(_section(flow_types, inputs, query.as_of, None, everything=True))
    if inputs.globals is not None and not query.filtered:
        g = inputs.globals
        answer["duplicate_projects"] = g.duplicate_projects
        answer["amendment_conflicts"] = g.amendment_conflicts
        answer["integration_failures"] = dict(sorted(g.integration_failures.items()))
        answer["invoice_dispute_rate"] = ratio(g.invoices_disputed, g.invoices_posted)
        answer["uncorrelated_events"] = g.uncorrelated_events
    if query.group_by is not None:
        answer["groups"] = {
            group: _section(flow_types, inputs, query.as_of, group, everything=False)
            for group in sorted(inputs.groups)
        }
    if query.further:
        answer["funnel"] = [{"stage": stage, "count": count} for stage, count in inputs.funnel]
        answer["stage_misses"] = {
            ft.name: {s.type: inputs.stage_misses.get((ft.name, s.type), 0) for s in ft.stages}
            for ft in flow_types
        }
        if inputs.globals is not None and not query.filtered:
            answer["data_quality"] = {
                "uncorrelated_events": inputs.globals.uncorrelated_events,
                "dead_letters": dict(sorted(inputs.globals.dead_letters.items())),
                "silent_sources": list(inputs.globals.silent_sources),
            }
        answer["replays"] = {outcome: inputs.replays.get(outcome, 0) for outcome in REPLAY_OUTCOMES}
    return answer
