"""``probes.evaluate.evaluate_group`` against flows.md, with hand-computed cases: T0 and
attributes, stages, completion, stuck and its queue, due/met, cancellation, the keyed flow types,
the operator findings, values at risk, and configured flow types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.errors import ConfigError
from core.events import CanonicalEvent, validate_event
from probes.evaluate import FindingFacts, FlowFacts, evaluate_group
from probes.flowtypes import DEFAULT_FLOW_TYPES, FlowType, Stage, parse_flow_types
from tests.support.builders import make_event

T = datetime(2026, 11, 20, 10, tzinfo=UTC)  # T0 of most flows below
CORR = "Q2C-1"
ONB = f"contract_onboarding:{CORR}"
US = timedelta(microseconds=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


_DEFAULTS: dict[str, dict[str, Any]] = {"contract.terminated": {"contract_id": "CTR-1"}}


def h(hours: float) -> datetime:
    return T + timedelta(hours=hours)


def ev(
    type_: str,
    at: float | datetime,
    data: dict[str, Any] | None = None,
    *,
    whole: dict[str, Any] | None = None,
    **attrs: Any,
) -> CanonicalEvent:
    """A validated event of CORR at h(at) (or at that datetime): ``data`` is merged into the
    builder's default data for the type, ``whole`` replaces it."""
    time = at if isinstance(at, datetime) else h(at)
    raw = make_event(type_, time=time.isoformat(), correlationid=CORR, **attrs)
    default = _DEFAULTS.get(type_, {}) if "note" in raw["data"] else raw["data"]
    raw["data"] = whole if whole is not None else {**default, **(data or {})}
    return validate_event(raw)


def signed(at: float | datetime = 0, **data: Any) -> CanonicalEvent:
    return ev("contract.signed", at, data)


def evaluate(
    events: list[CanonicalEvent], flow_types: tuple[FlowType, ...] = DEFAULT_FLOW_TYPES
) -> tuple[dict[str, FlowFacts], list[FindingFacts]]:
    result = evaluate_group(CORR, events, flow_types)
    return {f.flow_id: f for f in result.flows}, list(result.findings)


def onboarding(*events: CanonicalEvent) -> FlowFacts:
    return evaluate(list(events))[0][ONB]


def stages(*hours: float | None) -> list[CanonicalEvent]:
    """Onboarding stage events at these hours (None: that stage never comes)."""
    types = ("customer.synced", "project.created", "billing_plan.created", "project.activated")
    return [ev(t, at) for t, at in zip(types, hours, strict=False) if at is not None]


def kinds(findings: list[FindingFacts], kind: str) -> list[FindingFacts]:
    return [f for f in findings if f.kind == kind]


def due(flow: FlowFacts, as_of: datetime) -> bool:
    return flow.due_in(EPOCH, as_of)


# --- T0, attributes, existence ------------------------------------------------------------------


def test_t0_and_attributes_come_from_the_earliest_contract_signed() -> None:
    later = signed(0, contract_value="1.00", currency="USD", legal_entity="US01", region="AMER")
    earliest = signed(-2, contract_value="7.50", currency="GBP", legal_entity="UK01", region="UKI")
    flow = onboarding(later, earliest)
    assert (flow.t0, flow.start_event_id) == (h(-2), earliest.id)
    assert (flow.value, flow.currency, flow.legal_entity, flow.region) == (
        Decimal("7.50"), "GBP", "UK01", "UKI",
    )  # fmt: skip
    assert flow.deadline_at == h(70)
    assert [s.deadline_at for s in flow.stages] == [h(2), h(22), h(46), h(70)]
    # a flow does not exist before T0; no contract.signed, no onboarding flow
    assert not flow.exists(h(-2) - US) and not flow.open(h(-2) - US) and not flow.stuck(h(-3))
    assert flow.exists(h(-2)) and flow.open(h(-2))
    assert evaluate([ev("customer.synced", 0), ev("project.created", 1)]) == ({}, [])


