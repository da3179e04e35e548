"""``syncwatch simulate``: backfill, then live play, with the fake middleware, until stopped."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from syncwatch.simulator.firm import FirmProfile
from syncwatch.simulator.middleware import FakeMiddleware
from syncwatch.simulator.player import Player
from syncwatch.simulator.sender import Sender, write_ndjson


@dataclass(frozen=True)
class Options:
    firm: FirmProfile
    seed: int = 42
    backfill_weeks: float = 8
    speed: float = 3600
    middleware_port: int = 8091
    once: bool = False


def _discard(events: list[dict[str, object]]) -> None:
    """Nothing is sent when the backfill goes to a file."""


def write_backfill(options: Options, out: Path, *, now: datetime | None = None) -> int:
    """Write the backfill as NDJSON for ``syncwatch ingest``; the number of events."""
    origin = (now or datetime.now(UTC)).replace(microsecond=0)
    player = Player(
        options.firm, seed=options.seed, origin=origin, speed=options.speed, send=_discard
    )
    return write_ndjson(player.backfill_events(options.backfill_weeks), out)


def simulate(
    options: Options,
    api_url: str,
    ingest_key: str,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Start the fake middleware, send the backfill, announce it, then play live until SIGTERM
    or Ctrl-C (or return at once with ``options.once``). SIGTERM or Ctrl-C during the backfill
    raises KeyboardInterrupt."""
    sender = Sender(api_url, ingest_key)

    def send(events: list[dict[str, object]]) -> None:
        sender.send(events)

    middleware = FakeMiddleware(send, port=options.middleware_port).start()
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)

    playing = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not playing.is_set():  # still backfilling: stop there, like Ctrl-C
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        origin = datetime.now(UTC).replace(microsecond=0)
        player = Player(
            options.firm,
            seed=options.seed,
            origin=origin,
            speed=options.speed,
            send=send,
            middleware=middleware,
        )
        count = player.backfill(options.backfill_weeks)
        announce(f"simulator: middleware on {middleware.url}, {count} events backfilled")
        if not options.once:
            playing.set()
            try:
                player.play(stop)
            except KeyboardInterrupt:
                stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
        middleware.stop()
