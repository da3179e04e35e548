"""A realistic event store for the probe benchmark, as a file of events in arrival order.

One *deal* is one correlation ID: a ``contract.signed`` (T0) followed by the onboarding stages
(``customer.synced``, ``project.created``, ``billing_plan.created``, ``project.activated``), each
usually in time, sometimes late (after its deadline) and sometimes missing; now and then a
termination, an amendment with its ``billing_plan.updated``, a second ``project.created`` with
another project_id, a billing plan whose milestones differ from the contract's, a contract without
its legal entity; then per milestone a ``milestone.completed`` weeks later and its
``invoice.posted`` (some late or missing, a few disputed); middleware ``integration.*`` events
before stages (successes, failures followed by a retry, dead letters where the stage never came).
About 10 % of the events that carry a contract_id or project_id come without ``correlationid`` and
resolve through that key (some never do: their project.created never came).

Deals start at a steady rate over a year. Events arrive a few seconds to minutes after their event
time, 2 % of them hours or days late, so the store is in arrival order, not event-time order, and a
deal's events are spread over months of ingest. The events are written as
``<arrival µs>\\t<JSON>`` lines, sorted by arrival with GNU sort (bounded memory), so that the
first N lines are "the store up to now" and the lines after them are what arrives next.

    .venv/bin/python bench/probe/generate.py --events 50000 --out /tmp/sw-probe-events.tsv
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

#: Bump when the generated events change, so that cached files are made again.
GENERATOR_VERSION = 1

#: Average events per deal, measured on this generator; sets the rate at which deals start so that
#: ``events`` of them fill about a year.
EVENTS_PER_DEAL = 11.8
HISTORY = timedelta(days=365)
START = datetime(2025, 12, 1, tzinfo=UTC)
#: Deals keep starting this long after the store's last event, for what arrives next.
TAIL = timedelta(days=150)

_CLM = ("clm/ironclad", "clm/docusign-clm", "clm/icertis")
_ERP = ("erp/netsuite", "erp/netsuite", "erp/sap-s4", "erp/dynamics365/emea")
_PSA = ("psa/kantata",)
_MIDDLEWARE = ("middleware/mulesoft", "middleware/boomi", "middleware/workato")
_REGIONS = ("EMEA", "NA", "APAC", "LATAM")
_ENTITIES = ("DE01", "DE02", "US01", "UK01", "SG01", "BR01")
_LINES = ("implementation", "managed_services", "advisory", "training")
_CURRENCIES = ("EUR", "USD", "GBP", "SGD")
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Mix:
    """The shape of a deal. The default is what the probe benchmark measured with; another mix
    (bench/kpis) gets a cache file of its own through ``name``. A zero rate draws no random
    number, so the default mix produces the same events as before it existed."""

    name: str = ""
    #: choices for the number of milestones of a contract
    milestones: tuple[int, ...] = (1, 1, 2, 2, 2, 3, 3, 4)
    #: probability of a first amendment, and of each further one after it
    amendment: float = 0.15
    more_amendments: float = 0.0
    currencies: tuple[str, ...] = _CURRENCIES
    #: share of middleware ``integration.*`` events sent without a correlation ID (they carry no
    #: contract_id or project_id, so they never resolve: uncorrelated events)
    uncorrelated: float = 0.0
    #: average events per deal of this mix, which sets the rate at which deals start
    events_per_deal: float = EVENTS_PER_DEAL


DEFAULT_MIX = Mix()


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low * 100, high * 100)).scaleb(-2)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class _Deal:
    """One correlation ID and its events, each with its event time."""

    def __init__(
        self, rng: random.Random, number: int, t0: datetime, mix: Mix = DEFAULT_MIX
    ) -> None:
        self.rng = rng
        self.mix = mix
        self.number = number
        self.t0 = t0
        self.correlation = f"Q2C-{number:07d}-{rng.getrandbits(24):06X}"
        self.contract = f"CTR-{number:07d}"
        self.project = f"PRJ-{number:07d}"
        self.customer = f"CUST-{rng.randrange(20_000):05d}"
        self.currency = rng.choice(mix.currencies)
        self.clm = rng.choice(_CLM)
        self.erp = rng.choice(_ERP)
        self.middleware = rng.choice(_MIDDLEWARE)
        self.out: list[tuple[datetime, dict[str, Any]]] = []
        self.count = 0

    def emit(
        self,
        source: str,
        type_: str,
        at: datetime,
        data: dict[str, Any],
        *,
        drop: bool = True,
        orphan: bool = False,
    ) -> None:
        rng = self.rng
        self.count += 1
        event: dict[str, Any] = {
            "id": f"{type_.split('.', maxsplit=1)[0][:4]}-{self.number}-{self.count}",
            "source": source,
            "type": type_,
            "time": _iso(at),
            "data": data,
        }
        keyed = "contract_id" in data or "project_id" in data
        if not (orphan or (drop and keyed and rng.random() < 0.1)):
            event["correlationid"] = self.correlation
        if rng.random() < 0.2:
            event["traceparent"] = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
        self.out.append((at, event))

    def integration(
        self, step: str, at: datetime, *, missing: bool, scope: dict[str, str] | None = None
    ) -> None:
        """Middleware events for one stage: mostly none, a success, a failure then a retry that
        succeeded; where the stage never came, often a failure or a dead letter."""
        rng = self.rng
        scope = dict(scope or {})

        def emit(type_: str, when: datetime, **extra: Any) -> None:
            data = {"step": step, "execution_id": f"EX-{rng.getrandbits(32):08x}", **scope, **extra}
            rate = self.mix.uncorrelated
            orphan = bool(rate) and rng.random() < rate
            self.emit(self.middleware, type_, when, data, drop=False, orphan=orphan)

        if missing:
            roll = rng.random()
            if roll < 0.4:
                emit("integration.failed", at, error="503 from ERP", retryable=True)
            elif roll < 0.6:
                emit("integration.dead_lettered", at, error="subsidiary is inactive")
            return
        roll = rng.random()
        if roll < 0.3:
            emit("integration.succeeded", at - timedelta(seconds=rng.randrange(1, 90)))
        elif roll < 0.36:
            emit(
                "integration.failed",
                at - timedelta(minutes=rng.randrange(5, 120)),
                error="timeout after 30s",
                retryable=True,
            )
            emit("integration.succeeded", at - timedelta(seconds=rng.randrange(1, 90)))

    def _amends(self, count: int) -> bool:
        """Whether the deal gets an amendment after ``count`` of them."""
        rate = self.mix.amendment if count == 0 else self.mix.more_amendments
        return bool(rate) and self.rng.random() < rate

    def stage(self, base: float, late: float, missing: float, deadline_h: int) -> datetime | None:
        """When a stage is reached (None: never): usually well in time, sometimes after its
        deadline from T0."""
        roll = self.rng.random()
        if roll < missing:
            return None
        if roll < missing + late:
            hours = deadline_h * self.rng.uniform(1.05, 2.5)
        else:
            hours = base * self.rng.lognormvariate(0, 0.5)
            hours = min(hours, deadline_h * 0.95)
        return self.t0 + timedelta(hours=hours)

    def build(self) -> list[tuple[datetime, dict[str, Any]]]:
        rng = self.rng
        t0 = self.t0
        milestones = [
            (f"{self.contract}-M{i + 1}", _money(rng, 5_000, 300_000))
            for i in range(rng.choice(self.mix.milestones))
        ]
        contract: dict[str, Any] = {
            "contract_id": self.contract,
            "customer_id": self.customer,
            "contract_value": str(sum(amount for _, amount in milestones)),
            "currency": self.currency,
            "legal_entity": rng.choice(_ENTITIES),
            "region": rng.choice(_REGIONS),
            "service_line": rng.choice(_LINES),
            "start_date": (t0 + timedelta(days=rng.randrange(1, 30))).date().isoformat(),
            "subcontract": rng.random() < 0.1,
            "milestones": [
                {
                    "milestone_id": mid,
                    "amount": str(amount),
                    "due_date": (t0 + timedelta(days=30 * (i + 1))).date().isoformat(),
                }
                for i, (mid, amount) in enumerate(milestones)
            ],
        }
        if rng.random() < 0.01:
            del contract["legal_entity"]  # contract_data_incomplete
        self.emit(self.clm, "contract.signed", t0, contract, drop=False)

        terminated = None
        if rng.random() < 0.015:
            terminated = t0 + timedelta(hours=rng.uniform(2, 400))

        def until(at: datetime | None) -> datetime | None:
            # after a termination the ERP stops (mostly)
            return None if at is None or (terminated is not None and at > terminated) else at

        synced = until(self.stage(1.0, 0.04, 0.02, 4))
        self.integration("customer.synced", synced or t0 + _HOUR, missing=synced is None)
        if synced is not None:
            self.emit(
                self.erp,
                "customer.synced",
                synced,
                {"customer_id": self.customer, "erp_customer_id": f"E{self.number:07d}"},
            )
        created = until(self.stage(6.0, 0.04, 0.02, 24))
        self.integration("project.created", created or t0 + 6 * _HOUR, missing=created is None)
        if created is not None:
            self.emit(
                self.erp,
                "project.created",
                created,
                {"project_id": self.project, "contract_id": self.contract},
            )
            if rng.random() < 0.005:  # duplicate_project
                self.emit(
                    self.erp,
                    "project.created",
                    created + timedelta(hours=rng.uniform(1, 30)),
                    {"project_id": f"{self.project}-B", "contract_id": self.contract},
                )
        plan = until(self.stage(14.0, 0.04, 0.03, 48))
        if created is not None and plan is not None:
            planned = [{"milestone_id": mid, "amount": str(amount)} for mid, amount in milestones]
            if rng.random() < 0.02:  # term_mismatch
                planned[0]["amount"] = str(milestones[0][1] + 1000)
            self.integration("billing_plan.created", max(plan, created), missing=False)
            self.emit(
                self.erp,
                "billing_plan.created",
                max(plan, created),
                {"project_id": self.project, "milestones": planned},
            )
        activated = until(self.stage(40.0, 0.05, 0.03, 72))
        if created is not None and activated is not None:
            self.emit(
                self.erp, "project.activated", max(activated, created), {"project_id": self.project}
            )
        if terminated is not None:
            self.emit(self.clm, "contract.terminated", terminated, {"contract_id": self.contract})
            return self.out

        amendments = 0
        while self._amends(amendments):
            amendments += 1
            amendment = f"AMD-{self.number:07d}" + (f"-{amendments}" if amendments > 1 else "")
            amended = t0 + timedelta(days=rng.uniform(5, 120))
            self.emit(
                self.clm,
                "contract.amended",
                amended,
                {
                    "contract_id": self.contract,
                    "amendment_id": amendment,
                    "effective_date": (amended + timedelta(days=rng.randrange(0, 10)))
                    .date()
                    .isoformat(),
                    "value_delta": str(_money(rng, -20_000, 60_000)),
                },
            )
            roll = rng.random()
            if roll >= 0.03:
                hours = rng.uniform(25, 60) if roll < 0.08 else rng.uniform(0.5, 20)
                self.emit(
                    self.erp,
                    "billing_plan.updated",
                    amended + timedelta(hours=hours),
                    {"amendment_id": amendment, "project_id": self.project},
                )
        for i, (mid, amount) in enumerate(milestones):
            done = t0 + timedelta(days=30 * (i + 1) + rng.uniform(-5, 20))
            self.emit(
                rng.choice((*_PSA, self.erp)),
                "milestone.completed",
                done,
                {"milestone_id": mid, "amount": str(amount), "currency": self.currency},
            )
            roll = rng.random()
            missing = roll < 0.02
            hours = rng.uniform(125, 300) if roll < 0.06 else rng.uniform(2, 100)
            invoiced = done + timedelta(hours=hours)
            scope = {"milestone_id": mid} if rng.random() < 0.5 else None
            self.integration("invoice.posted", invoiced, missing=missing, scope=scope)
            if missing:
                continue
            invoice = f"INV-{self.number:07d}-{i + 1}"
            self.emit(
                self.erp,
                "invoice.posted",
                invoiced,
                {
                    "invoice_id": invoice,
                    "milestone_id": mid,
                    "amount": str(amount),
                    "currency": self.currency,
                    "project_id": self.project,
                },
            )
            if rng.random() < 0.02:
                self.emit(
                    self.erp,
                    "invoice.disputed",
                    invoiced + timedelta(days=rng.uniform(1, 10)),
                    {"invoice_id": invoice},
                )
        return self.out


def _arrival(rng: random.Random, at: datetime) -> datetime:
    if rng.random() < 0.02:
        return at + timedelta(hours=rng.uniform(1, 96))  # a late batch, a replay
    return at + timedelta(seconds=rng.uniform(1, 300))


def deals(
    events: int, seed: int, mix: Mix = DEFAULT_MIX
) -> Iterator[list[tuple[datetime, dict[str, Any]]]]:
    """Deals at a steady rate over a year, and on for ``TAIL`` after it."""
    rng = random.Random(seed)
    step = HISTORY / (events / mix.events_per_deal)
    end = START + HISTORY + TAIL
    number = 0
    while True:
        t0 = START + step * number + timedelta(seconds=rng.uniform(0, step.total_seconds()))
        if t0 > end:
            return
        yield _Deal(rng, number, t0, mix).build()
        number += 1


def _epoch_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def write(path: Path, *, events: int, seed: int, mix: Mix = DEFAULT_MIX) -> dict[str, int]:
    """Write the sorted event file (all deals, the store's N events and what comes after)."""
    rng = random.Random(seed + 1)
    counts = {"deals": 0, "events": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as raw:
        for deal in deals(events, seed, mix):
            counts["deals"] += 1
            for at, event in deal:
                counts["events"] += 1
                line = b"%017d\t%s\n" % (_epoch_us(_arrival(rng, at)), orjson.dumps(event))
                raw.write(line)
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            ["sort", "-S", "256M", "-t", "\t", "-k1,1", "-o", str(path), raw.name],
            check=True,
            env=env,
        )
    finally:
        os.unlink(raw.name)
    return counts


def cached(directory: Path, *, events: int, seed: int, mix: Mix = DEFAULT_MIX) -> Path:
    named = f"-{mix.name}" if mix.name else ""
    path = directory / f"events-{events}-{seed}{named}-v{GENERATOR_VERSION}.tsv"
    if not path.exists():
        write(path, events=events, seed=seed, mix=mix)
    return path


def read(path: Path) -> Iterator[tuple[int, bytes]]:
    """(arrival µs, event JSON) in arrival order."""
    with path.open("rb") as lines:
        for line in lines:
            arrival, _, body = line.partition(b"\t")
            yield int(arrival), body


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    counts = write(args.out, events=args.events, seed=args.seed)
    types: dict[str, int] = {}
    missing_correlation = 0
    for _, body in read(args.out):
        event = orjson.loads(body)
        types[event["type"]] = types.get(event["type"], 0) + 1
        missing_correlation += "correlationid" not in event
    print(counts, f"events per deal {counts['events'] / counts['deals']:.2f}")
    print(f"without correlationid: {missing_correlation / counts['events']:.1%}")
    for name, count in sorted(types.items()):
        print(f"  {name:28} {count}")


if __name__ == "__main__":
    main()
