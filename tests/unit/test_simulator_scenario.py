"""The scenario generators (pure): deterministic by seed, valid canonical events, sizes that
scale, and each fault present at a nonzero rate and absent at zero. Each fault is recognised from
the events alone, the way syncwatch would see it."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.events import validate_event
from syncwatch.simulator.firm import FAULTS, firm_profile
from syncwatch.simulator.middleware import follow_up_events
from syncwatch.simulator.player import LiveClock, Player
from syncwatch.simulator.scenario import DEADLINES, ONBOARDING, Delivery, generate, plan

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
START = END - timedelta(weeks=8)
MEDIUM = firm_profile("medium")


def when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"])


def by_correlation(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if "correlationid" in event:
            groups[event["correlationid"]].append(event)
    return groups


def signed_times(events: list[dict[str, Any]]) -> dict[str, datetime]:
    return {e["correlationid"]: when(e) for e in events if e["type"] == "contract.signed"}


# --- one detector per fault: does this traffic show it? ---


def stuck_stage(deliveries: list[Delivery]) -> bool:
    events = [d.event for d in deliveries]
    t0 = signed_times(events)
    reached: dict[tuple[str, str], datetime] = {}
    for event in events:
        if event["type"] in ONBOARDING and "correlationid" in event:
            key = (event["correlationid"], event["type"])
            reached[key] = min(reached.get(key, when(event)), when(event))
    for corr, start in t0.items():
        for stage in ONBOARDING:
            at = reached.get((corr, stage))
            if start + DEADLINES[stage] < END - timedelta(days=4) and (
                at is None or at > start + DEADLINES[stage]
            ):
                return True
    return False


def types(deliveries: list[Delivery]) -> Counter[str]:
    return Counter(d.event["type"] for d in deliveries)


def middleware_failure(deliveries: list[Delivery]) -> bool:
    return types(deliveries)["integration.failed"] > types(deliveries)["integration.dead_lettered"]


def _dead_letters(deliveries: list[Delivery], cause: str) -> bool:
    return any(
        d.event["type"] == "integration.dead_lettered"
        and d.event["data"]["error"].startswith(cause)
        for d in deliveries
    )


def dead_letter(deliveries: list[Delivery]) -> bool:
    return _dead_letters(deliveries, "retries exhausted")


def data_error(deliveries: list[Delivery]) -> bool:
    return _dead_letters(deliveries, "not retryable: ERP refused the record")


def duplicate_delivery(deliveries: list[Delivery]) -> bool:
    keys = Counter((d.event["source"], d.event["id"]) for d in deliveries)
    return any(count > 1 for count in keys.values())


def late_delivery(deliveries: list[Delivery]) -> bool:
    return any(d.at - when(d.event) >= timedelta(hours=2) for d in deliveries)


def out_of_order(deliveries: list[Delivery]) -> bool:
    order = {stage: index for index, stage in enumerate(ONBOARDING)}
    seen: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        event = delivery.event
        if event["type"] in order and event["source"].startswith("erp/"):
            seen[event["data"].get("project_id", event["id"])].append(order[event["type"]])
    return any(stages != sorted(stages) for stages in seen.values())


def erp_clock_skew(deliveries: list[Delivery]) -> bool:
    return any(
        timedelta(0) < d.at - when(d.event) <= timedelta(minutes=10)
        for d in deliveries
        if d.event["source"].startswith("erp/")
    )


def duplicate_project(deliveries: list[Delivery]) -> bool:
    projects: dict[str, set[str]] = defaultdict(set)
    for d in deliveries:
        if d.event["type"] == "project.created":
            projects[d.event["data"]["contract_id"]].add(d.event["data"]["project_id"])
    return any(len(ids) > 1 for ids in projects.values())


def amendment_conflict(deliveries: list[Delivery]) -> bool:
    groups = by_correlation([d.event for d in deliveries])
    for events in groups.values():
        amended = [when(e) for e in events if e["type"] == "contract.amended"]
        updated = [when(e) for e in events if e["type"] == "billing_plan.updated"]
        invoices = [when(e) for e in events if e["type"] == "invoice.posted"]
        for t in amended:
            done = min(updated, default=None)
            if any(i >= t and (done is None or done > i) for i in invoices):
                return True
    return False


def term_mismatch(deliveries: list[Delivery]) -> bool:
    contracts = {
        d.event["data"]["contract_id"]: {
            m["milestone_id"]: m["amount"] for m in d.event["data"]["milestones"]
        }
        for d in deliveries
        if d.event["type"] == "contract.signed"
    }
    for d in deliveries:
        if d.event["type"] == "billing_plan.created":
            contract = d.event["data"]["project_id"].replace("PRJ-", "CTR-")
            plan_ = {m["milestone_id"]: m["amount"] for m in d.event["data"]["milestones"]}
            if plan_ != contracts[contract]:
                return True
    return False


def _uncorrelated(deliveries: list[Delivery]) -> tuple[int, int]:
    contracts = {
        d.event["data"]["contract_id"] for d in deliveries if d.event["type"] == "contract.signed"
    }
    projects = {
        d.event["data"]["project_id"] for d in deliveries if d.event["type"] == "project.created"
    }
    resolvable = unresolvable = 0
    for d in deliveries:
        if "correlationid" in d.event:
            continue
        data = d.event["data"]
        if data.get("contract_id") in contracts or data.get("project_id") in projects:
            resolvable += 1
        else:
            unresolvable += 1
    return resolvable, unresolvable


def missing_correlation(deliveries: list[Delivery]) -> bool:
    return _uncorrelated(deliveries)[0] > 0


def unresolvable_correlation(deliveries: list[Delivery]) -> bool:
    return _uncorrelated(deliveries)[1] > 0


def incomplete_contract(deliveries: list[Delivery]) -> bool:
    return any(
        d.event["type"] == "contract.signed"
        and not {"contract_value", "currency", "legal_entity"} <= set(d.event["data"])
        for d in deliveries
    )


DETECTORS: dict[str, Callable[[list[Delivery]], bool]] = {
    "stuck_stage": stuck_stage,
    "middleware_failure": middleware_failure,
    "dead_letter": dead_letter,
    "data_error": data_error,
    "duplicate_delivery": duplicate_delivery,
    "late_delivery": late_delivery,
    "out_of_order": out_of_order,
    "erp_clock_skew": erp_clock_skew,
    "duplicate_project": duplicate_project,
    "amendment_conflict": amendment_conflict,
    "term_mismatch": term_mismatch,
    "missing_correlation": missing_correlation,
    "unresolvable_correlation": unresolvable_correlation,
    "incomplete_contract": incomplete_contract,
}


def test_every_fault_has_a_detector() -> None:
    assert set(DETECTORS) == set(FAULTS)


def test_no_fault_at_zero_rate() -> None:
    deliveries = plan(firm_profile("medium", fault_rate=0), START, END, 1).deliveries
    shown = [name for name, detect in DETECTORS.items() if detect(deliveries)]
    assert shown == []
    assert all(d.at == when(d.event) for d in deliveries)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_alone_at_a_nonzero_rate(fault: str) -> None:
    firm = MEDIUM.with_faults(**{fault: 0.2})
    deliveries = plan(firm, START, END, 1).deliveries
    assert DETECTORS[fault](deliveries), fault


def test_all_faults_at_the_default_rate() -> None:
    deliveries = plan(MEDIUM, START, END, 5).deliveries
    assert {name for name, detect in DETECTORS.items() if detect(deliveries)} == set(FAULTS)


def test_deterministic_by_seed() -> None:
    first = generate(MEDIUM, START, END, 11)
    assert first == generate(MEDIUM, START, END, 11)
    assert first != generate(MEDIUM, START, END, 12)


def test_every_event_is_a_valid_canonical_event() -> None:
    for size in ("small", "medium", "large"):
        firm = firm_profile(size, fault_rate=0.3)
        for event in generate(firm, END - timedelta(weeks=2), END, 3):
            validate_event(event)


def test_generated_events_are_delivered_by_the_end_and_never_before_their_time() -> None:
    scenario = plan(MEDIUM, START, END, 2)
    assert all(d.at >= when(d.event) for d in scenario.deliveries)
    assert any(d.at > END for d in scenario.deliveries)  # the rest plays out later
    events = generate(MEDIUM, START, END, 2)
    assert all(when(e) <= END for e in events)
    assert events == [d.event for d in scenario.deliveries if d.at <= END]


def test_sizes_scale() -> None:
    counts = {
        size: sum(
            1 for e in generate(firm_profile(size), START, END, 4) if e["type"] == "contract.signed"
        )
        for size in ("small", "medium", "large")
    }
    assert 30 <= counts["small"] < counts["medium"] < counts["large"]
    assert 160 <= counts["medium"] <= 240  # 25 a week for 8 weeks, +-10% and rounding


def test_money_is_decimal_and_milestones_add_up() -> None:
    for event in generate(firm_profile("medium", fault_rate=0), START, END, 6):
        if event["type"] == "contract.signed":
            data = event["data"]
            total = sum(Decimal(m["amount"]) for m in data["milestones"])
            assert total == Decimal(data["contract_value"])


def test_a_replay_delivers_what_the_dead_letter_held_back() -> None:
    scenario = plan(MEDIUM.with_faults(dead_letter=0.3), START, END, 8)
    assert scenario.recoveries
    now = END + timedelta(hours=1)
    for execution, recovery in scenario.recoveries.items():
        events = follow_up_events(execution, recovery, now, 1)
        assert events[0]["type"] == "integration.succeeded"
        assert events[0]["data"]["step"] == recovery.step == events[1]["type"]
        assert events[0]["data"]["execution_id"] == execution
        assert all(when(e) <= now for e in events)
        for event in events:
            validate_event(event)


def test_a_data_error_fails_again_on_its_first_replay_and_not_after() -> None:
    scenario = plan(MEDIUM.with_faults(data_error=0.3), START, END, 8)
    refused = {e: r for e, r in scenario.recoveries.items() if r.fails_again}
    assert refused and all(r.fails_again == 1 for r in refused.values())
    now = END + timedelta(hours=1)
    for execution, recovery in refused.items():
        [again] = follow_up_events(execution, recovery, now, 1)
        assert again["type"] == "integration.failed"
        assert again["data"]["step"] == recovery.step
        assert again["data"]["execution_id"] == execution
        assert again["data"]["retryable"] is False and "refused" in again["data"]["error"]
        validate_event(again)
        fixed = follow_up_events(execution, recovery, now, 2)
        assert [e["type"] for e in fixed] == [
            "integration.succeeded",
            *(held["type"] for held in recovery.events),
        ]
        assert fixed[1]["type"] == recovery.step
        assert again["id"] != fixed[0]["id"]  # each re-run is its own event


def test_live_times_never_run_ahead_of_the_wall_clock() -> None:
    origin = END
    wall = [origin]
    batches: list[list[dict[str, Any]]] = []
    player = Player(
        MEDIUM, seed=9, origin=origin, speed=3600, send=batches.append, clock=lambda: wall[0]
    )
    backfilled = player.backfill(2)
    assert backfilled == len(batches[0]) and all(when(e) <= origin for e in batches[0])
    for seconds in (10, 100, 400):  # 4 days, then 16 weeks of simulated time
        wall[0] = origin + timedelta(seconds=seconds)
        player.step()
        assert all(when(e) <= wall[0] for e in batches[-1])
    live = [e for batch in batches[1:] for e in batch]
    assert player.sent_live == len(live) > 100
    assert any(e["type"] == "contract.signed" for e in live)  # new contracts keep coming
    clock = LiveClock(origin, 3600)
    assert clock.real(origin + timedelta(hours=1)) == origin + timedelta(seconds=1)
    assert clock.real(origin - timedelta(days=3)) == origin - timedelta(days=3)
