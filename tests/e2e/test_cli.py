"""The real ``syncwatch`` console script, run as a subprocess on SQLite (the default file in the
data directory) and on PostgreSQL (``SYNCWATCH_DATABASE_URL``)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from core import apikeys, audit
from core.db import Database
from core.eventstore import count_events
from core.migrate import current_revision, head_revision
from core.roles import Role
from core.tables import dead_letters
from tests.conftest import bearer
from tests.support import databases
from tests.support.builders import make_event

SYNCWATCH = Path(sys.executable).parent / "syncwatch"
KEY_SHAPE = re.compile(r"^sw_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}$")


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    env.update(
        SYNCWATCH_DATA_DIR=str(tmp_path / "data"),
        XDG_DATA_HOME=str(tmp_path / "xdg"),
        COLUMNS="200",
        PYTHONIOENCODING="utf-8",
        NO_COLOR="1",
    )
    return env


def _run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SYNCWATCH), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Cli:
    env: dict[str, str]
    url: str
    tmp_path: Path

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(self.env, *args, cwd=self.tmp_path)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def database(self) -> Database:
        return Database.from_url(self.url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    env = _base_env(tmp_path)
    if request.param == "sqlite":
        # not set: the CLI must use the SQLite file in the data directory by default
        yield Cli(env, f"sqlite:///{tmp_path / 'data' / 'syncwatch.db'}", tmp_path)
        return
    url = databases.create_pg_database("sw_cli")
    env["SYNCWATCH_DATABASE_URL"] = url
    try:
        yield Cli(env, url, tmp_path)
    finally:
        databases.drop_pg_database(url)


def _counts(stdout: str) -> tuple[int, int, int]:
    """(accepted, duplicates, rejected) from the summary table."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if len(cells) == 3 and all(cell.isdigit() for cell in cells):
            accepted, duplicates, rejected = (int(cell) for cell in cells)
            return accepted, duplicates, rejected
    raise AssertionError(f"no summary in {stdout!r}")


def test_db_upgrade(cli: Cli) -> None:
    first = cli.ok("db", "upgrade")
    assert f"revision {head_revision()}" in first.stdout
    cli.ok("db", "upgrade")  # again: nothing to do, no error
    database = cli.database()
    try:
        assert current_revision(database) == head_revision()
    finally:
        database.dispose()


def test_keys_create_list_revoke(cli: Cli) -> None:
    created = cli.ok("keys", "create", "--role", "ingest", "--role", "viewer", "--name", "n")
    key = created.stdout.strip()
    assert created.stdout.splitlines() == [key], "stdout holds the key and nothing else"
    assert KEY_SHAPE.match(key)
    assert "n" in created.stderr
    database = cli.database()
    try:
        with database.read() as connection:
            principal = apikeys.lookup(connection, key)
        assert principal == apikeys.Principal("n", frozenset({Role.INGEST, Role.VIEWER}))

        listed = cli.ok("keys", "list")
        assert re.search(r"\bn\b.*ingest, viewer", listed.stdout)
        assert key not in listed.stdout + listed.stderr
        assert key.rsplit("_", 1)[1] not in listed.stdout + listed.stderr

        cli.ok("keys", "revoke", "n")
        with database.read() as connection:
            assert apikeys.lookup(connection, key) is None
            (info,) = apikeys.list_keys(connection)
            actions = [(e.action, e.target_id) for e in audit.entries(connection)]
            actors = {e.actor for e in audit.entries(connection)}
        assert info.revoked_at is not None
        assert actions == [("key.revoke", "n"), ("key.create", "n")]
        assert all(actor.startswith("cli:") for actor in actors)
    finally:
        database.dispose()

    again = cli("keys", "revoke", "n")
    assert again.returncode != 0
    assert "no active key named 'n'" in again.stderr
    assert "Traceback" not in again.stderr


def test_keys_create_refusals(cli: Cli) -> None:
    cli.ok("keys", "create", "--role", "admin", "--name", "taken")
    duplicate = cli("keys", "create", "--role", "viewer", "--name", "taken")
    assert duplicate.returncode != 0
    assert "exists already" in duplicate.stderr
    assert duplicate.stdout == ""
    unknown = cli("keys", "create", "--role", "root", "--name", "x")
    assert unknown.returncode != 0
    assert "unknown role 'root'" in unknown.stderr
    bad_name = cli("keys", "create", "--role", "viewer", "--name", "has space")
    assert bad_name.returncode != 0
    assert "key name" in bad_name.stderr
    for result in (duplicate, unknown, bad_name):
        assert "Traceback" not in result.stderr
    # a name is made up when none is given
    cli.ok("keys", "create", "--role", "oncall")
    assert re.search(r"\boncall-[0-9a-f]{6}\b", cli.ok("keys", "list").stdout)


