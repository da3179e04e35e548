"""POST /v1/alertmanager (api.md, Replay: the automatic replays), on SQLite and PostgreSQL, with a
fake middleware (an httpx.MockTransport) as the replay target of "middleware/mulesoft".

Flows are built by POSTing events and running the probes as of NOW (2026-11-30T00:00:00Z):
contract_onboarding flows signed days before, stuck at project.created on an integration failure
(the ones an alert for that stage replays), stuck elsewhere on a failure, or stuck at
project.created without one (neither of which it replays). The payload is Alertmanager's webhook
version 4 as Alertmanager 0.25 sends it (a firing alert's endsAt is the zero time)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from alerts.replays import Replayer
from core.db import Database
from core.roles import Role
from core.settings import Settings, load_settings
from core.tables import alert_deliveries, replays
from probes.evaluate import flow_id
from probes.flowtypes import configured_flow_types
from probes.runner import run_until_idle
from syncwatch.app import create_app
from syncwatch.scheduler import probe_job
from tests.conftest import bearer
from tests.support.appserver import serving
from tests.support.builders import make_event

NOW = datetime(2026, 11, 30, tzinfo=UTC)
MULESOFT = "middleware/mulesoft"
FLOW_TYPE = "contract_onboarding"
STAGE = "project.created"
ALERTNAME = "SyncwatchFlowsStuckOnIntegrationFailure"
ACTOR = f"alertmanager:{ALERTNAME}"
FINGERPRINT = "5c1a7e0f9b2d4c83"
STARTS_AT = "2026-11-29T23:59:30Z"
#: Alertmanager 0.25 writes the zero time as a firing alert's endsAt.
ZERO_TIME = "0001-01-01T00:00:00Z"


# --- the rig: syncwatch over HTTP, its clock, the fake middleware --------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Middleware:
    """The replay target: records each request; answers 202. With ``gate`` set, each request
    waits until the gate opens (a slow middleware)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.gate is not None:
            assert self.gate.wait(20), "the test never opened the gate"
        with self.lock:
            self.requests.append(request)
        return httpx.Response(202, json={"status": "accepted"})

    def executions(self) -> list[str]:
        """The execution IDs asked to run again, in order (the URL's /executions/{id}/retry)."""
        with self.lock:
            return [request.url.path.split("/")[-2] for request in self.requests]


