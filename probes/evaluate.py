"""Evaluating flows (``spec/flows.md``). Pure: no I/O, the instant is always an argument.

:func:`evaluate_group` turns the events of one correlation ID into :class:`FlowFacts`, which hold
only what does not depend on the instant (T0, the time each stage was reached, completion,
cancellation, deadlines, integration outcomes) and the operator findings with their ``opened_at``.
Because a stage is reached at the *earliest* time among its events, "reached as of T" is simply
"reached_at <= T": every as-of question (open, stuck, due, met, the stuck stage and its queue) is
answered from the facts by the methods below, for any instant, without the events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from core.events import CanonicalEvent, EventRejected, parse_decimal, parse_time
from probes.flowtypes import FlowType, Stage

ONBOARDING = "contract_onboarding"
AMENDMENT = "amendment_propagation"
MILESTONE = "milestone_billing"

INTEGRATION_FAILED = ("integration.failed", "integration.dead_lettered")
INTEGRATION_TYPES = ("integration.succeeded", *INTEGRATION_FAILED)
#: Data fields by which an integration event concerns one flow only (events.md).
FLOW_SCOPED_FIELDS = ("amendment_id", "milestone_id")
REQUIRED_CONTRACT_DATA = ("contract_value", "currency", "legal_entity")
MONEY_TOLERANCE = Decimal("0.01")


@dataclass(frozen=True, order=True)
class IntegrationMark:
    """A middleware event for one stage of one flow, ordered by (time, source, id)."""

    time: datetime
    source: str
    event_id: str
    failed: bool
    execution_id: str | None = None


@dataclass(frozen=True)
class StageFacts:
    type: str
    queue: str
    deadline_at: datetime
    reached_at: datetime | None  # earliest event, never before T0; None: never reached
    integration: tuple[IntegrationMark, ...] = ()

    def reached(self, at: datetime) -> bool:
        return self.reached_at is not None and self.reached_at <= at

    def latest_integration(self, at: datetime) -> IntegrationMark | None:
        latest = None
        for mark in self.integration:
            if mark.time > at:
                break
            latest = mark
        return latest

    def failing(self, at: datetime) -> bool:
        """As of ``at``, the latest middleware event for this stage is a failure."""
        mark = self.latest_integration(at)
        return mark is not None and mark.failed


@dataclass(frozen=True)
class StuckPeriod:
    stage: StageFacts
    queue: str  # as of the period's end, or as of now while it lasts
    ended_at: datetime | None  # None: still stuck

    @property
    def opened_at(self) -> datetime:
        """flows.md: a stuck finding opens at the stuck stage's deadline."""
        return self.stage.deadline_at


@dataclass(frozen=True)
class StuckSpan:
    """A stretch of time in which a flow is stuck on one stage in one queue: the flow is stuck
    there at T exactly when ``T > opened_at`` (the stage's deadline), ``T >= since`` and
    ``T < until`` (None: for good). Derived from the facts alone; the KPIs count them by SQL."""

    stage: str
    queue: str
    opened_at: datetime
    since: datetime
    until: datetime | None


