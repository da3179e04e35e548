"""The KPIs of ``spec/kpis.md``, pure: from the inputs that :mod:`kpis.inputs` reads out of the
store and the query (instant, window, grouping), the exact answer. Nothing here does I/O or reads
the clock, so the API, the exporter, the dashboard and the reports all get the same numbers.

Exactness: ratios, means and percentiles are computed on exact fractions (durations in integer
microseconds) and rounded once, half to even; money is Decimal."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from probes.evaluate import MILESTONE, ONBOARDING, FlowFacts
from probes.exceptions import AGING_BUCKETS, aging_bucket
from probes.flowtypes import QUEUES, FlowType
from probes.views import value_at_risk

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
class KpiInputs:
    #: (group, flow_type) -> (due, met)
    due: Mapping[tuple[str | None, str], tuple[int, int]]
    #: (group, flow_type, duration in microseconds) of the flows completed in the window
    durations: Sequence[tuple[str | None, str, int]]
    #: flows open as of the instant (stuck ones included)
    open_flows: Sequence[tuple[str | None, FlowFacts]]
    findings: Sequence[OpenFinding]
    #: the groups that have flows as of the instant (with group_by)
    groups: Sequence[str] = ()
    #: flows whose T0 or some stage deadline lies in the window (funnel, stage misses)
    window_flows: Sequence[tuple[str | None, FlowFacts]] = ()
    #: correlation IDs with a milestone_billing flow complete as of the instant
    invoiced: frozenset[str] = frozenset()
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


def stuck_findings(
    open_flows: Iterable[FlowFacts], as_of: datetime
) -> list[tuple[str, str, datetime]]:
    """(kind, queue, opened_at) of the stuck findings open as of ``as_of``: one per stuck flow,
    in the queue of its stuck stage, opened at that stage's deadline (flows.md)."""
    found = []
    for flow in open_flows:
        stage = flow.stuck_stage(as_of)
        if stage is not None:
            queue = "integration_oncall" if stage.failing(as_of) else stage.queue
            found.append(("stuck", queue, stage.deadline_at))
    return found


def flow_section(
    flow_types: Sequence[FlowType],
    due: Mapping[str, tuple[int, int]],
    durations: Mapping[str, Sequence[int]],
    open_flows: Sequence[FlowFacts],
    as_of: datetime,
) -> dict[str, Any]:
    section = {}
    for flow_type in flow_types:
        name = flow_type.name
        due_count, met = due.get(name, (0, 0))
        opened = [f for f in open_flows if f.flow_type == name]
        stuck_by_stage = dict.fromkeys((stage.type for stage in flow_type.stages), 0)
        for flow in opened:
            stage = flow.stuck_stage(as_of)
            if stage is not None:
                stuck_by_stage[stage.type] = stuck_by_stage.get(stage.type, 0) + 1
        completed = durations.get(name, ())
        section[name] = {
            "due": due_count,
            "met": met,
            "success_rate": ratio(met, due_count),
            "completed": len(completed),
            "duration_seconds": duration_stats(completed),
            "open": len(opened),
            "stuck": sum(stuck_by_stage.values()),
            "stuck_by_stage": stuck_by_stage,
        }
    return section


def revenue_at_risk(open_flows: Iterable[FlowFacts], as_of: datetime) -> dict[str, str]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for flow in open_flows:
        value = value_at_risk(flow, as_of)
        if value is not None and flow.currency is not None:
            totals[flow.currency] += value
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
    open_flows = [flow for g, flow in inputs.open_flows if mine(g)]
    opened = [(queue, at) for _, queue, at in stuck_findings(open_flows, as_of)]
    opened += [(f.queue, f.opened_at) for f in inputs.findings if mine(f.group)]
    return {
        "flows": flow_section(flow_types, due, durations, open_flows, as_of),
        "revenue_at_risk": revenue_at_risk(open_flows, as_of),
        "exceptions": exceptions_summary(opened, as_of),
    }


# --- further figures ---


def funnel(
    window_flows: Iterable[FlowFacts],
    flow_types: Sequence[FlowType],
    invoiced: frozenset[str],
    query: KpiQuery,
) -> list[dict[str, Any]]:
    """Of the contract_onboarding flows with T0 in the window: how many reached each stage by
    as_of, in stage order, and how many have a milestone_billing flow complete (first invoice)."""
    onboarding = next((ft for ft in flow_types if ft.name == ONBOARDING), None)
    if onboarding is None:
        return []
    started = [f for f in window_flows if f.flow_type == ONBOARDING and query.in_window(f.t0)]
    rows = [{"stage": onboarding.start, "count": len(started)}]
    for index, stage in enumerate(onboarding.stages):
        reached = sum(1 for f in started if f.stages[index].reached(query.as_of))
        rows.append({"stage": stage.type, "count": reached})
    milestone = next((ft for ft in flow_types if ft.name == MILESTONE), None)
    if milestone is not None:
        count = sum(1 for f in started if f.correlation_id in invoiced)
        rows.append({"stage": milestone.final.type, "count": count})
    return rows


def stage_misses(
    window_flows: Iterable[FlowFacts], flow_types: Sequence[FlowType], query: KpiQuery
) -> dict[str, dict[str, int]]:
    """Per flow type and stage: stage deadlines in the window that were missed: the stage was not
    reached by its deadline while the flow was neither complete nor cancelled by then (a stage
    skipped by a flow that completed earlier is no miss; a late stage is one)."""
    misses = {ft.name: dict.fromkeys((s.type for s in ft.stages), 0) for ft in flow_types}
    for flow in window_flows:
        counts = misses.get(flow.flow_type)
        if counts is None:
            continue
        for stage in flow.stages:
            deadline = stage.deadline_at
            if not query.in_window(deadline) or stage.reached(deadline):
                continue
            if flow.complete(deadline) or flow.cancelled(deadline):
                continue
            counts[stage.type] = counts.get(stage.type, 0) + 1
    return misses


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
        window_flows = [flow for _, flow in inputs.window_flows]
        answer["funnel"] = funnel(window_flows, flow_types, inputs.invoiced, query)
        answer["stage_misses"] = stage_misses(window_flows, flow_types, query)
        if inputs.globals is not None and not query.filtered:
            answer["data_quality"] = {
                "uncorrelated_events": inputs.globals.uncorrelated_events,
                "dead_letters": dict(sorted(inputs.globals.dead_letters.items())),
                "silent_sources": list(inputs.globals.silent_sources),
            }
        answer["replays"] = {outcome: inputs.replays.get(outcome, 0) for outcome in REPLAY_OUTCOMES}
    return answer


def count_by(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
