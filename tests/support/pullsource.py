"""A source system that cannot push, played by a real local HTTP server (http.server in a
thread): it lists its records by a REST endpoint, page by page, as the pull connectors and the
reconciliation read them.

- ``GET /contracts?modified_since=...&page_token=N&limit=K``: the records with ``updatedAt >=``
  modified_since, ordered by (updatedAt, contractId), K per page; ``page_token`` is the offset.
  Answers ``{"data": {"items": [...]}, "paging": {"next": "N" | null}}``.
- ``GET /feed?cursor=N&limit=K``: the records in the order they were added after position N.
  Answers ``{"items": [...], "next_cursor": "M"}`` (always a cursor; an empty page at the end).
- ``GET /signed?from=...&to=...&page=N``: the records with ``signedAt`` in [from, to].

Scripted failures: ``fail_next`` holds (status, headers) answers given, in order, instead of the
next requests (a 429 with Retry-After, a 500, a 401). Every request is kept in ``requests``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class SourceState:
    records: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: fail (status, headers) once, the first time a request's query has this (name, value)
    fail_when: dict[tuple[str, str], tuple[int, dict[str, str]]] = field(default_factory=dict)
    required_authorization: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _page(items: list[dict[str, Any]], offset: int, limit: int) -> tuple[list[Any], int | None]:
    chunk = items[offset : offset + limit]
    following = offset + limit if offset + limit < len(items) else None
    return chunk, following


def _handler(state: SourceState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            with state.lock:
                state.requests.append(Request(parts.path, query, self.headers.get("Authorization")))
                scripted = state.fail_next.pop(0) if state.fail_next else None
                for name, value in list(state.fail_when):
                    if query.get(name) == value and scripted is None:
                        scripted = state.fail_when.pop((name, value))  # once
                records = list(state.records)
            if scripted is not None:
                status, headers = scripted
                self._answer(status, {"error": f"scripted {status}"}, headers)
                return
            if state.required_authorization is not None and (
                self.headers.get("Authorization") != state.required_authorization
            ):
                self._answer(401, {"error": "unauthorized"})
                return
            limit = int(query.get("limit", "100"))
            if parts.path == "/contracts":
                since = query.get("modified_since", "")
                items = sorted(
                    (r for r in records if r["updatedAt"] >= since),
                    key=lambda r: (r["updatedAt"], r["contractId"]),
                )
                chunk, following = _page(items, int(query.get("page_token", "0")), limit)
                self._answer(
                    200,
                    {
                        "data": {"items": chunk},
                        "paging": {"next": None if following is None else str(following)},
                    },
                )
            elif parts.path == "/feed":
                start = int(query.get("cursor", "0"))
                chunk = records[start : start + limit]
                self._answer(200, {"items": chunk, "next_cursor": str(start + len(chunk))})
            elif parts.path == "/signed":
                low, high = query.get("from", ""), query.get("to", "\uffff")
                items = sorted(
                    (r for r in records if low <= r["signedAt"] <= high),
                    key=lambda r: r["contractId"],
                )
                chunk, following = _page(items, int(query.get("page", "0")), limit)
                self._answer(200, {"results": chunk, "next": following})
            else:
                self._answer(404, {"error": "no such endpoint"})

    return Handler


@contextmanager
def source_server(state: SourceState) -> Iterator[str]:
    """Serve ``state`` on a free loopback port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
