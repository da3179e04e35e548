"""The OpenTelemetry trace of a business flow, as plain data. Pure: no I/O, ``now`` is an argument;
``syncwatch.telemetry`` turns these spans into SDK spans and exports them.

Layout of one flow's trace (its trace ID is ``traceids.trace_id(flow_id)``):

- a root span ``flow <flow_type>`` from T0 to ``completed_at``, ``cancelled_at``, or ``now`` while
  the flow is open (stuck or not); status ERROR when stuck or when it missed its deadline, OK when
  complete by its deadline; linked to the W3C ``traceparent`` of each of the flow's events (the
  technical calls that produced them), never parented on them;
- one child span ``stage <stage type>`` per stage, in declared order. Every stage span starts at
  T0: a stage's deadline is counted from T0, so the span's length is exactly what its deadline
  limits, and stages that came out of order (or with a clock behind T0) never give a negative or
  clamped span; the hop between two stages is the difference of their ends. It ends when the stage
  was reached, or, not reached, at ``now`` while the flow is open and at the flow's end once it is
  complete (the stage was skipped) or cancelled. Middleware failures of the stage are span events.

Span IDs are ``traceids.span_id(flow_id, span name)``: rebuilding the trace of a flow repeats every
ID, so a re-export replaces nothing and duplicates nothing in a backend that dedupes by ID. Times
are integer nanoseconds since the Unix epoch, exact (no float rounding)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from probes import views
from probes.evaluate import FlowFacts, StageFacts
from probes.traceids import span_id, trace_id

AttributeValue = str | bool | int | float

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = frozenset("0123456789abcdef")

ROOT_SPAN = "flow"  # the name of the root span's ID: span_id(flow_id, "flow")


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanLink:
    """An upstream span, from a W3C ``traceparent`` header."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    trace_flags: int  # 0..255; bit 0 = sampled


@dataclass(frozen=True)
class FlowSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None  # None: the root span
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    error: bool = False  # status ERROR (with ``status_message``)
    ok: bool = False  # status OK; neither: UNSET
    status_message: str | None = None
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()


