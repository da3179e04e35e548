"""``probes.tracing``: the spans of a flow's trace built from its facts and ``now``: names, exact
times, deterministic parent/child IDs, links to upstream traceparents, status, for a complete, a
stuck, a cancelled and a clock-skewed flow."""

from __future__ import annotations

import calendar
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.events import CanonicalEvent, validate_event
from probes.evaluate import FlowFacts, evaluate_group
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.traceids import span_id, trace_id
from probes.tracing import FlowSpan, SpanLink, flow_spans, parse_traceparent, time_ns
from tests.support.builders import make_event

T = datetime(2026, 11, 20, 10, tzinfo=UTC)
CORR = "Q2C-TRACE-1"
ONB = f"contract_onboarding:{CORR}"
TP_SIGNED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP_PROJECT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
STAGES = ("customer.synced", "project.created", "billing_plan.created", "project.activated")


def h(hours: float) -> datetime:
    return T + timedelta(hours=hours)


def ns(at: datetime) -> int:
    """Nanoseconds since the epoch, computed independently of probes.tracing."""
    return calendar.timegm(at.utctimetuple()) * 10**9 + at.microsecond * 1000


def ev(
    type_: str, hours: float, data: dict[str, Any] | None = None, **attrs: Any
) -> CanonicalEvent:
    raw = make_event(type_, time=h(hours).isoformat(), correlationid=CORR, **attrs)
    if data is not None:
        raw["data"] = data
    elif "note" in raw["data"]:
        raw["data"] = {}
    return validate_event(raw)


def onboarding(*events: CanonicalEvent) -> FlowFacts:
    result = evaluate_group(CORR, events, DEFAULT_FLOW_TYPES)
    return next(f for f in result.flows if f.flow_id == ONB)


def by_name(spans: tuple[FlowSpan, ...]) -> dict[str, FlowSpan]:
    return {span.name: span for span in spans}


def complete_flow() -> FlowFacts:
    return onboarding(
        ev("contract.signed", 0, traceparent=TP_SIGNED),
        ev("customer.synced", 1),
        ev("project.created", 5, {"project_id": "PRJ-1"}, traceparent=TP_PROJECT),
        ev("billing_plan.created", 30),
        ev("project.activated", 50),
    )


def test_time_ns_is_exact_to_the_microsecond() -> None:
    at = datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)
    assert time_ns(at) == ns(at) == 1_795_168_800_123_456_000
    assert time_ns(T.astimezone(UTC)) == ns(T)


def test_complete_flow_layout_ids_and_times() -> None:
    spans = flow_spans(complete_flow(), h(200))
    assert [s.name for s in spans] == ["flow contract_onboarding"] + [f"stage {t}" for t in STAGES]
    root, *children = spans
    assert {s.trace_id for s in spans} == {trace_id(ONB)}
    assert root.span_id == span_id(ONB, "flow")
    assert root.parent_span_id is None
    for child, stage in zip(children, STAGES, strict=True):
        assert child.span_id == span_id(ONB, f"stage {stage}")
        assert child.parent_span_id == root.span_id
        assert child.start_ns == ns(T)  # every stage span starts at T0
        assert child.attributes["syncwatch.stage.reached"] is True
        assert child.attributes["syncwatch.stage.late"] is False
        assert child.ok and not child.error
    assert [c.end_ns for c in children] == [ns(h(1)), ns(h(5)), ns(h(30)), ns(h(50))]
    assert (root.start_ns, root.end_ns) == (ns(T), ns(h(50)))
    assert len({s.span_id for s in spans}) == len(spans)


