"""API keys (create, list, revoke, only the hash stored, last use) and the append-only audit log
with ``GET /v1/audit``, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from core import apikeys, audit
from core.apikeys import KeyVerifier
from core.db import Database
from core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from core.roles import Role, parse_role
from core.settings import Settings
from core.tables import api_keys, audit_log
from syncwatch.app import create_app
from tests.conftest import bearer

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
KEY_SHAPE = re.compile(r"^sw_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}$")


def _create(database: Database, name: str, *roles: Role, now: datetime = T0) -> str:
    with database.write() as connection:
        return apikeys.create_key(connection, name=name, roles=roles, now=now)


def _row(database: Database, name: str) -> dict[str, Any]:
    with database.read() as connection:
        row = connection.execute(sa.select(api_keys).where(api_keys.c.name == name)).one()
    return dict(row._mapping)


def test_create_list_revoke(database: Database) -> None:
    key = _create(database, "ops-team", Role.VIEWER, Role.INGEST, Role.VIEWER)
    assert KEY_SHAPE.match(key)
    _create(database, "second", Role.ADMIN, now=T0 + timedelta(seconds=1))
    with database.read() as connection:
        listed = apikeys.list_keys(connection)
    assert [(k.name, k.roles) for k in listed] == [
        ("ops-team", ["ingest", "viewer"]),
        ("second", ["admin"]),
    ]
    first = listed[0]
    assert first.created_at == T0
    assert first.last_used_at is None
    assert first.revoked_at is None

    with database.read() as connection:
        principal = apikeys.lookup(connection, key)
    assert principal == apikeys.Principal("ops-team", frozenset({Role.VIEWER, Role.INGEST}))

    with database.write() as connection:
        apikeys.revoke_key(connection, name="ops-team", now=T0 + timedelta(hours=1))
    with database.read() as connection:
        assert apikeys.lookup(connection, key) is None
        by_name = {k.name: k for k in apikeys.list_keys(connection)}
    assert by_name["ops-team"].revoked_at == T0 + timedelta(hours=1)
    assert by_name["second"].revoked_at is None
    with pytest.raises(NotFound), database.write() as connection:
        apikeys.revoke_key(connection, name="ops-team", now=T0)
    with pytest.raises(NotFound), database.write() as connection:
        apikeys.revoke_key(connection, name="never-made", now=T0)


def test_only_the_hash_is_stored(database: Database) -> None:
    key = _create(database, "secretive", Role.ADMIN)
    secret = key.rsplit("_", 1)[1]
    row = _row(database, "secretive")
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    for column, value in row.items():
        assert key not in str(value), column
        assert secret not in str(value), column
    # and nowhere else in the database either (e.g. not in the audit log)
    with database.read() as connection:
        for table in (api_keys, audit_log):
            for stored in connection.execute(sa.select(table)):
                assert secret not in repr(tuple(stored))


def test_keys_are_unique(database: Database) -> None:
    made = {_create(database, f"k{i}", Role.VIEWER) for i in range(20)}
    assert len(made) == 20
    with database.read() as connection:
        prefixes = connection.execute(sa.select(api_keys.c.prefix)).scalars().all()
    assert len(set(prefixes)) == 20


def test_a_duplicate_name_is_a_conflict_even_after_revocation(database: Database) -> None:
    _create(database, "dup", Role.VIEWER)
    with pytest.raises(Conflict, match="dup"):
        _create(database, "dup", Role.ADMIN)
    with database.write() as connection:
        apikeys.revoke_key(connection, name="dup", now=T0)
    with pytest.raises(Conflict):
        _create(database, "dup", Role.VIEWER)
    with database.read() as connection:
        assert [k.roles for k in apikeys.list_keys(connection)] == [["viewer"]]


@pytest.mark.parametrize(
    "name", ["", " ", "has space", "-leading-dash", "a/b", "naïve", "x" * 101, "semi;colon"]
)
def test_bad_names_are_refused(database: Database, name: str) -> None:
    with pytest.raises(InvalidInput, match="key name"):
        _create(database, name, Role.VIEWER)


@pytest.mark.parametrize("name", ["a", "ci.bot-1", "alice@example.com", "x" * 100, "A_b"])
def test_good_names_are_accepted(database: Database, name: str) -> None:
    _create(database, name, Role.VIEWER)
    assert _row(database, name)["name"] == name


def test_a_key_needs_a_role(database: Database) -> None:
    with pytest.raises(InvalidInput, match="at least one role"):
        _create(database, "roleless")
    with database.read() as connection:
        assert apikeys.list_keys(connection) == []


def test_an_unknown_role_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown role 'root'.*oncall"):
        parse_role("root")
    assert parse_role("finance_ops") is Role.FINANCE_OPS


def test_last_used_is_written_on_use_but_not_on_every_request(database: Database) -> None:
    key = _create(database, "user", Role.VIEWER)
    verifier = KeyVerifier(database, cache_seconds=0)
    assert verifier.verify("sw_unknownkey1_" + "x" * 43, now=T0) is None
    assert _row(database, "user")["last_used_at"] is None

    first = T0 + timedelta(minutes=1)
    assert verifier.verify(key, now=first) is not None
    assert _row(database, "user")["last_used_at"] == first
    # a second request right after does not write again
    assert verifier.verify(key, now=first + timedelta(seconds=5)) is not None
    assert _row(database, "user")["last_used_at"] == first
    # another process (another verifier) writes its own first use
    later = T0 + timedelta(minutes=5)
    assert KeyVerifier(database, cache_seconds=0).verify(key, now=later) is not None
    assert _row(database, "user")["last_used_at"] == later


def test_last_used_through_the_api(settings: Settings, database: Database) -> None:
    key = _create(database, "reader", Role.VIEWER)
    now = [T0 + timedelta(days=1)]
    app = create_app(settings, database, clock=lambda: now[0])
    with TestClient(app) as client:
        assert client.get("/v1/dead-letters", headers=bearer(key)).status_code == 200
        assert _row(database, "reader")["last_used_at"] == T0 + timedelta(days=1)
        now[0] = T0 + timedelta(days=1, seconds=10)
        assert client.get("/v1/dead-letters", headers=bearer(key)).status_code == 200
    assert _row(database, "reader")["last_used_at"] == T0 + timedelta(days=1)


def _audit(database: Database, **fields: Any) -> None:
    with database.write() as connection:
        audit.record(connection, **{"at": T0, "actor": "alice", "target_type": "x", **fields})


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET details = NULL WHERE id = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE actor = 'alice'",
    ],
)
def test_the_audit_log_is_append_only(database: Database, statement: str) -> None:
    _audit(database, action="key.create", target_id="k", details={"roles": ["admin"]})
    with (
        pytest.raises((sa.exc.DBAPIError, StoreUnavailable), match="append-only"),
        database.write() as connection,
    ):
        connection.exec_driver_sql(statement)
    with database.read() as connection:
        (entry,) = audit.entries(connection)
    assert (entry.actor, entry.details) == ("alice", {"roles": ["admin"]})
    _audit(database, action="key.revoke", target_id="k")  # appending still works
    with database.read() as connection:
        assert len(audit.entries(connection)) == 2


@pytest.fixture
def audited(database: Database) -> Iterator[list[int]]:
    """Seven entries, one minute apart; their ids, oldest first."""
    plan = [
        ("alice", "key.create", "api_key", "k1"),
        ("bob", "dead_letter.retry", "dead_letter", "1"),
        ("alice", "key.revoke", "api_key", "k1"),
        ("carol", "dead_letter.retry", "dead_letter", "2"),
        ("bob", "dead_letter.retry_failed", "dead_letter", "1"),
        ("alice", "key.create", "api_key", "k2"),
        ("carol", "replay.request", "flow", "Q2C-9"),
    ]
    for minute, (actor, action, target_type, target_id) in enumerate(plan):
        _audit(
            database,
            at=T0 + timedelta(minutes=minute),
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
        )
    with database.read() as connection:
        yield sorted(e.id for e in audit.entries(connection))


def _get(api: TestClient, admin: str, **params: Any) -> dict[str, Any]:
    response = api.get("/v1/audit", params=params, headers=bearer(admin))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [6, 5, 4, 3, 2, 1, 0]),
        ({"actor": "alice"}, [5, 2, 0]),
        ({"action": "dead_letter.retry"}, [3, 1]),
        ({"target_type": "dead_letter", "target_id": "1"}, [4, 1]),
        ({"target_type": "api_key", "actor": "alice", "action": "key.create"}, [5, 0]),
        ({"since": (T0 + timedelta(minutes=4)).isoformat()}, [6, 5, 4]),
        ({"since": "2026-11-20T11:04:00+01:00"}, [6, 5, 4]),
        ({"actor": "nobody"}, []),
    ],
)
def test_audit_filters(
    api: TestClient,
    keys: dict[str, str],
    audited: list[int],
    params: dict[str, str],
    expected: list[int],
) -> None:
    body = _get(api, keys["admin"], **params)
    assert [item["id"] for item in body["items"]] == [audited[i] for i in expected]
    assert body["next_before_id"] is None


def test_audit_entry_shape(api: TestClient, keys: dict[str, str], database: Database) -> None:
    _audit(database, action="key.create", target_id="k9", details={"roles": ["viewer"]})
    (item,) = _get(api, keys["admin"])["items"]
    assert item["actor"] == "alice"
    assert item["action"] == "key.create"
    assert (item["target_type"], item["target_id"]) == ("x", "k9")
    assert item["details"] == {"roles": ["viewer"]}
    assert datetime.fromisoformat(item["at"]) == T0


def test_audit_pagination(api: TestClient, keys: dict[str, str], audited: list[int]) -> None:
    seen: list[int] = []
    pages = 0
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if before is not None:
            params["before_id"] = before
        body = _get(api, keys["admin"], **params)
        pages += 1
        seen += [item["id"] for item in body["items"]]
        assert len(body["items"]) <= 3
        before = body["next_before_id"]
        if before is None:
            break
        assert before == body["items"][-1]["id"]
    assert seen == sorted(audited, reverse=True)
    assert pages == 3
    # filters and pages combine
    page = _get(api, keys["admin"], actor="alice", limit=2)
    assert [i["id"] for i in page["items"]] == [audited[5], audited[2]]
    rest = _get(api, keys["admin"], actor="alice", limit=2, before_id=page["next_before_id"])
    assert [i["id"] for i in rest["items"]] == [audited[0]]
    assert rest["next_before_id"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"before_id": "abc"},
        {"since": "yesterday"},
        {"since": "2026-11-20T10:00:00"},  # no time zone: ambiguous
    ],
)
def test_audit_refuses_bad_parameters(
    api: TestClient, keys: dict[str, str], params: dict[str, Any]
) -> None:
    response = api.get("/v1/audit", params=params, headers=bearer(keys["admin"]))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid"


def test_an_operator_action_is_audited_with_the_key_name(
    api: TestClient, keys: dict[str, str], database: Database, tmp_path: Path
) -> None:
    bad = {"id": "e1", "source": "clm/ironclad", "type": "contract.signed"}
    answer = api.post("/v1/events", json=[bad], headers=bearer(keys["ingest"]))
    assert answer.json()["accepted"] == 0
    (letter,) = api.get("/v1/dead-letters", headers=bearer(keys["viewer"])).json()["items"]
    retried = api.post(f"/v1/dead-letters/{letter['id']}/retry", headers=bearer(keys["oncall"]))
    assert retried.status_code == 422, retried.text
    (entry,) = _get(api, keys["admin"], target_type="dead_letter")["items"]
    assert entry["actor"] == "oncall"
    assert entry["action"] == "dead_letter.retry_failed"
    assert entry["target_id"] == str(letter["id"])


@pytest.mark.parametrize(("path", "role"), [("/v1/audit", "admin"), ("/v1/dead-letters", "viewer")])
def test_a_since_without_time_zone_is_422_not_500(
    api: TestClient, keys: dict[str, str], path: str, role: str
) -> None:
    response = api.get(path, params={"since": "2026-11-20T10:00:00"}, headers=bearer(keys[role]))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["loc"] == ["query", "since"]
