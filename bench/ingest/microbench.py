"""What parsing and validation cost on their own, per 1,000-event request body, in this process
(no HTTP, no database): the numbers behind the choice of the ingest route's parsing path.

Stages, each timed over the same bodies (median of several rounds):

- ``parse``: ``core.jsoncodec.loads`` as the route calls it (fractions as ``Decimal``);
- ``parse_stdlib_decimal``: the standard library's ``json`` with ``parse_float=Decimal`` alone,
  without jsoncodec's checks (what ``loads`` costs at least on this path);
- ``parse_orjson_floats``: ``orjson.loads``, for scale only: it turns fractions into binary
  floats, which money must never pass through, so it is not a candidate;
- ``validate``: ``collector.ingest.judge`` on the parsed items (``validate_event`` per event,
  including the payload hash);
- ``payload_hash``: the sha256 of the canonical serialization alone (part of ``validate``);
- ``storable_walk``: ``core.events._check_storable``, the full walk that rejects what no store
  can keep (NUL, lone surrogates, huge numbers, deep nesting), alone;
- ``storable_fast``: ``core.events._plainly_storable``, the one-pass check that lets
  ``validate_event`` skip that walk for ordinary events (absent in older code);
- ``rows``: building the events-table rows from the valid events (``core.eventstore._row``).

    .venv/bin/python bench/ingest/microbench.py --bodies /tmp/sw-bench-bodies/50000
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from events import read_bodies

from collector.ingest import judge
from core import events as core_events
from core import jsoncodec
from core.events import payload_hash
from core.eventstore import _row

_stdlib = json.JSONDecoder(parse_float=Decimal)


def _per_batch(stage: Callable[[Any], Any], inputs: list[Any], rounds: int) -> float:
    """Median over rounds of the mean time per input, in milliseconds."""
    timings = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        for value in inputs:
            stage(value)
        timings.append((time.perf_counter() - started) / len(inputs) * 1000)
    return statistics.median(timings)


def run(bodies: list[bytes], *, rounds: int = 5) -> dict[str, Any]:
    events_per_body = statistics.mean(len(jsoncodec.loads(body)) for body in bodies)
    parsed = [jsoncodec.loads(body) for body in bodies]
    judged = [judge(items, require_specversion=False) for items in parsed]
    valid = [[event for _, event in judgement.valid] for judgement in judged]
    now = datetime.now(UTC)
    stages = {
        "parse": _per_batch(jsoncodec.loads, bodies, rounds),
        "parse_stdlib_decimal": _per_batch(lambda b: _stdlib.decode(b.decode()), bodies, rounds),
        "parse_orjson_floats": _per_batch(orjson.loads, bodies, rounds),
        "validate": _per_batch(lambda i: judge(i, require_specversion=False), parsed, rounds),
        "payload_hash": _per_batch(lambda i: [payload_hash(e) for e in i], parsed, rounds),
        "rows": _per_batch(lambda v: [_row(e, now) for e in v], valid, rounds),
    }
    walk = getattr(core_events, "_check_storable", None)
    if walk is not None:
        stages["storable_walk"] = _per_batch(lambda i: [walk(e, "") for e in i], parsed, rounds)
    fast = getattr(core_events, "_plainly_storable", None)
    if fast is not None:
        stages["storable_fast"] = _per_batch(lambda i: [fast(e) for e in i], parsed, rounds)
    parse_validate = stages["parse"] + stages["validate"]
    return {
        "bodies": len(bodies),
        "events_per_body": events_per_body,
        "mean_body_bytes": statistics.mean(len(body) for body in bodies),
        "ms_per_batch": {name: round(value, 3) for name, value in stages.items()},
        "parse_plus_validate_ms_per_batch": round(parse_validate, 3),
        "parse_plus_validate_events_per_core_second": round(
            events_per_body / parse_validate * 1000
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--count", type=int, default=20, help="bodies to time")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bodies = [body for _, body in zip(range(args.count), read_bodies(args.bodies), strict=False)]
    print(json.dumps(run(bodies, rounds=args.rounds), indent=1))


if __name__ == "__main__":
    main()
