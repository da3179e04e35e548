"""The probe benchmark: a store of N realistic events (generate.py), then the probe runner on it.

    .venv/bin/python bench/probe/run.py --events 1000000 --db both

For each database (a fresh SQLite file, or a fresh PostgreSQL database ``sw_bench_probe`` on
127.0.0.1:5432, dropped afterwards), in a process of its own:

0. load: the first N events in arrival order, validated and stored with ``store_events`` in
   batches of 5,000 (not a measured figure); ``now`` = the arrival of the last one;
1. from scratch: ``run_until_idle(now=now, batch_events=B)`` over the whole store, for each B
   (the probe tables emptied and ``resolved_correlation_id`` cleared between runs);
2. with that history in place, the next 1,000 events in arrival order (new contracts and stage
   events of existing flows), stored in one batch, then one ``run_cycle`` timed; repeated on the
   following 1,000-event slices. Before each slice a cycle with nothing new sweeps what fell due
   between the two instants, so that the timed cycle is the events' work (the sweep is reported
   in 4);
3. a cycle with nothing new and nothing due: the median of 20;
4. deadline sweeps: ``now`` advanced by H hours, one cycle with nothing new, timed with the
   number of flows that fell due.

Memory: the peak resident set size of each phase (Linux VmHWM, reset between phases through
``/proc/self/clear_refs``) and of the whole process (``ru_maxrss``). Prints a table and writes
``bench/results/probe-<db>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import generate  # noqa: E402

from core.db import Database  # noqa: E402
from core.events import validate_event  # noqa: E402
from core.eventstore import store_events  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.tables import events, findings, flows, probe_state  # noqa: E402
from probes.flowtypes import DEFAULT_FLOW_TYPES  # noqa: E402
from probes.runner import CycleReport, run_cycle, run_until_idle  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_SERVER = os.environ.get("SYNCWATCH_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_DATABASE = "sw_bench_probe"
LOAD_BATCH = 5000
_HOUR = timedelta(hours=1)
TARGETS = {
    "from_scratch_events_per_s": 20_000,
    "cycle_1000_s": 0.5,
    "idle_cycle_s": 0.05,
}


# --- memory -------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


#: The process's peak RSS so far in MB: resetting VmHWM per phase also resets ``ru_maxrss``.
_process_peak = [0.0]


def _peak_mb() -> float:
    peak = max(_status_kib("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    _process_peak[0] = max(_process_peak[0], peak)
    return round(peak, 1)


@contextlib.contextmanager
def phase_memory(into: dict[str, Any]) -> Iterator[None]:
    _peak_mb()
    _reset_peak()
    into["rss_before_mb"] = round(_status_kib("VmRSS") / 1024, 1)
    yield
    into["peak_rss_mb"] = _peak_mb()
    into["rss_after_mb"] = round(_status_kib("VmRSS") / 1024, 1)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# --- the store ------------------------------------------------------------------------------


def _pg_admin(statement: str) -> None:
    admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(statement)
    admin.dispose()


def open_database(kind: str, workdir: Path) -> Database:
    if kind == "sqlite":
        path = workdir / "probe-bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        database = Database.from_url(f"sqlite:///{path}")
    else:
        _pg_admin(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        _pg_admin(f'CREATE DATABASE "{PG_DATABASE}"')
        database = Database.from_url(f"{PG_SERVER}/{PG_DATABASE}")
    upgrade(database)
    return database


def close_database(kind: str, database: Database, workdir: Path, keep: bool) -> None:
    database.dispose()
    if keep:
        return
    if kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{workdir / 'probe-bench.db'}{suffix}").unlink(missing_ok=True)
    else:
        _pg_admin(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


def _instant(arrival_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=arrival_us)


def store(database: Database, lines: Iterable[tuple[int, bytes]]) -> datetime:
    """Validate and store these events (one transaction per 5,000, read as they are stored);
    return the arrival of the last one."""
    last = None
    source = iter(lines)
    while chunk := list(islice(source, LOAD_BATCH)):
        batch = [validate_event(orjson.loads(body)) for _, body in chunk]
        last = chunk[-1][0]
        with database.write() as connection:
            outcome = store_events(connection, batch, received_at=_instant(last))
        if outcome.duplicates:
            raise SystemExit(f"unexpected duplicates in the generated events: {outcome.duplicates}")
    if last is None:
        raise SystemExit("no events to store")
    return _instant(last)


class AutoAnalyze:
    """What PostgreSQL's autovacuum daemon does with its default settings, for a server that runs
    with ``autovacuum = off`` (as the shared test server does): every ``naptime`` seconds, VACUUM a
    table with more than 50 + 20 % of its rows dead and ANALYZE one with more than 50 + 10 % of
    its rows changed since the last analysis. Without it the planner never learns the statistics
    of ``flows`` and ``findings``, which the probes fill from empty: a lookup of 500 correlation
    IDs then looks like most of the table and runs as a sequential scan."""

    def __init__(self, database: Database, naptime: float = 60.0) -> None:
        self.database = database
        self.naptime = naptime
        self.runs: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> AutoAnalyze:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        engine = self.database.engine.execution_options(isolation_level="AUTOCOMMIT")
        while not self._stop.wait(self.naptime):
            with engine.connect() as connection:
                rows = connection.exec_driver_sql(
                    "SELECT s.relname, s.n_dead_tup, s.n_mod_since_analyze, "
                    "greatest(c.reltuples, 0) FROM pg_stat_user_tables s "
                    "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = 'public'"
                ).all()
                for name, dead, modified, tuples in rows:
                    if dead > 50 + 0.2 * tuples:
                        action = "VACUUM ANALYZE"
                    elif modified > 50 + 0.1 * tuples:
                        action = "ANALYZE"
                    else:
                        continue
                    started = time.perf_counter()
                    run: dict[str, Any] = {"table": name, "action": action}
                    try:
                        connection.exec_driver_sql(f'{action} "{name}"')
                    except sa.exc.DBAPIError as error:  # reported, never fatal to the benchmark
                        run["error"] = str(error.orig)[:200]
                    run["seconds"] = round(time.perf_counter() - started, 2)
                    self.runs.append(run)


def autovacuum_off(database: Database) -> bool:
    if database.dialect != "postgresql":
        return False
    with database.read() as connection:
        return connection.exec_driver_sql("SHOW autovacuum").scalar() == "off"


def maintain(database: Database) -> None:
    """What a store that has been running would have had: fresh planner statistics."""
    if database.dialect == "postgresql":
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with database.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def reset_probes(database: Database) -> None:
    with database.write() as connection:
        connection.execute(findings.delete())
        connection.execute(flows.delete())
        connection.execute(probe_state.delete())
        connection.execute(events.update().values(resolved_correlation_id=None))
    maintain(database)


def census(database: Database) -> dict[str, Any]:
    with database.read() as connection:
        by_type = dict(
            connection.execute(
                sa.select(flows.c.flow_type, sa.func.count()).group_by(flows.c.flow_type)
            ).all()
        )
        by_kind = dict(
            connection.execute(
                sa.select(findings.c.kind, sa.func.count())
                .where(findings.c.resolved_at.is_(None))
                .group_by(findings.c.kind)
            ).all()
        )
        counts = connection.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.distinct(events.c.resolved_correlation_id)),
                sa.func.count().filter(events.c.correlation_id.is_(None)),
                sa.func.count().filter(events.c.resolved_correlation_id.is_(None)),
            ).select_from(events)
        ).one()
    return {
        "events": counts[0],
        "correlation_ids": counts[1],
        "events_without_correlationid": counts[2],
        "events_uncorrelated": counts[3],
        "flows": sum(by_type.values()),
        "flows_by_type": by_type,
        "open_findings_by_kind": by_kind,
    }


# --- measuring ------------------------------------------------------------------------------


def profiled(
    target: Path | None, name: str, work: Callable[[], Any], top: int = 25
) -> tuple[Any, float]:
    """Run ``work``; with a profile directory, under cProfile (stats written and summarised)."""
    if target is None:
        started = time.perf_counter()
        result = work()
        return result, time.perf_counter() - started
    profile = cProfile.Profile()
    started = time.perf_counter()
    result = profile.runcall(work)
    seconds = time.perf_counter() - started
    target.mkdir(parents=True, exist_ok=True)
    profile.dump_stats(target / f"{name}.prof")
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    (target / f"{name}.txt").write_text(text.getvalue())
    print(f"  profile of {name}: {target / name}.txt")
    return result, seconds


def from_scratch(
    database: Database, now: datetime, batch: int, profile: Path | None
) -> dict[str, Any]:
    record: dict[str, Any] = {"batch_events": batch}
    cpu = time.process_time()
    with phase_memory(record):
        reports, seconds = profiled(
            profile,
            f"scratch-{database.dialect}-{batch}",
            lambda: run_until_idle(
                database, DEFAULT_FLOW_TYPES, now=now, batch_events=batch, max_cycles=1_000_000
            ),
        )
    cpu = time.process_time() - cpu
    total = sum(r.events for r in reports)
    record.update(
        seconds=round(seconds, 2),
        cpu_seconds=round(cpu, 2),  # of this process (not of the PostgreSQL server)
        events=total,
        cycles=len(reports),
        events_per_s=round(total / seconds),
        correlations_evaluated=sum(r.correlations for r in reports),
        slowest_cycle_s=round(max(r.seconds for r in reports), 3),
    )
    return record


def _report(report: CycleReport) -> dict[str, Any]:
    return {
        "events": report.events,
        "correlations": report.correlations,
        "swept": report.swept,
        "seconds": round(report.seconds, 4),
    }


def drain(database: Database, now: datetime) -> list[CycleReport]:
    """Cycles with nothing new until nothing is due at ``now``."""
    reports = []
    while True:
        report = run_cycle(database, DEFAULT_FLOW_TYPES, now=now)
        reports.append(report)
        if report.swept == 0 and not report.more:
            return reports


def new_event_cycles(
    database: Database,
    lines: Iterator[tuple[int, bytes]],
    now: datetime,
    slices: int,
    size: int,
    profile: Path | None,
) -> tuple[dict[str, Any], datetime]:
    record: dict[str, Any] = {"slice_events": size, "cycles": [], "sweeps_before": []}
    with phase_memory(record):
        for number in range(slices):
            chunk = list(islice(lines, size))
            if len(chunk) < size:
                break
            at = _instant(chunk[-1][0])
            # what fell due between the previous instant and this one, swept first
            record["sweeps_before"].append(
                [_report(r) for r in drain(database, at) if r.swept or r.events]
            )
            now = store(database, chunk)
            cpu = time.process_time()
            report, _ = profiled(
                profile if number == 0 else None,
                f"cycle-{database.dialect}-{size}",
                partial(run_cycle, database, DEFAULT_FLOW_TYPES, now=now),
            )
            record["cycles"].append(
                {**_report(report), "cpu_seconds": round(time.process_time() - cpu, 4)}
            )
    times = [c["seconds"] for c in record["cycles"]]
    record.update(
        median_s=round(statistics.median(times), 4),
        max_s=round(max(times), 4),
    )
    return record, now


def idle_cycles(database: Database, now: datetime, count: int = 20) -> dict[str, Any]:
    drain(database, now)
    record: dict[str, Any] = {}
    with phase_memory(record):
        reports = [run_cycle(database, DEFAULT_FLOW_TYPES, now=now) for _ in range(count)]
    if any(r.events or r.swept for r in reports):
        raise SystemExit("an idle cycle found work")
    times = sorted(r.seconds for r in reports)
    record.update(
        cycles=count,
        median_s=round(statistics.median(times), 4),
        min_s=round(times[0], 4),
        max_s=round(times[-1], 4),
    )
    return record


def _instant_when_due(database: Database, now: datetime, count: int) -> tuple[datetime, int]:
    """The earliest instant at which ``count`` more flows are due, or, when fewer have a deadline
    ahead, the instant at which all of them are; and how many that is."""
    with database.read() as connection:
        pending = (
            sa.select(flows.c.next_check_at)
            .where(flows.c.next_check_at >= now)
            .order_by(flows.c.next_check_at)
            .limit(count)
            .subquery()
        )
        last, number = connection.execute(
            sa.select(sa.func.max(pending.c.next_check_at), sa.func.count())
        ).one()
    if isinstance(last, str):  # max() over a subquery loses the column type on SQLite
        last = datetime.fromisoformat(last).replace(tzinfo=UTC)
    return (now if last is None else last) + timedelta(microseconds=1), number


def deadline_sweeps(database: Database, now: datetime, counts: list[int]) -> list[dict[str, Any]]:
    """Advance ``now`` until N more flows fall due (at most all those with a deadline ahead),
    then time the cycles that sweep them."""
    result = []
    for count in counts:
        at, due = _instant_when_due(database, now, count)
        if due == 0:
            break
        record: dict[str, Any] = {"due": due, "advance_hours": round((at - now) / _HOUR, 1)}
        now = at
        cpu = time.process_time()
        with phase_memory(record):
            reports = drain(database, now)
        working = [r for r in reports if r.swept]
        record.update(
            swept=sum(r.swept for r in reports),
            cycles=len(working),
            seconds=round(sum(r.seconds for r in working), 4),
            cpu_seconds=round(time.process_time() - cpu, 4),
        )
        swept = record["swept"]
        record["ms_per_flow"] = round(1000 * record["seconds"] / swept, 3) if swept else None
        result.append(record)
    return result


# --- one database ---------------------------------------------------------------------------


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    kind = args.db
    workdir = args.workdir
    source = generate.cached(workdir, events=args.events, seed=args.seed)
    result: dict[str, Any] = {
        "database": kind,
        "events": args.events,
        "seed": args.seed,
        "generator_version": generate.GENERATOR_VERSION,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": load_average(),
        "targets": TARGETS,
    }
    print(f"[{kind}] {args.events} events from {source}", flush=True)
    database = open_database(kind, workdir)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(close_database, kind, database, workdir, args.keep)
        lines = generate.read(source)
        load: dict[str, Any] = {}
        with phase_memory(load):
            started = time.perf_counter()
            now = store(database, islice(lines, args.events))
            maintain(database)
            load["seconds"] = round(time.perf_counter() - started, 1)
        load["now"] = now.isoformat()
        result["load"] = load
        print(f"[{kind}] loaded in {load['seconds']} s; now = {now.isoformat()}", flush=True)
        autovacuum = AutoAnalyze(database, args.naptime) if autovacuum_off(database) else None
        if autovacuum is not None and args.naptime > 0:
            print(f"[{kind}] autovacuum is off on this server: emulated every {args.naptime} s")
            cleanup.enter_context(autovacuum)
            result["autovacuum_emulated"] = autovacuum.runs

        runs = []
        for number, batch in enumerate(args.batches):
            if number:
                reset_probes(database)
            record = from_scratch(
                database, now, batch, args.profile if batch == args.profile_batch else None
            )
            record["census"] = census(database)
            print(
                f"[{kind}] from scratch, batch {batch}: {record['seconds']} s, "
                f"{record['events_per_s']} events/s, {record['cycles']} cycles, "
                f"peak RSS {record['peak_rss_mb']} MB",
                flush=True,
            )
            runs.append(record)
        result["from_scratch"] = runs
        censuses = {json.dumps(r.pop("census"), sort_keys=True) for r in runs}
        if len(censuses) != 1:
            raise SystemExit("the from-scratch runs disagree on the flows and findings")
        result["store"] = json.loads(censuses.pop())

        cycles, now = new_event_cycles(database, lines, now, args.slices, args.new, args.profile)
        result["new_events"] = cycles
        print(
            f"[{kind}] {args.new}-event cycles: median {cycles['median_s']} s, "
            f"max {cycles['max_s']} s",
            flush=True,
        )
        result["idle"] = idle_cycles(database, now)
        print(f"[{kind}] idle cycle: median {result['idle']['median_s']} s", flush=True)
        result["sweeps"] = deadline_sweeps(database, now, args.sweeps)
        for sweep in result["sweeps"]:
            print(
                f"[{kind}] now + {sweep['advance_hours']} h: {sweep['swept']} flows due, "
                f"{sweep['seconds']} s in {sweep['cycles']} cycles",
                flush=True,
            )
    _peak_mb()
    result["peak_rss_mb_process"] = round(_process_peak[0], 1)
    result["load_average_end"] = load_average()
    return result


# --- output ---------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    for run in result["from_scratch"]:
        rows.append(
            (
                f"from scratch, batch_events={run['batch_events']}",
                f"{run['events_per_s']:,} events/s ({run['seconds']} s, {run['cycles']} cycles, "
                f"peak {run['peak_rss_mb']} MB)",
                f">= 20,000 events/s: "
                f"{_mark(run['events_per_s'] >= TARGETS['from_scratch_events_per_s'])}",
            )
        )
    new = result["new_events"]
    swept_between = sum(r["swept"] for sweeps in new["sweeps_before"] for r in sweeps)
    rows.append(
        (
            f"cycle over {new['slice_events']:,} new events",
            f"median {new['median_s']} s, max {new['max_s']} s ({len(new['cycles'])} slices, "
            f"peak {new['peak_rss_mb']} MB; {swept_between} flows swept between slices)",
            f"median < 0.5 s: {_mark(new['median_s'] < TARGETS['cycle_1000_s'])}",
        )
    )
    idle = result["idle"]
    rows.append(
        (
            "cycle with nothing new, nothing due",
            f"median {idle['median_s'] * 1000:.1f} ms (min {idle['min_s'] * 1000:.1f}, "
            f"max {idle['max_s'] * 1000:.1f})",
            f"median < 50 ms: {_mark(idle['median_s'] < TARGETS['idle_cycle_s'])}",
        )
    )
    for sweep in result["sweeps"]:
        rows.append(
            (
                f"deadline sweep, {sweep['due']:,} flows due (now + {sweep['advance_hours']} h)",
                f"{sweep['swept']} flows due: {sweep['seconds']} s in {sweep['cycles']} cycle(s)"
                + (f", {sweep['ms_per_flow']} ms/flow" if sweep["ms_per_flow"] else ""),
                "",
            )
        )
    rows.append(("peak RSS of the process", f"{result['peak_rss_mb_process']} MB", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{result['database']}: {result['events']:,} events, "
        f"{result['store']['correlation_ids']:,} correlation IDs, "
        f"{result['store']['flows']:,} flows; load average "
        f"{result['load_average_start']} -> {result['load_average_end']}"
    ]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--batches", default="5000,1000,20000", help="batch_events from scratch")
    parser.add_argument("--new", type=int, default=1000, help="events per new-event cycle")
    parser.add_argument("--slices", type=int, default=5, help="new-event cycles")
    parser.add_argument("--sweeps", default="100,1000,5000", help="flows falling due per sweep")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sw-probe-bench"))
    parser.add_argument("--profile", type=Path, help="write cProfile stats into this directory")
    parser.add_argument("--profile-batch", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--naptime",
        type=float,
        default=60.0,
        help="PostgreSQL with autovacuum off: emulate it every N s (0: do not)",
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where probe-DB.json is written"
    )
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.sweeps = [int(n) for n in args.sweeps.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)

    if args.db == "both":
        generate.cached(args.workdir, events=args.events, seed=args.seed)
        for kind in ("sqlite", "postgresql"):
            # one process per database: its peak RSS is its own
            command = [sys.executable, __file__, *sys.argv[1:]]
            command[command.index("--db") + 1] = kind
            subprocess.run(command, check=True)
        return
    result = run_one(args)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"probe-{args.db}.json"
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table(result))
    print(f"written {out}")


if __name__ == "__main__":
    main()
