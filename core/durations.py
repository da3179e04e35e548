"""Durations as users write them in configuration and queries: ``90m``, ``4h``, ``2d``, ``1w``, or
a number of seconds."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """A positive duration; ValueError with what is wrong otherwise."""
    if isinstance(value, timedelta) and value > timedelta(0):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            if seconds > 0:
                return timedelta(seconds=seconds)
    raise ValueError(f"{value!r} is not a duration such as 4h, 2d or 90m")
