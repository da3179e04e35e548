"""Database engines and transactions. The engine is made by a function (no work at import time).

SQLite runs as a service store: WAL, ``synchronous=FULL`` (a commit survives a crash of the
process and of the machine), a busy timeout, foreign keys on, and write transactions that take the
write lock up front (``BEGIN IMMEDIATE``) so two writers queue instead of failing. Connection
failures become :class:`core.errors.StoreUnavailable` after the transaction is rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url

from core import jsoncodec
from core.errors import StoreUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    options: dict[str, Any] = {
        "json_serializer": jsoncodec.dumps_str,
        "json_deserializer": jsoncodec.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        }
        engine = sa.create_engine(url, **options, **kwargs)
        _configure_sqlite(engine)
        return engine
    options["pool_pre_ping"] = True
    options["connect_args"] = {"connect_timeout": 5}
    return sa.create_engine(url, **options, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class Database:
    """The store's engine and its two kinds of transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = (
            engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(engine) else engine
        )
        self._snapshot = (
            engine
            if is_sqlite(engine)
            else engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        )

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with _unavailable_as_503(), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction over one consistent snapshot of the store, for answers made of
        several queries: REPEATABLE READ on PostgreSQL; on SQLite (WAL) a read transaction is a
        snapshot already."""
        with _unavailable_as_503(), self._snapshot.connect() as connection:
            yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any error. When it returns, the
        writes are durable."""
        with _unavailable_as_503(), self._writer.begin() as connection:
            yield connection

    def ping(self) -> None:
        with self.read() as connection:
            connection.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as error:
        raise StoreUnavailable(
            "the database is unavailable; nothing was half-written: send the request again",
            details=str(error.orig)[:300],
        ) from error
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            raise StoreUnavailable(
                "the database connection was lost; nothing was half-written: send the request again"
            ) from error
        raise
