"""The KPI benchmark's data set: about N flows (100,000 by default) over the year before ``AS_OF``,
loaded once into a database and the probes run to idle as of ``AS_OF``.

The events come from ``bench/probe/generate.py`` with the mix below (``KPI_MIX``): one deal per
correlation ID, a contract (``contract_onboarding``) with one milestone (``milestone_billing``)
and, for half of them, one or more amendments (``amendment_propagation``), which gives about
40 % onboarding, 25 % amendment and 35 % milestone flows; stages usually in time, 4-5 % late, 2-3 %
never (stuck for good), 1.5 % terminated, integration failures and dead letters, duplicate projects,
term mismatches, contracts without a legal entity, 2 % of the middleware events without a
correlation ID (uncorrelated), six legal entities, four regions, four service lines, EUR, USD and
GBP. Deals start at a steady rate from ``generate.START``; the store is every event that arrived
by ``AS_OF`` (a year later), in arrival order.

SQLite: a file in the cache directory; PostgreSQL: the database ``bench_kpis`` (created when
missing). A JSON marker written after a complete load lets later runs reuse the database; it is
rebuilt when the marker does not match (other size, seed, mix, migrations) or with ``rebuild``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import takewhile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROBE_BENCH = ROOT / "bench" / "probe"
sys.path[:0] = [str(PROBE_BENCH), str(ROOT)]

import generate  # noqa: E402

from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.tables import events, findings, flows  # noqa: E402
from probes.flowstore import SYSTEM_ACTOR  # noqa: E402
from probes.flowtypes import DEFAULT_FLOW_TYPES  # noqa: E402
from probes.runner import run_until_idle  # noqa: E402


def _probe_bench() -> Any:
    """bench/probe/run.py (its store, census, PostgreSQL helpers), under a name of its own."""
    spec = importlib.util.spec_from_file_location("probe_bench_run", PROBE_BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


probe_bench = _probe_bench()

#: The instant the store is as of: a year after the first deal; the server's fixed clock.
AS_OF = generate.START + generate.HISTORY
SEED = 20261203
KPI_MIX = generate.Mix(
    name="kpis",
    milestones=(1,),
    amendment=0.5,
    more_amendments=0.35,
    currencies=("EUR", "USD", "GBP"),
    uncorrelated=0.02,
    events_per_deal=10.0,  # measured on this mix (all of a deal's events)
)
#: Flows per deal that exist by AS_OF with this mix (measured: 1 + 0.637 amendments + 0.883
#: milestones; the deals of the last months have not reached their milestone or amendment yet).
FLOWS_PER_DEAL = 2.52
CACHE = Path(os.environ.get("SYNCWATCH_BENCH_KPIS_DIR", "/tmp/syncwatch-bench-kpis"))
PG_SERVER = probe_bench.PG_SERVER
LOAD_BATCH = probe_bench.LOAD_BATCH


def deals_per_year(target_flows: int) -> int:
    return round(target_flows / FLOWS_PER_DEAL)


def _generator_events(target_flows: int) -> int:
    """The ``events`` argument of the generator that starts ``deals_per_year`` deals a year."""
    return round(deals_per_year(target_flows) * KPI_MIX.events_per_deal)


def pg_database_name(target_flows: int) -> str:
    return "bench_kpis" if target_flows == 100_000 else f"bench_kpis_{target_flows}"


def database_url(kind: str, target_flows: int) -> str:
    if kind == "sqlite":
        return f"sqlite:///{CACHE / f'kpis-{target_flows}.db'}"
    return f"{PG_SERVER}/{pg_database_name(target_flows)}"


def marker_path(kind: str, target_flows: int) -> Path:
    return CACHE / f"kpis-{kind}-{target_flows}.json"


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def schema_fingerprint() -> str:
    """The migrations: a database loaded under other migrations is rebuilt."""
    return _digest(list((ROOT / "core" / "migrations" / "versions").glob("*.py")))


def probes_fingerprint() -> str:
    """The probe code that filled flows and findings: when it changed since the load, the run
    warns (the figures may no longer be those of today's code; --rebuild)."""
    return _digest(list((ROOT / "probes").glob("*.py")))


def identity(target_flows: int) -> dict[str, Any]:
    """What the marker must match for the database to be reused (as read back from JSON)."""
    result = {
        "target_flows": target_flows,
        "seed": SEED,
        "generator_version": generate.GENERATOR_VERSION,
        "mix": asdict(KPI_MIX),
        "as_of": AS_OF.isoformat(),
        "schema": schema_fingerprint(),
    }
    reread: dict[str, Any] = json.loads(json.dumps(result))
    return reread


# --- the database ---------------------------------------------------------------------------


def _pg_exists(name: str) -> bool:
    admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return bool(
                connection.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                ).scalar()
            )
    finally:
        admin.dispose()


