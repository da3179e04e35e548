"""The weekly report as one self-contained HTML page: inline CSS, charts as SVG ``data:`` images,
no script and no http(s) reference, so it opens offline (and WeasyPrint turns it into the PDF)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from kpis.reports import charts, display
from kpis.reports.content import KpiGroup, WeeklyReport, number
from kpis.reports.week import WeekWindow

STYLE = """
@page { size: A4; margin: 14mm 12mm; }
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 10pt; color: #1f2933;
  max-width: 1000px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 18pt; margin: 0 0 .2em; } h2 { font-size: 13pt; margin: 1.4em 0 .4em;
  border-bottom: 1px solid #cbd2d9; padding-bottom: .15em; }
h3 { font-size: 11pt; margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .3em 0 .8em; page-break-inside: auto; font-size: 9pt; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #e4e7eb; padding: 2px 6px; text-align: right; vertical-align: middle; }
th { background: #f5f7fa; } td.l, th.l { text-align: left; }
.period { color: #52606d; } .note { color: #52606d; font-size: 9pt; }
.empty { border: 1px solid #f0b429; background: #fffbea; padding: .6em; margin: 1em 0; }
.good { color: #0b6e4f; } .bad { color: #b42318; }
td, th { white-space: nowrap; }
.trend td, .trend th { font-size: 7pt; white-space: normal; padding: 1px 3px; }
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Cells are already escaped HTML; the first column is left-aligned."""
    heads = "".join(
        f'<th class="l">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="l">{c}</td>' if i == 0 else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def _img(svg: str, alt: str) -> str:
    return f'<img src="{charts.data_uri(svg)}" alt="{escape(alt)}">'


def _kpis(group: KpiGroup) -> str:
    rows = []
    for line in group.lines:
        name = escape(display.label(line.metric))
        spark = charts.sparkline(line.trend, f"{group.title} {line.metric.label}")
        change = display.change(line)
        css = line.verdict or ""
        rows.append(
            [
                name,
                escape(display.value(line)),
                escape(display.previous(line)),
                f'<span class="{css}">{escape(change)}</span>',
                _img(spark, f"8-week trend: {display.trend(line)}"),
            ]
        )
    head = ["KPI", "this week", "previous", "change", "8 weeks"]
    return f"<h3>{escape(group.title)}</h3>" + _table(head, rows)


def _stuck(report: WeeklyReport) -> str:
    parts = [
        f"<p>{report.stuck_total} flows stuck at the week's end"
        + (f"; the {len(report.stuck)} largest by value at risk:" if report.stuck else ".")
        + "</p>"
    ]
    if report.stuck:
        rows = [
            [
                escape(s.contract),
                escape(s.flow_type),
                escape(s.stage or display.NO_DATA),
                escape(display.age(s.age_seconds)),
                escape(s.queue or display.NO_DATA),
                escape(display.money(s.value_at_risk, s.currency)),
            ]
            for s in report.stuck
        ]
        head = ["contract", "flow type", "stuck at stage", "age", "owning queue", "value at risk"]
        parts.append(_table(head, rows))
    by_stage = [
        [escape(ft), escape(stage), str(count)]
        for ft, stages in report.stuck_by_stage.items()
        for stage, count in stages.items()
    ]
    parts.append(_table(["flow type", "stage", "stuck"], by_stage))
    return "".join(parts)


def _exceptions(report: WeeklyReport) -> str:
    buckets = list(report.exceptions[0].aging) if report.exceptions else []
    rows = [
        [
            escape(q.queue),
            str(q.open),
            escape(display.age(q.oldest_age_seconds)),
            *(str(q.aging[b]) for b in buckets),
        ]
        for q in report.exceptions
    ]
    chart = charts.bars([(q.queue, q.open) for q in report.exceptions], "open findings by queue")
    return _table(["queue", "open", "oldest", *buckets], rows) + _img(chart, "open by queue")


def _misses(report: WeeklyReport) -> str:
    rows = [
        [escape(ft), escape(stage), str(count)]
        for ft, stages in report.stage_misses.items()
        for stage, count in stages.items()
    ]
    return _table(["flow type", "stage", "deadlines missed"], rows)


def _quality(report: WeeklyReport) -> str:
    parts = [f"<p>Uncorrelated events (up to the week's end): {report.uncorrelated_events}</p>"]
    letters = [[escape(r), str(c)] for r, c in report.dead_letters.items()]
    parts.append(_table(["dead letters received, by reason", "count"], letters or [["none", "0"]]))
    silent = [
        [
            escape(str(s["source"])),
            escape(
                display.instant(s["last_event_at"], report.window.tz)
                if s.get("last_event_at")
                else "never"
            ),
            escape(display.age(number(s.get("silent_seconds")))),
        ]
        for s in report.silent_sources
    ]
    parts.append(
        _table(["silent source", "last event", "silent for"], silent or [["none", "", ""]])
    )
    return "".join(parts)


def _trends(report: WeeklyReport) -> str:
    head = ["KPI", *(f"{w}" for w in report.trend_weeks)]
    rows = [
        [escape(f"{g.title}: {line.metric.label}")]
        + [escape(display.amount(v, line.metric.kind, line.metric.currency)) for v in line.trend]
        for g in report.groups
        for line in g.lines
    ]
    return _table(head, rows, "trend")


def _source(window: WeekWindow) -> str:
    start, end = (t.isoformat().replace("+00:00", "Z") for t in (window.start, window.as_of))
    return (
        f'<p class="note">Numbers: GET /v1/kpis?start={escape(start)}&amp;as_of={escape(end)} '
        "for the week, and the same for each of the 7 weeks before.</p>"
    )


def render(report: WeeklyReport) -> str:
    window = report.window
    title = f"Weekly KPI report {report.week}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="period">{escape(display.period(window))}</p>',
    ]
    if report.empty:
        sections.append(
            '<p class="empty"><strong>No data for this week.</strong> No flow was due, completed, '
            "open or stuck, no finding was open and no event arrived in the window.</p>"
        )
    sections.append("<h2>KPIs: this week, the change and the 8-week trend</h2>")
    sections.append(
        f'<p class="note">{escape(display.NO_DATA_NOTE)} A change in <span class="good">green'
        "</span> is good news (a higher success rate, fewer stuck flows, shorter durations), in "
        '<span class="bad">red</span> bad news; volumes (due, completed, open) are not '
        "coloured.</p>"
    )
    sections += [_kpis(group) for group in report.groups]
    sections += ["<h2>Stuck flows at the week's end</h2>", _stuck(report)]
    sections += ["<h2>Exceptions aging by queue</h2>", _exceptions(report)]
    sections += ["<h2>Deadlines missed during the week</h2>", _misses(report)]
    replays = [[escape(o), str(c)] for o, c in report.replays.items()]
    sections += ["<h2>Replays requested, by outcome</h2>", _table(["outcome", "replays"], replays)]
    funnel = [[escape(stage), str(count)] for stage, count in report.funnel]
    sections += [
        "<h2>Onboarding funnel (contracts signed in the week)</h2>",
        _table(["stage reached", "flows"], funnel),
    ]
    sections += ["<h2>Data quality</h2>", _quality(report)]
    sections += ["<h2>Trends: the last 8 weeks</h2>", _trends(report), _source(window)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
