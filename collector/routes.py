"""HTTP routes of the collector: ``POST /v1/events`` and the dead-letter store."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel
from starlette.concurrency import run_in_threadpool

from collector.ingest import count, dead_letter_body, ingest
from collector.receive import parse_request
from collector.retry import retry_dead_letter
from core import deadletters, jsoncodec
from core.apikeys import Principal
from core.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from core.roles import READERS, Role
from core.web import ClockDep, DatabaseDep, SettingsDep, require

router = APIRouter(prefix="/v1", tags=["ingest"])

Ingester = Annotated[Principal, Depends(require(Role.INGEST))]
Reader = Annotated[Principal, Depends(require(*READERS))]
Oncall = Annotated[Principal, Depends(require(Role.ONCALL))]


class Rejected(BaseModel):
    index: int
    id: str | None
    error: str


class IngestAnswer(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[Rejected]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/events",
    response_model=IngestAnswer,
    summary="Ingest one canonical event or a batch",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}}
                for media in (
                    "application/json",
                    "application/cloudevents+json",
                    "application/cloudevents-batch+json",
                )
            },
        }
    },
)
async def post_events(
    request: Request,
    caller: Ingester,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> dict[str, Any]:
    """Each event is judged on its own; valid ones are stored even when others are not, and every
    rejected one is kept in the dead-letter store with its reason. The answer comes after the
    commit: accepted means durably stored."""
    limits = settings.ingest
    body = await _read_body(request, limits.max_body_bytes)
    content_type = request.headers.get("content-type")
    try:
        received = parse_request(body, request.headers, max_events=limits.max_batch_events)
    except (MalformedRequest, UnsupportedMediaType) as error:
        await run_in_threadpool(
            dead_letter_body,
            database,
            body,
            reason=error.message,
            channel="api",
            content_type=content_type,
            now=clock(),
        )
        request.app.state.instruments.received(None, None, "rejected")
        raise
    now = clock()
    result = await run_in_threadpool(
        ingest,
        database,
        received.items,
        require_specversion=received.require_specversion,
        channel="api",
        content_type=content_type,
        now=now,
    )
    count(result, request.app.state.instruments, now)
    return result.as_response()


class DeadLetterOut(BaseModel):
    id: int
    received_at: datetime
    channel: str
    content_type: str | None
    batch_index: int | None
    source: str | None
    event_id: str | None
    type: str | None
    reason: str
    status: str
    attempts: int
    last_attempt_at: datetime | None
    retried_by: str | None
    event_seq: int | None
    #: the raw body as text when it is UTF-8, else base64 (see raw_encoding)
    raw: str
    raw_encoding: str


def _out(letter: deadletters.DeadLetter) -> DeadLetterOut:
    try:
        raw, encoding = letter.raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        raw, encoding = base64.b64encode(letter.raw).decode("ascii"), "base64"
    fields = {name: value for name, value in vars(letter).items() if name != "raw"}
    return DeadLetterOut(**fields, raw=raw, raw_encoding=encoding)


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    #: pass as ``before_id`` for the next page; null on the last page
    next_before_id: int | None


@router.get("/dead-letters", response_model=DeadLetterPage, tags=["dead letters"])
def list_dead_letters(
    caller: Reader,
    database: DatabaseDep,
    status: Annotated[str | None, Query(pattern="^(pending|retried|all)$")] = "pending",
    source: str | None = None,
    # naive times are ambiguous: 422, not a guess (and not a 500 from the store)
    since: AwareDatetime | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    """Rejected inputs, newest first, with the reason and the raw body."""
    with database.read() as connection:
        letters = deadletters.listing(
            connection,
            status=None if status == "all" else status,
            source=source,
            since=since,
            before_id=before_id,
            limit=limit,
        )
    next_id = letters[-1].id if len(letters) == limit else None
    return DeadLetterPage(items=[_out(letter) for letter in letters], next_before_id=next_id)


@router.get("/dead-letters/{letter_id}", response_model=DeadLetterOut, tags=["dead letters"])
def get_dead_letter(letter_id: int, caller: Reader, database: DatabaseDep) -> DeadLetterOut:
    with database.read() as connection:
        return _out(deadletters.get(connection, letter_id))


class RetryAnswer(BaseModel):
    dead_letter_id: int
    accepted: int
    duplicates: int


@router.post(
    "/dead-letters/{letter_id}/retry",
    response_model=RetryAnswer,
    tags=["dead letters"],
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"event": {"description": "a corrected event or array"}},
                    }
                }
            },
        }
    },
)
async def retry(
    letter_id: int,
    request: Request,
    caller: Oncall,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> RetryAnswer:
    """Re-ingest a dead letter through the same validation and dedup. The body is optional:
    ``{"event": {...}}`` ingests a corrected event (or array) instead of the stored raw body.
    422 with the reason when it is still invalid (the attempt is recorded), 409 when it was
    retried already. Audited."""
    body = await _read_body(request, settings.ingest.max_body_bytes)
    replacement = None
    if body.strip():
        try:
            parsed = jsoncodec.loads(body)
        except ValueError as exc:
            raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("event") is None:
            raise MalformedRequest('the body, when given, is {"event": <corrected event or array>}')
        replacement = parsed["event"]
    result = await run_in_threadpool(
        retry_dead_letter,
        database,
        letter_id,
        replacement=replacement,
        actor=caller.name,
        now=clock(),
    )
    return RetryAnswer(**vars(result))
