"""The weekly report's pure parts: picking KPIs out of answers, changes and trends, how numbers
are written (Decimal, currencies, "—" for null), the Markdown sparkline, a self-contained HTML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from kpis.compute import KpiInputs, KpiQuery, build
from kpis.reports import display, render_html, render_md
from kpis.reports.content import COUNT, MONEY, RATIO, SECONDS, build_report
from kpis.reports.week import IsoWeek, last_weeks, window
from probes.flowtypes import DEFAULT_FLOW_TYPES

WEEK = IsoWeek(2026, 48)
TZ = ZoneInfo("Europe/Berlin")


def answer(span_end: datetime, **inputs: Any) -> dict[str, Any]:
    """An answer of the one implementation (kpis.compute.build) from hand-made inputs."""
    query = KpiQuery(as_of=span_end, start=span_end - timedelta(days=7))
    empty: dict[str, Any] = {
        "due": {},
        "durations": (),
        "open": {},
        "stuck": {},
        "revenue": {},
        "queues": (),
    }
    return build(query, DEFAULT_FLOW_TYPES, KpiInputs(**{**empty, **inputs}))


def report_of(answers: list[dict[str, Any]]) -> Any:
    weeks = last_weeks(WEEK, len(answers))
    return build_report(
        window(WEEK, TZ), weeks, DEFAULT_FLOW_TYPES, answers, stuck_total=0, stuck=()
    )


def test_lines_carry_value_previous_change_and_trend() -> None:
    ends = [window(w, TZ).as_of for w in last_weeks(WEEK)]
    answers = [answer(end) for end in ends[:-2]]
    answers.append(answer(ends[-2], due={(None, "contract_onboarding"): (4, 3)}))
    answers.append(
        answer(
            ends[-1],
            due={(None, "contract_onboarding"): (3, 1)},
            revenue={(None, "EUR"): Decimal("1234.5")},
        )
    )
    report = report_of(answers)
    lines = {line.metric.path: line for line in report.lines()}
    rate = lines[("flows", "contract_onboarding", "success_rate")]
    assert (rate.value, rate.previous) == (Decimal("0.3333"), Decimal("0.75"))
    assert rate.change == Decimal("-0.4167")
    assert rate.trend == (None,) * 6 + (Decimal("0.75"), Decimal("0.3333"))
    assert display.change(rate) == "-41.67 pp" and display.value(rate) == "33.33 %"
    money = lines[("revenue_at_risk", "EUR")]  # absent in earlier weeks: zero, not null
    assert money.trend == (Decimal(0),) * 7 + (Decimal("1234.50"),)
    assert display.value(money) == "1,234.50 EUR" and display.change(money) == "+1,234.50 EUR"
    assert not report.empty
    assert "▁" in render_md.spark(rate.trend) and render_md.spark(rate.trend).startswith("······")


def test_null_is_a_dash_never_zero() -> None:
    assert display.amount(None, RATIO) == "—"
    assert display.amount(Decimal(0), RATIO) == "0.00 %"
    assert display.amount(Decimal(0), COUNT, sign=True) == "0"
    assert display.amount(Decimal("-0.001"), MONEY, "USD", sign=True) == "0.00 USD"
    assert display.amount(Decimal("151200.5"), SECONDS) == "42.00 h"
    assert display.amount(Decimal(1234567), COUNT) == "1,234,567"
    assert display.age(Decimal(86400 * 3 + 3600 * 4 + 59)) == "3 d 04 h"


def test_empty_answers_make_an_empty_report_that_says_so() -> None:
    report = report_of([answer(window(w, TZ).as_of) for w in last_weeks(WEEK)])
    assert report.empty
    html = render_html.render(report)
    assert "No data for this week" in html and "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "Mon 23 Nov 2026 00:00 CET" in render_md.render(report)


def test_times_are_local_with_the_zone() -> None:
    instant = datetime(2026, 7, 1, 10, tzinfo=UTC)
    assert display.instant(instant, TZ) == "Wed 01 Jul 2026 12:00 CEST"


def test_a_change_is_good_or_bad_news_by_which_way_the_kpi_should_move() -> None:
    ends = [window(w, TZ).as_of for w in last_weeks(WEEK)]
    answers = [answer(end) for end in ends[:-2]]
    answers.append(answer(ends[-2], due={(None, "contract_onboarding"): (4, 3)}))
    answers.append(
        answer(
            ends[-1],
            due={(None, "contract_onboarding"): (4, 1)},
            stuck={(None, "contract_onboarding", "project.created"): 2},
        )
    )
    lines = {line.metric.path[-1]: line for line in report_of(answers).groups[0].lines}
    assert lines["success_rate"].verdict == "bad"  # 0.75 -> 0.25
    assert lines["met"].verdict == "bad"
    assert lines["stuck"].verdict == "bad"  # 0 -> 2
    assert lines["due"].verdict is None  # a volume: neither
    assert lines["p50"].verdict is None  # null both weeks: no change to judge
    html = render_html.render(report_of(answers))
    assert '<span class="bad">-50.00 pp</span>' in html
