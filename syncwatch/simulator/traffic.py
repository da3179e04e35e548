"""What the generators make: deliveries of canonical events, the executions a replay can run
again, and the generation's shared state (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from syncwatch.simulator.firm import FirmProfile

Event = dict[str, Any]
H = timedelta(hours=1)
D = timedelta(days=1)
ONBOARDING = ("customer.synced", "project.created", "billing_plan.created", "project.activated")
#: flows.md's deadlines from T0, and when each stage usually comes (hours after signature).
DEADLINES = {
    "customer.synced": 4 * H,
    "project.created": 24 * H,
    "billing_plan.created": 48 * H,
    "project.activated": 72 * H,
    "billing_plan.updated": 24 * H,
    "invoice.posted": 120 * H,
}
USUAL_HOURS = {
    "customer.synced": (0.2, 3.5),
    "project.created": (4.0, 22.0),
    "billing_plan.created": (24.0, 46.0),
    "project.activated": (50.0, 70.0),
}


@dataclass(frozen=True)
class Delivery:
    """One event reaching syncwatch at simulated instant ``at`` (never before the event's time)."""

    at: datetime
    event: Event


@dataclass(frozen=True)
class Recovery:
    """What the middleware delivers when a dead-lettered execution is run again: an
    ``integration.succeeded`` for ``step`` and the ERP events the dead letter held back, in order
    (their ``time`` and ``id`` are set when they are sent)."""

    source: str
    step: str
    correlation_id: str
    events: tuple[Event, ...]
    #: the replays that fail again before one works: the ERP refused the record (a data error,
    #: not the network) until someone fixed it; 0 for a dead letter a re-run cures
    fails_again: int = 0


@dataclass
class Scenario:
    deliveries: list[Delivery] = field(default_factory=list)
    #: execution_id of each integration.failed / dead_lettered -> what a replay delivers
    recoveries: dict[str, Recovery] = field(default_factory=dict)


def stamp(instant: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and ``Z``."""
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


class Builder:
    """The state of one generation: the firm, the random generator, ids, what was made."""

    def __init__(self, firm: FirmProfile, start: datetime, seed: int) -> None:
        self.firm = firm
        self.rng = random.Random(f"{seed}:{start.isoformat()}")
        self.tag = f"{seed % 1000:03d}{start:%y%m%d%H%M}"
        self.counter = 0
        self.scenario = Scenario()

    # --- small random helpers ---

    def chance(self, fault: str) -> bool:
        rate = self.firm.rate(fault)
        return rate > 0 and self.rng.random() < rate

    def hours(self, low: float, high: float) -> timedelta:
        return timedelta(hours=self.rng.uniform(low, high))

    def signature_time(self, start: datetime, end: datetime) -> datetime:
        span = (end - start).total_seconds()
        instant = start
        for _ in range(6):  # contracts are signed on weekdays, mostly
            instant = start + timedelta(seconds=self.rng.uniform(0, span))
            if instant.weekday() < 5:
                break
        return instant.replace(microsecond=0)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter:06d}"