def test_tied_start_events_are_ordered_by_source_then_id() -> None:
    a = ev("contract.signed", 0, {"legal_entity": "B"}, source="clm/b", id="e1")
    b = ev("contract.signed", 0, {"legal_entity": "A"}, source="clm/a", id="e9")
    c = ev("contract.signed", 0, {"legal_entity": "C"}, source="clm/a", id="e10")
    flow = onboarding(a, b, c)
    assert (flow.start_source, flow.start_event_id, flow.legal_entity) == ("clm/a", "e10", "C")


# --- stages and completion ------------------------------------------------------------------


def test_a_stage_is_reached_at_its_earliest_event_and_never_before_t0() -> None:
    flow = onboarding(
        signed(0), ev("customer.synced", 3), ev("customer.synced", 1), ev("project.created", -5)
    )
    assert [s.reached_at for s in flow.stages] == [h(1), T, None, None]
    assert not flow.stages[0].reached(h(1) - US) and flow.stages[0].reached(h(1))
    # the final stage before T0: complete at T0
    posted = ev("invoice.posted", -3, {"invoice_id": "I1", "milestone_id": "M1"})
    flows, _ = evaluate([posted, ev("milestone.completed", 0, {"milestone_id": "M1"})])
    assert flows[f"milestone_billing:{CORR}:M1"].completed_at == T


@pytest.mark.parametrize(("done", "met"), [(30, True), (72, True), (72 + 1e-6, False), (80, False)])
def test_complete_when_the_final_stage_is_reached_met_by_the_deadline(
    done: float, met: bool
) -> None:
    flow = onboarding(signed(0), *stages(1, 2, 3, done))
    assert flow.completed_at == h(done) and flow.duration == timedelta(hours=done)
    assert not flow.complete(h(done) - US) and flow.open(h(done) - US)
    assert flow.complete(h(done)) and not flow.open(h(done)) and not flow.stuck(h(500))
    assert flow.met() is met and due(flow, h(72)) and not due(flow, h(72) - US)


def test_complete_with_a_skipped_stage_is_not_stuck() -> None:
    flow = onboarding(signed(0), *stages(None, 2, None, 10))
    assert flow.completed_at == h(10) and flow.met()
    assert [s.reached_at for s in flow.stages] == [None, h(2), None, h(10)]
    assert flow.stuck_stage(h(5)) == flow.stages[0]  # before completion: stuck on customer.synced
    assert not flow.stuck(h(10)) and not flow.stuck(h(100)) and flow.stuck_queue(h(100)) is None


# --- stuck, due, met ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reached", "as_of", "stuck_stage", "queue"),
    [
        ((), 4, None, None),  # deadline 4 h == as_of: not yet (strict <)
        ((), 4 + 1e-6, "customer.synced", "finance_ops"),
        ((None, 1, 2), 50, "customer.synced", "finance_ops"),  # first missing in declared order
        ((1, None, 2), 100, "project.created", "pmo"),
        ((1, 2), 48, None, None),
        ((1, 2), 49, "billing_plan.created", "finance_ops"),
        ((1, 2, 3), 72, None, None),
        ((1, 2, 3), 73, "project.activated", "pmo"),
        ((5,), 5, None, None),  # reached exactly at as_of: reached
        ((5,), 5 - 1e-6, "customer.synced", "finance_ops"),
    ],
)
def test_stuck_stage_is_the_first_unreached_stage_past_its_deadline(
    reached: tuple[float | None, ...], as_of: float, stuck_stage: str | None, queue: str | None
) -> None:
    flow = onboarding(signed(0), *stages(*reached))
    found = flow.stuck_stage(h(as_of))
    assert (found.type if found else None, flow.stuck_queue(h(as_of))) == (stuck_stage, queue)
    assert flow.stuck(h(as_of)) is (stuck_stage is not None) and flow.open(h(as_of))


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(71, 72, True), (72, 100, False), (0, 72 - 1e-6, False), (-10, 1000, True)],
)
def test_due_is_deadline_at_or_before_as_of_and_due_in_is_half_open(
    start: float, end: float, expected: bool
) -> None:
    flow = onboarding(signed(0), *stages(1, 2, 3, None))
    assert flow.due_in(h(start), h(end)) is expected
    # a deadline exactly at as_of: due, but not yet stuck
    assert due(flow, h(72)) and not flow.stuck(h(72)) and flow.stuck(h(72) + US)


