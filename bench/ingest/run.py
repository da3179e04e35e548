"""The ingest benchmark: N canonical events through ``POST /v1/events`` in batches of 1,000 against
a running ``syncwatch serve``, next to the raw bulk-insert rate of the same rows into the same
kind of database, and the cost of parsing and validation alone.

    .venv/bin/python bench/ingest/run.py --events 1000000 --db both

For each database (a fresh SQLite file in a temporary data directory, or fresh PostgreSQL
databases ``sw_bench`` and ``sw_bench_raw`` on 127.0.0.1:5432, dropped afterwards):

1. the raw baseline: the rows built beforehand, inserted by the driver alone (raw_insert.py);
2. end to end: ``syncwatch keys create --role ingest``, ``syncwatch serve`` as a subprocess, the
   sender (send.py) as another subprocess posting the pre-serialized bodies over keep-alive
   connections, while monitor.py samples every second the CPU time of the server, the client and
   the PostgreSQL processes and the server's RSS; then the stored count is checked.

Before both, the parse+validate micro-benchmark (microbench.py). Prints a table and writes
``bench/results/ingest-<db>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
from events import read_bodies, write_bodies
from microbench import run as microbench
from monitor import Monitor, load_average
from raw_insert import insert_postgresql, insert_sqlite

import core
from core.db import Database
from core.eventstore import count_events
from core.migrate import upgrade

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
PG_SERVER = os.environ.get("SYNCWATCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
TARGET_RATIO = 0.5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _pg_admin(statement: str, name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as connection:
        connection.execute(psycopg.sql.SQL(statement).format(psycopg.sql.Identifier(name)))


def _pg_recreate(name: str) -> str:
    _pg_admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    _pg_admin("CREATE DATABASE {}", name)
    return f"{PG_SERVER}/{name}"


def _sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _migrated(url: str) -> None:
    database = Database.from_url(url)
    upgrade(database)
    database.dispose()


def _machine() -> dict[str, Any]:
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(f"{PG_SERVER}/test") as connection:
        pg = connection.execute("SHOW server_version").fetchone()
        settings = dict(
            connection.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level', 'max_wal_size')"
            ).fetchall()
        )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg[0] if pg else None,
        "postgresql_settings": settings,
    }


def raw_baseline(db: str, bodies_dir: Path, workdir: Path) -> dict[str, Any]:
    received_at = datetime.now(UTC)
    if db == "sqlite":
        path = workdir / "raw.db"
        _migrated(f"sqlite:///{path}")
        monitor = Monitor(server_pid=None, watch_postgres=False)
        monitor.start()
        result = insert_sqlite(str(path), read_bodies(bodies_dir), received_at)
        monitor.stop()
        result["method"] = "sqlite3 executemany, BEGIN IMMEDIATE/COMMIT per 1,000 rows"
    else:
        url = _pg_recreate("sw_bench_raw")
        _migrated(_sa_url(url))
        monitor = Monitor(server_pid=None, watch_postgres=True)
        monitor.start()
        result = insert_postgresql(url, read_bodies(bodies_dir), received_at)
        monitor.stop()
        _pg_admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", "sw_bench_raw")
        result["method"] = "psycopg 3 COPY FROM STDIN, one COPY and COMMIT per 1,000 rows"
    # The monitor's window includes building the rows (untimed): only the DB's CPU is kept.
    result["postgres_cpu_seconds_incl_row_building"] = (
        monitor.result()["cpu"].get("postgres", {}).get("cpu_seconds")
    )
    return result


class Server:
    """``syncwatch serve`` on a free port with its own data directory and database."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def create_key(self) -> str:
        made = subprocess.run(
            [str(VENV_BIN / "syncwatch"), "keys", "create", "--role", "ingest", "--name", "bench"],
            env=self.env,
            capture_output=True,
            check=True,
        )
        return made.stdout.decode().strip().splitlines()[-1]

    def start(self) -> int:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "syncwatch"), "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:  # noqa: S310 (http only)
                    if answer.status == 200:
                        return self.process.pid
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not become ready in 60 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def end_to_end(
    db: str, bodies_dir: Path, workdir: Path, connections: int, events: int, probes: bool
) -> dict[str, Any]:
    env = {**os.environ, "SYNCWATCH_DATA_DIR": str(workdir / "data")}
    env.pop("SYNCWATCH_CONFIG", None)
    # By default an ingest-only replica: the probe runner (correlation) is off, so the figures are
    # those of the ingest path. --probes keeps it on, as a single-process deployment runs it.
    env["SYNCWATCH_PROBES__ENABLED"] = "true" if probes else "false"
    if db == "sqlite":
        url = f"sqlite:///{workdir / 'data' / 'syncwatch.db'}"
    else:
        url = _sa_url(_pg_recreate("sw_bench"))
    env["SYNCWATCH_DATABASE_URL"] = url
    server = Server(env, workdir / f"server-{db}.log")
    key = server.create_key()
    pid = server.start()
    monitor = Monitor(server_pid=pid, watch_postgres=db == "postgresql")
    try:
        monitor.start()
        sender = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "send.py"),
                "--url",
                server.url,
                "--bodies",
                str(bodies_dir),
                "--connections",
                str(connections),
            ],
            env={**os.environ, "SYNCWATCH_BENCH_KEY": key},
            stdout=subprocess.PIPE,
        )
        monitor.watch_client(sender.pid)
        output, _ = sender.communicate()
        monitor.stop()
    finally:
        server.stop()
    sent = json.loads(output)
    if sent["errors"]:
        raise RuntimeError(f"the sender failed: {sent['errors'][:3]}")
    database = Database.from_url(url)
    with database.read() as connection:
        stored = count_events(connection)
    database.dispose()
    usage = monitor.result(client_cpu=sent["cpu_user_seconds"] + sent["cpu_system_seconds"])
    return {
        "connections": connections,
        "probes_in_server": probes,
        "events": events,
        "stored": stored,
        "accepted": sent["accepted"],
        "wall_seconds": sent["wall_seconds"],
        "events_per_second": sent["events_per_second"],
        "latency_ms": sent["latency_ms"],
        "requests": sent["requests"],
        **usage,
    }