def time_ns(value: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime, exactly."""
    return ((value - _EPOCH) // timedelta(microseconds=1)) * 1000


def parse_traceparent(header: str) -> SpanLink | None:
    """``00-<32 hex trace ID>-<16 hex span ID>-<2 hex flags>``; None when invalid (W3C Trace
    Context: lowercase hex, IDs not all zero, version ``ff`` forbidden, a future version may append
    fields after the flags)."""
    parts = header.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or not set(parts[0]) <= _HEX or parts[0] == "ff":
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    trace, span, flags = parts[1], parts[2], parts[3]
    if len(trace) != 32 or len(span) != 16 or len(flags) != 2:
        return None
    if not set(trace + span + flags) <= _HEX:
        return None
    if set(trace) == {"0"} or set(span) == {"0"}:
        return None
    return SpanLink(trace, span, int(flags, 16))


def missed_deadline(facts: FlowFacts, now: datetime) -> bool:
    """As of ``now`` the flow is due (flows.md) and did not meet its deadline: completed after
    it, cancelled after it passed, or still open past it."""
    if facts.complete(now):
        return not facts.met()
    if facts.cancelled(now):
        return facts.counts_as_due()
    return facts.deadline_at <= now


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _flow_end(facts: FlowFacts, now: datetime) -> datetime:
    if facts.complete(now) and facts.completed_at is not None:
        return facts.completed_at
    if facts.cancelled(now) and facts.cancelled_at is not None:
        return facts.cancelled_at
    return now


def _root(facts: FlowFacts, now: datetime, state: str) -> FlowSpan:
    end = _flow_end(facts, now)
    stuck = facts.stuck_stage(now)
    missed = missed_deadline(facts, now)
    attributes: dict[str, AttributeValue] = {
        "syncwatch.flow_id": facts.flow_id,
        "syncwatch.flow_type": facts.flow_type,
        "syncwatch.correlation_id": facts.correlation_id,
        "syncwatch.state": state,
        "syncwatch.t0": _iso(facts.t0),
        "syncwatch.deadline_at": _iso(facts.deadline_at),
        "syncwatch.deadline_missed": missed,
        "syncwatch.start_event.source": facts.start_source,
        "syncwatch.start_event.id": facts.start_event_id,
    }
    optional: dict[str, str | None] = {
        "syncwatch.subkey": facts.subkey,
        "syncwatch.value": None if facts.value is None else str(facts.value),
        "syncwatch.currency": facts.currency,
        "syncwatch.legal_entity": facts.legal_entity,
        "syncwatch.region": facts.region,
        "syncwatch.service_line": facts.service_line,
        "syncwatch.stuck_stage": None if stuck is None else stuck.type,
        "syncwatch.stuck_queue": facts.stuck_queue(now),
    }
    attributes.update({name: value for name, value in optional.items() if value is not None})
    if state == "complete" and facts.duration is not None:
        attributes["syncwatch.duration_seconds"] = facts.duration.total_seconds()
    if state == "cancelled" and facts.cancelled_at is not None:
        attributes["syncwatch.cancelled_at"] = _iso(facts.cancelled_at)
    message = None
    if stuck is not None:
        message = f"stuck on {stuck.type} since {_iso(stuck.deadline_at)}"
    elif missed:
        message = f"missed its deadline {_iso(facts.deadline_at)}"
    links = tuple(
        link for link in (parse_traceparent(tp) for tp in facts.traceparents) if link is not None
    )
    return FlowSpan(
        name=f"flow {facts.flow_type}",
        trace_id=trace_id(facts.flow_id),
        span_id=span_id(facts.flow_id, ROOT_SPAN),
        parent_span_id=None,
        start_ns=time_ns(facts.t0),
        end_ns=time_ns(max(end, facts.t0)),
        attributes=attributes,
        error=message is not None,
        ok=state == "complete" and not missed,
        status_message=message,
        links=links,
    )


def _stage(
    facts: FlowFacts, stage: StageFacts, now: datetime, state: str, stuck: StageFacts | None
) -> FlowSpan:
    name = f"stage {stage.type}"
    reached = stage.reached(now)
    end = stage.reached_at if reached and stage.reached_at is not None else _flow_end(facts, now)
    end = max(end, facts.t0)
    # late: reached after its deadline, or not reached and its deadline passed while the flow was
    # still waiting for it (a stage skipped by a complete flow is not late)
    late = end > stage.deadline_at and (reached or state != "complete")
    attributes: dict[str, AttributeValue] = {
        "syncwatch.stage": stage.type,
        "syncwatch.stage.queue": stage.queue,
        "syncwatch.stage.deadline_at": _iso(stage.deadline_at),
        "syncwatch.stage.reached": reached,
        "syncwatch.stage.late": late,
    }
    if not reached and state == "complete":
        attributes["syncwatch.stage.skipped"] = True
    mark = stage.latest_integration(now)
    if mark is not None:
        attributes["syncwatch.integration.outcome"] = "failed" if mark.failed else "succeeded"
        attributes["syncwatch.integration.event_id"] = mark.event_id
        attributes["syncwatch.integration.source"] = mark.source
        if mark.execution_id is not None:
            attributes["syncwatch.integration.execution_id"] = mark.execution_id
    events = []
    for failure in stage.integration:
        if failure.time > now or not failure.failed:
            continue
        event_attributes: dict[str, AttributeValue] = {
            "syncwatch.integration.source": failure.source,
            "syncwatch.integration.event_id": failure.event_id,
        }
        if failure.execution_id is not None:
            event_attributes["syncwatch.integration.execution_id"] = failure.execution_id
        events.append(SpanEvent("integration failure", time_ns(failure.time), event_attributes))
    message = None
    if stuck is not None and stuck.type == stage.type:
        message = f"stuck: not reached by its deadline {_iso(stage.deadline_at)}"
    elif late:
        message = f"late: deadline {_iso(stage.deadline_at)}"
    return FlowSpan(
        name=name,
        trace_id=trace_id(facts.flow_id),
        span_id=span_id(facts.flow_id, name),
        parent_span_id=span_id(facts.flow_id, ROOT_SPAN),
        start_ns=time_ns(facts.t0),
        end_ns=time_ns(end),
        attributes=attributes,
        error=message is not None,
        ok=reached and not late,
        status_message=message,
        events=tuple(events),
    )


def flow_spans(facts: FlowFacts, now: datetime) -> tuple[FlowSpan, ...]:
    """The spans of the flow's trace as of ``now``: the root first, then one per stage in declared
    order. Empty when the flow does not exist yet (T0 after ``now``)."""
    if not facts.exists(now):
        return ()
    state = views.state(facts, now)
    stuck = facts.stuck_stage(now)
    root = _root(facts, now, state)
    return (root, *(_stage(facts, stage, now, state, stuck) for stage in facts.stages))
