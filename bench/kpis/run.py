"""The KPI speed benchmark: ``GET /v1/kpis``, ``GET /metrics`` and ``GET /v1/kpis/series`` timed
against a running server on a store of about 100,000 flows.

    .venv/bin/python bench/kpis/run.py --db sqlite [--flows 100000] [--rebuild] [--repeat 20]
    .venv/bin/python bench/kpis/run.py --db postgresql
    .venv/bin/python bench/kpis/run.py --db both --load-only     # build the data sets only

Targets (issue 4), to report against, never asserted in tests: with 100,000 flows in the store,
``/v1/kpis`` under 300 ms, ``/metrics`` under 100 ms, the series of 12 weekly points under 2 s,
on this 2-core machine, on SQLite and PostgreSQL.

1. the data set (``dataset.py``): generated, loaded and the probes run to idle as of ``AS_OF``
   once; reused while its marker matches (``--rebuild`` forces a new load);
2. ``serve.py`` as a subprocess: the app as ``syncwatch serve`` builds it, with a fixed clock at
   ``AS_OF`` and the probe scheduler off (``SYNCWATCH_PROBES__ENABLED=false``); a viewer key;
3. per endpoint: warm-up requests, then N timed ones with httpx over loopback (keep-alive, the
   whole body read); median, p90, max, the server's CPU time per request and its RSS;
4. a cProfile of the slowest endpoint's work in-process against the same database (the app
   driven through ``httpx.ASGITransport`` with its thread-pool calls run inline, so that one
   profiler sees the handler, its dependencies and the database driver).

Prints a table and writes ``bench/results/kpis-<db>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dataset  # noqa: E402  (puts the project root on the path)

from core import apikeys  # noqa: E402
from core.db import Database  # noqa: E402
from core.roles import Role  # noqa: E402

ROOT = dataset.ROOT
RESULTS = ROOT / "bench" / "results"
AS_OF = dataset.AS_OF
WEEK = timedelta(days=7)
SERIES_POINTS = 12
TARGETS_S = {"kpis": 0.3, "metrics": 0.1, "series": 2.0}
PRODUCT = ("core/", "collector/", "probes/", "kpis/", "syncwatch/")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Case:
    name: str
    endpoint: str  # kpis, metrics, series: which target applies
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def target_s(self) -> float:
        return TARGETS_S[self.endpoint]


def cases() -> list[Case]:
    first = AS_OF - (SERIES_POINTS - 1) * WEEK
    return [
        Case("kpis (7d at as_of)", "kpis", "/v1/kpis"),
        Case("kpis window=30d", "kpis", "/v1/kpis", {"window": "30d"}),
        Case("kpis group_by=region", "kpis", "/v1/kpis", {"group_by": "region"}),
        Case("kpis region=EMEA", "kpis", "/v1/kpis", {"region": "EMEA"}),
        Case("metrics (text)", "metrics", "/metrics"),
        Case("metrics (OpenMetrics)", "metrics", "/metrics", headers={"Accept": OPENMETRICS}),
        Case(
            f"series {SERIES_POINTS} x 7d",
            "series",
            "/v1/kpis/series",
            {"from": _iso(first), "to": _iso(AS_OF), "step": "7d", "window": "7d"},
        ),
    ]


# --- statistics -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(threshold: float | None) -> None:
    if threshold is None:
        return
    deadline = time.monotonic() + 1200
    while load_average() >= threshold and time.monotonic() < deadline:
        print(f"  load average {load_average()} >= {threshold}: waiting", flush=True)
        time.sleep(30)


# --- the server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(url: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """serve.py as a subprocess with the probe scheduler off; (process, base URL)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    env.update(
        SYNCWATCH_DATABASE_URL=url,
        SYNCWATCH_PROBES__ENABLED="false",
        SYNCWATCH_DATA_DIR=str(dataset.CACHE / "data"),
    )
    command = [sys.executable, str(HERE / "serve.py"), "--as-of", _iso(AS_OF), "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready in 120 s")
            time.sleep(0.2)
        yield process, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rss_mb(process: psutil.Process) -> float:
    return round(process.memory_info().rss / 2**20, 1)


def _peak_rss_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def viewer_key(url: str) -> tuple[str, str]:
    database = Database.from_url(url)
    name = f"bench-kpis-{secrets.token_hex(3)}"
    try:
        with database.write() as connection:
            key = apikeys.create_key(
                connection, name=name, roles=[Role.VIEWER], now=datetime.now(UTC)
            )
    finally:
        database.dispose()
    return name, key