@dataclass
class Rig:
    client: TestClient
    database: Database
    settings: Settings
    replayer: Replayer
    middleware: Middleware
    clock: Clock
    keys: dict[str, str]
    flow_types: Any = field(default=None)  # the configured FlowTypes

    def ingest(self, events: list[dict[str, Any]]) -> None:
        answer = self.client.post("/v1/events", json=events, headers=bearer(self.keys["ingest"]))
        assert answer.status_code in (200, 201, 207), answer.text
        assert answer.json()["accepted"] == len(events), answer.text
        run_until_idle(self.database, self.flow_types, now=self.clock())

    def notify(
        self, *alerts: dict[str, Any], role: str = "alertmanager", **overrides: Any
    ) -> httpx.Response:
        """POST the alerts with the key of ``role``."""
        answer: httpx.Response = self.client.post(
            "/v1/alertmanager",
            json=notification(*alerts, **overrides),
            headers=bearer(self.keys[role]),
        )
        return answer

    def replays(self) -> list[dict[str, Any]]:
        answer = self.client.get(
            "/v1/replays", params={"limit": 1000}, headers=bearer(self.keys["viewer"])
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return sorted(items, key=lambda item: int(item["id"]))

    def deliveries(self) -> list[Any]:
        with self.database.read() as connection:
            return list(
                connection.execute(sa.select(alert_deliveries).order_by(alert_deliveries.c.id))
            )

    def audit(self, **params: Any) -> list[dict[str, Any]]:
        answer = self.client.get(
            "/v1/audit", params={"limit": 1000, **params}, headers=bearer(self.keys["admin"])
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items[::-1]  # oldest first


def replay_settings(**auto: Any) -> dict[str, Any]:
    return {
        "targets": {
            MULESOFT: {
                "http": {
                    "method": "POST",
                    "url": "http://mulesoft.test/api/executions/{execution_id}/retry",
                    "body": {"correlation_id": "{correlation_id}", "replay": "{replay_id}"},
                }
            }
        },
        "auto": auto,
    }


@pytest.fixture
def rig(
    database: Database, database_url: str, keys: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Rig]]:
    """``rig(**auto)``: syncwatch with ``replay.auto`` set to ``auto``, its clock at NOW."""
    with ExitStack() as stack:

        def make(**auto: Any) -> Rig:
            settings = load_settings(
                {
                    "data_dir": tmp_path,
                    "database_url": database_url,
                    "replay": replay_settings(**auto),
                }
            )
            middleware = Middleware()
            replayer = Replayer(
                database,
                settings.replay,
                transport=httpx.MockTransport(middleware),
                sleep=lambda seconds: None,
            )
            clock = Clock(NOW)
            app = create_app(settings, database, clock=clock, replayer=replayer)
            client = stack.enter_context(TestClient(app))
            return Rig(
                client,
                database,
                settings,
                replayer,
                middleware,
                clock,
                keys,
                configured_flow_types(settings.flows),
            )

        yield make


# --- events and payloads -------------------------------------------------------------------------


def at(day: int, hour: int) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00Z"


def onboarding(
    correlation_id: str,
    *,
    day: int = 20,
    synced: bool = True,
    failed: str | None = None,
    execution_id: str | None = None,
    then_succeeded: bool = False,
) -> list[dict[str, Any]]:
    """A contract_onboarding flow signed on ``day`` at 10:00 (project.created due the next day at
    10:00): customer.synced reached when ``synced``; ``failed`` names the step of an
    integration.failed; ``then_succeeded`` adds a later integration.succeeded for that step."""
    events = [make_event("contract.signed", correlationid=correlation_id, time=at(day, 10))]
    if synced:
        events.append(
            make_event(
                "customer.synced",
                correlationid=correlation_id,
                time=at(day, 11),
                data={"customer_id": "C-1", "erp_customer_id": "E-1"},
            )
        )
    if failed is not None:
        events.append(
            make_event(
                "integration.failed",
                correlationid=correlation_id,
                time=at(day + 1, 8),
                data={"step": failed, "execution_id": execution_id, "error": "timeout"},
            )
        )
        if then_succeeded:
            events.append(
                make_event(
                    "integration.succeeded",
                    correlationid=correlation_id,
                    time=at(day + 1, 9),
                    data={"step": failed, "execution_id": f"{execution_id}-retry"},
                )
            )
    return events


def flow(correlation_id: str) -> str:
    return flow_id(FLOW_TYPE, correlation_id, None)


def alert(
    *,
    status: str = "firing",
    fingerprint: str = FINGERPRINT,
    starts_at: str = STARTS_AT,
    drop: tuple[str, ...] = (),
    **labels: str,
) -> dict[str, Any]:
    names = {
        "alertname": ALERTNAME,
        "severity": "info",
        "queue": "integration_oncall",
        "syncwatch_auto_replay": "true",
        "flow_type": FLOW_TYPE,
        "stage": STAGE,
        **labels,
    }
    for name in drop:
        names.pop(name)
    return {
        "status": status,
        "labels": names,
        "annotations": {"summary": "stuck on an integration failure"},
        "startsAt": starts_at,
        "endsAt": ZERO_TIME if status == "firing" else "2026-11-30T00:10:00Z",
        "generatorURL": "http://prometheus.test/graph?g0.expr=...",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    statuses = {a["status"] for a in alerts}
    payload = {
        "version": "4",
        "groupKey": '{}/{syncwatch_auto_replay="true"}:{alertname="' + ALERTNAME + '"}',
        "truncatedAlerts": 0,
        "status": "firing" if "firing" in statuses else "resolved",
        "receiver": "syncwatch",
        "groupLabels": {"alertname": ALERTNAME},
        "commonLabels": {"alertname": ALERTNAME},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test:9093",
        "alerts": list(alerts),
    }
    payload.update(overrides)
    return payload


def stuck_mix() -> list[dict[str, Any]]:
    """Two flows stuck at project.created on a failure (A1 older than A2), and three that an
    alert for project.created must not replay: B stuck at customer.synced on a failure, C stuck
    at project.created without any failure, D whose failure was followed by a success."""
    return [
        *onboarding("A1", day=18, failed=STAGE, execution_id="EX-A1"),
        *onboarding("A2", day=20, failed=STAGE, execution_id="EX-A2"),
        *onboarding("B", day=18, synced=False, failed="customer.synced", execution_id="EX-B"),
        *onboarding("C", day=18),
        *onboarding("D", day=18, failed=STAGE, execution_id="EX-D", then_succeeded=True),
    ]


def stuck_on_failure(count: int) -> list[dict[str, Any]]:
    """``count`` flows stuck at project.created on a failure, S1 the oldest."""
    return [
        event
        for n in range(1, count + 1)
        for event in onboarding(f"S{n}", day=10 + n, failed=STAGE, execution_id=f"EX-S{n}")
    ]


# --- the payload and who may send it -------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"version": "3"},
        {"version": 4},
        {"status": "pending"},
        {"alerts": [{**alert(), "fingerprint": ""}]},
        {"alerts": [{**alert(), "startsAt": "2026-11-29T23:59:30"}]},  # no time zone
        {"alerts": [{k: v for k, v in alert().items() if k != "labels"}]},
    ],
    ids=["version-3", "version-int", "status", "fingerprint", "naive-startsAt", "no-labels"],
)
def test_a_payload_other_than_version_4_is_refused(
    rig: Callable[..., Rig], change: dict[str, Any]
) -> None:
    r = rig()
    r.ingest(stuck_mix())
    answer = r.notify(alert(), **change)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid"
    assert r.deliveries() == []
    assert r.middleware.requests == []


