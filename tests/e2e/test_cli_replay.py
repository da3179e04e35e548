"""``syncwatch replay``: the real console script in a subprocess, against SQLite and PostgreSQL,
replaying a flow stuck on an integration failure to a fake middleware (a real HTTP server in a
thread), locally and through a running ``syncwatch serve``."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core.db import Database
from core.tables import replays
from tests.conftest import bearer
from tests.support import databases
from tests.support.builders import make_event
from tests.support.servers import (
    SYNCWATCH,
    create_key,
    free_port,
    run_syncwatch,
    start_serve,
    stop_process,
    syncwatch_env,
    tail,
)

SOURCE = "middleware/mulesoft"
TOKEN = "mw-secret-token-42"
STUCK = "Q2C-STUCK-1"
FRESH = "Q2C-FRESH-1"
STUCK_FLOW = f"contract_onboarding:{STUCK}"
FRESH_FLOW = f"contract_onboarding:{FRESH}"


@dataclass
class Middleware:
    """A fake middleware's "retry execution" endpoint: records each request, answers ``status``
    (202 unless a test says otherwise)."""

    port: int
    status: int = 202
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def recorded(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def middleware() -> Iterator[Middleware]:
    fake = Middleware(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with fake.lock:
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode("utf-8", "replace"),
                    }
                )
            answer = json.dumps({"status": "accepted"}).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_POST = do_PUT = do_PATCH = do_GET = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, middleware: Middleware
) -> Iterator[dict[str, str]]:
    config = tmp_path / "syncwatch.yaml"
    config.write_text(
        "replay:\n"
        "  targets:\n"
        f"    {SOURCE}:\n"
        "      http:\n"
        f'        url: "http://127.0.0.1:{middleware.port}/executions/{{execution_id}}/retry"\n'
        "        token_env: MW_TOKEN\n"
        "  attempts: 1\n"
        "  timeout_seconds: 5\n",
        encoding="utf-8",
    )
    settings = {
        "SYNCWATCH_DATA_DIR": str(tmp_path / "data"),
        "SYNCWATCH_CONFIG": str(config),
        "MW_TOKEN": TOKEN,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "COLUMNS": "250",
        "PYTHONIOENCODING": "utf-8",
        "NO_COLOR": "1",
    }
    if request.param == "sqlite":
        yield syncwatch_env(**settings)
        return
    url = databases.create_pg_database("sw_replay")
    try:
        yield syncwatch_env(SYNCWATCH_DATABASE_URL=url, **settings)
    finally:
        databases.drop_pg_database(url)


def _at(now: datetime, hours_ago: float) -> str:
    return (now - timedelta(hours=hours_ago)).isoformat(timespec="seconds").replace("+00:00", "Z")


def _seed(env: dict[str, str], tmp_path: Path) -> None:
    """A contract_onboarding flow stuck at project.created on a MuleSoft failure (signed 30 h ago:
    the stage's 24 h deadline passed 6 h ago), and a fresh one signed an hour ago (not stuck)."""
    now = datetime.now(UTC)
    events = [
        make_event("contract.signed", correlationid=STUCK, time=_at(now, 30)),
        make_event(
            "customer.synced",
            correlationid=STUCK,
            time=_at(now, 29),
            data={"customer_id": "CUS-1", "erp_customer_id": "ERP-1"},
        ),
        make_event("integration.failed", correlationid=STUCK, time=_at(now, 26)),
        make_event(
            "contract.signed",
            correlationid=FRESH,
            time=_at(now, 1),
            data={**make_event()["data"], "contract_id": "CTR-2", "milestones": []},
        ),
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    run_syncwatch(["ingest", str(path)], env)
    run_syncwatch(["probe", "run"], env)


def _replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYNCWATCH, "replay", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_one_retry(middleware: Middleware) -> None:
    (request,) = middleware.recorded()
    assert request["method"] == "POST"
    assert request["path"] == "/executions/EX-1/retry"
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_replay_locally_sends_once_per_key(
    env: dict[str, str], tmp_path: Path, middleware: Middleware
) -> None:
    _seed(env, tmp_path)

    first = _replay(env, STUCK_FLOW, "--reason", "MuleSoft timed out", "--idempotency-key", "k-1")
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert "Traceback" not in first.stderr
    assert re.search(
        r"project\.created\s*│\s*middleware/mulesoft\s*│\s*EX-1\s*│\s*sent\b", first.stdout
    ), first.stdout
    _assert_one_retry(middleware)

    again = _replay(env, STUCK_FLOW, "--reason", "MuleSoft timed out", "--idempotency-key", "k-1")
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "nothing was sent again" in again.stdout
    assert re.search(r"EX-1\s*│\s*sent\b", again.stdout), again.stdout
    _assert_one_retry(middleware)  # still exactly one request


def test_replay_locally_is_recorded_as_the_cli_user(
    env: dict[str, str], tmp_path: Path, middleware: Middleware
) -> None:
    _seed(env, tmp_path)
    done = _replay(env, STUCK_FLOW, "--reason", "retry please")
    assert done.returncode == 0, (done.stdout, done.stderr)
    _assert_one_retry(middleware)
    # without SYNCWATCH_DATABASE_URL the CLI uses the SQLite file in the data directory
    url = env.get("SYNCWATCH_DATABASE_URL") or f"sqlite:///{tmp_path / 'data' / 'syncwatch.db'}"
    database = Database.from_url(url)
    try:
        with database.read() as connection:
            (row,) = connection.execute(sa.select(replays)).all()
    finally:
        database.dispose()
    assert row.flow_id == STUCK_FLOW
    assert row.trigger == "cli"
    assert row.requested_by.startswith("cli:")
    assert row.reason == "retry please"
    assert row.outcome == "sent"
    assert row.execution_id == "EX-1"


def test_replay_of_a_flow_not_stuck_is_refused(
    env: dict[str, str], tmp_path: Path, middleware: Middleware
) -> None:
    _seed(env, tmp_path)
    refused = _replay(env, FRESH_FLOW, "--reason", "just because")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "refused (not_stuck)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert middleware.recorded() == []


def test_replay_the_middleware_turns_down_exits_1(
    env: dict[str, str], tmp_path: Path, middleware: Middleware
) -> None:
    _seed(env, tmp_path)
    middleware.status = 400  # a 4xx is never tried again
    failed = _replay(env, STUCK_FLOW, "--reason", "retry please")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "Traceback" not in failed.stderr
    assert re.search(r"EX-1\s*│\s*failed\b", failed.stdout), failed.stdout
    _assert_one_retry(middleware)


def test_replay_against_an_api_that_does_not_answer_exits_1(
    env: dict[str, str], middleware: Middleware
) -> None:
    remote = {**env, "SYNCWATCH_API_KEY": "sw_not_used"}
    url = f"http://127.0.0.1:{free_port()}"
    result = _replay(remote, STUCK_FLOW, "--reason", "r", "--api-url", url)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert f"cannot reach {url}" in result.stderr
    no_key = _replay(env, STUCK_FLOW, "--reason", "r", "--api-url", url)
    assert no_key.returncode == 2, (no_key.stdout, no_key.stderr)
    assert "SYNCWATCH_API_KEY" in no_key.stderr
    assert "Traceback" not in no_key.stderr
    assert middleware.recorded() == []


def test_replay_needs_a_reason(env: dict[str, str], middleware: Middleware) -> None:
    for args in (["--reason", ""], ["--reason", "   "], []):
        result = _replay(env, STUCK_FLOW, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "--reason" in result.stderr
    assert middleware.recorded() == []


@pytest.mark.slow
def test_replay_through_the_api_under_an_oncall_key(
    env: dict[str, str], tmp_path: Path, middleware: Middleware
) -> None:
    _seed(env, tmp_path)
    made = run_syncwatch(["keys", "create", "--role", "oncall"], env)
    oncall = made.stdout.strip().splitlines()[-1]
    named = re.search(r"created key (\S+) with roles oncall", made.stderr)
    assert named, made.stderr
    oncall_name = named.group(1)
    viewer = create_key(env, "viewer")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    server = start_serve(env, port, log_path)
    try:
        flows = httpx.get(f"{base}/v1/flows", headers=bearer(viewer), timeout=10)
        assert flows.status_code == 200, flows.text
        assert STUCK_FLOW in json.dumps(flows.json())

        remote = {**env, "SYNCWATCH_API_KEY": oncall}
        args = [STUCK_FLOW, "--reason", "via the API", "--api-url", base]
        done = _replay(remote, *args, "--idempotency-key", "api-1")
        assert done.returncode == 0, (done.stdout, done.stderr, tail(log_path))
        assert re.search(r"EX-1\s*│\s*sent\b", done.stdout), done.stdout
        _assert_one_retry(middleware)

        again = _replay(remote, *args, "--idempotency-key", "api-1")
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert "nothing was sent again" in again.stdout
        _assert_one_retry(middleware)

        refused = _replay(remote, FRESH_FLOW, "--reason", "x", "--api-url", base)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "refused (not_stuck)" in refused.stderr
        unknown = _replay(remote, "contract_onboarding:NOPE", "--reason", "x", "--api-url", base)
        assert unknown.returncode == 1, (unknown.stdout, unknown.stderr)
        assert "error 404" in unknown.stderr
        assert "Traceback" not in refused.stderr + unknown.stderr

        answer = httpx.get(
            f"{base}/v1/replays",
            params={"flow_id": STUCK_FLOW},
            headers=bearer(viewer),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        (replay,) = answer.json()["items"]
        assert replay["requested_by"] == oncall_name
        assert replay["trigger"] == "api"
        assert replay["reason"] == "via the API"
        assert replay["execution_id"] == "EX-1"
        assert replay["outcome"] == "sent"
    finally:
        stop_process(server)
