"""API keys: made at random, shown once, stored only as a SHA-256 hash.

A key looks like ``sw_<prefix>_<secret>``: the prefix finds the row, the hash of the whole key is
compared in constant time. The secret has 256 bits of entropy, so a fast hash is enough (a slow
password hash protects guessable secrets, which these are not)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.db import Database
from core.errors import Conflict, InvalidInput, NotFound
from core.roles import Role
from core.tables import api_keys

_KEY = re.compile(r"^sw_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

#: How often at most ``last_used_at`` is written for one key (seconds): not on every request.
LAST_USED_RESOLUTION_SECONDS = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (recorded as the actor in the audit log) and its roles."""

    name: str
    roles: frozenset[Role]

    def has_any(self, roles: Iterable[Role]) -> bool:
        return Role.ADMIN in self.roles or any(role in self.roles for role in roles)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    roles: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(connection: Connection, *, name: str, roles: Iterable[Role], now: datetime) -> str:
    """Store a new key and return it; this is the only time the key itself is seen."""
    role_list = sorted({Role(r).value for r in roles})
    if not role_list:
        raise InvalidInput("a key needs at least one role")
    if not _NAME.match(name):
        raise InvalidInput(
            f"key name {name!r}: use letters, digits and . _ @ - (at most 100 characters)"
        )
    existing = connection.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first()
    if existing is not None:
        raise Conflict(f"a key named {name!r} exists already")
    prefix = "".join(secrets.choice(_ALNUM) for _ in range(12))
    key = f"sw_{prefix}_{secrets.token_urlsafe(32)}"
    connection.execute(
        api_keys.insert().values(
            name=name, prefix=prefix, key_hash=_hash(key), roles=role_list, created_at=now
        )
    )
    return key


def list_keys(connection: Connection) -> list[KeyInfo]:
    rows = connection.execute(
        sa.select(
            api_keys.c.name,
            api_keys.c.roles,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        ).order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [KeyInfo(**row._mapping) for row in rows]


def revoke_key(connection: Connection, *, name: str, now: datetime) -> None:
    result = connection.execute(
        api_keys.update()
        .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if result.rowcount == 0:
        raise NotFound(f"no active key named {name!r}")


def lookup(connection: Connection, key: str) -> Principal | None:
    """The principal of a key, or None when it is unknown, malformed or revoked."""
    match = _KEY.match(key)
    if match is None:
        return None
    row = connection.execute(
        sa.select(
            api_keys.c.name, api_keys.c.key_hash, api_keys.c.roles, api_keys.c.revoked_at
        ).where(api_keys.c.prefix == match.group(1))
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    roles = frozenset(Role(r) for r in row.roles if r in Role.__members__.values())
    return Principal(name=row.name, roles=roles)


class KeyVerifier:
    """Verifies bearer keys with a short in-process cache, so the hot ingest path does not query
    the database for every request. A revoked key stops working within ``cache_seconds``."""

    def __init__(self, database: Database, *, cache_seconds: float) -> None:
        self._database = database
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._last_touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, key: str, *, now: datetime) -> Principal | None:
        digest = _hash(key)
        clock = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and clock - cached[0] < self._cache_seconds:
            principal = cached[1]
        else:
            with self._database.read() as connection:
                principal = lookup(connection, key)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (clock, principal)
        if principal is not None:
            self._touch(principal.name, now=now, clock=clock)
        return principal

    def _touch(self, name: str, *, now: datetime, clock: float) -> None:
        with self._lock:
            last = self._last_touched.get(name)
            if last is not None and clock - last < LAST_USED_RESOLUTION_SECONDS:
                return
            self._last_touched[name] = clock
        with self._database.write() as connection:
            connection.execute(
                api_keys.update().where(api_keys.c.name == name).values(last_used_at=now)
            )
