"""GET /v1/kpis and GET /v1/kpis/series (spec/kpis.md, on flows.md's definitions) over small
hand-built scenarios, on SQLite and PostgreSQL. Every expected number is worked out by hand from the
spec, the arithmetic in the comments; none is read back from the implementation.

Events go in through POST /v1/events; the probes run with an explicit ``now``; every question names
its ``as_of``. Unless a test says otherwise the instant asked about is AS_OF = 2026-11-10T00:00:00Z,
so with the default 7d window W = (2026-11-03T00:00Z, 2026-11-10T00:00Z]. The app's clock is AS_OF
too (the default as_of, when dead letters are received, when an operator acts)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from core.db import Database
from core.settings import Settings, load_settings
from probes.flowtypes import FlowType, configured_flow_types
from probes.runner import run_until_idle
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.builders import make_event


def nov(day: int, hour: int = 0, minute: int = 0, second: int = 0, ms: int = 0) -> datetime:
    """An instant of November 2026 in UTC; day 0 is October 31st, negative days go further back."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return start + timedelta(
        days=day - 1, hours=hour, minutes=minute, seconds=second, milliseconds=ms
    )


AS_OF = nov(10)
DAY = 86400.0
HOUR = 3600.0
FLOW_TYPES = configured_flow_types(None)

# --- the contract of the answer (kpis.md plus the project's decisions) ---

STAGES = {
    "contract_onboarding": [
        "customer.synced",
        "project.created",
        "billing_plan.created",
        "project.activated",
    ],
    "amendment_propagation": ["billing_plan.updated"],
    "milestone_billing": ["invoice.posted"],
}
QUEUES = ("finance_ops", "legal_ops", "pmo", "integration_oncall")
BUCKETS = ("lt_1d", "1d_3d", "3d_7d", "gt_7d")
FUNNEL = ("contract.signed", *STAGES["contract_onboarding"], "invoice.posted")
KPI_KEYS = {
    "flows",
    "revenue_at_risk",
    "exceptions",
    "duplicate_projects",
    "amendment_conflicts",
    "integration_failures",
    "invoice_dispute_rate",
    "uncorrelated_events",
}
FURTHER_KEYS = {"as_of", "window", "funnel", "stage_misses", "data_quality", "replays"}
#: Left out of the answer with any dimension filter.
GLOBAL_KEYS = {
    "duplicate_projects",
    "amendment_conflicts",
    "integration_failures",
    "invoice_dispute_rate",
    "uncorrelated_events",
    "data_quality",
}
NO_REPLAYS = {"sent": 0, "refused": 0, "failed": 0, "effective": 0, "ineffective": 0}
NO_DURATION = {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "max": None}


