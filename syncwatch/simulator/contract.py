"""One contract's story (pure): signature, onboarding through the middleware to the ERP,
milestones and invoices, an amendment, and the faults the firm's rates pick for it."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from syncwatch.simulator.traffic import (
    DEADLINES,
    ONBOARDING,
    USUAL_HOURS,
    Builder,
    D,
    Delivery,
    Event,
    H,
    Recovery,
    stamp,
)

#: The faults that strike one stage (onboarding) or the first invoice, the first that applies.
STAGE_FAULTS = ("data_error", "dead_letter", "middleware_failure", "stuck_stage")
#: Those that leave a dead letter for a replay.
DEAD_LETTERS = ("data_error", "dead_letter")


def data_error(customer_id: str) -> str:
    """Why the ERP refuses a record: data that no retry changes."""
    return f"ERP refused the record: customer {customer_id} is blocked for posting (HTTP 422)"


class ContractStory:
    """One contract and everything that follows from it: its events, faults included."""

    def __init__(self, builder: Builder, number: int, t0: datetime) -> None:
        self.b = builder
        rng = builder.rng
        firm = builder.firm
        self.t0 = t0
        self.corr = f"Q2C-{builder.tag}-{number:05d}"
        self.contract_id = f"CTR-{builder.tag}-{number:05d}"
        self.project_id = f"PRJ-{builder.tag}-{number:05d}"
        self.customer_id = f"CUST-{rng.randrange(1, 400 + int(firm.contracts_per_week * 20)):05d}"
        self.region = rng.choice(sorted(firm.regions))
        self.erp, self.currency, self.entity = firm.regions[self.region]
        self.clm = rng.choice(firm.clm_sources)
        self.middleware = rng.choice(firm.middleware_sources)
        self.service_line = rng.choice(firm.service_lines)
        low, high = float(firm.min_value), float(firm.max_value)
        value = Decimal(round(rng.uniform(low, high) / 500) * 500).quantize(Decimal("0.01"))
        self.value = max(value, Decimal("500.00"))
        self.milestones = self._milestones()
        faults = [name for name in firm.faults if builder.chance(name)]
        self.faults = set(faults)
        self.skew = builder.hours(2 / 60, 9 / 60) if "erp_clock_skew" in self.faults else None
        self.mine: list[Delivery] = []
        self.erp_stage_deliveries: list[Delivery] = []

    def _milestones(self) -> list[dict[str, Any]]:
        rng = self.b.rng
        count = rng.randint(2, 5)
        shares = [rng.uniform(0.5, 1.5) for _ in range(count)]
        total = sum(shares)
        amounts = [
            (self.value * Decimal(share / total)).quantize(Decimal("0.01")) for share in shares
        ]
        amounts[-1] = self.value - sum(amounts[:-1])
        due = self.t0
        milestones = []
        for index, amount in enumerate(amounts, start=1):
            due = due + timedelta(weeks=rng.uniform(1.5, 5))
            milestones.append(
                {
                    "milestone_id": f"{self.contract_id}-M{index}",
                    "amount": str(amount),
                    "due_date": due.date().isoformat(),
                }
            )
        return milestones

    # --- emitting ---

    def emit(
        self,
        source: str,
        type_: str,
        when: datetime,
        data: dict[str, Any],
        *,
        correlated: bool = True,
        deliver: bool = True,
    ) -> Event:
        kind = source.split("/", 1)[0]
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)  # what stamp() keeps
        time = when - self.skew if (self.skew is not None and kind == "erp") else when
        event: Event = {
            "specversion": "1.0",
            "id": self.b.next_id(kind.upper()),
            "source": source,
            "type": type_,
            "time": stamp(time),
            "data": data,
        }
        if correlated:
            event["correlationid"] = self.corr
        if deliver:
            delivery = Delivery(when, event)
            self.mine.append(delivery)
            if kind == "erp" and type_ in ONBOARDING:
                self.erp_stage_deliveries.append(delivery)
        return event

    def integration(
        self,
        outcome: str,
        step: str,
        when: datetime,
        execution: str,
        *,
        refused: bool = False,
        **data: Any,
    ) -> None:
        """A middleware event; ``refused``: the ERP refused the record (a data error, which no
        retry cures) rather than timing out."""
        payload: dict[str, Any] = {"step": step, "execution_id": execution, **data}
        cause = data_error(self.customer_id) if refused else "ERP request timed out (HTTP 504)"
        if outcome == "failed":
            payload.update(error=cause, retryable=not refused)
        elif outcome == "dead_lettered":
            payload["error"] = (
                f"not retryable: {cause}" if refused else f"retries exhausted: {cause}"
            )
        self.emit(self.middleware, f"integration.{outcome}", when, payload)

    def stage_data(self, stage: str) -> dict[str, Any]:
        if stage == "customer.synced":
            return {"customer_id": self.customer_id, "erp_customer_id": f"E{self.customer_id[5:]}"}
        if stage == "project.created":
            return {"project_id": self.project_id, "contract_id": self.contract_id}
        if stage == "billing_plan.created":
            plan = [
                {"milestone_id": m["milestone_id"], "amount": m["amount"]} for m in self.milestones
            ]
            if "term_mismatch" in self.faults:
                if self.b.rng.random() < 0.5 and len(plan) > 1:
                    plan.pop()
                else:
                    changed = Decimal(plan[0]["amount"]) + Decimal(
                        self.b.rng.choice([-1, 1]) * 2500
                    )
                    plan[0] = {**plan[0], "amount": str(changed)}
            return {"project_id": self.project_id, "milestones": plan}
        return {"project_id": self.project_id}

    # --- the story ---

    def play(self) -> None:
        self.signed()
        chain = self.onboarding()
        if chain is not None:
            self.milestone_billing(chain)
        self.delivery_faults()
        self.b.scenario.deliveries.extend(self.mine)

    def signed(self) -> None:
        data: dict[str, Any] = {
            "contract_id": self.contract_id,
            "customer_id": self.customer_id,
            "contract_value": str(self.value),
            "currency": self.currency,
            "legal_entity": self.entity,
            "region": self.region,
            "service_line": self.service_line,
            "start_date": (self.t0 + D * 7).date().isoformat(),
            "subcontract": self.b.rng.random() < 0.1,
            "milestones": self.milestones,
        }
        if "incomplete_contract" in self.faults:
            del data[self.b.rng.choice(["contract_value", "currency", "legal_entity"])]
        self.emit(self.clm, "contract.signed", self.t0, data)

    def onboarding(self) -> datetime | None:
        """The four onboarding stages; the activation time, or None when it never came."""
        rng = self.b.rng
        offsets = [self.b.hours(*USUAL_HOURS[stage]) for stage in ONBOARDING]
        stage_fault = next((f for f in STAGE_FAULTS if f in self.faults), None)
        target = rng.randrange(len(ONBOARDING)) if stage_fault else -1
        missing = "missing_correlation" in self.faults
        shift = timedelta(0)
        held: list[Event] = []
        dead: tuple[str, datetime] | None = None
        last: datetime | None = None
        for index, (stage, offset) in enumerate(zip(ONBOARDING, offsets, strict=True)):
            when = self.t0 + offset + shift
            if dead is not None:
                held.append(self.emit(self.erp, stage, when, self.stage_data(stage), deliver=False))
                continue
            if index == target and stage_fault == "stuck_stage":
                if rng.random() < 0.35:
                    return None  # this stage and the ones after it never come
                late = DEADLINES[stage] - offset + self.b.hours(3, 8 * 24)
                shift += late
                when += late
            execution = self.b.next_id("EXEC")
            if index == target and stage_fault == "middleware_failure":
                self.integration("failed", stage, when, execution)
                retry = self.b.hours(0.25, 5)
                shift += retry
                when += retry
                execution = self.b.next_id("EXEC")
            if index == target and stage_fault in DEAD_LETTERS:
                refused = stage_fault == "data_error"
                self.integration("failed", stage, when, execution, refused=refused)
                self.integration(
                    "dead_lettered",
                    stage,
                    when + self.b.hours(0.1, 0.5),
                    execution,
                    refused=refused,
                )
                dead = (execution, when)
                held.append(self.emit(self.erp, stage, when, self.stage_data(stage), deliver=False))
                continue
            self.integration("succeeded", stage, when - timedelta(seconds=20), execution)
            correlated = not (missing and stage != "customer.synced" and rng.random() < 0.6)
            self.emit(self.erp, stage, when, self.stage_data(stage), correlated=correlated)
            if stage == "project.created" and "duplicate_project" in self.faults:
                again = when + self.b.hours(0.1, 1.5)
                self.integration("succeeded", stage, again, self.b.next_id("EXEC"))
                data = {"project_id": f"{self.project_id}-B", "contract_id": self.contract_id}
                self.emit(self.erp, stage, again, data)
            last = when
        if dead is not None:
            execution, when = dead
            self.b.scenario.recoveries[execution] = Recovery(
                self.middleware,
                held[0]["type"],
                self.corr,
                tuple(held),
                fails_again=int(stage_fault == "data_error"),
            )
            if rng.random() < 0.5:
                return None  # nobody re-ran it: stuck on integration_oncall until a replay
            # on-call re-ran it by hand a few days later
            fixed = when + self.b.hours(24, 6 * 24)
            self.integration("succeeded", held[0]["type"], fixed, self.b.next_id("EXEC"))
            for gap, event in enumerate(held):
                at = fixed + timedelta(hours=2 * gap, seconds=30)
                self.emit(self.erp, event["type"], at, event["data"])
            return fixed + timedelta(hours=2 * len(held))
        if "unresolvable_correlation" in self.faults:
            # the activation names a project nobody created: it stays uncorrelated, the flow stuck
            self.mine = [d for d in self.mine if d.event["type"] != "project.activated"]
            self.erp_stage_deliveries = [
                d for d in self.erp_stage_deliveries if d.event["type"] != "project.activated"
            ]
            when = last or self.t0
            data = {"project_id": f"{self.project_id}X"}
            self.emit(self.erp, "project.activated", when, data, correlated=False)
            return None
        return last

    def milestone_billing(self, activated: datetime) -> None:
        rng = self.b.rng
        conflict = "amendment_conflict" in self.faults
        stage_fault = next((f for f in STAGE_FAULTS if f in self.faults), None)
        invoice_fault = stage_fault if rng.random() < 0.4 else None
        amendment_at = None
        if rng.random() < 0.2 or conflict:
            first_due = datetime.fromisoformat(self.milestones[0]["due_date"]).replace(
                tzinfo=self.t0.tzinfo
            )
            amendment_at = max(activated + H, first_due - self.b.hours(24, 96))
            if not conflict:
                amendment_at = activated + self.b.hours(24, 30 * 24)
        completed_at = activated
        invoices: list[datetime] = []
        for index, milestone in enumerate(self.milestones):
            due = datetime.fromisoformat(milestone["due_date"]).replace(tzinfo=self.t0.tzinfo)
            completed_at = max(completed_at + H, due + self.b.hours(8, 40))
            milestone_id = milestone["milestone_id"]
            data: dict[str, Any] = {
                "milestone_id": milestone_id,
                "amount": milestone["amount"],
                "currency": self.currency,
                "project_id": self.project_id,
            }
            self.emit(self.erp, "milestone.completed", completed_at, data)
            invoiced = completed_at + self.b.hours(2, 96)
            execution = self.b.next_id("EXEC")
            if index == 0 and invoice_fault == "stuck_stage":
                if rng.random() < 0.4:
                    continue
                invoiced = completed_at + DEADLINES["invoice.posted"] + self.b.hours(4, 10 * 24)
            if index == 0 and invoice_fault in ("middleware_failure", *DEAD_LETTERS):
                refused = invoice_fault == "data_error"
                self.integration(
                    "failed",
                    "invoice.posted",
                    invoiced,
                    execution,
                    refused=refused,
                    milestone_id=milestone_id,
                )
                if invoice_fault in DEAD_LETTERS:
                    self.integration(
                        "dead_lettered",
                        "invoice.posted",
                        invoiced + H / 4,
                        execution,
                        refused=refused,
                        milestone_id=milestone_id,
                    )
                    invoice = self._invoice(milestone, invoiced, deliver=False)
                    self.b.scenario.recoveries[execution] = Recovery(
                        self.middleware,
                        "invoice.posted",
                        self.corr,
                        (invoice,),
                        fails_again=int(refused),
                    )
                    continue
                invoiced += self.b.hours(0.5, 6)
                execution = self.b.next_id("EXEC")
            self.integration(
                "succeeded",
                "invoice.posted",
                invoiced - timedelta(seconds=20),
                execution,
                milestone_id=milestone_id,
            )
            self._invoice(milestone, invoiced)
            invoices.append(invoiced)
        if amendment_at is not None:
            self.amendment(amendment_at, conflict, invoices)

    def _invoice(self, milestone: dict[str, Any], when: datetime, *, deliver: bool = True) -> Event:
        invoice_id = f"INV-{milestone['milestone_id']}"
        data = {
            "invoice_id": invoice_id,
            "milestone_id": milestone["milestone_id"],
            "amount": milestone["amount"],
            "currency": self.currency,
            "project_id": self.project_id,
        }
        correlated = not ("missing_correlation" in self.faults and self.b.rng.random() < 0.5)
        event = self.emit(
            self.erp, "invoice.posted", when, data, correlated=correlated, deliver=deliver
        )
        if deliver and self.b.rng.random() < 0.06:
            disputed = when + self.b.hours(24, 20 * 24)
            self.emit(self.erp, "invoice.disputed", disputed, {"invoice_id": invoice_id})
        return event

    def amendment(self, when: datetime, conflict: bool, invoices: list[datetime]) -> None:
        """An amendment and its billing plan update. Without the conflict fault no invoice is
        posted while it propagates (else it is dropped); with it, the update never comes or
        comes days after an invoice."""
        updated = when + self.b.hours(1, 20)
        if not conflict:
            for _ in range(5):
                clash = [t for t in invoices if when <= t <= updated]
                if not clash:
                    break
                when = max(clash) + self.b.hours(1, 48)
                updated = when + self.b.hours(1, 20)
            else:
                return
        amendment_id = f"{self.contract_id}-A1"
        delta = Decimal(self.b.rng.choice([-1, 1]) * self.b.rng.randrange(5, 60) * 1000)
        self.emit(
            self.clm,
            "contract.amended",
            when,
            {
                "contract_id": self.contract_id,
                "amendment_id": amendment_id,
                "effective_date": stamp(when),
                "value_delta": str(delta.quantize(Decimal("0.01"))),
            },
        )
        if conflict:
            after = [t for t in invoices if t >= when]
            if self.b.rng.random() < 0.5 or not after:
                return  # never propagated
            updated = max(updated, after[0] + self.b.hours(24, 5 * 24))
        execution = self.b.next_id("EXEC")
        self.integration(
            "succeeded",
            "billing_plan.updated",
            updated - timedelta(seconds=20),
            execution,
            amendment_id=amendment_id,
        )
        data = {"amendment_id": amendment_id, "project_id": self.project_id}
        self.emit(self.erp, "billing_plan.updated", updated, data)

    def delivery_faults(self) -> None:
        rng = self.b.rng
        if "out_of_order" in self.faults and len(self.erp_stage_deliveries) >= 2:
            index = rng.randrange(len(self.erp_stage_deliveries) - 1)
            early, later = self.erp_stage_deliveries[index], self.erp_stage_deliveries[index + 1]
            self._redeliver(early, later.at + self.b.hours(0.05, 2))
        if "late_delivery" in self.faults:
            chosen = rng.choice(self.mine[1:] or self.mine)
            self._redeliver(chosen, chosen.at + self.b.hours(2, 4 * 24))
        if "duplicate_delivery" in self.faults:
            chosen = rng.choice(self.mine)
            self.mine.append(Delivery(chosen.at + self.b.hours(0.02, 6), chosen.event))

    def _redeliver(self, delivery: Delivery, at: datetime) -> None:
        self.mine = [d for d in self.mine if d is not delivery]
        self.mine.append(Delivery(at, delivery.event))
