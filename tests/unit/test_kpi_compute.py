"""The pure KPI arithmetic (kpis.compute): rounding half to even on exact ratios, numpy's linear
percentiles on exact microseconds, aging buckets, money."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpis.compute import (
    QueueStats,
    aging_thresholds,
    duration_stats,
    exceptions_summary,
    micros,
    money,
    percentile,
    ratio,
)

H = 3_600_000_000  # one hour in microseconds
T = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("met", "due", "expected"),
    [
        (1, 32, 0.0312),  # 0.03125: half to even, down
        (3, 32, 0.0938),  # 0.09375: half to even, up
        (2, 3, 0.6667),
        (1, 3, 0.3333),
        (5, 5, 1.0),
        (0, 7, 0.0),
        (0, 0, None),
        (1, 20000, 0.0),  # 0.00005: half to even, down to 0
        (3, 20000, 0.0002),  # 0.00015: half to even, up
    ],
)
def test_ratio_rounds_half_to_even_on_the_exact_ratio(
    met: int, due: int, expected: float | None
) -> None:
    assert ratio(met, due) == expected


def test_percentiles_are_numpys_linear_method() -> None:
    hours = [10 * H, 20 * H, 30 * H, 40 * H]
    stats = duration_stats(hours)
    assert stats == {
        "count": 4,
        "mean": 25 * 3600.0,
        "p50": 25 * 3600.0,
        "p90": 37 * 3600.0,  # position 2.7: 30 + 0.7 * 10
        "p95": 38.5 * 3600.0,  # position 2.85
        "max": 40 * 3600.0,
    }


def test_one_duration_is_every_statistic_and_none_is_null() -> None:
    assert duration_stats([1_500_000]) == {
        "count": 1,
        "mean": 1.5,
        "p50": 1.5,
        "p90": 1.5,
        "p95": 1.5,
        "max": 1.5,
    }
    assert duration_stats([]) == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "max": None,
    }


def test_seconds_round_to_three_decimals_half_to_even() -> None:
    # 0.0005 s and 0.0015 s exactly: half to even gives 0.0 and 0.002
    assert duration_stats([500])["max"] == 0.0
    assert duration_stats([1500])["max"] == 0.002
    # the mean of 1 us and 2 us is 1.5 us: 0.0000015 s -> 0.0
    assert duration_stats([1, 2])["mean"] == 0.0


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=60))
def test_percentile_agrees_with_numpy_definition(values: list[int]) -> None:
    ordered = sorted(values)
    for q in (Fraction(1, 2), Fraction(9, 10), Fraction(19, 20)):
        position = (len(ordered) - 1) * q
        lower = int(position)
        upper = min(lower + 1, len(ordered) - 1)
        expected = ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
        result = percentile(ordered, q)
        assert result == expected
        assert ordered[0] <= result <= ordered[-1]


def test_micros_of_negative_and_positive_deltas() -> None:
    assert micros(timedelta(hours=1, microseconds=7)) == H + 7
    assert micros(timedelta(seconds=-1)) == -1_000_000


def test_money_has_two_decimals_by_currency_sorted() -> None:
    assert money({"USD": Decimal("10"), "EUR": Decimal("0.005"), "GBP": Decimal("1.015")}) == {
        "EUR": "0.00",
        "GBP": "1.02",
        "USD": "10.00",
    }


def test_exceptions_merge_kinds_of_a_queue_and_every_queue_appears() -> None:
    day = timedelta(days=1)
    parts = [
        QueueStats(None, "pmo", "stuck", 3, T - 2 * day, (1, 2, 0, 0)),
        QueueStats(None, "pmo", "duplicate_project", 2, T - 8 * day, (0, 0, 1, 1)),
    ]
    summary = exceptions_summary(parts, T)
    assert summary["pmo"] == {
        "open": 5,
        "oldest_age_seconds": 8 * 86400.0,
        "aging": {"lt_1d": 1, "1d_3d": 2, "3d_7d": 1, "gt_7d": 1},
    }
    assert summary["legal_ops"] == {
        "open": 0,
        "oldest_age_seconds": None,
        "aging": {"lt_1d": 0, "1d_3d": 0, "3d_7d": 0, "gt_7d": 0},
    }
    assert list(summary) == ["finance_ops", "legal_ops", "pmo", "integration_oncall"]


def test_aging_thresholds_are_one_three_and_seven_days_before() -> None:
    # a finding is at least d old exactly when opened_at <= as_of - d (lower bound inclusive)
    assert aging_thresholds(T) == [T - timedelta(days=d) for d in (1, 3, 7)]
