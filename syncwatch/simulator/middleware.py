"""The fake middleware: an HTTP server on 127.0.0.1 that answers syncwatch's replays.

``POST /replay/{execution_id}`` answers 200 at once when it knows the execution (404 otherwise),
then, about half a second later and from a thread of its own, posts through the ingest API what a
real middleware's re-run would produce: ``integration.succeeded`` for the step, then the ERP
events the dead letter held back, stamped with the wall clock. The flow moves, and syncwatch's
follow-up marks the replay effective. A dead letter from a data error (the ERP refused the
record, the ``data_error`` fault) fails again on its first replay: an ``integration.failed``
saying why, the flow stays stuck and the follow-up marks that replay ineffective; the next replay
(someone fixed the record meanwhile) works. ``GET /healthz`` answers ``{"status": "ok"}``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from syncwatch.simulator.scenario import Recovery, stamp

logger = logging.getLogger(__name__)

Send = Callable[[list[dict[str, Any]]], object]


def follow_up_events(
    execution_id: str, recovery: Recovery, now: datetime, replay_number: int
) -> list[dict[str, Any]]:
    """The events the ``replay_number``-th re-run of ``execution_id`` delivers at ``now`` (pure):
    ``integration.succeeded`` and the held ERP events, or, while the record is still refused
    (``recovery.fails_again``), one ``integration.failed``. The held ERP events keep their ids: a
    second successful replay re-delivers them as duplicates, changing nothing."""
    refused = replay_number <= recovery.fails_again
    outcome: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{execution_id}-replay-{replay_number}",
        "source": recovery.source,
        "type": "integration.failed" if refused else "integration.succeeded",
        "time": stamp(now - timedelta(milliseconds=1)),
        "correlationid": recovery.correlation_id,
        "data": {"step": recovery.step, "execution_id": execution_id, "replayed": True},
    }
    held = recovery.events[0]["data"] if recovery.events else {}
    # an integration event names the milestone or amendment whose flow it concerns
    key = {"invoice.posted": "milestone_id", "billing_plan.updated": "amendment_id"}.get(
        recovery.step
    )
    if key is not None and key in held:
        outcome["data"][key] = held[key]
    if refused:
        outcome["data"].update(
            error="ERP refused the record again: fix it in the ERP, then replay (HTTP 422)",
            retryable=False,
        )
        return [outcome]
    erp = [{**event, "time": stamp(now)} for event in recovery.events]
    return [outcome, *erp]


class FakeMiddleware:
    """Serves on ``127.0.0.1:port`` (0: any free port; see :attr:`port`) until :meth:`stop`."""

    def __init__(
        self,
        send: Send,
        *,
        port: int = 8091,
        delay_seconds: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._send = send
        self._delay = delay_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._recoveries: dict[str, Recovery] = {}
        self._replays: dict[str, int] = {}
        self._timers: list[threading.Timer] = []
        self.errors: list[BaseException] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-middleware", daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, recoveries: dict[str, Recovery]) -> None:
        """Make these executions replayable (the player adds each chunk it generates)."""
        with self._lock:
            self._recoveries.update(recoveries)

    def start(self) -> FakeMiddleware:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.join(10)
        self._thread.join(10)

    def replay(self, execution_id: str) -> bool:
        """Schedule the re-run of ``execution_id``; False when the execution is unknown."""
        with self._lock:
            recovery = self._recoveries.get(execution_id)
            if recovery is None:
                return False
            number = self._replays.get(execution_id, 0) + 1
            self._replays[execution_id] = number
            timer = threading.Timer(self._delay, self._deliver, (execution_id, recovery, number))
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()
        return True

    def _deliver(self, execution_id: str, recovery: Recovery, number: int) -> None:
        try:
            self._send(follow_up_events(execution_id, recovery, self._clock(), number))
        except Exception as error:  # a background thread: report, never swallow silently
            logger.exception("replay of %s: could not post its follow-up events", execution_id)
            self.errors.append(error)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        middleware = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._answer(200, {"status": "ok"})
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)  # the replay's body is not needed
                prefix = "/replay/"
                if not self.path.startswith(prefix):
                    self._answer(404, {"error": "not found"})
                    return
                execution_id = self.path[len(prefix) :].split("?", 1)[0]
                if middleware.replay(execution_id):
                    self._answer(200, {"execution_id": execution_id, "status": "rerun scheduled"})
                else:
                    self._answer(404, {"error": f"unknown execution {execution_id}"})

            def log_message(self, format: str, *args: Any) -> None:
                logger.info("middleware: " + format, *args)

        return Handler
