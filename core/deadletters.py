"""The dead-letter store: every rejected input, kept with its raw bytes and the reason, until it is
retried successfully. Nothing rejected is ever dropped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.errors import Conflict, NotFound
from core.tables import dead_letters

PENDING = "pending"
RETRIED = "retried"


@dataclass(frozen=True)
class NewDeadLetter:
    reason: str
    raw: bytes
    channel: str
    content_type: str | None = None
    batch_index: int | None = None
    source: str | None = None
    event_id: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_at: datetime
    channel: str
    content_type: str | None
    batch_index: int | None
    source: str | None
    event_id: str | None
    type: str | None
    reason: str
    raw: bytes
    status: str
    attempts: int
    last_attempt_at: datetime | None
    retried_by: str | None
    event_seq: int | None


def _clip(value: Any, size: int = 255) -> str | None:
    """What could be read of an identifying attribute, shortened to fit its column."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    # A text column takes neither NUL characters (PostgreSQL) nor lone surrogates (not UTF-8).
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:size]


def add(connection: Connection, letters: Sequence[NewDeadLetter], *, received_at: datetime) -> None:
    if not letters:
        return
    connection.execute(
        dead_letters.insert(),
        [
            {
                "received_at": received_at,
                "channel": letter.channel,
                "content_type": _clip(letter.content_type),
                "batch_index": letter.batch_index,
                "source": _clip(letter.source),
                "event_id": _clip(letter.event_id),
                "type": _clip(letter.type),
                "reason": letter.reason,
                "raw": letter.raw,
            }
            for letter in letters
        ],
    )


def get(connection: Connection, letter_id: int) -> DeadLetter:
    row = connection.execute(sa.select(dead_letters).where(dead_letters.c.id == letter_id)).first()
    if row is None:
        raise NotFound(f"no dead letter {letter_id}")
    return DeadLetter(**row._mapping)


def listing(
    connection: Connection,
    *,
    status: str | None = PENDING,
    source: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[DeadLetter]:
    """Newest first; page with ``before_id``."""
    query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(dead_letters.c.status == status)
    if source is not None:
        query = query.where(dead_letters.c.source == source)
    if since is not None:
        query = query.where(dead_letters.c.received_at >= since)
    if before_id is not None:
        query = query.where(dead_letters.c.id < before_id)
    return [DeadLetter(**row._mapping) for row in connection.execute(query)]


#: The bounded reason codes of dead letters (the reasons themselves are free text).
ENVELOPE_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "data",
    "data_base64",
    "correlationid",
    "traceparent",
)


def reason_code(reason: str) -> str:
    """A bounded code for a rejection reason, for counts and metric labels:
    ``invalid_<attribute>`` for an envelope attribute (``invalid_time``), ``invalid_data`` for
    anything inside ``data``, ``malformed`` for input that is not an event at all (not JSON, the
    wrong shape or content type), ``other`` otherwise."""
    field_name = reason.split(":", 1)[0].strip() if ":" in reason else ""
    if field_name.startswith("data.") or field_name.startswith("data["):
        return "invalid_data"
    if field_name in ENVELOPE_ATTRIBUTES:
        return f"invalid_{field_name}"
    lowered = reason.lower()
    if (
        "not valid json" in lowered
        or "content type" in lowered
        or "must be an event object" in lowered
        or "carries" in lowered
        or "must be a json object" in lowered
        or "binary-mode" in lowered
    ):
        return "malformed"
    return "other"


def count_pending_by_reason(connection: Connection) -> dict[str, int]:
    """Dead letters not yet retried successfully, by :func:`reason_code`."""
    rows = connection.execute(
        sa.select(dead_letters.c.reason, sa.func.count())
        .where(dead_letters.c.status == PENDING)
        .group_by(dead_letters.c.reason)
    )
    counts: dict[str, int] = {}
    for reason, count in rows:
        code = reason_code(reason)
        counts[code] = counts.get(code, 0) + int(count)
    return counts


def claim_for_retry(connection: Connection, letter_id: int) -> DeadLetter:
    """Lock the pending dead letter for this transaction (PostgreSQL row lock; SQLite's write
    transaction is exclusive already) and return it; a retried one cannot be retried again."""
    query = sa.select(dead_letters).where(dead_letters.c.id == letter_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"no dead letter {letter_id}")
    letter = DeadLetter(**row._mapping)
    if letter.status != PENDING:
        raise Conflict(
            f"dead letter {letter_id} was retried already", details={"status": letter.status}
        )
    return letter


def mark_retried(
    connection: Connection, letter_id: int, *, at: datetime, by: str, event_seq: int | None
) -> None:
    connection.execute(
        dead_letters.update()
        .where(dead_letters.c.id == letter_id)
        .values(
            status=RETRIED,
            attempts=dead_letters.c.attempts + 1,
            last_attempt_at=at,
            retried_by=by,
            event_seq=event_seq,
        )
    )


def mark_failed_attempt(
    connection: Connection, letter_id: int, *, at: datetime, by: str, reason: str
) -> None:
    connection.execute(
        dead_letters.update()
        .where(dead_letters.c.id == letter_id)
        .values(
            attempts=dead_letters.c.attempts + 1,
            last_attempt_at=at,
            retried_by=by,
            reason=reason,
        )
    )