def _fresh_database(kind: str, target_flows: int) -> Database:
    if kind == "sqlite":
        path = CACHE / f"kpis-{target_flows}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        name = pg_database_name(target_flows)
        probe_bench._pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        probe_bench._pg_admin(f'CREATE DATABASE "{name}"')
    database = Database.from_url(database_url(kind, target_flows))
    upgrade(database)
    return database


def _stored_events(kind: str, target_flows: int) -> int | None:
    """The number of events in the database, or None when there is no database."""
    if kind == "sqlite":
        if not (CACHE / f"kpis-{target_flows}.db").exists():
            return None
    elif not _pg_exists(pg_database_name(target_flows)):
        return None
    database = Database.from_url(database_url(kind, target_flows))
    try:
        with database.read() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(events)).scalar())
    except sa.exc.DBAPIError:
        return None
    finally:
        database.dispose()


def reusable(kind: str, target_flows: int) -> dict[str, Any] | None:
    """The marker of a complete load that matches today's identity, else None."""
    path = marker_path(kind, target_flows)
    if not path.exists():
        return None
    marker = json.loads(path.read_text())
    expected = identity(target_flows)
    found = marker.get("identity", {})
    if found != expected:
        differ = sorted(
            k for k in expected.keys() | found.keys() if found.get(k) != expected.get(k)
        )
        print(f"[{kind}] the loaded database differs in {', '.join(differ)} ({path}): rebuilding")
        return None
    if _stored_events(kind, target_flows) != marker["shape"]["events"]:
        print(f"[{kind}] the database is missing or incomplete: rebuilding")
        return None
    return marker


# --- the shape of the store -----------------------------------------------------------------


def shape(database: Database) -> dict[str, Any]:
    """Events, flows by type and by state as of AS_OF, findings by kind."""
    result = probe_bench.census(database)
    open_stuck = sa.select(findings.c.flow_id).where(
        findings.c.kind == "stuck", findings.c.resolved_at.is_(None)
    )
    state = sa.case(
        (
            sa.and_(flows.c.completed_at.is_not(None), flows.c.completed_at <= flows.c.deadline_at),
            "complete_in_time",
        ),
        (flows.c.completed_at.is_not(None), "complete_late"),
        (flows.c.cancelled_at.is_not(None), "cancelled"),
        (flows.c.flow_id.in_(open_stuck), "stuck"),
        else_="open_not_stuck",
    ).label("state")
    with database.read() as connection:
        by_state: dict[str, dict[str, int]] = {}
        for flow_type, name, count in connection.execute(
            sa.select(flows.c.flow_type, state, sa.func.count()).group_by(flows.c.flow_type, state)
        ):
            by_state.setdefault(flow_type, {})[name] = count
        recovered = connection.execute(
            sa.select(sa.func.count(sa.distinct(findings.c.flow_id))).where(
                findings.c.kind == "stuck", findings.c.resolved_by == SYSTEM_ACTOR
            )
        ).scalar()
        by_kind = {
            f"{kind} ({'open' if is_open else 'resolved'})": count
            for kind, is_open, count in connection.execute(
                sa.select(
                    findings.c.kind,
                    findings.c.resolved_at.is_(None).label("open"),
                    sa.func.count(),
                ).group_by(findings.c.kind, findings.c.resolved_at.is_(None))
            )
        }
        event_types = dict(
            connection.execute(
                sa.select(events.c.type, sa.func.count()).group_by(events.c.type)
            ).all()
        )
    result["flows_by_state"] = by_state
    result["flows_stuck_for_a_while"] = recovered  # stuck findings resolved by the events
    result["findings_by_kind"] = dict(sorted(by_kind.items()))
    result["events_by_type"] = dict(sorted(event_types.items()))
    return result


