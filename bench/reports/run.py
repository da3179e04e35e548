"""The weekly report benchmark: what making one week's report costs against a store of about
100,000 flows (the KPI benchmark's data set, bench/kpis/dataset.py).

    .venv/bin/python bench/reports/run.py --db sqlite [--flows 100000] [--repeat 5]
    .venv/bin/python bench/reports/run.py --db postgresql

1. the data set: reused when bench/kpis built it (``bench/kpis/run.py --db both --load-only``),
   else built here;
2. the week: the last complete ISO week before the data set's as_of, in UTC;
3. timed in-process, ``--repeat`` times each: ``gather`` (the 8 KPI answers of the week and the 7
   before, and the top stuck flows: all the database work), then rendering the same report as
   Markdown, HTML and PDF, and ``make`` with every format (what the weekly job and the API do);
   median and max, the sizes of the files and the process's peak RSS.

There is no target in issue 7; the weekly job has hours, the on-demand download a person waiting.
Prints a table and writes ``bench/results/reports-<db>.json``; figures are reported in
docs/benchmarks.md, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kpis"))

import dataset  # noqa: E402  (puts the project root on the path)

from core.db import Database  # noqa: E402
from kpis.reports import render_html, render_md, render_pdf  # noqa: E402
from kpis.reports.gather import gather  # noqa: E402
from kpis.reports.make import make  # noqa: E402
from kpis.reports.week import last_complete_week  # noqa: E402
from probes.flowtypes import configured_flow_types  # noqa: E402

RESULTS = dataset.ROOT / "bench" / "results"
UTC = ZoneInfo("UTC")


def timed(action: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    seconds: list[float] = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "max_s": max(seconds)}, result


def run(kind: str, flows: int, repeat: int) -> dict[str, Any]:
    marker = dataset.reusable(kind, flows) or dataset.build(kind, flows)
    database = Database.from_url(dataset.database_url(kind, flows))
    flow_types = configured_flow_types(None)
    week = last_complete_week(dataset.AS_OF, UTC)
    try:
        figures: dict[str, Any] = {}
        figures["gather"], report = timed(
            lambda: gather(database, flow_types, week, tz=UTC, top_stuck=20), repeat
        )
        figures["render md"], md = timed(lambda: render_md.render(report).encode(), repeat)
        figures["render html"], html = timed(lambda: render_html.render(report), repeat)
        figures["render pdf"], pdf = timed(lambda: render_pdf.render(html), repeat)
        figures["make (all formats)"], _ = timed(
            lambda: make(database, flow_types, str(week), tz=UTC), repeat
        )
    finally:
        database.dispose()
    return {
        "db": kind,
        "flows": marker["shape"].get("flows", flows),
        "events": marker["shape"]["events"],
        "week": str(week),
        "stuck_at_week_end": report.stuck_total,
        "repeat": repeat,
        "figures": figures,
        "sizes_bytes": {"md": len(md), "html": len(html.encode()), "pdf": len(pdf)},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    for kind in kinds:
        result = run(kind, args.flows, args.repeat)
        print(f"\n{kind}: {result['events']} events, week {result['week']}, "
              f"{result['stuck_at_week_end']} stuck at its end")  # fmt: skip
        for name, figure in result["figures"].items():
            print(f"  {name:<20} median {figure['median_s']:7.3f} s   max {figure['max_s']:7.3f} s")
        sizes = ", ".join(f"{f} {size / 1024:.0f} KiB" for f, size in result["sizes_bytes"].items())
        print(f"  files: {sizes}; peak RSS {result['peak_rss_mb']:.0f} MiB")
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"reports-{kind}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"  written to {path}")


if __name__ == "__main__":
    main()
