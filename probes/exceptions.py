"""The role queues of findings (exceptions): listing them with their aging, and the operator
actions (acknowledge, assign, resolve), each allowed to the queue's own role or ``admin`` and
audited with who and when in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core import audit
from core.apikeys import Principal
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.roles import Role
from core.tables import findings

QUEUE_ROLES: dict[str, Role] = {
    "finance_ops": Role.FINANCE_OPS,
    "legal_ops": Role.LEGAL_OPS,
    "pmo": Role.PMO,
    "integration_oncall": Role.ONCALL,
}

#: Aging buckets of kpis.md, lower bound inclusive, in seconds.
AGING_BUCKETS = (("lt_1d", 0), ("1d_3d", 86_400), ("3d_7d", 3 * 86_400), ("gt_7d", 7 * 86_400))


def aging_bucket(age_seconds: float) -> str:
    bucket = AGING_BUCKETS[0][0]
    for name, lower in AGING_BUCKETS:
        if age_seconds >= lower:
            bucket = name
    return bucket


@dataclass(frozen=True)
class ExceptionFilter:
    queue: str | None = None
    kind: str | None = None
    status: str = "open"  # open, acknowledged, unacknowledged, resolved, all
    assignee: str | None = None
    flow_id: str | None = None


def listing(
    connection: Connection,
    flt: ExceptionFilter,
    *,
    before_id: int | None,
    limit: int,
    now: datetime | None = None,
) -> list[Any]:
    """Newest first. With ``now``, an open finding is one open as of ``now`` (flows.md): one that
    opens later (an event stamped ahead of ``now``) is not listed as open yet."""
    query = sa.select(findings).order_by(findings.c.id.desc()).limit(limit)
    for column, value in (
        (findings.c.queue, flt.queue),
        (findings.c.kind, flt.kind),
        (findings.c.assignee, flt.assignee),
        (findings.c.flow_id, flt.flow_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.status != "all":
        if flt.status == "resolved":
            query = query.where(findings.c.resolved_at.is_not(None))
        else:
            query = query.where(findings.c.resolved_at.is_(None))
            if now is not None:
                query = query.where(findings.c.opened_at <= now)
        if flt.status == "acknowledged":
            query = query.where(findings.c.acknowledged_at.is_not(None))
        elif flt.status == "unacknowledged":
            query = query.where(findings.c.acknowledged_at.is_(None))
    if before_id is not None:
        query = query.where(findings.c.id < before_id)
    return list(connection.execute(query))


def as_dict(row: Any, now: datetime) -> dict[str, Any]:
    open_now = row.resolved_at is None
    age = (now - row.opened_at).total_seconds()
    return {
        "id": row.id,
        "kind": row.kind,
        "flow_id": row.flow_id,
        "key": row.key or None,
        "queue": row.queue,
        "opened_at": row.opened_at,
        "age_seconds": round(age, 3) if open_now else None,
        "aging": aging_bucket(age) if open_now else None,
        "details": row.details,
        "acknowledged_at": row.acknowledged_at,
        "acknowledged_by": row.acknowledged_by,
        "assignee": row.assignee,
        "assigned_at": row.assigned_at,
        "resolved_at": row.resolved_at,
        "resolved_by": row.resolved_by,
        "resolution": row.resolution,
    }


def _claim(connection: Connection, finding_id: int, caller: Principal) -> Any:
    query = sa.select(findings).where(findings.c.id == finding_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"no finding {finding_id}")
    role = QUEUE_ROLES.get(row.queue)
    if role is None or not caller.has_any([role]):
        needed = f"{role.value} or admin" if role else "admin"
        raise Forbidden(f"finding {finding_id} is in the {row.queue} queue: it needs {needed}")
    if row.resolved_at is not None:
        raise Conflict(
            f"finding {finding_id} is resolved already",
            details={"resolved_at": row.resolved_at.isoformat(), "resolved_by": row.resolved_by},
        )
    return row


def act(
    connection: Connection,
    finding_id: int,
    action: str,
    *,
    caller: Principal,
    now: datetime,
    assignee: str | None = None,
    note: str | None = None,
) -> None:
    """``ack``, ``assign`` or ``resolve`` one open finding, audited."""
    row = _claim(connection, finding_id, caller)
    values: dict[str, Any]
    if action == "ack":
        values = {"acknowledged_at": now, "acknowledged_by": caller.name}
    elif action == "assign":
        if not assignee or not assignee.strip():
            raise InvalidInput("assignee: a person or team to assign the finding to is required")
        values = {"assignee": assignee.strip(), "assigned_at": now}
    elif action == "resolve":
        values = {"resolved_at": now, "resolved_by": caller.name, "resolution": note}
    else:  # pragma: no cover - the routes only pass the three actions
        raise InvalidInput(f"unknown action {action!r}")
    connection.execute(findings.update().where(findings.c.id == finding_id).values(**values))
    details: dict[str, Any] = {"kind": row.kind, "flow_id": row.flow_id, "queue": row.queue}
    if assignee:
        details["assignee"] = values["assignee"]
    if note:
        details["note"] = note
    audit.record(
        connection,
        at=now,
        actor=caller.name,
        action=f"finding.{action}",
        target_type="finding",
        target_id=str(finding_id),
        details=details,
    )


def get(connection: Connection, finding_id: int) -> Any:
    row = connection.execute(sa.select(findings).where(findings.c.id == finding_id)).first()
    if row is None:
        raise NotFound(f"no finding {finding_id}")
    return row
