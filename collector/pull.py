"""Pull connectors and reconciliation (issue 9; docs/pull.md): where a source system cannot push,
syncwatch pulls.

A **connector** polls a REST API from its stored cursor, page by page. Each page's records are
mapped onto canonical events by a mapping preset (or are canonical events already), stored
through the one ingest path (validation, dedup by ``(source, id)``, dead letters) and the cursor
is written IN THE SAME TRANSACTION, after the events: a restart resumes from the stored cursor,
nothing is lost, and whatever is read twice (the ``>=`` overlap of a modified-since window, a page
read again after a crash) is a duplicate.

A **reconciliation** lists what a source says happened over a lookback window; each record whose
mapped ``(source, id)`` syncwatch never received is stored and raises an ``unreported_record``
finding (collector/unreported.py), in one transaction.

Requests are retried on 429, 5xx, timeouts and connection failures, waiting what ``Retry-After``
says (seconds or an HTTP date) or an exponential backoff, every wait capped; any other 4xx stops
the cycle with a logged error. Credentials come from environment variables and are never logged.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from collector.ingest import IngestResult, Judgement, judge, store_judged
from collector.mapping import MappingError, load_preset, map_payload, parse_path
from collector.unreported import raise_findings
from core import deadletters, jsoncodec
from core.db import Database
from core.deadletters import NewDeadLetter
from core.jobruns import claim, finish, replica_name
from core.pull_settings import (
    ConnectorSettings,
    PullSettings,
    ReconcileSettings,
    SourceRequest,
    param_placeholders,
)
from core.tables import dead_letters, job_runs, source_cursors

log = logging.getLogger("syncwatch.pull")

Sleep = Callable[[float], None]
Clock = Callable[[], datetime]
#: One record as received -> canonical events (0..n); raises MappingError when it cannot.
Mapper = Callable[[Any], list[dict[str, Any]]]

PULL_CHANNEL = "pull"
RECONCILE_CHANNEL = "reconcile"
RECONCILE_PREFIX = "reconcile:"
RETRYABLE = frozenset({429, 500, 502, 503, 504})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PullError(Exception):
    """A request that failed for good in this cycle (a 4xx, or retries exhausted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- pure helpers ---------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_instant(value: Any) -> datetime | None:
    """An RFC 3339 instant (a naive one is taken as UTC); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP date (RFC 9110 10.2.3); None when absent or
    unreadable. A date in the past means now (0)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_wait(attempt: int, retry_after: float | None, settings: SourceRequest) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): what the source asked for, or
    ``backoff_seconds`` doubled per attempt; never more than ``max_backoff_seconds``."""
    wanted = (
        retry_after if retry_after is not None else settings.backoff_seconds * 2 ** (attempt - 1)
    )
    return float(min(wanted, settings.max_backoff_seconds))


def lookup(document: Any, path: str | None) -> Any:
    """The value at a dotted path (list indexes as numbers); "" is the document; None when the
    path leads nowhere."""
    if path is None:
        return None
    value = document
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def fill_params(templates: dict[str, str], values: dict[str, str | None]) -> dict[str, str]:
    """The query parameters; one naming a placeholder that has no value is left out."""
    params = {}
    for name, template in templates.items():
        needed = param_placeholders(template)
        if any(values.get(p) is None for p in needed):
            continue
        params[name] = template.format(**{p: values[p] for p in needed})
    return params


def redact(url: str) -> str:
    """A URL fit for a log line: no user info, no query (tokens may ride in either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _raw(item: Any) -> bytes:
    try:
        return jsoncodec.dumps(item)
    except TypeError:
        return json.dumps(item, default=str).encode("ascii")


# --- mapping ---------------------------------------------------------------------------------


def _canonical(record: Any) -> list[dict[str, Any]]:
    if not isinstance(record, dict):
        raise MappingError("a record must be a canonical event (a JSON object)")
    return [record]


def make_mapper(preset: str | None, preset_dirs: Sequence[Path] = ()) -> Mapper:
    """The preset's mapping of one record (each record is mapped alone, as the preset's whole
    payload: the preset's own ``records`` path is not used), or the identity when the records
    are canonical events. Raises the mapping engine's error (a ValueError) for an unknown or
    invalid preset, at start-up."""
    if preset is None:
        return _canonical
    # the connector finds the records (``records``); each is mapped alone, as the whole payload
    loaded = dataclasses.replace(load_preset(preset, preset_dirs), records=parse_path("$"))

    def mapper(record: Any) -> list[dict[str, Any]]:
        return map_payload(loaded, record)

    return mapper


def map_records(
    records: Sequence[Any], mapper: Mapper, *, channel: str, preset: str | None
) -> tuple[list[Any], list[NewDeadLetter]]:
    """Pure: the canonical events of the records, and a dead letter per unmappable record."""
    items: list[Any] = []
    letters: list[NewDeadLetter] = []
    for index, record in enumerate(records):
        try:
            items.extend(mapper(record))
        except MappingError as error:
            letters.append(
                NewDeadLetter(
                    reason=error.reason if preset else f"canonical records: {error.reason}",
                    raw=_raw(record),
                    channel=channel,
                    content_type="application/json",
                    batch_index=index,
                )
            )
    return items, letters


# --- HTTP ------------------------------------------------------------------------------------


class SourceClient:
    """GET pages from a source, retrying as the settings say. Credentials come from the
    environment when the client is made and are never logged."""

    def __init__(
        self,
        settings: SourceRequest,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = _utc_now,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        headers = {"Accept": "application/json", **settings.headers}
        if settings.token_env is not None:
            headers["Authorization"] = f"Bearer {os.environ.get(settings.token_env, '')}"
        elif settings.username_env is not None and settings.password_env is not None:
            pair = (
                f"{os.environ.get(settings.username_env, '')}:"
                f"{os.environ.get(settings.password_env, '')}"
            )
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        self._client = httpx.Client(
            headers=headers,
            timeout=settings.timeout_seconds,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SourceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def page(self, values: dict[str, str | None]) -> Any:
        """One page: ``values`` fill the parameter templates; a ``token`` that is an http(s)
        URL on the configured host is fetched as it is."""
        token = values.get("token")
        url, params = self.settings.url, fill_params(self.settings.params, values)
        if token and token.startswith(("http://", "https://")):
            ours, theirs = urlsplit(self.settings.url), urlsplit(token)
            if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
                raise PullError(
                    f"the next page is on another host ({redact(token)}): refused, the "
                    "credentials are only for " + redact(self.settings.url)
                )
            url, params = token, {}
        return self._get(url, params)

    def _get(self, url: str, params: dict[str, str]) -> Any:
        attempts = self.settings.attempts
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                response = self._client.get(url, params=params)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__} from {redact(url)}"
            else:
                if response.is_success:
                    try:
                        return jsoncodec.loads(response.content)
                    except ValueError as error:
                        raise PullError(
                            f"{redact(url)} answered with invalid JSON: {error}"
                        ) from None
                if response.status_code not in RETRYABLE:
                    raise PullError(
                        f"{redact(url)} answered {response.status_code}: {response.text[:200]!r}"
                    )
                problem = f"{redact(url)} answered {response.status_code}"
                retry_after = retry_after_seconds(response.headers.get("retry-after"), self.clock())
            if attempt == attempts:
                raise PullError(f"{problem}; gave up after {attempts} attempts")
            wait = backoff_wait(attempt, retry_after, self.settings)
            log.warning("%s (attempt %d of %d): waiting %.1f s", problem, attempt, attempts, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _page_parts(answer: Any, settings: SourceRequest) -> tuple[list[Any], str | None]:
    records = lookup(answer, settings.records)
    if not isinstance(records, list):
        where = settings.records or "the answer"
        raise PullError(f"no list of records at {where!r} in the answer")
    token = lookup(answer, settings.next)
    if isinstance(token, int | float) and not isinstance(token, bool):
        token = str(token)
    return records, token if isinstance(token, str) and token else None


# --- the store -------------------------------------------------------------------------------


@dataclass
class Cursor:
    cursor: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


def load_cursor(connection: Connection, connector: str) -> Cursor:
    row = connection.execute(
        sa.select(source_cursors.c.cursor, source_cursors.c.state).where(
            source_cursors.c.connector == connector
        )
    ).first()
    if row is None:
        return Cursor()
    return Cursor(row.cursor, dict(row.state or {}))


def save_cursor(connection: Connection, connector: str, cursor: Cursor, *, now: datetime) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    values = {"cursor": cursor.cursor, "state": cursor.state, "updated_at": now}
    connection.execute(
        dialect.insert(source_cursors)
        .values(connector=connector, **values)
        .on_conflict_do_update(index_elements=["connector"], set_=values)
    )


def _known_raws(connection: Connection, channel: str, raws: Sequence[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    unique = sorted(set(raws))
    for start in range(0, len(unique), 200):
        rows = connection.execute(
            sa.select(dead_letters.c.raw).where(
                dead_letters.c.channel == channel,
                dead_letters.c.raw.in_(unique[start : start + 200]),
            )
        )
        found.update(bytes(raw) for (raw,) in rows)
    return found


def _drop_known_letters(
    connection: Connection, judgement: Judgement, letters: list[NewDeadLetter], channel: str
) -> list[NewDeadLetter]:
    """A record read again (the overlap of a window, a reconciliation's next run) is not
    dead-lettered again: what this channel already keeps, byte for byte, is left out."""
    raws = [_raw(item) for _, item in judgement.rejected] + [letter.raw for letter in letters]
    if not raws:
        return letters
    known = _known_raws(connection, channel, raws)
    if not known:
        return letters
    judgement.rejected = [(r, item) for r, item in judgement.rejected if _raw(item) not in known]
    return [letter for letter in letters if letter.raw not in known]


@dataclass(frozen=True)
class PageResult:
    ingest: IngestResult
    unmappable: int


def store_page(
    connection: Connection,
    items: Sequence[Any],
    unmappable: list[NewDeadLetter],
    *,
    channel: str,
    now: datetime,
    keep: Callable[[datetime], bool] | None = None,
    resolves_unreported: bool = True,
) -> PageResult:
    """Judge and store one page's events and dead letters in the caller's transaction. ``keep``
    filters valid events by their time (those it refuses are neither stored nor dead-lettered)."""
    judgement = judge(items, require_specversion=False)
    if keep is not None:
        judgement.valid = [(i, event) for i, event in judgement.valid if keep(event.time)]
    letters = _drop_known_letters(connection, judgement, unmappable, channel)
    result = store_judged(
        connection,
        judgement,
        channel=channel,
        content_type="application/json",
        now=now,
        resolves_unreported=resolves_unreported,
    )
    if letters:
        deadletters.add(connection, letters, received_at=now)
    return PageResult(result, len(letters))


# --- cycles ----------------------------------------------------------------------------------


@dataclass
class CycleReport:
    name: str
    kind: str  # connector, reconcile
    pages: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    findings: int = 0
    cursor: str | None = None
    error: str | None = None

    def add(self, records: int, page: PageResult) -> None:
        self.pages += 1
        self.records += records
        self.accepted += page.ingest.accepted
        self.duplicates += page.ingest.duplicates
        self.rejected += len(page.ingest.rejected) + page.unmappable

    def as_dict(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "records": self.records,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "findings": self.findings,
            "error": self.error,
        }


def _record_error(
    database: Database, connector: str, report: CycleReport, error: PullError, now: datetime
) -> None:
    report.error = error.reason
    log.error("%s %s: %s", report.kind, report.name, error.reason)
    with database.write() as connection:
        stored = load_cursor(connection, connector)
        stored.state["last_error"] = {"at": rfc3339(now), "reason": error.reason}
        save_cursor(connection, connector, stored, now=now)


def run_connector(
    database: Database,
    name: str,
    settings: ConnectorSettings,
    mapper: Mapper,
    *,
    clock: Clock = _utc_now,
    sleep: Sleep = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> CycleReport:
    """One cycle of a pull connector, from its stored cursor until the source has no next page
    (or ``max_pages``). Never raises for the source's failures: they are logged and kept in the
    cursor row's state (``last_error``); the next cycle starts from the stored cursor."""
    report = CycleReport(name, "connector")
    with database.read() as connection:
        stored = load_cursor(connection, name)
    try:
        with SourceClient(settings, sleep=sleep, clock=clock, transport=transport) as client:
            if settings.cursor == "modified_since":
                _modified_since(database, name, settings, mapper, client, stored, report, clock)
            else:
                _by_token(database, name, settings, mapper, client, stored, report, clock)
    except PullError as error:
        _record_error(database, name, report, error, clock())
    return report


def _store(
    database: Database,
    connector: str,
    settings: SourceRequest,
    mapper: Mapper,
    records: list[Any],
    cursor: Cursor,
    report: CycleReport,
    now: datetime,
) -> None:
    """Store one page's events, then its cursor, in one transaction."""
    items, unmappable = map_records(records, mapper, channel=PULL_CHANNEL, preset=settings.preset)
    with database.write() as connection:
        page = store_page(connection, items, unmappable, channel=PULL_CHANNEL, now=now)
        save_cursor(connection, connector, cursor, now=now)
    report.add(len(records), page)
    report.cursor = cursor.cursor


def _modified_since(
    database: Database,
    name: str,
    settings: ConnectorSettings,
    mapper: Mapper,
    client: SourceClient,
    stored: Cursor,
    report: CycleReport,
    clock: Clock,
) -> None:
    """The cursor is the latest last-modified instant read; a window (``since``) is paged
    through with the source's next token, kept in the state after each page, and the cursor
    moves only when the window is done (so records in any order within it are never skipped)."""
    token: str | None = stored.state.get("page_token")
    if token:
        since: str | None = stored.state.get("window_since")
    else:
        initial = settings.initial_since
        since = stored.cursor or (rfc3339(initial) if initial else None)
    seen = parse_instant(stored.state.get("max_seen")) if token else None
    for _ in range(settings.max_pages):
        answer = client.page({"since": since, "token": token, "page_size": str(settings.page_size)})
        records, following = _page_parts(answer, settings)
        for record in records:
            modified = parse_instant(lookup(record, settings.modified_field))
            if modified is not None and (seen is None or modified > seen):
                seen = modified
        more = following is not None and following != token
        if more:
            state = {
                "window_since": since,
                "page_token": following,
                "max_seen": rfc3339(seen) if seen else None,
            }
            cursor = Cursor(stored.cursor, state)
        else:
            start = parse_instant(since)
            if seen is not None and (start is None or seen > start):
                since = rfc3339(seen)
            cursor = Cursor(since, {"last_cycle_at": rfc3339(clock())})
        _store(database, name, settings, mapper, records, cursor, report, clock())
        stored = cursor
        if not more:
            return
        token = following


def _by_token(
    database: Database,
    name: str,
    settings: ConnectorSettings,
    mapper: Mapper,
    client: SourceClient,
    stored: Cursor,
    report: CycleReport,
    clock: Clock,
) -> None:
    """The cursor is the source's own token: sent as ``{token}``, replaced by the answer's next
    token after each page; without one the cursor stays (the last page is read again next time,
    its events are duplicates)."""
    token = stored.cursor
    for _ in range(settings.max_pages):
        answer = client.page({"token": token, "page_size": str(settings.page_size)})
        records, following = _page_parts(answer, settings)
        cursor = Cursor(following or token, {"last_cycle_at": rfc3339(clock())})
        _store(database, name, settings, mapper, records, cursor, report, clock())
        if following is None or following == token or not records:
            return
        token = following


def run_reconcile(
    database: Database,
    name: str,
    settings: ReconcileSettings,
    mapper: Mapper,
    *,
    clock: Clock = _utc_now,
    sleep: Sleep = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> CycleReport:
    """One reconciliation over ``(now - lookback, now - grace]``: every record's events are
    stored through the ingest path; those stored NOW were never received, and each raises an
    ``unreported_record`` finding in the same transaction (a record received already is a
    duplicate and raises nothing, so a second run raises nothing new)."""
    report = CycleReport(name, "reconcile")
    row_name = RECONCILE_PREFIX + name
    now = clock()
    since, until = now - settings.lookback, now - settings.grace
    values: dict[str, str | None] = {
        "since": rfc3339(since),
        "until": rfc3339(until),
        "token": None,
        "page_size": str(settings.page_size),
    }
    try:
        with SourceClient(settings, sleep=sleep, clock=clock, transport=transport) as client:
            for _ in range(settings.max_pages):
                answer = client.page(values)
                records, following = _page_parts(answer, settings)
                items, unmappable = map_records(
                    records, mapper, channel=RECONCILE_CHANNEL, preset=settings.preset
                )
                with database.write() as connection:
                    page = store_page(
                        connection,
                        items,
                        unmappable,
                        channel=RECONCILE_CHANNEL,
                        now=clock(),
                        keep=lambda moment: since < moment <= until,
                        resolves_unreported=False,
                    )
                    report.findings += raise_findings(
                        connection, page.ingest.stored, connector=name, now=clock()
                    )
                report.add(len(records), page)
                if following is None or following == values["token"]:
                    break
                values["token"] = following
    except PullError as error:
        _record_error(database, row_name, report, error, clock())
        return report
    with database.write() as connection:
        summary = {"last_run_at": rfc3339(now), "window": [rfc3339(since), rfc3339(until)]}
        summary.update({k: v for k, v in report.as_dict().items() if k != "error"})
        report.cursor = rfc3339(until)
        save_cursor(connection, row_name, Cursor(report.cursor, summary), now=clock())
    return report


# --- scheduling ------------------------------------------------------------------------------


def slot_of(now: datetime, interval: timedelta) -> datetime:
    """The start of the interval ``now`` falls in (intervals counted from the Unix epoch), the
    same instant on every replica."""
    step = max(1, int(interval.total_seconds()))
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=UTC)


def job_name(kind: str, name: str) -> str:
    return f"{'pull' if kind == 'connector' else 'reconcile'}:{name}"


def scheduled_cycle(
    database: Database,
    kind: str,
    name: str,
    settings: ConnectorSettings | ReconcileSettings,
    mapper: Mapper,
    *,
    clock: Clock = _utc_now,
    sleep: Sleep = time.sleep,
    replica: str | None = None,
) -> CycleReport | None:
    """The scheduler's run of one connector or reconciliation: claimed once per interval over
    all replicas (a ``job_runs`` row per slot; rows older than a day are removed); None when
    another replica has the slot."""
    now = clock()
    job = job_name(kind, name)
    slot = slot_of(now, settings.interval)
    with database.write() as connection:
        if not claim(connection, job, slot, by=replica or replica_name(), now=now):
            return None
        connection.execute(
            job_runs.delete().where(
                job_runs.c.job == job, job_runs.c.scheduled_for < slot - timedelta(days=1)
            )
        )
    if isinstance(settings, ConnectorSettings):
        report = run_connector(database, name, settings, mapper, clock=clock, sleep=sleep)
    else:
        report = run_reconcile(database, name, settings, mapper, clock=clock, sleep=sleep)
    with database.write() as connection:
        finish(
            connection,
            job,
            slot,
            outcome="failed" if report.error else "done",
            details=report.as_dict(),
            now=clock(),
        )
    return report


@dataclass(frozen=True)
class Planned:
    kind: str  # connector, reconcile
    name: str
    settings: ConnectorSettings | ReconcileSettings
    mapper: Mapper


def plan(
    settings: PullSettings, only: str | None = None, preset_dirs: Sequence[Path] = ()
) -> list[Planned]:
    """The enabled connectors and reconciliations (or the one named), with their presets
    loaded: an unknown preset or an unknown name raises ValueError naming it."""
    chosen: list[Planned] = []
    entries: list[tuple[str, str, ConnectorSettings | ReconcileSettings]] = [
        *(("connector", n, s) for n, s in settings.connectors.items()),
        *(("reconcile", n, s) for n, s in settings.reconcile.items()),
    ]
    for kind, name, entry in entries:
        if only is not None and name != only:
            continue
        if only is None and not entry.enabled:
            continue
        try:
            mapper = make_mapper(entry.preset, preset_dirs)
        except ValueError as error:
            raise ValueError(
                f"pull.{'connectors' if kind == 'connector' else 'reconcile'}."
                f"{name}.preset: {error}"
            ) from error
        chosen.append(Planned(kind, name, entry, mapper))
    if only is not None and not chosen:
        known = ", ".join([*settings.connectors, *settings.reconcile]) or "none configured"
        raise ValueError(f"no pull connector or reconciliation {only!r} (known: {known})")
    return chosen


def run_now(
    database: Database,
    planned: Sequence[Planned],
    *,
    clock: Clock = _utc_now,
    sleep: Sleep = time.sleep,
) -> list[CycleReport]:
    """One cycle of each, now, unclaimed (``syncwatch pull``)."""
    reports = []
    for item in planned:
        if isinstance(item.settings, ConnectorSettings):
            reports.append(
                run_connector(
                    database, item.name, item.settings, item.mapper, clock=clock, sleep=sleep
                )
            )
        else:
            reports.append(
                run_reconcile(
                    database, item.name, item.settings, item.mapper, clock=clock, sleep=sleep
                )
            )
    return reports