def z(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def durations(
    count: int, mean: float, p50: float, p90: float, p95: float, maximum: float
) -> dict[str, Any]:
    return {"count": count, "mean": mean, "p50": p50, "p90": p90, "p95": p95, "max": maximum}


def one_duration(seconds: float) -> dict[str, Any]:
    return durations(1, seconds, seconds, seconds, seconds, seconds)


def figures(
    flow_type: str,
    *,
    due: int = 0,
    met: int = 0,
    success_rate: float | None = None,
    completed: int = 0,
    duration_seconds: Mapping[str, Any] = NO_DURATION,
    open: int = 0,
    stuck: int = 0,
    stuck_by_stage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One flow type's figures; every stage appears in stuck_by_stage, with zeros."""
    by_stage = dict(stuck_by_stage or {})
    assert set(by_stage) <= set(STAGES[flow_type])
    return {
        "due": due,
        "met": met,
        "success_rate": success_rate,
        "completed": completed,
        "duration_seconds": dict(duration_seconds),
        "open": open,
        "stuck": stuck,
        "stuck_by_stage": {stage: by_stage.get(stage, 0) for stage in STAGES[flow_type]},
    }


def all_flows(**by_type: dict[str, Any]) -> dict[str, Any]:
    """Every flow type, the ones not given with zeros."""
    return {flow_type: by_type.get(flow_type) or figures(flow_type) for flow_type in STAGES}


def queue(
    open: int = 0, oldest: float | None = None, aging: Mapping[str, int] | None = None
) -> dict[str, Any]:
    counts = dict(aging or {})
    assert set(counts) <= set(BUCKETS)
    return {
        "open": open,
        "oldest_age_seconds": oldest,
        "aging": {bucket: counts.get(bucket, 0) for bucket in BUCKETS},
    }


def all_queues(**by_queue: dict[str, Any]) -> dict[str, Any]:
    return {name: by_queue.get(name) or queue() for name in QUEUES}


def funnel(*counts: int) -> list[dict[str, Any]]:
    assert len(counts) == len(FUNNEL)
    return [{"stage": stage, "count": count} for stage, count in zip(FUNNEL, counts, strict=True)]


def misses(**by_type: Mapping[str, int]) -> dict[str, dict[str, int]]:
    return {
        flow_type: {stage: by_type.get(flow_type, {}).get(stage, 0) for stage in stages}
        for flow_type, stages in STAGES.items()
    }


def empty_answer(as_of: datetime, start: datetime) -> dict[str, Any]:
    """The whole answer when nothing exists yet as of ``as_of``."""
    return {
        "as_of": z(as_of),
        "window": {"start": z(start), "end": z(as_of)},
        "flows": all_flows(),
        "revenue_at_risk": {},
        "exceptions": all_queues(),
        "duplicate_projects": 0,
        "amendment_conflicts": 0,
        "integration_failures": {},
        "invoice_dispute_rate": None,
        "uncorrelated_events": 0,
        "funnel": funnel(0, 0, 0, 0, 0, 0),
        "stage_misses": misses(),
        "data_quality": {"uncorrelated_events": 0, "dead_letters": {}, "silent_sources": []},
        "replays": NO_REPLAYS,
    }


# --- events (events.md) ---


def event(type_: str, at: datetime, corr: str | None, **data: Any) -> dict[str, Any]:
    """A canonical event; ``corr=None`` sends it without ``correlationid``."""
    if corr is None:
        return make_event(type_, time=z(at), data=data, drop=["correlationid"])
    return make_event(type_, time=z(at), correlationid=corr, data=data)


def signed(
    corr: str,
    at: datetime,
    *,
    value: Any = "1000.00",
    currency: str = "EUR",
    legal_entity: str = "DE01",
    region: str = "EMEA",
    service_line: str = "implementation",
    milestones: list[dict[str, Any]] | None = None,
    drop: Sequence[str] = (),
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "contract_id": f"CTR-{corr}",
        "contract_value": value,
        "currency": currency,
        "legal_entity": legal_entity,
        "region": region,
        "service_line": service_line,
    }
    if milestones is not None:
        data["milestones"] = milestones
    for name in drop:
        del data[name]
    return event("contract.signed", at, corr, **data)


def stage_event(corr: str, type_: str, at: datetime, **extra: Any) -> dict[str, Any]:
    data = {
        "customer.synced": {"customer_id": f"CUS-{corr}", "erp_customer_id": f"E-{corr}"},
        "project.created": {"project_id": f"PRJ-{corr}", "contract_id": f"CTR-{corr}"},
        "billing_plan.created": {"project_id": f"PRJ-{corr}"},
        "project.activated": {"project_id": f"PRJ-{corr}"},
    }[type_]
    return event(type_, at, corr, **{**data, **extra})


def onboarding(
    corr: str, t0: datetime, stages: Mapping[str, float | timedelta], **contract: Any
) -> list[dict[str, Any]]:
    """contract.signed at ``t0`` and each given stage that many hours (or that timedelta) later.
    A billing plan carries the contract's milestones, so no term_mismatch is raised."""
    items = [signed(corr, t0, **contract)]
    for type_, offset in stages.items():
        delay = offset if isinstance(offset, timedelta) else timedelta(hours=offset)
        extra = {}
        if type_ == "billing_plan.created" and contract.get("milestones"):
            extra["milestones"] = contract["milestones"]
        items.append(stage_event(corr, type_, t0 + delay, **extra))
    return items


def done(activated_after: float | timedelta) -> dict[str, float | timedelta]:
    """Every onboarding stage: customer 1 h, project 2 h, plan 3 h after T0, activated as given."""
    return {
        "customer.synced": 1,
        "project.created": 2,
        "billing_plan.created": 3,
        "project.activated": activated_after,
    }


def milestone(
    corr: str, milestone_id: str, at: datetime, amount: Any = "1.00", currency: str | None = "EUR"
) -> dict[str, Any]:
    data: dict[str, Any] = {"milestone_id": milestone_id}
    if amount is not None:
        data["amount"] = amount
    if currency is not None:
        data["currency"] = currency
    return event("milestone.completed", at, corr, **data)


def invoice(corr: str | None, invoice_id: str, at: datetime, **data: Any) -> dict[str, Any]:
    return event("invoice.posted", at, corr, invoice_id=invoice_id, **data)


def dispute(corr: str | None, invoice_id: str, at: datetime) -> dict[str, Any]:
    return event("invoice.disputed", at, corr, invoice_id=invoice_id)


def amended(corr: str, amendment_id: str, at: datetime) -> dict[str, Any]:
    return event("contract.amended", at, corr, contract_id=f"CTR-{corr}", amendment_id=amendment_id)


def plan_updated(corr: str, amendment_id: str, at: datetime) -> dict[str, Any]:
    return event("billing_plan.updated", at, corr, amendment_id=amendment_id)


def terminated(corr: str, at: datetime) -> dict[str, Any]:
    return event("contract.terminated", at, corr, contract_id=f"CTR-{corr}")


def integration(
    outcome: str, corr: str | None, step: str, at: datetime, **data: Any
) -> dict[str, Any]:
    return event(f"integration.{outcome}", at, corr, step=step, execution_id="EX-1", **data)


# --- the API ---


@pytest.fixture
def client(settings: Settings, database: Database) -> Iterator[TestClient]:
    """The API with its clock at AS_OF."""
    with TestClient(create_app(settings, database, clock=lambda: AS_OF)) as test_client:
        yield test_client


def post(client: TestClient, keys: dict[str, str], items: list[dict[str, Any]]) -> None:
    answer = client.post("/v1/events", json=items, headers=bearer(keys["ingest"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == [], answer.json()["rejected"]


def probe(
    database: Database, now: datetime = AS_OF, flow_types: Sequence[FlowType] = FLOW_TYPES
) -> None:
    run_until_idle(database, flow_types, now=now)


def load(
    client: TestClient,
    keys: dict[str, str],
    database: Database,
    items: list[dict[str, Any]],
    now: datetime = AS_OF,
) -> None:
    post(client, keys, items)
    probe(database, now)


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: z(value) if isinstance(value, datetime) else str(value)
        for name, value in params.items()
        if value is not None
    }


def ask(client: TestClient, key: str, path: str = "/v1/kpis", **params: Any) -> httpx.Response:
    answer: httpx.Response = client.get(path, params=_params(params), headers=bearer(key))
    return answer


def kpis(client: TestClient, keys: dict[str, str], **params: Any) -> dict[str, Any]:
    """The answer of GET /v1/kpis; ``as_of`` is AS_OF unless given (None leaves it out)."""
    params.setdefault("as_of", AS_OF)
    answer = ask(client, keys["viewer"], **params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def series(client: TestClient, keys: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    answer = ask(client, keys["viewer"], "/v1/kpis/series", **params)
    assert answer.status_code == 200, answer.text
    body: list[dict[str, Any]] = answer.json()
    return body


def assert_invalid(answer: httpx.Response, status: int = 422, code: str = "invalid") -> None:
    assert answer.status_code == status, (answer.request.url, answer.text)
    assert answer.json()["error"]["code"] == code, answer.text


def without_instants(answer: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key not in ("as_of", "window")}


def assert_core(answer: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each kpis.md figure given in ``expected`` equals the answer's, section by section."""
    for key, value in expected.items():
        assert answer[key] == value, key


# --- scenario D: due, met, completed and durations of contract onboarding ---


def scenario_d() -> list[dict[str, Any]]:
    """Onboarding flows with T0 and completion around W = (Nov 3, Nov 10]; deadline = T0 + 72 h."""
    return [
        # D-1: T0 Nov 3 06:00, complete +10 h (Nov 3 16:00), deadline Nov 6 06:00: met
        *onboarding("D-1", nov(3, 6), done(10)),
        # D-2: complete +20 h (Nov 4 02:00): met
        *onboarding("D-2", nov(3, 6), done(20)),
        # D-3: T0 Nov 4, complete +30 h (Nov 5 06:00), deadline Nov 7: met
        *onboarding("D-3", nov(4), done(30)),
        # D-4: billing_plan.created never comes (skipped), complete +40 h (Nov 5 16:00): met
        *onboarding(
            "D-4", nov(4), {"customer.synced": 1, "project.created": 2, "project.activated": 40}
        ),
        # D-5: T0 Nov 3 06:00, activated +80 h (Nov 6 14:00), after its deadline Nov 6 06:00
        *onboarding("D-5", nov(3, 6), done(80)),
        # D-6: T0 Nov 2, complete Nov 2 10:00 (before W), deadline Nov 5 (in W): met
        *onboarding("D-6", nov(2), done(10)),
        # D-7: T0 Nov 5, customer and project only: stuck on billing_plan.created from Nov 7
        *onboarding("D-7", nov(5), {"customer.synced": 1, "project.created": 2}, value="7000.00"),
        # D-8: T0 Nov 8, complete +5 h 0.123456 s; deadline Nov 11: completed in W, not due
        *onboarding("D-8", nov(8), done(timedelta(hours=5, microseconds=123456))),
    ]


def test_due_met_completed_and_durations(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, scenario_d())
    answer = kpis(client, keys, window="7d")
    assert set(answer) == KPI_KEYS | FURTHER_KEYS
    assert answer["as_of"] == "2026-11-10T00:00:00Z"
    assert answer["window"] == {"start": "2026-11-03T00:00:00Z", "end": "2026-11-10T00:00:00Z"}
    assert_core(
        answer,
        {
            "flows": all_flows(
                contract_onboarding=figures(
                    "contract_onboarding",
                    # deadlines in W: D-1..D-7 (D-6's Nov 5 is in W, D-8's Nov 11 is not)
                    due=7,
                    # met: D-1, D-2, D-3, D-4, D-6; D-5 late, D-7 incomplete
                    met=5,
                    success_rate=0.7143,  # 5/7 = 0.714285...
                    # completed in W: D-1, D-2, D-3, D-4, D-5, D-8 (D-6 on Nov 2)
                    completed=6,
                    # 18000.123456, 36000, 72000, 108000, 144000, 288000
                    duration_seconds=durations(
                        6,
                        111000.021,  # 666000.123456 / 6 = 111000.020576
                        90000.0,  # rank 2.5: 72000 + 0.5 * 36000
                        216000.0,  # rank 4.5: 144000 + 0.5 * 144000
                        252000.0,  # rank 4.75: 144000 + 0.75 * 144000
                        288000.0,
                    ),
                    open=1,  # D-7
                    stuck=1,
                    stuck_by_stage={"billing_plan.created": 1},
                )
            ),
            "revenue_at_risk": {"EUR": "7000.00"},
            # D-7's finding opened at T0 + 48 h = Nov 7: 3 days old, lower bound inclusive
            "exceptions": all_queues(finance_ops=queue(1, 3 * DAY, {"3d_7d": 1})),
            "duplicate_projects": 0,
            "amendment_conflicts": 0,
            "integration_failures": {},
            "invoice_dispute_rate": None,
            "uncorrelated_events": 0,
        },
    )

    # W = (Nov 3, Nov 6]: completed D-1 (10 h), D-2 (20 h), D-3 (30 h), D-4 (40 h); D-5 completes
    # at Nov 6 14:00, after as_of. Due: only D-6 (Nov 5), met.
    earlier = kpis(client, keys, as_of=nov(6), start=nov(3))
    assert earlier["window"] == {"start": "2026-11-03T00:00:00Z", "end": "2026-11-06T00:00:00Z"}
    assert earlier["flows"]["contract_onboarding"] == figures(
        "contract_onboarding",
        due=1,
        met=1,
        success_rate=1.0,
        completed=4,
        duration_seconds=durations(
            4,
            25 * HOUR,  # (10 + 20 + 30 + 40) / 4 h
            25 * HOUR,  # rank 1.5: 20 + 0.5 * 10 h
            37 * HOUR,  # rank 2.7: 30 + 0.7 * 10 h
            38.5 * HOUR,  # rank 2.85: 30 + 0.85 * 10 h
            40 * HOUR,
        ),
        # D-5 (plan done, activation due Nov 6 06:00) and D-7 (plan due Nov 7): open, not stuck
        open=2,
    )
    assert earlier["exceptions"] == all_queues()
    assert earlier["revenue_at_risk"] == {}

    # W = (Nov 9 23:00, Nov 10]: nothing due or completed, so the null rules; as-of figures stay.
    last_hour = kpis(client, keys, window="1h")
    assert last_hour["window"]["start"] == "2026-11-09T23:00:00Z"
    assert last_hour["flows"]["contract_onboarding"] == figures(
        "contract_onboarding", open=1, stuck=1, stuck_by_stage={"billing_plan.created": 1}
    )
    assert last_hour["exceptions"] == answer["exceptions"]


def test_as_of_before_everything_gives_zeros_and_nulls(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, scenario_d())
    as_of = datetime(2026, 10, 1, tzinfo=UTC)
    assert kpis(client, keys, as_of=as_of) == empty_answer(as_of, as_of - timedelta(days=7))


def test_default_as_of_is_now_and_default_window_7d(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, scenario_d())
    default = kpis(client, keys, as_of=None)  # the app's clock: AS_OF
    assert default["as_of"] == "2026-11-10T00:00:00Z"
    assert default["window"] == {"start": "2026-11-03T00:00:00Z", "end": "2026-11-10T00:00:00Z"}
    assert default == kpis(client, keys, window="7d") == kpis(client, keys, window="168h")
    # the same instant written with an offset: the same answer, its instants in UTC with Z
    with_offset = kpis(client, keys, as_of="2026-11-10T01:00:00+01:00")
    assert without_instants(with_offset) == without_instants(default)
    assert (with_offset["as_of"], with_offset["window"]) == (default["as_of"], default["window"])


def test_events_after_as_of_change_nothing(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = scenario_d()
    load(client, keys, database, items, now=nov(10))
    before = kpis(client, keys)
    before_30d = kpis(client, keys, window="30d")
    after = nov(10, second=1)
    late = [
        # D-7's missing stages, after as_of: still stuck as of AS_OF
        stage_event("D-7", "billing_plan.created", after),
        stage_event("D-7", "project.activated", nov(11)),
        # a contract signed after as_of does not exist yet
        *onboarding("D-9", after, done(1)),
        integration("failed", "D-9", "project.created", nov(11)),
        event("project.activated", nov(12), None, project_id="PRJ-NOWHERE"),
        invoice("D-9", "INV-LATE", nov(11)),
        dispute("D-9", "INV-LATE", nov(11, 1)),
        terminated("D-5", nov(11)),
        items[0],  # a re-delivery: a duplicate
    ]
    load(client, keys, database, late, now=nov(14))
    assert kpis(client, keys) == before
    assert kpis(client, keys, window="30d") == before_30d
    # as of Nov 12 they count: D-7 completed, D-9 too, one failure and one uncorrelated event
    later = kpis(client, keys, as_of=nov(12))
    assert later["flows"]["contract_onboarding"]["stuck"] == 0
    assert later["integration_failures"] == {"project.created": 1}
    assert later["invoice_dispute_rate"] == 1.0
    assert later["uncorrelated_events"] == 1


# --- rounding of rates ---


def test_rates_round_half_to_even_on_the_exact_ratio(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items: list[dict[str, Any]] = []
    minute = timedelta(minutes=1)
    # Week 1, W1 = (Nov 3, Nov 10]: 32 amendments at Nov 5 + i min, deadline + 24 h; one met.
    for i in range(32):
        items.append(amended("RATE-A", f"A1-{i}", nov(5) + i * minute))
    items.append(plan_updated("RATE-A", "A1-0", nov(5, 1)))
    # Week 2, W2 = (Nov 10, Nov 17]: 32 more at Nov 12 + i min; three met.
    for i in range(32):
        items.append(amended("RATE-A", f"A2-{i}", nov(12) + i * minute))
    for i in range(3):
        items.append(plan_updated("RATE-A", f"A2-{i}", nov(12, 1) + i * minute))
    # Three milestones at Nov 3 12:00 (deadline Nov 8 12:00), two invoiced Nov 4: 2 of 3 met.
    for i in (1, 2, 3):
        items.append(milestone("RATE-M", f"RM-{i}", nov(3, 12)))
    items += [invoice("RATE-M", f"INV-RM-{i}", nov(4), milestone_id=f"RM-{i}") for i in (1, 2)]
    # Invoices in W1: the two above, 80 correlated and 78 uncorrelated: 160 posted; 1 disputed
    # (uncorrelated). In W2: 80 + 80 posted; 7 disputed, 4 of them uncorrelated.
    for i in range(80):
        items.append(invoice("INV-1", f"INV-1-{i}", nov(6) + i * minute))
        items.append(invoice("INV-2", f"INV-2-{i}", nov(13) + i * minute))
        items.append(invoice(None, f"INV-U2-{i}", nov(13) + i * minute, project_id="PRJ-NONE"))
    for i in range(78):
        items.append(invoice(None, f"INV-U1-{i}", nov(6) + i * minute, project_id="PRJ-NONE"))
    items.append(dispute(None, "INV-U1-0", nov(7)))
    items += [dispute("INV-2", f"INV-2-{i}", nov(14) + i * minute) for i in range(3)]
    items += [dispute(None, f"INV-U2-{i}", nov(14, 1) + i * minute) for i in range(4)]
    load(client, keys, database, items, now=nov(17))

    week1 = kpis(client, keys, as_of=nov(10), window="7d")
    amendments = week1["flows"]["amendment_propagation"]
    assert (amendments["due"], amendments["met"]) == (32, 1)
    assert amendments["success_rate"] == 0.0312  # 1/32 = 0.03125: half to even
    milestones = week1["flows"]["milestone_billing"]
    assert (milestones["due"], milestones["met"]) == (3, 2)
    assert milestones["success_rate"] == 0.6667  # 2/3
    # 1/160 = 0.00625 exactly: half to even gives 0.0062 (the binary float 1/160 rounds to 0.0063)
    assert week1["invoice_dispute_rate"] == 0.0062
    assert week1["uncorrelated_events"] == 79  # 78 posted + 1 disputed
    assert week1["data_quality"]["uncorrelated_events"] == 79

    week2 = kpis(client, keys, as_of=nov(17), window="7d")
    amendments = week2["flows"]["amendment_propagation"]
    assert (amendments["due"], amendments["met"]) == (32, 3)
    assert amendments["success_rate"] == 0.0938  # 3/32 = 0.09375: half to even
    assert week2["flows"]["milestone_billing"]["success_rate"] is None  # due = 0
    # 7/160 = 0.04375 exactly: half to even gives 0.0438 (the binary float rounds to 0.0437)
    assert week2["invoice_dispute_rate"] == 0.0438
    assert week2["uncorrelated_events"] == 79 + 80 + 4

    both = kpis(client, keys, as_of=nov(17), window="14d")
    amendments = both["flows"]["amendment_propagation"]
    assert (amendments["due"], amendments["met"], amendments["success_rate"]) == (64, 4, 0.0625)
    assert both["flows"]["milestone_billing"]["success_rate"] == 0.6667
    assert both["invoice_dispute_rate"] == 0.025  # 8/320


# --- open, stuck, stuck_by_stage and the queues ---


def test_open_stuck_and_the_first_missing_stage(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = [
        # S-1: T0 Nov 6; billing plan came (+30 h) but project.created never: stuck on
        # project.created (the first missing stage), pmo, opened Nov 7 (3 days before AS_OF)
        *onboarding(
            "S-1", nov(6), {"customer.synced": 1, "billing_plan.created": 30}, value="1.00"
        ),
        # S-2: T0 Nov 9 12:00, project came but no customer: stuck on customer.synced from
        # Nov 9 16:00 (8 h), finance_ops
        *onboarding("S-2", nov(9, 12), {"project.created": 2}, value="2.00"),
        # S-3: T0 Nov 9 22:00, first deadline Nov 10 02:00: open, not stuck
        *onboarding("S-3", nov(9, 22), {}, value="3.00"),
        # S-4: T0 Nov 4, everything but the activation: stuck from Nov 7 (3 days), pmo
        *onboarding(
            "S-4",
            nov(4),
            {"customer.synced": 1, "project.created": 2, "billing_plan.created": 3},
            value="4.00",
        ),
        # S-5: T0 Nov 7: stuck on billing_plan.created from Nov 9 (1 day), finance_ops
        *onboarding(
            "S-5",
            nov(7),
            {"customer.synced": 1, "project.created": 2},
            value="5.00",
            currency="USD",
        ),
        # S-6: complete at +10 h without customer.synced: skipped, not stuck, not open
        *onboarding(
            "S-6",
            nov(5),
            {"project.created": 2, "billing_plan.created": 3, "project.activated": 10},
            value="6.00",
        ),
        # MS-1: completed Nov 1, never invoiced: stuck from Nov 6 (4 days), finance_ops
        milestone("S-7", "MS-1", nov(1), amount="0.50", currency="GBP"),
        # MS-2: completed Nov 1, invoiced late on Nov 7: complete, 6 days
        milestone("S-7", "MS-2", nov(1), amount="9.00", currency="GBP"),
        invoice("S-7", "INV-MS-2", nov(7), milestone_id="MS-2"),
        # A-1 at Nov 8 12:00: stuck from Nov 9 12:00 (12 h), finance_ops; A-2 not yet due
        amended("S-8", "A-1", nov(8, 12)),
        amended("S-8", "A-2", nov(9, 12)),
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys)
    assert answer["flows"] == all_flows(
        contract_onboarding=figures(
            "contract_onboarding",
            # deadlines in W: S-1 Nov 9, S-4 Nov 7, S-5 Nov 10 (= as_of), S-6 Nov 8 (met)
            due=4,
            met=1,
            success_rate=0.25,
            completed=1,  # S-6 on Nov 5 10:00
            duration_seconds=one_duration(10 * HOUR),
            open=5,  # S-1, S-2, S-3, S-4, S-5: stuck flows are open
            stuck=4,
            stuck_by_stage={
                "customer.synced": 1,  # S-2
                "project.created": 1,  # S-1, though billing_plan.created came
                "billing_plan.created": 1,  # S-5
                "project.activated": 1,  # S-4
            },
        ),
        amendment_propagation=figures(
            "amendment_propagation",
            due=1,  # A-1, deadline Nov 9 12:00
            success_rate=0.0,
            open=2,
            stuck=1,
            stuck_by_stage={"billing_plan.updated": 1},
        ),
        milestone_billing=figures(
            "milestone_billing",
            due=2,  # MS-1 and MS-2, deadline Nov 6
            success_rate=0.0,
            completed=1,  # MS-2 on Nov 7
            duration_seconds=one_duration(6 * DAY),
            open=1,
            stuck=1,
            stuck_by_stage={"invoice.posted": 1},
        ),
    )
    # stuck: S-1 1.00 + S-2 2.00 + S-4 4.00 EUR; S-5 5.00 USD; MS-1 0.50 GBP
    assert answer["revenue_at_risk"] == {"EUR": "7.00", "USD": "5.00", "GBP": "0.50"}
    assert answer["exceptions"] == all_queues(
        # S-2 8 h, A-1 12 h, S-5 1 day, MS-1 4 days
        finance_ops=queue(4, 4 * DAY, {"lt_1d": 2, "1d_3d": 1, "3d_7d": 1}),
        # S-1 and S-4 both opened Nov 7: 3 days, lower bound inclusive
        pmo=queue(2, 3 * DAY, {"3d_7d": 2}),
    )


def test_cancelled_flows(client: TestClient, keys: dict[str, str], database: Database) -> None:
    items = [
        # C-1: terminated Nov 4 20:00, before any deadline passed: not due; the stages after
        # the termination change nothing
        *onboarding("C-1", nov(4), {"customer.synced": 1}),
        terminated("C-1", nov(4, 20)),
        stage_event("C-1", "project.created", nov(6)),
        stage_event("C-1", "project.activated", nov(6, 1)),
        # C-2: stuck on billing_plan.created from Nov 6, terminated Nov 8, after its deadline
        # Nov 7: due and missed; its milestone (deadline Nov 10) is cancelled with it, not due
        *onboarding("C-2", nov(4), {"customer.synced": 1, "project.created": 2}, value="20.00"),
        milestone("C-2", "C-2-M1", nov(5)),
        terminated("C-2", nov(8)),
        # C-3: complete at +10 h, terminated the next day: stays complete
        *onboarding("C-3", nov(4), done(10)),
        terminated("C-3", nov(5)),
        # C-4: terminated exactly at its deadline Nov 7: due (deadline <= t_c), not met
        *onboarding(
            "C-4", nov(4), {"customer.synced": 1, "project.created": 2, "billing_plan.created": 3}
        ),
        terminated("C-4", nov(7)),
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys)
    assert answer["flows"] == all_flows(
        contract_onboarding=figures(
            "contract_onboarding",
            due=3,  # C-2, C-3, C-4
            met=1,  # C-3
            success_rate=0.3333,
            completed=1,
            duration_seconds=one_duration(10 * HOUR),
        ),
    )
    assert answer["revenue_at_risk"] == {}
    assert answer["exceptions"] == all_queues()

    # As of Nov 6 12:00, before C-2's termination: C-2 stuck on its plan since Nov 6 (12 h);
    # C-4 open; C-2-M1 open; C-1 already cancelled. W = (Oct 30 12:00, Nov 6 12:00]: no
    # onboarding deadline (all Nov 7) in W.
    before = kpis(client, keys, as_of=nov(6, 12))
    assert before["flows"] == all_flows(
        contract_onboarding=figures(
            "contract_onboarding",
            completed=1,
            duration_seconds=one_duration(10 * HOUR),
            open=2,
            stuck=1,
            stuck_by_stage={"billing_plan.created": 1},
        ),
        milestone_billing=figures("milestone_billing", open=1),
    )
    assert before["revenue_at_risk"] == {"EUR": "20.00"}
    assert before["exceptions"] == all_queues(finance_ops=queue(1, 12 * HOUR, {"lt_1d": 1}))


def test_revenue_at_risk_per_currency(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = [
        # V-1: complete contract; its milestone completed Nov 3 without amount or currency:
        # the contract's 1000.00 EUR, stuck from Nov 8
        *onboarding(
            "V-1",
            nov(1),
            done(10),
            value="5000.00",
            milestones=[{"milestone_id": "V-1-M1", "amount": "1000.00"}],
        ),
        milestone("V-1", "V-1-M1", nov(3), amount=None, currency=None),
        # V-2: beyond binary floats; stuck on project.created from Nov 9
        *onboarding("V-2", nov(8), {"customer.synced": 1}, value="12345678901234567.89"),
        # V-3: stuck on customer.synced from Nov 8 04:00
        *onboarding("V-3", nov(8), {}, value="0.01"),
        # V-4: a JSON number; stuck on billing_plan.created from Nov 4; its milestone has an
        # amount but no currency: the contract's USD, stuck from Nov 8
        *onboarding(
            "V-4",
            nov(2),
            {"customer.synced": 1, "project.created": 2},
            value=2500.5,
            currency="USD",
        ),
        milestone("V-4", "V-4-M1", nov(3), amount="100.10", currency=None),
        # V-5: milestones without a contract: one stuck from Nov 8, one invoiced
        milestone("V-5", "V-5-M1", nov(3), amount="999.99", currency="GBP"),
        milestone("V-5", "V-5-M2", nov(3), amount="0.01", currency="GBP"),
        invoice("V-5", "INV-V-5", nov(4), milestone_id="V-5-M2"),
        # V-6 open, not stuck; V-7 stuck from Nov 7 04:00, terminated Nov 8; V-8 complete
        *onboarding("V-6", nov(9, 23), {}, value="5000.00"),
        *onboarding("V-7", nov(7), {}, value="333.00"),
        terminated("V-7", nov(8)),
        *onboarding("V-8", nov(4), done(10), value="7000.00"),
    ]
    load(client, keys, database, items)
    # EUR: 12345678901234567.89 + 0.01 + 1000.00; USD: 2500.50 + 100.10; GBP: 999.99
    assert kpis(client, keys)["revenue_at_risk"] == {
        "EUR": "12345678901235567.90",
        "USD": "2600.60",
        "GBP": "999.99",
    }
    # Nov 8 02:00: V-2 and V-3 not stuck yet, V-7 cancelled
    assert kpis(client, keys, as_of=nov(8, 2))["revenue_at_risk"] == {
        "EUR": "1000.00",
        "USD": "2600.60",
        "GBP": "999.99",
    }
    # Nov 7 12:00: no milestone stuck yet; V-7 stuck, not yet terminated
    assert kpis(client, keys, as_of=nov(7, 12))["revenue_at_risk"] == {
        "EUR": "333.00",
        "USD": "2500.50",
    }


def test_aging_buckets_at_their_exact_boundaries(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    """Milestone flows stuck from T0 + 120 h, which is AS_OF minus each age."""
    ages = {
        "lt": timedelta(days=1, milliseconds=-1),  # 86399.999 s: lt_1d
        "1d": timedelta(days=1),  # exactly 1 day: 1d_3d
        "3d-": timedelta(days=3, milliseconds=-1),  # 1d_3d
        "3d": timedelta(days=3),  # 3d_7d
        "7d-": timedelta(days=7, milliseconds=-1),  # 3d_7d
        "7d": timedelta(days=7),  # gt_7d
    }
    items = [
        milestone(f"AGE-{name}", f"AGE-{name}-M", AS_OF - age - timedelta(hours=120))
        for name, age in ages.items()
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys)
    assert answer["exceptions"] == all_queues(
        finance_ops=queue(6, 7 * DAY, {"lt_1d": 1, "1d_3d": 2, "3d_7d": 2, "gt_7d": 1})
    )
    # deadlines = AS_OF - age: the 7-day one is exactly at the window's start, so out of W
    assert answer["flows"]["milestone_billing"] == figures(
        "milestone_billing",
        due=5,
        success_rate=0.0,
        open=6,
        stuck=6,
        stuck_by_stage={"invoice.posted": 6},
    )
    assert answer["revenue_at_risk"] == {"EUR": "6.00"}


def test_a_deadline_exactly_at_as_of_is_due_and_missed_but_not_yet_stuck(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    """flows.md: due once deadline <= as_of; stuck when a deadline T0 + d < as_of (strictly);
    kpis.md: a stage deadline in W not reached by as_of is a miss."""
    load(client, keys, database, [milestone("EDGE", "EDGE-M", AS_OF - timedelta(hours=120))])
    answer = kpis(client, keys)
    assert answer["flows"]["milestone_billing"] == figures(
        "milestone_billing", due=1, success_rate=0.0, open=1
    )
    assert answer["revenue_at_risk"] == {}
    assert answer["stage_misses"] == misses(milestone_billing={"invoice.posted": 1})
    just_after = kpis(client, keys, as_of="2026-11-10T00:00:00.001Z")
    assert just_after["flows"]["milestone_billing"] == figures(
        "milestone_billing",
        due=1,
        success_rate=0.0,
        open=1,
        stuck=1,
        stuck_by_stage={"invoice.posted": 1},
    )
    assert just_after["revenue_at_risk"] == {"EUR": "1.00"}


def test_a_stuck_stage_whose_latest_middleware_event_failed_goes_to_integration_oncall(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = [
        # milestone stuck from Nov 8; its invoice step failed Nov 7: integration_oncall
        milestone("R-1", "R-1-M", nov(3)),
        integration("failed", "R-1", "invoice.posted", nov(7), milestone_id="R-1-M"),
        # failed, then succeeded: the latest succeeded, finance_ops
        milestone("R-2", "R-2-M", nov(3)),
        integration("failed", "R-2", "invoice.posted", nov(7), milestone_id="R-2-M"),
        integration("succeeded", "R-2", "invoice.posted", nov(7, 12), milestone_id="R-2-M"),
        # stuck on project.created from Nov 9, dead-lettered at that step: integration_oncall
        *onboarding("R-3", nov(8), {"customer.synced": 1}),
        integration("dead_lettered", "R-3", "project.created", nov(8, 20)),
        # the same, but the failure comes at Nov 10 06:00: pmo as of AS_OF
        *onboarding("R-4", nov(8), {"customer.synced": 1}),
        integration("failed", "R-4", "project.created", nov(10, 6)),
        # two milestones stuck from Nov 8, the failure names only R-5-a
        milestone("R-5", "R-5-a", nov(3)),
        milestone("R-5", "R-5-b", nov(3)),
        integration("failed", "R-5", "invoice.posted", nov(7), milestone_id="R-5-a"),
        # a failure at another stage than the stuck one: pmo
        *onboarding("R-6", nov(8), {"customer.synced": 1}),
        integration("failed", "R-6", "billing_plan.created", nov(8, 10)),
        # a failure naming no milestone concerns every flow of its correlation ID
        milestone("R-7", "R-7-M", nov(3)),
        integration("failed", "R-7", "invoice.posted", nov(7)),
    ]
    load(client, keys, database, items, now=nov(12))  # the probes ran after R-4's failure
    answer = kpis(client, keys)
    assert answer["exceptions"] == all_queues(
        # R-1, R-5-a, R-7 opened Nov 8 (2 days), R-3 Nov 9 (1 day)
        integration_oncall=queue(4, 2 * DAY, {"1d_3d": 4}),
        finance_ops=queue(2, 2 * DAY, {"1d_3d": 2}),  # R-2, R-5-b
        pmo=queue(2, DAY, {"1d_3d": 2}),  # opened Nov 9
    )
    # in W: at invoice.posted, R-3 at project.created, R-6 at the plan
    assert answer["integration_failures"] == {
        "invoice.posted": 4,
        "project.created": 1,
        "billing_plan.created": 1,
    }
    # As of Nov 10 07:00 R-4's failure has happened: its finding is integration_oncall's.
    later = kpis(client, keys, as_of=nov(10, 7))
    seven = 7 * HOUR
    assert later["exceptions"] == all_queues(
        integration_oncall=queue(5, 2 * DAY + seven, {"1d_3d": 5}),
        finance_ops=queue(2, 2 * DAY + seven, {"1d_3d": 2}),
        pmo=queue(1, DAY + seven, {"1d_3d": 1}),
    )
    assert later["integration_failures"] == {
        "invoice.posted": 4,
        "project.created": 2,
        "billing_plan.created": 1,
    }


def test_operator_findings_and_their_resolution(
    settings: Settings, client: TestClient, keys: dict[str, str], database: Database
) -> None:
    contract_milestones = [
        {"milestone_id": "OPS-1-M1", "amount": "1000.00"},
        {"milestone_id": "OPS-1-M2", "amount": "2000.00"},
    ]
    items = [
        signed("OPS-1", nov(4), milestones=contract_milestones),
        stage_event("OPS-1", "customer.synced", nov(4, 1)),
        stage_event("OPS-1", "project.created", nov(4, 2), project_id="PRJ-A"),
        # a second distinct project_id: duplicate_project (pmo) opened Nov 4 03:00
        stage_event("OPS-1", "project.created", nov(4, 3), project_id="PRJ-B"),
        # the plan lacks OPS-1-M2: term_mismatch (finance_ops) opened Nov 4 05:00
        stage_event("OPS-1", "billing_plan.created", nov(4, 5), milestones=contract_milestones[:1]),
        stage_event("OPS-1", "project.activated", nov(4, 6)),
        # an invoice while amendment AM-1 is pending: amendment_conflict (finance_ops) at
        # Nov 5 12:00; the amendment then propagates on time (Nov 6 = its deadline)
        amended("OPS-1", "AM-1", nov(5)),
        invoice("OPS-1", "INV-OPS-1", nov(5, 12), milestone_id="OPS-1-M1"),
        plan_updated("OPS-1", "AM-1", nov(6)),
        invoice("OPS-1", "INV-OPS-2", nov(6, 12), milestone_id="OPS-1-M1"),
        # no legal_entity: contract_data_incomplete (legal_ops) opened at T0, Nov 8
        *onboarding("OPS-2", nov(8), done(10), drop=["legal_entity"]),
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys)
    assert answer["exceptions"] == all_queues(
        pmo=queue(1, 5 * DAY + 21 * HOUR, {"3d_7d": 1}),  # Nov 4 03:00
        # Nov 4 05:00 (5 d 19 h) and Nov 5 12:00 (4 d 12 h)
        finance_ops=queue(2, 5 * DAY + 19 * HOUR, {"3d_7d": 2}),
        legal_ops=queue(1, 2 * DAY, {"1d_3d": 1}),
    )
    assert (answer["duplicate_projects"], answer["amendment_conflicts"]) == (1, 1)
    # A finding goes with its flow's group; the amendment flow's legal entity is its contract's
    # (a filter keeps the flows whose contract.signed has the value); OPS-2 has none.
    by_entity = kpis(client, keys, group_by="legal_entity")["groups"]
    assert set(by_entity) == {"DE01", "unknown"}
    de01 = all_queues(
        pmo=queue(1, 5 * DAY + 21 * HOUR, {"3d_7d": 1}),
        finance_ops=queue(2, 5 * DAY + 19 * HOUR, {"3d_7d": 2}),
    )
    assert by_entity["DE01"]["exceptions"] == de01
    assert by_entity["unknown"]["exceptions"] == all_queues(
        legal_ops=queue(1, 2 * DAY, {"1d_3d": 1})
    )
    filtered = kpis(client, keys, legal_entity="DE01")
    assert filtered["exceptions"] == de01
    # AM-1: T0 Nov 5, propagated Nov 6 = its deadline: due and met, 1 day
    assert filtered["flows"]["amendment_propagation"] == figures(
        "amendment_propagation",
        due=1,
        met=1,
        success_rate=1.0,
        completed=1,
        duration_seconds=one_duration(DAY),
    )
    assert kpis(client, keys, as_of=nov(4, 2, 30))["duplicate_projects"] == 0
    assert kpis(client, keys, as_of=nov(4, 4))["duplicate_projects"] == 1
    assert kpis(client, keys, as_of=nov(5, 11))["amendment_conflicts"] == 0
    assert kpis(client, keys, as_of=nov(5, 13))["amendment_conflicts"] == 1

    # Operators resolve the duplicate and the conflict at Nov 9 23:00.
    resolved_at = nov(9, 23)
    with TestClient(create_app(settings, database, clock=lambda: resolved_at)) as operator:
        for kind, role in (("duplicate_project", "pmo"), ("amendment_conflict", "finance_ops")):
            listed = operator.get(
                "/v1/exceptions", params={"kind": kind}, headers=bearer(keys["viewer"])
            )
            [finding] = listed.json()["items"]
            resolved = operator.post(
                f"/v1/exceptions/{finding['id']}/resolve",
                json={"resolution": "handled"},
                headers=bearer(keys[role]),
            )
            assert resolved.status_code == 200, resolved.text

    after = kpis(client, keys)
    assert after["exceptions"] == all_queues(
        finance_ops=queue(1, 5 * DAY + 19 * HOUR, {"3d_7d": 1}),  # the term_mismatch
        legal_ops=queue(1, 2 * DAY, {"1d_3d": 1}),
    )
    # resolving closes the finding, not the fact
    assert (after["duplicate_projects"], after["amendment_conflicts"]) == (1, 1)
    # as of Nov 9 22:00 they were not resolved yet: everything 2 h younger
    still = kpis(client, keys, as_of=nov(9, 22))
    assert still["exceptions"] == all_queues(
        pmo=queue(1, 5 * DAY + 19 * HOUR, {"3d_7d": 1}),
        finance_ops=queue(2, 5 * DAY + 17 * HOUR, {"3d_7d": 2}),
        legal_ops=queue(1, 2 * DAY - 2 * HOUR, {"1d_3d": 1}),
    )


def _resolve(
    settings: Settings,
    database: Database,
    keys: dict[str, str],
    at: datetime,
    role: str,
    **params: str,
) -> list[dict[str, Any]]:
    """An operator with ``role`` resolves every open finding listed with ``params``, at ``at``."""
    with TestClient(create_app(settings, database, clock=lambda: at)) as operator:
        listed = operator.get(
            "/v1/exceptions", params={**params, "limit": "1000"}, headers=bearer(keys["viewer"])
        )
        assert listed.status_code == 200, listed.text
        items: list[dict[str, Any]] = listed.json()["items"]
        for finding in items:
            answer = operator.post(
                f"/v1/exceptions/{finding['id']}/resolve", json={}, headers=bearer(keys[role])
            )
            assert answer.status_code == 200, answer.text
    return items


def _open_listed(client: TestClient, keys: dict[str, str]) -> dict[str, int]:
    """Findings open now (the client's clock) per queue, as GET /v1/exceptions lists them."""
    counts = {}
    for name in QUEUES:
        listed = client.get(
            "/v1/exceptions",
            params={"queue": name, "status": "open", "limit": "1000"},
            headers=bearer(keys["viewer"]),
        )
        assert listed.status_code == 200, listed.text
        counts[name] = len(listed.json()["items"])
    return counts


def test_an_operator_resolving_a_stuck_finding_closes_it_in_its_queue(
    settings: Settings, client: TestClient, keys: dict[str, str], database: Database
) -> None:
    """flows.md: a finding is open as of T when opened_at <= T and it was not resolved by T; a
    stuck finding resolves by itself or by an operator (docs/flows.md). The flow stays stuck."""
    items = [
        # stuck from Nov 8 (finance_ops) and from Nov 7 (pmo)
        milestone("OP-1", "OP-1-M", nov(3), amount="5.00"),
        *onboarding(
            "OP-2",
            nov(4),
            {"customer.synced": 1, "project.created": 2, "billing_plan.created": 3},
            value="7.00",
        ),
    ]
    load(client, keys, database, items)
    before = kpis(client, keys)
    assert before["exceptions"] == all_queues(
        finance_ops=queue(1, 2 * DAY, {"1d_3d": 1}), pmo=queue(1, 3 * DAY, {"3d_7d": 1})
    )
    # acknowledging and assigning change nothing
    with TestClient(create_app(settings, database, clock=lambda: nov(9))) as operator:
        [finding] = operator.get(
            "/v1/exceptions", params={"queue": "pmo"}, headers=bearer(keys["viewer"])
        ).json()["items"]
        path = f"/v1/exceptions/{finding['id']}"
        assert operator.post(f"{path}/ack", headers=bearer(keys["pmo"])).status_code == 200
        assigned = operator.post(
            f"{path}/assign", json={"assignee": "pat"}, headers=bearer(keys["pmo"])
        )
        assert assigned.status_code == 200, assigned.text
    assert kpis(client, keys) == before

    [resolved] = _resolve(settings, database, keys, nov(9), "finance_ops", queue="finance_ops")
    assert resolved["kind"] == "stuck"
    # GET /v1/exceptions no longer lists it as open; the KPIs must agree (kpis.md: the same
    # numbers everywhere)
    assert _open_listed(client, keys) == {
        "finance_ops": 0,
        "legal_ops": 0,
        "pmo": 1,
        "integration_oncall": 0,
    }
    after = kpis(client, keys)
    assert after["exceptions"] == all_queues(pmo=queue(1, 3 * DAY, {"3d_7d": 1}))
    # the flow itself is still stuck, and its amount still at risk
    assert after["flows"] == before["flows"]
    assert after["revenue_at_risk"] == before["revenue_at_risk"] == {"EUR": "12.00"}
    # as of Nov 8 12:00 it was not resolved yet
    assert kpis(client, keys, as_of=nov(8, 12))["exceptions"]["finance_ops"]["open"] == 1


def test_duplicate_projects_count_flows_and_amendment_conflicts_count_pairs(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    effective = {"effective_date": "2026-11-07"}  # a date: 00:00 UTC that day
    items = [
        # DUP-1: three distinct project_ids: one flow with duplicate projects
        signed("DUP-1", nov(4)),
        *[
            stage_event("DUP-1", "project.created", nov(4, hour), project_id=f"PRJ-{hour}")
            for hour in (1, 2, 3)
        ],
        # DUP-2: the same project_id delivered twice under two event ids: no duplicate
        signed("DUP-2", nov(4)),
        stage_event("DUP-2", "project.created", nov(4, 1)),
        stage_event("DUP-2", "project.created", nov(4, 2)),
        # DUP-3: two project_ids
        signed("DUP-3", nov(5)),
        stage_event("DUP-3", "project.created", nov(5, 1), project_id="PRJ-X"),
        stage_event("DUP-3", "project.created", nov(5, 2), project_id="PRJ-Y"),
        # AC: AM-1 pending from Nov 5 (never propagated); two invoices after it: two pairs
        amended("AC", "AM-1", nov(5)),
        invoice("AC", "INV-AC-1", nov(5, 12)),
        invoice("AC", "INV-AC-2", nov(6, 12)),
        # AM-2 from Nov 5, effective Nov 7: INV-AC-1 and INV-AC-2 come before its effective
        # date, no conflict; INV-AC-3 on Nov 7 06:00 conflicts with AM-1 and AM-2: two pairs
        event("contract.amended", nov(5), "AC", contract_id="CTR-AC", amendment_id="AM-2")
        | {"data": {"contract_id": "CTR-AC", "amendment_id": "AM-2", **effective}},
        invoice("AC", "INV-AC-3", nov(7, 6)),
        # AM-3 from Nov 8: every invoice is before its T0, no conflict
        amended("AC", "AM-3", nov(8)),
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys)
    assert answer["duplicate_projects"] == 2  # DUP-1 and DUP-3
    assert answer["amendment_conflicts"] == 4  # (AM-1, 1), (AM-1, 2), (AM-1, 3), (AM-2, 3)
    assert kpis(client, keys, as_of=nov(4, 12))["duplicate_projects"] == 1
    assert kpis(client, keys, as_of=nov(7))["amendment_conflicts"] == 2


# --- event counts: integration failures, disputes, uncorrelated events ---


def test_integration_failures_by_step_in_the_window(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    first = integration("failed", "IF-1", "project.created", nov(3, ms=1))
    items = [
        integration("failed", "IF-1", "project.created", nov(3)),  # at the window's start: out
        first,  # 1 ms later: in
        integration("dead_lettered", "IF-1", "project.created", nov(5)),
        integration("failed", "IF-1", "invoice.posted", nov(6), milestone_id="IF-1-M"),
        integration("failed", "IF-1", "customer.synced", nov(10)),  # exactly at as_of: in
        integration("failed", "IF-1", "customer.synced", nov(10, ms=1)),  # after as_of
        integration("succeeded", "IF-1", "project.created", nov(5)),  # not a failure
        integration("failed", None, "billing_plan.created", nov(4)),  # uncorrelated: counts
        integration("failed", "IF-2", "custom.step", nov(4)),
    ]
    load(client, keys, database, items)
    post(client, keys, [first])  # a re-delivery counts once
    probe(database)
    expected = {
        "project.created": 2,
        "invoice.posted": 1,
        "customer.synced": 1,
        "billing_plan.created": 1,
        "custom.step": 1,
    }
    answer = kpis(client, keys)
    assert answer["integration_failures"] == expected
    assert answer["uncorrelated_events"] == 1
    assert kpis(client, keys, window="30d")["integration_failures"] == {
        **expected,
        "project.created": 3,
    }
    # as of Nov 3 00:00 the failure at that instant is in its window (end inclusive)
    assert kpis(client, keys, as_of=nov(3))["integration_failures"] == {"project.created": 1}


def test_uncorrelated_events_and_the_dispute_rate(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    first = [
        signed("L-1", nov(4)),
        # resolved through contract_id, and the activation through the chained project_id
        event("project.created", nov(4, 2), None, project_id="PRJ-L", contract_id="CTR-L-1"),
        event("project.activated", nov(5), None, project_id="PRJ-L"),
        # uncorrelated, time <= as_of: U1..U3, U6..U8
        event("project.activated", nov(5), None, project_id="PRJ-LATE"),  # U1, linked later
        invoice(None, "INV-U2", nov(6), project_id="PRJ-NONE"),  # U2
        dispute(None, "INV-U3", nov(6)),  # U3
        event("project.activated", nov(11), None, project_id="PRJ-NONE2"),  # U5: after as_of
        dispute(None, "INV-U6", datetime(2026, 10, 1, tzinfo=UTC)),  # U6: long before W
        integration("failed", None, "project.created", nov(7)),  # U7
        # U8: a type outside the vocabulary
        {**event("opportunity.won", nov(7), None, opportunity_id="OPP-1"), "source": "crm/sfdc"},
        # correlated invoices: before W, two in W, after as_of; one dispute in W
        invoice("L-1", "INV-L-0", nov(2)),
        invoice("L-1", "INV-L-1", nov(7)),
        invoice("L-1", "INV-L-2", nov(8)),
        invoice("L-1", "INV-L-3", nov(11)),
        dispute("L-1", "INV-L-1", nov(8)),
    ]
    load(client, keys, database, first)
    answer = kpis(client, keys)
    assert answer["uncorrelated_events"] == 6
    assert answer["data_quality"]["uncorrelated_events"] == 6
    # posted in W: INV-U2, INV-L-1, INV-L-2; disputed in W: INV-U3, INV-L-1: 2/3
    assert answer["invoice_dispute_rate"] == 0.6667
    assert answer["integration_failures"] == {"project.created": 1}
    assert kpis(client, keys, as_of=nov(5, 12))["uncorrelated_events"] == 2  # U1, U6

    # PRJ-LATE's project.created arrives, stamped after as_of: resolution uses every event
    # ingested whatever its time (events.md), so U1 is no longer uncorrelated as of AS_OF.
    load(
        client,
        keys,
        database,
        [event("project.created", nov(12), None, project_id="PRJ-LATE", contract_id="CTR-L-1")],
    )
    assert kpis(client, keys)["uncorrelated_events"] == 5
    assert kpis(client, keys, as_of=nov(5, 12))["uncorrelated_events"] == 1


# --- the window: half-open, start instead of window, hours ---


def test_the_window_is_half_open(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = [
        # B-1: deadline Oct 31 + 72 h = Nov 3 00:00, the window's start: out; completed Oct 31
        *onboarding("B-1", nov(0), done(10)),
        # B-2: deadline Nov 10 00:00 = as_of: in; activated exactly at the deadline: met, and
        # completed at as_of: in W
        *onboarding("B-2", nov(7), done(72)),
        # B-3: T0 1 ms after Oct 31: deadline Nov 3 00:00:00.001, in; never activated: stuck
        # from its deadline, 7 days - 1 ms before AS_OF (pmo)
        *onboarding(
            "B-3",
            nov(0, ms=1),
            {"customer.synced": 1, "project.created": 2, "billing_plan.created": 3},
            value="3.00",
        ),
        # B-4: completed exactly at the window's start (not in W); deadline Nov 5 20:00: met
        *onboarding("B-4", nov(2, 20), done(4)),
        integration("failed", "B-X", "project.created", nov(3)),  # out
        integration("failed", "B-X", "project.created", nov(10)),  # in
        invoice("B-X", "INV-B-1", nov(3)),  # out
        invoice("B-X", "INV-B-2", nov(5)),  # in
        invoice("B-X", "INV-B-3", nov(10)),  # in
        dispute("B-X", "INV-B-1", nov(3)),  # out
        dispute("B-X", "INV-B-3", nov(10)),  # in
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys, window="7d")
    assert answer["flows"]["contract_onboarding"] == figures(
        "contract_onboarding",
        due=3,  # B-2, B-3, B-4
        met=2,  # B-2, B-4
        success_rate=0.6667,
        completed=1,  # B-2
        duration_seconds=one_duration(72 * HOUR),
        open=1,
        stuck=1,
        stuck_by_stage={"project.activated": 1},
    )
    assert answer["exceptions"] == all_queues(pmo=queue(1, 604799.999, {"3d_7d": 1}))
    assert answer["revenue_at_risk"] == {"EUR": "3.00"}
    assert answer["integration_failures"] == {"project.created": 1}
    assert answer["invoice_dispute_rate"] == 0.5  # 1 disputed / 2 posted

    # the same window given by its start, with an offset; or in hours
    by_start = kpis(client, keys, start="2026-11-03T01:00:00+01:00")
    assert without_instants(by_start) == without_instants(answer)
    assert kpis(client, keys, window="168h") == answer
    # a start 1 ms later leaves B-3's deadline out: 2 due, both met
    later_start = kpis(client, keys, start="2026-11-03T00:00:00.001Z")
    onboard = later_start["flows"]["contract_onboarding"]
    assert (onboard["due"], onboard["met"], onboard["success_rate"]) == (2, 2, 1.0)
    # W = (Nov 9 23:00, Nov 10]: B-2 due, met and completed; one failure; 1 of 1 disputed
    hour = kpis(client, keys, window="1h")
    onboard = hour["flows"]["contract_onboarding"]
    assert (onboard["due"], onboard["met"], onboard["completed"]) == (1, 1, 1)
    assert hour["integration_failures"] == {"project.created": 1}
    assert hour["invoice_dispute_rate"] == 1.0
    # the window's bounds are written in UTC with Z, however the start was given
    assert by_start["window"] == {"start": "2026-11-03T00:00:00Z", "end": "2026-11-10T00:00:00Z"}


# --- group_by and filters ---


def scenario_g() -> list[dict[str, Any]]:
    return [
        # G-1 (EMEA, DE01, implementation): stuck on project.created from Nov 9 01:00 (pmo, 23 h);
        # its milestone (10.00 EUR) completed Nov 3: stuck from Nov 8 (finance_ops, 2 days)
        *onboarding("G-1", nov(8, 1), {"customer.synced": 1}, value="100.00"),
        milestone("G-1", "G-1-M1", nov(3), amount="10.00", currency=None),
        # G-2 (NA, US01, managed_services): complete in 10 h; its milestone invoiced in 1 day,
        # deadline Nov 10 00:00 = as_of: due and met
        *onboarding(
            "G-2",
            nov(4),
            done(10),
            value="200.00",
            currency="USD",
            region="NA",
            legal_entity="US01",
            service_line="managed_services",
        ),
        milestone("G-2", "G-2-M1", nov(5), amount="20.00", currency="USD"),
        invoice("G-2", "INV-G-2", nov(6), milestone_id="G-2-M1"),
        # G-3 (no region, US01, implementation): stuck on customer.synced from Nov 9 05:00
        # (finance_ops, 19 h)
        *onboarding(
            "G-3",
            nov(9, 1),
            {},
            value="300.00",
            currency="USD",
            legal_entity="US01",
            drop=["region"],
        ),
        # G-4: an amendment without contract: every dimension unknown; stuck from Nov 9 (1 day)
        amended("G-4", "A-1", nov(8)),
        # G-5 (EMEA, DE02, managed_services): open, not stuck
        *onboarding(
            "G-5",
            nov(9, 21),
            {},
            value="50.00",
            legal_entity="DE02",
            service_line="managed_services",
        ),
        # uncorrelated: tied to no flow
        integration("failed", None, "project.created", nov(9)),
    ]


G_EMEA = {
    "flows": all_flows(
        contract_onboarding=figures(
            "contract_onboarding",
            open=2,  # G-1, G-5
            stuck=1,
            stuck_by_stage={"project.created": 1},
        ),
        milestone_billing=figures(
            "milestone_billing",
            due=1,
            success_rate=0.0,
            open=1,
            stuck=1,
            stuck_by_stage={"invoice.posted": 1},
        ),
    ),
    "revenue_at_risk": {"EUR": "110.00"},  # 100.00 + 10.00
    "exceptions": all_queues(
        finance_ops=queue(1, 2 * DAY, {"1d_3d": 1}),
        pmo=queue(1, 23 * HOUR, {"lt_1d": 1}),
    ),
}
G_NA = {
    "flows": all_flows(
        contract_onboarding=figures(
            "contract_onboarding",
            due=1,
            met=1,
            success_rate=1.0,
            completed=1,
            duration_seconds=one_duration(10 * HOUR),
        ),
        milestone_billing=figures(
            "milestone_billing",
            due=1,
            met=1,
            success_rate=1.0,
            completed=1,
            duration_seconds=one_duration(DAY),
        ),
    ),
    "revenue_at_risk": {},
    "exceptions": all_queues(),
}
G_UNKNOWN = {
    "flows": all_flows(
        contract_onboarding=figures(
            "contract_onboarding", open=1, stuck=1, stuck_by_stage={"customer.synced": 1}
        ),
        amendment_propagation=figures(
            "amendment_propagation",
            due=1,
            success_rate=0.0,
            open=1,
            stuck=1,
            stuck_by_stage={"billing_plan.updated": 1},
        ),
    ),
    "revenue_at_risk": {"USD": "300.00"},
    # G-3 19 h, G-4 1 day
    "exceptions": all_queues(finance_ops=queue(2, DAY, {"lt_1d": 1, "1d_3d": 1})),
}


def _sum_groups(groups: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
    """Each flow is in exactly one group: the counts of the groups add up to the whole."""
    for flow_type, whole in answer["flows"].items():
        for name in ("due", "met", "completed", "open", "stuck"):
            assert sum(g["flows"][flow_type][name] for g in groups.values()) == whole[name]
        for stage, count in whole["stuck_by_stage"].items():
            assert sum(g["flows"][flow_type]["stuck_by_stage"][stage] for g in groups.values()) == (
                count
            )
    for name, whole in answer["exceptions"].items():
        assert sum(g["exceptions"][name]["open"] for g in groups.values()) == whole["open"]


def test_group_by_with_unknown(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, scenario_g())
    plain = kpis(client, keys)
    assert "groups" not in plain
    by_region = kpis(client, keys, group_by="region")
    assert set(by_region) == KPI_KEYS | FURTHER_KEYS | {"groups"}
    assert by_region["groups"] == {"EMEA": G_EMEA, "NA": G_NA, "unknown": G_UNKNOWN}
    # the whole answer is the ungrouped one, plus the groups
    assert {k: v for k, v in by_region.items() if k != "groups"} == plain
    assert plain["flows"]["contract_onboarding"]["open"] == 3  # G-1, G-3, G-5; G-2 complete
    assert plain["revenue_at_risk"] == {"EUR": "110.00", "USD": "300.00"}
    _sum_groups(by_region["groups"], plain)

    by_entity = kpis(client, keys, group_by="legal_entity")
    assert set(by_entity["groups"]) == {"DE01", "US01", "DE02", "unknown"}
    assert by_entity["groups"]["US01"]["revenue_at_risk"] == {"USD": "300.00"}  # G-3
    assert by_entity["groups"]["unknown"]["flows"]["amendment_propagation"]["stuck"] == 1
    _sum_groups(by_entity["groups"], plain)
    by_line = kpis(client, keys, group_by="service_line")
    assert set(by_line["groups"]) == {"implementation", "managed_services", "unknown"}
    assert by_line["groups"]["implementation"]["revenue_at_risk"] == {
        "EUR": "110.00",
        "USD": "300.00",
    }
    _sum_groups(by_line["groups"], plain)


def test_filters_keep_the_matching_flows_and_drop_the_global_figures(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, scenario_g())
    emea = kpis(client, keys, region="EMEA")
    assert set(emea) == (KPI_KEYS | FURTHER_KEYS) - GLOBAL_KEYS
    assert_core(emea, G_EMEA)
    # onboarding flows with T0 in W: G-1, G-5; G-1 synced the customer; G-1-M1 not invoiced
    assert emea["funnel"] == funnel(2, 1, 0, 0, 0, 0)
    # G-1's project deadline Nov 9 01:00 and G-1-M1's invoice deadline Nov 8 missed
    assert emea["stage_misses"] == misses(
        contract_onboarding={"project.created": 1}, milestone_billing={"invoice.posted": 1}
    )
    assert emea["replays"] == NO_REPLAYS

    assert_core(kpis(client, keys, region="NA"), G_NA)
    us01 = kpis(client, keys, legal_entity="US01")  # G-2 and G-3
    assert us01["flows"]["contract_onboarding"] == figures(
        "contract_onboarding",
        due=1,
        met=1,
        success_rate=1.0,
        completed=1,
        duration_seconds=one_duration(10 * HOUR),
        open=1,
        stuck=1,
        stuck_by_stage={"customer.synced": 1},
    )
    assert us01["revenue_at_risk"] == {"USD": "300.00"}
    assert us01["exceptions"] == all_queues(finance_ops=queue(1, 19 * HOUR, {"lt_1d": 1}))
    managed = kpis(client, keys, service_line="managed_services")  # G-2 and G-5
    assert managed["flows"]["contract_onboarding"]["open"] == 1
    assert managed["flows"]["milestone_billing"]["completed"] == 1
    assert managed["exceptions"] == all_queues()
    both = kpis(client, keys, region="EMEA", service_line="managed_services")  # G-5
    assert both["flows"] == all_flows(contract_onboarding=figures("contract_onboarding", open=1))
    grouped = kpis(client, keys, region="EMEA", group_by="legal_entity")
    assert set(grouped["groups"]) == {"DE01", "DE02"}
    assert set(grouped) == (KPI_KEYS | FURTHER_KEYS | {"groups"}) - GLOBAL_KEYS

    nowhere = kpis(client, keys, region="MARS")
    expected = empty_answer(AS_OF, AS_OF - timedelta(days=7))
    assert nowhere == {k: v for k, v in expected.items() if k not in GLOBAL_KEYS}


# --- funnel, stage misses, data quality, replays ---


def test_funnel_and_stage_misses(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = [
        # F-1: T0 Nov 4, everything on time; both milestones invoiced
        *onboarding("F-1", nov(4), done(4)),
        milestone("F-1", "F-1-M1", nov(5)),  # deadline Nov 10 00:00 (in W), invoiced Nov 6
        invoice("F-1", "INV-F-1-1", nov(6), milestone_id="F-1-M1"),
        milestone("F-1", "F-1-M2", nov(5)),
        invoice("F-1", "INV-F-1-2", nov(7), milestone_id="F-1-M2"),
        # F-2: project late (+30 h > 24 h), plan skipped, complete at +40 h, before the plan's
        # deadline (+48 h): the plan is no miss; its milestone is not invoiced (deadline Nov 11)
        *onboarding(
            "F-2", nov(4), {"customer.synced": 1, "project.created": 30, "project.activated": 40}
        ),
        milestone("F-2", "F-2-M1", nov(6)),
        # F-3: customer skipped, complete at +5 h, after the customer's deadline (+4 h): a miss
        *onboarding(
            "F-3", nov(5), {"project.created": 2, "billing_plan.created": 3, "project.activated": 5}
        ),
        # F-4: T0 Nov 6, customer only: project (Nov 7), plan (Nov 8), activation (Nov 9) missed
        *onboarding("F-4", nov(6), {"customer.synced": 1}),
        # F-5: T0 Nov 9 22:00, its first deadline (Nov 10 02:00) after as_of
        *onboarding("F-5", nov(9, 22), {}),
        # F-6: T0 Nov 1, before W: project late (deadline Nov 2, out of W), plan missing
        # (deadline Nov 3 00:00, the window's start: out), activation missing (Nov 4: in)
        *onboarding("F-6", nov(1), {"customer.synced": 1, "project.created": 30}),
        milestone("F-6", "F-6-M1", nov(4)),  # deadline Nov 9, never invoiced: a miss
        # F-7: T0 Nov 7, terminated Nov 7 12:00 before its project deadline: no miss; the
        # project.created after the termination changes nothing
        *onboarding("F-7", nov(7), {"customer.synced": 1}),
        terminated("F-7", nov(7, 12)),
        stage_event("F-7", "project.created", nov(7, 18)),
        # amendments: AM-1 on time, AM-2 late (deadline Nov 9, came Nov 9 06:00), AM-3 not due
        amended("F-1", "AM-1", nov(8)),
        plan_updated("F-1", "AM-1", nov(8, 6)),
        amended("F-1", "AM-2", nov(8)),
        plan_updated("F-1", "AM-2", nov(9, 6)),
        amended("F-1", "AM-3", nov(9, 12)),
    ]
    load(client, keys, database, items)
    answer = kpis(client, keys)
    # T0 in W: F-1, F-2, F-3, F-4, F-5, F-7 (not F-6)
    # customer.synced: F-1, F-2, F-4, F-7; project.created: F-1, F-2, F-3;
    # billing_plan.created: F-1, F-3; project.activated: F-1, F-2, F-3; invoiced: F-1
    assert answer["funnel"] == funnel(6, 4, 3, 2, 3, 1)
    assert answer["stage_misses"] == misses(
        contract_onboarding={
            "customer.synced": 1,  # F-3
            "project.created": 2,  # F-2 late, F-4
            "billing_plan.created": 1,  # F-4
            "project.activated": 2,  # F-4, F-6
        },
        amendment_propagation={"billing_plan.updated": 1},  # AM-2
        milestone_billing={"invoice.posted": 1},  # F-6-M1
    )
    # the same flows: due F-1, F-2, F-3, F-4, F-6 (F-7 cancelled before its deadline); met
    # F-1, F-2, F-3
    onboard = answer["flows"]["contract_onboarding"]
    assert (onboard["due"], onboard["met"], onboard["success_rate"]) == (5, 3, 0.6)
    # As of Nov 6, W = (Oct 30, Nov 6]: T0 in W: F-1, F-2, F-3, F-4 (Nov 6 00:00), F-6.
    # customer.synced by then: F-1, F-2, F-6 (F-4's comes at 01:00); project.created: F-1, F-2,
    # F-3, F-6; billing_plan.created: F-1, F-3; project.activated: F-1, F-2, F-3; F-1 invoiced
    earlier = kpis(client, keys, as_of=nov(6))
    assert earlier["funnel"] == funnel(5, 3, 4, 2, 3, 1)
    assert earlier["stage_misses"] == misses(
        contract_onboarding={
            "customer.synced": 1,  # F-3 (Nov 5 04:00)
            "project.created": 2,  # F-2 (Nov 5, late), F-6 (Nov 2, late)
            "billing_plan.created": 1,  # F-6 (Nov 3 00:00, now inside W)
            "project.activated": 1,  # F-6 (Nov 4)
        }
    )


def test_data_quality_and_replays(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, [invoice(None, "INV-U", nov(5))])
    bad = [
        {**invoice("Q-1", "INV-Q-1", nov(5)), "time": "yesterday"},
        {**invoice("Q-1", "INV-Q-2", nov(5)), "time": "tomorrow"},
        {**signed("Q-2", nov(5)), "data": {"customer_id": "C-1"}},  # no contract_id
        invoice("Q-1", "INV-Q-3", nov(5)),  # valid
    ]
    answer = client.post("/v1/events", json=bad, headers=bearer(keys["ingest"]))
    assert answer.status_code == 200, answer.text
    assert [r["index"] for r in answer.json()["rejected"]] == [0, 1, 2]
    not_json = client.post(
        "/v1/events",
        content=b"{not json",
        headers={**bearer(keys["ingest"]), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400
    probe(database)
    # four dead letters received at the clock's AS_OF, in W
    quality = kpis(client, keys)["data_quality"]
    assert set(quality) == {"uncorrelated_events", "dead_letters", "silent_sources"}
    assert quality["uncorrelated_events"] == 1
    assert sum(quality["dead_letters"].values()) == 4
    assert all(isinstance(k, str) and k for k in quality["dead_letters"])
    # a reason *code*: the two bad times are one reason, whatever the value was
    assert max(quality["dead_letters"].values()) >= 2, quality["dead_letters"]
    assert quality["silent_sources"] == []  # no source has a silence threshold configured
    assert kpis(client, keys, as_of=nov(9, 23))["data_quality"]["dead_letters"] == {}
    assert kpis(client, keys)["replays"] == NO_REPLAYS


def test_silent_sources(
    tmp_path: Path, database_url: str, database: Database, keys: dict[str, str]
) -> None:
    """kpis.md data_quality: sources whose last event (up to as_of) is older than their
    configured silence threshold."""
    sources = {
        "erp/netsuite": {"silent_after": "1d"},
        "clm/ironclad": {"silent_after": "2d"},
        "middleware/mulesoft": {"silent_after": "6h"},
    }
    settings = load_settings(
        {"data_dir": tmp_path, "database_url": database_url, "sources": sources}
    )
    items = [
        signed("SS", nov(9)),  # clm/ironclad: 1 day old, threshold 2 days
        stage_event("SS", "customer.synced", nov(8, 23)),  # erp/netsuite: 25 h, threshold 1 day
        integration("failed", "SS", "project.created", nov(9, 12)),  # middleware: 12 h > 6 h
        stage_event("SS", "project.created", nov(10, 1)),  # erp, after as_of: not counted
    ]

    def silent(answer: dict[str, Any]) -> set[str]:
        listed = answer["data_quality"]["silent_sources"]
        return {e if isinstance(e, str) else e["source"] for e in listed}

    with TestClient(create_app(settings, database, clock=lambda: AS_OF)) as client:
        load(client, keys, database, items, now=nov(11))
        assert silent(kpis(client, keys)) == {"erp/netsuite", "middleware/mulesoft"}
        # as of Nov 9 12:00: netsuite 13 h, mulesoft 0 h, ironclad 12 h
        assert silent(kpis(client, keys, as_of=nov(9, 12))) == set()


def test_custom_flow_types_appear_with_their_stages(
    tmp_path: Path, database_url: str, database: Database, keys: dict[str, str]
) -> None:
    config = {
        "milestone_billing": None,
        "renewal": {
            "start": "contract.renewal_initiated",
            "key": "renewal_id",
            "stages": [{"type": "contract.renewed", "deadline": "2d", "queue": "legal_ops"}],
        },
    }
    settings = load_settings({"data_dir": tmp_path, "database_url": database_url, "flows": config})
    flow_types = configured_flow_types(config)
    with TestClient(create_app(settings, database, clock=lambda: AS_OF)) as custom:
        renewal = {"contract_id": "CTR-RN", "renewal_id": "RN-1"}
        post(
            custom,
            keys,
            [
                event("contract.renewal_initiated", nov(7), "RN", **renewal),
                event(
                    "contract.renewal_initiated",
                    nov(7, 12),
                    "RN",
                    **renewal | {"renewal_id": "RN-2"},
                ),
                event("contract.renewed", nov(8), "RN", **renewal),
            ],
        )
        probe(database, flow_types=flow_types)
        answer = kpis(custom, keys)
    assert set(answer["flows"]) == {"contract_onboarding", "amendment_propagation", "renewal"}
    # RN-1: deadline Nov 9, renewed Nov 8 (1 day); RN-2: stuck from Nov 9 12:00, legal_ops
    assert answer["flows"]["renewal"] == {
        "due": 2,
        "met": 1,
        "success_rate": 0.5,
        "completed": 1,
        "duration_seconds": one_duration(DAY),
        "open": 1,
        "stuck": 1,
        "stuck_by_stage": {"contract.renewed": 1},
    }
    assert answer["exceptions"] == all_queues(legal_ops=queue(1, 12 * HOUR, {"lt_1d": 1}))
    assert set(answer["stage_misses"]) == {
        "contract_onboarding",
        "amendment_propagation",
        "renewal",
    }
    assert answer["stage_misses"]["renewal"] == {"contract.renewed": 1}


# --- series ---


def test_series_is_the_answer_at_each_instant(
    client: TestClient, keys: dict[str, str], database: Database
) -> None:
    load(client, keys, database, [*scenario_d(), *scenario_g()], now=nov(12))
    post_bad = client.post(
        "/v1/events", json=[{"id": "x", "source": "erp/x"}], headers=bearer(keys["ingest"])
    )
    assert post_bad.json()["rejected"]  # a dead letter received at AS_OF, in the last windows

    daily = series(client, keys, **{"from": nov(3), "to": nov(10)}, step="1d", window="7d")
    assert [e["as_of"] for e in daily] == [z(nov(day)) for day in range(3, 11)]
    for element in daily:
        assert element == kpis(client, keys, as_of=element["as_of"], window="7d")

    params = {"window": "36h", "step": "12h", "group_by": "legal_entity", "region": "EMEA"}
    twice_a_day = series(client, keys, **{"from": nov(5, 6), "to": nov(7, 17)}, **params)
    # Nov 5 06:00, 18:00, Nov 6 06:00, 18:00, Nov 7 06:00 (Nov 7 18:00 is after to)
    assert [e["as_of"] for e in twice_a_day] == [
        z(nov(5, 6)),
        z(nov(5, 18)),
        z(nov(6, 6)),
        z(nov(6, 18)),
        z(nov(7, 6)),
    ]
    for element in twice_a_day:
        assert element == kpis(
            client,
            keys,
            as_of=element["as_of"],
            window="36h",
            group_by="legal_entity",
            region="EMEA",
        )

    single = series(client, keys, **{"from": AS_OF, "to": AS_OF}, step="1d", window="7d")
    assert single == [kpis(client, keys, window="7d")]


# --- access and bad parameters ---


def test_roles(client: TestClient, keys: dict[str, str]) -> None:
    series_params = {"from": nov(3), "to": nov(4), "step": "1d", "window": "7d"}
    for path, params in (("/v1/kpis", {"as_of": AS_OF}), ("/v1/kpis/series", series_params)):
        for role in ("viewer", "admin"):
            assert ask(client, keys[role], path, **params).status_code == 200, (path, role)
        for role in ("ingest", "alertmanager"):
            assert_invalid(ask(client, keys[role], path, **params), 403, "forbidden")
        assert_invalid(client.get(path, params=_params(params)), 401, "unauthenticated")
        assert_invalid(ask(client, "sw_not_a_key", path, **params), 401, "unauthenticated")


@pytest.mark.parametrize(
    "params",
    [
        {"as_of": "2026-11-10T00:00:00"},  # no offset
        {"as_of": "yesterday"},
        {"window": "7"},
        {"window": "1w"},
        {"window": "-7d"},
        {"window": "7 d"},
        {"window": "d"},
        {"window": "7d", "start": "2026-11-03T00:00:00Z"},  # both
        {"start": "2026-11-10T00:00:00Z"},  # start = as_of
        {"start": "2026-11-11T00:00:00Z"},  # start after as_of
        {"start": "2026-11-03T00:00:00"},  # no offset
        {"group_by": "customer"},
        {"group_by": "contract_value"},
    ],
)
def test_bad_kpi_parameters(
    client: TestClient, keys: dict[str, str], params: dict[str, str]
) -> None:
    assert_invalid(ask(client, keys["viewer"], **{"as_of": "2026-11-10T00:00:00Z", **params}))


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-11-10T00:00:00Z", "to": "2026-11-09T00:00:00Z"},  # to < from
        {"step": "1w"},
        {"step": "x"},
        {"window": "1w"},
        {"from": "2026-11-03T00:00:00"},  # no offset
        {"group_by": "customer"},
        # from + 1000 h in steps of 1 h: 1001 points
        {"from": "2026-11-01T00:00:00Z", "to": "2026-12-12T16:00:00Z", "step": "1h"},
        {"from": None},
        {"to": None},
    ],
)
def test_bad_series_parameters(
    client: TestClient, keys: dict[str, str], params: dict[str, str | None]
) -> None:
    base: dict[str, Any] = {
        "from": "2026-11-03T00:00:00Z",
        "to": "2026-11-10T00:00:00Z",
        "step": "1d",
        "window": "7d",
    }
    assert_invalid(ask(client, keys["viewer"], "/v1/kpis/series", **{**base, **params}))