# --- cancellation -------------------------------------------------------------------------------


def test_termination_cancels_an_incomplete_flow() -> None:
    flow = onboarding(
        signed(0), *stages(1, 11, 12, 13), ev("contract.terminated", 10, {"contract_id": "C"})
    )
    assert flow.cancelled_at == h(10) and flow.completed_at is None and flow.duration is None
    assert [s.reached_at for s in flow.stages] == [h(1), None, None, None]  # after t_c: nothing
    assert flow.open(h(10) - US) and not flow.cancelled(h(10) - US)
    for as_of in (h(10), h(30), h(500)):
        assert flow.cancelled(as_of) and not flow.open(as_of) and not flow.complete(as_of)
        assert not flow.stuck(as_of) and flow.stuck_queue(as_of) is None
    assert not due(flow, h(500)) and not flow.met() and flow.next_check_at(T) is None


@pytest.mark.parametrize(
    ("activated", "t_c", "counts_as_due"),
    [
        (None, 72, True),  # the deadline was <= t_c: due, and missed
        (None, 80, True),
        (None, 72 - 1e-6, False),
        (10, 20, True),  # complete before the termination: stays complete
        (20, 20, True),  # complete by t_c
    ],
)
def test_termination_and_the_deadline(
    activated: float | None, t_c: float, counts_as_due: bool
) -> None:
    flow = onboarding(signed(0), *stages(1, 2, 3, activated), ev("contract.terminated", t_c))
    assert due(flow, h(500)) is counts_as_due and flow.due_in(h(71), h(72)) is counts_as_due
    if activated is not None:
        assert flow.cancelled_at is None and flow.completed_at == h(activated)
        assert flow.complete(h(500)) and flow.met() and not flow.cancelled(h(500))
        return
    assert flow.cancelled_at == h(t_c) and not flow.met() and not flow.complete(h(500))
    assert flow.stuck(h(t_c) - US) is (t_c > 72) and not flow.stuck(h(t_c))


def test_termination_cancels_every_flow_of_the_correlation() -> None:
    flows, _ = evaluate(
        [
            signed(0),
            ev("contract.amended", 1, {"contract_id": "C", "amendment_id": "A1"}),
            ev("milestone.completed", 2),
            ev("contract.terminated", 5),
            ev("contract.terminated", 3, id="early-termination"),
            ev("billing_plan.updated", 4, {"amendment_id": "A1"}),
        ]
    )
    assert {f.flow_id: f.cancelled_at for f in flows.values()} == {
        ONB: h(3),
        f"amendment_propagation:{CORR}:A1": h(3),
        f"milestone_billing:{CORR}:CTR-1-M1": h(3),
    }


# --- keyed flow types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "start", "stage", "key", "extra", "hours"),
    [
        ("amendment_propagation", "contract.amended", "billing_plan.updated", "amendment_id",
         {"contract_id": "C"}, 24),
        ("milestone_billing", "milestone.completed", "invoice.posted", "milestone_id", {}, 120),
    ],
)  # fmt: skip
def test_keyed_flows_one_per_key_matched_by_the_same_key(
    name: str, start: str, stage: str, key: str, extra: dict[str, Any], hours: float
) -> None:
    stage_data = {"invoice_id": "I"} if stage == "invoice.posted" else {}
    flows, _ = evaluate(
        [
            ev(start, 0, {key: "K1", **extra}),
            ev(start, 2, {key: "K2", **extra}),
            ev(start, 1, {key: "K1", **extra}),
            ev(stage, 5, {key: "K1", **stage_data}),
            ev(stage, 3, {key: "K3", **stage_data}),  # another key: no flow's stage
        ]
    )
    k1, k2 = flows[f"{name}:{CORR}:K1"], flows[f"{name}:{CORR}:K2"]
    assert set(flows) == {k1.flow_id, k2.flow_id} and (k1.subkey, k2.subkey) == ("K1", "K2")
    assert (k1.t0, k1.completed_at, k1.duration) == (T, h(5), timedelta(hours=5)) and k1.met()
    assert k2.completed_at is None and k2.deadline_at == h(2 + hours)
    assert not k2.stuck(h(2 + hours)) and k2.stuck_queue(h(2 + hours) + US) == "finance_ops"


