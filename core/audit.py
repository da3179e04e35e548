"""The append-only audit log: who did what to which finding, replay, key or dead letter, and when.
The database refuses UPDATE and DELETE on it (see the initial migration)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.tables import audit_log


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    details: dict[str, Any] | None


def record(
    connection: Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry, inside the caller's transaction (so the action and its audit entry are
    written together or not at all)."""
    connection.execute(
        audit_log.insert().values(
            at=at,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
        )
    )


def entries(
    connection: Connection,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first; page with ``before_id`` (the smallest id of the previous page)."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    conditions = {
        audit_log.c.actor: actor,
        audit_log.c.action: action,
        audit_log.c.target_type: target_type,
        audit_log.c.target_id: target_id,
    }
    for column, value in conditions.items():
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    return [AuditEntry(**row._mapping) for row in connection.execute(query)]
