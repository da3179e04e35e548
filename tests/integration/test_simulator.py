"""The simulator against a real syncwatch, on SQLite and PostgreSQL: the default scenario's
backfill, ingested through the API and probed, fills every queue; ``syncwatch simulate --once``
sends it to a served API; ``--out`` writes a file that ``syncwatch ingest`` loads; the fake
middleware answers a replay and its follow-up events move the flow."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from alerts.replays import Replayer
from core.db import Database
from core.settings import Settings, load_settings
from core.tables import events as events_table
from probes.flowtypes import configured_flow_types
from probes.runner import run_until_idle
from syncwatch.app import create_app
from syncwatch.simulator.firm import firm_profile
from syncwatch.simulator.middleware import FakeMiddleware
from syncwatch.simulator.player import Player
from syncwatch.simulator.sender import Sender
from tests.conftest import bearer
from tests.support.appserver import serving
from tests.support.servers import (
    SYNCWATCH,
    free_port,
    run_syncwatch,
    stop_process,
    syncwatch_env,
    tail,
)

QUEUES = ("finance_ops", "legal_ops", "pmo", "integration_oncall")
FLOW_TYPES = configured_flow_types(None)


def probe(database: Database) -> None:
    run_until_idle(database, FLOW_TYPES, now=datetime.now(UTC))


def open_findings(api: TestClient | httpx.Client, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"status": "open", "limit": 500}
        if before is not None:
            params["before_id"] = before
        answer = api.get("/v1/exceptions", params=params, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        page = answer.json()["items"]
        items += page
        if len(page) < 500:
            return items
        before = page[-1]["id"]


def assert_demo_worthy(api: TestClient | httpx.Client, keys: dict[str, str]) -> None:
    """Flows, stuck flows, open findings in every queue, revenue at risk (issue 8)."""
    kpis = api.get("/v1/kpis", headers=bearer(keys["viewer"]))
    assert kpis.status_code == 200, kpis.text
    body = kpis.json()
    onboarding = body["flows"]["contract_onboarding"]
    assert onboarding["open"] > 0 and onboarding["completed"] > 0
    stuck = sum(flow["stuck"] for flow in body["flows"].values())
    assert stuck > 0
    for queue in QUEUES:
        assert body["exceptions"][queue]["open"] > 0, (queue, body["exceptions"])
    assert body["revenue_at_risk"] and all(
        float(amount) > 0 for amount in body["revenue_at_risk"].values()
    )
    findings = open_findings(api, keys["viewer"])
    by_queue = Counter(item["queue"] for item in findings)
    kinds = Counter(item["kind"] for item in findings)
    assert set(by_queue) == set(QUEUES), by_queue
    for kind in (
        "stuck",
        "duplicate_project",
        "term_mismatch",
        "contract_data_incomplete",
        "amendment_conflict",
    ):
        assert kinds[kind] > 0, kinds
    flows = api.get("/v1/flows", params={"state": "stuck"}, headers=bearer(keys["viewer"]))
    assert flows.status_code == 200 and flows.json()["total"] > 0


def test_default_scenario_fills_every_queue(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    origin = datetime.now(UTC).replace(microsecond=0)
    player = Player(
        firm_profile("medium"), seed=42, origin=origin, speed=3600, send=lambda _events: None
    )
    events = player.backfill_events(8)
    assert len(events) > 1500
    for first in range(0, len(events), 1000):
        answer = api.post(
            "/v1/events", json=events[first : first + 1000], headers=bearer(keys["ingest"])
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == []
    probe(database)
    assert_demo_worthy(api, keys)
    # duplicates were delivered and counted, and some events stay uncorrelated
    kpis = api.get("/v1/kpis", headers=bearer(keys["viewer"])).json()
    assert kpis["uncorrelated_events"] > 0
    assert kpis["duplicate_projects"] > 0


@pytest.fixture
def served(settings: Settings, database: Database) -> Iterator[str]:
    with serving(create_app(settings, database), probe_path="/readyz") as url:
        yield url


def test_simulate_once_against_a_served_api(
    served: str, keys: dict[str, str], database: Database, tmp_path: Path
) -> None:
    port = free_port()
    env = syncwatch_env(SYNCWATCH_INGEST_KEY=keys["ingest"], SYNCWATCH_DATA_DIR=str(tmp_path))
    result = run_syncwatch(
        [
            "simulate",
            "--api-url",
            served,
            "--once",
            "--middleware-port",
            str(port),
            "--firm",
            "small",
            "--backfill-weeks",
            "4",
            "--seed",
            "7",
        ],
        env,
        timeout=120,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    prefix = f"simulator: middleware on http://127.0.0.1:{port}, "
    assert lines[0].startswith(prefix) and lines[0].endswith(" events backfilled"), lines
    count = int(lines[0][len(prefix) :].split()[0])
    assert count > 100
    probe(database)
    with httpx.Client(base_url=served, timeout=30) as client:
        flows = client.get("/v1/flows", params={"limit": 1}, headers=bearer(keys["viewer"]))
        assert flows.status_code == 200 and flows.json()["total"] > 20
        # the middleware stopped with the command
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_simulate_plays_live_until_sigterm(
    served: str, keys: dict[str, str], database: Database, tmp_path: Path
) -> None:
    """After the backfill, live events keep coming (at 100 simulated hours a second), all with
    times not after the wall clock; SIGTERM ends it with exit 0 and the middleware with it."""
    port = free_port()
    env = syncwatch_env(SYNCWATCH_INGEST_KEY=keys["ingest"], SYNCWATCH_DATA_DIR=str(tmp_path))
    log = tmp_path / "simulate.out"
    started = datetime.now(UTC)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                SYNCWATCH,
                "simulate",
                "--api-url",
                served,
                "--middleware-port",
                str(port),
                "--firm",
                "small",
                "--backfill-weeks",
                "1",
                "--speed",
                "360000",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "events backfilled" not in tail(log) and time.monotonic() < deadline:
            assert process.poll() is None, tail(log)
            time.sleep(0.1)
        line = tail(log).strip().splitlines()[-1]
        backfilled = int(line.rsplit(", ", 1)[1].split()[0])
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        time.sleep(4)  # 400 simulated hours: new contracts, their stages and invoices
    finally:
        code = stop_process(process)
    assert code == 0, tail(log)
    with database.read() as connection:
        rows = connection.execute(
            sa.select(events_table.c.type, events_table.c.time, events_table.c.received_at)
        ).all()
    assert backfilled > 0 and len(rows) > 0
    live = [r for r in rows if r.time >= started]
    assert len(live) > 50
    assert {"contract.signed", "project.created", "milestone.completed"} <= {r.type for r in live}
    assert all(r.time <= r.received_at for r in rows)  # never in the future for the API
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_simulate_out_writes_what_ingest_loads(tmp_path: Path, database_url: str) -> None:
    out = tmp_path / "events.ndjson"
    env = syncwatch_env(SYNCWATCH_DATA_DIR=str(tmp_path), SYNCWATCH_DATABASE_URL=database_url)
    result = run_syncwatch(
        [
            "simulate",
            "--out",
            str(out),
            "--firm",
            "small",
            "--backfill-weeks",
            "4",
            "--fault-rate",
            "0.6",
        ],
        env,
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert result.stdout.strip() == f"simulator: {len(lines)} events written to {out}"
    assert len(lines) > 50
    distinct = {(json.loads(line)["source"], json.loads(line)["id"]) for line in lines}
    assert len(distinct) < len(lines)  # duplicate deliveries are in the file too
    # exits 0 only when nothing was rejected; the table counts accepted and duplicates
    loaded = run_syncwatch(["ingest", str(out)], env, timeout=120)
    numbers = [int(word) for word in loaded.stdout.replace("│", " ").split() if word.isdigit()]
    assert numbers[:3] == [len(distinct), len(lines) - len(distinct), 0], loaded.stdout


def _replay_until(
    client: httpx.Client,
    database: Database,
    keys: dict[str, str],
    flow_id: str,
    stage: str,
    attempt: int,
) -> dict[str, Any]:
    """Replay ``flow_id`` through syncwatch and wait (probing) until the middleware's answer to
    this re-run is stored: the stage reached, or a new ``integration.failed`` of the re-run.
    Returns the flow."""
    answer = client.post(
        f"/v1/flows/{flow_id}/replay",
        json={"reason": f"simulator test {attempt}"},
        headers={**bearer(keys["oncall"]), "Idempotency-Key": f"sim-{attempt}"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "sent", answer.json()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.3)
        probe(database)
        flow: dict[str, Any] = client.get(
            f"/v1/flows/{flow_id}", headers=bearer(keys["viewer"])
        ).json()
        reached = {s["stage"]: s["reached_at"] for s in flow["stages"]}[stage] is not None
        failed_again = any(
            e["id"].endswith(f"-replay-{attempt}") and e["type"] == "integration.failed"
            for e in flow["events"]
        )
        if reached or failed_again:
            return flow
    raise AssertionError(f"the middleware's answer to replay {attempt} never arrived: {flow}")


@pytest.mark.parametrize("fault", ["dead_letter", "data_error"])
def test_a_replay_through_syncwatch_reaches_the_middleware_and_becomes_effective(
    tmp_path: Path, database_url: str, database: Database, keys: dict[str, str], fault: str
) -> None:
    """syncwatch's replay target is the fake middleware (as the demo configures it): the replay
    is sent, the middleware posts the held-back events, the flow reaches the stage and the
    follow-up marks the replay effective. A data error (the ERP refused the record) fails again
    on the first replay: the flow stays stuck on integration on-call, and when the next replay
    works, only that one is effective."""
    senders: list[Sender] = []

    def send(events: list[dict[str, Any]]) -> None:
        senders[0].send(events)

    middleware = FakeMiddleware(send, port=0).start()
    try:
        target = {"http": {"url": f"{middleware.url}/replay/{{execution_id}}", "method": "POST"}}
        settings = load_settings(
            {
                "data_dir": tmp_path,
                "database_url": database_url,
                "replay": {"targets": {"middleware/mulesoft": target}},
            }
        )
        replayer = Replayer(database, settings.replay)
        with (
            serving(create_app(settings, database), probe_path="/readyz") as served,
            httpx.Client(base_url=served, timeout=30) as client,
        ):
            senders.append(Sender(served, keys["ingest"]))
            player = Player(
                firm_profile("medium").with_faults(**{fault: 0.5}),
                seed=3,
                origin=datetime.now(UTC).replace(microsecond=0),
                speed=3600,
                send=send,
                middleware=middleware,
            )
            player.backfill(4)
            probe(database)
            stuck = client.get(
                "/v1/flows",
                params={"queue": "integration_oncall", "limit": 200},
                headers=bearer(keys["viewer"]),
            )
            assert stuck.status_code == 200, stuck.text
            assert stuck.json()["items"], "no flow stuck on a dead letter"
            flow = stuck.json()["items"][0]
            flow_id, stage = flow["flow_id"], flow["stuck_stage"]
            attempt = 1
            if fault == "data_error":
                again = _replay_until(client, database, keys, flow_id, stage, attempt)
                assert (again["state"], again["queue"]) == ("stuck", "integration_oncall"), again
                assert replayer.follow_up(datetime.now(UTC)) == {
                    "effective": 0,
                    "ineffective": 0,
                    "failed": 0,
                }  # still within its follow-up window
                attempt += 1
            moved = _replay_until(client, database, keys, flow_id, stage, attempt)
            assert {s["stage"]: s["reached_at"] for s in moved["stages"]}[stage] is not None
            # the flow moved after the second replay: the first one's window ended when the
            # second was sent, so it is ineffective, not effective too
            assert replayer.follow_up(datetime.now(UTC)) == {
                "effective": 1,
                "ineffective": attempt - 1,
                "failed": 0,
            }
            outcomes = [
                r["outcome"]
                for r in client.get("/v1/replays", headers=bearer(keys["viewer"])).json()["items"]
            ]
            assert sorted(outcomes) == (
                ["effective", "ineffective"] if fault == "data_error" else ["effective"]
            )
        replayer.close()
        assert middleware.errors == []
    finally:
        middleware.stop()


def test_the_middleware_answers_a_replay_and_the_flow_moves(
    served: str, keys: dict[str, str], database: Database
) -> None:
    sender = Sender(served, keys["ingest"])

    def send(events: list[dict[str, Any]]) -> None:
        sender.send(events)

    middleware = FakeMiddleware(send, port=0).start()
    try:
        origin = datetime.now(UTC).replace(microsecond=0)
        player = Player(
            firm_profile("medium").with_faults(dead_letter=0.5),
            seed=3,
            origin=origin,
            speed=3600,
            send=send,
            middleware=middleware,
        )
        player.backfill(4)
        probe(database)
        with httpx.Client(base_url=served, timeout=30) as client:
            stuck = client.get(
                "/v1/flows",
                params={"queue": "integration_oncall", "limit": 200},
                headers=bearer(keys["viewer"]),
            )
            assert stuck.status_code == 200, stuck.text
            items = stuck.json()["items"]
            assert items, "no flow stuck on a dead letter"
            flow = items[0]
            detail = client.get(f"/v1/flows/{flow['flow_id']}", headers=bearer(keys["viewer"]))
            stage = flow["stuck_stage"]
            failures = [
                e
                for e in detail.json()["events"]
                if e["type"] == "integration.dead_lettered" and e["data"]["step"] == stage
            ]
            execution = failures[-1]["data"]["execution_id"]
            answer = httpx.post(f"{middleware.url}/replay/{execution}", timeout=10)
            assert answer.status_code == 200, answer.text
            assert httpx.post(f"{middleware.url}/replay/nope", timeout=10).status_code == 404
            assert httpx.get(f"{middleware.url}/healthz", timeout=10).json() == {"status": "ok"}
            deadline = time.monotonic() + 20
            reached = False
            while time.monotonic() < deadline and not reached:
                time.sleep(0.3)
                probe(database)
                moved = client.get(f"/v1/flows/{flow['flow_id']}", headers=bearer(keys["viewer"]))
                stages = {s["stage"]: s for s in moved.json()["stages"]}
                reached = stages[stage]["reached_at"] is not None
            assert reached, moved.json()
        assert middleware.errors == []
    finally:
        middleware.stop()
