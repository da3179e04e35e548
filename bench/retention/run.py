"""The retention benchmark: what the daily run costs on a store of about 100,000 flows over a year
(the KPI benchmark's data set, bench/kpis/dataset.py), with ``closed_flows: 90d`` as of the data
set's as_of, so that the closed flows of its first nine months go.

    .venv/bin/python bench/retention/run.py --db sqlite [--flows 100000] [--batch 500]
    .venv/bin/python bench/retention/run.py --db postgresql

1. the data set: reused when bench/kpis built it, else built here; then copied (the SQLite file;
   on PostgreSQL ``CREATE DATABASE ... TEMPLATE``), so the KPI data set stays whole;
2. timed in-process on the copy: ``prune`` dry-run (the counting ``syncwatch db prune --dry-run``
   does), then for real (what the daily job does), each batch of ``--batch`` correlation IDs its own
   transaction; then one probe cycle, and ``/v1/kpis`` over 30 days as of as_of, which must be
   the same answer as before the prune; rows per table before and after, the database's size, the
   process's peak RSS.

There is no target in an issue; the daily job has hours, and each batch holds the write lock only
briefly. Prints a table and writes ``bench/results/retention-<db>.json``; figures are reported in
docs/benchmarks.md, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sqlite3
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kpis"))

import dataset  # noqa: E402  (puts the project root on the path)

from core.db import Database  # noqa: E402
from core.retention import prune  # noqa: E402
from core.settings import RetentionSettings  # noqa: E402
from kpis.service import kpis, make_query  # noqa: E402
from probes.flowtypes import configured_flow_types  # noqa: E402
from probes.runner import run_cycle  # noqa: E402

RESULTS = dataset.ROOT / "bench" / "results"
TABLES = ("events", "flows", "flow_stages", "flow_outcomes", "stuck_spans", "findings", "replays")


def working_copy(kind: str, flows: int) -> str:
    """A copy of the KPI data set to delete from; its URL."""
    if kind == "sqlite":
        source = dataset.CACHE / f"kpis-{flows}.db"
        with sqlite3.connect(source) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        target = dataset.CACHE / f"retention-{flows}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    name = f"bench_retention_{flows}"
    dataset.probe_bench._pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    dataset.probe_bench._pg_admin(
        f'CREATE DATABASE "{name}" TEMPLATE "{dataset.pg_database_name(flows)}"'
    )
    return f"{dataset.PG_SERVER}/{name}"


def rows(database: Database) -> dict[str, int]:
    with database.engine.connect() as connection:
        return {
            table: int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in TABLES
        }


def size_mb(database: Database, kind: str, url: str) -> float:
    if kind == "sqlite":
        return Path(url.removeprefix("sqlite:///")).stat().st_size / 2**20
    with database.engine.connect() as connection:
        size = connection.execute(sa.text("SELECT pg_database_size(current_database())"))
        return int(size.scalar_one()) / 2**20


def timed(action: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def run(kind: str, flows: int, batch: int) -> dict[str, Any]:
    dataset.reusable(kind, flows) or dataset.build(kind, flows)
    url = working_copy(kind, flows)
    database = Database.from_url(url)
    settings = RetentionSettings(closed_flows="90d", batch_correlations=batch)
    now = dataset.AS_OF
    flow_types = configured_flow_types(None)
    try:
        query = make_query(as_of=now, window="30d")
        before, size_before = rows(database), size_mb(database, kind, url)
        kpis_before = kpis(database, flow_types, query)
        dry_s, dry = timed(lambda: prune(database, settings, now, dry_run=True))
        real_s, pruned = timed(lambda: prune(database, settings, now))
        after, size_after = rows(database), size_mb(database, kind, url)
        cycle_s, _ = timed(lambda: run_cycle(database, flow_types, now=now + timedelta(seconds=1)))
        kpis_s, kpis_after = timed(lambda: kpis(database, flow_types, query))
    finally:
        database.dispose()
    batches = -(-pruned.correlations // batch)
    return {
        "db": kind,
        "flows": flows,
        "as_of": now.isoformat(),
        "closed_flows": "90d",
        "batch_correlations": batch,
        "dry_run": {"seconds": round(dry_s, 2), **dry.as_dict()},
        "prune": {"seconds": round(real_s, 2), "batches": batches, **pruned.as_dict()},
        "seconds_per_batch": round(real_s / max(batches, 1), 3),
        "rows_before": before,
        "rows_after": after,
        "size_mb_before": round(size_before, 1),
        "size_mb_after": round(size_after, 1),
        "probe_cycle_after_s": round(cycle_s, 2),
        "kpis_after_s": round(kpis_s, 2),
        "kpis_30d_unchanged": kpis_before == kpis_after,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    for kind in kinds:
        result = run(kind, args.flows, args.batch)
        print(json.dumps(result, indent=1))
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"retention-{kind}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