def run_database(
    db: str, args: argparse.Namespace, bodies_dir: Path, micro: dict[str, Any]
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"sw-bench-{db}-"))
    try:
        print(f"[{db}] raw bulk insert of {args.events} rows ...", flush=True)
        raw = raw_baseline(db, bodies_dir, workdir)
        print(f"[{db}]   {raw['rows_per_second']:,.0f} rows/s", flush=True)
        print(f"[{db}] end to end, {args.connections} connection(s) ...", flush=True)
        e2e = end_to_end(db, bodies_dir, workdir, args.connections, args.events, args.probes)
        print(f"[{db}]   {e2e['events_per_second']:,.0f} events/s", flush=True)
        if e2e["stored"] != args.events:
            raise RuntimeError(f"{e2e['stored']} events stored, {args.events} sent")
    finally:
        if db == "postgresql":
            _pg_admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", "sw_bench")
            _pg_admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", "sw_bench_raw")
        if args.keep:
            print(f"[{db}] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    ratio = e2e["events_per_second"] / raw["rows_per_second"]
    return {
        "database": db,
        "events": args.events,
        "batch": 1000,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_describe(),
        "end_to_end": e2e,
        "raw_insert": raw,
        "ratio_to_raw": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "parse_validate": micro,
    }


def _git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + ("+dirty" if dirty.strip() else "")


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'':32}" + "".join(f"{r['database']:>16}" for r in results),
    ]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:32}" + "".join(f"{v:>16}" for v in values))

    row("end to end, events/s", [f"{r['end_to_end']['events_per_second']:,.0f}" for r in results])
    row("raw insert, rows/s", [f"{r['raw_insert']['rows_per_second']:,.0f}" for r in results])
    row("ratio (target >= 0.5)", [f"{r['ratio_to_raw']:.2f}" for r in results])
    row("request p50 / p99, ms", [_latency(r) for r in results])
    for party in ("server", "client", "postgres", "other", "idle", "iowait"):
        row(
            f"cores used: {party}",
            [
                f"{r['end_to_end']['cpu'][party]['cores']:.2f}"
                if party in r["end_to_end"]["cpu"]
                else "in server"
                for r in results
            ],
        )
    row("server RSS peak, MB", [f"{r['end_to_end']['server_rss']['peak_mb']:.0f}" for r in results])
    row(
        "server RSS flat",
        [
            f"{'yes' if r['end_to_end']['server_rss']['flat'] else 'NO'} "
            f"({r['end_to_end']['server_rss']['steady_min_mb']:.0f}-"
            f"{r['end_to_end']['server_rss']['steady_max_mb']:.0f})"
            for r in results
        ],
    )
    row(
        "load avg 1m start/end",
        [
            f"{r['end_to_end']['load_average_1m']['start']:.2f}/"
            f"{r['end_to_end']['load_average_1m']['end']:.2f}"
            for r in results
        ],
    )
    micro = results[0]["parse_validate"]["ms_per_batch"]
    lines.append("")
    lines.append(
        "parse + validate per 1,000 events (ms, one core): "
        + ", ".join(f"{name} {value:.2f}" for name, value in micro.items())
    )
    return "\n".join(lines)


