"""The weekly report as Markdown, for chat and e-mail bodies: the same numbers as the HTML, in
GitHub-flavoured tables, the 8-week trend as a text sparkline (oldest week first)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from kpis.reports import display
from kpis.reports.content import KpiGroup, WeeklyReport

_BLOCKS = "▁▂▃▄▅▆▇█"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def spark(values: Sequence[Decimal | None]) -> str:
    """One block per week, its height the value's place in the range; ``·`` where null."""
    known = [v for v in values if v is not None]
    if not known:
        return "·" * len(values)
    low, high = min(known), max(known)
    top = len(_BLOCKS) - 1
    return "".join(
        "·"
        if v is None
        else _BLOCKS[int((v - low) / (high - low) * top) if high > low else top // 2]
        for v in values
    )


def _kpis(group: KpiGroup) -> list[str]:
    rows = [
        [
            display.label(line.metric),
            display.value(line),
            display.previous(line),
            display.change(line),
            spark(line.trend),
        ]
        for line in group.lines
    ]
    return [
        f"### {group.title}",
        "",
        *_table(["KPI", "week", "previous", "change", "8 weeks"], rows),
    ]


def render(report: WeeklyReport) -> str:
    out = [f"# Weekly KPI report {report.week}", "", display.period(report.window), ""]
    if report.empty:
        out += [
            "**No data for this week.** No flow was due, completed, open or stuck, no finding "
            "was open and no event arrived in the window.",
            "",
        ]
    out += ["## KPIs", "", f"_{display.NO_DATA_NOTE}_", ""]
    for group in report.groups:
        out += _kpis(group)
    out += ["## Stuck flows at the week's end", "", f"{report.stuck_total} flows stuck.", ""]
    if report.stuck:
        out += _table(
            ["contract", "flow type", "stage", "age", "queue", "value at risk"],
            (
                [
                    s.contract,
                    s.flow_type,
                    s.stage or display.NO_DATA,
                    display.age(s.age_seconds),
                    s.queue or display.NO_DATA,
                    display.money(s.value_at_risk, s.currency),
                ]
                for s in report.stuck
            ),
        )
    buckets = list(report.exceptions[0].aging) if report.exceptions else []
    out += ["## Exceptions aging by queue", ""]
    out += _table(
        ["queue", "open", "oldest", *buckets],
        (
            [q.queue, str(q.open), display.age(q.oldest_age_seconds)]
            + [str(q.aging[b]) for b in buckets]
            for q in report.exceptions
        ),
    )
    misses = [
        [ft, stage, str(count)]
        for ft, stages in report.stage_misses.items()
        for stage, count in stages.items()
        if count
    ]
    out += ["## Deadlines missed during the week", ""]
    out += _table(["flow type", "stage", "missed"], misses) if misses else ["None.", ""]
    out += ["## Replays by outcome", ""]
    out += _table(["outcome", "replays"], ([o, str(c)] for o, c in report.replays.items()))
    out += ["## Data quality", "", f"- uncorrelated events: {report.uncorrelated_events}"]
    letters = ", ".join(f"{r} {c}" for r, c in report.dead_letters.items()) or "none"
    out.append(f"- dead letters received: {letters}")
    silent = ", ".join(str(s["source"]) for s in report.silent_sources) or "none"
    out += [f"- silent sources: {silent}", ""]
    return "\n".join(out)
