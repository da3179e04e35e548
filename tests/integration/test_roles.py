"""The endpoint x role matrix of api.md, and authentication: who may call what.

Every ``/v1`` route must be listed in ``MATRIX`` (a test fails otherwise), so a new endpoint cannot
ship without its row here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.ingest import dead_letter_body
from core import apikeys
from core.db import Database
from core.roles import READERS, Role
from core.settings import load_settings
from core.tables import api_keys
from core.web import utc_now
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.builders import make_event


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # as the OpenAPI document lists it
    allowed: frozenset[Role]
    #: what an allowed caller gets for the request below (404: an unknown id, past the role check)
    ok_status: int = 200
    #: the request's URL when it is not ``path``; ``{letter_id}`` becomes a real dead letter
    url: str | None = None
    body: Callable[[], Any] | None = None

    def call(self, client: TestClient, letter_id: int, headers: dict[str, str]) -> httpx.Response:
        url = (self.url or self.path).replace("{letter_id}", str(letter_id))
        body = self.body() if self.body is not None else None
        return client.request(self.method, url, json=body, headers=headers)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


#: api.md: the queue roles act on the findings of their own queue (the finding's queue decides,
#: after this route-level check), and admin on every queue.
QUEUE_ACTORS = frozenset({Role.FINANCE_OPS, Role.LEGAL_OPS, Role.PMO, Role.ONCALL, Role.ADMIN})

MATRIX = [
    Endpoint("POST", "/v1/events", frozenset({Role.INGEST, Role.ADMIN}), body=make_event),
    Endpoint(
        "POST",
        "/v1/webhooks/{preset}",
        frozenset({Role.INGEST, Role.ADMIN}),  # or the preset's signature (test_webhooks.py)
        url="/v1/webhooks/ironclad",
        body=lambda: json.loads(
            (
                Path(__file__).parents[1] / "fixtures/presets/ironclad/workflow_completed.json"
            ).read_text()
        ),
    ),
    Endpoint("GET", "/v1/dead-letters", READERS),
    Endpoint("GET", "/v1/dead-letters/{letter_id}", READERS),
    Endpoint(
        "POST",
        "/v1/dead-letters/{letter_id}/retry",
        frozenset({Role.ONCALL, Role.ADMIN}),
        body=lambda: {"event": make_event()},
    ),
    Endpoint("GET", "/v1/audit", frozenset({Role.ADMIN})),
    Endpoint("GET", "/v1/flows", READERS),
    Endpoint("GET", "/v1/flows/{flow_id}", READERS, 404, url="/v1/flows/no-such-flow"),
    Endpoint("GET", "/v1/exceptions", READERS),
    Endpoint("GET", "/v1/kpis", READERS),
    Endpoint(
        "GET",
        "/v1/kpis/series",
        READERS,
        url="/v1/kpis/series?from=2026-11-01T00:00:00Z&to=2026-11-03T00:00:00Z&step=1d",
    ),
    Endpoint("POST", "/v1/exceptions/{finding_id}/ack", QUEUE_ACTORS, 404, "/v1/exceptions/9/ack"),
    Endpoint(
        "POST",
        "/v1/exceptions/{finding_id}/assign",
        QUEUE_ACTORS,
        404,
        "/v1/exceptions/9/assign",
        body=lambda: {"assignee": "someone"},
    ),
    Endpoint(
        "POST",
        "/v1/exceptions/{finding_id}/resolve",
        QUEUE_ACTORS,
        404,
        "/v1/exceptions/9/resolve",
    ),
    Endpoint(
        "POST",
        "/v1/flows/{flow_id}/replay",
        frozenset({Role.ONCALL, Role.ADMIN}),
        404,
        "/v1/flows/no-such-flow/replay",
        body=lambda: {"reason": "the middleware is back"},
    ),
    Endpoint("GET", "/v1/replays", READERS),
    Endpoint("GET", "/v1/reports", READERS),
    # a week far in the future: 404 for a reader (past the role check), nothing to make
    Endpoint("GET", "/v1/reports/{week}.{fmt}", READERS, 404, "/v1/reports/2999-W01.md"),
    Endpoint("GET", "/v1/replays/{replay_id}", READERS, 404, "/v1/replays/999"),
    Endpoint(
        "POST",
        "/v1/alertmanager",
        frozenset({Role.ALERTMANAGER, Role.ADMIN}),
        body=lambda: {"version": "4", "status": "firing", "alerts": []},
    ),
]


def _dead_letter(database: Database) -> int:
    """A pending dead letter (a body that is not JSON), for the dead-letter endpoints."""
    dead_letter_body(
        database, b"not json", reason="not JSON", channel="api", content_type=None, now=utc_now()
    )
    with database.read() as connection:
        return int(connection.exec_driver_sql("SELECT max(id) FROM dead_letters").scalar_one())


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_matrix_admin_may_do_everything_and_alertmanager_only_its_receiver() -> None:
    for endpoint in MATRIX:
        assert Role.ADMIN in endpoint.allowed, endpoint
        receiver = endpoint.path == "/v1/alertmanager"
        assert (Role.ALERTMANAGER in endpoint.allowed) == receiver, endpoint
    readers = {Role.VIEWER, Role.FINANCE_OPS, Role.LEGAL_OPS, Role.PMO, Role.ONCALL, Role.ADMIN}
    assert readers == READERS


def test_every_v1_route_is_in_the_matrix(api: TestClient) -> None:
    """Read from the OpenAPI document: FastAPI includes routers lazily, so ``app.routes`` does not
    list the routes of included routers one by one."""
    paths = api.get("/openapi.json").json()["paths"]
    declared = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    }
    listed = {(endpoint.method, endpoint.path) for endpoint in MATRIX}
    assert declared - listed == set(), "add the new endpoints to MATRIX with their roles"
    assert listed - declared == set(), "MATRIX lists endpoints the app does not have"


@pytest.mark.parametrize("endpoint", MATRIX, ids=str)
def test_role_matrix(
    api: TestClient, keys: dict[str, str], database: Database, endpoint: Endpoint
) -> None:
    """Every role in turn against one app and store (a store per endpoint, not per role: each
    call gets its own dead letter and leaves nothing the next role's call depends on)."""
    for role in Role:
        response = endpoint.call(api, _dead_letter(database), bearer(keys[role.value]))
        if role in endpoint.allowed:
            assert response.status_code == endpoint.ok_status, (str(role), response.text)
        else:
            assert response.status_code == 403, (str(role), response.text)
            _assert_error(response, 403, "forbidden")
            # the refusal names a role that would do
            assert "admin" in response.json()["error"]["message"]


NO_VALID_KEY = {
    "no-header": {},
    "empty-bearer": {"Authorization": "Bearer"},
    "basic-scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "malformed": bearer("not-a-key"),
    "unknown": bearer("sw_AAAAAAAAAAAA_" + "A" * 43),
}


@pytest.mark.parametrize("endpoint", MATRIX, ids=str)
def test_without_a_valid_key_is_401(
    api: TestClient, keys: dict[str, str], database: Database, endpoint: Endpoint
) -> None:
    for name, headers in NO_VALID_KEY.items():
        response = endpoint.call(api, _dead_letter(database), headers)
        assert response.status_code == 401, (name, response.text)
        _assert_error(response, 401, "unauthenticated")


def test_a_tampered_key_is_401(api: TestClient, keys: dict[str, str]) -> None:
    key = keys["admin"]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")  # right prefix, wrong secret
    _assert_error(api.get("/v1/audit", headers=bearer(tampered)), 401, "unauthenticated")
    assert api.get("/v1/audit", headers=bearer(key)).status_code == 200


@pytest.fixture
def uncached_api(tmp_path: Path, database_url: str, database: Database) -> Iterator[TestClient]:
    """The API with no key cache: a revocation takes effect on the next request."""
    settings = load_settings(
        {"data_dir": tmp_path, "database_url": database_url, "key_cache_seconds": 0}
    )
    with TestClient(create_app(settings, database)) as client:
        yield client


def test_a_revoked_key_is_401(
    uncached_api: TestClient, keys: dict[str, str], database: Database
) -> None:
    headers = bearer(keys["viewer"])
    assert uncached_api.get("/v1/dead-letters", headers=headers).status_code == 200
    with database.write() as connection:
        apikeys.revoke_key(connection, name="viewer", now=utc_now())
    _assert_error(uncached_api.get("/v1/dead-letters", headers=headers), 401, "unauthenticated")
    # the other keys keep working
    assert uncached_api.get("/v1/audit", headers=bearer(keys["admin"])).status_code == 200


def test_a_key_with_two_roles_has_both(api: TestClient, database: Database) -> None:
    with database.write() as connection:
        key = apikeys.create_key(
            connection, name="two", roles=[Role.INGEST, Role.ONCALL], now=utc_now()
        )
    letter_id = _dead_letter(database)
    for endpoint in MATRIX:
        response = endpoint.call(api, letter_id, bearer(key))
        if endpoint.allowed & {Role.INGEST, Role.ONCALL}:
            assert response.status_code == endpoint.ok_status, (endpoint, response.text)
        else:
            _assert_error(response, 403, "forbidden")


OpenCheck = Callable[[httpx.Response], None]


def _json_ok(response: httpx.Response) -> None:
    assert response.json()["status"] == "ok"


def _docs(response: httpx.Response) -> None:
    assert "text/html" in response.headers["content-type"]
    assert "swagger" in response.text.lower()


def _openapi(response: httpx.Response) -> None:
    document = response.json()
    assert {endpoint.path for endpoint in MATRIX} <= set(document["paths"])
    schemes = document["components"]["securitySchemes"]
    assert any(scheme.get("scheme", "").lower() == "bearer" for scheme in schemes.values())


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/healthz", _json_ok),
        ("/readyz", _json_ok),
        ("/docs", _docs),
        ("/openapi.json", _openapi),
    ],
)
def test_open_endpoints_need_no_key(api: TestClient, path: str, check: OpenCheck) -> None:
    response = api.get(path)
    assert response.status_code == 200, response.text
    check(response)


def test_readyz_reports_the_database(api: TestClient) -> None:
    assert api.get("/readyz").json() == {"status": "ok", "database": "ok"}


def test_an_unknown_role_stored_in_a_key_grants_nothing(
    api: TestClient, database: Database
) -> None:
    """A key row naming a role this version does not know (say, written by a newer version) is
    not a way in: it keeps only the roles it knows."""
    with database.write() as connection:
        key = apikeys.create_key(connection, name="odd", roles=[Role.VIEWER], now=utc_now())
        connection.execute(
            api_keys.update().where(api_keys.c.name == "odd").values(roles=["viewer", "superuser"])
        )
    assert api.get("/v1/dead-letters", headers=bearer(key)).status_code == 200
    _assert_error(api.get("/v1/audit", headers=bearer(key)), 403, "forbidden")
