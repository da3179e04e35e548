"""Retrying a dead letter after the mapping or the data was fixed: its content (or a corrected
replacement given by the operator) goes through the same validation and dedup as any event. A
retry is all or nothing: either every event in the dead letter is stored (or found a duplicate) and
the dead letter is marked retried, or nothing is stored and the new reason is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from collector.ingest import judge
from collector.unreported import resolve_arrived
from core import audit, deadletters, jsoncodec
from core.db import Database
from core.errors import InvalidInput
from core.eventstore import store_events
from core.tables import events as events_table


@dataclass(frozen=True)
class RetryResult:
    dead_letter_id: int
    accepted: int
    duplicates: int


def _content(raw: bytes, replacement: Any | None) -> list[Any]:
    value = replacement
    if value is None:
        try:
            value = jsoncodec.loads(raw)
        except ValueError as exc:
            raise _Unfixed(f"still not valid JSON: {exc}") from exc
    if isinstance(value, list):
        return value
    return [value]


class _Unfixed(Exception):
    pass


def retry_dead_letter(
    database: Database,
    letter_id: int,
    *,
    replacement: Any | None,
    actor: str,
    now: datetime,
) -> RetryResult:
    with database.read() as connection:
        letter = deadletters.get(connection, letter_id)
    reason: str | None = None
    try:
        items = _content(letter.raw, replacement)
        judgement = judge(items, require_specversion=False)
        if judgement.rejected:
            reason = "; ".join(
                f"[{r.index}] {r.error}" if len(items) > 1 else r.error
                for r, _ in judgement.rejected
            )
    except _Unfixed as unfixed:
        reason = str(unfixed)
    details: dict[str, Any] = {"replacement": replacement is not None}
    with database.write() as connection:
        deadletters.claim_for_retry(connection, letter_id)
        if reason is not None:
            deadletters.mark_failed_attempt(connection, letter_id, at=now, by=actor, reason=reason)
            audit.record(
                connection,
                at=now,
                actor=actor,
                action="dead_letter.retry_failed",
                target_type="dead_letter",
                target_id=str(letter_id),
                details={**details, "reason": reason},
            )
        else:
            batch = [event for _, event in judgement.valid]
            outcome = store_events(connection, batch, received_at=now)
            if outcome.duplicates:  # a late delivery of a reconciled record
                resolve_arrived(connection, [batch[i] for i in outcome.duplicates], now=now)
            seq = None
            if len(batch) == 1:
                seq = connection.execute(
                    sa.select(events_table.c.seq).where(
                        events_table.c.source == batch[0].source,
                        events_table.c.event_id == batch[0].id,
                    )
                ).scalar_one()
            deadletters.mark_retried(connection, letter_id, at=now, by=actor, event_seq=seq)
            audit.record(
                connection,
                at=now,
                actor=actor,
                action="dead_letter.retry",
                target_type="dead_letter",
                target_id=str(letter_id),
                details={
                    **details,
                    "accepted": len(outcome.stored),
                    "duplicates": len(outcome.duplicates),
                },
            )
    if reason is not None:
        raise InvalidInput(
            f"dead letter {letter_id} is still invalid: {reason}",
            details={"dead_letter_id": letter_id, "reason": reason},
        )
    return RetryResult(letter_id, len(outcome.stored), len(outcome.duplicates))