def test_only_the_alertmanager_and_admin_roles_may_notify(rig: Callable[..., Rig]) -> None:
    r = rig()
    for role in Role:
        answer = r.notify(alert(fingerprint=f"fp-{role.value}"), role=role.value)
        expected = 200 if role in (Role.ALERTMANAGER, Role.ADMIN) else 403
        assert answer.status_code == expected, (role, answer.text)
    assert r.client.post("/v1/alertmanager", json=notification(alert())).status_code == 401
    wrong = r.client.post(
        "/v1/alertmanager", json=notification(alert()), headers=bearer("sw_not-a-key")
    )
    assert wrong.status_code == 401
    assert {row.fingerprint for row in r.deliveries()} == {"fp-alertmanager", "fp-admin"}
    assert {row.received_by for row in r.deliveries()} == {"alertmanager", "admin"}


def test_the_answer_comes_at_once_with_counts_and_the_replays_follow(
    rig: Callable[..., Rig],
) -> None:
    """Over real HTTP: the middleware holds each replay until the test lets it go, and the
    receiver has already answered."""
    r = rig()
    r.ingest(stuck_mix())
    r.middleware.gate = threading.Event()
    payload = notification(
        alert(),
        alert(fingerprint="0000aaaa", syncwatch_auto_replay="false"),
        alert(fingerprint="0000bbbb", status="resolved"),
    )
    with serving(r.client.app, probe_path="/healthz") as url:
        started = time.monotonic()
        answer = httpx.post(
            f"{url}/v1/alertmanager",
            json=payload,
            headers=bearer(r.keys["alertmanager"]),
            timeout=10,
        )
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"alerts": 3, "new": 3, "to_replay": 1}
        assert took < 5
        assert r.middleware.requests == []  # still held: the work goes on in the background
        r.middleware.gate.set()
        deadline = time.monotonic() + 20
        while {row.state for row in r.deliveries()} != {"done", "ignored"}:
            assert time.monotonic() < deadline, r.deliveries()
            time.sleep(0.05)
    assert sorted(r.middleware.executions()) == ["EX-A1", "EX-A2"]