# --- loading --------------------------------------------------------------------------------


def build(kind: str, target_flows: int) -> dict[str, Any]:
    """Generate (cached), load, run the probes to idle as of AS_OF; write the marker."""
    CACHE.mkdir(parents=True, exist_ok=True)
    marker_path(kind, target_flows).unlink(missing_ok=True)
    timings: dict[str, Any] = {"load_average_start": probe_bench.load_average()}
    started = time.perf_counter()
    source = generate.cached(CACHE, events=_generator_events(target_flows), seed=SEED, mix=KPI_MIX)
    timings["generate_s"] = round(time.perf_counter() - started, 1)
    print(f"[{kind}] events file {source} ({timings['generate_s']} s)", flush=True)

    database = _fresh_database(kind, target_flows)
    try:
        cutoff = int(AS_OF.timestamp() * 1_000_000)
        started = time.perf_counter()
        last = probe_bench.store(
            database, takewhile(lambda line: line[0] <= cutoff, generate.read(source))
        )
        timings["store_s"] = round(time.perf_counter() - started, 1)
        timings["last_arrival"] = last.isoformat()
        print(f"[{kind}] events stored in {timings['store_s']} s", flush=True)

        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if probe_bench.autovacuum_off(database):
                # the shared server runs without autovacuum; do what it would (bench/probe)
                stack.enter_context(probe_bench.AutoAnalyze(database, 30.0))
            reports = run_until_idle(
                database, DEFAULT_FLOW_TYPES, now=AS_OF, batch_events=5000, max_cycles=1_000_000
            )
        timings["probes_s"] = round(time.perf_counter() - started, 1)
        timings["probe_cycles"] = len(reports)
        print(
            f"[{kind}] probes to idle as of {AS_OF.isoformat()}: {timings['probes_s']} s, "
            f"{len(reports)} cycles",
            flush=True,
        )
        started = time.perf_counter()
        probe_bench.maintain(database)  # VACUUM ANALYZE (PostgreSQL), a WAL checkpoint (SQLite)
        timings["maintain_s"] = round(time.perf_counter() - started, 1)
        result = shape(database)
    finally:
        database.dispose()
    timings["load_average_end"] = probe_bench.load_average()
    marker = {
        "identity": identity(target_flows),
        "probes_code": probes_fingerprint(),
        "loaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database_url": database_url(kind, target_flows),
        "load": timings,
        "shape": result,
    }
    marker_path(kind, target_flows).write_text(json.dumps(marker, indent=1, default=str) + "\n")
    return marker


def ensure(kind: str, target_flows: int, *, rebuild: bool = False) -> dict[str, Any]:
    """The marker of a loaded database, loading it first when needed."""
    marker = None if rebuild else reusable(kind, target_flows)
    if marker is None:
        return build(kind, target_flows)
    print(f"[{kind}] reusing the database loaded at {marker['loaded_at']}", flush=True)
    if marker.get("probes_code") != probes_fingerprint():
        print(
            f"[{kind}] warning: the probe code changed since this database was loaded; "
            "--rebuild to load it with today's code",
            flush=True,
        )
    return marker
