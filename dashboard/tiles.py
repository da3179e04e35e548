"""The overview's KPI tiles, computed from two ``/v1/kpis`` answers (this period and the previous
one) without I/O. Each tile has a stable label (the browser test finds it by its text), the value
as shown, and the change against the previous period. Null KPIs are shown as "—", never 0.

Formats, exact on the API's numbers: rates (4 decimals) as percentages with 2 decimals
(0.8417 -> "84.17%"); durations (seconds) in hours with 2 decimals; money (decimal strings) with
thousands separators and its 2 decimals, never through a float."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

NO_DATA = "—"
DeltaColor = Literal["normal", "inverse", "off"]

#: The KPI's name per flow type (flows.md): what its success rate means to an executive.
SUCCESS_LABELS = {
    "contract_onboarding": "Propagation success",
    "amendment_propagation": "Amendment propagation success",
    "milestone_billing": "Milestone billing on time",
}
#: (flow type, label) of the durations shown as p50 and p90.
DURATIONS = (
    ("contract_onboarding", "Setup cycle time"),
    ("milestone_billing", "Billing lag"),
)


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    delta: str | None = None
    delta_color: DeltaColor = "normal"
    help: str = ""


def percent(rate: float | None) -> str:
    if rate is None:
        return NO_DATA
    return f"{Decimal(str(rate)) * 100:.2f}%"


def hours(seconds: float | None) -> str:
    if seconds is None:
        return NO_DATA
    return f"{Decimal(str(seconds)) / 3600:.2f} h"


def money(amount: str) -> str:
    return f"{Decimal(amount):,.2f}"


def _signed(value: Decimal, unit: str) -> str:
    return f"{value:+,.2f}{unit}"


def _rate_delta(now: float | None, before: float | None) -> str | None:
    if now is None or before is None:
        return None
    return _signed((Decimal(str(now)) - Decimal(str(before))) * 100, " pp")


def _hours_delta(now: float | None, before: float | None) -> str | None:
    if now is None or before is None:
        return None
    return _signed((Decimal(str(now)) - Decimal(str(before))) / 3600, " h")


def _count_delta(now: int, before: int | None) -> str | None:
    return None if before is None else f"{now - before:+d}"


def _flows(answer: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (answer or {}).get("flows") or {}


def label_of(flow_type: str) -> str:
    return SUCCESS_LABELS.get(flow_type, f"On time: {flow_type}")


def tiles(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[Tile]:
    """Every tile, in display order. ``previous`` is the answer as of as_of - window."""
    made: list[Tile] = []
    now_flows, before_flows = _flows(current), _flows(previous)
    for flow_type, figures in now_flows.items():
        rate = figures.get("success_rate")
        before = (before_flows.get(flow_type) or {}).get("success_rate")
        made.append(
            Tile(
                label_of(flow_type),
                percent(rate),
                _rate_delta(rate, before),
                help=f"{figures['met']} of {figures['due']} flows due met their deadline"
                if rate is not None
                else "no data: no flow was due in the window",
            )
        )
    for flow_type, name in DURATIONS:
        if flow_type not in now_flows:
            continue
        spans = now_flows[flow_type]["duration_seconds"]
        old = (before_flows.get(flow_type) or {}).get("duration_seconds") or {}
        for pct in ("p50", "p90"):
            made.append(
                Tile(
                    f"{name} {pct}",
                    hours(spans.get(pct)),
                    _hours_delta(spans.get(pct), old.get(pct)),
                    "inverse",
                    f"over {spans['count']} flows completed in the window"
                    if spans.get(pct) is not None
                    else "no data: no flow completed in the window",
                )
            )
    for kind, label in (("open", "Open flows"), ("stuck", "Stuck flows")):
        count = sum(int(f[kind]) for f in now_flows.values())
        before_count = (
            sum(int(f[kind]) for f in before_flows.values()) if previous is not None else None
        )
        made.append(Tile(label, str(count), _count_delta(count, before_count), "inverse"))
    made.extend(_revenue(current, previous))
    made.append(_disputes(current, previous))
    return made


def _revenue(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[Tile]:
    risk: Mapping[str, str] = current.get("revenue_at_risk") or {}
    old: Mapping[str, str] = (previous or {}).get("revenue_at_risk") or {}
    if not risk:
        return [Tile("Revenue at risk", "0.00", None, "inverse", "no flow has money at risk")]
    made = []
    for currency in sorted(risk):
        delta = None
        if previous is not None:
            delta = _signed(Decimal(risk[currency]) - Decimal(old.get(currency, "0")), "")
        made.append(
            Tile(
                f"Revenue at risk ({currency})",
                money(risk[currency]),
                delta,
                "inverse",
                f"{risk[currency]} {currency} in stuck flows",
            )
        )
    return made


def _disputes(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> Tile:
    label = "Invoice dispute rate"
    if "invoice_dispute_rate" not in current:
        return Tile(label, NO_DATA, help="not available with a dimension filter")
    rate = current["invoice_dispute_rate"]
    before = (previous or {}).get("invoice_dispute_rate")
    return Tile(
        label,
        percent(rate),
        _rate_delta(rate, before),
        "inverse",
        "disputed / posted invoices in the window"
        if rate is not None
        else "no data: no invoice posted in the window",
    )


#: The aging buckets of kpis.md's ``exceptions``, in order, with how they are shown.
AGING = {"lt_1d": "< 1 d", "1d_3d": "1-3 d", "3d_7d": "3-7 d", "gt_7d": "> 7 d"}


def queue_rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per role queue: its open findings and their aging buckets, as of the answer's
    as_of (``exceptions`` of ``/v1/kpis``)."""
    return [
        {"queue": name, "open": queue["open"], **{AGING[b]: queue["aging"][b] for b in AGING}}
        for name, queue in (answer.get("exceptions") or {}).items()
    ]


def has_data(answer: Mapping[str, Any]) -> bool:
    """Whether anything at all shows in the answer (else the overview says "no data yet")."""
    for figures in _flows(answer).values():
        if figures["due"] or figures["completed"] or figures["open"]:
            return True
    return bool(answer.get("revenue_at_risk")) or bool(answer.get("uncorrelated_events"))