# --- stuck queues -------------------------------------------------------------------------------


def failure(at: float, step: str, kind: str = "integration.failed", **data: Any) -> CanonicalEvent:
    return ev(kind, at, {"step": step, **data}, source="middleware/mulesoft")


@pytest.mark.parametrize(
    ("middleware", "as_of", "queue"),
    [
        ([("integration.failed", 6)], 5, "finance_ops"),  # the failure is after as_of
        ([("integration.failed", 6)], 6, "integration_oncall"),
        ([("integration.dead_lettered", 6)], 7, "integration_oncall"),
        ([("integration.failed", 6), ("integration.succeeded", 7)], 8, "finance_ops"),
        ([("integration.failed", 6), ("integration.succeeded", 7)], 6.5, "integration_oncall"),
        ([("integration.succeeded", 6), ("integration.dead_lettered", 7)], 8, "integration_oncall"),
        ([("integration.failed", 6, "project.created")], 8, "finance_ops"),  # another step
    ],
)
def test_integration_oncall_when_the_latest_middleware_event_failed(
    middleware: list[tuple[Any, ...]], as_of: float, queue: str
) -> None:
    marks = [failure(at, (*step, "customer.synced")[0], kind) for kind, at, *step in middleware]
    assert onboarding(signed(0), *marks).stuck_queue(h(as_of)) == queue


def test_integration_events_with_an_amendment_or_milestone_id_concern_that_flow_only() -> None:
    flows, _ = evaluate(
        [
            signed(0),
            *(ev("contract.amended", 0, {"contract_id": "C", "amendment_id": a}) for a in "XYZ"),
            ev("milestone.completed", 0, {"milestone_id": "M1"}),
            failure(1, "billing_plan.updated", amendment_id="X"),
            failure(1, "customer.synced", amendment_id="X"),
            failure(1, "customer.synced", milestone_id="M1"),
            failure(1, "invoice.posted", amendment_id="Z"),
            failure(1, "billing_plan.updated", milestone_id="M1"),
            failure(2, "billing_plan.updated", "integration.succeeded", amendment_id="Y"),
            failure(1, "billing_plan.updated", "integration.dead_lettered"),  # every amendment
        ]
    )
    amendment = f"amendment_propagation:{CORR}"
    queues = {fid: flow.stuck_queue(h(200)) for fid, flow in flows.items()}
    assert queues == {
        ONB: "finance_ops",
        f"{amendment}:X": "integration_oncall",
        f"{amendment}:Y": "finance_ops",  # its own success is later than the shared failure
        f"{amendment}:Z": "integration_oncall",  # only the unscoped failure concerns it
        f"milestone_billing:{CORR}:M1": "finance_ops",
    }


# --- findings -----------------------------------------------------------------------------------


def test_duplicate_project_opens_at_the_second_distinct_project_id() -> None:
    projects = [("P1", 1), ("P1", 2), ("P2", 3), ("P3", 4), ("P2", 0.5)]
    events = [ev("project.created", at, {"project_id": p}) for p, at in projects]
    _, findings = evaluate([signed(0), *events])
    assert [(f.kind, f.flow_id, f.queue, f.opened_at) for f in findings] == [
        ("duplicate_project", ONB, "pmo", h(1))
    ]
    _, findings = evaluate([signed(0), *events[:2]])
    assert findings == []


def test_findings_raised_by_skewed_erp_events_open_no_earlier_than_t0() -> None:
    """ERP clocks behind the CLM: like a stage, a finding never opens before its flow exists."""
    events = [
        signed(2, milestones=_PLANNED),
        ev("project.created", -1, {"project_id": "P1"}),
        ev("project.created", 0, {"project_id": "P2"}),
        ev("billing_plan.created", 1, {"milestones": _PLANNED[:1]}),
    ]
    found = {f.kind: f.opened_at for f in evaluate(events)[1]}
    assert found == {"duplicate_project": h(2), "term_mismatch": h(2)}


def amended(at: float, amendment: str = "A1", **data: Any) -> CanonicalEvent:
    return ev("contract.amended", at, {"contract_id": "C", "amendment_id": amendment, **data})


