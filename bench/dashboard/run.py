"""The dashboard benchmark: how long the overview (dashboard/app.py's default page: the filters,
the KPI tiles with the previous period, four trend charts, stuck by stage, the funnel, the
exception queues) takes to render against a store of about 100,000 flows.

    .venv/bin/python bench/dashboard/run.py --db sqlite [--flows 100000] [--repeat 7]
    .venv/bin/python bench/dashboard/run.py --db postgresql [--browser-repeat 5] [--no-browser]

Target (issue 6), reported against, never asserted in tests: the overview renders in under 2 s
with 100,000 flows in the store, on this 2-core machine.

1. the data set of the KPI benchmark (bench/kpis/dataset.py: built once, reused while its
   marker matches; ``bench/kpis/run.py --db sqlite --load-only`` builds it alone);
2. the API as bench/kpis/serve.py runs it (``create_app`` with a fixed clock at the data set's
   as_of, no probe scheduler) as a subprocess; a viewer key for the dashboard;
3. Streamlit's ``AppTest`` runs dashboard/app.py (the overview) in this process against that
   API: one discarded first run (imports: plotly, pandas), then ``--repeat`` runs with the cache
   emptied (``st.cache_data.clear()``: every read goes to the API) and ``--repeat`` runs with the
   cache warm (a rerun within the 30 s ttl: no API call). Every request the dashboard makes is
   timed on the way (``ApiClient._request`` wrapped, with its start and end), which splits a
   cold run into the time waiting on the API (the union of the requests' intervals: the overview
   makes them concurrently, so their durations summed exceed it, and are reported too) and the
   rest (Streamlit, plotly figures, the dataframe);
4. a real browser: ``streamlit run dashboard/app.py`` (tests/support/browser.py) and Debian's
   headless Chromium through selenium, ``--browser-repeat`` times a fresh Streamlit server
   (so the first page load finds an empty cache and a fresh script process), timing from
   ``driver.get(url)`` until every ``st.metric`` tile holds a value ("tiles") and until the
   script has finished (``data-test-script-state=notRunning``: the whole page drawn), then a
   second page load (a new browser session of the same server: warm cache, within the 30 s
   ttl); with each, the time the page's main thread spent in long tasks (``PerformanceObserver``
   ``longtask``: plotly's script, layout, paint), the browser's own share.

Prints a table and writes ``bench/results/dashboard-<db>.json`` (and a screenshot of the first
browser load to the data set's cache directory); bench/dashboard/results.md
reports the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KPIS_BENCH = ROOT / "bench" / "kpis"
sys.path[:0] = [str(KPIS_BENCH), str(ROOT)]

import dataset  # noqa: E402  (bench/kpis/dataset.py)

APP = ROOT / "dashboard" / "app.py"
RESULTS = ROOT / "bench" / "results"
TARGET_S = 2.0


def _kpis_bench() -> Any:
    """bench/kpis/run.py (its server, key and statistics helpers), under a name of its own."""
    spec = importlib.util.spec_from_file_location("kpis_bench_run", KPIS_BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kpis_bench = _kpis_bench()


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "n": len(times),
        "median_s": round(statistics.median(times), 4),
        "p90_s": round(kpis_bench.percentile(times, 0.9), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "times_s": [round(t, 4) for t in times],
    }


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- AppTest ---------------------------------------------------------------------------------


@contextlib.contextmanager
def recorded_requests() -> Iterator[list[dict[str, Any]]]:
    """Every request the dashboard's client makes, with its duration."""
    from dashboard.client import ApiClient

    calls: list[dict[str, Any]] = []
    original = ApiClient._request

    def timed(self: ApiClient, method: str, path: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, method, path, **kwargs)
        finally:
            calls.append(
                {
                    "path": path,
                    "params": dict(kwargs.get("params") or {}),
                    "s": time.perf_counter() - started,
                    "start": started,
                    "end": time.perf_counter(),
                }
            )

    ApiClient._request = timed  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        ApiClient._request = original  # type: ignore[method-assign]


def covered(calls: list[dict[str, Any]]) -> float:
    """Seconds during which at least one request was under way (the requests are concurrent:
    their sum exceeds the time the script waited for them)."""
    total, reach = 0.0, float("-inf")
    for call in sorted(calls, key=lambda c: c["start"]):
        start = max(call["start"], reach)
        if call["end"] > start:
            total += call["end"] - start
        reach = max(reach, call["end"])
    return total


