"""For the weekly report's store, schedule and delivery tests: a maker that counts its calls
around the real :func:`kpis.reports.make.make` (or a stand-in while a test wants one)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

from core.db import Database
from kpis.reports.make import make
from kpis.reports.produce import Maker
from probes.flowtypes import FlowType


def stand_in(
    database: Database | None,
    flow_types: Sequence[FlowType],
    week: str,
    *,
    tz: ZoneInfo,
    formats: Sequence[str] = ("html", "pdf", "md"),
    top_stuck: int = 20,
    sources: Any = None,
) -> dict[str, bytes]:
    """Small bytes that say which week and time zone they are for."""
    made = {
        "html": f"<!doctype html><html><body><h1>Report {week} {tz.key}</h1></body></html>",
        "pdf": f"%PDF-1.7\n% report {week}\n%%EOF\n",
        "md": f"# Weekly KPI report {week}\n\nTime zone {tz.key}.\n",
    }
    return {fmt: made[fmt].encode() for fmt in formats}


class Counting:
    """Wraps a maker; records (week, formats) of each call, thread-safely."""

    def __init__(self, maker: Maker = make) -> None:
        self.maker = maker
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def __call__(
        self,
        database: Database,
        flow_types: Sequence[FlowType],
        week: str,
        *,
        tz: ZoneInfo,
        formats: Sequence[str] = ("html", "pdf", "md"),
        top_stuck: int = 20,
        sources: Any = None,
    ) -> dict[str, bytes]:
        with self._lock:
            self.calls.append((week, tuple(formats)))
        return self.maker(
            database,
            flow_types,
            week,
            tz=tz,
            formats=formats,
            top_stuck=top_stuck,
            sources=sources,
        )


class Webhook:
    """A real local HTTP server that records the JSON bodies POSTed to it and answers each with
    the next of ``statuses`` (then 200)."""

    def __init__(self, statuses: Sequence[int] = ()) -> None:
        self.received: list[Any] = []
        self.statuses = list(statuses)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with hook._lock:
                    status = hook.statuses.pop(0) if hook.statuses else 200
                    if status == 200:
                        hook.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/secret-token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
