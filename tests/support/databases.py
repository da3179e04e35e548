"""Test databases: a migrated SQLite file per test (copied from a migrated template) and, per
pytest-xdist worker, a PostgreSQL database on the server at 127.0.0.1:5432, emptied per test."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import sqlalchemy as sa

from core.db import Database
from core.migrate import upgrade
from core.tables import metadata

PG_SERVER = os.environ.get("SYNCWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_ADMIN_URL = f"{PG_SERVER}/test"


def sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    database = Database.from_url(f"sqlite:///{path}")
    upgrade(database)
    with database.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    database.dispose()
    return path


def sqlite_copy(template: Path, directory: Path) -> str:
    target = directory / f"syncwatch-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def create_pg_database(prefix: str = "sw_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def empty_pg(database: Database) -> None:
    """Empty every table (the audit log's append-only trigger does not fire on TRUNCATE)."""
    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with database.write() as connection:
        connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")
