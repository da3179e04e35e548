"""HTTP routes of replays and of the Alertmanager receiver (api.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from alerts.receiver import Notification, Received, process_pending, record
from alerts.replays import Replayer, ReplayRequest
from core import replaystore
from core.apikeys import Principal
from core.errors import Forbidden
from core.replaystore import ReplayFilter
from core.roles import READERS, Role
from core.web import ClockDep, DatabaseDep, ExactJSONResponse, SettingsDep, require

router = APIRouter(prefix="/v1", default_response_class=ExactJSONResponse)

Reader = Annotated[Principal, Depends(require(*READERS))]


def get_replayer(request: Request) -> Replayer:
    replayer: Replayer = request.app.state.replayer
    return replayer


ReplayerDep = Annotated[Replayer, Depends(get_replayer)]


class ReplayBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why; kept in the audit log")
    force: bool = Field(
        default=False,
        description="admin only: replay although the flow is not stuck on an integration failure",
    )

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a reason: it is kept in the audit log")
        return value.strip()


@router.post(
    "/flows/{flow_id:path}/replay",
    tags=["replays"],
    status_code=201,
    responses={
        200: {"description": "the replay made earlier with this Idempotency-Key; nothing sent"},
        409: {"description": "a guardrail refused the replay (the refusal is recorded)"},
    },
)
async def replay_flow(
    flow_id: str,
    body: ReplayBody,
    response: Response,
    caller: Annotated[Principal, Depends(require(Role.ONCALL))],
    replayer: ReplayerDep,
    clock: ClockDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="the same key never sends twice: a retry answers with the first replay",
        ),
    ] = None,
) -> dict[str, Any]:
    """Ask the middleware to run the failed step of a stuck flow again (api.md, Replay). The
    answer is the replay: ``sent`` (then followed up to ``effective`` or ``ineffective``) or
    ``failed`` with the middleware's answer. Audited."""
    if body.force and Role.ADMIN not in caller.roles:
        raise Forbidden("forcing a replay past the integration-failure guardrail needs admin")
    ask = ReplayRequest(
        flow_id=flow_id,
        reason=body.reason,
        actor=caller.name,
        trigger="api",
        force=body.force,
        idempotency_key=idempotency_key,
    )
    answer = await run_in_threadpool(replayer.request, ask, clock())
    if answer.repeated:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return answer.replay


@router.get("/replays", tags=["replays"])
def list_replays(
    caller: Reader,
    database: DatabaseDep,
    flow_id: str | None = None,
    outcome: Annotated[
        str | None, Query(pattern="^(refused|sending|sent|failed|effective|ineffective)$")
    ] = None,
    trigger: Annotated[str | None, Query(pattern="^(api|cli|alert)$")] = None,
    requested_by: str | None = None,
    since: AwareDatetime | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Every replay, newest first: who, why, when, what was sent (credentials redacted), the
    answer, and whether the flow then moved (``moved``: true when effective, false when
    ineffective, null while followed up or when nothing was sent)."""
    flt = ReplayFilter(flow_id, outcome, trigger, requested_by, since)
    with database.read() as connection:
        rows = replaystore.listing(connection, flt, before_id=before_id, limit=limit)
    return {
        "items": [replaystore.as_dict(row) for row in rows],
        "next_before_id": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/replays/{replay_id}", tags=["replays"])
def get_replay(replay_id: int, caller: Reader, database: DatabaseDep) -> dict[str, Any]:
    """One replay."""
    with database.read() as connection:
        return replaystore.as_dict(replaystore.get(connection, replay_id))


@router.post("/alertmanager", tags=["alertmanager"])
async def alertmanager_webhook(
    notification: Notification,
    background: BackgroundTasks,
    caller: Annotated[Principal, Depends(require(Role.ALERTMANAGER))],
    database: DatabaseDep,
    settings: SettingsDep,
    replayer: ReplayerDep,
    clock: ClockDep,
) -> dict[str, Any]:
    """Alertmanager's webhook (payload version 4). Each alert is stored once by fingerprint and
    start time and the answer comes at once; automatic replays run in the background."""
    now: datetime = clock()

    def store() -> Received:
        with database.write() as connection:
            return record(
                connection,
                notification,
                received_by=caller.name,
                now=now,
                auto_enabled=settings.replay.auto.enabled,
            )

    received = await run_in_threadpool(store)
    if received.to_replay:
        background.add_task(process_pending, database, replayer, clock)
    return received.as_dict()