def apptest_runs(base: str, key: str, repeat: int) -> dict[str, Any]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    def run_once(at: AppTest) -> float:
        started = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - started
        if at.exception:
            raise SystemExit(f"the overview failed: {at.exception}")
        if at.error:
            raise SystemExit(f"the overview shows an error: {[e.value for e in at.error]}")
        if len(at.metric) < 1:
            raise SystemExit("the overview shows no tile")
        return seconds

    with environment(SYNCWATCH_API_URL=base, SYNCWATCH_API_KEY=key), recorded_requests() as calls:
        st.cache_data.clear()
        first_at = AppTest.from_file(str(APP), default_timeout=300)
        first = run_once(first_at)
        tiles = {m.label: m.value for m in first_at.metric}
        cold, warm, api_s, api_sum, requests = [], [], [], [], []
        for _ in range(repeat):
            st.cache_data.clear()
            calls.clear()
            at = AppTest.from_file(str(APP), default_timeout=300)
            cold.append(run_once(at))
            api_s.append(covered(calls))
            api_sum.append(sum(c["s"] for c in calls))
            requests = list(calls)
            calls.clear()
            warm.append(run_once(at))
            if calls:
                print(f"  warning: a warm run made {len(calls)} requests", flush=True)
        st.cache_data.clear()
    rest = [c - a for c, a in zip(cold, api_s, strict=True)]
    first_start = min((c["start"] for c in requests), default=0.0)
    return {
        "first_run_s": round(first, 4),
        "cold": summary(cold),
        "cold_api_s": summary(api_s),
        "cold_api_summed_s": summary(api_sum),
        "cold_other_s": summary(rest),
        "warm": summary(warm),
        "requests_of_the_last_cold_run": [
            {
                "path": c["path"],
                "params": c["params"],
                "ms": round(c["s"] * 1000, 1),
                "start_ms": round((c["start"] - first_start) * 1000, 1),
            }
            for c in sorted(requests, key=lambda c: c["start"])
        ],
        "tiles": tiles,
    }


# --- the browser -----------------------------------------------------------------------------


#: Installed in every new document: the time the page's main thread spent in long tasks (over
#: 50 ms: script, style, layout, paint) since navigation, the browser's own share of a load.
_BUSY_JS = """
window.__benchBusy = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__benchBusy += entry.duration;
}).observe({type: 'longtask', buffered: true});
"""
#: [script state, tiles, tiles with a value, ms of long tasks] in one round trip.
_STATE_JS = """
const app = document.querySelector('[data-testid=stApp]');
const values = [...document.querySelectorAll('[data-testid=stMetric] [data-testid=stMetricValue]')]
  .map(e => e.innerText.trim());
return [app ? app.getAttribute('data-test-script-state') : null, values.length,
        values.filter(v => v).length, window.__benchBusy || 0];
"""


def page_load(
    driver: Any, url: str, expected_tiles: int, timeout: float = 120
) -> tuple[float, float, float, int]:
    """Seconds from ``driver.get(url)`` until every tile holds a value, and until the script
    finished with the tiles drawn; seconds of the browser's long tasks until then; the number of
    tiles (``expected_tiles``: as many as AppTest found). The state is also ``notRunning`` before
    the first run starts: hence the tiles."""
    driver.get("about:blank")
    started = time.perf_counter()
    driver.get(url)
    tiles_s = finished_s = None
    count, busy_ms = 0, 0.0
    deadline = started + timeout
    while finished_s is None:
        with contextlib.suppress(Exception):  # the page is being replaced under selenium
            state, count, filled, busy_ms = driver.execute_script(_STATE_JS)
            now = time.perf_counter() - started
            full = count >= expected_tiles and filled == count
            if full and tiles_s is None:
                tiles_s = now
            if full and state == "notRunning":
                finished_s = now
        if time.perf_counter() > deadline:
            raise SystemExit(f"the overview did not render within {timeout} s")
        time.sleep(0.02)
    assert tiles_s is not None
    return tiles_s, finished_s, busy_ms / 1000, count


def browser_runs(
    base: str, key: str, repeat: int, expected_tiles: int, screenshot: Path
) -> dict[str, Any]:
    from tests.support.browser import CHROMIUM, chromium, streamlit_server

    if not Path(CHROMIUM).exists():
        return {"status": f"skipped: {CHROMIUM} not installed"}
    cold_tiles, cold_done, warm_tiles, warm_done = [], [], [], []
    cold_busy, warm_busy = [], []
    tiles = 0
    env = {"SYNCWATCH_API_URL": base, "SYNCWATCH_API_KEY": key}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        env["HOME"] = scratch
        with chromium() as driver:
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _BUSY_JS})
            for run in range(repeat):
                log = Path(scratch) / f"streamlit-{run}.log"
                with streamlit_server(APP, env, log) as url:
                    t, d, b, tiles = page_load(driver, url, expected_tiles)
                    cold_tiles.append(t)
                    cold_done.append(d)
                    cold_busy.append(b)
                    t, d, b, tiles = page_load(driver, url, expected_tiles)
                    warm_tiles.append(t)
                    warm_done.append(d)
                    warm_busy.append(b)
                    if run == 0:
                        driver.execute_script("window.scrollTo(0, 0)")
                        driver.save_screenshot(str(screenshot))
                print(
                    f"  browser run {run + 1}: cold {cold_tiles[-1]:.2f} s tiles, "
                    f"{cold_done[-1]:.2f} s done; warm {warm_tiles[-1]:.2f} s, "
                    f"{warm_done[-1]:.2f} s; browser long tasks {cold_busy[-1]:.2f} s, "
                    f"{warm_busy[-1]:.2f} s",
                    flush=True,
                )
    return {
        "status": "measured",
        "tiles": tiles,
        "cold_tiles": summary(cold_tiles),
        "cold_finished": summary(cold_done),
        "warm_tiles": summary(warm_tiles),
        "warm_finished": summary(warm_done),
        "cold_browser_long_tasks": summary(cold_busy),
        "warm_browser_long_tasks": summary(warm_busy),
        "screenshot": str(screenshot),
    }