def invoice(at: float, invoice_id: str = "I1") -> CanonicalEvent:
    return ev("invoice.posted", at, {"invoice_id": invoice_id})


@pytest.mark.parametrize(
    ("effective", "invoice_at", "conflict"),
    [
        (None, 9, False),  # before the amendment's T0 (h10)
        (None, 10, True),
        (None, 19, True),
        (None, 20, False),  # the amendment completed at h20: complete at t
        ("2026-11-21", 13, False),  # a date means 00:00 UTC: h14
        ("2026-11-21", 14, True),
        ("2026-11-21T02:00:00+02:00", 14 - 1e-6, False),
        ("2026-11-21T02:00:00+02:00", 14, True),
        ("2026-11-19", 9, False),  # effective before T0: an invoice before T0 never conflicts
        ("2026-11-19", 10, True),
    ],
)
def test_amendment_conflict(effective: str | None, invoice_at: float, conflict: bool) -> None:
    data = {} if effective is None else {"effective_date": effective}
    events = [amended(10, **data), ev("billing_plan.updated", 20, {"amendment_id": "A1"})]
    _, findings = evaluate([*events, invoice(invoice_at)])
    expected = [("amendment_conflict", f"amendment_propagation:{CORR}:A1", "finance_ops")]
    assert [(f.kind, f.flow_id, f.queue) for f in findings] == (expected if conflict else [])
    assert [f.opened_at for f in findings] == ([h(invoice_at)] if conflict else [])


def test_amendment_conflict_one_finding_per_amendment_and_invoice() -> None:
    events = [
        amended(0, "A1"),
        amended(1, "A2"),
        ev("billing_plan.updated", 3, {"amendment_id": "A2"}),
    ]
    invoices = [invoice(2, "I1"), invoice(5, "I1"), invoice(4, "I2")]
    _, findings = evaluate([*events, *invoices])
    amendment = f"amendment_propagation:{CORR}"
    assert sorted((f.flow_id, f.key, f.opened_at) for f in findings) == [
        (f"{amendment}:A1", "I1", h(2)), (f"{amendment}:A1", "I2", h(4)),
        (f"{amendment}:A2", "I1", h(2)),
    ]  # fmt: skip


_PLANNED = [{"milestone_id": "M1", "amount": "100.00"}, {"milestone_id": "M2", "amount": "200"}]


@pytest.mark.parametrize(
    ("plan", "mismatch"),
    [
        (_PLANNED, False),
        ([{"milestone_id": "M2", "amount": 200}, {"milestone_id": "M1", "amount": 100}], False),
        (_PLANNED[:1], True),  # M2 missing
        ([*_PLANNED, {"milestone_id": "M3"}], True),  # M3 extra
        ([{"milestone_id": "M3"}], True),  # three differences: one finding per flow
        ([{"milestone_id": "M1", "amount": "100.01"}, _PLANNED[1]], False),  # exactly 0.01
        ([{"milestone_id": "M1", "amount": "99.99"}, _PLANNED[1]], False),
        ([{"milestone_id": "M1", "amount": "100.011"}, _PLANNED[1]], True),
        ([{"milestone_id": "M1", "amount": "99.98"}, _PLANNED[1]], True),
        ([{"milestone_id": "M1"}, _PLANNED[1]], False),  # one side gives no amount
    ],
)
def test_term_mismatch(plan: list[dict[str, Any]], mismatch: bool) -> None:
    events = [signed(0, milestones=_PLANNED), ev("billing_plan.created", 30, {"milestones": plan})]
    found = kinds(evaluate(events)[1], "term_mismatch")
    assert [(f.flow_id, f.queue, f.opened_at) for f in found] == (
        [(ONB, "finance_ops", h(30))] if mismatch else []
    )


