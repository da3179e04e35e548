"""Properties of correlation + evaluation over generated scenarios (flows.md, events.md): the
result never depends on arrival order or duplicates, and the answer as of T only depends on the
events with time <= T (besides correlation, which uses every event)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from core.events import CanonicalEvent, validate_event
from probes.correlate import resolve
from probes.evaluate import FindingFacts, FlowFacts, evaluate_group
from probes.flowtypes import DEFAULT_FLOW_TYPES

T = datetime(2026, 11, 20, 10, tzinfo=UTC)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
STEPS = (
    "customer.synced", "project.created", "billing_plan.created", "project.activated",
    "billing_plan.updated", "invoice.posted",
)  # fmt: skip
TYPES = (
    "contract.signed", "customer.synced", "project.created", "billing_plan.created",
    "project.activated", "contract.terminated", "contract.amended", "billing_plan.updated",
    "milestone.completed", "invoice.posted", "integration.failed", "integration.succeeded",
    "integration.dead_lettered",
)  # fmt: skip
MINUTES = st.integers(min_value=-600, max_value=160 * 60).map(lambda m: m - m % 15)


def _data(type_: str, k: int, variant: int) -> dict[str, Any]:
    """The data of a generated event of contract ``k``; ``variant`` picks among alternatives."""
    contract, project, v2, v3 = f"C{k}", f"P{k}-0", variant % 2, variant % 3
    if type_ == "contract.signed":
        data: dict[str, Any] = {
            "contract_id": contract, "contract_value": ["1000.00", "0", None][v3],
            "currency": "EUR", "legal_entity": ["DE01", None][v2],
            "milestones": [{"milestone_id": f"M{k}-0", "amount": "100.00"}],
        }  # fmt: skip
        return {name: value for name, value in data.items() if value is not None or v2}
    if type_ in ("customer.synced", "contract.terminated"):
        return {"contract_id": contract}
    if type_ == "project.created":  # the second project_id makes a duplicate_project
        return {"project_id": f"P{k}-{v2}", "contract_id": contract}
    if type_ == "billing_plan.created":
        amount = ["100.00", "100.01", "101"][v3]
        return {
            "project_id": project,
            "milestones": [{"milestone_id": f"M{k}-0", "amount": amount}],
        }
    if type_ == "project.activated":
        return {"project_id": project}
    if type_ == "contract.amended":
        effective = {"effective_date": "2026-11-21"} if v3 == 2 else {}
        return {"contract_id": contract, "amendment_id": f"A{v2}", **effective}
    if type_ == "billing_plan.updated":
        return {"amendment_id": f"A{v2}", "project_id": project}
    if type_ == "milestone.completed":
        currency = {"currency": "USD"} if v3 else {}
        return {"milestone_id": f"M{k}-{v2}", "amount": "50", **currency}
    if type_ == "invoice.posted":
        return {"invoice_id": f"I{k}-{v3}", "milestone_id": f"M{k}-{v2}", "project_id": project}
    scope = [{}, {"amendment_id": f"A{v2}"}, {"milestone_id": f"M{k}-{v2}"}][(variant // 6) % 3]
    return {"step": STEPS[variant % 6], "contract_id": contract, **scope}


def make(index: int, type_: str, k: int, minute: int, explicit: bool, variant: int) -> Any:
    raw: dict[str, Any] = {
        "id": f"e{index}",
        "source": {"contract": "clm/ironclad", "integration": "middleware/mulesoft"}.get(
            type_.partition(".")[0], "erp/netsuite"
        ),
        "type": type_,
        "time": (T + timedelta(minutes=minute)).isoformat(),
        "data": _data(type_, k, variant),
    }
    if explicit:  # now and then another correlation ID competes for the same keys
        raw["correlationid"] = f"Q2C-{k}" if variant % 4 else f"Q2C-{k}-other"
    return validate_event(raw)


@st.composite
def scenarios(draw: st.DrawFn) -> list[CanonicalEvent]:
    """A few contracts: each has a contract.signed with its correlationid, then random events
    (about half without correlationid, resolved through contract_id or project_id)."""
    contracts = draw(st.integers(1, 3))
    specs = [("contract.signed", k, draw(MINUTES), True, 0) for k in range(contracts)]
    spec = st.tuples(
        st.sampled_from(TYPES), st.integers(0, contracts - 1), MINUTES, st.booleans(),
        st.integers(0, 29),
    )  # fmt: skip
    specs += draw(st.lists(spec, min_size=5 * contracts, max_size=12 * contracts))
    return [make(i, *spec) for i, spec in enumerate(specs)]


def dedup(events: Iterable[CanonicalEvent]) -> list[CanonicalEvent]:
    """As the store does: a second (source, id) is a duplicate; the first stored wins."""
    seen: dict[tuple[str, str], CanonicalEvent] = {}
    for event in events:
        seen.setdefault((event.source, event.id), event)
    return list(seen.values())


Evaluation = dict[str, tuple[dict[str, FlowFacts], list[FindingFacts]]]


def evaluate_all(events: Iterable[CanonicalEvent], until: datetime | None = None) -> Evaluation:
    """Resolve over every event, group by correlation ID, evaluate each group (with only the
    events up to ``until`` when given)."""
    unique = dedup(events)
    resolution = resolve(unique)
    groups: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for event in unique:
        corr = resolution[(event.source, event.id)]
        if corr is not None and (until is None or event.time <= until):
            groups[corr].append(event)
    result = {}
    for corr, group in groups.items():
        evaluated = evaluate_group(corr, group, DEFAULT_FLOW_TYPES)
        flows = {flow.flow_id: flow for flow in evaluated.flows}
        findings = sorted(evaluated.findings, key=lambda f: (f.flow_id, f.kind, f.key))
        result[corr] = (flows, findings)
    return result


def state(flow: FlowFacts, at: datetime) -> tuple[Any, ...]:
    stuck = flow.stuck_stage(at)
    return (
        flow.exists(at), flow.open(at), flow.complete(at), flow.cancelled(at),
        stuck.type if stuck else None, flow.stuck_queue(at), flow.due_in(EPOCH, at),
        tuple(stage.reached(at) for stage in flow.stages),
    )  # fmt: skip


@given(scenarios(), st.data())
def test_same_facts_for_any_arrival_order_and_duplicates(
    events: list[CanonicalEvent], data: st.DataObject
) -> None:
    expected = evaluate_all(events)
    copies = data.draw(st.lists(st.sampled_from(events), max_size=6), label="duplicated")
    arrival = data.draw(st.permutations([*events, *copies]), label="arrival order")
    assert evaluate_all(arrival) == expected
    assert evaluate_all(list(reversed(arrival))) == expected


@given(scenarios(), st.lists(MINUTES, min_size=1, max_size=4))
def test_the_answer_as_of_t_depends_only_on_events_up_to_t(
    events: list[CanonicalEvent], minutes: list[int]
) -> None:
    full = evaluate_all(events)
    for at in (T + timedelta(minutes=m) for m in minutes):
        known = evaluate_all(events, until=at)
        for corr, (flows, findings) in full.items():
            flows_then, findings_then = known.get(corr, ({}, []))
            existing = {fid for fid, flow in flows.items() if flow.exists(at)}
            assert set(flows_then) == existing
            for fid in existing:
                assert state(flows_then[fid], at) == state(flows[fid], at), fid
            opened = [f for f in findings if f.opened_at <= at and f.flow_id in existing]
            assert [f for f in findings_then if f.opened_at <= at] == opened


@given(scenarios())
def test_facts_are_consistent(events: list[CanonicalEvent]) -> None:
    for flows, _ in evaluate_all(events).values():
        for flow in flows.values():
            reached = [s.reached_at for s in flow.stages if s.reached_at is not None]
            assert all(flow.t0 <= r for r in reached)  # never reached before T0
            assert flow.completed_at == flow.stages[-1].reached_at
            assert flow.completed_at is None or flow.cancelled_at is None
            if flow.cancelled_at is not None:  # nothing reached after the termination
                assert all(r <= max(flow.cancelled_at, flow.t0) for r in reached)


def _span_at(flow: FlowFacts, at: datetime) -> tuple[str, str] | None:
    holding = [
        span
        for span in flow.stuck_spans()
        if span.opened_at < at and span.since <= at and (span.until is None or at < span.until)
    ]
    assert len(holding) <= 1, holding  # the spans of a flow never overlap
    return (holding[0].stage, holding[0].queue) if holding else None


@given(scenarios(), st.lists(MINUTES, min_size=1, max_size=6))
def test_stuck_spans_agree_with_the_stuck_stage_and_queue_at_every_instant(
    events: list[CanonicalEvent], minutes: list[int]
) -> None:
    """The KPIs count stuck flows from their spans in SQL; the spans must say exactly what
    stuck_stage and stuck_queue say, at any instant, including each span's own boundaries."""
    for flows, _ in evaluate_all(events).values():
        for flow in flows.values():
            instants = {T + timedelta(minutes=m) for m in minutes}
            for span in flow.stuck_spans():
                for edge in (span.opened_at, span.since, span.until):
                    if edge is not None:
                        instants |= {edge, edge - timedelta(microseconds=1)}
                        instants.add(edge + timedelta(microseconds=1))
            for at in instants:
                stage = flow.stuck_stage(at)
                expected = None if stage is None else (stage.type, flow.stuck_queue(at))
                assert _span_at(flow, at) == expected, (flow.flow_id, at)
