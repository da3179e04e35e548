"""Replays (api.md, Replay) through the HTTP API, on SQLite and PostgreSQL: POST
/v1/flows/{flow_id}/replay with its guardrails and Idempotency-Key, GET /v1/replays and
/v1/replays/{id}, the replays of GET /v1/flows/{id}, the audit log, the follow-up, the ``replays``
KPI and ``syncwatch_replays_total``.

The middleware is an ``httpx.MockTransport`` that records every request and answers as each test
tells it; the backoff sleeps are recorded, never slept. The AMQP target is tested against the real
RabbitMQ on 127.0.0.1:5672 (guest/guest): those tests FAIL, never skip, when the broker is down.

Timeline of the main scenario: contract.signed at T0 = 2026-11-20T10:00Z; the middleware fails
``customer.synced`` (deadline T0 + 4 h) at T0 + 1 h; at NOW = T0 + 5 h the flow is stuck at
customer.synced on an integration failure, in the integration_oncall queue."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from alerts.replays import ReplayAnswer, Replayer, ReplayRequest
from core.db import Database
from core.settings import Settings, load_settings
from core.tables import flows, replays
from probes.flowtypes import configured_flow_types
from probes.runner import run_until_idle
from syncwatch.app import create_app
from tests.conftest import bearer

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
NOW = T0 + timedelta(hours=5)
HOUR = timedelta(hours=1)
FLOW_TYPES = configured_flow_types(None)
MULE = "middleware/mulesoft"
TOKEN = "s3cret-mule-token-0123456789"
TOKEN_ENV = "SYNCWATCH_TEST_MULE_TOKEN"
AMQP_ENV = "SYNCWATCH_TEST_AMQP_URL"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RETRY_URL = "http://mule.test/executions/{execution_id}/retry"

_numbers = itertools.count(1)


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


# --- the fake middleware and the app ---


@dataclass
class Middleware:
    """The middleware's retry endpoint: records each request, answers from ``script`` (the last
    answer repeats); an answer is a status code or an exception to raise."""

    script: list[int | Exception] = field(default_factory=lambda: [200])
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, json={"status": step})


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    client: TestClient
    database: Database
    keys: dict[str, str]
    middleware: Middleware
    sleeps: list[float]
    clock: Clock
    replayer: Replayer
    settings: Settings

    # --- events and probes ---

    def post(self, *items: dict[str, Any]) -> None:
        answer = self.client.post(
            "/v1/events", json=list(items), headers=bearer(self.keys["ingest"])
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == [], answer.json()["rejected"]

    def probe(self, now: datetime | None = None) -> None:
        run_until_idle(self.database, FLOW_TYPES, now=now or self.clock.now)

    # --- asking ---

    def replay(
        self,
        flow_id: str,
        *,
        role: str = "oncall",
        key: str | None = None,
        force: bool | None = None,
        reason: str = "middleware fixed, run it again",
    ) -> httpx.Response:
        body: dict[str, Any] = {"reason": reason}
        if force is not None:
            body["force"] = force
        headers = bearer(self.keys[role])
        if key is not None:
            headers["Idempotency-Key"] = key
        answer: httpx.Response = self.client.post(
            f"/v1/flows/{flow_id}/replay", json=body, headers=headers
        )
        return answer

    def replays(self, **params: Any) -> list[dict[str, Any]]:
        answer = self.client.get("/v1/replays", params=params, headers=bearer(self.keys["viewer"]))
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def audit(self, **params: Any) -> list[dict[str, Any]]:
        answer = self.client.get(
            "/v1/audit",
            params={"target_type": "replay", "limit": 1000, **params},
            headers=bearer(self.keys["admin"]),
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items[::-1]  # oldest first

    def flow(self, flow_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/flows/{flow_id}", headers=bearer(self.keys["viewer"]))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def kpi_replays(self, as_of: datetime, window: str) -> dict[str, int]:
        answer = self.client.get(
            "/v1/kpis",
            params={"as_of": z(as_of), "window": window},
            headers=bearer(self.keys["viewer"]),
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, int] = answer.json()["replays"]
        return found

    def metric(self) -> dict[str, float]:
        answer = self.client.get("/metrics")
        assert answer.status_code == 200, answer.text
        found = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name == "syncwatch_replays_total":
                    found[sample.labels["outcome"]] = sample.value
        return found


def replay_settings(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "targets": {MULE: {"http": {"url": RETRY_URL, "token_env": TOKEN_ENV}}},
        "attempts": 3,
        "backoff_seconds": 1,
        "timeout_seconds": 5,
    }
    section.update(overrides)
    return section


@pytest.fixture
def make_world(
    tmp_path: Path,
    database_url: str,
    database: Database,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., World]]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(AMQP_ENV, AMQP_URL)
    monkeypatch.setenv("SYNCWATCH_TEST_NO_BROKER", "amqp://guest:guest@127.0.0.1:1/%2F")
    clients: list[TestClient] = []

    def build(
        replay: dict[str, Any] | None = None, script: list[int | Exception] | None = None
    ) -> World:
        settings = load_settings(
            {
                "data_dir": tmp_path,
                "database_url": database_url,
                "replay": replay if replay is not None else replay_settings(),
            }
        )
        middleware = Middleware(script if script is not None else [200])
        sleeps: list[float] = []
        clock = Clock()
        replayer = Replayer(
            database,
            settings.replay,
            transport=httpx.MockTransport(middleware.handler),
            sleep=sleeps.append,
        )
        client = TestClient(create_app(settings, database, clock=clock, replayer=replayer))
        client.__enter__()
        clients.append(client)
        return World(client, database, keys, middleware, sleeps, clock, replayer, settings)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


# --- event builders ---


def signed(correlation: str, at: datetime = T0) -> dict[str, Any]:
    return {
        "id": f"cs-{correlation}-{next(_numbers)}",
        "source": "clm/ironclad",
        "type": "contract.signed",
        "time": z(at),
        "correlationid": correlation,
        "data": {
            "contract_id": f"CTR-{correlation}",
            "contract_value": "125000.00",
            "currency": "EUR",
            "legal_entity": "DE01",
            "region": "EMEA",
        },
    }


def integration(
    correlation: str,
    step: str = "customer.synced",
    at: datetime = T0 + HOUR,
    *,
    kind: str = "integration.failed",
    execution_id: str | None = "EX-1",
    source: str = MULE,
    **data: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"step": step, **data}
    if execution_id is not None:
        payload["execution_id"] = execution_id
    if kind != "integration.succeeded":
        payload.setdefault("error", "HTTP 500 from the ERP")
    return {
        "id": f"int-{correlation}-{next(_numbers)}",
        "source": source,
        "type": kind,
        "time": z(at),
        "correlationid": correlation,
        "data": payload,
    }


def erp(correlation: str, type: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {
        "id": f"erp-{correlation}-{next(_numbers)}",
        "source": "erp/netsuite",
        "type": type,
        "time": z(at),
        "correlationid": correlation,
        "data": data,
    }


def onboarding(correlation: str) -> str:
    return f"contract_onboarding:{correlation}"


def stuck_on_failure(world: World, correlation: str = "Q2C-R1", **failure: Any) -> str:
    """A contract_onboarding flow stuck at customer.synced on an integration failure at NOW."""
    world.post(signed(correlation), integration(correlation, **failure))
    world.probe()
    return onboarding(correlation)


def error_of(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def refusal_of(answer: httpx.Response) -> str:
    error = error_of(answer, 409, "replay_refused")
    refusal: str = error["details"]["refusal"]
    return refusal


# --- a replay that is sent ---


def test_a_flow_stuck_on_an_integration_failure_is_replayed(world: World) -> None:
    flow_id = stuck_on_failure(world, execution_id="EX-4711")
    answer = world.replay(flow_id, key="idem-1")
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "sent"
    assert replay["flow_id"] == flow_id
    assert replay["stage"] == "customer.synced"
    assert replay["source"] == MULE
    assert replay["execution_id"] == "EX-4711"
    assert replay["requested_by"] == "oncall"
    assert replay["trigger"] == "api"
    assert replay["reason"] == "middleware fixed, run it again"
    assert replay["forced"] is False
    assert replay["attempts"] == 1
    assert replay["moved"] is None
    assert replay["response"]["status"] == 200
    assert replay["follow_up_until"] is not None

    # The middleware got exactly one request: the retry of that execution, with the credentials.
    [request] = world.middleware.requests
    assert request.method == "POST"
    assert str(request.url) == "http://mule.test/executions/EX-4711/retry"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"]
    assert world.sleeps == []

    # Stored: what was sent, with the token redacted, never the token itself.
    stored = replay["request"]
    assert stored["url"] == "http://mule.test/executions/EX-4711/retry"
    assert stored["method"] == "POST"
    assert stored["headers"]["Authorization"] == "<redacted>"
    assert stored["headers"]["Idempotency-Key"] == request.headers["Idempotency-Key"]

    listed = world.replays()
    assert [item["id"] for item in listed] == [replay["id"]]
    one = world.client.get(f"/v1/replays/{replay['id']}", headers=bearer(world.keys["viewer"]))
    assert one.status_code == 200, one.text
    assert one.json()["outcome"] == "sent"
    assert one.json()["execution_id"] == "EX-4711"
    shown = world.flow(flow_id)
    assert [item["id"] for item in shown["replays"]] == [replay["id"]]
    assert shown["replays"][0]["outcome"] == "sent"

    for text in (
        answer.text,
        world.client.get("/v1/replays", headers=bearer(world.keys["viewer"])).text,
        one.text,
        json.dumps(shown),
        json.dumps(world.audit()),
    ):
        assert TOKEN not in text
    with world.database.read() as connection:
        rows = [row._asdict() for row in connection.execute(sa.select(replays))]
    assert TOKEN not in json.dumps(rows, default=str)

    assert [(e["action"], e["actor"]) for e in world.audit()] == [
        ("replay.request", "oncall"),
        ("replay.sent", "oncall"),
    ]
    assert {e["target_id"] for e in world.audit()} == {str(replay["id"])}


def test_an_unknown_flow_is_404(world: World) -> None:
    error_of(world.replay("contract_onboarding:nope"), 404, "not_found")
    assert world.middleware.requests == []


def test_replaying_needs_the_oncall_role(world: World) -> None:
    flow_id = stuck_on_failure(world)
    for role in ("viewer", "pmo", "finance_ops", "ingest"):
        error_of(world.replay(flow_id, role=role), 403, "forbidden")
    answer = world.client.post(f"/v1/flows/{flow_id}/replay", json={"reason": "x"})
    error_of(answer, 401, "unauthenticated")
    error_of(world.replay(flow_id, reason="   "), 422, "invalid")
    assert world.middleware.requests == []
    assert world.replays() == []


def test_the_latest_failure_names_the_execution(world: World) -> None:
    correlation = "Q2C-LATEST"
    world.post(
        signed(correlation),
        integration(correlation, at=T0 + HOUR, execution_id="EX-OLD"),
        integration(
            correlation, at=T0 + 2 * HOUR, execution_id="EX-NEW", kind="integration.dead_lettered"
        ),
        # another step's failure, later, is not this stage's
        integration(correlation, "project.created", at=T0 + 3 * HOUR, execution_id="EX-OTHER"),
    )
    world.probe()
    answer = world.replay(onboarding(correlation))
    assert answer.status_code == 201, answer.text
    assert answer.json()["execution_id"] == "EX-NEW"
    assert [str(r.url) for r in world.middleware.requests] == [
        "http://mule.test/executions/EX-NEW/retry"
    ]


# --- guardrails ---


def assert_refused_recorded(
    world: World, flow_id: str, refusal: str, actor: str = "oncall"
) -> None:
    [row] = [r for r in world.replays(flow_id=flow_id) if r["refusal"] == refusal]
    assert row["outcome"] == "refused"
    assert row["attempts"] in (None, 0)
    assert row["request"] is None
    audited = [e for e in world.audit(action="replay.refused") if e["target_id"] == str(row["id"])]
    assert len(audited) == 1
    assert audited[0]["actor"] == actor
    assert audited[0]["details"]["refusal"] == refusal
    assert audited[0]["details"]["flow_id"] == flow_id


def test_not_stuck_is_refused(world: World) -> None:
    correlation = "Q2C-EARLY"
    world.post(signed(correlation), integration(correlation))
    world.clock.now = T0 + 3 * HOUR  # customer.synced is due at T0 + 4 h
    world.probe()
    answer = world.replay(onboarding(correlation))
    assert refusal_of(answer) == "not_stuck"
    assert answer.json()["error"]["details"]["replay"]["outcome"] == "refused"
    assert world.middleware.requests == []
    assert_refused_recorded(world, onboarding(correlation), "not_stuck")


def test_a_complete_flow_is_not_stuck(world: World) -> None:
    correlation = "Q2C-DONE"
    world.post(
        signed(correlation),
        integration(correlation),
        erp(correlation, "project.activated", T0 + 2 * HOUR, project_id="PRJ-1"),
    )
    world.probe()
    assert refusal_of(world.replay(onboarding(correlation))) == "not_stuck"
    assert world.middleware.requests == []


def test_not_on_an_integration_failure_only_an_admin_may_force(world: World) -> None:
    correlation = "Q2C-RECOVERED"
    world.post(
        signed(correlation),
        integration(correlation, at=T0 + HOUR, execution_id="EX-FAILED"),
        integration(
            correlation, at=T0 + 2 * HOUR, execution_id="EX-OK", kind="integration.succeeded"
        ),
    )
    world.probe()
    flow_id = onboarding(correlation)
    assert refusal_of(world.replay(flow_id)) == "not_on_integration_failure"
    assert_refused_recorded(world, flow_id, "not_on_integration_failure")
    # oncall may not force
    error_of(world.replay(flow_id, force=True), 403, "forbidden")
    assert refusal_of(world.replay(flow_id, role="admin", force=False)) == (
        "not_on_integration_failure"
    )
    assert world.middleware.requests == []

    forced = world.replay(flow_id, role="admin", force=True)
    assert forced.status_code == 201, forced.text
    assert forced.json()["outcome"] == "sent"
    assert forced.json()["forced"] is True
    assert forced.json()["requested_by"] == "admin"
    assert forced.json()["execution_id"] == "EX-FAILED"  # the latest failure, not the success
    assert [str(r.url) for r in world.middleware.requests] == [
        "http://mule.test/executions/EX-FAILED/retry"
    ]
    [request] = world.audit(action="replay.request")
    assert request["actor"] == "admin"
    assert request["details"]["forced"] is True


def test_forcing_without_any_failure_event_is_still_refused(world: World) -> None:
    correlation = "Q2C-SILENT"
    world.post(signed(correlation))
    world.probe()
    flow_id = onboarding(correlation)
    assert refusal_of(world.replay(flow_id)) == "not_on_integration_failure"
    assert refusal_of(world.replay(flow_id, role="admin", force=True)) == "no_failure_event"
    assert world.middleware.requests == []
    assert_refused_recorded(world, flow_id, "no_failure_event", actor="admin")


def test_more_than_three_replays_in_24_hours_are_refused(world: World) -> None:
    correlation = "Q2C-AGAIN"
    world.post(signed(correlation), integration(correlation))
    flow_id = onboarding(correlation)
    # a refusal first: refused replays do not count
    world.clock.now = T0 + 3 * HOUR
    world.probe()
    assert refusal_of(world.replay(flow_id)) == "not_stuck"
    sent_at = [NOW, NOW + HOUR, NOW + 2 * HOUR]
    for at in sent_at:
        world.clock.now = at
        answer = world.replay(flow_id)
        assert answer.status_code == 201, answer.text
        assert answer.json()["outcome"] == "sent"
    world.clock.now = NOW + 23 * HOUR
    answer = world.replay(flow_id)
    assert refusal_of(answer) == "too_many_replays"
    assert "3" in answer.json()["error"]["message"]
    assert_refused_recorded(world, flow_id, "too_many_replays")
    # still refused: the refusals did not count, but the three sends do
    assert refusal_of(world.replay(flow_id)) == "too_many_replays"
    assert len(world.middleware.requests) == 3
    # 24 h after the first send it leaves the period: one more may go
    world.clock.now = sent_at[0] + timedelta(hours=24, seconds=1)
    answer = world.replay(flow_id)
    assert answer.status_code == 201, answer.text
    assert len(world.middleware.requests) == 4
    assert refusal_of(world.replay(flow_id)) == "too_many_replays"
    outcomes = [r["outcome"] for r in world.replays(flow_id=flow_id)][::-1]
    assert outcomes == [
        "refused",
        "sent",
        "sent",
        "sent",
        "refused",
        "refused",
        "sent",
        "refused",
    ]


def test_failed_sends_count_towards_the_limit(make_world: Callable[..., World]) -> None:
    world = make_world(script=[404])
    flow_id = stuck_on_failure(world)
    for _ in range(3):
        answer = world.replay(flow_id)
        assert answer.status_code == 201, answer.text
        assert answer.json()["outcome"] == "failed"
    assert refusal_of(world.replay(flow_id)) == "too_many_replays"
    assert len(world.middleware.requests) == 3


def test_the_limit_per_flow_is_configurable(make_world: Callable[..., World]) -> None:
    world = make_world(replay_settings(max_per_flow=1, per_flow_period="2h"))
    flow_id = stuck_on_failure(world)
    assert world.replay(flow_id).status_code == 201
    world.clock.now = NOW + HOUR
    answer = world.replay(flow_id)
    assert refusal_of(answer) == "too_many_replays"
    world.clock.now = NOW + 2 * HOUR + timedelta(seconds=1)
    assert world.replay(flow_id).status_code == 201


def test_an_amendment_with_an_invoice_against_outdated_terms_goes_to_finance(
    world: World,
) -> None:
    """flows.md: an invoice.posted of the correlation at t >= the amendment flow's T0 while that
    flow is not complete raises amendment_conflict; the replay is refused while it is open."""
    correlation = "Q2C-AMEND"
    amended = {
        "id": f"am-{correlation}",
        "source": "clm/ironclad",
        "type": "contract.amended",
        "time": z(T0 - 30 * HOUR),
        "correlationid": correlation,
        "data": {"contract_id": f"CTR-{correlation}", "amendment_id": "AM-1"},
    }
    # A second amendment of another contract, without an invoice: the control.
    control = {**amended, "id": "am-control", "correlationid": "Q2C-AMEND-OK"}
    control["data"] = {"contract_id": "CTR-OK", "amendment_id": "AM-2"}
    world.post(
        signed(correlation, T0 - 40 * HOUR),
        amended,
        erp(correlation, "invoice.posted", T0 - 20 * HOUR, invoice_id="INV-1", amount="10.00"),
        integration(
            correlation,
            "billing_plan.updated",
            T0 - 29 * HOUR,
            execution_id="EX-AM",
            amendment_id="AM-1",
        ),
        signed("Q2C-AMEND-OK", T0 - 40 * HOUR),
        control,
        integration(
            "Q2C-AMEND-OK",
            "billing_plan.updated",
            T0 - 29 * HOUR,
            execution_id="EX-AM2",
            amendment_id="AM-2",
        ),
    )
    world.probe()
    flow_id = f"amendment_propagation:{correlation}:AM-1"
    shown = world.flow(flow_id)
    assert shown["state"] == "stuck", shown
    assert "amendment_conflict" in {f["kind"] for f in shown["findings"]}

    assert refusal_of(world.replay(flow_id)) == "invoice_against_outdated_terms"
    assert_refused_recorded(world, flow_id, "invoice_against_outdated_terms")
    # even an admin forcing it: that is finance_ops' to settle
    assert refusal_of(world.replay(flow_id, role="admin", force=True)) == (
        "invoice_against_outdated_terms"
    )
    assert world.middleware.requests == []

    answer = world.replay("amendment_propagation:Q2C-AMEND-OK:AM-2")
    assert answer.status_code == 201, answer.text
    assert [str(r.url) for r in world.middleware.requests] == [
        "http://mule.test/executions/EX-AM2/retry"
    ]

    # Once finance_ops resolves the conflict, the replay may go.
    [finding] = [f for f in shown["findings"] if f["kind"] == "amendment_conflict"]
    resolved = world.client.post(
        f"/v1/exceptions/{finding['id']}/resolve",
        json={"resolution": "credit note issued"},
        headers=bearer(world.keys["finance_ops"]),
    )
    assert resolved.status_code == 200, resolved.text
    answer = world.replay(flow_id)
    assert answer.status_code == 201, answer.text
    assert answer.json()["execution_id"] == "EX-AM"


def test_no_target_for_the_middleware_source(world: World) -> None:
    flow_id = stuck_on_failure(world, "Q2C-BOOMI", source="middleware/boomi")
    answer = world.replay(flow_id)
    assert refusal_of(answer) == "no_target"
    assert "middleware/boomi" in answer.json()["error"]["message"]
    assert world.middleware.requests == []
    assert_refused_recorded(world, flow_id, "no_target")


def test_no_execution_id_when_the_target_needs_one(world: World) -> None:
    flow_id = stuck_on_failure(world, "Q2C-NOEXEC", execution_id=None)
    assert refusal_of(world.replay(flow_id)) == "no_execution_id"
    assert world.middleware.requests == []
    assert_refused_recorded(world, flow_id, "no_execution_id")


def test_a_target_without_execution_id_does_not_need_one(make_world: Callable[..., World]) -> None:
    target = {
        "http": {"url": "http://mule.test/flows/{correlation_id}/rerun", "token_env": TOKEN_ENV}
    }
    world = make_world(replay_settings(targets={MULE: target}))
    flow_id = stuck_on_failure(world, "Q2C-CORR", execution_id=None)
    answer = world.replay(flow_id)
    assert answer.status_code == 201, answer.text
    assert [str(r.url) for r in world.middleware.requests] == [
        "http://mule.test/flows/Q2C-CORR/rerun"
    ]


def test_a_replay_being_sent_blocks_another(world: World) -> None:
    flow_id = stuck_on_failure(world)
    insert_sending(world.database, flow_id, NOW - timedelta(seconds=5))
    assert refusal_of(world.replay(flow_id)) == "in_progress"
    assert world.middleware.requests == []


# --- Idempotency-Key ---


def test_the_same_idempotency_key_never_sends_twice(world: World) -> None:
    flow_id = stuck_on_failure(world)
    first = world.replay(flow_id, key="k-1")
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = world.replay(flow_id, key="k-1")
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["outcome"] == "sent"
    assert len(world.middleware.requests) == 1
    assert len(world.replays()) == 1
    assert len(world.audit(action="replay.request")) == 1
    # a new key is a new replay
    other = world.replay(flow_id, key="k-2")
    assert other.status_code == 201, other.text
    assert other.json()["id"] != first.json()["id"]
    assert len(world.middleware.requests) == 2


def test_an_idempotency_key_of_another_flow_is_422(world: World) -> None:
    first = stuck_on_failure(world, "Q2C-K1")
    second = stuck_on_failure(world, "Q2C-K2")
    assert world.replay(first, key="shared").status_code == 201
    error_of(world.replay(second, key="shared"), 422, "invalid")
    assert len(world.middleware.requests) == 1
    assert world.replays(flow_id=second) == []


def test_a_refused_key_repeats_the_refusal(world: World) -> None:
    correlation = "Q2C-KREF"
    world.post(signed(correlation), integration(correlation))
    world.clock.now = T0 + 3 * HOUR
    world.probe()
    flow_id = onboarding(correlation)
    first = world.replay(flow_id, key="r-1")
    assert refusal_of(first) == "not_stuck"
    world.clock.now = NOW  # stuck now, but the key was answered already
    world.probe()
    again = world.replay(flow_id, key="r-1")
    assert refusal_of(again) == "not_stuck"
    assert (
        again.json()["error"]["details"]["replay"]["id"]
        == (first.json()["error"]["details"]["replay"]["id"])
    )
    assert world.middleware.requests == []
    assert len(world.replays()) == 1


# --- retries ---


def test_a_503_is_retried_with_backoff(make_world: Callable[..., World]) -> None:
    world = make_world(script=[503, 200])
    answer = world.replay(stuck_on_failure(world))
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "sent"
    assert answer.json()["attempts"] == 2
    assert world.sleeps == [1.0]
    assert len(world.middleware.requests) == 2
    keys = {r.headers["Idempotency-Key"] for r in world.middleware.requests}
    assert len(keys) == 1  # the same key on every attempt: the middleware may dedupe
    [sent] = world.audit(action="replay.sent")
    assert sent["details"]["attempts"] == 2


def test_a_500_forever_fails_after_the_attempts(make_world: Callable[..., World]) -> None:
    world = make_world(replay_settings(attempts=4, backoff_seconds=0.5), script=[500])
    answer = world.replay(stuck_on_failure(world))
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "failed"
    assert replay["attempts"] == 4
    assert replay["response"]["status"] == 500
    assert "500" in replay["message"]
    assert world.sleeps == [0.5, 1.0, 2.0]
    assert len(world.middleware.requests) == 4
    [failed] = world.audit(action="replay.failed")
    assert failed["actor"] == "oncall"
    assert world.audit(action="replay.sent") == []


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_a_4xx_is_never_retried(make_world: Callable[..., World], status: int) -> None:
    world = make_world(script=[status, 200])
    answer = world.replay(stuck_on_failure(world))
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "failed"
    assert answer.json()["attempts"] == 1
    assert answer.json()["response"]["status"] == status
    assert len(world.middleware.requests) == 1
    assert world.sleeps == []


def test_a_timeout_is_retried(make_world: Callable[..., World]) -> None:
    world = make_world(script=[httpx.ReadTimeout("slow"), 200])
    answer = world.replay(stuck_on_failure(world))
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "sent"
    assert answer.json()["attempts"] == 2
    assert world.sleeps == [1.0]


def test_timeouts_and_connection_failures_forever_fail(make_world: Callable[..., World]) -> None:
    world = make_world(script=[httpx.ConnectTimeout("x"), httpx.ConnectError("refused")])
    answer = world.replay(stuck_on_failure(world))
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "failed"
    assert replay["attempts"] == 3
    assert "error" in replay["response"]
    assert world.sleeps == [1.0, 2.0]
    assert len(world.middleware.requests) == 3


def test_a_dropped_connection_is_retried(make_world: Callable[..., World]) -> None:
    """A middleware that closes the connection without an answer is a transient failure like a
    timeout: tried again, and the attempts are counted."""
    world = make_world(script=[httpx.RemoteProtocolError("Server disconnected"), 200])
    answer = world.replay(stuck_on_failure(world))
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "sent", answer.json()
    assert answer.json()["attempts"] == 2
    assert world.sleeps == [1.0]


def test_a_failed_replay_may_be_asked_again(make_world: Callable[..., World]) -> None:
    world = make_world(script=[500, 500, 500, 200])
    flow_id = stuck_on_failure(world)
    assert world.replay(flow_id).json()["outcome"] == "failed"
    assert world.replay(flow_id).json()["outcome"] == "sent"


# --- follow-up ---


def test_the_follow_up_marks_a_replay_effective(world: World) -> None:
    correlation = "Q2C-FIXED"
    flow_id = stuck_on_failure(world, correlation)
    replay = world.replay(flow_id).json()
    assert world.replayer.follow_up(NOW + timedelta(minutes=10)) == {
        "effective": 0,
        "ineffective": 0,
        "failed": 0,
    }
    # The middleware runs the step again: it succeeds and the ERP synced the customer.
    reached = NOW + timedelta(minutes=20)
    world.clock.now = NOW + timedelta(minutes=30)
    world.post(
        integration(
            correlation,
            at=reached - timedelta(minutes=1),
            kind="integration.succeeded",
            execution_id="EX-1",
        ),
        erp(correlation, "customer.synced", reached, customer_id="C-1"),
    )
    world.probe()
    counts = world.replayer.follow_up(NOW + timedelta(minutes=30))
    assert counts == {"effective": 1, "ineffective": 0, "failed": 0}
    [row] = world.replays()
    assert row["id"] == replay["id"]
    assert row["outcome"] == "effective"
    assert row["moved"] is True
    assert datetime.fromisoformat(row["stage_reached_at"]) == reached
    assert datetime.fromisoformat(row["concluded_at"]) == NOW + timedelta(minutes=30)
    [effective] = world.audit(action="replay.effective")
    assert effective["actor"] == "syncwatch"
    assert effective["target_id"] == str(replay["id"])
    assert world.flow(flow_id)["replays"][0]["outcome"] == "effective"
    # concluded: a later follow-up changes nothing
    assert world.replayer.follow_up(NOW + 5 * HOUR) == {
        "effective": 0,
        "ineffective": 0,
        "failed": 0,
    }


def test_the_follow_up_marks_a_replay_ineffective_after_the_window(world: World) -> None:
    flow_id = stuck_on_failure(world)
    replay = world.replay(flow_id).json()
    assert datetime.fromisoformat(replay["follow_up_until"]) == NOW + HOUR  # default 1 h
    world.probe(NOW + 2 * HOUR)
    assert world.replayer.follow_up(NOW + HOUR - timedelta(seconds=1))["ineffective"] == 0
    assert world.replays()[0]["outcome"] == "sent"
    assert world.replayer.follow_up(NOW + HOUR)["ineffective"] == 1
    [row] = world.replays()
    assert row["outcome"] == "ineffective"
    assert row["moved"] is False
    assert row["stage_reached_at"] is None
    [ineffective] = world.audit(action="replay.ineffective")
    assert ineffective["actor"] == "syncwatch"
    assert ineffective["target_id"] == str(replay["id"])


def test_a_late_follow_up_judges_as_of_the_end_of_the_window(world: World) -> None:
    """The flow reached the stage only after the follow-up window: ineffective, even when the
    follow-up runs later still (the outcome does not depend on when the follow-up runs)."""
    correlation = "Q2C-LATE"
    flow_id = stuck_on_failure(world, correlation)
    assert world.replay(flow_id).json()["outcome"] == "sent"  # follow-up until NOW + 1 h
    world.clock.now = NOW + 3 * HOUR
    world.post(erp(correlation, "customer.synced", NOW + 2 * HOUR, customer_id="C-1"))
    world.probe()
    counts = world.replayer.follow_up(NOW + 3 * HOUR)
    assert counts == {"effective": 0, "ineffective": 1, "failed": 0}
    [row] = world.replays()
    assert (row["outcome"], row["moved"], row["stage_reached_at"]) == ("ineffective", False, None)


def test_a_replay_sent_again_before_the_flow_moved_is_ineffective(world: World) -> None:
    """Two replays of the flow 10 minutes apart, the stage reached 10 minutes after the second:
    the first one's window ended when the second was sent, so only the second is effective (both
    within 1 h, which alone would count both)."""
    correlation = "Q2C-TWICE"
    flow_id = stuck_on_failure(world, correlation)
    first = world.replay(flow_id, key="twice-1").json()
    world.clock.now = NOW + timedelta(minutes=10)
    second = world.replay(flow_id, key="twice-2").json()
    assert (first["outcome"], second["outcome"]) == ("sent", "sent")
    reached = NOW + timedelta(minutes=20)
    world.clock.now = NOW + timedelta(minutes=30)
    world.post(erp(correlation, "customer.synced", reached, customer_id="C-1"))
    world.probe()
    counts = world.replayer.follow_up(NOW + timedelta(minutes=30))
    assert counts == {"effective": 1, "ineffective": 1, "failed": 0}
    outcomes = {row["id"]: (row["outcome"], row["stage_reached_at"]) for row in world.replays()}
    assert outcomes[first["id"]] == ("ineffective", None)
    assert outcomes[second["id"]][0] == "effective"
    assert datetime.fromisoformat(outcomes[second["id"]][1]) == reached


def test_the_follow_up_window_is_configurable(make_world: Callable[..., World]) -> None:
    world = make_world(replay_settings(follow_up_after="15m"))
    replay = world.replay(stuck_on_failure(world)).json()
    assert datetime.fromisoformat(replay["follow_up_until"]) == NOW + timedelta(minutes=15)
    assert world.replayer.follow_up(NOW + timedelta(minutes=15))["ineffective"] == 1


def test_a_failed_or_refused_replay_is_not_followed_up(make_world: Callable[..., World]) -> None:
    world = make_world(script=[404])
    flow_id = stuck_on_failure(world)
    assert world.replay(flow_id).json()["outcome"] == "failed"
    assert world.replayer.follow_up(NOW + 10 * HOUR) == {
        "effective": 0,
        "ineffective": 0,
        "failed": 0,
    }
    assert world.replays()[0]["outcome"] == "failed"


def insert_sending(database: Database, flow_id: str, requested_at: datetime) -> int:
    with database.write() as connection:
        return int(
            connection.execute(
                replays.insert()
                .values(
                    flow_id=flow_id,
                    flow_type="contract_onboarding",
                    correlation_id=flow_id.split(":")[1],
                    stage="customer.synced",
                    source=MULE,
                    execution_id="EX-1",
                    trigger="api",
                    requested_by="oncall",
                    reason="crashed while sending",
                    forced=False,
                    requested_at=requested_at,
                    outcome="sending",
                )
                .returning(replays.c.id)
            ).scalar_one()
        )


def test_a_send_interrupted_by_a_crash_becomes_failed(world: World) -> None:
    flow_id = stuck_on_failure(world)
    # settings: 3 attempts of at most 5 s, backoff 1 + 2 s: no send runs past a few minutes
    old = insert_sending(world.database, flow_id, NOW - timedelta(minutes=30))
    recent = insert_sending(world.database, flow_id, NOW - timedelta(seconds=20))
    counts = world.replayer.follow_up(NOW)
    assert counts == {"effective": 0, "ineffective": 0, "failed": 1}
    by_id = {row["id"]: row for row in world.replays()}
    assert by_id[old]["outcome"] == "failed"
    assert "interrupted" in by_id[old]["message"]
    assert by_id[recent]["outcome"] == "sending"
    [failed] = world.audit(action="replay.failed")
    assert (failed["actor"], failed["target_id"]) == ("syncwatch", str(old))
    assert world.middleware.requests == []  # never sent again by itself
    # listed with the sending filter
    assert [r["id"] for r in world.replays(outcome="sending")] == [recent]
    # once it too is old enough
    assert world.replayer.follow_up(NOW + HOUR)["failed"] == 1


def test_every_step_is_audited_with_its_actor(world: World) -> None:
    correlation = "Q2C-AUDIT"
    flow_id = stuck_on_failure(world, correlation)
    refused_flow = stuck_on_failure(world, "Q2C-AUDIT-B", source="middleware/boomi")
    sent = world.replay(flow_id, reason="ticket INC-42").json()
    refused = world.replay(refused_flow, role="admin").json()["error"]["details"]["replay"]
    world.replayer.follow_up(NOW + 2 * HOUR)
    entries = world.audit()
    assert [(e["action"], e["actor"], e["target_id"]) for e in entries] == [
        ("replay.request", "oncall", str(sent["id"])),
        ("replay.sent", "oncall", str(sent["id"])),
        ("replay.refused", "admin", str(refused["id"])),
        ("replay.ineffective", "syncwatch", str(sent["id"])),
    ]
    request = entries[0]["details"]
    assert request["flow_id"] == flow_id
    assert request["reason"] == "ticket INC-42"
    assert request["trigger"] == "api"
    assert request["stage"] == "customer.synced"
    assert entries[0]["at"].startswith("2026-11-20T15:00:00")
    assert entries[3]["at"].startswith("2026-11-20T17:00:00")


# --- KPI and metric ---


def test_the_replays_kpi_counts_by_outcome_as_of_and_in_the_window(
    make_world: Callable[..., World],
) -> None:
    world = make_world(script=[200])
    sent_flow = stuck_on_failure(world, "Q2C-KPI-1")
    other_flow = stuck_on_failure(world, "Q2C-KPI-2")
    refused_flow = stuck_on_failure(world, "Q2C-KPI-3", source="middleware/boomi")
    assert world.replay(sent_flow).status_code == 201  # at NOW
    assert world.replay(sent_flow).status_code == 201  # at NOW too
    world.clock.now = NOW + HOUR
    assert refusal_of(world.replay(refused_flow)) == "no_target"
    world.middleware.script = [404]
    assert world.replay(other_flow).json()["outcome"] == "failed"
    world.clock.now = NOW + 3 * HOUR
    # both sends (follow-up until NOW + 1 h) become ineffective at NOW + 3 h
    assert world.replayer.follow_up(NOW + 3 * HOUR)["ineffective"] == 2
    zero = {"sent": 0, "refused": 0, "failed": 0, "effective": 0, "ineffective": 0}
    # as of NOW + 2 h: both sends were sent, not yet concluded
    assert world.kpi_replays(NOW + 2 * HOUR, "7d") == zero | {"sent": 2, "refused": 1, "failed": 1}
    # as of NOW + 3 h: concluded
    assert world.kpi_replays(NOW + 3 * HOUR, "7d") == zero | {
        "ineffective": 2,
        "refused": 1,
        "failed": 1,
    }
    # before anything was requested
    assert world.kpi_replays(NOW - timedelta(seconds=1), "7d") == zero
    # requested_at in (start, as_of]: as_of = NOW includes the two at NOW ...
    assert world.kpi_replays(NOW, "7d") == zero | {"sent": 2}
    # ... a 1 h window ending at NOW + 1 h starts at NOW, which it leaves out
    assert world.kpi_replays(NOW + HOUR, "1h") == zero | {"refused": 1, "failed": 1}


def test_syncwatch_replays_total(make_world: Callable[..., World]) -> None:
    world = make_world()
    zero = {"sent": 0.0, "refused": 0.0, "failed": 0.0, "effective": 0.0, "ineffective": 0.0}
    assert world.metric() == zero
    fixed = "Q2C-M1"
    fixed_flow = stuck_on_failure(world, fixed)
    other = stuck_on_failure(world, "Q2C-M2")
    assert world.replay(fixed_flow).status_code == 201
    assert world.replay(other).status_code == 201
    assert refusal_of(world.replay(stuck_on_failure(world, "Q2C-M3", execution_id=None))) == (
        "no_execution_id"
    )
    world.middleware.script = [400]
    assert world.replay(other).json()["outcome"] == "failed"
    assert world.metric() == zero | {"sent": 2, "refused": 1, "failed": 1}
    world.clock.now = NOW + 30 * timedelta(minutes=1)
    world.post(erp(fixed, "customer.synced", NOW + timedelta(minutes=10)))
    world.probe()
    world.replayer.follow_up(NOW + 2 * HOUR)
    # sent counts every replay sent, the follow-ups included: it never decreases
    assert world.metric() == zero | {
        "sent": 2,
        "refused": 1,
        "failed": 1,
        "effective": 1,
        "ineffective": 1,
    }


# --- AMQP: the real RabbitMQ ---


@pytest.fixture
def broker() -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel on the local RabbitMQ. Fails (never skips) when the broker is down."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as error:  # pragma: no cover - broker down
        pytest.fail(f"RabbitMQ on 127.0.0.1:5672 is needed for the AMQP replay tests: {error!r}")
    channel = connection.channel()
    yield channel
    if connection.is_open:
        connection.close()


@pytest.fixture
def queue(broker: Any) -> Iterator[str]:
    name = f"syncwatch-test-replays-{uuid.uuid4().hex}"
    broker.queue_declare(queue=name, durable=False, auto_delete=False)
    yield name
    broker.queue_delete(queue=name)


def amqp_target(routing_key: str, url_env: str = AMQP_ENV) -> dict[str, Any]:
    return {"amqp": {"url_env": url_env, "exchange": "", "routing_key": routing_key}}


def test_an_amqp_replay_republishes_the_original_event(
    make_world: Callable[..., World], broker: Any, queue: str
) -> None:
    world = make_world(replay_settings(targets={MULE: amqp_target(queue)}))
    correlation = "Q2C-AMQP"
    start = signed(correlation)
    world.post(start, integration(correlation, execution_id="EX-AMQP"))
    world.probe()
    flow_id = onboarding(correlation)
    answer = world.replay(flow_id)
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "sent", replay
    assert replay["attempts"] == 1
    assert replay["request"]["routing_key"] == queue
    assert world.middleware.requests == []

    method, properties, body = broker.basic_get(queue=queue, auto_ack=True)
    assert method is not None, "no message was published to the queue"
    event = json.loads(body)
    assert event["id"] == start["id"]
    assert event["source"] == "clm/ironclad"
    assert event["type"] == "contract.signed"
    assert event["specversion"] == "1.0"
    assert event["correlationid"] == correlation
    assert event["data"]["contract_id"] == f"CTR-{correlation}"
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")) == T0
    assert properties.content_type == "application/cloudevents+json"
    headers = properties.headers
    assert headers["syncwatch-replay-id"] == str(replay["id"])
    assert headers["syncwatch-flow-id"] == flow_id
    assert headers["syncwatch-stage"] == "customer.synced"
    assert headers["syncwatch-execution-id"] == "EX-AMQP"
    assert headers["idempotency-key"]
    # exactly one message
    assert broker.basic_get(queue=queue, auto_ack=True)[0] is None


def test_an_unroutable_amqp_replay_fails_without_retry(
    make_world: Callable[..., World], broker: Any
) -> None:
    nowhere = f"syncwatch-test-no-such-queue-{uuid.uuid4().hex}"
    world = make_world(replay_settings(targets={MULE: amqp_target(nowhere)}))
    answer = world.replay(stuck_on_failure(world, "Q2C-NOWHERE"))
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "failed"
    assert replay["attempts"] == 1
    assert replay["response"] == {"error": "unroutable"}
    assert world.sleeps == []


def test_an_unreachable_broker_is_retried_then_fails(make_world: Callable[..., World]) -> None:
    world = make_world(
        replay_settings(targets={MULE: amqp_target("q", url_env="SYNCWATCH_TEST_NO_BROKER")})
    )
    answer = world.replay(stuck_on_failure(world, "Q2C-DOWN"))
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "failed"
    assert replay["attempts"] == 3
    assert world.sleeps == [1.0, 2.0]
    assert "amqp://" not in json.dumps(replay)  # the broker URL (with its password) is not stored


def test_each_amqp_source_publishes_to_its_own_broker(
    make_world: Callable[..., World], broker: Any, queue: str
) -> None:
    """Two sources, both on the default exchange, on different brokers: the replay of a
    mulesoft flow goes to mulesoft's broker."""
    targets = {
        "middleware/boomi": amqp_target(queue, url_env="SYNCWATCH_TEST_NO_BROKER"),
        MULE: amqp_target(queue),
    }
    world = make_world(replay_settings(targets=targets))
    answer = world.replay(stuck_on_failure(world, "Q2C-TWO"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "sent", answer.json()
    method, _properties, _body = broker.basic_get(queue=queue, auto_ack=True)
    assert method is not None


# --- more of the request template, the listing and the follow-up ---


def test_basic_auth_extra_headers_and_a_body_are_sent_and_redacted(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCWATCH_TEST_MULE_USER", "mule-user")
    monkeypatch.setenv("SYNCWATCH_TEST_MULE_PASSWORD", "mule-pa55word")
    monkeypatch.setenv("SYNCWATCH_TEST_MULE_HEADERS", "X-Api-Key=k3y-abcdef,X-Tenant=acme")
    target = {
        "http": {
            "method": "PUT",
            "url": "https://mule.test/api/{flow_type}/executions/{execution_id}",
            "headers": {"X-Stage": "{stage}", "X-Replay": "{replay_id}"},
            "body": {"execution": "{execution_id}", "correlation": "{correlation_id}", "n": 1},
            "username_env": "SYNCWATCH_TEST_MULE_USER",
            "password_env": "SYNCWATCH_TEST_MULE_PASSWORD",
            "headers_env": "SYNCWATCH_TEST_MULE_HEADERS",
        }
    }
    world = make_world(replay_settings(targets={MULE: target}))
    flow_id = stuck_on_failure(world, "Q2C-BASIC", execution_id="EX-B")
    answer = world.replay(flow_id)
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    [request] = world.middleware.requests
    assert request.method == "PUT"
    assert str(request.url) == "https://mule.test/api/contract_onboarding/executions/EX-B"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"mule-user:mule-pa55word"
    ).decode("ascii")
    assert request.headers["X-Api-Key"] == "k3y-abcdef"
    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["X-Stage"] == "customer.synced"
    assert request.headers["X-Replay"] == str(replay["id"])
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"execution": "EX-B", "correlation": "Q2C-BASIC", "n": 1}
    stored = replay["request"]
    assert stored["headers"]["Authorization"] == "<redacted>"
    assert stored["headers"]["X-Api-Key"] == "<redacted>"
    assert stored["headers"]["X-Stage"] == "customer.synced"
    assert json.loads(stored["body"])["execution"] == "EX-B"
    everything = world.client.get("/v1/replays", headers=bearer(world.keys["viewer"])).text
    everything += json.dumps(world.audit())
    for secret in (
        "mule-pa55word",
        "k3y-abcdef",
        base64.b64encode(b"mule-user:mule-pa55word").decode(),
    ):
        assert secret not in everything


def test_the_listing_filters_and_pages(make_world: Callable[..., World]) -> None:
    world = make_world()
    first = stuck_on_failure(world, "Q2C-L1")
    second = stuck_on_failure(world, "Q2C-L2", source="middleware/boomi")
    ids = [world.replay(first).json()["id"]]
    ids.append(world.replay(second, role="admin").json()["error"]["details"]["replay"]["id"])
    world.clock.now = NOW + HOUR
    ids.append(world.replay(first).json()["id"])
    assert [r["id"] for r in world.replays()] == ids[::-1]
    assert [r["id"] for r in world.replays(flow_id=first)] == [ids[2], ids[0]]
    assert [r["id"] for r in world.replays(outcome="refused")] == [ids[1]]
    assert [r["id"] for r in world.replays(requested_by="admin")] == [ids[1]]
    assert [r["id"] for r in world.replays(trigger="api")] == ids[::-1]
    assert world.replays(trigger="alert") == []
    assert [r["id"] for r in world.replays(since=z(NOW + HOUR))] == [ids[2]]
    page = world.client.get(
        "/v1/replays", params={"limit": 2}, headers=bearer(world.keys["viewer"])
    ).json()
    assert [r["id"] for r in page["items"]] == [ids[2], ids[1]]
    assert page["next_before_id"] == ids[1]
    assert [r["id"] for r in world.replays(before_id=ids[1])] == [ids[0]]
    missing = world.client.get("/v1/replays/999999", headers=bearer(world.keys["viewer"]))
    error_of(missing, 404, "not_found")
    error_of(
        world.client.get(
            "/v1/replays", params={"outcome": "bogus"}, headers=bearer(world.keys["viewer"])
        ),
        422,
        "invalid",
    )
    error_of(world.client.get("/v1/replays"), 401, "unauthenticated")


def test_the_replays_kpi_follows_the_dimension_filters(world: World) -> None:
    emea = stuck_on_failure(world, "Q2C-EMEA")
    assert world.replay(emea).status_code == 201
    answer = world.client.get(
        "/v1/kpis",
        params={"as_of": z(NOW), "window": "1d", "region": "EMEA"},
        headers=bearer(world.keys["viewer"]),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["replays"]["sent"] == 1
    answer = world.client.get(
        "/v1/kpis",
        params={"as_of": z(NOW), "window": "1d", "region": "APAC"},
        headers=bearer(world.keys["viewer"]),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["replays"]["sent"] == 0


def test_the_follow_up_survives_a_flow_that_no_longer_exists(world: World) -> None:
    """A flow can disappear when its correlation is re-resolved (probes/flowstore.py removes
    flows that no longer exist): its replay is concluded ineffective after the window, and the
    other replays are still followed up."""
    gone = stuck_on_failure(world, "Q2C-GONE")
    kept = "Q2C-KEPT"
    kept_flow = stuck_on_failure(world, kept)
    gone_replay = world.replay(gone).json()
    kept_replay = world.replay(kept_flow).json()
    with world.database.write() as connection:
        connection.execute(sa.delete(flows).where(flows.c.flow_id == gone))
    world.clock.now = NOW + 30 * timedelta(minutes=1)
    world.post(erp(kept, "customer.synced", NOW + timedelta(minutes=10)))
    world.probe()
    assert world.replayer.follow_up(NOW + timedelta(minutes=30)) == {
        "effective": 1,
        "ineffective": 0,
        "failed": 0,
    }
    assert world.replayer.follow_up(NOW + HOUR) == {"effective": 0, "ineffective": 1, "failed": 0}
    by_id = {r["id"]: r["outcome"] for r in world.replays()}
    assert by_id == {gone_replay["id"]: "ineffective", kept_replay["id"]: "effective"}


def test_concurrent_requests_with_one_key_send_once(make_world: Callable[..., World]) -> None:
    """Two requests with the same Idempotency-Key at the same moment: one sends, the other answers
    with that replay (whichever of the key lookup, the flow lock or the unique key catches it)."""
    world = make_world()
    flow_id = stuck_on_failure(world, "Q2C-RACE")
    barrier = threading.Barrier(4)
    answers: list[Any] = []

    def ask() -> None:
        barrier.wait()
        request = ReplayRequest(flow_id, "race", "oncall", "api", idempotency_key="race-key")
        try:
            answers.append(world.replayer.request(request, NOW))
        except Exception as error:
            answers.append(error)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 4
    assert all(isinstance(a, ReplayAnswer) for a in answers), answers
    assert len({a.replay["id"] for a in answers}) == 1
    assert sorted(a.repeated for a in answers) == [False, True, True, True]
    assert len(world.middleware.requests) == 1
    assert len(world.replays()) == 1


def test_an_amqp_replay_to_a_missing_exchange_fails_without_retry(
    make_world: Callable[..., World], broker: Any
) -> None:
    """The broker refuses (404 NOT_FOUND: no such exchange): a configuration error like an HTTP
    4xx, never tried again."""
    target = {
        "amqp": {
            "url_env": AMQP_ENV,
            "exchange": f"syncwatch-test-no-such-exchange-{uuid.uuid4().hex}",
            "routing_key": "x",
        }
    }
    world = make_world(replay_settings(targets={MULE: target}))
    answer = world.replay(stuck_on_failure(world, "Q2C-NOEXCHANGE"))
    assert answer.status_code == 201, answer.text
    replay = answer.json()
    assert replay["outcome"] == "failed"
    assert replay["attempts"] == 1
    assert "404" in json.dumps(replay["response"])
    assert world.sleeps == []
