"""Durability end to end (api.md, POST /v1/events): "Accepted means durably stored: an answer never
claims what a crash could lose", and 503 when the database is unavailable with nothing
half-written. Real processes only: ``syncwatch serve`` as a subprocess, a PostgreSQL cluster of the
test's own that is stopped mid-run, and a SQLite server that is SIGKILLed mid-stream."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core.db import Database
from core.tables import events
from tests.support.builders import make_event
from tests.support.servers import (
    create_key,
    free_port,
    pg_cluster,
    start_serve,
    stop_process,
    syncwatch_env,
    tail,
)

BATCH_SIZE = 200
_TYPES = ("contract.signed", "project.created", "integration.failed", "milestone.completed")

EventKey = tuple[str, str]


def make_batch(tag: str, number: int) -> list[dict[str, Any]]:
    """``BATCH_SIZE`` distinct events; batches differ in ids (and in sources, by type)."""
    kind = _TYPES[number % len(_TYPES)]
    return [make_event(kind, id=f"{tag}-b{number:05d}-e{i:03d}") for i in range(BATCH_SIZE)]


def keys_of(batch: list[dict[str, Any]]) -> set[EventKey]:
    return {(event["source"], event["id"]) for event in batch}


@dataclass(frozen=True)
class Outcome:
    batch: int
    started: float
    status: int | None  # None: no HTTP answer (transport error)
    body: Any
    error: str | None


class Poster:
    """Threads that post new batches continuously until stopped; records every outcome."""

    def __init__(self, url: str, key: str, tag: str, *, threads: int, stop_on_error: bool) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.tag = tag
        self.stop_on_error = stop_on_error
        self.lock = threading.Lock()
        self.batches: dict[int, list[dict[str, Any]]] = {}
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 40) -> bool:
        """Stop posting and wait for the threads; True when they all ended."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def count(self, status: int | None, since: int = 0) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes[since:] if o.status == status)

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(30, connect=5)) as client:
            while not self._stop.is_set():
                with self.lock:
                    number = next(self._numbers)
                    batch = make_batch(self.tag, number)
                    self.batches[number] = batch
                    self.in_flight += 1
                    started = time.monotonic()
                status: int | None = None
                body: Any = None
                error: str | None = None
                try:
                    answer = client.post(f"{self.url}/v1/events", json=batch, headers=self.headers)
                    status = answer.status_code
                    try:
                        body = answer.json()
                    except ValueError:
                        body = answer.text
                except httpx.TransportError as exc:
                    error = repr(exc)
                except Exception as exc:  # recorded, so the test fails with it
                    error = f"unexpected {exc!r}"
                with self.lock:
                    self.in_flight -= 1
                    self.outcomes.append(Outcome(number, started, status, body, error))
                if error is not None and self.stop_on_error:
                    return


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def stored_keys(database: Database) -> Counter[EventKey]:
    with database.read() as connection:
        rows = connection.execute(sa.select(events.c.source, events.c.event_id))
        return Counter((row.source, row.event_id) for row in rows)