@dataclass(frozen=True)
class FlowFacts:
    flow_id: str
    flow_type: str
    correlation_id: str
    subkey: str | None
    t0: datetime
    start_source: str
    start_event_id: str
    deadline_at: datetime
    stages: tuple[StageFacts, ...]
    completed_at: datetime | None
    cancelled_at: datetime | None  # set only when not complete by the termination
    legal_entity: str | None = None  # dimensions, from the correlation's contract.signed
    region: str | None = None
    service_line: str | None = None
    value: Decimal | None = None  # contract value, or the milestone amount
    currency: str | None = None
    traceparents: tuple[str, ...] = field(default=())

    def exists(self, at: datetime) -> bool:
        return self.t0 <= at

    def complete(self, at: datetime) -> bool:
        return self.completed_at is not None and self.completed_at <= at

    def cancelled(self, at: datetime) -> bool:
        return self.cancelled_at is not None and self.cancelled_at <= at

    def open(self, at: datetime) -> bool:
        return self.exists(at) and not self.complete(at) and not self.cancelled(at)

    def stuck_stage(self, at: datetime) -> StageFacts | None:
        """The first stage, in declared order, not reached by ``at`` whose deadline is before it."""
        if not self.open(at):
            return None
        for stage in self.stages:
            if not stage.reached(at) and stage.deadline_at < at:
                return stage
        return None

    def stuck(self, at: datetime) -> bool:
        return self.stuck_stage(at) is not None

    def stuck_queue(self, at: datetime) -> str | None:
        stage = self.stuck_stage(at)
        if stage is None:
            return None
        return "integration_oncall" if stage.failing(at) else stage.queue

    def stuck_periods(self, now: datetime) -> list[StuckPeriod]:
        """Every period, up to ``now``, in which the flow was stuck, one per stuck stage: the
        history of its ``stuck`` findings, derived from the facts alone (so it does not depend on
        when the probes happened to look). A stage is the stuck stage at T when it is not reached,
        its deadline is before T and every earlier stage is reached by T; the period ends when the
        stage is reached or the flow completes or is cancelled."""
        periods = []
        earlier_reached = self.t0
        ends = [t for t in (self.completed_at, self.cancelled_at) if t is not None]
        flow_end = min(ends) if ends else None
        for stage in self.stages:
            start = max(stage.deadline_at, earlier_reached)
            end = stage.reached_at
            if flow_end is not None and (end is None or flow_end < end):
                end = flow_end
            # stuck at some T <= now: T > deadline and T >= the earlier stages' reached times
            stuck_by_now = stage.deadline_at < now and earlier_reached <= now
            if stuck_by_now and (end is None or start < end):
                closed = end is not None and end <= now
                last = end if closed and end is not None else now
                queue = "integration_oncall" if stage.failing(last) else stage.queue
                periods.append(StuckPeriod(stage, queue, end if closed else None))
            if stage.reached_at is None:
                break  # while it is missing, no later stage can be the stuck stage
            earlier_reached = max(earlier_reached, stage.reached_at)
        return periods

    def stuck_spans(self) -> list[StuckSpan]:
        """Every span of time, past or future, in which the flow is stuck: for each stage, while
        it is the stuck stage (its deadline passed, every earlier stage reached, itself not, the
        flow neither complete nor cancelled), split where its queue changes (the latest
        middleware event for the stage failing or not). ``stuck_stage(T)`` and ``stuck_queue(T)``
        agree with these spans at every T (a property test holds them to it)."""
        spans: list[StuckSpan] = []
        earlier_reached = self.t0
        ends = [t for t in (self.completed_at, self.cancelled_at) if t is not None]
        flow_end = min(ends) if ends else None
        for stage in self.stages:
            end = stage.reached_at
            if flow_end is not None and (end is None or flow_end < end):
                end = flow_end
            if end is None or max(stage.deadline_at, earlier_reached) < end:
                spans += _queue_spans(stage, earlier_reached, end)
            if stage.reached_at is None:
                break  # while it is missing, no later stage can be the stuck stage
            earlier_reached = max(earlier_reached, stage.reached_at)
        return spans

    def counts_as_due(self) -> bool:
        """A cancelled flow is due only when its deadline was not after the termination."""
        return self.cancelled_at is None or self.deadline_at <= self.cancelled_at

    def due_in(self, start: datetime, end: datetime) -> bool:
        """Due in the half-open window (start, end]."""
        return start < self.deadline_at <= end and self.counts_as_due()

    def met(self) -> bool:
        return self.completed_at is not None and self.completed_at <= self.deadline_at

    @property
    def duration(self) -> timedelta | None:
        return None if self.completed_at is None else self.completed_at - self.t0

    def next_check_at(self, now: datetime) -> datetime | None:
        """When time alone can next change this flow's state: the earliest deadline, not passed
        at ``now``, of a stage not reached. None once complete or cancelled."""
        if self.completed_at is not None or self.cancelled_at is not None:
            return None
        upcoming = [
            s.deadline_at for s in self.stages if s.reached_at is None and s.deadline_at >= now
        ]
        return min(upcoming) if upcoming else None


