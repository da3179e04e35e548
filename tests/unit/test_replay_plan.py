"""The pure choices of a replay (alerts/replay.py): the guardrails of ``plan`` in their order, the
latest failure event, the follow-up verdict, and the filling of templates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from alerts.replay import (
    History,
    Plan,
    Refusal,
    fill,
    fill_body,
    follow_up,
    latest_failure,
    plan,
)
from core.replay_settings import ReplayTarget
from probes.evaluate import AMENDMENT, FlowFacts, IntegrationMark, StageFacts

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOW = T0 + 5 * HOUR
MULE = "middleware/mulesoft"
CLEAN = History(recent_replays=0, in_progress=False, open_amendment_conflict=False)
HTTP = ReplayTarget.model_validate({"http": {"url": "http://mule.test/x/{execution_id}/retry"}})
NO_EXECUTION = ReplayTarget.model_validate({"http": {"url": "http://mule.test/c/{correlation_id}"}})
TARGETS = {MULE: HTTP}


def mark(
    hours: float,
    *,
    failed: bool = True,
    execution_id: str | None = "EX-1",
    source: str = MULE,
    event_id: str | None = None,
) -> IntegrationMark:
    return IntegrationMark(
        time=T0 + timedelta(hours=hours),
        source=source,
        event_id=event_id or f"int-{hours}",
        failed=failed,
        execution_id=execution_id,
    )


def stage(
    type: str = "customer.synced",
    deadline_hours: float = 4,
    reached_hours: float | None = None,
    marks: tuple[IntegrationMark, ...] = (),
    queue: str = "finance_ops",
) -> StageFacts:
    return StageFacts(
        type=type,
        queue=queue,
        deadline_at=T0 + timedelta(hours=deadline_hours),
        reached_at=None if reached_hours is None else T0 + timedelta(hours=reached_hours),
        integration=marks,
    )


def facts(
    *stages: StageFacts,
    flow_type: str = "contract_onboarding",
    completed_hours: float | None = None,
    cancelled_hours: float | None = None,
) -> FlowFacts:
    return FlowFacts(
        flow_id=f"{flow_type}:Q2C-1",
        flow_type=flow_type,
        correlation_id="Q2C-1",
        subkey=None,
        t0=T0,
        start_source="clm/ironclad",
        start_event_id="cs-1",
        deadline_at=T0 + 72 * HOUR,
        stages=stages,
        completed_at=None if completed_hours is None else T0 + timedelta(hours=completed_hours),
        cancelled_at=None if cancelled_hours is None else T0 + timedelta(hours=cancelled_hours),
    )


def failing_flow(**kwargs: object) -> FlowFacts:
    return facts(
        stage(marks=(mark(1),)),
        stage("project.created", 24),
        **kwargs,  # type: ignore[arg-type]
    )


def refusal(decision: Plan | Refusal) -> str:
    assert isinstance(decision, Refusal), decision
    assert decision.message
    return decision.code


# --- plan ---


def test_a_flow_stuck_on_a_failure_gets_a_plan() -> None:
    decision = plan(failing_flow(), NOW, CLEAN, TARGETS)
    assert isinstance(decision, Plan)
    assert decision.stage == "customer.synced"
    assert decision.source == MULE
    assert decision.failure.execution_id == "EX-1"


def test_not_stuck_before_the_deadline_and_exactly_at_it() -> None:
    # stuck when the deadline T0 + d < as_of: not at the deadline itself
    assert refusal(plan(failing_flow(), T0 + 3 * HOUR, CLEAN, TARGETS)) == "not_stuck"
    assert refusal(plan(failing_flow(), T0 + 4 * HOUR, CLEAN, TARGETS)) == "not_stuck"
    assert isinstance(
        plan(failing_flow(), T0 + 4 * HOUR + timedelta(seconds=1), CLEAN, TARGETS), Plan
    )


def test_complete_and_cancelled_flows_are_not_stuck() -> None:
    complete = plan(failing_flow(completed_hours=4.5), NOW, CLEAN, TARGETS)
    assert refusal(complete) == "not_stuck"
    assert isinstance(complete, Refusal) and "complete" in complete.message
    cancelled = plan(failing_flow(cancelled_hours=4.5), NOW, CLEAN, TARGETS)
    assert refusal(cancelled) == "not_stuck"
    assert isinstance(cancelled, Refusal) and "cancelled" in cancelled.message
    # not_stuck is checked first: even forced, even with every other guardrail tripped
    worst = History(recent_replays=99, in_progress=True, open_amendment_conflict=True)
    assert refusal(plan(failing_flow(completed_hours=1), NOW, worst, {}, force=True)) == (
        "not_stuck"
    )


def test_the_stuck_stage_is_the_first_unreached_past_its_deadline() -> None:
    flow = facts(
        stage(reached_hours=1),
        stage("project.created", 2, marks=(mark(1.5, execution_id="EX-P"),)),
    )
    decision = plan(flow, NOW, CLEAN, TARGETS)
    assert isinstance(decision, Plan)
    assert (decision.stage, decision.failure.execution_id) == ("project.created", "EX-P")


def test_not_on_an_integration_failure_unless_forced() -> None:
    recovered = facts(stage(marks=(mark(1, execution_id="EX-F"), mark(2, failed=False))))
    decision = plan(recovered, NOW, CLEAN, TARGETS)
    assert refusal(decision) == "not_on_integration_failure"
    assert isinstance(decision, Refusal) and decision.stage == "customer.synced"
    forced = plan(recovered, NOW, CLEAN, TARGETS, force=True)
    assert isinstance(forced, Plan)
    assert forced.failure.execution_id == "EX-F"  # the latest failure, before the success
    silent = facts(stage())
    assert refusal(plan(silent, NOW, CLEAN, TARGETS)) == "not_on_integration_failure"
    assert refusal(plan(silent, NOW, CLEAN, TARGETS, force=True)) == "no_failure_event"


def test_a_failure_after_now_does_not_count() -> None:
    later = facts(stage(marks=(mark(6),)))
    assert refusal(plan(later, NOW, CLEAN, TARGETS)) == "not_on_integration_failure"
    assert refusal(plan(later, NOW, CLEAN, TARGETS, force=True)) == "no_failure_event"


def test_in_progress() -> None:
    history = History(recent_replays=0, in_progress=True, open_amendment_conflict=False)
    assert refusal(plan(failing_flow(), NOW, history, TARGETS)) == "in_progress"


@pytest.mark.parametrize(
    ("recent", "limit", "refused"), [(2, 3, False), (3, 3, True), (0, 1, False), (1, 1, True)]
)
def test_too_many_replays(recent: int, limit: int, refused: bool) -> None:
    history = History(recent_replays=recent, in_progress=False, open_amendment_conflict=False)
    decision = plan(failing_flow(), NOW, history, TARGETS, max_per_flow=limit)
    if refused:
        assert refusal(decision) == "too_many_replays"
        assert isinstance(decision, Refusal) and "24 h" in decision.message
    else:
        assert isinstance(decision, Plan)


def test_too_many_replays_names_the_period() -> None:
    history = History(recent_replays=3, in_progress=False, open_amendment_conflict=False)
    decision = plan(failing_flow(), NOW, history, TARGETS, per_flow_period=timedelta(hours=6))
    assert isinstance(decision, Refusal) and "6 h" in decision.message


def test_invoice_against_outdated_terms_only_for_amendment_flows() -> None:
    conflict = History(recent_replays=0, in_progress=False, open_amendment_conflict=True)
    amendment = facts(
        stage("billing_plan.updated", 24, marks=(mark(1),)),
        flow_type=AMENDMENT,
    )
    assert refusal(plan(amendment, T0 + 25 * HOUR, conflict, TARGETS)) == (
        "invoice_against_outdated_terms"
    )
    assert refusal(plan(amendment, T0 + 25 * HOUR, conflict, TARGETS, force=True)) == (
        "invoice_against_outdated_terms"
    )
    assert isinstance(plan(amendment, T0 + 25 * HOUR, CLEAN, TARGETS), Plan)
    # an onboarding flow is not refused for it
    assert isinstance(plan(failing_flow(), NOW, conflict, TARGETS), Plan)


def test_no_target_for_the_source() -> None:
    flow = facts(stage(marks=(mark(1, source="middleware/boomi"),)))
    decision = plan(flow, NOW, CLEAN, TARGETS)
    assert refusal(decision) == "no_target"
    assert isinstance(decision, Refusal) and "middleware/boomi" in decision.message
    assert refusal(plan(failing_flow(), NOW, CLEAN, {})) == "no_target"


def test_no_execution_id_only_when_the_target_needs_one() -> None:
    flow = facts(stage(marks=(mark(1, execution_id=None),)))
    assert refusal(plan(flow, NOW, CLEAN, TARGETS)) == "no_execution_id"
    assert isinstance(plan(flow, NOW, CLEAN, {MULE: NO_EXECUTION}), Plan)
    amqp = ReplayTarget.model_validate(
        {"amqp": {"url_env": "PATH", "exchange": "x", "routing_key": "{flow_type}"}}
    )
    assert isinstance(plan(flow, NOW, CLEAN, {MULE: amqp}), Plan)
    header = ReplayTarget.model_validate(
        {"http": {"url": "http://m.test/r", "headers": {"X-Execution": "{execution_id}"}}}
    )
    assert refusal(plan(flow, NOW, CLEAN, {MULE: header})) == "no_execution_id"
    body = ReplayTarget.model_validate(
        {"http": {"url": "http://m.test/r", "body": {"ids": ["{execution_id}"]}}}
    )
    assert refusal(plan(flow, NOW, CLEAN, {MULE: body})) == "no_execution_id"


def test_the_guardrails_order() -> None:
    """Each guardrail is answered before the ones after it."""
    everything = History(recent_replays=5, in_progress=True, open_amendment_conflict=True)
    amendment = facts(
        stage(
            "billing_plan.updated",
            24,
            marks=(mark(1, execution_id=None, source="middleware/boomi"),),
        ),
        flow_type=AMENDMENT,
    )
    at = T0 + 25 * HOUR
    assert refusal(plan(amendment, at, everything, TARGETS)) == "in_progress"
    fewer = History(recent_replays=5, in_progress=False, open_amendment_conflict=True)
    assert refusal(plan(amendment, at, fewer, TARGETS)) == "too_many_replays"
    fewer = History(recent_replays=0, in_progress=False, open_amendment_conflict=True)
    assert refusal(plan(amendment, at, fewer, TARGETS)) == "invoice_against_outdated_terms"
    assert refusal(plan(amendment, at, CLEAN, TARGETS)) == "no_target"
    assert refusal(plan(amendment, at, CLEAN, {"middleware/boomi": HTTP})) == "no_execution_id"


# --- latest_failure ---


def test_latest_failure() -> None:
    marks = (
        mark(1, execution_id="A"),
        mark(2, failed=False, execution_id="OK"),
        mark(3, execution_id="B"),
        mark(7, execution_id="LATER"),
    )
    facts_stage = stage(marks=marks)
    assert latest_failure(facts_stage, T0) is None
    found = latest_failure(facts_stage, T0 + 1 * HOUR)
    assert found is not None and found.execution_id == "A"
    found = latest_failure(facts_stage, T0 + 2 * HOUR)
    assert found is not None and found.execution_id == "A"
    found = latest_failure(facts_stage, NOW)
    assert found is not None and found.execution_id == "B"
    assert latest_failure(stage(), NOW) is None


# --- follow_up ---

UNTIL = NOW + HOUR


def test_follow_up_effective_once_the_stage_is_reached() -> None:
    flow = facts(stage(reached_hours=5.5, marks=(mark(1),)))
    assert follow_up(flow, "customer.synced", NOW + 0.25 * HOUR, UNTIL) is None
    assert follow_up(flow, "customer.synced", NOW + 0.5 * HOUR, UNTIL) == (
        "effective",
        T0 + 5.5 * HOUR,
    )
    assert follow_up(flow, "customer.synced", UNTIL + HOUR, UNTIL) == (
        "effective",
        T0 + 5.5 * HOUR,
    )


def test_follow_up_ineffective_after_the_window() -> None:
    flow = facts(stage(marks=(mark(1),)))
    assert follow_up(flow, "customer.synced", UNTIL - timedelta(seconds=1), UNTIL) is None
    assert follow_up(flow, "customer.synced", UNTIL, UNTIL) == ("ineffective", None)


def test_follow_up_judges_as_of_the_end_of_the_window() -> None:
    """Reached only after the window: ineffective, however late the follow-up runs."""
    flow = facts(stage(reached_hours=7, marks=(mark(1),)))
    assert follow_up(flow, "customer.synced", T0 + 8 * HOUR, UNTIL) == ("ineffective", None)
    reached_at_the_end = facts(stage(reached_hours=6, marks=(mark(1),)))
    assert follow_up(reached_at_the_end, "customer.synced", T0 + 8 * HOUR, UNTIL) == (
        "effective",
        T0 + 6 * HOUR,
    )


def test_follow_up_complete_and_cancelled() -> None:
    complete = facts(
        stage(marks=(mark(1),)),
        stage("project.activated", 72, reached_hours=5.5),
        completed_hours=5.5,
    )
    assert follow_up(complete, "customer.synced", NOW + HOUR, UNTIL) == (
        "effective",
        T0 + 5.5 * HOUR,
    )
    cancelled = facts(stage(marks=(mark(1),)), cancelled_hours=5.5)
    assert follow_up(cancelled, "customer.synced", NOW + 0.25 * HOUR, UNTIL) is None
    assert follow_up(cancelled, "customer.synced", NOW + 0.5 * HOUR, UNTIL) == (
        "ineffective",
        None,
    )


def test_follow_up_only_the_replayed_stage() -> None:
    flow = facts(stage(marks=(mark(1),)), stage("project.created", 24, reached_hours=5.5))
    assert follow_up(flow, "customer.synced", UNTIL, UNTIL) == ("ineffective", None)
    assert follow_up(flow, "project.created", UNTIL, UNTIL) == ("effective", T0 + 5.5 * HOUR)


# --- templates ---


def test_fill_and_fill_body() -> None:
    values = {"execution_id": "EX-9", "correlation_id": "Q2C-1", "stage": "project.created"}
    assert fill("http://m.test/{execution_id}/r?c={correlation_id}", values) == (
        "http://m.test/EX-9/r?c=Q2C-1"
    )
    assert fill_body(None, values) is None
    body = fill_body(
        {
            "run": "{execution_id}",
            "n": 3,
            "tags": ["{stage}", True],
            "x": {"c": "{correlation_id}"},
        },
        values,
    )
    assert body is not None
    assert json.loads(body) == {
        "run": "EX-9",
        "n": 3,
        "tags": ["project.created", True],
        "x": {"c": "Q2C-1"},
    }
    # a value with braces is not a template again
    assert fill("{execution_id}", {"execution_id": "{stage}"}) == "{stage}"
