"""The weekly report's week arithmetic (kpis/reports/week.py): ISO weeks, their window in a time
zone (167 and 169 h across the clock changes), the previous week, the last 8 weeks."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.errors import InvalidInput
from kpis.reports.week import (
    IsoWeek,
    is_complete,
    last_complete_week,
    last_weeks,
    parse_week,
    week_of,
    window,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_parse_and_format() -> None:
    assert parse_week("2026-W48") == IsoWeek(2026, 48)
    assert str(IsoWeek(2026, 48)) == "2026-W48"
    assert str(IsoWeek(2027, 1)) == "2027-W01"
    assert parse_week(" 2026-W53 ") == IsoWeek(2026, 53)  # 2026 has 53 weeks


@pytest.mark.parametrize("text", ["2025-W53", "2026-W00", "2026-W54", "2026W48", "2026-48", ""])
def test_parse_refuses_what_is_not_a_week(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_week(text)


def test_week_in_utc_is_168_hours() -> None:
    span = window(IsoWeek(2026, 48), ZoneInfo("UTC"))
    assert (span.start, span.as_of) == (utc(2026, 11, 23), utc(2026, 11, 30))
    assert span.hours == 168


def test_week_in_berlin_starts_at_local_midnight() -> None:
    span = window(IsoWeek(2026, 48), BERLIN)  # CET, UTC+1
    assert (span.start, span.as_of) == (utc(2026, 11, 22, 23), utc(2026, 11, 29, 23))
    assert span.local_start.hour == 0 and span.local_start.weekday() == 0


def test_spring_forward_week_is_167_hours() -> None:
    span = window(IsoWeek(2026, 13), BERLIN)  # clocks go forward on Sunday March 29
    assert (span.start, span.as_of) == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    assert span.hours == 167
    assert span.local_end.tzname() == "CEST" and span.local_start.tzname() == "CET"


def test_fall_back_week_is_169_hours() -> None:
    span = window(IsoWeek(2026, 43), BERLIN)  # clocks go back on Sunday October 25
    assert (span.start, span.as_of) == (utc(2026, 10, 18, 22), utc(2026, 10, 25, 23))
    assert span.hours == 169


def test_consecutive_windows_tile_time() -> None:
    weeks = last_weeks(IsoWeek(2027, 2), 60)
    spans = [window(week, BERLIN) for week in weeks]
    for earlier, later in itertools.pairwise(spans):
        assert earlier.as_of == later.start
    assert sorted(span.hours for span in spans if span.hours != 168) == [167, 169]


def test_previous_week_and_the_last_eight() -> None:
    assert IsoWeek(2027, 1).previous() == IsoWeek(2026, 53)
    assert IsoWeek(2026, 1).previous() == IsoWeek(2025, 52)
    eight = last_weeks(IsoWeek(2027, 2))
    assert [str(w) for w in eight] == [
        "2026-W48", "2026-W49", "2026-W50", "2026-W51",
        "2026-W52", "2026-W53", "2027-W01", "2027-W02",
    ]  # fmt: skip
    assert sorted(eight) == eight


def test_week_of_and_last_complete_week_depend_on_the_zone() -> None:
    # Sunday 23:30 UTC is already Monday 00:30 in Berlin
    instant = utc(2026, 11, 29, 23, 30)
    assert week_of(instant, ZoneInfo("UTC")) == IsoWeek(2026, 48)
    assert week_of(instant, BERLIN) == IsoWeek(2026, 49)
    assert last_complete_week(instant, ZoneInfo("UTC")) == IsoWeek(2026, 47)
    assert last_complete_week(instant, BERLIN) == IsoWeek(2026, 48)
    assert is_complete(IsoWeek(2026, 48), BERLIN, instant)
    assert not is_complete(IsoWeek(2026, 48), ZoneInfo("UTC"), instant)
    assert is_complete(IsoWeek(2026, 48), ZoneInfo("UTC"), utc(2026, 11, 30))
    assert not is_complete(IsoWeek(2026, 48), ZoneInfo("UTC"), utc(2026, 11, 30) - timedelta(1))


def test_week_of_needs_an_aware_instant() -> None:
    with pytest.raises(InvalidInput):
        week_of(datetime(2026, 11, 29), BERLIN)
