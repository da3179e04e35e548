"""The benchmark's client: posts the pre-serialized bodies to a running ``syncwatch serve``.

Runs as its own process (the orchestrator, run.py, starts it) so that its CPU time is measured
apart from the server's. Standard library only (``http.client`` with keep-alive, one thread per
connection), which keeps its own CPU cost low. Each body is read from the file just before it is
sent (from the page cache), so the client's memory stays small whatever the event count.

Prints one JSON object on stdout: wall time, accepted/duplicate/rejected counts, latencies, and
the process's own CPU time (user, system) during the sending phase.

    .venv/bin/python bench/ingest/send.py --url http://127.0.0.1:8765 --key sw_... \\
        --bodies /tmp/sw-bench-bodies/50000 --connections 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class _Shared:
    def __init__(self, bodies: list[list[int]]) -> None:
        self.bodies = bodies
        self.next = 0
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.errors: list[str] = []

    def take(self) -> list[int] | None:
        with self.lock:
            if self.next >= len(self.bodies) or self.errors:
                return None
            body = self.bodies[self.next]
            self.next += 1
            return body


def _worker(shared: _Shared, host: str, port: int, key: str, fd: int) -> None:
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Connection": "keep-alive",
    }
    connection = http.client.HTTPConnection(host, port, timeout=300)
    try:
        while (taken := shared.take()) is not None:
            offset, length, count = taken
            body = os.pread(fd, length, offset)
            started = time.perf_counter()
            connection.request("POST", "/v1/events", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                with shared.lock:
                    shared.errors.append(f"HTTP {response.status}: {payload[:300]!r}")
                return
            answer = json.loads(payload)
            with shared.lock:
                shared.latencies.append(elapsed)
                shared.accepted += answer["accepted"]
                shared.duplicates += answer["duplicates"]
                shared.rejected += len(answer["rejected"])
                if answer["accepted"] + answer["duplicates"] != count:
                    shared.errors.append(f"a batch of {count} answered {answer}")
    except (OSError, http.client.HTTPException) as error:
        with shared.lock:
            shared.errors.append(f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def send(url: str, key: str, bodies_dir: Path, connections: int) -> dict[str, Any]:
    index = json.loads((bodies_dir / "index.json").read_text())
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    shared = _Shared(index["bodies"])
    fd = os.open(bodies_dir / "bodies.bin", os.O_RDONLY)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started_at = time.time()
    started = time.perf_counter()
    threads = [
        threading.Thread(target=_worker, args=(shared, host, port, key, fd), daemon=True)
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    latencies = shared.latencies
    return {
        "connections": connections,
        "requests": len(latencies),
        "events_sent": sum(count for _, _, count in index["bodies"][: shared.next]),
        "accepted": shared.accepted,
        "duplicates": shared.duplicates,
        "rejected": shared.rejected,
        "errors": shared.errors,
        "wall_seconds": wall,
        "started_at": started_at,
        "ended_at": started_at + wall,
        "events_per_second": shared.accepted / wall if wall else 0.0,
        "latency_ms": {
            "p50": _percentile(latencies, 0.50) * 1000,
            "p90": _percentile(latencies, 0.90) * 1000,
            "p99": _percentile(latencies, 0.99) * 1000,
            "max": max(latencies, default=0.0) * 1000,
        },
        "cpu_user_seconds": usage_after.ru_utime - usage_before.ru_utime,
        "cpu_system_seconds": usage_after.ru_stime - usage_before.ru_stime,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=os.environ.get("SYNCWATCH_BENCH_KEY"))
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=2, choices=(1, 2, 3, 4))
    args = parser.parse_args()
    if not args.key:
        parser.error("--key or SYNCWATCH_BENCH_KEY is required")
    result = send(args.url, args.key, args.bodies, args.connections)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