# --- what an automatic-replay alert replays ------------------------------------------------------


def test_a_firing_alert_replays_exactly_the_flows_stuck_at_its_stage_on_a_failure(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.ingest(stuck_mix())
    answer = r.notify(alert())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"alerts": 1, "new": 1, "to_replay": 1}
    # oldest stuck first; B (another stage), C (no failure), D (failure then success) untouched
    assert r.middleware.executions() == ["EX-A1", "EX-A2"]
    sent = r.replays()
    assert [(s["flow_id"], s["execution_id"]) for s in sent] == [
        (flow("A1"), "EX-A1"),
        (flow("A2"), "EX-A2"),
    ]
    for item in sent:
        assert item["trigger"] == "alert"
        assert item["requested_by"] == ACTOR
        assert item["outcome"] == "sent"
        assert item["stage"] == STAGE
        assert item["source"] == MULESOFT
        assert FINGERPRINT in item["reason"]
    (delivery,) = r.deliveries()
    assert delivery.state == "done"
    assert delivery.alertname == ALERTNAME
    assert delivery.result == {
        "stuck": 2,
        "replays": [s["id"] for s in sent],
        "refused": {},
        "skipped_by_limit": 0,
    }
    # an alert for the other stage replays B alone
    other = r.notify(alert(fingerprint="77aa", stage="customer.synced"))
    assert other.json() == {"alerts": 1, "new": 1, "to_replay": 1}
    assert r.middleware.executions() == ["EX-A1", "EX-A2", "EX-B"]


