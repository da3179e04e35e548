"""The weekly report's content, pure: built from the answers of the one KPI implementation
(:mod:`kpis.service`, the answers of ``GET /v1/kpis`` with each week's ``start`` and as_of) and the
stuck flows at the week's end (:func:`probes.flowquery.list_flows`). No number is computed here
that the KPI answer does not hold: the report picks, compares and orders.

Values are Decimal (exact: the answer's ratios and seconds are already rounded, money is a decimal
string) or None where the KPI is null (nothing due, nothing completed, no invoice posted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kpis.reports.week import IsoWeek, WeekWindow
from probes.flowtypes import FlowType
from probes.views import FlowSummary

COUNT, RATIO, SECONDS, MONEY = "count", "ratio", "seconds", "money"
#: Which way a KPI should move: a rise of ``HIGHER`` is good news, a rise of ``LOWER`` bad news;
#: ``None`` for volumes (more contracts due is neither).
HIGHER, LOWER = "higher", "lower"
DURATIONS = (("mean", "mean"), ("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("max", "max"))


@dataclass(frozen=True)
class Metric:
    """One KPI of the answer: where it is (``path`` into the answer of /v1/kpis), what it is."""

    label: str
    path: tuple[str, ...]
    kind: str  # count, ratio, seconds, money
    currency: str | None = None
    #: absent from the answer means zero (a currency or a step with nothing that week)
    missing_is_zero: bool = False
    better: str | None = LOWER  # HIGHER, LOWER or None


@dataclass(frozen=True)
class KpiLine:
    metric: Metric
    value: Decimal | None  # the week's
    previous: Decimal | None  # the week before's
    change: Decimal | None  # value - previous; None when either is null
    trend: tuple[Decimal | None, ...]  # the last 8 weeks, oldest first, this week last

    @property
    def verdict(self) -> str | None:
        """``good`` or ``bad`` news, by which way the KPI should move; None when it did not
        move, cannot be compared, or is a volume."""
        if not self.change or self.metric.better is None:
            return None
        return "good" if (self.change > 0) == (self.metric.better == HIGHER) else "bad"


@dataclass(frozen=True)
class KpiGroup:
    title: str
    lines: tuple[KpiLine, ...]


@dataclass(frozen=True)
class StuckFlow:
    flow_id: str
    contract: str  # the correlation ID, which names the contract across systems
    flow_type: str
    stage: str | None
    queue: str | None
    age_seconds: Decimal  # as_of - T0
    value_at_risk: Decimal | None
    currency: str | None


@dataclass(frozen=True)
class QueueAging:
    queue: str
    open: int
    oldest_age_seconds: Decimal | None
    aging: Mapping[str, int]  # lt_1d, 1d_3d, 3d_7d, gt_7d


@dataclass(frozen=True)
class WeeklyReport:
    window: WeekWindow
    trend_weeks: tuple[IsoWeek, ...]  # oldest first, the report's week last
    groups: tuple[KpiGroup, ...]
    stuck_total: int  # stuck flows at the week's end (``stuck`` lists the top ones)
    stuck: tuple[StuckFlow, ...]
    stuck_by_stage: Mapping[str, Mapping[str, int]]
    exceptions: tuple[QueueAging, ...]
    stage_misses: Mapping[str, Mapping[str, int]]
    replays: Mapping[str, int]
    funnel: tuple[tuple[str, int], ...]
    uncorrelated_events: int
    dead_letters: Mapping[str, int]
    silent_sources: tuple[Mapping[str, Any], ...]

    @property
    def week(self) -> IsoWeek:
        return self.window.week

    def lines(self) -> list[KpiLine]:
        return [line for group in self.groups for line in group.lines]

    @property
    def empty(self) -> bool:
        """Nothing at all to report for the week: every KPI null or zero, nothing stuck or open."""
        return (
            all(not line.value for line in self.lines())
            and self.stuck_total == 0
            and all(q.open == 0 for q in self.exceptions)
            and not any(self.replays.values())
            and not any(count for stages in self.stage_misses.values() for count in stages.values())
            and not any(count for _, count in self.funnel)
            and self.uncorrelated_events == 0
            and not self.dead_letters
            and not self.silent_sources
        )


def number(value: Any) -> Decimal | None:
    """The answer's number as an exact Decimal (floats via their shortest repr: 0.8417 is
    Decimal("0.8417"), as the JSON answer writes it)."""
    if value is None:
        return None
    if isinstance(value, bool):  # pragma: no cover - never in an answer
        raise TypeError("not a number")
    return Decimal(str(value))


def pick(answer: Mapping[str, Any], metric: Metric) -> Decimal | None:
    node: Any = answer
    for key in metric.path:
        if not isinstance(node, Mapping) or key not in node:
            return Decimal(0) if metric.missing_is_zero else None
        node = node[key]
    return number(node)


def line(metric: Metric, answers: Sequence[Mapping[str, Any]]) -> KpiLine:
    trend = tuple(pick(answer, metric) for answer in answers)
    value = trend[-1]
    previous = trend[-2] if len(trend) > 1 else None
    change = None if value is None or previous is None else value - previous
    return KpiLine(metric, value, previous, change, trend)


def _flow_metrics(flow_type: FlowType) -> list[Metric]:
    base = ("flows", flow_type.name)
    metrics = [
        Metric("due", (*base, "due"), COUNT, better=None),
        Metric("met", (*base, "met"), COUNT, better=HIGHER),
        Metric("success rate", (*base, "success_rate"), RATIO, better=HIGHER),
        Metric("completed", (*base, "completed"), COUNT, better=None),
    ]
    metrics += [
        Metric(f"duration {label}", (*base, "duration_seconds", key), SECONDS)
        for label, key in DURATIONS
    ]
    metrics += [
        Metric("open", (*base, "open"), COUNT, better=None),
        Metric("stuck", (*base, "stuck"), COUNT),
    ]
    return metrics


def _keys(answers: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    found: set[str] = set()
    for answer in answers:
        found |= set(answer.get(name) or {})
    return sorted(found)


def _business_metrics(answers: Sequence[Mapping[str, Any]]) -> list[Metric]:
    metrics = [
        Metric(
            f"revenue at risk ({currency})", ("revenue_at_risk", currency), MONEY, currency, True
        )
        for currency in _keys(answers, "revenue_at_risk")
    ]
    metrics += [
        Metric("invoice dispute rate", ("invoice_dispute_rate",), RATIO),
        Metric("duplicate projects", ("duplicate_projects",), COUNT),
        Metric("amendment conflicts", ("amendment_conflicts",), COUNT),
        Metric("uncorrelated events", ("uncorrelated_events",), COUNT),
    ]
    metrics += [
        Metric(f"integration failures at {step}", ("integration_failures", step), COUNT, None, True)
        for step in _keys(answers, "integration_failures")
    ]
    return metrics


def _queue_metrics(answers: Sequence[Mapping[str, Any]]) -> list[Metric]:
    return [
        Metric(f"{queue} open", ("exceptions", queue, "open"), COUNT, None, True)
        for queue in answers[-1]["exceptions"]
    ]


def kpi_groups(
    flow_types: Sequence[FlowType], answers: Sequence[Mapping[str, Any]]
) -> tuple[KpiGroup, ...]:
    groups = [
        KpiGroup(heading(ft.name), tuple(line(m, answers) for m in _flow_metrics(ft)))
        for ft in flow_types
    ]
    groups.append(KpiGroup("Business", tuple(line(m, answers) for m in _business_metrics(answers))))
    groups.append(
        KpiGroup("Exception queues", tuple(line(m, answers) for m in _queue_metrics(answers)))
    )
    return tuple(groups)


def heading(flow_type: str) -> str:
    """A flow type's name as a heading people read: ``contract_onboarding`` -> ``Contract
    onboarding``."""
    return flow_type.replace("_", " ").capitalize()


def stuck_flow(summary: FlowSummary) -> StuckFlow:
    flow = summary.flow
    return StuckFlow(
        flow_id=flow.flow_id,
        contract=flow.correlation_id,
        flow_type=flow.flow_type,
        stage=summary.stuck_stage,
        queue=summary.queue,
        age_seconds=Decimal(str(round(summary.age_seconds, 3))),
        value_at_risk=summary.value_at_risk,
        currency=flow.currency,
    )


def _aging(answer: Mapping[str, Any]) -> tuple[QueueAging, ...]:
    return tuple(
        QueueAging(
            queue=queue,
            open=entry["open"],
            oldest_age_seconds=number(entry["oldest_age_seconds"]),
            aging=dict(entry["aging"]),
        )
        for queue, entry in answer["exceptions"].items()
    )


def build_report(
    window: WeekWindow,
    trend_weeks: Sequence[IsoWeek],
    flow_types: Sequence[FlowType],
    answers: Sequence[Mapping[str, Any]],
    *,
    stuck_total: int,
    stuck: Sequence[FlowSummary],
) -> WeeklyReport:
    """``answers``: the KPI answers (with the further figures, unfiltered) of ``trend_weeks``,
    oldest first; the last is the report's week."""
    if len(answers) != len(trend_weeks) or not answers or trend_weeks[-1] != window.week:
        raise ValueError("one answer per trend week, the report's week last")
    answer = answers[-1]
    quality = answer.get("data_quality") or {}
    return WeeklyReport(
        window=window,
        trend_weeks=tuple(trend_weeks),
        groups=kpi_groups(flow_types, answers),
        stuck_total=stuck_total,
        stuck=tuple(stuck_flow(s) for s in stuck),
        stuck_by_stage={
            name: dict(figures["stuck_by_stage"]) for name, figures in answer["flows"].items()
        },
        exceptions=_aging(answer),
        stage_misses={name: dict(stages) for name, stages in answer["stage_misses"].items()},
        replays=dict(answer["replays"]),
        funnel=tuple((step["stage"], step["count"]) for step in answer["funnel"]),
        uncorrelated_events=int(quality.get("uncorrelated_events", 0)),
        dead_letters=dict(quality.get("dead_letters") or {}),
        silent_sources=tuple(quality.get("silent_sources") or ()),
    )