@pytest.mark.parametrize(("good_at", "bad_at", "opened"), [(3, 5, None), (5, 3, 3)])
def test_term_mismatch_uses_the_earliest_billing_plan(
    good_at: float, bad_at: float, opened: float | None
) -> None:
    events = [
        signed(0, milestones=_PLANNED),
        ev("billing_plan.created", good_at, {"milestones": _PLANNED}),
        ev("billing_plan.created", bad_at, {"milestones": _PLANNED[:1]}),
        ev("billing_plan.created", 9, {"milestones": []}),
    ]
    found = kinds(evaluate(events)[1], "term_mismatch")
    assert [f.opened_at for f in found] == ([] if opened is None else [h(opened)])


_CONTRACT = make_event()["data"]


@pytest.mark.parametrize(
    ("change", "drop", "missing"),
    [
        ({}, (), None),
        ({"contract_value": "0"}, (), None),  # a zero value is present
        ({"contract_value": 0}, (), None),
        ({"contract_value": None}, (), ["contract_value"]),
        ({"currency": None, "legal_entity": None}, (), ["currency", "legal_entity"]),
        ({}, ("legal_entity",), ["legal_entity"]),
        ({}, ("contract_value", "currency"), ["contract_value", "currency"]),
    ],
)
def test_contract_data_incomplete(
    change: dict[str, Any], drop: tuple[str, ...], missing: list[str] | None
) -> None:
    data = {k: v for k, v in (_CONTRACT | change).items() if k not in drop}
    flows, findings = evaluate([ev("contract.signed", 1, whole=data), signed(2)])
    assert flows[ONB].t0 == h(1)
    found = kinds(findings, "contract_data_incomplete")
    expected = [] if missing is None else [(ONB, "legal_ops", h(1), {"missing": missing})]
    assert [(f.flow_id, f.queue, f.opened_at, f.details) for f in found] == expected
    # the flow's earliest contract.signed decides: a later incomplete one raises nothing
    later = evaluate([signed(0), ev("contract.signed", 1, whole=data)])[1]
    assert kinds(later, "contract_data_incomplete") == []


# --- values at risk, next check -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("milestone", "value", "currency"),
    [
        ({"amount": "500.50", "currency": "USD"}, Decimal("500.50"), "USD"),
        ({"amount": "0.10", "currency": None}, Decimal("0.10"), "GBP"),  # the contract's currency
    ],
)
def test_values_at_risk(milestone: dict[str, Any], value: Decimal, currency: str) -> None:
    contract = signed(0, contract_value="125000.10", currency="GBP")
    done = ev("milestone.completed", 1, whole={"milestone_id": "M1", **milestone})
    flows, _ = evaluate([contract, done])
    assert (flows[ONB].value, flows[ONB].currency) == (Decimal("125000.10"), "GBP")
    flow = flows[f"milestone_billing:{CORR}:M1"]
    assert (flow.value, flow.currency) == (value, currency)
    assert isinstance(flow.value, Decimal)


@pytest.mark.parametrize(
    ("reached", "terminated", "now", "next_check"),
    [
        ((), None, 0, 4),
        ((), None, 4, 4),  # a deadline exactly now is not passed yet
        ((), None, 4 + 1e-6, 24),
        ((1,), None, 0, 24),
        ((None, 2), None, 0, 4),  # the first stage is not reached
        ((None, 2), None, 5, 48),  # its deadline passed: the next not reached stage's
        ((1, 2, 3), None, 10, 72),
        ((1, 2, 3), None, 73, None),  # every deadline passed
        ((1, 2, 3, 10), None, 0, None),  # complete
        ((1,), 5, 0, None),  # cancelled
    ],
)
def test_next_check_at(
    reached: tuple[float | None, ...],
    terminated: float | None,
    now: float,
    next_check: float | None,
) -> None:
    events = [signed(0), *stages(*reached)]
    events += [] if terminated is None else [ev("contract.terminated", terminated)]
    flow = onboarding(*events)
    assert flow.next_check_at(h(now)) == (None if next_check is None else h(next_check))


# --- configured flow types ----------------------------------------------------------------------

_SUBCONTRACT = {
    "subcontractor_procurement": {
        "start": "contract.signed",
        "when": {"subcontract": True},
        "stages": [{"type": "purchase_order.created", "deadline": "5d", "queue": "pmo"}],
    }
}
SUB = f"subcontractor_procurement:{CORR}"


