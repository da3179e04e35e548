"""Read models of flows as of an instant: the state, stuck stage, queue and value at risk of a flow,
and its stage timeline. Pure: built from FlowFacts and ``as_of``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from probes.evaluate import MILESTONE, ONBOARDING, FlowFacts

#: Flow types whose stuck flows put revenue at risk (flows.md).
REVENUE_FLOW_TYPES = (ONBOARDING, MILESTONE)


def state(flow: FlowFacts, as_of: datetime) -> str:
    """``complete``, ``cancelled``, ``stuck`` or ``open`` (the flow must exist as of ``as_of``)."""
    if flow.complete(as_of):
        return "complete"
    if flow.cancelled(as_of):
        return "cancelled"
    return "stuck" if flow.stuck(as_of) else "open"


def value_at_risk(flow: FlowFacts, as_of: datetime) -> Decimal | None:
    if flow.flow_type in REVENUE_FLOW_TYPES and flow.stuck(as_of):
        return flow.value
    return None


@dataclass(frozen=True)
class FlowSummary:
    flow: FlowFacts
    as_of: datetime
    state: str
    stuck_stage: str | None
    queue: str | None
    value_at_risk: Decimal | None

    @property
    def age_seconds(self) -> float:
        return (self.as_of - self.flow.t0).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        f = self.flow
        return {
            "flow_id": f.flow_id,
            "flow_type": f.flow_type,
            "correlation_id": f.correlation_id,
            "subkey": f.subkey,
            "state": self.state,
            "t0": f.t0,
            "deadline_at": f.deadline_at,
            "completed_at": f.completed_at if f.complete(self.as_of) else None,
            "cancelled_at": f.cancelled_at if f.cancelled(self.as_of) else None,
            "stuck_stage": self.stuck_stage,
            "queue": self.queue,
            "age_seconds": round(self.age_seconds, 3),
            "value": None if f.value is None else f"{f.value:.2f}",
            "currency": f.currency,
            "value_at_risk": None if self.value_at_risk is None else f"{self.value_at_risk:.2f}",
            "legal_entity": f.legal_entity,
            "region": f.region,
            "service_line": f.service_line,
        }


def summarize(flow: FlowFacts, as_of: datetime) -> FlowSummary:
    stage = flow.stuck_stage(as_of)
    return FlowSummary(
        flow=flow,
        as_of=as_of,
        state=state(flow, as_of),
        stuck_stage=stage.type if stage else None,
        queue=flow.stuck_queue(as_of),
        value_at_risk=value_at_risk(flow, as_of),
    )


def timeline(flow: FlowFacts, as_of: datetime) -> list[dict[str, Any]]:
    """Each stage with its deadline, when it was reached (as of ``as_of``) and its status:
    ``reached`` (``late`` when after its deadline), ``missed`` (deadline passed, not reached),
    ``pending``, or ``skipped`` (never came, but the flow completed)."""
    complete = flow.complete(as_of)
    stuck = flow.stuck_stage(as_of)
    rows = []
    for stage in flow.stages:
        reached = stage.reached(as_of)
        if reached:
            status = (
                "late" if stage.reached_at and stage.reached_at > stage.deadline_at else "reached"
            )
        elif complete:
            status = "skipped"
        elif stage.deadline_at < as_of:
            status = "missed"
        else:
            status = "pending"
        latest = stage.latest_integration(as_of)
        rows.append(
            {
                "stage": stage.type,
                "deadline_at": stage.deadline_at,
                "reached_at": stage.reached_at if reached else None,
                "status": status,
                "stuck": stuck is not None and stuck.type == stage.type,
                "queue": stage.queue,
                "integration": None
                if latest is None
                else {
                    "time": latest.time,
                    "failed": latest.failed,
                    "execution_id": latest.execution_id,
                    "source": latest.source,
                    "event_id": latest.event_id,
                },
            }
        )
    return rows
