"""What every HTTP router shares: the request's database, clock and caller, and role checks.

Routers declare ``caller: Annotated[Principal, Depends(require(Role.X))]``; a missing or bad key is
401, a key without the role is 403, and ``admin`` passes every check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from core import jsoncodec
from core.apikeys import KeyVerifier, Principal
from core.db import Database
from core.errors import Forbidden, Unauthenticated
from core.roles import Role
from core.settings import Settings

Clock = Callable[[], datetime]

_bearer = HTTPBearer(auto_error=False, description="An API key made by `syncwatch keys create`")


def utc_now() -> datetime:
    return datetime.now(UTC)


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def require(*roles: Role) -> Callable[..., Any]:
    """A dependency that admits a caller holding any of ``roles`` (or ``admin``)."""
    allowed = frozenset(roles)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated("an API key is required: Authorization: Bearer <key>")
        verifier: KeyVerifier = request.app.state.key_verifier
        clock: Clock = request.app.state.clock
        principal = await run_in_threadpool(verifier.verify, credentials.credentials, now=clock())
        if principal is None:
            raise Unauthenticated("the API key is unknown or revoked")
        if not principal.has_any(allowed):
            needed = ", ".join(sorted(role.value for role in allowed | {Role.ADMIN}))
            raise Forbidden(f"this action needs one of the roles: {needed}")
        return principal

    return dependency


def require_if(needed: Callable[[Settings], bool], *roles: Role) -> Callable[..., Any]:
    """Like :func:`require`, but only when ``needed(settings)``; otherwise anyone passes (None)."""
    check = require(*roles)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal | None:
        if not needed(request.app.state.settings):
            return None
        principal: Principal = await check(request, credentials)
        return principal

    return dependency


class ExactJSONResponse(JSONResponse):
    """JSON with exact decimals (written digit for digit, never via float) and RFC 3339 times."""

    def render(self, content: Any) -> bytes:
        return jsoncodec.dumps(content)
