"""Fixtures. Every store test runs on SQLite and on PostgreSQL (the ``database`` fixture is
parametrized); ``api`` is the FastAPI app over HTTP (Starlette's TestClient) on that database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from core import apikeys
from core.db import Database
from core.migrate import upgrade
from core.roles import Role
from core.settings import Settings, load_settings
from core.web import utc_now
from syncwatch.app import create_app
from tests.support import databases

hypothesis_settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
hypothesis_settings.register_profile("dev", max_examples=150, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = databases.create_pg_database()
    database = Database.from_url(url)
    upgrade(database)
    database.dispose()
    yield url
    databases.drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        yield databases.sqlite_copy(sqlite_template, tmp_path)
    else:
        url: str = request.getfixturevalue("pg_url")
        database = Database.from_url(url)
        databases.empty_pg(database)
        database.dispose()
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database.from_url(database_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings({"data_dir": tmp_path, "database_url": database_url})


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[TestClient]:
    app = create_app(settings, database)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def keys(database: Database) -> dict[str, str]:
    """One key per role, named after it; ``keys["ingest"]`` is the ingest key, and so on."""
    made = {}
    with database.write() as connection:
        for role in Role:
            made[role.value] = apikeys.create_key(
                connection, name=role.value, roles=[role], now=utc_now()
            )
    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