def revoke(url: str, name: str) -> None:
    database = Database.from_url(url)
    try:
        with database.write() as connection:
            apikeys.revoke_key(connection, name=name, now=datetime.now(UTC))
    finally:
        database.dispose()


# --- measuring ------------------------------------------------------------------------------


def describe(case: Case, response: httpx.Response) -> dict[str, Any]:
    """What the answer was (and a check that it is the answer asked for)."""
    if response.status_code != 200:
        raise SystemExit(
            f"{case.name}: HTTP {response.status_code} {response.text[:300]}"
            " (does the endpoint exist yet?)"
        )
    info: dict[str, Any] = {
        "bytes": len(response.content),
        "content_type": response.headers.get("content-type"),
    }
    if case.endpoint == "metrics":
        lines = response.text.splitlines()
        info["samples"] = sum(1 for line in lines if line and not line.startswith("#"))
        return info
    body = response.json()
    if case.endpoint == "series":
        points = (
            body
            if isinstance(body, list)
            else next((v for v in body.values() if isinstance(v, list)), [])
        )
        info["points"] = len(points)
        if len(points) != SERIES_POINTS:
            print(f"  warning: {case.name} answered {len(points)} points, not {SERIES_POINTS}")
    else:
        info["flow_types"] = sorted(body.get("flows", {}))
        if "groups" in body:
            info["groups"] = len(body["groups"])
    return info


def measure(
    client: httpx.Client,
    case: Case,
    key: str,
    process: psutil.Process,
    *,
    repeat: int,
    warmup: int,
) -> dict[str, Any]:
    headers = dict(case.headers)
    if case.endpoint != "metrics" or _needs_key(client, case):
        headers["Authorization"] = f"Bearer {key}"

    def get() -> httpx.Response:
        try:
            return client.get(case.path, params=case.params, headers=headers)
        except httpx.RemoteProtocolError:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                raise SystemExit(f"{case.name}: the server died") from None
            # a keep-alive connection closed by the server as the request went out: once more
            print(f"  {case.name}: the server closed the connection; the request is sent again")
            return client.get(case.path, params=case.params, headers=headers)

    first = get()
    if first.status_code in (404, 405):
        print(f"  {case.name}: {case.path} answers {first.status_code}: not there yet, skipped")
        return {"name": case.name, "endpoint": case.endpoint, "status": "absent"}
    info = describe(case, first)
    for _ in range(warmup - 1):
        info = describe(case, get())
    times = []
    cpu = sum(process.cpu_times()[:2])
    for _ in range(repeat):
        started = time.perf_counter()
        response = get()
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            describe(case, response)
    cpu = sum(process.cpu_times()[:2]) - cpu
    median = statistics.median(times)
    p90 = percentile(times, 0.9)
    if p90 < case.target_s:
        status = "met"
    elif median < case.target_s:
        status = "median only"
    else:
        status = "MISSED"
    return {
        "name": case.name,
        "endpoint": case.endpoint,
        "path": case.path,
        "params": case.params,
        "headers": case.headers,
        "authorized": "Authorization" in headers,
        "repeat": repeat,
        "warmup": warmup,
        "median_s": round(median, 4),
        "p90_s": round(p90, 4),
        "max_s": round(max(times), 4),
        "min_s": round(min(times), 4),
        "times_s": [round(t, 4) for t in times],
        "target_s": case.target_s,
        "status": status,
        "server_cpu_s_per_request": round(cpu / repeat, 4),
        "server_rss_mb_after": _rss_mb(process),
        **info,
    }


def _needs_key(client: httpx.Client, case: Case) -> bool:
    return client.get(case.path, headers=case.headers).status_code == 401


# --- profile in-process ---------------------------------------------------------------------


