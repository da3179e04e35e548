"""ISO weeks in a time zone: the weekly report's window. Pure: no clock, no I/O.

A report's week runs from Monday 00:00 local time (``start``) to the next Monday 00:00 local time
(``as_of``); the KPI window is the half-open interval (start, as_of] of kpis.md. In a week with a
clock change the window is 167 h (spring forward) or 169 h (fall back) long, not 7 x 24 h, which is
why the report asks the KPIs with ``start`` rather than ``window=7d``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.errors import InvalidInput

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
TREND_WEEKS = 8


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week (``2026-W48``): weeks start on Mondays and week 1 of a year holds its
    first Thursday, so a year has 52 or 53 weeks."""

    year: int
    week: int

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    def shifted(self, weeks: int) -> IsoWeek:
        return week_of_date(self.monday + timedelta(weeks=weeks))

    def previous(self) -> IsoWeek:
        return self.shifted(-1)


@dataclass(frozen=True)
class WeekWindow:
    """The week's window: ``start`` and ``as_of`` in UTC, the time zone they were made in."""

    week: IsoWeek
    tz: ZoneInfo
    start: datetime
    as_of: datetime

    @property
    def hours(self) -> float:
        return (self.as_of - self.start).total_seconds() / 3600

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(self.tz)

    @property
    def local_end(self) -> datetime:
        return self.as_of.astimezone(self.tz)


def parse_week(text: str) -> IsoWeek:
    """``2026-W48`` (InvalidInput when not a week of that year: 2026 has 53 weeks, 2025 has 52)."""
    match = _WEEK.match(text.strip())
    if not match:
        raise InvalidInput(f"week: {text!r} is not an ISO week such as 2026-W48")
    year, number = int(match.group(1)), int(match.group(2))
    try:
        date.fromisocalendar(year, number, 1)
    except ValueError:
        raise InvalidInput(f"week: {year} has no week {number}") from None
    return IsoWeek(year, number)


def week_of_date(day: date) -> IsoWeek:
    year, number, _ = day.isocalendar()
    return IsoWeek(year, number)


def week_of(instant: datetime, tz: ZoneInfo) -> IsoWeek:
    """The week in ``tz`` that holds ``instant`` (an aware datetime)."""
    if instant.tzinfo is None:
        raise InvalidInput("the instant must carry a time zone")
    return week_of_date(instant.astimezone(tz).date())


def last_complete_week(now: datetime, tz: ZoneInfo) -> IsoWeek:
    """The latest week whose window has ended by ``now``: the week before ``now``'s, in ``tz``."""
    return week_of(now, tz).previous()


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """00:00 of ``day`` in ``tz``, as an aware datetime in ``tz`` (compare and subtract it as an
    instant). Where midnight does not exist (zones that change the clock at 00:00) zoneinfo's
    fold=0 gives the instant of the jump."""
    return datetime.combine(day, time(0), tzinfo=tz)


def window(week: IsoWeek, tz: ZoneInfo) -> WeekWindow:
    """start = Monday 00:00 local, as_of = the next Monday 00:00 local, both in UTC. (Where local
    midnight does not exist, in zones that change the clock at 00:00, zoneinfo's fold=0 gives
    the instant of the jump.)"""
    start = local_midnight(week.monday, tz)
    as_of = local_midnight(week.monday + timedelta(weeks=1), tz)
    return WeekWindow(week=week, tz=tz, start=start.astimezone(UTC), as_of=as_of.astimezone(UTC))


def last_weeks(week: IsoWeek, count: int = TREND_WEEKS) -> list[IsoWeek]:
    """``count`` weeks ending with ``week``, oldest first."""
    return [week.shifted(offset) for offset in range(1 - count, 1)]


def is_complete(week: IsoWeek, tz: ZoneInfo, now: datetime) -> bool:
    return window(week, tz).as_of <= now
