"""The flows and exceptions API over the conformance example, probed as of 2026-11-30T00:00:00Z:
filters, sorting, pagination and as_of of GET /v1/flows; one flow's timeline; the role queues
with their aging; and the operator actions by queue role, audited with the key's name."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from collector.ingest import ingest
from core import audit, jsoncodec
from core.db import Database
from core.settings import Settings
from core.tables import flows
from probes.facts_codec import facts_from_row
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.runner import run_until_idle
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.examples import EXAMPLES

EVENTS: list[dict[str, Any]] = jsoncodec.loads((EXAMPLES / "events.json").read_bytes())
EXPECTED: dict[str, Any] = jsoncodec.loads((EXAMPLES / "expected-7d.json").read_bytes())
BY_REGION: dict[str, Any] = jsoncodec.loads((EXAMPLES / "expected-7d-region.json").read_bytes())
NOW = datetime(2026, 11, 30, tzinfo=UTC)
AS_OF = "2026-11-30T00:00:00Z"
MONEY = re.compile(r"^-?\d+\.\d{2}$")


@pytest.fixture
def example(database: Database) -> Database:
    """The example's events, probed as of NOW."""
    result = ingest(
        database, EVENTS, require_specversion=False, channel="test", content_type=None, now=NOW
    )
    assert result.accepted == len(EVENTS)
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=NOW)
    return database


@pytest.fixture
def clocked(settings: Settings, example: Database) -> Iterator[TestClient]:
    """The API with its clock at NOW (the exceptions' ages and the actions' times)."""
    with TestClient(create_app(settings, example, clock=lambda: NOW)) as client:
        yield client


def get(client: TestClient, key: str, path: str, **params: Any) -> httpx.Response:
    return client.get(path, params=params, headers=bearer(key))