# --- one database ----------------------------------------------------------------------------


def status(seconds: float) -> str:
    return "met" if seconds < TARGET_S else "MISSED"


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    marker = dataset.ensure(kind, args.flows, rebuild=args.rebuild)
    url = dataset.database_url(kind, args.flows)
    result: dict[str, Any] = {
        "database": kind,
        "database_version": kpis_bench.server_version(url),
        "target_flows": args.flows,
        "as_of": kpis_bench._iso(dataset.AS_OF),
        "target_s": TARGET_S,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": kpis_bench.code_version(),
        "load_average_start": kpis_bench.load_average(),
        "dataset": {"loaded_at": marker["loaded_at"], "shape": marker["shape"]},
    }
    name, key = kpis_bench.viewer_key(url)
    try:
        with kpis_bench.server(url) as (_, base):
            print(f"[{kind}] AppTest: {args.repeat} cold and warm runs of the overview", flush=True)
            result["apptest"] = apptest_runs(base, key, args.repeat)
            if args.browser_repeat:
                print(f"[{kind}] Chromium: {args.browser_repeat} fresh servers", flush=True)
                shot = dataset.CACHE / f"dashboard-{kind}.png"  # not in the repository
                result["browser"] = browser_runs(
                    base, key, args.browser_repeat, len(result["apptest"]["tiles"]), shot
                )
    finally:
        kpis_bench.revoke(url, name)
    result["load_average_end"] = kpis_bench.load_average()
    return result


def table(result: dict[str, Any]) -> str:
    shape = result["dataset"]["shape"]
    lines = [
        f"{result['database_version']}: {shape['events']:,} events, {shape['flows']:,} flows; "
        f"as_of {result['as_of']}; load average {result['load_average_start']} -> "
        f"{result['load_average_end']}"
    ]
    rows = [("overview render", "n", "median s", "p90 s", "max s", "target", "status")]

    def row(name: str, figures: dict[str, Any], target: bool = True) -> None:
        rows.append(
            (
                name,
                str(figures["n"]),
                f"{figures['median_s']:.3f}",
                f"{figures['p90_s']:.3f}",
                f"{figures['max_s']:.3f}",
                f"< {TARGET_S:.0f} s" if target else "",
                status(figures["median_s"]) if target else "",
            )
        )

    apptest = result["apptest"]
    row("AppTest, cold cache", apptest["cold"])
    row("  of which waiting on the API", apptest["cold_api_s"], target=False)
    if "cold_api_summed_s" in apptest:
        row("  (requests' durations summed)", apptest["cold_api_summed_s"], target=False)
    row("  of which the rest", apptest["cold_other_s"], target=False)
    row("AppTest, warm cache", apptest["warm"])
    browser = result.get("browser") or {}
    if browser.get("status") == "measured":
        row("Chromium, fresh server: tiles", browser["cold_tiles"])
        row("Chromium, fresh server: all", browser["cold_finished"])
        row("Chromium, warm cache: tiles", browser["warm_tiles"])
        row("Chromium, warm cache: all", browser["warm_finished"])
        if "cold_browser_long_tasks" in browser:
            row("  browser long tasks, fresh", browser["cold_browser_long_tasks"], target=False)
            row("  browser long tasks, warm", browser["warm_browser_long_tasks"], target=False)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i in (0, 5, 6) else cell.rjust(widths[i])
                for i, cell in enumerate(r)
            )
        )
    lines.append(f"first AppTest run in this process (imports): {apptest['first_run_s']:.3f} s")
    lines.append("requests of one cold run:")
    for call in apptest["requests_of_the_last_cold_run"]:
        query = "&".join(f"{k}={v}" for k, v in sorted(call["params"].items()))
        offset = f"+{call['start_ms']:.0f} ms " if "start_ms" in call else ""
        lines.append(f"  {offset}{call['ms']:8.1f} ms  {call['path']}?{query}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--flows", type=int, default=100_000, help="flows in the data set")
    parser.add_argument("--rebuild", action="store_true", help="load the data set again")
    parser.add_argument("--repeat", type=int, default=7, help="AppTest cold and warm runs")
    parser.add_argument(
        "--browser-repeat", type=int, default=5, help="fresh Streamlit servers (0: no browser)"
    )
    parser.add_argument("--no-browser", action="store_true", help="AppTest only")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.no_browser:
        args.browser_repeat = 0

    args.results.mkdir(parents=True, exist_ok=True)
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    for kind in kinds:
        result = run_one(kind, args)
        out = args.results / f"dashboard-{kind}.json"
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(table(result))
        print(f"written {out}")


if __name__ == "__main__":
    main()