def assert_store_error(body: Any) -> None:
    assert isinstance(body, dict), body
    error = body.get("error")
    assert isinstance(error, dict), body
    assert error["code"] == "store_unavailable", body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert "details" in error, body


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_postgresql_stopped_mid_run_loses_nothing_accepted(tmp_path: Path) -> None:
    server_log = tmp_path / "serve.log"
    with pg_cluster() as cluster:
        env = syncwatch_env(
            SYNCWATCH_DATA_DIR=str(tmp_path / "data"), SYNCWATCH_DATABASE_URL=cluster.url
        )
        key = create_key(env, "ingest")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        poster = Poster(base, key, "pg", threads=2, stop_on_error=False)
        database = Database.from_url(cluster.url)
        server = start_serve(env, port, server_log)
        try:
            poster.start()
            wait_for(lambda: poster.count(200) >= 5, 30, "5 accepted batches")
            cluster.stop("immediate")
            wait_for(lambda: poster.count(503) >= 3, 30, "503 answers while PostgreSQL is down")
            not_ready = httpx.get(f"{base}/readyz", timeout=10)
            assert not_ready.status_code == 503, not_ready.text
            assert_store_error(not_ready.json())
            cluster.start()
            with poster.lock:
                after_restart = len(poster.outcomes)
            # No restart of serve: the pool must notice the dead connections and reconnect.
            wait_for(
                lambda: poster.count(200, since=after_restart) >= 3,
                30,
                "accepted batches again after PostgreSQL restarted",
            )
            assert poster.stop(), "a posting thread did not end"
            ready = httpx.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text

            outcomes = list(poster.outcomes)
            assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]
            statuses = Counter(o.status for o in outcomes)
            assert set(statuses) <= {200, 503}, statuses
            assert statuses[503] >= 1, statuses
            for outcome in outcomes:
                if outcome.status == 200:
                    assert outcome.body == {
                        "accepted": BATCH_SIZE,
                        "duplicates": 0,
                        "rejected": [],
                    }, outcome
                else:
                    assert_store_error(outcome.body)
            assert len({o.batch for o in outcomes}) == len(outcomes) == len(poster.batches)
            print(f"outcomes: {dict(statuses)}")

            # Before the clients retry: a 503'd batch is all or nothing in the store (the commit
            # may have happened just before the connection died, so "all" is allowed).
            stored = stored_keys(database)
            failed = [o.batch for o in outcomes if o.status == 503]
            present_before_retry = {}
            for number in failed:
                present = len(keys_of(poster.batches[number]) & stored.keys())
                assert present in (0, BATCH_SIZE), (number, present)
                present_before_retry[number] = present
            print(f"503'd batches present before retry: {Counter(present_before_retry.values())}")
            for outcome in outcomes:
                if outcome.status == 200:
                    assert keys_of(poster.batches[outcome.batch]) <= stored.keys(), outcome.batch

            # Clients retry every batch that got a 503.
            with httpx.Client(base_url=base, timeout=30, headers=poster.headers) as client:
                for number in failed:
                    answer = client.post("/v1/events", json=poster.batches[number])
                    assert answer.status_code == 200, (number, answer.text)
                    present = present_before_retry[number]
                    assert answer.json() == {
                        "accepted": BATCH_SIZE - present,
                        "duplicates": present,
                        "rejected": [],
                    }, number

            stored = stored_keys(database)
            sent: set[EventKey] = set()
            for batch in poster.batches.values():
                sent |= keys_of(batch)
            assert len(sent) == BATCH_SIZE * len(poster.batches)
            assert set(stored) == sent
            assert all(n == 1 for n in stored.values())
            assert sum(stored.values()) == len(sent)
        finally:
            poster.stop()
            database.dispose()
            stop_process(server)
            print(f"--- syncwatch serve log ---\n{tail(server_log)}")
            print(f"--- postgres log ---\n{tail(cluster.log)}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sqlite_sigkill_mid_stream_keeps_every_accepted_batch_whole(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = syncwatch_env(SYNCWATCH_DATA_DIR=str(data_dir))
    url = f"sqlite:///{data_dir / 'syncwatch.db'}"
    server_log = tmp_path / "serve.log"
    key = create_key(env, "ingest")
    port = free_port()
    server = start_serve(env, port, server_log)
    poster = Poster(f"http://127.0.0.1:{port}", key, "lite", threads=3, stop_on_error=True)
    restarted = None
    try:
        poster.start()
        wait_for(lambda: poster.count(200) >= 10, 30, "10 accepted batches")
        # Kill while at least two requests are in flight; holding the lock keeps them from
        # being recorded as answered until the process is gone.
        deadline = time.monotonic() + 10
        while True:
            with poster.lock:
                if poster.in_flight >= 2:
                    server.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    break
            assert time.monotonic() < deadline, "never two requests in flight"
            time.sleep(0.001)
        server.wait(timeout=10)
        assert poster.stop(), "a posting thread did not end"

        outcomes = list(poster.outcomes)
        assert all(o.status in (200, None) for o in outcomes), Counter(o.status for o in outcomes)
        accepted = [o.batch for o in outcomes if o.status == 200]
        unanswered = [o.batch for o in outcomes if o.status is None]
        assert any(o.started < killed_at for o in outcomes if o.status is None), (
            "no request was in flight at the kill"
        )
        assert all(o.error is None or "unexpected" not in o.error for o in outcomes)
        for outcome in outcomes:
            if outcome.status == 200:
                assert outcome.body == {"accepted": BATCH_SIZE, "duplicates": 0, "rejected": []}

        database = Database.from_url(url)
        try:
            stored = stored_keys(database)
        finally:
            database.dispose()
        assert all(n == 1 for n in stored.values())
        for number in accepted:
            assert keys_of(poster.batches[number]) <= stored.keys(), f"accepted batch {number} lost"
        whole: set[EventKey] = set()
        for number in unanswered:
            present = len(keys_of(poster.batches[number]) & stored.keys())
            assert present in (0, BATCH_SIZE), f"batch {number} half-written: {present}"
            if present:
                whole |= keys_of(poster.batches[number])
        print(
            f"accepted {len(accepted)}, unanswered {len(unanswered)} "
            f"(stored anyway: {len(whole) // BATCH_SIZE})"
        )
        accepted_keys: set[EventKey] = set()
        for number in accepted:
            accepted_keys |= keys_of(poster.batches[number])
        assert set(stored) == accepted_keys | whole

        # The same file serves again, and accepts the retries and new batches.
        port = free_port()
        restarted = start_serve(env, port, server_log)
        retry = [*unanswered, len(poster.batches)]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=poster.headers
        ) as client:
            for number in retry:
                batch = poster.batches.get(number) or make_batch("lite", number)
                poster.batches[number] = batch
                answer = client.post("/v1/events", json=batch)
                assert answer.status_code == 200, answer.text
                present = BATCH_SIZE if keys_of(batch) <= whole else 0
                assert answer.json() == {
                    "accepted": BATCH_SIZE - present,
                    "duplicates": present,
                    "rejected": [],
                }
        # A graceful stop: uvicorn finishes, then re-raises SIGTERM on itself.
        assert stop_process(restarted) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in tail(server_log)
        database = Database.from_url(url)
        try:
            stored = stored_keys(database)
        finally:
            database.dispose()
        sent: set[EventKey] = set()
        for number in [*accepted, *retry]:
            sent |= keys_of(poster.batches[number])
        assert set(stored) == sent
        assert all(n == 1 for n in stored.values())
    finally:
        poster.stop()
        stop_process(server, sig=signal.SIGKILL)
        if restarted is not None:
            stop_process(restarted)
        print(f"--- syncwatch serve log ---\n{tail(server_log)}")
