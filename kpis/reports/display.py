"""How the report writes its numbers and times, the same in every format. Exact: Decimal all the
way, rounded only for display (ratios as percentages with 2 decimals, which is exact for kpis.md's
4-decimal ratios; durations in hours with 2 decimals; money with 2 decimals and its currency).
A null KPI is written "—" (no data), never 0."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from kpis.reports.content import MONEY, RATIO, SECONDS, KpiLine, Metric
from kpis.reports.week import WeekWindow

NO_DATA = "—"
NO_DATA_NOTE = (
    "— means no data: nothing was due, completed or posted that week, so there is no rate or "
    "duration to show (it is not zero)."
)
_CENT = Decimal("0.01")
_HOUR = Decimal(3600)


def _fixed(value: Decimal, sign: bool) -> str:
    rounded = value.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    if not rounded:  # no "-0.00" and no "+0.00"
        return f"{abs(rounded):,.2f}"
    return f"{rounded:+,.2f}" if sign else f"{rounded:,.2f}"


def amount(
    value: Decimal | None, kind: str, currency: str | None = None, sign: bool = False
) -> str:
    """``value`` of a KPI of ``kind`` for people: 84.17 %, 42.00 h, 50,000.00 EUR, 12."""
    if value is None:
        return NO_DATA
    if kind == RATIO:
        unit = " pp" if sign else " %"
        return _fixed(value * 100, sign) + unit
    if kind == SECONDS:
        return _fixed(value / _HOUR, sign) + " h"
    if kind == MONEY:
        return f"{_fixed(value, sign)} {currency}"
    return f"{value:+,}" if sign and value else f"{value:,}"


def value(line: KpiLine) -> str:
    return amount(line.value, line.metric.kind, line.metric.currency)


def previous(line: KpiLine) -> str:
    return amount(line.previous, line.metric.kind, line.metric.currency)


def change(line: KpiLine) -> str:
    if line.change is None:
        return NO_DATA
    return amount(line.change, line.metric.kind, line.metric.currency, sign=True)


def trend(line: KpiLine) -> str:
    """The 8 weekly values, oldest first, as text."""
    return " · ".join(amount(v, line.metric.kind, line.metric.currency) for v in line.trend)


def label(metric: Metric) -> str:
    return metric.label


def age(seconds: Decimal | None) -> str:
    """An age in days and hours (``3 d 04 h``), rounded down to the hour."""
    if seconds is None:
        return NO_DATA
    hours = int(seconds // _HOUR)
    return f"{hours // 24} d {hours % 24:02d} h"


def money(value: Decimal | None, currency: str | None) -> str:
    if value is None:
        return NO_DATA
    return f"{_fixed(value, False)} {currency or ''}".rstrip()


def instant(moment: datetime, tz: ZoneInfo) -> str:
    """``Mon 23 Nov 2026 00:00 CET``: the local time with the zone's abbreviation."""
    local = moment.astimezone(tz)
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()}"


def period(window: WeekWindow) -> str:
    return (
        f"{instant(window.start, window.tz)} – {instant(window.as_of, window.tz)} "
        f"({window.tz.key}, {window.hours:g} h)"
    )
