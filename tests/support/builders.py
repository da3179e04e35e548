"""Builders: a valid canonical event with any attribute overridden."""

from __future__ import annotations

import itertools
from typing import Any

_counter = itertools.count(1)

_DATA: dict[str, dict[str, Any]] = {
    "contract.signed": {
        "contract_id": "CTR-1",
        "contract_value": "125000.00",
        "currency": "EUR",
        "legal_entity": "DE01",
        "region": "EMEA",
        "service_line": "implementation",
        "milestones": [{"milestone_id": "CTR-1-M1", "amount": "50000.00"}],
    },
    "project.created": {"project_id": "PRJ-1", "contract_id": "CTR-1"},
    "milestone.completed": {"milestone_id": "CTR-1-M1", "amount": "50000.00", "currency": "EUR"},
    "integration.failed": {"step": "project.created", "execution_id": "EX-1", "error": "timeout"},
}

_SOURCES = {"contract": "clm/ironclad", "integration": "middleware/mulesoft"}


def make_event(type: str = "contract.signed", **overrides: Any) -> dict[str, Any]:
    """A valid event of ``type``; ``data`` is replaced whole when given; ``drop=[...]`` removes
    attributes."""
    number = next(_counter)
    event: dict[str, Any] = {
        "id": f"evt-{number}",
        "source": _SOURCES.get(type.partition(".")[0], "erp/netsuite"),
        "type": type,
        "time": "2026-11-20T10:00:00Z",
        "correlationid": f"Q2C-{number}",
        "data": dict(_DATA.get(type, {"note": "unknown type"})),
    }
    drop = overrides.pop("drop", ())
    event.update(overrides)
    for name in drop:
        event.pop(name, None)
    return event
