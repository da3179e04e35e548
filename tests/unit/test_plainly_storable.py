"""The fast storability check of the hot ingest path (``core.events._plainly_storable``) never
admits what the full walk (``_check_storable``) rejects: it only ever skips the walk for values the
walk would pass, and says "look closer" for everything else."""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import jsoncodec
from core.events import (
    MAX_DEPTH,
    EventRejected,
    _check_storable,
    _plainly_storable,
    validate_event,
)
from tests.support.builders import make_event

_text = st.text(max_size=6) | st.sampled_from(["\x00", "a\x00", "\ud800", "a\udfffb", "é", "ok"])
_decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [Decimal("1E+999"), Decimal("1E+1000"), Decimal("1E-1000"), Decimal("1E-1001"), Decimal("sNaN")]
)
_ints = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [2**64 - 1, 2**64, -(2**63), -(2**63) - 1]
)
_scalars = (
    st.none()
    | st.booleans()
    | _ints
    | _decimals
    | st.floats(allow_nan=True)
    | _text
    | st.sampled_from([(1, 2), b"x", 1j])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_text | st.sampled_from([1, None]), inner, max_size=4)
        | st.dictionaries(_text, inner, max_size=3).map(OrderedDict)
    ),
    max_leaves=25,
)


def _walk_passes(raw: Any) -> bool:
    try:
        _check_storable(raw, "")
    except EventRejected:
        return False
    return True


@given(st.dictionaries(_text, _values, max_size=5))
def test_the_fast_check_never_admits_what_the_walk_rejects(raw: dict[str, Any]) -> None:
    if _plainly_storable(raw):
        assert _walk_passes(raw)


def _nested(levels: int) -> dict[str, Any]:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("levels", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 5])
def test_the_depth_limit_is_the_same(levels: int) -> None:
    raw = _nested(levels)
    assert _plainly_storable(raw) == _walk_passes(raw)


@pytest.mark.parametrize(
    "kind", ["contract.signed", "project.created", "milestone.completed", "integration.failed"]
)
def test_ordinary_events_take_the_fast_path(kind: str) -> None:
    raw = jsoncodec.loads(
        jsoncodec.dumps(make_event(kind, subject="Zürich", amount=Decimal("1.5")))
    )
    assert _plainly_storable(raw)
    validate_event(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"note": "a\x00b"}, "data.note: contains a NUL character"),
        ({"note": "\ud800"}, "data.note: contains a lone surrogate"),
        ({"n": 2**64}, "data.n: integer out of range"),
        ({"n": Decimal("NaN")}, "data.n: must be a finite number"),
        ({"n": 0.5}, None),
    ],
)
def test_what_the_fast_check_refers_is_judged_by_the_walk(
    data: dict[str, Any], reason: str | None
) -> None:
    raw = make_event("connector.heartbeat", data=data)
    assert not _plainly_storable(raw)
    if reason is None:
        validate_event(raw)
    else:
        with pytest.raises(EventRejected, match=reason):
            validate_event(raw)