def flows_of(client: TestClient, key: str, **params: Any) -> dict[str, Any]:
    answer = get(client, key, "/v1/flows", **{"as_of": AS_OF, "limit": 1000, **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert len(body["items"]) == body["total"]
    return body


def total(client: TestClient, key: str, **params: Any) -> int:
    return int(flows_of(client, key, **params)["total"])


def time_of(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert answer.json()["error"]["message"]


# --- GET /v1/flows ---


def test_stuck_flows_by_type_stage_queue_and_region(
    api: TestClient, keys: dict[str, str], example: Database
) -> None:
    viewer = keys["viewer"]
    stuck = flows_of(api, viewer, state="stuck")
    assert stuck["total"] == 28 == sum(f["stuck"] for f in EXPECTED["flows"].values())
    assert {(i["state"], i["stuck_stage"] is None) for i in stuck["items"]} == {("stuck", False)}
    for flow_type, figures in EXPECTED["flows"].items():
        assert total(api, viewer, state="stuck", type=flow_type) == figures["stuck"]
        for stage, count in figures["stuck_by_stage"].items():
            assert total(api, viewer, type=flow_type, stage=stage) == count, stage
    # Every integration_oncall finding of the example is a stuck flow's.
    oncall = EXPECTED["exceptions"]["integration_oncall"]["open"]
    assert total(api, viewer, queue="integration_oncall") == oncall == 8
    by_queue = Counter(i["queue"] for i in stuck["items"])
    for queue in ("finance_ops", "pmo", "integration_oncall"):
        assert total(api, viewer, state="stuck", queue=queue) == by_queue[queue]
    assert sum(by_queue.values()) == 28
    for region, group in BY_REGION["groups"].items():
        if region == "unknown":
            continue
        for flow_type, figures in group["flows"].items():
            assert (
                total(api, viewer, state="stuck", type=flow_type, region=region)
                == (figures["stuck"])
            ), (region, flow_type)
            assert (
                total(api, viewer, state="open", type=flow_type, region=region) == (figures["open"])
            ), (region, flow_type)


def test_open_complete_and_cancelled_partition_the_flows(
    api: TestClient, keys: dict[str, str], example: Database
) -> None:
    viewer = keys["viewer"]
    for flow_type, figures in EXPECTED["flows"].items():
        # flows.md: a stuck flow is open; the item says which it is.
        opened = flows_of(api, viewer, state="open", type=flow_type)
        assert opened["total"] == figures["open"], flow_type
        assert Counter(i["state"] for i in opened["items"])["stuck"] == figures["stuck"]
    complete = flows_of(api, viewer, state="complete")
    assert complete["total"] > 100
    assert all(time_of(i["completed_at"]) <= NOW for i in complete["items"])
    assert {i["state"] for i in complete["items"]} == {"complete"}
    cancelled = flows_of(api, viewer, state="cancelled")
    # the example's one termination ends one milestone flow before NOW
    assert [(i["flow_type"], i["state"]) for i in cancelled["items"]] == [
        ("milestone_billing", "cancelled")
    ]
    assert time_of(cancelled["items"][0]["cancelled_at"]) <= NOW
    everything = total(api, viewer)
    assert everything == complete["total"] + cancelled["total"] + total(api, viewer, state="open")
    answer = get(api, viewer, "/v1/flows", state="dormant")
    assert_error(answer, 422, "invalid")


def test_sorted_by_value_at_risk_gives_the_revenue_at_risk(
    api: TestClient, keys: dict[str, str], example: Database
) -> None:
    items = flows_of(api, keys["viewer"], state="stuck", sort="value_at_risk")["items"]
    at_risk = [i for i in items if i["value_at_risk"] is not None]
    assert {i["flow_type"] for i in at_risk} == {"contract_onboarding", "milestone_billing"}
    assert all(MONEY.match(i["value_at_risk"]) and MONEY.match(i["value"]) for i in at_risk)
    values = [Decimal(i["value_at_risk"]) for i in at_risk]
    assert values == sorted(values, reverse=True)
    assert items[: len(at_risk)] == at_risk  # flows without value at risk come last
    sums: dict[str, Decimal] = {}
    for item in at_risk:
        sums[item["currency"]] = sums.get(item["currency"], Decimal(0)) + Decimal(
            item["value_at_risk"]
        )
    assert {c: f"{v:.2f}" for c, v in sums.items()} == EXPECTED["revenue_at_risk"]

    answer = get(api, keys["viewer"], "/v1/flows", sort="value_at_risk", as_of=AS_OF)
    assert_error(answer, 422, "invalid")
    assert "value_at_risk" in answer.json()["error"]["message"]


def test_pages_are_stable_and_cover_every_flow(
    api: TestClient, keys: dict[str, str], example: Database
) -> None:
    viewer = keys["viewer"]
    for params in ({"state": "stuck"}, {}):
        whole = flows_of(api, viewer, **params)
        pages: list[dict[str, Any]] = []
        for offset in range(0, whole["total"] + 7, 7):
            answer = get(api, viewer, "/v1/flows", as_of=AS_OF, limit=7, offset=offset, **params)
            body = answer.json()
            assert (body["total"], body["limit"], body["offset"]) == (whole["total"], 7, offset)
            pages += body["items"]
        assert [i["flow_id"] for i in pages] == [i["flow_id"] for i in whole["items"]]
        assert len({i["flow_id"] for i in pages}) == whole["total"]
        t0s = [time_of(i["t0"]) for i in pages]
        assert t0s == sorted(t0s)  # by age: oldest first
    answer = get(api, viewer, "/v1/flows", limit=0)
    assert_error(answer, 422, "invalid")


def test_as_of_changes_the_answer(api: TestClient, keys: dict[str, str], example: Database) -> None:
    viewer = keys["viewer"]
    items = flows_of(api, viewer)["items"]
    latest = max(items, key=lambda i: time_of(i["t0"]))
    t0 = time_of(latest["t0"])
    before = (t0 - timedelta(microseconds=1)).isoformat()
    earlier = get(api, viewer, "/v1/flows", as_of=before, limit=1000).json()
    assert latest["flow_id"] not in {i["flow_id"] for i in earlier["items"]}
    assert earlier["total"] == len(items) - 1
    at_t0 = get(api, viewer, "/v1/flows", as_of=t0.isoformat(), limit=1000).json()
    assert latest["flow_id"] in {i["flow_id"] for i in at_t0["items"]}

    week_ago = flows_of(api, viewer, state="stuck", as_of="2026-11-23T00:00:00Z")
    assert week_ago["total"] != 28
    assert all(time_of(i["t0"]) <= NOW - timedelta(days=7) for i in week_ago["items"])
    same_instant = get(api, viewer, "/v1/flows", state="stuck", as_of="2026-11-30T01:00:00+01:00")
    assert same_instant.json()["total"] == 28

    naive = get(api, viewer, "/v1/flows", as_of="2026-11-30T00:00:00")
    assert_error(naive, 422, "invalid")
    assert "as_of" in naive.json()["error"]["message"]
    assert_error(get(api, keys["ingest"], "/v1/flows"), 403, "forbidden")
    assert_error(api.get("/v1/flows"), 401, "unauthenticated")


def _complete_with_a_skipped_stage(database: Database) -> str:
    with database.read() as connection:
        for row in connection.execute(sa.select(flows).order_by(flows.c.flow_id)):
            facts = facts_from_row(row)
            if facts.complete(NOW) and any(s.reached_at is None for s in facts.stages):
                return facts.flow_id
    raise AssertionError("the example has complete flows with a stage that never came")


def test_one_flow_with_its_stages_events_and_findings(
    api: TestClient, keys: dict[str, str], example: Database
) -> None:
    viewer = keys["viewer"]
    [item, *_] = flows_of(api, viewer, type="contract_onboarding", stage="project.created")["items"]
    flow_id = item["flow_id"]
    answer = get(api, viewer, f"/v1/flows/{flow_id}", as_of=AS_OF)
    assert answer.status_code == 200, answer.text
    flow = answer.json()
    t0 = time_of(flow["t0"])
    assert (flow["flow_id"], flow["state"], flow["stuck_stage"]) == (
        flow_id,
        "stuck",
        "project.created",
    )
    assert time_of(flow["deadline_at"]) == t0 + timedelta(hours=72)
    stages = {s["stage"]: s for s in flow["stages"]}
    assert list(stages) == [stage.type for stage in DEFAULT_FLOW_TYPES[0].stages]
    for stage, hours in zip(stages.values(), (4, 24, 48, 72), strict=True):
        assert time_of(stage["deadline_at"]) == t0 + timedelta(hours=hours)
    assert stages["project.created"] | {"stuck": True} == stages["project.created"]
    assert (stages["project.created"]["status"], stages["project.created"]["reached_at"]) == (
        "missed",
        None,
    )
    assert stages["customer.synced"]["status"] in ("reached", "late")
    assert stages["project.activated"]["status"] == "missed"
    kinds = [e["type"] for e in flow["events"]]
    assert kinds[0] == "contract.signed" and "project.created" not in kinds
    times = [time_of(e["time"]) for e in flow["events"]]
    assert times == sorted(times) and times[-1] <= NOW
    stuck = [f for f in flow["findings"] if f["kind"] == "stuck" and f["resolved_at"] is None]
    assert [(f["key"], f["queue"]) for f in stuck] == [("project.created", item["queue"])]
    assert time_of(stuck[0]["opened_at"]) == t0 + timedelta(hours=24)
    assert flow["replays"] == []

    early = get(api, viewer, f"/v1/flows/{flow_id}", as_of=(t0 + timedelta(hours=1)).isoformat())
    assert early.json()["state"] == "open"
    assert {s["status"] for s in early.json()["stages"]} <= {"pending", "reached"}
    assert early.json()["stages"][1]["status"] == "pending"

    complete_id = _complete_with_a_skipped_stage(example)
    done = get(api, viewer, f"/v1/flows/{complete_id}", as_of=AS_OF).json()
    assert done["state"] == "complete"
    assert "skipped" in {s["status"] for s in done["stages"]}
    assert_error(get(api, viewer, "/v1/flows/contract_onboarding:NOPE"), 404, "not_found")


# --- the role queues ---


def test_the_queues_with_their_aging(clocked: TestClient, keys: dict[str, str]) -> None:
    viewer = keys["viewer"]
    for queue, expected in EXPECTED["exceptions"].items():
        answer = get(clocked, viewer, "/v1/exceptions", queue=queue, limit=1000)
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        assert len(items) == expected["open"], queue
        assert dict(Counter(i["aging"] for i in items)) == {
            bucket: n for bucket, n in expected["aging"].items() if n
        }, queue
        oldest = max(i["age_seconds"] for i in items)
        assert oldest == pytest.approx(float(expected["oldest_age_seconds"]), abs=0.001)
        assert all(i["queue"] == queue and i["resolved_at"] is None for i in items)

    def count(**params: Any) -> int:
        answer = get(clocked, viewer, "/v1/exceptions", limit=1000, **params)
        assert answer.status_code == 200, answer.text
        return len(answer.json()["items"])

    assert count(kind="duplicate_project") == count(queue="pmo", kind="duplicate_project") == 1
    assert count(kind="amendment_conflict") == EXPECTED["amendment_conflicts"] == 3
    assert count(kind="stuck", queue="integration_oncall") == 8
    assert count(kind="contract_data_incomplete", queue="legal_ops") == 1
    assert count(status="acknowledged") == 0
    assert count(status="unacknowledged") == count() == 38
    resolved = get(clocked, viewer, "/v1/exceptions", status="resolved", limit=1000).json()
    assert resolved["items"]  # stuck periods that ended before NOW, resolved by syncwatch
    assert {(i["kind"], i["resolved_by"]) for i in resolved["items"]} == {("stuck", "syncwatch")}
    assert_error(get(clocked, viewer, "/v1/exceptions", queue="sales"), 422, "invalid")


def _first(client: TestClient, key: str, **params: Any) -> dict[str, Any]:
    items: list[dict[str, Any]] = get(client, key, "/v1/exceptions", **params).json()["items"]
    return items[0]


def test_actions_by_the_queues_role_audited(
    clocked: TestClient, keys: dict[str, str], example: Database
) -> None:
    finance = _first(clocked, keys["viewer"], queue="finance_ops", kind="term_mismatch")
    pmo = _first(clocked, keys["viewer"], queue="pmo", kind="duplicate_project")
    oncall = _first(clocked, keys["viewer"], queue="integration_oncall")

    def act(key: str, finding: dict[str, Any], action: str, **body: Any) -> httpx.Response:
        path = f"/v1/exceptions/{finding['id']}/{action}"
        return clocked.post(path, json=body or None, headers=bearer(key))

    for refused in ("pmo", "viewer", "legal_ops", "oncall"):
        assert_error(act(keys[refused], finance, "ack"), 403, "forbidden")
    assert_error(act(keys["ingest"], finance, "resolve"), 403, "forbidden")
    assert_error(clocked.post(f"/v1/exceptions/{finance['id']}/ack"), 401, "unauthenticated")

    acked = act(keys["finance_ops"], finance, "ack")
    assert acked.status_code == 200, acked.text
    assert (acked.json()["acknowledged_by"], acked.json()["acknowledged_at"]) == (
        "finance_ops",
        AS_OF,
    )
    assert_error(act(keys["finance_ops"], finance, "assign"), 422, "invalid")
    assert_error(act(keys["finance_ops"], finance, "assign", assignee=""), 422, "invalid")
    assert_error(act(keys["finance_ops"], finance, "assign", assignee="   "), 422, "invalid")
    assigned = act(keys["finance_ops"], finance, "assign", assignee="ana@example.com")
    assert assigned.json()["assignee"] == "ana@example.com"
    acknowledged = get(clocked, keys["viewer"], "/v1/exceptions", status="acknowledged").json()
    assert [i["id"] for i in acknowledged["items"]] == [finance["id"]]
    done = act(keys["finance_ops"], finance, "resolve", resolution="plan corrected in ERP")
    assert done.status_code == 200, done.text
    assert (done.json()["resolved_by"], done.json()["resolution"]) == (
        "finance_ops",
        "plan corrected in ERP",
    )
    again = act(keys["finance_ops"], finance, "resolve")
    assert_error(again, 409, "conflict")
    assert_error(act(keys["admin"], finance, "ack"), 409, "conflict")

    assert act(keys["admin"], pmo, "resolve").json()["resolved_by"] == "admin"
    assert act(keys["oncall"], oncall, "ack").json()["acknowledged_by"] == "oncall"
    assert_error(act(keys["admin"], {"id": 987654}, "ack"), 404, "not_found")

    open_finance = get(clocked, keys["viewer"], "/v1/exceptions", queue="finance_ops", limit=1000)
    assert len(open_finance.json()["items"]) == EXPECTED["exceptions"]["finance_ops"]["open"] - 1

    with example.read() as connection:
        log = audit.entries(connection, target_type="finding")
    assert [(e.action, e.actor, e.target_id) for e in reversed(log)] == [
        ("finding.ack", "finance_ops", str(finance["id"])),
        ("finding.assign", "finance_ops", str(finance["id"])),
        ("finding.resolve", "finance_ops", str(finance["id"])),
        ("finding.resolve", "admin", str(pmo["id"])),
        ("finding.ack", "oncall", str(oncall["id"])),
    ]
    assert log[2].details == {
        "kind": "term_mismatch",
        "flow_id": finance["flow_id"],
        "queue": "finance_ops",
        "note": "plan corrected in ERP",
    }
    assert all(e.at == NOW for e in log)
