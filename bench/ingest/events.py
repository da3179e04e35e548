"""Realistic canonical events for the ingest benchmark, pre-serialized into request bodies.

The events follow the quote-to-cash flows of ``spec/examples/events.json``: a deal is a
``contract.signed`` (with milestones, money as decimal strings) followed by the ERP's
``customer.synced``, ``project.created``, ``billing_plan.created``, ``project.activated``, then
``milestone.completed`` and ``invoice.posted`` per milestone, now and then an amendment, a
dispute and middleware ``integration.*`` events. About 7 % carry no ``correlationid`` (resolved
through a fallback key), some a ``traceparent`` or a ``subject``. ``(source, id)`` is unique.

The bodies are written once into ``<dir>/bodies.bin`` (JSON arrays, one per batch, back to back)
with ``<dir>/index.json`` giving each body's offset and length, so that the sender only reads
bytes and the generator's cost is never part of a measurement.

    .venv/bin/python bench/ingest/events.py --events 50000 --out /tmp/sw-bench-bodies/50000
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

#: Bump when the generated events change, so that cached bodies are made again.
GENERATOR_VERSION = 2

_OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (-5, 0), (2, 0), (5, 30))]
_CLM = ("clm/ironclad", "clm/docusign-clm", "clm/icertis")
_ERP = ("erp/netsuite", "erp/netsuite", "erp/netsuite", "erp/sap-s4", "erp/dynamics365/emea")
_PSA = ("psa/kantata",)
_MIDDLEWARE = ("middleware/mulesoft", "middleware/boomi", "middleware/workato")
_REGIONS = ("EMEA", "NA", "APAC", "LATAM")
_ENTITIES = ("DE01", "DE02", "US01", "UK01", "SG01", "BR01")
_LINES = ("implementation", "managed_services", "advisory", "training")
_CURRENCIES = ("EUR", "USD", "GBP", "SGD")
_STEPS = ("customer.synced", "project.created", "billing_plan.created", "invoice.posted")
_ERRORS: tuple[Any, ...] = (
    "503 from ERP",
    "timeout after 30s",
    {"code": "INVALID_FIELD", "field": "subsidiary", "message": "subsidiary is inactive"},
)


class _Deal:
    """One quote-to-cash flow: yields its events in a plausible order."""

    def __init__(self, rng: random.Random, number: int, start: datetime) -> None:
        self.rng = rng
        self.number = number
        self.clock = start
        self.correlation = f"Q2C-{2024 + number % 3}-{rng.getrandbits(32):08X}"
        self.contract = f"CTR-{number:07d}-{rng.getrandbits(16):04x}"
        self.customer = f"CUST-{rng.randrange(10_000):04d}"
        self.project = f"PRJ-{rng.getrandbits(28):07x}"
        self.currency = rng.choice(_CURRENCIES)
        self.erp = rng.choice(_ERP)
        self.clm = rng.choice(_CLM)
        self.middleware = rng.choice(_MIDDLEWARE)
        self.sequence = 0
        count = rng.choice((1, 2, 2, 3, 3, 4))
        self.milestones = [
            (f"{self.contract}-M{m + 1}", _money(rng, 5_000, 400_000)) for m in range(count)
        ]

    def _event(self, source: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        self.sequence += 1
        self.clock += timedelta(
            seconds=rng.randrange(30, 36 * 3600), microseconds=rng.randrange(10**6)
        )
        prefix = type_.split(".", maxsplit=1)[0][:3]
        event: dict[str, Any] = {
            "id": f"{prefix}-{rng.getrandbits(40):010x}-{self.number}-{self.sequence}",
            "source": source,
            "type": type_,
            "time": self.clock.astimezone(rng.choice(_OFFSETS)).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        # Events without correlationid resolve through data.contract_id or data.project_id.
        if rng.random() >= 0.07 or not ({"contract_id", "project_id"} & data.keys()):
            event["correlationid"] = self.correlation
        if rng.random() < 0.2:
            trace = f"{rng.getrandbits(128):032x}"
            event["traceparent"] = f"00-{trace}-{rng.getrandbits(64):016x}-01"
        if rng.random() < 0.1:
            event["subject"] = f"{type_} for {self.contract}"
        return event

    def _integration(self, step: str) -> Iterator[dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            yield self._event(
                self.middleware,
                "integration.failed",
                {
                    "step": step,
                    "execution_id": f"EX-{rng.getrandbits(32):08x}",
                    "error": rng.choice(_ERRORS),
                    "retryable": rng.random() < 0.7,
                },
            )
        elif roll < 0.08:
            yield self._event(
                self.middleware,
                "integration.succeeded",
                {"step": step, "execution_id": f"EX-{rng.getrandbits(32):08x}"},
            )
        elif roll < 0.09:
            yield self._event(
                self.middleware,
                "integration.dead_lettered",
                {"step": step, "execution_id": f"EX-{rng.getrandbits(32):08x}", "error": "DLQ"},
            )

    def events(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        signed = self.clock
        yield self._event(
            self.clm,
            "contract.signed",
            {
                "contract_id": self.contract,
                "customer_id": self.customer,
                "contract_value": str(sum(amount for _, amount in self.milestones)),
                "currency": self.currency,
                "legal_entity": rng.choice(_ENTITIES),
                "region": rng.choice(_REGIONS),
                "service_line": rng.choice(_LINES),
                "start_date": (signed + timedelta(days=rng.randrange(1, 30))).date().isoformat(),
                "subcontract": rng.random() < 0.1,
                "milestones": [
                    {
                        "milestone_id": mid,
                        "amount": str(amount),
                        "due_date": (signed + timedelta(days=30 * (i + 1))).date().isoformat(),
                    }
                    for i, (mid, amount) in enumerate(self.milestones)
                ],
            },
        )
        yield from self._integration("customer.synced")
        yield self._event(
            self.erp,
            "customer.synced",
            {"customer_id": self.customer, "erp_customer_id": f"E{rng.randrange(100_000):05d}"},
        )
        yield from self._integration("project.created")
        yield self._event(
            self.erp, "project.created", {"project_id": self.project, "contract_id": self.contract}
        )
        yield self._event(
            self.erp,
            "billing_plan.created",
            {
                "project_id": self.project,
                "milestones": [
                    {"milestone_id": mid, "amount": str(amount)} for mid, amount in self.milestones
                ],
            },
        )
        yield self._event(self.erp, "project.activated", {"project_id": self.project})
        if rng.random() < 0.15:
            amendment = f"AMD-{rng.getrandbits(24):06x}"
            yield self._event(
                self.clm,
                "contract.amended",
                {
                    "contract_id": self.contract,
                    "amendment_id": amendment,
                    "effective_date": self.clock.date().isoformat(),
                    "value_delta": str(_money(rng, -20_000, 60_000)),
                },
            )
            yield self._event(
                self.erp,
                "billing_plan.updated",
                {"amendment_id": amendment, "project_id": self.project},
            )
        for mid, amount in self.milestones:
            yield self._event(
                rng.choice((*_PSA, self.erp)),
                "milestone.completed",
                {"milestone_id": mid, "amount": str(amount), "currency": self.currency},
            )
            yield from self._integration("invoice.posted")
            invoice = f"INV-{rng.getrandbits(32):08x}"
            yield self._event(
                self.erp,
                "invoice.posted",
                {
                    "invoice_id": invoice,
                    "milestone_id": mid,
                    "amount": str(amount),
                    "currency": self.currency,
                    "project_id": self.project,
                },
            )
            if rng.random() < 0.02:
                yield self._event(self.erp, "invoice.disputed", {"invoice_id": invoice})


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low * 100, high * 100)).scaleb(-2)


def generate(count: int, *, seed: int = 20261203) -> Iterator[dict[str, Any]]:
    """``count`` canonical events, all valid, ``(source, id)`` unique, the same for a seed."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    produced = 0
    number = 0
    while True:
        deal = _Deal(rng, number, start + timedelta(minutes=7 * number))
        number += 1
        for event in deal.events():
            yield event
            produced += 1
            if produced == count:
                return


