"""The automatic replay end to end, nothing posted by hand: a real Prometheus scrapes a running
syncwatch (its probes every 0.5 s, the real clock) and evaluates the SHIPPED rules
(alerts/rules/syncwatch.rules.yml, unchanged); a real Alertmanager routes
SyncwatchFlowsStuckOnIntegrationFailure (``syncwatch_auto_replay="true"``) to syncwatch's
POST /v1/alertmanager with an alertmanager key read from a file; syncwatch replays the stuck flow
to a small fake middleware (a real HTTP server), which a few seconds later posts the follow-up
events (integration.succeeded and project.created) to syncwatch's POST /v1/events. The replay is
sent exactly once, although Alertmanager keeps repeating the notification, and ends
``effective``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from core import apikeys
from core.db import Database
from core.roles import Role
from core.settings import load_settings
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support import alertmanager, prometheus
from tests.support.appserver import serving
from tests.support.builders import make_event
from tests.support.examples import PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]

RULES = PROJECT / "alerts" / "rules" / "syncwatch.rules.yml"
MULESOFT = "middleware/mulesoft"
CORRELATION_ID = "Q2C-E2E-42"
FLOW_ID = f"contract_onboarding:{CORRELATION_ID}"
#: How long the middleware takes to run the step again: Alertmanager repeats meanwhile.
FIX_AFTER = 3.0
T = TypeVar("T")


@dataclass
class Middleware:
    """The fake middleware: records each replay request (answered 202 at once) and, FIX_AFTER
    seconds later, posts the events of the successful run to syncwatch."""

    syncwatch_url: str = ""
    ingest_key: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path: str, headers: dict[str, str], body: bytes) -> None:
        payload = json.loads(body or b"{}")
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "body": payload})
        threading.Thread(target=self._run_again, args=(payload,), daemon=True).start()

    def _run_again(self, payload: dict[str, Any]) -> None:
        time.sleep(FIX_AFTER)
        now = datetime.now(UTC)
        correlation_id = payload["correlation_id"]
        events = [
            make_event(
                "integration.succeeded",
                correlationid=correlation_id,
                time=_text(now),
                data={"step": "project.created", "execution_id": payload["execution_id"]},
            ),
            make_event(
                "project.created",
                correlationid=correlation_id,
                time=_text(now + timedelta(milliseconds=1)),
                data={"project_id": "PRJ-42", "contract_id": "CTR-42"},
            ),
        ]
        try:
            answer = httpx.post(
                f"{self.syncwatch_url}/v1/events",
                json=events,
                headers=bearer(self.ingest_key),
                timeout=10,
            )
            if answer.status_code >= 300 or answer.json().get("accepted") != 2:
                self.errors.append(f"{answer.status_code} {answer.text}")
        except httpx.HTTPError as error:
            self.errors.append(repr(error))

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def _text(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def middleware() -> Iterator[tuple[Middleware, str]]:
    recorder = Middleware()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.received(self.path, dict(self.headers), body)
            reply = b'{"status":"accepted"}'
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="middleware", daemon=True)
    thread.start()
    try:
        yield recorder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def wait_until(
    what: str, check: Callable[[], T | None], timeout: float, diag: Callable[[], str]
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{diag()}")
        time.sleep(0.2)


def alertmanager_config(syncwatch_url: str, key_file: Path) -> dict[str, Any]:
    """Short waits; automatic-replay alerts to syncwatch, the rest nowhere."""
    return {
        "route": {
            "receiver": "nowhere",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1s",
            "routes": [
                {
                    "receiver": "syncwatch",
                    "matchers": ['syncwatch_auto_replay="true"'],
                    "group_by": ["alertname", "flow_type", "stage"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1s",
                }
            ],
        },
        "receivers": [
            {"name": "nowhere"},
            {
                "name": "syncwatch",
                "webhook_configs": [
                    {
                        "url": f"{syncwatch_url}/v1/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(key_file)}
                        },
                    }
                ],
            },
        ],
    }


def test_a_stuck_flow_is_replayed_once_through_prometheus_and_alertmanager(
    database: Database,
    database_url: str,
    middleware: tuple[Middleware, str],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    recorder, middleware_url = middleware
    settings = load_settings(
        {
            "data_dir": tmp_path,
            "database_url": database_url,
            "probes": {"interval_seconds": 0.5},
            "replay": {
                "targets": {
                    MULESOFT: {
                        "http": {
                            "url": middleware_url + "/executions/{execution_id}/retry",
                            "body": {
                                "execution_id": "{execution_id}",
                                "correlation_id": "{correlation_id}",
                            },
                        }
                    }
                },
                "attempts": 1,
                "timeout_seconds": 5,
            },
        }
    )
    with database.write() as connection:
        now = datetime.now(UTC)
        ingest_key = apikeys.create_key(connection, name="ingest", roles=[Role.INGEST], now=now)
        viewer_key = apikeys.create_key(connection, name="viewer", roles=[Role.VIEWER], now=now)
        admin_key = apikeys.create_key(connection, name="admin", roles=[Role.ADMIN], now=now)
        alertmanager_key = apikeys.create_key(
            connection, name="alertmanager", roles=[Role.ALERTMANAGER], now=now
        )
    key_file = tmp_path / "syncwatch-alertmanager-key"
    key_file.write_text(alertmanager_key + "\n", encoding="utf-8")
    key_file.chmod(0o600)

    app = create_app(settings, database, run_scheduler=True)
    with serving(app, probe_path="/healthz") as url:
        recorder.syncwatch_url, recorder.ingest_key = url, ingest_key
        client = httpx.Client(base_url=url, timeout=10)

        # signed 30 h ago: customer.synced (4 h) reached, project.created (24 h) missed, and the
        # middleware failed to create the project; billing_plan.created (48 h) not yet due
        signed = datetime.now(UTC) - timedelta(hours=30)
        events = [
            make_event(
                "contract.signed",
                correlationid=CORRELATION_ID,
                time=_text(signed),
                data={"contract_id": "CTR-42", "contract_value": "1000.00", "currency": "EUR"},
            ),
            make_event(
                "customer.synced",
                correlationid=CORRELATION_ID,
                time=_text(signed + timedelta(hours=1)),
                data={"customer_id": "C-42"},
            ),
            make_event(
                "integration.failed",
                correlationid=CORRELATION_ID,
                time=_text(signed + timedelta(hours=2)),
                data={"step": "project.created", "execution_id": "EX-42", "error": "HTTP 503"},
            ),
        ]
        answer = client.post("/v1/events", json=events, headers=bearer(ingest_key))
        assert answer.status_code < 300 and answer.json()["accepted"] == 3, answer.text

        with (
            alertmanager.running(
                alertmanager_config(url, key_file), tmp_path / "alertmanager"
            ) as manager,
            prometheus.running(
                prometheus.Target(url.removeprefix("http://"), job="syncwatch"),
                tmp_path / "prometheus",
                rule_files=[RULES],
                alertmanager_url=manager.url,
                evaluation_interval="1s",
                extra_args=["--rules.alert.resend-delay=1s"],
            ) as prom,
        ):

            def diagnostics() -> str:
                return (
                    f"middleware: {recorder.requests} {recorder.errors}\n"
                    f"replays: {client.get('/v1/replays', headers=bearer(viewer_key)).text}\n"
                    f"{prom.diagnostics()}\n{manager.diagnostics()}"
                )

            wait_until("the middleware got a replay", recorder.count, 90, diagnostics)
            (request,) = recorder.requests
            assert request["path"] == "/executions/EX-42/retry"
            assert request["body"] == {"execution_id": "EX-42", "correlation_id": CORRELATION_ID}
            assert request["headers"].get("Idempotency-Key", "").startswith("syncwatch-replay-")

            def effective() -> dict[str, Any] | None:
                items = client.get("/v1/replays", headers=bearer(viewer_key)).json()["items"]
                done = [item for item in items if item["outcome"] != "sending"]
                return done[0] if done and done[0]["moved"] is not None else None

            replay = wait_until("the replay was followed up", effective, 30, diagnostics)
            assert replay["outcome"] == "effective", replay
            assert replay["moved"] is True
            assert replay["flow_id"] == FLOW_ID
            assert replay["execution_id"] == "EX-42"
            assert replay["trigger"] == "alert"
            assert replay["requested_by"] == "alertmanager:SyncwatchFlowsStuckOnIntegrationFailure"
            assert replay["stage"] == "project.created"

            # a few more Alertmanager cycles (1 s each): still exactly one request
            time.sleep(4)
            assert recorder.count() == 1, recorder.requests
            assert recorder.errors == []
            items = client.get("/v1/replays", headers=bearer(viewer_key)).json()["items"]
            assert len(items) == 1, items

            notes = client.get(
                "/v1/audit",
                params={"action": "alertmanager.notify", "limit": 1000},
                headers=bearer(admin_key),
            ).json()["items"]
            # Alertmanager did repeat the notification while the middleware was at work (each
            # repeat stored nothing new), then told the resolution
            firing = [n for n in notes if n["details"]["status"] == "firing"]
            assert sum(n["details"]["new"] for n in firing) == 1, notes
            assert len(firing) >= 2, notes
            assert all(n["actor"] == "alertmanager" for n in notes)
        client.close()
    assert time.monotonic() - started < 60
