"""Sending events the way a real integration does: ``POST /v1/events`` with an ingest key, in
batches, trying again on connection errors and on 429/5xx answers; or NDJSON for
``syncwatch ingest``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BATCH = 1000
ATTEMPTS = 6
BACKOFF_SECONDS = 0.5


class SendFailed(RuntimeError):
    """syncwatch did not take a batch after every attempt, or refused it outright."""


@dataclass
class Totals:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


class Sender:
    """Posts canonical events to ``{api_url}/v1/events``; thread-safe (the fake middleware posts
    its follow-up events from its own threads)."""

    def __init__(
        self,
        api_url: str,
        ingest_key: str,
        *,
        timeout: float = 30,
        attempts: int = ATTEMPTS,
        backoff_seconds: float = BACKOFF_SECONDS,
    ) -> None:
        self.url = api_url.rstrip("/") + "/v1/events"
        self.headers = {"Authorization": f"Bearer {ingest_key}"}
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.totals = Totals()
        self._lock = threading.Lock()

    def send(self, events: Sequence[dict[str, Any]], *, batch: int = BATCH) -> Totals:
        """Post ``events`` in batches of ``batch``; the totals of this call."""
        totals = Totals()
        with httpx.Client(timeout=self.timeout) as client:
            for first in range(0, len(events), batch):
                chunk = list(events[first : first + batch])
                answer = self._post(client, chunk)
                totals.sent += len(chunk)
                totals.accepted += int(answer.get("accepted", 0))
                totals.duplicates += int(answer.get("duplicates", 0))
                totals.rejected += len(answer.get("rejected", []))
        with self._lock:
            self.totals.sent += totals.sent
            self.totals.accepted += totals.accepted
            self.totals.duplicates += totals.duplicates
            self.totals.rejected += totals.rejected
        return totals

    def _post(self, client: httpx.Client, chunk: list[dict[str, Any]]) -> dict[str, Any]:
        last = "no attempt"
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = client.post(self.url, json=chunk, headers=self.headers)
            except httpx.TransportError as error:  # not listening yet, reset, timed out
                last = repr(error)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"{response.status_code} {response.text[:300]}"
                continue
            if response.status_code != 200:
                raise SendFailed(
                    f"POST {self.url} answered {response.status_code}: {response.text[:500]}"
                )
            body: dict[str, Any] = response.json()
            return body
        raise SendFailed(f"POST {self.url} failed {self.attempts} times; last: {last}")


def write_ndjson(events: Iterable[dict[str, Any]], path: Path) -> int:
    """One event per line, for ``syncwatch ingest``; the number written."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            count += 1
    return count
