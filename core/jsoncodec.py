"""JSON in and out without binary floats: numbers with a fraction parse as :class:`Decimal` and are
written back digit for digit, so money survives storage exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: The integers the JSON writer (orjson) can write as integers; larger ones are read as Decimal.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _parse_int(text: str) -> int | Decimal:
    if len(text) <= 20:  # cheap: never converts a huge digit string to int
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return Decimal(text)


_decoder = json.JSONDecoder(
    parse_float=Decimal, parse_int=_parse_int, parse_constant=_reject_constant
)


def loads(text: str | bytes) -> Any:
    """Parse JSON; fractional numbers, and integers beyond 64 bits, become ``Decimal``; NaN and
    Infinity are refused.

    Raises ``ValueError`` (``json.JSONDecodeError`` or ``UnicodeDecodeError``) on bad input, also
    for input nested too deeply to parse."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def dumps_str(value: Any) -> str:
    return dumps(value).decode("utf-8")


def dumps_canonical(value: Any) -> bytes:
    """Sorted keys: the same content always serializes to the same bytes (for hashing)."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS)