def _dead_letters(database: Database) -> list[sa.Row[tuple[str, str, bytes]]]:
    with database.read() as connection:
        query = sa.select(dead_letters.c.channel, dead_letters.c.reason, dead_letters.c.raw)
        return list(connection.execute(query.order_by(dead_letters.c.id)))


def test_ingest_ndjson_with_bad_lines(cli: Cli, tmp_path: Path) -> None:
    lines = [
        json.dumps(make_event()),
        "this is not json",
        json.dumps(make_event(drop=["id"])),
        "",
        # its reason names the source's form KIND/NAME[/instance]: printed as it is
        json.dumps(make_event(source="bogus")),
        json.dumps(make_event("project.created")),
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    first = cli("ingest", str(path))
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert _counts(first.stdout) == (2, 0, 3)
    for where in ("line 2", "line 3", "line 5"):
        assert f"rejected {where}:" in first.stdout
    assert "KIND/NAME[/instance]" in first.stdout
    database = cli.database()
    try:
        with database.read() as connection:
            assert count_events(connection) == 2
        letters = _dead_letters(database)
        assert len(letters) == 3
        assert {letter.channel for letter in letters} == {"cli"}
        assert b"this is not json" in [letter.raw for letter in letters]

        again = cli("ingest", str(path))
        assert again.returncode == 1
        assert _counts(again.stdout) == (0, 2, 3)
        with database.read() as connection:
            assert count_events(connection) == 2
        assert len(_dead_letters(database)) == 6  # every rejection is kept
    finally:
        database.dispose()


def test_ingest_json_array_and_single_object(cli: Cli, tmp_path: Path) -> None:
    array = tmp_path / "events.json"
    array.write_text(json.dumps([make_event() for _ in range(3)], indent=2), encoding="utf-8")
    assert _counts(cli.ok("ingest", str(array)).stdout) == (3, 0, 0)
    assert _counts(cli.ok("ingest", str(array)).stdout) == (0, 3, 0)

    single = tmp_path / "one.json"
    single.write_text(json.dumps(make_event(), indent=2), encoding="utf-8")
    assert _counts(cli.ok("ingest", str(single)).stdout) == (1, 0, 0)
    database = cli.database()
    try:
        with database.read() as connection:
            assert count_events(connection) == 4
        assert _dead_letters(database) == []
    finally:
        database.dispose()


def test_ingest_of_a_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("ingest", str(tmp_path / "nope.ndjson"))
    assert result.returncode == 2
    assert "nope.ndjson" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variables", "yaml", "named"),
    [
        ({"SYNCWATCH_PORT": "abc"}, None, "SYNCWATCH_PORT"),
        ({"SYNCWATCH_INGEST__MAX_BATCH_EVENTS": "0"}, None, "SYNCWATCH_INGEST__MAX_BATCH_EVENTS"),
        ({"SYNCWATCH_DATABASE_URL": "postgresql://h/db"}, None, "SYNCWATCH_DATABASE_URL"),
        ({}, "colour: blue\n", "colour"),
        ({}, "ingest:\n  max_events: 3\n", "ingest.max_events"),
        ({}, '"[/odd]": 1\n', "[/odd]"),  # shown as written, not read as markup
        ({}, "port: [1\n", "SYNCWATCH_CONFIG"),
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("keys", "list")])
def test_a_bad_configuration_stops_with_the_key_named(
    tmp_path: Path,
    variables: dict[str, str],
    yaml: str | None,
    named: str,
    command: tuple[str, ...],
) -> None:
    env = _base_env(tmp_path) | variables
    if yaml is not None:
        config = tmp_path / "syncwatch.yaml"
        config.write_text(yaml, encoding="utf-8")
        env["SYNCWATCH_CONFIG"] = str(config)
    result = _run(env, *command)
    assert result.returncode != 0
    assert named in result.stderr
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "syncwatch.db").exists(), "nothing done on a bad config"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_then_post_an_event_like_the_readme(tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(SYNCWATCH), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)

            made = _run(env, "keys", "create", "--role", "ingest", "--name", "curl")
            assert made.returncode == 0, made.stderr
            key = made.stdout.strip()
            event = make_event()
            answer = httpx.post(f"{base}/v1/events", json=event, headers=bearer(key), timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
            refused = httpx.post(f"{base}/v1/events", json=event, timeout=10)
            assert refused.status_code == 401
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal
    assert server.returncode in (0, -signal.SIGTERM), log_path.read_text()
    assert "Application shutdown complete" in log_path.read_text()
    database = Database.from_url(f"sqlite:///{tmp_path / 'data' / 'syncwatch.db'}")
    try:
        with database.read() as connection:
            assert count_events(connection) == 1
    finally:
        database.dispose()
