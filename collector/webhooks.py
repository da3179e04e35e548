"""``POST /v1/webhooks/{preset}``: a vendor's own payload, authenticated by the preset's signature
or an ``ingest`` key, mapped by the preset onto canonical events and ingested through the same path
as ``POST /v1/events`` (validation, dedup, dead letters). See docs/webhooks.md.

A refused delivery (bad or missing signature, a timestamp outside the tolerance, a replayed
delivery ID) is answered 401 and stores nothing. An authenticated payload that is not JSON or that
the preset cannot map is kept in the dead-letter store with the reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from collector import signatures
from collector.ingest import IngestResult, Judgement, count, judge, store_judged
from collector.mapping import (
    MappingError,
    Preset,
    PresetError,
    available_presets,
    delivery_id,
    load_preset,
    map_payload,
)
from collector.routes import IngestAnswer, _read_body
from core import deadletters, jsoncodec
from core.db import Database
from core.deadletters import NewDeadLetter
from core.errors import ConfigError, NotFound, Unauthenticated
from core.mapping_settings import WebhookSettings
from core.roles import Role
from core.tables import webhook_deliveries
from core.web import ClockDep, DatabaseDep, SettingsDep, require

router = APIRouter(prefix="/v1", tags=["ingest"])
_bearer = HTTPBearer(auto_error=False, description="An API key with the ingest role")
_ingest_key = require(Role.INGEST)


def load_presets(settings: WebhookSettings, preset_dirs: Sequence[Path] = ()) -> dict[str, Preset]:
    """Every preset (built-in and in ``preset_dirs``), validated now: a bad one, a configured
    preset that does not exist, or a secret its scheme cannot use raises ConfigError (start-up
    stops with the file, key or environment variable named; never the secret)."""
    dirs = [Path(directory) for directory in preset_dirs]
    presets: dict[str, Preset] = {}
    for name in available_presets(dirs):
        try:
            presets[name] = load_preset(name, dirs)
        except PresetError as error:
            raise ConfigError(f"mapping preset {name}: {error}") from error
    for name, configured in settings.presets.items():
        key = f"webhooks.presets.{name}"
        if name not in presets:
            known = ", ".join(sorted(presets))
            raise ConfigError(f"{key}: there is no preset {name!r}; known: {known}")
        scheme = presets[name].signature
        if configured.secret_envs and scheme is None:
            raise ConfigError(f"{key}.secret_envs: preset {name} has no signature scheme")
        for variable, secret in zip(configured.secret_envs, configured.secrets(), strict=False):
            try:
                signatures.check_secret(scheme or "none", secret)
            except ValueError as error:
                raise ConfigError(f"{key}.secret_envs: the value of ${variable} {error}") from error
    return presets


@dataclass(frozen=True)
class _Delivery:
    """Who is posting: the verified signature's delivery, or an ingest key (unsigned)."""

    signed: bool
    delivery_id: str | None
    signed_at: datetime | None


async def _authenticate(
    request: Request,
    preset: Preset,
    settings: WebhookSettings,
    body: bytes,
    credentials: HTTPAuthorizationCredentials | None,
    now: datetime,
) -> _Delivery:
    configured = settings.for_preset(preset.name)
    secrets = configured.secrets() if preset.signature else []
    if preset.signature and secrets and signatures.is_signed(preset.signature, request.headers):
        try:
            verified = signatures.verify(
                preset.signature,
                body,
                request.headers,
                secrets,
                now=now,
                tolerance=timedelta(seconds=settings.tolerance(preset.name)),
            )
        except signatures.SignatureRefused as refused:
            raise Unauthenticated(f"webhook {preset.name} refused: {refused.reason}") from refused
        return _Delivery(True, verified.delivery_id, verified.signed_at)
    if secrets and not configured.allow_ingest_key:
        raise Unauthenticated(
            f"webhook {preset.name} accepts only deliveries signed with its "
            f"{preset.signature} signature"
        )
    if credentials is None:
        how = f"a valid {preset.signature} signature or " if secrets else ""
        raise Unauthenticated(
            f"webhook {preset.name} needs {how}an ingest key: Authorization: Bearer <key>"
        )
    await _ingest_key(request, credentials)
    return _Delivery(False, None, None)


class _Replayed(Exception):
    pass


