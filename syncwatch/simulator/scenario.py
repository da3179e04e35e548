"""Scenario generators (pure): a firm's CLM, middleware and ERP traffic as canonical events
(spec/events.md), with the faults of :data:`syncwatch.simulator.firm.FAULTS`.

:func:`plan` gives every delivery of the contracts signed in ``[start, end)``, in delivery order,
including the ones after ``end`` (their stages and milestones play out later); :func:`generate`
gives the events delivered by ``end``. Same arguments, same events: every random choice comes from
one ``random.Random`` seeded by ``(seed, start)``."""

from __future__ import annotations

from datetime import datetime, timedelta

from syncwatch.simulator.contract import ContractStory
from syncwatch.simulator.firm import FirmProfile, firm_profile
from syncwatch.simulator.traffic import (
    DEADLINES,
    ONBOARDING,
    Builder,
    Delivery,
    Event,
    Recovery,
    Scenario,
    stamp,
)

__all__ = [
    "DEADLINES",
    "ONBOARDING",
    "Delivery",
    "FirmProfile",
    "Recovery",
    "Scenario",
    "firm_profile",
    "generate",
    "plan",
    "stamp",
]


def generate(firm: FirmProfile, start: datetime, end: datetime, seed: int) -> list[Event]:
    """The canonical events of the firm's traffic delivered in ``[start, end]``, in delivery
    order (a duplicate delivery appears twice)."""
    return [d.event for d in plan(firm, start, end, seed).deliveries if d.at <= end]


def plan(firm: FirmProfile, start: datetime, end: datetime, seed: int) -> Scenario:
    """Every delivery of the contracts signed in ``[start, end)``, sorted by delivery time."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes")
    builder = Builder(firm, start, seed)
    weeks = (end - start) / timedelta(weeks=1)
    count = max(0, round(firm.contracts_per_week * weeks * builder.rng.uniform(0.9, 1.1)))
    signed = sorted(builder.signature_time(start, end) for _ in range(count))
    for number, t0 in enumerate(signed, start=1):
        ContractStory(builder, number, t0).play()
    builder.scenario.deliveries.sort(key=lambda d: d.at)
    return builder.scenario
