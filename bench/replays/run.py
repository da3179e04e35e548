"""The replay benchmark: how fast the Alertmanager receiver answers, how many automatic replays a
second syncwatch sends, what one manual replay costs, and what the follow-up costs per probe
cycle, against a real local HTTP server playing the middleware.

    .venv/bin/python bench/replays/run.py --db sqlite [--flows 1000] [--repeat 50]
    .venv/bin/python bench/replays/run.py --db postgresql

1. a store with ``--flows`` contract onboardings stuck at ``project.created`` on an integration
   failure (contract.signed, customer.synced, integration.failed with an execution ID), loaded
   through the ingest code and the probes run to idle;
2. syncwatch (``create_app``, the real clock, no scheduler) served by uvicorn in a thread, the
   fake middleware (``http.server``, answers 200 at once) in another;
3. ``POST /v1/alertmanager`` with one automatic-replay alert: the time to the answer, then the
   time until every flow was replayed (``max_per_alert`` = ``--flows``);
4. ``POST /v1/flows/{id}/replay`` on fresh flows, one at a time: median and p90;
5. ``Replayer.follow_up`` with every replay still waiting, then with every flow moved.

Prints a table and writes ``bench/results/replays-<db>.json``. Figures are reported in
docs/benchmarks.md, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from alerts.replays import Replayer  # noqa: E402
from collector.ingest import ingest  # noqa: E402
from core import apikeys  # noqa: E402
from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.roles import Role  # noqa: E402
from core.settings import load_settings  # noqa: E402
from probes.flowtypes import DEFAULT_FLOW_TYPES  # noqa: E402
from probes.runner import run_until_idle  # noqa: E402
from syncwatch.app import create_app  # noqa: E402

SOURCE = "middleware/mulesoft"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_replays"


class Middleware(BaseHTTPRequestHandler):
    calls = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with Middleware.lock:
            Middleware.calls += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def events_for(prefix: str, count: int, t0: datetime) -> list[dict[str, Any]]:
    batch = []
    for n in range(count):
        cid = f"{prefix}-{n}"
        common = {"correlationid": cid, "specversion": "1.0"}
        time_text = t0.isoformat().replace("+00:00", "Z")
        batch += [
            {
                **common,
                "id": f"{cid}-s",
                "source": "clm/ironclad",
                "type": "contract.signed",
                "time": time_text,
                "data": {"contract_id": cid, "contract_value": "1000.00", "currency": "EUR"},
            },
            {
                **common,
                "id": f"{cid}-c",
                "source": "erp/netsuite",
                "type": "customer.synced",
                "time": time_text,
                "data": {"contract_id": cid, "customer_id": f"C-{n}"},
            },
            {
                **common,
                "id": f"{cid}-f",
                "source": SOURCE,
                "type": "integration.failed",
                "time": time_text,
                "data": {"step": "project.created", "execution_id": f"EX-{cid}", "error": "503"},
            },
        ]
    return batch


def moved_events(prefix: str, count: int, at: datetime) -> list[dict[str, Any]]:
    return [
        {
            "correlationid": f"{prefix}-{n}",
            "specversion": "1.0",
            "id": f"{prefix}-{n}-p",
            "source": "erp/netsuite",
            "type": "project.created",
            "time": at.isoformat().replace("+00:00", "Z"),
            "data": {"project_id": f"P-{prefix}-{n}", "contract_id": f"{prefix}-{n}"},
        }
        for n in range(count)
    ]


def load(database: Database, items: list[dict[str, Any]], now: datetime) -> None:
    for start in range(0, len(items), 5000):
        result = ingest(
            database,
            items[start : start + 5000],
            require_specversion=False,
            channel="api",
            content_type=None,
            now=now,
        )
        if result.rejected:
            raise SystemExit(f"rejected: {result.rejected[:3]}")
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=now)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fresh_database(db: str, workdir: Path) -> str:
    if db == "sqlite":
        path = workdir / "replays.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS bench_replays")
        connection.exec_driver_sql("CREATE DATABASE bench_replays")
    admin.dispose()
    return PG_URL


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/syncwatch-bench-replays"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    middleware = ThreadingHTTPServer(("127.0.0.1", 0), Middleware)
    threading.Thread(target=middleware.serve_forever, daemon=True).start()
    os.environ["BENCH_MIDDLEWARE_TOKEN"] = "bench-token"
    url = fresh_database(args.db, args.workdir)
    settings = load_settings(
        {
            "database_url": url,
            "data_dir": args.workdir,
            "replay": {
                "targets": {
                    SOURCE: {
                        "http": {
                            "url": f"http://127.0.0.1:{middleware.server_port}"
                            "/executions/{execution_id}/retry",
                            "token_env": "BENCH_MIDDLEWARE_TOKEN",
                        }
                    }
                },
                "auto": {"max_per_alert": args.flows, "max_per_hour": 10 * args.flows},
            },
        }
    )
    database = Database.from_url(url)
    upgrade(database)
    now = datetime.now(UTC)
    t0 = now - timedelta(days=2)
    started = time.perf_counter()
    load(database, events_for("auto", args.flows, t0) + events_for("man", args.repeat, t0), now)
    load_seconds = time.perf_counter() - started
    with database.write() as connection:
        keys = {
            role: apikeys.create_key(connection, name=role.value, roles=[role], now=now)
            for role in (Role.ALERTMANAGER, Role.ONCALL)
        }
    replayer = Replayer(database, settings.replay)
    app = create_app(settings, database, replayer=replayer)
    results: dict[str, Any] = {
        "db": args.db,
        "flows": args.flows,
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "load_seconds": round(load_seconds, 2),
    }
    with serving(app) as base, httpx.Client(base_url=base, timeout=600) as client:
        alert = {
            "version": "4",
            "status": "firing",
            "receiver": "syncwatch",
            "groupKey": "bench",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "SyncwatchFlowsStuckOnIntegrationFailure",
                        "syncwatch_auto_replay": "true",
                        "flow_type": "contract_onboarding",
                        "stage": "project.created",
                    },
                    "startsAt": now.isoformat(),
                    "fingerprint": "b3nch",
                }
            ],
        }
        # Manual replays are timed first, while the automatic ones have not run.
        latencies = []
        for n in range(args.repeat):
            begin = time.perf_counter()
            answer = client.post(
                f"/v1/flows/contract_onboarding:man-{n}/replay",
                json={"reason": "bench"},
                headers={"Authorization": f"Bearer {keys[Role.ONCALL]}"},
            )
            latencies.append(time.perf_counter() - begin)
            if answer.status_code != 201:
                raise SystemExit(f"manual replay: {answer.status_code} {answer.text}")
        results["manual_replay_ms"] = {
            "median": round(statistics.median(latencies) * 1000, 1),
            "p90": round(percentile(latencies, 0.9) * 1000, 1),
        }
        before = Middleware.calls
        begin = time.perf_counter()
        answer = client.post(
            "/v1/alertmanager",
            json=alert,
            headers={"Authorization": f"Bearer {keys[Role.ALERTMANAGER]}"},
        )
        answered = time.perf_counter() - begin
        answer.raise_for_status()
        while Middleware.calls - before < args.flows:
            time.sleep(0.01)
        done = time.perf_counter() - begin
        results["receiver_answer_ms"] = round(answered * 1000, 1)
        results["auto_replays_seconds"] = round(done, 2)
        results["auto_replays_per_second"] = round(args.flows / done, 1)

    total = args.flows + args.repeat
    begin = time.perf_counter()
    replayer.follow_up(datetime.now(UTC))
    results["follow_up_waiting_seconds"] = round(time.perf_counter() - begin, 3)
    moved_at = datetime.now(UTC)
    load(
        database,
        moved_events("auto", args.flows, moved_at) + moved_events("man", args.repeat, moved_at),
        moved_at,
    )
    begin = time.perf_counter()
    counts = replayer.follow_up(datetime.now(UTC), batch=total)
    results["follow_up_concluding_seconds"] = round(time.perf_counter() - begin, 3)
    results["concluded"] = counts
    database.dispose()
    middleware.shutdown()
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / f"replays-{args.db}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
