"""The Alembic migrations on a fresh, empty database of each kind: upgrade to head, downgrade to
base, upgrade again; after each upgrade the live schema is exactly ``core.tables.metadata``.

The comparison runs with ``compare_type`` and ``compare_server_default`` on. It shows no noise for
the ``UTCDateTime`` TypeDecorator or the JSON/JSONB variant: Alembic compares a TypeDecorator by
its ``impl`` and a variant by the dialect's own type, so nothing needs filtering here; should a
future Alembic report such noise, filter only that (table, column, type) diff, never all types."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core import audit
from core.db import Database
from core.errors import StoreUnavailable
from core.migrate import current_revision, downgrade, head_revision, upgrade
from core.tables import metadata
from tests.support import databases

TABLES = set(metadata.tables)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with nothing in it, not even the migrations table."""
    if request.param == "sqlite":
        database = Database.from_url(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield database
        database.dispose()
        return
    url = databases.create_pg_database("sw_migr")
    database = Database.from_url(url)
    try:
        yield database
    finally:
        database.dispose()
        databases.drop_pg_database(url)


def _server_default_differs(
    context: MigrationContext,
    inspected_column: sa.Column[Any],
    metadata_column: sa.Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's SQLite support takes a reflected ``''`` for an SQL expression (its literal pattern
    is ``'.+'``), wraps it as ``('')`` and then never equals the metadata's empty string, so an
    empty-string server default (``findings.key``) always looks changed. Decide that one case;
    leave every other default to Alembic (None)."""
    if (
        context.dialect.name == "sqlite"
        and inspected_default in ("''", "('')")
        and rendered_metadata_default in ("''", "")
    ):
        return False
    return None


def _differences(database: Database, target: sa.MetaData = metadata) -> list[Any]:
    with database.read() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "compare_server_default": _server_default_differs},
        )
        return list(compare_metadata(context, target))


def _tables(database: Database) -> set[str]:
    with database.read() as connection:
        return set(sa.inspect(connection).get_table_names())


def _audit_log_is_append_only(database: Database) -> None:
    with database.write() as connection:
        audit.record(
            connection, at=datetime.now(UTC), actor="t", action="check", target_type="schema"
        )
    for statement in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'"):
        with (
            pytest.raises((sa.exc.DBAPIError, StoreUnavailable), match="append-only"),
            database.write() as connection,
        ):
            connection.exec_driver_sql(statement)


def _assert_at_head(database: Database) -> None:
    assert current_revision(database) == head_revision()
    assert _tables(database) == TABLES | {"alembic_version"}
    assert _differences(database) == []
    _audit_log_is_append_only(database)


def test_upgrade_downgrade_upgrade(fresh: Database) -> None:
    assert head_revision() is not None
    assert current_revision(fresh) is None
    assert _tables(fresh) == set()

    upgrade(fresh)
    _assert_at_head(fresh)

    downgrade(fresh, "base")
    assert current_revision(fresh) is None
    assert _tables(fresh) <= {"alembic_version"}
    if fresh.dialect == "postgresql":
        with fresh.read() as connection:
            leftover = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE proname = 'audit_log_append_only'"
            ).scalar_one()
        assert leftover == 0

    # a second upgrade works on what the downgrade left (the trigger function is made again)
    upgrade(fresh)
    _assert_at_head(fresh)


def test_upgrade_twice_is_harmless(fresh: Database) -> None:
    upgrade(fresh)
    with fresh.write() as connection:
        audit.record(
            connection, at=datetime.now(UTC), actor="t", action="kept", target_type="schema"
        )
    upgrade(fresh)
    assert current_revision(fresh) == head_revision()
    with fresh.read() as connection:
        assert [e.action for e in audit.entries(connection)] == ["kept"]


def _drifted() -> sa.MetaData:
    """The tables with one more column, one index fewer and another server default, as a
    forgotten migration would leave them."""
    drifted = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        copy = table.to_metadata(drifted)
        if table.name == "events":
            copy.append_column(sa.Column("forgotten", sa.String(10)))
            copy.indexes = {i for i in copy.indexes if i.name != "ix_events_project_id"}
        if table.name == "dead_letters":
            copy.c.status.server_default = sa.DefaultClause("queued")
    return drifted


def test_the_schema_check_sees_drift(fresh: Database) -> None:
    """The comparison above is not vacuous: it reports a column, an index and a server default the
    migrations do not make (and no noise besides)."""
    upgrade(fresh)
    differences = _differences(fresh, _drifted())
    # additions and removals come as tuples, column modifications as lists of tuples
    kinds = {(d[0], getattr(d[-1], "name", None)) for d in differences if isinstance(d, tuple)}
    modified = {(m[0], m[2], m[3]) for d in differences if isinstance(d, list) for m in d}
    assert ("add_column", "forgotten") in kinds
    assert ("remove_index", "ix_events_project_id") in kinds
    assert modified == {("modify_default", "dead_letters", "status")}
