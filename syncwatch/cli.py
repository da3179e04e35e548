"""The ``syncwatch`` command line (api.md). Each command reads the settings, so a bad configuration
stops it with a message naming the key."""

from __future__ import annotations

import getpass
import logging
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core import apikeys, audit, jsoncodec
from core.db import Database
from core.errors import InvalidInput, NotFound, SyncwatchError
from core.roles import parse_role
from core.settings import Settings, load_settings
from core.web import utc_now

app = typer.Typer(
    name="syncwatch",
    help="Observability and business KPIs for the CLM -> middleware -> ERP bridge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema and retention.", no_args_is_help=True)
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


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8501,
) -> None:
    """The Streamlit dashboard (docs/dashboard.md), reading the API at SYNCWATCH_API_URL with the
    read-only key SYNCWATCH_API_KEY."""
    import os
    import subprocess

    import dashboard as dashboard_package

    if not os.environ.get("SYNCWATCH_API_URL", "").strip():
        err_console.print(
            "[red]SYNCWATCH_API_URL is not set:[/] point it at the syncwatch API "
            "(e.g. http://127.0.0.1:8000) and SYNCWATCH_API_KEY at a viewer key"
        )
        raise typer.Exit(code=2)
    script = Path(dashboard_package.__file__).resolve().parent / "app.py"
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    err_console.print(f"syncwatch dashboard on http://localhost:{port}")
    try:
        code = subprocess.call(command)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code=code)


@app.command()
def demo(
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="The API's port (default: 8080).")
    ] = None,
    dashboard_port: Annotated[
        int, typer.Option(min=1, max=65535, help="The dashboard's port.")
    ] = 8501,
) -> None:
    """Everything at once on the data directory's SQLite database: keys, the API and scheduler,
    the dashboard, the simulator, and Prometheus and Alertmanager when installed (Ctrl-C stops
    it all; docs/getting-started.md)."""
    from syncwatch import demo as demo_module

    settings = _settings()
    code = demo_module.run(settings, api_port=port or settings.port, dashboard_port=dashboard_port)
    raise typer.Exit(code=code)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations."""
    from core.migrate import current_revision

    settings = _settings()
    database = _database(settings)
    console.print(f"database at revision {current_revision(database)}")
    database.dispose()


@db_app.command("prune")
def db_prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Apply the retention rules now (the `retention` settings; serve does it once a day)."""
    from core.retention import prune, record

    settings = _settings()
    database = _database(settings)
    now = utc_now()
    pruned = prune(database, settings.retention, now, dry_run=dry_run)
    if not dry_run:
        with database.write() as connection:
            record(connection, pruned, actor=_cli_actor(), now=now)
    table = Table("", "would be deleted" if dry_run else "deleted")
    for name, count in pruned.as_dict().items():
        table.add_row(name.replace("_", " "), str(count))
    console.print(table)
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


@app.command()
def replay(
    flow_id: Annotated[str, typer.Argument(help="The flow, as GET /v1/flows shows it.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")],
    force: Annotated[
        bool, typer.Option(help="Replay although not stuck on an integration failure (admin).")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Send the same key again to retry safely (default: a new one)."),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            envvar="SYNCWATCH_API_URL",
            help="Ask a running syncwatch (with SYNCWATCH_API_KEY, an oncall key); "
            "without it, the local store is used and you are recorded as cli:<user>.",
        ),
    ] = None,
) -> None:
    """Replay a stuck flow: the middleware runs its failed step again (api.md, Replay). Exits 1
    when a guardrail refused it (409) or the middleware did not take it."""
    if not reason.strip():
        raise typer.BadParameter(
            "give a reason: it is kept in the audit log", param_hint="--reason"
        )
    key = idempotency_key or f"cli-{secrets.token_hex(16)}"
    if api_url:
        from syncwatch.remote import replay_via_api

        status, body = replay_via_api(api_url, flow_id, reason.strip(), force, key)
    else:
        status, body = _replay_locally(flow_id, reason.strip(), force, key)
    _print_replay(status, body)
    if status >= 300 or body.get("outcome") == "failed":
        raise typer.Exit(code=1)