def _queue_spans(stage: StageFacts, since: datetime, end: datetime | None) -> list[StuckSpan]:
    """The stage's stuck time from ``since`` to ``end``, split by its queue at each instant."""
    oncall = "integration_oncall"
    cuts: list[tuple[datetime, str]] = []  # (time, queue from then on); the last mark of a time
    for mark in stage.integration:
        queue = oncall if mark.failed else stage.queue
        if cuts and cuts[-1][0] == mark.time:
            cuts[-1] = (mark.time, queue)
        else:
            cuts.append((mark.time, queue))
    pieces: list[tuple[datetime, datetime | None, str]] = []
    start, queue = since, stage.queue
    for at, then in cuts:
        if at <= start:
            queue = then  # already the latest middleware outcome when the span starts
        elif then != queue:
            pieces.append((start, at, queue))
            start, queue = at, then
    pieces.append((start, None, queue))
    spans = []
    for piece_start, piece_end, piece_queue in pieces:
        until = piece_end if end is None or (piece_end is not None and piece_end < end) else end
        if until is not None and (until <= piece_start or until <= stage.deadline_at):
            continue  # empty: no instant after the deadline, from its start, before its end
        spans.append(StuckSpan(stage.type, piece_queue, stage.deadline_at, piece_start, until))
    return spans


@dataclass(frozen=True)
class FindingFacts:
    """A finding that an operator resolves (``stuck`` findings are derived from FlowFacts)."""

    kind: str
    flow_id: str
    queue: str
    opened_at: datetime
    key: str  # unique with kind and flow_id: the invoice of an amendment conflict, else ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupResult:
    flows: tuple[FlowFacts, ...]
    findings: tuple[FindingFacts, ...]


def _order(event: CanonicalEvent) -> tuple[datetime, str, str]:
    return (event.time, event.source, event.id)


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_decimal(value, "value")
    except EventRejected:
        return None


def flow_id(flow_type: str, correlation_id: str, subkey: str | None) -> str:
    return (
        f"{flow_type}:{correlation_id}"
        if subkey is None
        else f"{flow_type}:{correlation_id}:{subkey}"
    )


def _matches(flow_type: FlowType, event: CanonicalEvent) -> bool:
    return all(event.data.get(name) == value for name, value in flow_type.when.items())


def _concerns(event: CanonicalEvent, flow_type: FlowType, subkey: str | None) -> bool:
    """Whether an integration event concerns a flow: events.md's scoping rule."""
    scoped = [name for name in FLOW_SCOPED_FIELDS if event.data.get(name) is not None]
    if not scoped:
        return True
    return flow_type.key in scoped and event.data.get(flow_type.key) == subkey


def _stage_facts(
    stage: Stage,
    flow_type: FlowType,
    subkey: str | None,
    t0: datetime,
    events: Sequence[CanonicalEvent],
    until: datetime | None,
) -> StageFacts:
    reached: datetime | None = None
    marks = []
    for event in events:
        if until is not None and event.time > until:
            break  # events after the termination change nothing
        if event.type == stage.type:
            if flow_type.key is not None and event.data.get(flow_type.key) != subkey:
                continue
            if reached is None:
                reached = max(event.time, t0)  # clock skew: before T0 counts as at T0
        elif (
            event.type in INTEGRATION_TYPES
            and event.data.get("step") == stage.type
            and _concerns(event, flow_type, subkey)
        ):
            marks.append(
                IntegrationMark(
                    event.time,
                    event.source,
                    event.id,
                    event.type in INTEGRATION_FAILED,
                    _text(event.data, "execution_id"),
                )
            )
    return StageFacts(stage.type, stage.queue, t0 + stage.deadline, reached, tuple(marks))


