"""The overview's KPI tiles, computed from two ``/v1/kpis`` answers (this period and the previous
one) without I/O. Each tile has a stable label (the browser test finds it by its text), the value
as shown, and the change against the previous period. Null KPIs are shown as "—", never 0.

Formats, exact on the API's numbers: rates (4 decimals) as percentages with 2 decimals
(0.8417 -> "84.17%"); durations (seconds) in hours with 2 decimals; money (decimal strings) with
thousands separators and its 2 decimals, never through a float; from 100,000 up, compact on the
tile (2 decimals of thousands, millions, billions: "130.61 M"), the exact amount in its help.
A change of zero is shown as "0.00 h" (no sign, no arrow, neutral color), never as a rise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

NO_DATA = "—"
DeltaColor = Literal["normal", "inverse", "off"]

#: The KPI's name per flow type (flows.md): what its success rate means to an executive.
SUCCESS_LABELS = {
    "contract_onboarding": "Propagation success",
    "amendment_propagation": "Amendment success",
    "milestone_billing": "Milestone billing on time",
}
#: The KPI's full name, in the tile's help, where the label is shortened to fit the tile.
FULL_NAMES = {"amendment_propagation": "Amendment propagation success"}
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

    @property
    def unchanged(self) -> bool:
        """The change is zero: shown without arrow, in a neutral color."""
        return self.delta is not None and is_zero(self.delta)


def percent(rate: float | None) -> str:
    if rate is None:
        return NO_DATA
    return f"{Decimal(str(rate)) * 100:.2f}%"


def hours(seconds: float | None) -> str:
    if seconds is None:
        return NO_DATA
    return f"{Decimal(str(seconds)) / 3600:.2f} h"


#: From this amount up (absolute), money is shown compact on a tile.
COMPACT_FROM = Decimal(100_000)
#: Ascending: the first whose rounded value is under 1,000 is shown.
_SCALES = tuple((Decimal(1000) ** power, name) for power, name in enumerate("kMBT", start=1))
_CENT = Decimal("0.01")


def money(amount: str | Decimal) -> str:
    """Exact: ``1,234.50``."""
    return f"{Decimal(amount):,.2f}"


def compact_money(amount: str | Decimal, *, signed: bool = False) -> str:
    """``5,000.00`` below :data:`COMPACT_FROM`; above, 2 decimals (half up) of thousands
    (``k``), millions (``M``), billions (``B``) or trillions (``T``): ``130.61 M``."""
    value = Decimal(amount)
    sign = "+" if signed else ""
    if abs(value) < COMPACT_FROM:
        return f"{value:{sign},.2f}"
    for size, suffix in _SCALES:
        shown = (value / size).quantize(_CENT, rounding=ROUND_HALF_UP)
        if abs(shown) < 1000 or suffix == _SCALES[-1][1]:
            break
    return f"{shown:{sign},.2f} {suffix}"


def is_zero(delta: str) -> bool:
    """Whether a shown change is zero (``0``, ``0.00 h``, ``0.00 pp``)."""
    number = delta.split(" ", maxsplit=1)[0].replace(",", "").lstrip("+-")
    try:
        return Decimal(number) == 0
    except ArithmeticError:
        return False


def _signed(value: Decimal, unit: str) -> str:
    if value.quantize(_CENT, rounding=ROUND_HALF_UP) == 0:
        return f"{Decimal(0):.2f}{unit}"
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
    if before is None:
        return None
    return "0" if now == before else f"{now - before:+d}"


def _flows(answer: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (answer or {}).get("flows") or {}


def label_of(flow_type: str) -> str:
    return SUCCESS_LABELS.get(flow_type, f"On time: {flow_type}")


def full_name_of(flow_type: str) -> str:
    return FULL_NAMES.get(flow_type, label_of(flow_type))


def tiles(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[Tile]:
    """Every tile, in display order. ``previous`` is the answer as of as_of - window."""
    made: list[Tile] = []
    now_flows, before_flows = _flows(current), _flows(previous)
    for flow_type, figures in now_flows.items():
        rate = figures.get("success_rate")
        before = (before_flows.get(flow_type) or {}).get("success_rate")
        detail = (
            f"{figures['met']} of {figures['due']} flows due met their deadline"
            if rate is not None
            else "no data: no flow was due in the window"
        )
        if flow_type in FULL_NAMES:
            detail = f"{FULL_NAMES[flow_type]}: {detail}"
        made.append(
            Tile(label_of(flow_type), percent(rate), _rate_delta(rate, before), help=detail)
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
        detail = f"{money(risk[currency])} {currency} in stuck flows"
        if previous is not None:
            change = Decimal(risk[currency]) - Decimal(old.get(currency, "0"))
            delta = compact_money(change, signed=True) if change else money("0")
            if change:
                detail += f" ({change:+,.2f} {currency} against the previous period)"
        made.append(
            Tile(
                f"Revenue at risk ({currency})",
                compact_money(risk[currency]),
                delta,
                "inverse",
                detail,
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
