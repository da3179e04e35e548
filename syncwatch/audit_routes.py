"""``GET /v1/audit``: the audit log, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel

from core import audit
from core.apikeys import Principal
from core.roles import Role
from core.web import DatabaseDep, require

router = APIRouter(prefix="/v1", tags=["audit"])


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    details: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before_id: int | None


@router.get("/audit", response_model=AuditPage)
def get_audit(
    caller: Annotated[Principal, Depends(require(Role.ADMIN))],
    database: DatabaseDep,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    # naive times are ambiguous: 422, not a guess (and not a 500 from the store)
    since: AwareDatetime | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Who did what to which finding, replay, key or dead letter, and when; newest first."""
    with database.read() as connection:
        entries = audit.entries(
            connection,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            since=since,
            before_id=before_id,
            limit=limit,
        )
    next_id = entries[-1].id if len(entries) == limit else None
    return AuditPage(items=[AuditEntryOut(**vars(e)) for e in entries], next_before_id=next_id)