def test_parse_a_configured_flow_type() -> None:
    (flow_type,) = parse_flow_types(_SUBCONTRACT)
    assert flow_type == FlowType(
        "subcontractor_procurement", "contract.signed",
        (Stage("purchase_order.created", timedelta(days=5), "pmo"),), None, {"subcontract": True},
    )  # fmt: skip
    durations = [3600, "90m", "1.5h", "4h", " 2d", "1w"]
    config = {"f": {"start": "a", "key": "k", "stages": [
        {"type": f"s{i}", "deadline": d} for i, d in enumerate(durations)]}}  # fmt: skip
    (parsed,) = parse_flow_types(config)
    assert parsed.key == "k" and {s.queue for s in parsed.stages} == {"finance_ops"}
    assert [s.deadline for s in parsed.stages] == [
        timedelta(hours=1), timedelta(minutes=90), timedelta(minutes=90), timedelta(hours=4),
        timedelta(days=2), timedelta(weeks=1),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("subcontract", "purchase_order", "complete"),
    [(True, 120, True), (True, 120 + 1e-6, False), (False, 1, None), (None, 1, None)],
)
def test_configured_flow_type_is_evaluated_by_the_same_rules(
    subcontract: bool | None, purchase_order: float, complete: bool | None
) -> None:
    flow_types = (*DEFAULT_FLOW_TYPES, *parse_flow_types(_SUBCONTRACT))
    contract = signed(0) if subcontract is None else signed(0, subcontract=subcontract)
    order = ev("purchase_order.created", purchase_order, {"purchase_order_id": "PO-1"})
    flows, _ = evaluate([contract, order], flow_types)
    assert ONB in flows
    if complete is None:
        assert SUB not in flows
        return
    flow = flows[SUB]
    assert (flow.t0, flow.deadline_at, flow.completed_at) == (T, h(120), h(purchase_order))
    assert flow.met() is complete
    late = evaluate([contract], flow_types)[0][SUB]
    assert not late.stuck(h(120)) and late.stuck_queue(h(120) + US) == "pmo"


def test_configured_flow_starts_at_its_earliest_matching_event_with_its_attributes() -> None:
    flow_types = (*DEFAULT_FLOW_TYPES, *parse_flow_types(_SUBCONTRACT))
    plain = signed(0, legal_entity="DE01", region="EMEA", contract_value="10", currency="EUR")
    sub = signed(1, subcontract=True, legal_entity="FR01", region="WEU", contract_value="20",
                 currency="CHF")  # fmt: skip
    flows, _ = evaluate([plain, sub], flow_types)
    assert flows[ONB].t0 == T and flows[ONB].legal_entity == "DE01"
    flow = flows[SUB]
    assert (flow.t0, flow.start_event_id) == (h(1), sub.id)
    # flows.md: "the flow's attributes (contract value, currency, legal entity, region, service
    # line, milestones) come from that same event" (the flow's earliest start event)
    assert (flow.value, flow.currency, flow.legal_entity, flow.region) == (
        Decimal("20"), "CHF", "FR01", "WEU",
    )  # fmt: skip


_STAGE = {"type": "purchase_order.created", "deadline": "5d"}


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"stages": [{**_STAGE, "deadline": "5 days"}]}, "flows.sub.stages[0].deadline"),
        ({"stages": [{**_STAGE, "deadline": "0h"}]}, "flows.sub.stages[0].deadline"),
        ({"stages": [{**_STAGE, "deadline": True}]}, "flows.sub.stages[0].deadline"),
        ({"stages": [_STAGE, {**_STAGE, "deadline": "x"}]}, "flows.sub.stages[1].deadline"),
        ({"stages": [{**_STAGE, "queue": "sales"}]}, "flows.sub.stages[0].queue"),
        ({"stages": []}, "flows.sub.stages"),
        ({}, "flows.sub.stages"),
        ({"stages": [_STAGE], "owner": "pmo"}, "flows.sub.owner"),
        ({"stages": [{**_STAGE, "sla": "1d"}]}, "flows.sub.stages[0].sla"),
    ],
)
def test_config_errors_name_the_key(spec: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_flow_types({"sub": {"start": "contract.signed", **spec}})
    assert str(caught.value).startswith(f"{key}:")