def test_complete_flow_root_attributes_status_and_links() -> None:
    root = flow_spans(complete_flow(), h(200))[0]
    assert root.attributes["syncwatch.flow_id"] == ONB
    assert root.attributes["syncwatch.flow_type"] == "contract_onboarding"
    assert root.attributes["syncwatch.correlation_id"] == CORR
    assert root.attributes["syncwatch.state"] == "complete"
    assert root.attributes["syncwatch.deadline_at"] == h(72).isoformat()
    assert root.attributes["syncwatch.deadline_missed"] is False
    assert root.attributes["syncwatch.value"] == "125000.00"
    assert root.attributes["syncwatch.currency"] == "EUR"
    assert root.attributes["syncwatch.duration_seconds"] == 50 * 3600.0
    assert "syncwatch.stuck_stage" not in root.attributes
    assert root.ok and not root.error and root.status_message is None
    assert root.links == (
        SpanLink("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1),
        SpanLink("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0),
    )


def test_rebuilding_repeats_every_id_and_time() -> None:
    facts = complete_flow()
    assert flow_spans(facts, h(200)) == flow_spans(facts, h(300))


def test_stuck_flow_ends_now_with_error_and_integration_failure() -> None:
    failure = {"step": "project.created", "execution_id": "EX-9", "error": "timeout"}
    facts = onboarding(
        ev("contract.signed", 0),
        ev("customer.synced", 1),
        ev("integration.failed", 10, failure),
    )
    now = h(30)
    spans = by_name(flow_spans(facts, now))
    root = spans["flow contract_onboarding"]
    assert root.attributes["syncwatch.state"] == "stuck"
    assert root.attributes["syncwatch.stuck_stage"] == "project.created"
    assert root.attributes["syncwatch.stuck_queue"] == "integration_oncall"
    assert root.end_ns == ns(now)
    assert root.error and not root.ok
    assert root.status_message is not None and "project.created" in root.status_message

    stuck = spans["stage project.created"]
    assert (stuck.start_ns, stuck.end_ns) == (ns(T), ns(now))
    assert stuck.error
    assert stuck.attributes["syncwatch.stage.reached"] is False
    assert stuck.attributes["syncwatch.stage.late"] is True
    assert stuck.attributes["syncwatch.stage.queue"] == "pmo"
    assert stuck.attributes["syncwatch.integration.outcome"] == "failed"
    assert stuck.attributes["syncwatch.integration.execution_id"] == "EX-9"
    [event] = stuck.events
    assert event.name == "integration failure"
    assert event.time_ns == ns(h(10))
    assert event.attributes["syncwatch.integration.execution_id"] == "EX-9"

    waiting = spans["stage billing_plan.created"]  # deadline 48 h: not late yet
    assert waiting.end_ns == ns(now)
    assert waiting.attributes["syncwatch.stage.late"] is False
    assert not waiting.error and not waiting.ok
    assert spans["stage customer.synced"].end_ns == ns(h(1))


def test_failure_after_now_is_not_shown() -> None:
    failure = {"step": "project.created", "execution_id": "EX-9"}
    facts = onboarding(ev("contract.signed", 0), ev("integration.failed", 40, failure))
    stage = by_name(flow_spans(facts, h(30)))["stage project.created"]
    assert stage.events == ()
    assert "syncwatch.integration.outcome" not in stage.attributes


def test_cancelled_flow_ends_at_the_termination() -> None:
    facts = onboarding(
        ev("contract.signed", 0),
        ev("customer.synced", 1),
        ev("contract.terminated", 10, {"contract_id": "CTR-1"}),
        ev("project.created", 12),  # after the termination: changes nothing
    )
    spans = by_name(flow_spans(facts, h(100)))
    root = spans["flow contract_onboarding"]
    assert root.attributes["syncwatch.state"] == "cancelled"
    assert root.attributes["syncwatch.cancelled_at"] == h(10).isoformat()
    assert root.end_ns == ns(h(10))
    # terminated before its deadline: neither an error nor OK
    assert not root.error and not root.ok
    assert root.attributes["syncwatch.deadline_missed"] is False
    project = spans["stage project.created"]
    assert project.end_ns == ns(h(10))
    assert project.attributes["syncwatch.stage.reached"] is False
    assert project.attributes["syncwatch.stage.late"] is False
    assert spans["stage customer.synced"].end_ns == ns(h(1))


def test_cancelled_after_its_deadline_stays_missed() -> None:
    facts = onboarding(
        ev("contract.signed", 0),
        ev("contract.terminated", 80, {"contract_id": "CTR-1"}),
    )
    root = flow_spans(facts, h(100))[0]
    assert root.attributes["syncwatch.state"] == "cancelled"
    assert root.attributes["syncwatch.deadline_missed"] is True
    assert root.error
    assert by_name(flow_spans(facts, h(100)))["stage project.created"].attributes[
        "syncwatch.stage.late"
    ]


def test_clock_skew_and_out_of_order_stages_never_give_negative_spans() -> None:
    facts = onboarding(
        ev("contract.signed", 0),
        ev("project.created", -2),  # the ERP clock is behind the CLM's: reached at T0
        ev("billing_plan.created", 3),  # before customer.synced
        ev("customer.synced", 6),  # after its 4 h deadline
        ev("project.activated", 80),  # after the flow's 72 h deadline
    )
    spans = by_name(flow_spans(facts, h(100)))
    for span in spans.values():
        assert span.start_ns <= span.end_ns
    project = spans["stage project.created"]
    assert project.start_ns == project.end_ns == ns(T)
    assert spans["stage billing_plan.created"].end_ns == ns(h(3))
    late = spans["stage customer.synced"]
    assert late.end_ns == ns(h(6))
    assert late.attributes["syncwatch.stage.late"] is True
    assert late.error and late.status_message is not None
    root = spans["flow contract_onboarding"]
    assert root.attributes["syncwatch.state"] == "complete"
    assert root.attributes["syncwatch.deadline_missed"] is True
    assert root.error and not root.ok
    assert root.status_message is not None and "deadline" in root.status_message


def test_skipped_stage_of_a_complete_flow_ends_with_the_flow() -> None:
    facts = onboarding(
        ev("contract.signed", 0),
        ev("project.created", 5),
        ev("billing_plan.created", 30),
        ev("project.activated", 50),
    )
    skipped = by_name(flow_spans(facts, h(100)))["stage customer.synced"]
    assert skipped.end_ns == ns(h(50))
    assert skipped.attributes["syncwatch.stage.skipped"] is True
    assert skipped.attributes["syncwatch.stage.late"] is False
    assert not skipped.error


def test_open_flow_not_stuck_and_a_flow_that_does_not_exist_yet() -> None:
    facts = onboarding(ev("contract.signed", 0))
    root = flow_spans(facts, h(2))[0]
    assert root.attributes["syncwatch.state"] == "open"
    assert root.end_ns == ns(h(2))
    assert not root.error
    assert flow_spans(facts, h(-1)) == ()


def test_invalid_traceparents_are_not_linked() -> None:
    facts = dataclasses.replace(
        complete_flow(),
        traceparents=(TP_SIGNED, "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"),
    )
    assert [link.trace_id for link in flow_spans(facts, h(200))[0].links] == [TP_SIGNED[3:35]]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TP_SIGNED, SpanLink("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1)),
        # a future version may append fields
        (
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-extra",
            SpanLink("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 3),
        ),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", None),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        ("00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz", None),
        ("", None),
    ],
)
def test_parse_traceparent(header: str, expected: SpanLink | None) -> None:
    assert parse_traceparent(header) == expected
