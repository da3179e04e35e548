"""The broker consumer tests' world: messages with duplicates and poison ones, ``syncwatch consume``
as a real subprocess, and what the store holds afterwards."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from core import jsoncodec
from core.db import Database
from core.tables import dead_letters, events
from tests.support.builders import make_event
from tests.support.servers import SYNCWATCH, stop_process, syncwatch_env, tail

POISON_BODY = b"this is { not JSON"


@dataclass
class Outgoing:
    """Message bodies (with content types) to publish, and what the store must end up holding."""

    bodies: list[tuple[bytes, str | None]] = field(default_factory=list)
    keys: set[tuple[str, str]] = field(default_factory=set)
    #: ids of events that are invalid (each a dead letter of its own)
    invalid_ids: set[str] = field(default_factory=set)


def messages(tag: str, count: int) -> Outgoing:
    """``count`` messages: single events, JSON arrays of 3, CloudEvents structured ones, exact
    repeats of earlier messages, events repeated inside other messages, one poison message (not
    JSON) and one message with an invalid event next to a valid one."""
    out = Outgoing()
    for number in range(count):
        kind = number % 7
        if kind == 5 and out.bodies:  # an exact repeat of an earlier message
            out.bodies.append(out.bodies[number // 2])
            continue
        if kind == 3:
            batch = [make_event(id=f"{tag}-{number}-{i}") for i in range(3)]
            if number > 10:  # an event already sent in an earlier message
                batch.append(make_event(id=f"{tag}-{number - 7}-0"))
            out.keys |= {(e["source"], e["id"]) for e in batch}
            out.bodies.append((jsoncodec.dumps(batch), "application/json"))
        elif kind == 1:
            event = make_event("project.created", id=f"{tag}-{number}", specversion="1.0")
            out.keys.add((event["source"], event["id"]))
            out.bodies.append((jsoncodec.dumps(event), "application/cloudevents+json"))
        else:
            event = make_event("integration.failed", id=f"{tag}-{number}")
            out.keys.add((event["source"], event["id"]))
            out.bodies.append((jsoncodec.dumps(event), None))
    middle = len(out.bodies) // 2
    out.bodies.insert(middle, (POISON_BODY, "application/json"))
    valid = make_event(id=f"{tag}-next-to-invalid")
    invalid = make_event(id=f"{tag}-invalid", drop=["time"])
    out.keys.add((valid["source"], valid["id"]))
    out.invalid_ids.add(invalid["id"])
    out.bodies.insert(middle + 1, (jsoncodec.dumps([valid, invalid]), None))
    return out


def write_config(path: Path, name: str, consumer: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"brokers": {name: consumer}}), encoding="utf-8")
    return path


class Consumer:
    """``syncwatch consume NAME`` as a subprocess, its output in a log file."""

    def __init__(self, directory: Path, database_url: str, config: Path, name: str) -> None:
        self.env = syncwatch_env(
            SYNCWATCH_DATABASE_URL=database_url,
            SYNCWATCH_DATA_DIR=str(directory),
            SYNCWATCH_CONFIG=str(config),
            SYNCWATCH_LOG_LEVEL="INFO",
        )
        self.name = name
        self.log = directory / "consume.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *options: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SYNCWATCH, "consume", self.name, *options],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> int:
        assert self.process is not None
        return stop_process(self.process, timeout=30)

    def output(self) -> str:
        return tail(self.log)

    def full_output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def stored_keys(database: Database) -> list[tuple[str, str]]:
    with database.read() as connection:
        rows = connection.execute(sa.select(events.c.source, events.c.event_id)).all()
    return [(row.source, row.event_id) for row in rows]


def letters(database: Database) -> list[Any]:
    with database.read() as connection:
        return list(connection.execute(sa.select(dead_letters)).all())


def wait_until(
    condition: Callable[[], bool], what: str, consumer: Consumer, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if consumer.process is not None and consumer.process.poll() is not None:
            pytest.fail(f"syncwatch consume exited while waiting for {what}:\n{consumer.output()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}:\n{consumer.output()}")


def check_store(database: Database, out: Outgoing, channel: str) -> None:
    """Every event stored exactly once, the poison message and the invalid event dead-lettered
    with their reasons, nothing else."""
    keys = stored_keys(database)
    assert len(keys) == len(set(keys))
    assert set(keys) == out.keys
    kept = letters(database)
    assert {letter.channel for letter in kept} == {channel}
    poison = [letter for letter in kept if letter.raw == POISON_BODY]
    # at least once: a poison message is kept again if the process died between commit and ack
    assert poison
    assert all("not valid JSON" in letter.reason for letter in poison)
    invalid = [letter for letter in kept if letter.event_id in out.invalid_ids]
    assert invalid
    assert all("time" in letter.reason for letter in invalid)
    assert len(poison) + len(invalid) == len(kept)