@contextlib.contextmanager
def threadpool_inline() -> Iterator[None]:
    """Run what Starlette sends to the thread pool (sync endpoints and dependencies,
    ``run_in_threadpool``) in the calling thread, so that one profiler sees all of it."""
    import anyio.to_thread

    original = anyio.to_thread.run_sync

    async def inline(func: Any, *args: Any, **_: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original  # type: ignore[assignment]


def _where(code: tuple[str, int, str]) -> str:
    filename, line, name = code
    if filename == "~":
        return name
    path = Path(filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(ROOT)
    parts = path.parts
    if "site-packages" in parts:
        path = Path(*parts[parts.index("site-packages") + 1 :])
    return f"{path}:{line}({name})"


#: Frames that only carry the request to the handler (the event loop, the test transport, the
#: ASGI and FastAPI layers, this harness): left out of the cumulative list, which then starts at
#: the handler.
_CARRIERS = (
    "asyncio/",
    "httpx/",
    "starlette/",
    "fastapi/",
    "anyio/",
    "bench/kpis/",
    "_contextvars",
)


def _top(
    stats: pstats.Stats, key: int, count: int, *, carriers: bool, project_only: bool = False
) -> list[dict[str, Any]]:
    entries = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][key],
        reverse=True,
    )
    result = []
    for code, (_, calls, tottime, cumtime, _) in entries:
        where = _where(code)
        if not carriers and any(part in where for part in _CARRIERS):
            continue
        if project_only and not where.startswith(PRODUCT):
            continue
        result.append(
            {
                "function": where,
                "calls": calls,
                "tottime_s": round(tottime, 4),
                "cumtime_s": round(cumtime, 4),
            }
        )
        if len(result) == count:
            break
    return result


def profile_case(url: str, case: Case, key: str, calls: int, top: int = 15) -> dict[str, Any]:
    from core.settings import load_settings
    from syncwatch.app import create_app

    settings = load_settings({"database_url": url, "probes": {"enabled": False}})
    database = Database.from_url(url)
    app = create_app(settings, database, clock=lambda: AS_OF, run_scheduler=False)
    headers = {**case.headers, "Authorization": f"Bearer {key}"}

    async def run(times: int) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(times):
                response = await client.get(case.path, params=case.params, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"profile of {case.name}: HTTP {response.status_code}")

    try:
        with threadpool_inline():
            asyncio.run(run(1))  # warm: imports, caches, the key
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.runcall(asyncio.run, run(calls))
            seconds = (time.perf_counter() - started) / calls
    finally:
        database.dispose()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(40)
    out = dataset.CACHE / f"profile-{database.dialect}-{case.endpoint}.txt"
    out.write_text(text.getvalue())
    profile.dump_stats(out.with_suffix(".prof"))
    return {
        "case": case.name,
        "calls": calls,
        "seconds_per_call_profiled": round(seconds, 4),
        "profiled_total_s": round(total, 4),
        "top_cumulative": _top(stats, 3, top, carriers=False),
        "top_tottime": _top(stats, 2, top, carriers=True),
        "top_project": _top(stats, 3, top, carriers=False, project_only=True),
        "text": str(out),
    }


# --- one database ---------------------------------------------------------------------------


def server_version(url: str) -> str:
    if url.startswith("sqlite"):
        return f"SQLite {sqlite3.sqlite_version}"
    database = Database.from_url(url)
    try:
        with database.read() as connection:
            return f"PostgreSQL {connection.execute(sa.text('SHOW server_version')).scalar()}"
    finally:
        database.dispose()


def code_version() -> dict[str, Any]:
    """The commit measured, and the product files that differed from it (others edit the same
    tree while benchmarks run)."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.rstrip()

    changed = git("status", "--porcelain", "--", *PRODUCT)
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": [line[3:] for line in changed.splitlines()],
    }


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    marker = dataset.ensure(kind, args.flows, rebuild=args.rebuild)
    url = dataset.database_url(kind, args.flows)
    wait_for_quiet(args.quiet_load)
    result: dict[str, Any] = {
        "database": kind,
        "database_version": server_version(url),
        "target_flows": args.flows,
        "as_of": _iso(AS_OF),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "load_average_start": load_average(),
        "dataset": {
            "loaded_at": marker["loaded_at"],
            "load": marker["load"],
            "shape": marker["shape"],
            "probes_code_changed_since_load": marker.get("probes_code")
            != dataset.probes_fingerprint(),
        },
    }
    name, key = viewer_key(url)
    measured = []
    try:
        with server(url) as (popen, base):
            process = psutil.Process(popen.pid)
            result["server_rss_mb_ready"] = _rss_mb(process)
            with httpx.Client(base_url=base, timeout=300) as client:
                for case in cases():
                    repeat = args.series_repeat if case.endpoint == "series" else args.repeat
                    warmup = 1 if case.endpoint == "series" else 3
                    record = measure(client, case, key, process, repeat=repeat, warmup=warmup)
                    measured.append(record)
                    if record["status"] == "absent":
                        continue
                    print(
                        f"[{kind}] {case.name}: median {record['median_s'] * 1000:.1f} ms, "
                        f"p90 {record['p90_s'] * 1000:.1f} ms, max {record['max_s'] * 1000:.1f} ms"
                        f" ({record['status']})",
                        flush=True,
                    )
            result["server_rss_mb_end"] = _rss_mb(process)
            result["server_peak_rss_mb"] = _peak_rss_mb(popen.pid)
        result["cases"] = measured
        result["load_average_end"] = load_average()

        chosen = _profile_choice(args.profile, measured)
        result["profiles"] = []
        for record in chosen:
            case = next(c for c in cases() if c.name == record["name"])
            calls = 1 if case.endpoint == "series" else 5
            print(f"[{kind}] profiling {case.name} in-process ({calls} calls)", flush=True)
            result["profiles"].append(profile_case(url, case, key, calls))
    finally:
        revoke(url, name)
    return result


def _profile_choice(choice: str, measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``auto``: the slowest case, and the one furthest over its target when that differs;
    ``none``; or names of cases (comma-separated, as in the table)."""
    measured = [r for r in measured if r["status"] != "absent"]
    if choice == "none" or not measured:
        return []
    if choice == "auto":
        slowest = max(measured, key=lambda r: r["median_s"])
        worst = max(measured, key=lambda r: r["median_s"] / r["target_s"])
        return [slowest] if worst is slowest else [slowest, worst]
    names = {name.strip() for name in choice.split(",")}
    return [r for r in measured if r["name"] in names]