def evaluate_group(
    correlation_id: str, events: Iterable[CanonicalEvent], flow_types: Sequence[FlowType]
) -> GroupResult:
    """The flows and operator findings of one correlation ID, from all its events."""
    ordered = sorted(events, key=_order)
    contract = next((e for e in ordered if e.type == "contract.signed"), None)
    terminated = next((e.time for e in ordered if e.type == "contract.terminated"), None)
    contract_data = contract.data if contract is not None else {}

    flows: list[FlowFacts] = []
    for flow_type in flow_types:
        starts: dict[str | None, CanonicalEvent] = {}
        for event in ordered:
            if event.type != flow_type.start or not _matches(flow_type, event):
                continue
            subkey = _text(event.data, flow_type.key) if flow_type.key else None
            if flow_type.key and subkey is None:
                continue
            starts.setdefault(subkey, event)  # the earliest start event wins
        for subkey, start in starts.items():
            flows.append(
                _flow(flow_type, correlation_id, subkey, start, ordered, terminated, contract_data)
            )
    findings = _findings(flows, ordered, contract)
    return GroupResult(tuple(flows), tuple(findings))


def _flow(
    flow_type: FlowType,
    correlation_id: str,
    subkey: str | None,
    start: CanonicalEvent,
    ordered: Sequence[CanonicalEvent],
    terminated: datetime | None,
    contract_data: dict[str, Any],
) -> FlowFacts:
    t0 = start.time
    stages = tuple(
        _stage_facts(stage, flow_type, subkey, t0, ordered, terminated)
        for stage in flow_type.stages
    )
    completed_at = stages[-1].reached_at
    cancelled_at = terminated if terminated is not None and completed_at is None else None
    data = start.data
    value = _decimal(data.get("contract_value", data.get("amount")))
    if value is None and flow_type.key == "milestone_id":
        value = _contract_milestone_amount(contract_data, subkey)
    currency = _text(data, "currency") or _text(contract_data, "currency")
    traceparents = tuple(
        sorted({e.traceparent for e in ordered if e.traceparent and _in_flow(e, flow_type, subkey)})
    )
    return FlowFacts(
        flow_id=flow_id(flow_type.name, correlation_id, subkey),
        flow_type=flow_type.name,
        correlation_id=correlation_id,
        subkey=subkey,
        t0=t0,
        start_source=start.source,
        start_event_id=start.id,
        deadline_at=t0 + flow_type.deadline,
        stages=stages,
        completed_at=completed_at,
        cancelled_at=cancelled_at,
        # flows.md: attributes come from the start event; a start event that has none (a
        # milestone.completed) takes the contract's, which the KPI filters go by (kpis.md)
        legal_entity=_text(data, "legal_entity") or _text(contract_data, "legal_entity"),
        region=_text(data, "region") or _text(contract_data, "region"),
        service_line=_text(data, "service_line") or _text(contract_data, "service_line"),
        value=value,
        currency=currency,
        traceparents=traceparents,
    )


def _in_flow(event: CanonicalEvent, flow_type: FlowType, subkey: str | None) -> bool:
    if event.type == flow_type.start or flow_type.stage(event.type) is not None:
        return flow_type.key is None or event.data.get(flow_type.key) == subkey
    return False


def _contract_milestone_amount(
    contract_data: dict[str, Any], milestone: str | None
) -> Decimal | None:
    for item in contract_data.get("milestones") or ():
        if isinstance(item, dict) and item.get("milestone_id") == milestone:
            return _decimal(item.get("amount"))
    return None