def write_bodies(
    directory: Path, *, events: int, batch: int, seed: int = 20261203
) -> dict[str, Any]:
    """Write the request bodies (unless the same ones are there already); return the index."""
    index_path = directory / "index.json"
    wanted = {"version": GENERATOR_VERSION, "events": events, "batch": batch, "seed": seed}
    if index_path.exists():
        index: dict[str, Any] = json.loads(index_path.read_text())
        if {key: index.get(key) for key in wanted} == wanted:
            return index
    directory.mkdir(parents=True, exist_ok=True)
    offsets: list[list[int]] = []
    types: dict[str, int] = {}
    position = 0
    with (directory / "bodies.bin").open("wb") as out:
        pending: list[dict[str, Any]] = []
        for event in generate(events, seed=seed):
            types[event["type"]] = types.get(event["type"], 0) + 1
            pending.append(event)
            if len(pending) == batch:
                position = _flush(out, pending, offsets, position)
                pending = []
        if pending:
            _flush(out, pending, offsets, position)
    index = {**wanted, "bodies": offsets, "types": dict(sorted(types.items()))}
    index_path.write_text(json.dumps(index))
    return index


def _flush(out: Any, pending: list[dict[str, Any]], offsets: list[list[int]], position: int) -> int:
    # Money is already a decimal string here: orjson never sees a float.
    body = orjson.dumps(pending)
    out.write(body)
    offsets.append([position, len(body), len(pending)])
    return position + len(body)


def read_bodies(directory: Path) -> Iterator[bytes]:
    index = json.loads((directory / "index.json").read_text())
    with (directory / "bodies.bin").open("rb") as source:
        for offset, length, _ in index["bodies"]:
            source.seek(offset)
            yield source.read(length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    index = write_bodies(args.out, events=args.events, batch=args.batch, seed=args.seed)
    size = sum(length for _, length, _ in index["bodies"])
    print(f"{args.events} events in {len(index['bodies'])} bodies, {size / 1e6:.1f} MB")
    print(json.dumps(index["types"], indent=1))


if __name__ == "__main__":
    main()
