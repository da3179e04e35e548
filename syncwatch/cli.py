"""The ``syncwatch`` command line (api.md). Each command reads the settings, so a bad configuration
stops it with a message naming the key."""

from __future__ import annotations

import getpass
import logging
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core import apikeys, audit
from core.db import Database
from core.errors import SyncwatchError
from core.roles import parse_role
from core.settings import Settings, load_settings
from core.web import utc_now

app = typer.Typer(
    name="syncwatch",
    help="Observability and business KPIs for the CLM -> middleware -> ERP bridge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
probe_app = typer.Typer(help="The probes that correlate events into flows.", no_args_is_help=True)
app.add_typer(probe_app, name="probe")

console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    return load_settings()


def _database(settings: Settings, *, migrate: bool = True) -> Database:
    from core.migrate import upgrade

    database = Database.from_url(settings.resolved_database_url)
    if migrate:
        upgrade(database)
    return database


def _cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """The API (applies the migrations first)."""
    import uvicorn

    from syncwatch.app import create_app

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    database = _database(settings)
    api = create_app(settings, database, run_scheduler=True)
    bind_host = host or settings.host
    bind_port = port or settings.port
    err_console.print(f"syncwatch API on http://{bind_host}:{bind_port} (docs at /docs)")
    try:
        uvicorn.run(api, host=bind_host, port=bind_port, log_level=settings.log_level.lower())
    finally:
        database.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations."""
    from core.migrate import current_revision

    settings = _settings()
    database = _database(settings)
    console.print(f"database at revision {current_revision(database)}")
    database.dispose()


@keys_app.command("create")
def keys_create(
    role: Annotated[list[str], typer.Option("--role", help="A role; repeat for several.")],
    name: Annotated[str | None, typer.Option(help="A name for the key (default: made up).")] = None,
) -> None:
    """Print a new API key. Only its hash is stored: copy it now."""
    try:
        roles = [parse_role(r) for r in role]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from exc
    key_name = name or f"{roles[0].value}-{secrets.token_hex(3)}"
    database = _database(_settings())
    now = utc_now()
    with database.write() as connection:
        key = apikeys.create_key(connection, name=key_name, roles=roles, now=now)
        audit.record(
            connection,
            at=now,
            actor=_cli_actor(),
            action="key.create",
            target_type="api_key",
            target_id=key_name,
            details={"roles": sorted(r.value for r in roles)},
        )
    database.dispose()
    err_console.print(
        f"created key [bold]{key_name}[/] with roles {', '.join(r.value for r in roles)}"
    )
    # The key alone on stdout, so that scripts can capture it.
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """Names, roles, created, last used; never the key."""
    database = _database(_settings())
    with database.read() as connection:
        keys = apikeys.list_keys(connection)
    database.dispose()
    table = Table("name", "roles", "created", "last used", "revoked")
    for info in keys:
        table.add_row(
            info.name,
            ", ".join(info.roles),
            info.created_at.isoformat(timespec="seconds"),
            info.last_used_at.isoformat(timespec="seconds") if info.last_used_at else "-",
            info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key; it stops working within SYNCWATCH_KEY_CACHE_SECONDS."""
    database = _database(_settings())
    now = utc_now()
    with database.write() as connection:
        apikeys.revoke_key(connection, name=name, now=now)
        audit.record(
            connection,
            at=now,
            actor=_cli_actor(),
            action="key.revoke",
            target_type="api_key",
            target_id=name,
        )
    database.dispose()
    err_console.print(f"revoked key {name}")


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
) -> None:
    """Bulk-load NDJSON or JSON events with the API's validation and dedup. Exits 1 when any
    event was rejected (each is kept in the dead-letter store with its reason)."""
    from collector.bulk import load_file

    database = _database(_settings())
    summary = load_file(database, file, batch_size=batch_size, console=err_console)
    database.dispose()
    table = Table("accepted", "duplicates", "rejected")
    table.add_row(str(summary.accepted), str(summary.duplicates), str(len(summary.rejected)))
    console.print(table)
    for where, reason in summary.rejected[:20]:
        # reasons quote the input and forms like KIND/NAME[/instance]: print them as text
        console.print(f"  rejected {where}: {escape(reason)}")
    if len(summary.rejected) > 20:
        console.print(f"  ... and {len(summary.rejected) - 20} more (see GET /v1/dead-letters)")
    if summary.rejected:
        raise typer.Exit(code=1)


@probe_app.command("run")
def probe_run(
    batch_events: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
) -> None:
    """One probe run now: every new event, and every flow whose deadline passed."""
    from probes.flowtypes import configured_flow_types
    from probes.runner import run_until_idle

    settings = _settings()
    flow_types = configured_flow_types(settings.flows)
    database = _database(settings)
    reports = run_until_idle(
        database,
        flow_types,
        now=utc_now(),
        batch_events=batch_events,
        traces=settings.tracing.enabled,
    )
    database.dispose()
    if reports and reports[0].skipped:
        console.print("another replica is running a probe cycle; nothing done")
        return
    console.print(
        f"{sum(r.events for r in reports)} events, "
        f"{sum(r.correlations for r in reports)} correlation IDs re-evaluated, "
        f"{sum(r.swept for r in reports)} flows past a deadline, "
        f"in {sum(r.seconds for r in reports):.3f} s (last seq {reports[-1].last_seq})"
    )


def main() -> None:
    try:
        app()
    except SyncwatchError as error:
        err_console.print(f"[red]error:[/] {escape(error.message)}")
        sys.exit(2)