def test_the_same_alert_delivered_again_does_nothing_more(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.ingest(stuck_mix())
    first = r.notify(alert())
    assert first.json() == {"alerts": 1, "new": 1, "to_replay": 1}
    for _ in range(3):  # Alertmanager's repeats, and a retry after a lost answer
        again = r.notify(alert())
        assert again.status_code == 200, again.text
        assert again.json() == {"alerts": 1, "new": 0, "to_replay": 0}
    r.clock.now = NOW + timedelta(minutes=30)
    assert r.notify(alert()).json()["new"] == 0
    assert sorted(r.middleware.executions()) == ["EX-A1", "EX-A2"]  # once per flow
    assert len(r.deliveries()) == 1
    assert len(r.replays()) == 2


def test_a_new_start_time_is_a_new_alert_under_the_per_flow_guardrails(
    rig: Callable[..., Rig],
) -> None:
    """The same fingerprint firing again (it resolved in between) is a new alert; each flow is
    still replayed at most replay.max_per_flow (3) times in 24 h."""
    r = rig()
    r.ingest(stuck_mix())
    starts = ["2026-11-29T20:00:00Z", "2026-11-29T21:00:00Z", "2026-11-29T22:00:00Z"]
    for minute, starts_at in enumerate([*starts, STARTS_AT]):
        r.clock.now = NOW + timedelta(minutes=minute)
        answer = r.notify(alert(starts_at=starts_at))
        assert answer.json() == {"alerts": 1, "new": 1, "to_replay": 1}, answer.text
    assert sorted(r.middleware.executions()) == ["EX-A1"] * 3 + ["EX-A2"] * 3
    deliveries = r.deliveries()
    assert len(deliveries) == 4
    assert [len(d.result["replays"]) for d in deliveries] == [2, 2, 2, 0]
    assert deliveries[-1].result["refused"] == {"too_many_replays": 2}
    refused = [s for s in r.replays() if s["outcome"] == "refused"]
    assert {(s["flow_id"], s["refusal"]) for s in refused} == {
        (flow("A1"), "too_many_replays"),
        (flow("A2"), "too_many_replays"),
    }


def test_max_per_alert_replays_the_oldest_and_counts_the_rest(rig: Callable[..., Rig]) -> None:
    r = rig(max_per_alert=2)
    r.ingest(stuck_on_failure(3))
    r.notify(alert())
    assert r.middleware.executions() == ["EX-S1", "EX-S2"]
    (delivery,) = r.deliveries()
    assert delivery.result["stuck"] == 3
    assert delivery.result["skipped_by_limit"] == 1
    assert len(delivery.result["replays"]) == 2


def test_max_per_hour_holds_over_all_alerts(rig: Callable[..., Rig]) -> None:
    r = rig(max_per_alert=10, max_per_hour=3)
    r.ingest(stuck_on_failure(4))
    r.notify(alert())
    assert r.middleware.executions() == ["EX-S1", "EX-S2", "EX-S3"]
    # another alert within the hour: nothing left of the hour's budget
    r.clock.now = NOW + timedelta(minutes=30)
    r.notify(alert(fingerprint="second", starts_at="2026-11-30T00:29:00Z"))
    assert len(r.middleware.requests) == 3
    # an hour after the first replays, the budget is back
    r.clock.now = NOW + timedelta(minutes=61)
    r.notify(alert(fingerprint="third", starts_at="2026-11-30T01:00:00Z"))
    assert r.middleware.executions()[3:] == ["EX-S1", "EX-S2", "EX-S3"]
    results = [d.result for d in r.deliveries()]
    assert [len(result["replays"]) for result in results] == [3, 0, 3]
    assert [result["skipped_by_limit"] for result in results] == [1, 4, 1]
    assert [result["stuck"] for result in results] == [4, 4, 4]


def test_resolved_alerts_and_alerts_without_the_label_are_stored_as_ignored(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.ingest(stuck_mix())
    answer = r.notify(
        alert(fingerprint="resolved", status="resolved"),
        alert(fingerprint="nolabel", drop=("syncwatch_auto_replay",)),
        alert(fingerprint="false", syncwatch_auto_replay="false"),
        alert(fingerprint="nostage", drop=("stage",)),
        alert(fingerprint="notype", drop=("flow_type",)),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"alerts": 5, "new": 5, "to_replay": 0}
    deliveries = r.deliveries()
    assert {d.fingerprint: d.state for d in deliveries} == {
        "resolved": "ignored",
        "nolabel": "ignored",
        "false": "ignored",
        "nostage": "ignored",
        "notype": "ignored",
    }
    assert all(d.result is None for d in deliveries)
    # the resolution of an alert already replayed: recorded, nothing sent
    r.notify(alert())
    assert len(r.middleware.requests) == 2
    resolved = r.notify(alert(status="resolved"))
    assert resolved.json() == {"alerts": 1, "new": 0, "to_replay": 0}
    (replayed,) = [d for d in r.deliveries() if d.fingerprint == FINGERPRINT]
    assert (replayed.status, replayed.state) == ("resolved", "done")
    assert len(r.middleware.requests) == 2
    assert len(r.replays()) == 2


def test_disabled_automatic_replays_store_the_alert_and_replay_nothing(
    rig: Callable[..., Rig],
) -> None:
    r = rig(enabled=False)
    r.ingest(stuck_mix())
    assert r.notify(alert()).json() == {"alerts": 1, "new": 1, "to_replay": 0}
    assert [d.state for d in r.deliveries()] == ["ignored"]
    assert r.middleware.requests == []


def test_every_step_is_audited(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.ingest(stuck_mix())
    r.notify(alert())
    r.notify(alert())  # a repeat: audited as a notification, nothing else
    notes = r.audit(action="alertmanager.notify")
    assert [(n["actor"], n["details"]["new"]) for n in notes] == [
        ("alertmanager", 1),
        ("alertmanager", 0),
    ]
    assert all(n["details"]["alerts"] == 1 for n in notes)
    (auto,) = r.audit(action="alertmanager.auto_replay")
    assert auto["actor"] == ACTOR
    assert auto["target_type"] == "alert"
    assert auto["target_id"] == FINGERPRINT
    assert auto["details"]["stuck"] == 2
    assert auto["details"]["starts_at"].startswith("2026-11-29T23:59:30")
    ids = {str(s["id"]) for s in r.replays()}
    requests = r.audit(action="replay.request")
    assert {(e["actor"], e["target_id"]) for e in requests} == {(ACTOR, i) for i in ids}
    assert {e["details"]["trigger"] for e in requests} == {"alert"}
    assert {e["target_id"] for e in r.audit(action="replay.sent")} == ids


def test_an_interrupted_delivery_is_taken_up_again_without_sending_twice(
    rig: Callable[..., Rig],
) -> None:
    """A replica died while working on a delivery: after A1 was sent, before A2. Once the claim
    is old, the next probe cycle (the scheduler's job) takes the delivery up again; A1's replay
    carries the same idempotency key and is not sent again; A2 is sent once."""
    r = rig()
    r.ingest(stuck_mix())
    r.notify(alert())
    assert r.middleware.executions() == ["EX-A1", "EX-A2"]
    (delivery,) = r.deliveries()
    with r.database.write() as connection:
        # as it was when the replica died: A2's replay never written, the delivery working
        connection.execute(replays.delete().where(replays.c.flow_id == flow("A2")))
        connection.execute(
            alert_deliveries.update()
            .where(alert_deliveries.c.id == delivery.id)
            .values(state="working", claimed_at=NOW - timedelta(minutes=2), result=None)
        )
    r.clock.now = NOW + timedelta(minutes=1)
    # a fresh claim (another replica may still be working on it) is left alone
    probe_job(r.database, r.flow_types, 5000, replayer=r.replayer, clock=r.clock)
    assert r.deliveries()[0].state == "working"
    assert len(r.middleware.requests) == 2
    # an old one is taken up again
    r.clock.now = NOW + timedelta(minutes=15)
    probe_job(r.database, r.flow_types, 5000, replayer=r.replayer, clock=r.clock)
    (again,) = r.deliveries()
    assert again.state == "done"
    assert r.middleware.executions() == ["EX-A1", "EX-A2", "EX-A2"]  # A1 not again
    by_flow = {s["flow_id"]: s for s in r.replays()}
    assert again.result["replays"] == [by_flow[flow("A1")]["id"], by_flow[flow("A2")]["id"]]
    # and once more: nothing more is sent
    with r.database.write() as connection:
        connection.execute(
            alert_deliveries.update().values(state="working", claimed_at=NOW - timedelta(hours=1))
        )
    probe_job(r.database, r.flow_types, 5000, replayer=r.replayer, clock=r.clock)
    assert len(r.middleware.requests) == 3
    assert r.deliveries()[0].state == "done"


def test_a_delivery_taken_up_again_does_not_count_its_own_replays_twice_against_the_hour(
    rig: Callable[..., Rig],
) -> None:
    """max_per_hour 3, four stuck flows: the replica died after S1 and S2 were sent. Taken up
    again, S1 and S2 are repeats (not sent), S3 is sent: three replays for the hour, as if
    nothing had happened."""
    r = rig(max_per_alert=10, max_per_hour=3)
    r.ingest(stuck_on_failure(4))
    r.notify(alert())
    assert r.middleware.executions() == ["EX-S1", "EX-S2", "EX-S3"]
    with r.database.write() as connection:
        connection.execute(replays.delete().where(replays.c.flow_id == flow("S3")))
        connection.execute(
            alert_deliveries.update().values(
                state="working", claimed_at=NOW - timedelta(hours=1), result=None
            )
        )
    probe_job(r.database, r.flow_types, 5000, replayer=r.replayer, clock=r.clock)
    assert r.middleware.executions() == ["EX-S1", "EX-S2", "EX-S3", "EX-S3"]
    (delivery,) = r.deliveries()
    assert delivery.state == "done"
    assert len(delivery.result["replays"]) == 3
    assert delivery.result["skipped_by_limit"] == 1