def _replay_locally(flow_id: str, reason: str, force: bool, key: str) -> tuple[int, dict[str, Any]]:
    from alerts.replays import Replayer, ReplayRefused, ReplayRequest

    settings = _settings()
    database = _database(settings)
    ask = ReplayRequest(flow_id, reason, _cli_actor(), "cli", force=force, idempotency_key=key)
    replayer = Replayer(database, settings.replay)
    try:
        answer = replayer.request(ask, utc_now())
    except ReplayRefused as refusal:
        return 409, {"error": {"message": refusal.message, "details": refusal.details}}
    except (NotFound, InvalidInput) as error:  # as the API answers them: 404, 422
        return error.status_code, {"error": {"message": error.message}}
    finally:
        replayer.close()
        database.dispose()
    return (200 if answer.repeated else 201), jsoncodec.loads(jsoncodec.dumps(answer.replay))


def _print_replay(status: int, body: dict[str, Any]) -> None:
    if "error" in body:
        error = body["error"]
        details = error.get("details") or {}
        refusal = details.get("refusal") if isinstance(details, dict) else None
        label = f"refused ({refusal})" if refusal else f"error {status}"
        err_console.print(f"[red]{label}:[/] {escape(str(error.get('message')))}")
        return
    table = Table("replay", "flow", "stage", "source", "execution", "outcome", "attempts")
    table.add_row(
        str(body["id"]),
        escape(body["flow_id"]),
        escape(str(body.get("stage"))),
        escape(str(body.get("source"))),
        escape(str(body.get("execution_id"))),
        body["outcome"],
        str(body.get("attempts")),
    )
    console.print(table)
    if status == 200:
        console.print("(this key was used before: nothing was sent again)")
    if body.get("message"):
        console.print(f"  {escape(str(body['message']))}")
    if body.get("response"):
        console.print(f"  middleware answered: {escape(str(body['response'])[:500])}")