def _latency(result: dict[str, Any]) -> str:
    latency = result["end_to_end"]["latency_ms"]
    return f"{latency['p50']:.0f} / {latency['p99']:.0f}"


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Sleep until the 1-minute load average is below ``threshold`` (or ``max_wait`` passed)."""
    deadline = time.monotonic() + max_wait
    load = load_average()
    while load >= threshold and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {threshold}: waiting", flush=True)
        time.sleep(20)
        load = load_average()
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--connections", type=int, default=2, choices=(1, 2, 3, 4))
    parser.add_argument(
        "--bodies-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sw-bench-bodies",
        help="where the pre-serialized bodies are cached (default: %(default)s)",
    )
    parser.add_argument("--quiet-load", type=float, default=0.0, help="wait for load below this")
    parser.add_argument("--quiet-wait", type=float, default=1200.0, help="seconds to wait at most")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files and logs")
    parser.add_argument(
        "--probes", action="store_true", help="keep the probe runner on in the server (default off)"
    )
    parser.add_argument(
        "--tag",
        default="",
        help="results go to ingest-<db>-<tag>.json (e.g. 'before', run with PYTHONPATH=<checkout>)",
    )
    args = parser.parse_args()

    bodies_dir = args.bodies_dir / f"{args.events}"
    print(f"request bodies: {bodies_dir}", flush=True)
    index = write_bodies(bodies_dir, events=args.events, batch=1000)
    size = sum(length for _, length, _ in index["bodies"])
    print(
        f"  {args.events:,} events, {len(index['bodies'])} bodies, {size / 1e6:.0f} MB", flush=True
    )

    if args.quiet_load:
        load = wait_for_quiet(args.quiet_load, args.quiet_wait)
        print(f"load average {load:.2f}", flush=True)
    micro_bodies = [body for _, body in zip(range(20), read_bodies(bodies_dir), strict=False)]
    micro = microbench(micro_bodies)
    micro["loadavg_1m_before"] = load_average()
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    machine = _machine()
    results = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    for db in databases:
        result = run_database(db, args, bodies_dir, micro)
        result["machine"] = machine
        result["bodies"] = {"count": len(index["bodies"]), "bytes": size, "types": index["types"]}
        result["code"] = {"core": str(Path(core.__file__).parent), "tag": args.tag}
        name = f"ingest-{db}-{args.tag}.json" if args.tag else f"ingest-{db}.json"
        (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
        results.append(result)
    print()
    print(_table(results))


if __name__ == "__main__":
    main()