def _record_delivery(
    connection: Connection,
    preset: str,
    delivery: str,
    signed_at: datetime | None,
    *,
    now: datetime,
    keep: timedelta,
) -> None:
    connection.execute(
        sa.delete(webhook_deliveries).where(webhook_deliveries.c.received_at < now - keep)
    )
    seen = connection.execute(
        sa.select(webhook_deliveries.c.delivery_id).where(
            webhook_deliveries.c.preset == preset,
            webhook_deliveries.c.delivery_id == delivery,
        )
    ).first()
    if seen is not None:
        raise _Replayed
    connection.execute(
        sa.insert(webhook_deliveries).values(
            preset=preset, delivery_id=delivery, signed_at=signed_at, received_at=now
        )
    )


def _store(
    database: Database,
    *,
    preset: Preset,
    delivery: str | None,
    signed_at: datetime | None,
    judgement: Judgement,
    unmappable: NewDeadLetter | None,
    content_type: str | None,
    now: datetime,
    keep: timedelta,
) -> IngestResult:
    """The delivery's ID, its events and dead letters in ONE transaction: a replayed ID stores
    nothing, and a delivery that failed to store may be sent again."""
    channel = f"webhook:{preset.name}"
    try:
        with database.write() as connection:
            if delivery is not None:
                _record_delivery(
                    connection, preset.name, delivery[:255], signed_at, now=now, keep=keep
                )
            if unmappable is not None:
                deadletters.add(connection, [unmappable], received_at=now)
            return store_judged(
                connection, judgement, channel=channel, content_type=content_type, now=now
            )
    except IntegrityError as error:  # the same ID stored concurrently
        raise _Replayed from error


@router.post(
    "/webhooks/{preset}",
    response_model=IngestAnswer,
    summary="A vendor's own webhook payload, mapped by a preset onto canonical events",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {}}},
        }
    },
)
async def post_webhook(
    preset: str,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    database: DatabaseDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> dict[str, Any]:
    """Authenticated by the preset's signature (when it has signing secrets configured) or an
    ``ingest`` key. The answer is that of ``POST /v1/events``; a payload the preset cannot map is
    one rejected item (kept in the dead-letter store with the reason)."""
    presets: Mapping[str, Preset] = request.app.state.presets
    chosen = presets.get(preset)
    if chosen is None:
        raise NotFound(f"no mapping preset {preset!r}; known: {', '.join(sorted(presets))}")
    body = await _read_body(request, settings.ingest.max_body_bytes)
    now = clock()
    who = await _authenticate(request, chosen, settings.webhooks, body, credentials, now)
    content_type = request.headers.get("content-type")
    headers = dict(request.headers)
    unmappable: NewDeadLetter | None = None
    judgement = Judgement()
    payload: Any = None
    reason: str | None = None
    try:
        payload = jsoncodec.loads(body)
        events = map_payload(chosen, payload, headers=headers)
    except ValueError as error:
        reason = f"webhook {chosen.name}: the body is not valid JSON: {error}"
    except MappingError as error:
        reason = f"webhook {chosen.name}: {error.reason}"
    else:
        judgement = judge(events, require_specversion=False)
    if reason is not None:
        unmappable = NewDeadLetter(
            reason=reason,
            raw=body,
            channel=f"webhook:{chosen.name}",
            content_type=content_type,
            source=chosen.source,
        )
    delivery = who.delivery_id
    if delivery is None and who.signed and payload is not None:
        delivery = delivery_id(chosen, payload, headers)
    keep = timedelta(seconds=2 * settings.webhooks.tolerance(chosen.name))
    try:
        result = await run_in_threadpool(
            _store,
            database,
            preset=chosen,
            delivery=delivery if who.signed else None,
            signed_at=who.signed_at,
            judgement=judgement,
            unmappable=unmappable,
            content_type=content_type,
            now=now,
            keep=keep,
        )
    except _Replayed as replayed:
        raise Unauthenticated(
            f"webhook {chosen.name} refused: delivery {delivery!r} was received already (a replay)"
        ) from replayed
    count(result, request.app.state.instruments, now)
    answer = result.as_response()
    if unmappable is not None:
        answer["rejected"] = [
            {"index": 0, "id": delivery, "error": unmappable.reason},
            *answer["rejected"],
        ]
        request.app.state.instruments.received(chosen.source, None, "rejected")
    return answer
