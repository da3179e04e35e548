"""The KPI tiles the dashboard must show for a ``/v1/kpis`` answer, worked out here independently
of dashboard/tiles.py (so that a wrong format cannot agree with itself); shared by the AppTest
tests and the browser test."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{Decimal(str(rate)) * 100:.2f}%"


def hrs(seconds: float | None) -> str:
    return "—" if seconds is None else f"{Decimal(str(seconds)) / 3600:.2f} h"


def money(amount: str) -> str:
    """Exact below 100,000; else 2 decimals (half up) of k, M, B or T, the first under 1,000."""
    value = Decimal(amount)
    if abs(value) < 100_000:
        return f"{value:,.2f}"
    for power, suffix in enumerate("kMBT", start=1):
        shown = (value / Decimal(1000) ** power).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        if abs(shown) < 1000 or suffix == "T":
            break
    return f"{shown:,.2f} {suffix}"


def expected_tiles(now: dict[str, Any]) -> dict[str, str]:
    flows = now["flows"]
    expected = {
        "Propagation success": pct(flows["contract_onboarding"]["success_rate"]),
        "Amendment success": pct(flows["amendment_propagation"]["success_rate"]),
        "Milestone billing on time": pct(flows["milestone_billing"]["success_rate"]),
        "Open flows": str(sum(f["open"] for f in flows.values())),
        "Stuck flows": str(sum(f["stuck"] for f in flows.values())),
        "Invoice dispute rate": pct(now.get("invoice_dispute_rate")),
    }
    for flow_type, name in (
        ("contract_onboarding", "Setup cycle time"),
        ("milestone_billing", "Billing lag"),
    ):
        for p in ("p50", "p90"):
            expected[f"{name} {p}"] = hrs(flows[flow_type]["duration_seconds"][p])
    for currency, amount in now["revenue_at_risk"].items():
        expected[f"Revenue at risk ({currency})"] = money(amount)
    return expected
