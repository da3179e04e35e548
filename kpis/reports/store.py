"""Where weekly reports are kept: the ``reports`` table, one row per ISO week and format (the bytes,
their media type and size, when and by whom they were made). Functions take the connection of the
caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.tables import reports
from kpis.reports.week import IsoWeek

MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "md": "text/markdown; charset=utf-8",
}


def file_name(week: IsoWeek | str, fmt: str) -> str:
    """``syncwatch-report-2026-W48.pdf``: the name of a report's file wherever it goes."""
    return f"syncwatch-report-{week}.{fmt}"


@dataclass(frozen=True)
class StoredWeek:
    week: str
    formats: tuple[str, ...]  # sorted
    generated_at: datetime  # the latest of its formats


@dataclass(frozen=True)
class StoredReport:
    week: str
    format: str
    content: bytes
    media_type: str
    generated_at: datetime
    generated_by: str

    @property
    def filename(self) -> str:
        return file_name(self.week, self.format)


def _upsert(connection: Connection) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(reports)
    return statement.on_conflict_do_update(
        index_elements=["week", "format"],
        set_={
            name: statement.excluded[name]
            for name in ("content", "media_type", "size_bytes", "generated_at", "generated_by")
        },
    )


def save(
    connection: Connection,
    week: IsoWeek | str,
    contents: Mapping[str, bytes],
    *,
    now: datetime,
    generated_by: str,
) -> None:
    """Keep each format of the week's report, replacing what was kept for it before."""
    for fmt, content in contents.items():
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"unknown report format {fmt!r}; known: {', '.join(MEDIA_TYPES)}")
        connection.execute(
            _upsert(connection).values(
                week=str(week),
                format=fmt,
                content=content,
                media_type=MEDIA_TYPES[fmt],
                size_bytes=len(content),
                generated_at=now,
                generated_by=generated_by[:255],
            )
        )


def list_weeks(connection: Connection) -> list[StoredWeek]:
    """Every kept week with its formats, the newest week first."""
    rows = connection.execute(
        sa.select(reports.c.week, reports.c.format, reports.c.generated_at).order_by(
            reports.c.week.desc(), reports.c.format
        )
    ).all()
    weeks: dict[str, tuple[list[str], datetime]] = {}
    for week, fmt, generated_at in rows:
        formats, latest = weeks.setdefault(week, ([], generated_at))
        formats.append(fmt)
        weeks[week] = (formats, max(latest, generated_at))
    return [
        StoredWeek(week, tuple(sorted(formats)), latest)
        for week, (formats, latest) in weeks.items()
    ]


def get(connection: Connection, week: IsoWeek | str, fmt: str) -> StoredReport | None:
    row = connection.execute(
        sa.select(
            reports.c.content,
            reports.c.media_type,
            reports.c.generated_at,
            reports.c.generated_by,
        ).where(reports.c.week == str(week), reports.c.format == fmt)
    ).first()
    if row is None:
        return None
    return StoredReport(
        str(week), fmt, bytes(row.content), row.media_type, row.generated_at, row.generated_by
    )


def oldest_kept(current: IsoWeek, keep_weeks: int) -> IsoWeek:
    """The oldest week kept when ``current`` is the week in progress: the ``keep_weeks`` complete
    weeks before it (``keep_weeks`` 26 keeps half a year of reports)."""
    return current.shifted(-keep_weeks)


def prune(connection: Connection, *, current: IsoWeek, keep_weeks: int) -> list[str]:
    """Delete the reports of weeks before :func:`oldest_kept`; returns the weeks deleted.
    ``2026-W05`` sorts before ``2026-W48`` and ``2027-W01`` as text, so one comparison does."""
    cutoff = str(oldest_kept(current, keep_weeks))
    gone = connection.execute(
        sa.select(reports.c.week).where(reports.c.week < cutoff).distinct()
    ).scalars()
    weeks = sorted(gone)
    if weeks:
        connection.execute(reports.delete().where(reports.c.week < cutoff))
    return weeks
