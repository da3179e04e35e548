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

from core.replaystore import OUTCOMES as REPLAY_OUTCOMES
from probes.exceptions import AGING_BUCKETS
from probes.flowtypes import QUEUES, FlowType

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


@dataclass(frozen=True)
class QueueStats:
    """Findings of one kind open in one queue (and group) as of the query's instant: how many,
    the oldest ``opened_at``, and how many fall in each aging bucket (lower bound inclusive)."""

    group: str | None
    queue: str
    kind: str
    open: int
    oldest: datetime | None
    aging: tuple[int, ...]  # lt_1d, 1d_3d, 3d_7d, gt_7d


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
class KpiInputs:
    #: (group, flow_type) -> (due, met)
    due: Mapping[tuple[str | None, str], tuple[int, int]]
    #: (group, flow_type, duration in microseconds) of the flows completed in the window
    durations: Sequence[tuple[str | None, str, int]]
    #: (group, flow_type) -> flows open as of the instant (stuck ones included)
    open: Mapping[tuple[str | None, str], int]
    #: (group, flow_type, stuck stage) -> flows stuck as of the instant
    stuck: Mapping[tuple[str | None, str, str], int]
    #: (group, currency) -> revenue at risk as of the instant
    revenue: Mapping[tuple[str | None, str], Decimal]
    #: open findings by group, queue and kind (stuck findings included)
    queues: Sequence[QueueStats]
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


def aging_thresholds(as_of: datetime) -> list[datetime]:
    """The instants that split opened_at into the aging buckets: a finding is at least ``d`` old
    exactly when opened_at <= as_of - d."""
    return [as_of - timedelta(seconds=lower) for _, lower in AGING_BUCKETS[1:]]


def exceptions_summary(
    stats: Iterable[QueueStats], as_of: datetime, queues: Sequence[str] = QUEUES
) -> dict[str, Any]:
    """Per queue: open findings, the oldest one's age and the aging buckets. Every queue
    appears, with zeros when empty."""
    names = [name for name, _ in AGING_BUCKETS]

    def empty() -> dict[str, Any]:
        return {"open": 0, "oldest_age_seconds": None, "aging": dict.fromkeys(names, 0)}

    summary: dict[str, Any] = {queue: empty() for queue in queues}
    oldest: dict[str, datetime] = {}
    for part in stats:
        entry = summary.setdefault(part.queue, empty())
        entry["open"] += part.open
        for name, count in zip(names, part.aging, strict=True):
            entry["aging"][name] += count
        if part.oldest is not None and (
            part.queue not in oldest or part.oldest < oldest[part.queue]
        ):
            oldest[part.queue] = part.oldest
    for queue, instant in oldest.items():
        summary[queue]["oldest_age_seconds"] = _seconds(micros(as_of - instant))
    return summary


# --- one section (the whole answer, or one group) ---


def flow_section(
    flow_types: Sequence[FlowType],
    due: Mapping[str, tuple[int, int]],
    durations: Mapping[str, Sequence[int]],
    open_counts: Mapping[str, int],
    stuck: Mapping[tuple[str, str], int],
) -> dict[str, Any]:
    section = {}
    for flow_type in flow_types:
        name = flow_type.name
        due_count, met = due.get(name, (0, 0))
        stuck_by_stage = {
            stage.type: stuck.get((name, stage.type), 0) for stage in flow_type.stages
        }
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
    stuck: dict[tuple[str, str], int] = defaultdict(int)
    for (g, flow_type, stage), count in inputs.stuck.items():
        if mine(g):
            stuck[(flow_type, stage)] += count
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for (g, currency), amount in inputs.revenue.items():
        if mine(g):
            revenue[currency] += amount
    return {
        "flows": flow_section(flow_types, due, durations, open_counts, stuck),
        "revenue_at_risk": money(revenue),
        "exceptions": exceptions_summary((q for q in inputs.queues if mine(q.group)), as_of),
    }


# --- further figures ---


def _groups(inputs: KpiInputs) -> set[str]:
    """The groups with something to show: a flow due, completed, open or stuck, money at risk,
    or an open finding."""
    found = {g for g, _ in inputs.due} | {g for g, _, _ in inputs.durations}
    found |= {g for g, _ in inputs.open} | {g for g, _, _ in inputs.stuck}
    found |= {g for g, _ in inputs.revenue} | {q.group for q in inputs.queues}
    return {g for g in found if g is not None}


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
            for group in sorted(_groups(inputs))
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