@app.command()
def consume(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="The consumers to run, by name (default: every configured one)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve this process's metrics on this port."),
    ] = None,
) -> None:
    """Run the message-broker consumers of the brokers: section (docs/brokers.md) in the
    foreground until SIGTERM or Ctrl-C. Each batch is acknowledged after it is stored; on stop the
    batch in hand is finished, then the connections are closed."""
    import signal
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    from collector.brokers.runner import choose, contexts, start

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("pika").setLevel(logging.WARNING)  # its DEBUG is per frame
    chosen = choose(settings.brokers, names or [])
    database = _database(settings)
    stop = threading.Event()
    registry = CollectorRegistry()
    try:
        made = contexts(
            chosen,
            database,
            stop,
            registry,
            utc_now,
            sources=list(settings.sources),
            preset_dirs=settings.preset_dirs,
        )
        if metrics_port is not None:
            start_http_server(metrics_port, addr=settings.host, registry=registry)

        def _stop(signum: int, _frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        threads = start(made)
        err_console.print(f"syncwatch consuming from {', '.join(chosen)}; SIGTERM or Ctrl-C stops")
        while not stop.wait(0.5):
            pass
        for thread in threads:
            thread.join(timeout=60)  # the batch in hand; unacknowledged messages are redelivered
    finally:
        database.dispose()
    err_console.print("syncwatch consumers stopped")


@app.command()
def report(
    week: Annotated[
        str | None,
        typer.Option(help="ISO week such as 2026-W48 (default: the last complete week)."),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", help="Comma-separated: html,pdf,md (default: reports.formats)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory to write the files to.")] = Path(),
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="IANA time zone of the week (default: reports.timezone)."),
    ] = None,
) -> None:
    """The weekly KPI report of a week (docs/reports.md): writes syncwatch-report-<week>.<format>
    into --out and prints the files' paths."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from kpis.reports.make import make, parse_formats
    from kpis.reports.store import file_name
    from kpis.reports.week import is_complete, last_complete_week, parse_week, window
    from probes.flowtypes import configured_flow_types

    settings = _settings()
    try:
        zone = ZoneInfo(tz) if tz else settings.reports.tz
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"{tz!r} is not an IANA time zone", param_hint="--tz") from None
    try:
        formats = parse_formats(format) if format else tuple(settings.reports.formats)
        chosen = parse_week(week) if week else last_complete_week(utc_now(), zone)
    except InvalidInput as error:
        hint = "--format" if error.message.startswith("format") else "--week"
        raise typer.BadParameter(error.message, param_hint=hint) from None
    if not is_complete(chosen, zone, utc_now()):
        ends = window(chosen, zone).local_end
        raise typer.BadParameter(
            f"{chosen} has not ended yet (it ends {ends:%Y-%m-%d %H:%M %Z})", param_hint="--week"
        )
    database = _database(settings)
    try:
        contents = make(
            database,
            configured_flow_types(settings.flows),
            str(chosen),
            tz=zone,
            formats=formats,
            top_stuck=settings.reports.top_stuck,
            sources=settings.sources,
        )
    finally:
        database.dispose()
    out.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        path = out / file_name(str(chosen), fmt)
        path.write_bytes(contents[fmt])
        typer.echo(str(path))


@app.command()
def pull(
    name: Annotated[
        str | None,
        typer.Argument(help="A connector or reconciliation of pull: (default: every enabled one)."),
    ] = None,
) -> None:
    """One cycle now of the pull connectors and reconciliations (docs/pull.md): page through
    each source from its stored cursor and store what it lists. Exits 1 when any failed."""
    from collector.pull import plan, run_now

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        planned = plan(settings.pull, name, settings.preset_dirs)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="NAME") from None
    if not planned:
        console.print("no pull connector or reconciliation is configured (pull: in the settings)")
        return
    database = _database(settings)
    try:
        reports = run_now(database, planned, clock=utc_now)
    finally:
        database.dispose()
    table = Table(
        "name", "kind", "pages", "accepted", "duplicates", "rejected", "findings", "error"
    )
    for item in reports:
        table.add_row(
            item.name,
            item.kind,
            str(item.pages),
            str(item.accepted),
            str(item.duplicates),
            str(item.rejected),
            str(item.findings),
            escape(item.error or ""),
        )
    console.print(table)
    if any(item.error for item in reports):
        raise typer.Exit(code=1)


@app.command()
def simulate(
    api_url: Annotated[
        str | None,
        typer.Option(envvar="SYNCWATCH_API_URL", help="The syncwatch API to send events to."),
    ] = None,
    firm: Annotated[str, typer.Option(help="small, medium or large.")] = "medium",
    seed: Annotated[int, typer.Option(help="Same seed, same traffic.")] = 42,
    backfill_weeks: Annotated[float, typer.Option(min=0, max=104)] = 8,
    speed: Annotated[
        float, typer.Option(min=1, help="Simulated seconds per real second, live.")
    ] = 3600,
    fault_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.1,
    middleware_port: Annotated[int, typer.Option(min=0, max=65535)] = 8091,
    out: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Write the backfill as NDJSON and exit.")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Stop after the backfill.")] = False,
) -> None:
    """Play a professional-services firm's CLM, middleware and ERP traffic, with faults, through
    the ingest API (key from SYNCWATCH_INGEST_KEY): weeks of history, then live traffic at a
    compressed clock until Ctrl-C; a fake middleware answers replays (docs/simulator.md)."""
    import os

    from syncwatch.simulator.firm import firm_profile
    from syncwatch.simulator.run import Options, write_backfill
    from syncwatch.simulator.run import simulate as run_simulation
    from syncwatch.simulator.sender import SendFailed

    try:
        profile = firm_profile(firm, fault_rate)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--firm") from None
    options = Options(profile, seed, backfill_weeks, speed, middleware_port, once)
    if out is not None:
        count = write_backfill(options, out)
        typer.echo(f"simulator: {count} events written to {out}")
        return
    key = os.environ.get("SYNCWATCH_INGEST_KEY")
    if not api_url or not key:
        err_console.print(
            "[red]error:[/] set --api-url (or SYNCWATCH_API_URL) and SYNCWATCH_INGEST_KEY "
            "(a key with the ingest role), or write a file with --out"
        )
        raise typer.Exit(code=2)

    def announce(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run_simulation(options, api_url, key, announce=announce)
    except KeyboardInterrupt:  # stopped during the backfill: a clean stop all the same
        return
    except (OSError, SendFailed) as error:  # the middleware port is taken, the API is down
        err_console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(code=1) from None


def main() -> None:
    try:
        app()
    except SyncwatchError as error:
        err_console.print(f"[red]error:[/] {escape(error.message)}")
        sys.exit(2)
