"""The API's items as table rows people read, without I/O: instants as ``2026-12-04 17:02 UTC``
(sorting the text sorts by time), ages in days with one decimal (a number, so a click on the
column sorts it), amounts of money with thousands separators, their 2 decimals and their
currency (text from the API's decimal string, never through a float), aging buckets as on the
tiles (``< 1 d``), a finding's details in one line, nothing shown for a missing value. The rows
keep the API's field names; the column headers people see are in ``HEADERS``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dashboard.tiles import AGING

#: Column headers, by the API's field name (a field not listed is shown under its own name).
HEADERS = {
    "flow_id": "Flow",
    "state": "State",
    "stuck_stage": "Stuck at",
    "queue": "Queue",
    "age_seconds": "Age (days)",
    "value_at_risk": "Value at risk",
    "currency": "Currency",
    "legal_entity": "Legal entity",
    "region": "Region",
    "service_line": "Service line",
    "id": "ID",
    "kind": "Kind",
    "stage": "Stage",
    "opened_at": "Opened",
    "aging": "Aging",
    "acknowledged_by": "Acknowledged by",
    "assignee": "Assignee",
    "resolved_at": "Resolved",
    "resolved_by": "Resolved by",
    "requested_at": "Requested",
    "requested_by": "Requested by",
    "trigger": "Trigger",
    "reason": "Reason",
    "outcome": "Outcome",
    "refusal": "Refusal",
    "message": "Message",
    "moved": "Moved",
    "time": "Time",
    "type": "Type",
    "source": "Source",
    "deadline_at": "Deadline",
    "reached_at": "Reached",
    "status": "Status",
    "details": "Details",
}
#: Fields holding an RFC 3339 instant.
INSTANTS = frozenset(
    {"opened_at", "resolved_at", "requested_at", "time", "deadline_at", "reached_at"}
)
#: Fields whose instants are shown to the second (a flow's own timeline, read by on-call).
SECONDS = frozenset({"time", "reached_at"})
SECONDS_A_DAY = 86_400


def when(value: str | None, *, seconds: bool = False) -> str:
    """An RFC 3339 instant in UTC, to the minute (or the second); "" for None."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def money(amount: str | None, currency: str | None = None) -> str:
    """``146500.00`` as ``146,500.00`` (``146,500.00 GBP`` with its currency), exactly; "" for
    None."""
    if amount is None:
        return ""
    return f"{Decimal(amount):,.2f} {currency or ''}".rstrip()


def days(seconds: float | None) -> float | None:
    """An age in seconds as days, to one decimal."""
    return None if seconds is None else round(seconds / SECONDS_A_DAY, 1)


def details(value: Mapping[str, Any] | None) -> str:
    """A finding's details in one line: ``differences: missing M3, amount M1: 100.00 != 97.50``."""
    if not value:
        return ""
    parts = []
    for key, item in value.items():
        shown = ", ".join(str(i) for i in item) if isinstance(item, list | tuple) else item
        parts.append(f"{key}: {'' if shown is None else shown}")
    return "; ".join(parts)


def cell(name: str, value: Any, item: Mapping[str, Any]) -> Any:
    if name in INSTANTS:
        return when(value, seconds=name in SECONDS)
    if name == "age_seconds":
        return days(value)
    if name == "value_at_risk":
        return money(value, item.get("currency"))
    if name == "aging":
        return AGING.get(value, value or "")
    if name == "details":
        return details(value)
    return "" if value is None else value


def rows(items: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """``columns`` of each item, shown as people read them."""
    return [{name: cell(name, item.get(name), item) for name in columns} for item in items]


def headers(columns: Sequence[str]) -> dict[str, str]:
    """The header of each column, for ``st.dataframe(column_config=...)``."""
    return {name: HEADERS.get(name, name) for name in columns}
