"""Playing a scenario: the backfill (weeks of history ending now, sent in batches at once), then
live traffic at a compressed clock.

How times work (docs/simulator.md): the simulated timeline continues the backfill past the
*origin* (the wall-clock instant the simulator started). A simulated instant ``t`` plays at the
wall-clock instant ``real(t) = t`` when ``t <= origin`` and ``origin + (t - origin) / speed``
after it. An event is sent when the wall clock reaches ``real`` of its delivery time, and its
``time`` is ``real`` of its event time: never after the wall clock, so never in the future for an
API on the same clock. The order of events and the ratio of intervals are kept; an interval of
``speed`` simulated seconds lasts one real second."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from syncwatch.simulator.firm import FirmProfile
from syncwatch.simulator.middleware import FakeMiddleware
from syncwatch.simulator.scenario import Delivery, Scenario, plan, stamp

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Send = Callable[[list[Event]], object]
#: Live traffic is generated a simulated week at a time, a simulated day before it is needed.
CHUNK = timedelta(weeks=1)
LOOKAHEAD = timedelta(days=1)


class LiveClock:
    """The mapping between simulated and wall-clock instants (module docstring)."""

    def __init__(self, origin: datetime, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.origin = origin
        self.speed = speed

    def real(self, simulated: datetime) -> datetime:
        if simulated <= self.origin:
            return simulated
        return self.origin + (simulated - self.origin) / self.speed

    def simulated(self, wall: datetime) -> datetime:
        if wall <= self.origin:
            return wall
        return self.origin + (wall - self.origin) * self.speed


def live_event(event: Event, clock: LiveClock) -> Event:
    """``event`` with its time mapped to the wall clock (pure)."""
    return {**event, "time": stamp(clock.real(datetime.fromisoformat(event["time"])))}


class Player:
    """Generates the firm's traffic chunk by chunk and sends it through ``send``."""

    def __init__(
        self,
        firm: FirmProfile,
        *,
        seed: int,
        origin: datetime,
        speed: float,
        send: Send,
        middleware: FakeMiddleware | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.firm = firm
        self.seed = seed
        self.live = LiveClock(origin, speed)
        self.send = send
        self.middleware = middleware
        self.clock = clock
        self._pending: list[tuple[datetime, int, Event]] = []
        self._order = itertools.count()
        self._next_chunk = origin
        self.sent_live = 0

    def _take(self, scenario: Scenario, *, after: datetime | None = None) -> list[Delivery]:
        """Hand the recoveries to the middleware; queue the deliveries after ``after``; return
        the others."""
        if self.middleware is not None:
            self.middleware.add(scenario.recoveries)
        now: list[Delivery] = []
        for delivery in scenario.deliveries:
            if after is not None and delivery.at <= after:
                now.append(delivery)
            else:
                heapq.heappush(self._pending, (delivery.at, next(self._order), delivery.event))
        return now

    def backfill_events(self, weeks: float) -> list[Event]:
        """The events of ``weeks`` of history delivered by the origin; what comes after it is
        queued for live play."""
        origin = self.live.origin
        scenario = plan(self.firm, origin - timedelta(weeks=weeks), origin, self.seed)
        return [delivery.event for delivery in self._take(scenario, after=origin)]

    def backfill(self, weeks: float) -> int:
        events = self.backfill_events(weeks)
        self.send(events)
        return len(events)

    def step(self) -> float:
        """Send what is due now; the seconds until the next delivery is due (at most 1)."""
        simulated_now = self.live.simulated(self.clock())
        while self._next_chunk <= simulated_now + LOOKAHEAD:
            start = self._next_chunk
            self._next_chunk = start + CHUNK
            self._take(plan(self.firm, start, self._next_chunk, self.seed))
        due: list[Event] = []
        while self._pending and self._pending[0][0] <= simulated_now:
            _, _, event = heapq.heappop(self._pending)
            due.append(live_event(event, self.live))
        if due:
            self.send(due)
            self.sent_live += len(due)
        if not self._pending:
            return 1.0
        wait = (self.live.real(self._pending[0][0]) - self.clock()).total_seconds()
        return min(1.0, max(0.0, wait))

    def play(self, stop: threading.Event) -> None:
        """Live play until ``stop`` is set."""
        while not stop.is_set():
            stop.wait(self.step())