def _effective(start_data: dict[str, Any], default: datetime) -> datetime:
    value = start_data.get("effective_date")
    if not isinstance(value, str):
        return default
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        return parse_time(value, "effective_date")
    except (ValueError, EventRejected):
        return default


def _milestone_map(value: Any) -> dict[str, Decimal | None]:
    result: dict[str, Decimal | None] = {}
    for item in value or ():
        if isinstance(item, dict) and isinstance(item.get("milestone_id"), str):
            result[item["milestone_id"]] = _decimal(item.get("amount"))
    return result


def _findings(
    flows: Sequence[FlowFacts], ordered: Sequence[CanonicalEvent], contract: CanonicalEvent | None
) -> list[FindingFacts]:
    findings: list[FindingFacts] = []
    for flow in flows:
        if flow.flow_type == ONBOARDING and contract is not None:
            findings.extend(_onboarding_findings(flow, ordered, contract))
        elif flow.flow_type == AMENDMENT:
            findings.extend(_amendment_conflicts(flow, ordered))
    return findings


def _onboarding_findings(
    flow: FlowFacts, ordered: Sequence[CanonicalEvent], contract: CanonicalEvent
) -> list[FindingFacts]:
    findings = []
    missing = [name for name in REQUIRED_CONTRACT_DATA if contract.data.get(name) is None]
    if missing:
        findings.append(
            FindingFacts(
                "contract_data_incomplete",
                flow.flow_id,
                "legal_ops",
                flow.t0,
                "",
                {"missing": missing},
            )
        )
    projects: list[str] = []
    for event in ordered:
        project = _text(event.data, "project_id") if event.type == "project.created" else None
        if project is not None and project not in projects:
            projects.append(project)
            if len(projects) == 2:
                findings.append(
                    FindingFacts(
                        "duplicate_project",
                        flow.flow_id,
                        "pmo",
                        max(event.time, flow.t0),  # clock skew: not before the flow exists
                        "",
                        {"project_ids": projects[:]},
                    )
                )
    plan = next((e for e in ordered if e.type == "billing_plan.created"), None)
    if plan is not None:
        differences = _term_differences(
            _milestone_map(contract.data.get("milestones")),
            _milestone_map(plan.data.get("milestones")),
        )
        if differences:
            findings.append(
                FindingFacts(
                    "term_mismatch",
                    flow.flow_id,
                    "finance_ops",
                    max(plan.time, flow.t0),  # clock skew: not before the flow exists
                    "",
                    {"differences": differences},
                )
            )
    return findings


def _term_differences(
    contract: dict[str, Decimal | None], plan: dict[str, Decimal | None]
) -> list[str]:
    differences = [f"missing {m}" for m in contract if m not in plan]
    differences += [f"extra {m}" for m in plan if m not in contract]
    for milestone, amount in contract.items():
        planned = plan.get(milestone)
        if amount is not None and planned is not None and abs(amount - planned) > MONEY_TOLERANCE:
            differences.append(f"amount {milestone}: {amount} != {planned}")
    return differences


def _amendment_conflicts(flow: FlowFacts, ordered: Sequence[CanonicalEvent]) -> list[FindingFacts]:
    start = next(e for e in ordered if (e.source, e.id) == (flow.start_source, flow.start_event_id))
    threshold = max(flow.t0, _effective(start.data, start.time))
    seen: set[str] = set()
    findings = []
    for event in ordered:
        if event.type != "invoice.posted":
            continue
        invoice = _text(event.data, "invoice_id")
        if invoice is None or invoice in seen:
            continue
        seen.add(invoice)
        if event.time >= threshold and not (
            flow.completed_at is not None and flow.completed_at <= event.time
        ):
            findings.append(
                FindingFacts(
                    "amendment_conflict",
                    flow.flow_id,
                    "finance_ops",
                    event.time,
                    invoice,
                    {"invoice_id": invoice, "amendment_id": flow.subkey},
                )
            )
    return findings