# --- output ---------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    shape = result["dataset"]["shape"]
    head = (
        f"{result['database_version']}: {shape['events']:,} events, {shape['flows']:,} flows "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(shape['flows_by_type'].items()))}); "
        f"as_of {result['as_of']}; load average {result['load_average_start']} -> "
        f"{result['load_average_end']}; server RSS {result['server_rss_mb_ready']} MB ready, "
        f"{result['server_rss_mb_end']} MB at the end, peak {result['server_peak_rss_mb']} MB"
    )
    rows = [("endpoint", "n", "median ms", "p90 ms", "max ms", "target", "status", "CPU ms/req")]
    for r in result["cases"]:
        if r["status"] == "absent":
            rows.append((r["name"], "-", "-", "-", "-", "-", "absent", "-"))
            continue
        rows.append(
            (
                r["name"],
                str(r["repeat"]),
                f"{r['median_s'] * 1000:.1f}",
                f"{r['p90_s'] * 1000:.1f}",
                f"{r['max_s'] * 1000:.1f}",
                f"< {r['target_s'] * 1000:.0f} ms",
                r["status"],
                f"{r['server_cpu_s_per_request'] * 1000:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i in (0, 5, 6) else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            )
        )
    for profile in result.get("profiles", []):
        calls = profile["calls"]
        lines.append(
            f"profile of {profile['case']} in-process: {profile['seconds_per_call_profiled']} s "
            f"a request under cProfile (mean of {calls}; per request: cumulative s, own s, "
            f"calls; full text {profile['text']})"
        )
        for title, entries in (
            ("by cumulative time, from the handler down", profile["top_cumulative"]),
            ("by own time", profile["top_tottime"]),
            ("syncwatch's own functions by cumulative time", profile["top_project"]),
        ):
            lines.append(f"  {title}:")
            for entry in entries:
                lines.append(
                    f"  {entry['cumtime_s'] / calls:8.4f}  {entry['tottime_s'] / calls:8.4f}  "
                    f"{entry['calls'] / calls:>9.0f}  {entry['function']}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--flows", type=int, default=100_000, help="flows in the data set")
    parser.add_argument("--rebuild", action="store_true", help="load the data set again")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per endpoint")
    parser.add_argument("--series-repeat", type=int, default=5, help="timed series requests")
    parser.add_argument("--load-only", action="store_true", help="build the data set(s) only")
    parser.add_argument(
        "--profile",
        default="auto",
        help="auto (the slowest case and the one furthest over its target), none, or case names",
    )
    parser.add_argument(
        "--quiet-load", type=float, help="first wait (up to 20 min) for the load average below"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    if args.load_only:
        for kind in kinds:
            marker = dataset.ensure(kind, args.flows, rebuild=args.rebuild)
            print(json.dumps({"load": marker["load"], "shape": marker["shape"]}, indent=1))
        return
    args.results.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        result = run_one(kind, args)
        out = args.results / f"kpis-{kind}.json"
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(table(result))
        print(f"written {out}")


if __name__ == "__main__":
    main()
