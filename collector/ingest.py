"""The ingest service: judge each received item on its own, store the valid ones, dead-letter the
rest with their reason, all in one transaction that commits before the caller answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from collector.unreported import resolve_arrived
from core import deadletters, jsoncodec
from core.db import Database
from core.deadletters import NewDeadLetter
from core.events import CanonicalEvent, EventRejected, validate_event
from core.eventstore import store_events
from core.instruments import Instruments


@dataclass(frozen=True)
class Rejection:
    index: int
    id: str | None
    error: str


@dataclass
class Judgement:
    """Items split into valid events (with their position) and rejections (with the raw item)."""

    valid: list[tuple[int, CanonicalEvent]] = field(default_factory=list)
    rejected: list[tuple[Rejection, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    #: events stored now (for per-source and per-type counting by the caller)
    stored: list[CanonicalEvent]
    duplicated: list[CanonicalEvent] = field(default_factory=list)
    #: (source, type) of each rejected item, as far as they could be read
    rejected_labels: list[tuple[object, object]] = field(default_factory=list)

    def as_response(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"index": r.index, "id": r.id, "error": r.error} for r in self.rejected],
        }


def judge(items: Sequence[Any], *, require_specversion: bool) -> Judgement:
    """Pure: validate every item; one bad item never affects another."""
    judgement = Judgement()
    for index, item in enumerate(items):
        try:
            judgement.valid.append(
                (index, validate_event(item, require_specversion=require_specversion))
            )
        except EventRejected as rejected:
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str):  # shown in a JSON answer: escape lone surrogates
                item_id = item_id.encode("utf-8", "backslashreplace").decode("utf-8")
            judgement.rejected.append(
                (
                    Rejection(
                        index, item_id if isinstance(item_id, str) else None, rejected.reason
                    ),
                    item,
                )
            )
    return judgement


def _dead_letter(
    rejection: Rejection, item: Any, *, channel: str, content_type: str | None
) -> NewDeadLetter:
    attributes = item if isinstance(item, dict) else {}
    try:
        raw = jsoncodec.dumps(item)
    except TypeError:  # what orjson cannot write (lone surrogates, deep nesting) the stdlib can
        raw = json.dumps(item, default=str).encode("ascii")
    return NewDeadLetter(
        reason=rejection.error,
        raw=raw,
        channel=channel,
        content_type=content_type,
        batch_index=rejection.index,
        source=attributes.get("source"),
        event_id=attributes.get("id"),
        type=attributes.get("type"),
    )


def ingest(
    database: Database,
    items: Sequence[Any],
    *,
    require_specversion: bool,
    channel: str,
    content_type: str | None,
    now: datetime,
) -> IngestResult:
    """Store what is valid and dead-letter what is not, atomically. When this returns, everything
    it reports as accepted or rejected is durably stored; on error nothing was written."""
    judgement = judge(items, require_specversion=require_specversion)
    with database.write() as connection:
        return store_judged(
            connection, judgement, channel=channel, content_type=content_type, now=now
        )


def store_judged(
    connection: Connection,
    judgement: Judgement,
    *,
    channel: str,
    content_type: str | None,
    now: datetime,
    resolves_unreported: bool = True,
) -> IngestResult:
    """The store half of :func:`ingest`, in the caller's transaction (the pull connectors and the
    reconciliation write their cursor or findings in the same one). A duplicate of an event that
    a reconciliation stored resolves its ``unreported_record`` finding: the source's own delivery
    arrived (late); the reconciliation itself passes ``resolves_unreported=False``."""
    events = [event for _, event in judgement.valid]
    letters = [
        _dead_letter(rejection, item, channel=channel, content_type=content_type)
        for rejection, item in judgement.rejected
    ]
    outcome = store_events(connection, events, received_at=now)
    deadletters.add(connection, letters, received_at=now)
    if resolves_unreported and outcome.duplicates:
        resolve_arrived(connection, [events[i] for i in outcome.duplicates], now=now)
    return IngestResult(
        accepted=len(outcome.stored),
        duplicates=len(outcome.duplicates),
        rejected=[rejection for rejection, _ in judgement.rejected],
        stored=[events[i] for i in outcome.stored],
        duplicated=[events[i] for i in outcome.duplicates],
        rejected_labels=[(letter.source, letter.type) for letter in letters],
    )


def count(result: IngestResult, instruments: Instruments, now: datetime) -> None:
    """Count what one ingest received, in the process's own metrics."""
    for event in result.stored:
        instruments.received(
            event.source, event.type, "accepted", (now - event.time).total_seconds()
        )
    for event in result.duplicated:
        instruments.received(event.source, event.type, "duplicate")
    for source, event_type in result.rejected_labels:
        instruments.received(source, event_type, "rejected")


def dead_letter_body(
    database: Database,
    body: bytes,
    *,
    reason: str,
    channel: str,
    content_type: str | None,
    now: datetime,
) -> None:
    """Keep a whole request body that could not be read as events (not JSON, wrong mode)."""
    with database.write() as connection:
        deadletters.add(
            connection,
            [NewDeadLetter(reason=reason, raw=body, channel=channel, content_type=content_type)],
            received_at=now,
        )


@dataclass(frozen=True)
class Part:
    """The items of one received message, judged on their own as one request's would be."""

    items: Sequence[Any]
    require_specversion: bool
    content_type: str | None = None


def ingest_parts(
    database: Database,
    parts: Sequence[Part],
    *,
    unreadable: Sequence[NewDeadLetter] = (),
    channel: str,
    now: datetime,
) -> IngestResult:
    """:func:`ingest` for several messages (a broker consumer's batch) in ONE transaction, with
    the whole messages that could not be read as events (``unreadable``) dead-lettered in it too:
    when this returns, every message of the batch is durably stored and may be acknowledged; on
    error nothing was written. A repeated ``(source, id)`` across the messages is a duplicate.
    The result sums the messages (a rejection's index is its place in its own message)."""
    judgements = [judge(part.items, require_specversion=part.require_specversion) for part in parts]
    valid = Judgement(valid=[pair for judgement in judgements for pair in judgement.valid])
    letters = [
        _dead_letter(rejection, item, channel=channel, content_type=part.content_type)
        for part, judgement in zip(parts, judgements, strict=True)
        for rejection, item in judgement.rejected
    ]
    with database.write() as connection:
        stored = store_judged(connection, valid, channel=channel, content_type=None, now=now)
        deadletters.add(connection, [*unreadable, *letters], received_at=now)
    return IngestResult(
        accepted=stored.accepted,
        duplicates=stored.duplicates,
        rejected=[rejection for judgement in judgements for rejection, _ in judgement.rejected],
        stored=stored.stored,
        duplicated=stored.duplicated,
        rejected_labels=[(letter.source, letter.type) for letter in letters],
    )
