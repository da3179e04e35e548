"""Bulk loading of event files (``syncwatch ingest FILE``): NDJSON (one event per line) or JSON (an
array of events, or one event). Same validation, dedup and dead-lettering as the API, in batches,
each committed before the next is read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from collector.ingest import dead_letter_body, ingest
from core import jsoncodec
from core.db import Database
from core.web import utc_now

CHANNEL = "cli"


@dataclass
class LoadSummary:
    accepted: int = 0
    duplicates: int = 0
    #: (where, reason): "line 12" for NDJSON, "item 3" for a JSON array
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _is_whole_json(path: Path) -> bool:
    """A file whose first non-blank character is ``[`` is a JSON array; one that holds exactly one
    JSON value is JSON; anything else is read as NDJSON."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        return True
    try:
        jsoncodec.loads(path.read_bytes())
    except ValueError:
        return False
    return True


def _ndjson_batches(
    path: Path, batch_size: int, progress: Progress, task: Any
) -> Iterator[list[tuple[int, bytes, Any]]]:
    """Batches of (line number, raw line, parsed value or a ValueError)."""
    batch: list[tuple[int, bytes, Any]] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            progress.advance(task, len(line))
            if not line.strip():
                continue
            try:
                value: Any = jsoncodec.loads(line)
            except ValueError as exc:
                value = exc
            batch.append((number, line.rstrip(b"\r\n"), value))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def load_file(
    database: Database, path: Path, *, batch_size: int = 1000, console: Console | None = None
) -> LoadSummary:
    summary = LoadSummary()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=console is None) as progress:
        task = progress.add_task(f"ingesting {path.name}", total=path.stat().st_size)
        if _is_whole_json(path):
            value = jsoncodec.loads(path.read_bytes())
            items = value if isinstance(value, list) else [value]
            progress.update(task, total=max(len(items), 1), completed=0)
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                _ingest(database, chunk, [f"item {start + i}" for i in range(len(chunk))], summary)
                progress.advance(task, len(chunk))
            return summary
        for batch in _ndjson_batches(path, batch_size, progress, task):
            good = [(n, v) for n, _, v in batch if not isinstance(v, ValueError)]
            for number, raw, value in batch:
                if isinstance(value, ValueError):
                    reason = f"line {number}: not valid JSON: {value}"
                    dead_letter_body(
                        database,
                        raw,
                        reason=reason,
                        channel=CHANNEL,
                        content_type="application/x-ndjson",
                        now=utc_now(),
                    )
                    summary.rejected.append((f"line {number}", reason))
            _ingest(database, [v for _, v in good], [f"line {n}" for n, _ in good], summary)
    return summary


def _ingest(database: Database, items: list[Any], places: list[str], summary: LoadSummary) -> None:
    if not items:
        return
    result = ingest(
        database,
        items,
        require_specversion=False,
        channel=CHANNEL,
        content_type=None,
        now=utc_now(),
    )
    summary.accepted += result.accepted
    summary.duplicates += result.duplicates
    summary.rejected.extend((places[r.index], r.error) for r in result.rejected)
