"""Reconciliation (docs/pull.md): a real local HTTP source lists what it says happened; the
records syncwatch never received as events raise exactly one ``unreported_record`` finding each
(integration_oncall, opened at the record's time) and are stored; a second run raises nothing new;
the late delivery of the event resolves its finding by itself; the findings are in
GET /v1/exceptions and the exception KPIs, and the probe runner leaves them alone. Both
databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from collector.pull import RECONCILE_CHANNEL, load_cursor, make_mapper, run_reconcile
from collector.unreported import record_flow_id
from core.db import Database
from core.pull_settings import ReconcileSettings
from core.tables import dead_letters, events, findings
from core.web import utc_now
from probes.flowtypes import configured_flow_types
from probes.runner import run_until_idle
from tests.conftest import bearer
from tests.support.pullsource import SourceState, source_server

PRESETS = Path(__file__).resolve().parents[1] / "fixtures" / "presets"
SOURCE = "clm/pulltest"


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event_id(number: int) -> str:
    return f"contract-C-{number:03d}-signed"


@pytest.fixture
def now() -> datetime:
    return utc_now().replace(microsecond=0) - timedelta(minutes=1)


@pytest.fixture
def source(now: datetime) -> Iterator[tuple[SourceState, str]]:
    state = SourceState()
    state.records = [
        {
            "contractId": f"C-{n:03d}",
            "status": "signed",
            "signedAt": stamp(now - timedelta(hours=10) + timedelta(minutes=n)),
            "updatedAt": stamp(now),
            "value": "5000.00",
            "currency": "EUR",
            "entity": "ACME GmbH",
            "correlationId": f"corr-{n}",
        }
        for n in range(1, 7)
    ]
    # too young (its push may be on its way), and too old (outside the lookback)
    state.records.append({**state.records[0], "contractId": "C-007", "signedAt": stamp(now)})
    state.records.append(
        {**state.records[0], "contractId": "C-008", "signedAt": stamp(now - timedelta(hours=30))}
    )
    # listed, but it cannot be mapped: a dead letter (once), no finding
    state.records.append({**state.records[0], "contractId": "C-009", "status": "void"})
    with source_server(state) as url:
        yield state, url


def settings_for(url: str) -> ReconcileSettings:
    return ReconcileSettings(
        url=f"{url}/signed",
        params={"from": "{since}", "to": "{until}", "page": "{token}", "limit": "{page_size}"},
        records="results",
        next="next",
        preset="pulltest_clm",
        page_size=2,
        lookback="24h",
        grace="15m",
    )


def post_event(api: TestClient, key: str, number: int, time: str) -> Any:
    answer = api.post(
        "/v1/events",
        json={
            "id": event_id(number),
            "source": SOURCE,
            "type": "contract.signed",
            "time": time,
            "correlationid": f"corr-{number}",
            "data": {"contract_id": f"C-{number:03d}"},
        },
        headers=bearer(key),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def open_unreported(api: TestClient, key: str) -> list[dict[str, Any]]:
    answer = api.get(
        "/v1/exceptions",
        params={"kind": "unreported_record", "queue": "integration_oncall"},
        headers=bearer(key),
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return sorted(items, key=lambda item: item["flow_id"])


def oncall_open_kpi(api: TestClient, key: str, as_of: datetime) -> int:
    answer = api.get(
        "/v1/kpis", params={"as_of": stamp(as_of), "further": "false"}, headers=bearer(key)
    )
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["exceptions"]["integration_oncall"]["open"]
    return count


def test_records_never_received_raise_findings_once_and_are_stored(
    api: TestClient,
    database: Database,
    keys: dict[str, str],
    source: tuple[SourceState, str],
    now: datetime,
) -> None:
    state, url = source
    records = {int(r["contractId"][2:]): r for r in state.records}
    for number in (1, 3, 5):  # these arrived as events
        post_event(api, keys["ingest"], number, records[number]["signedAt"])
    settings = settings_for(url)
    mapper = make_mapper(settings.preset, [PRESETS])

    report = run_reconcile(database, "clm", settings, mapper, clock=lambda: now)
    assert report.error is None
    assert (report.findings, report.accepted, report.duplicates) == (3, 3, 3)
    assert report.rejected == 1
    window = state.requests[0].query
    assert window["from"] == stamp(now - timedelta(hours=24))
    assert window["to"] == stamp(now - timedelta(minutes=15))

    listed = open_unreported(api, keys["oncall"])
    assert [item["flow_id"] for item in listed] == [
        record_flow_id(SOURCE, event_id(n)) for n in (2, 4, 6)
    ]
    for item, number in zip(listed, (2, 4, 6), strict=True):
        assert item["queue"] == "integration_oncall"
        opened = datetime.fromisoformat(item["opened_at"].replace("Z", "+00:00"))
        assert stamp(opened) == records[number]["signedAt"]  # the record's time in the source
        assert item["details"]["id"] == event_id(number)
        assert item["details"]["source"] == SOURCE
        assert item["resolved_at"] is None
    with database.read() as connection:
        stored = connection.execute(
            sa.select(events.c.event_id, sa.func.count())
            .where(events.c.source == SOURCE)
            .group_by(events.c.event_id)
        ).all()
        kept = load_cursor(connection, "reconcile:clm")
    assert sorted(stored) == [(event_id(n), 1) for n in range(1, 7)]
    assert kept.cursor == stamp(now - timedelta(minutes=15)) and kept.state["findings"] == 3
    assert oncall_open_kpi(api, keys["viewer"], now) == 3

    # the probe runner evaluates the flows of these contracts; it leaves the findings alone
    run_until_idle(database, configured_flow_types(None), now=now, batch_events=1000)
    assert len(open_unreported(api, keys["oncall"])) == 3

    # a second run: everything listed was received or reconciled already, nothing new
    again = run_reconcile(
        database, "clm", settings, mapper, clock=lambda: now + timedelta(minutes=1)
    )
    assert (again.findings, again.accepted, again.duplicates, again.rejected) == (0, 0, 6, 0)
    with database.read() as connection:
        assert (
            connection.execute(
                sa.select(sa.func.count())
                .select_from(findings)
                .where(findings.c.kind == "unreported_record")
            ).scalar_one()
            == 3
        )
        letters = connection.execute(
            sa.select(dead_letters.c.channel).where(dead_letters.c.channel == RECONCILE_CHANNEL)
        ).all()
    assert len(letters) == 1

    # the source's own delivery of contract 2 arrives late: a duplicate, and its finding
    # resolves by itself; an operator resolves contract 4's
    before = utc_now()
    answer = post_event(api, keys["ingest"], 2, records[2]["signedAt"])
    assert answer["duplicates"] == 1
    resolved = api.get(
        "/v1/exceptions",
        params={"kind": "unreported_record", "status": "resolved"},
        headers=bearer(keys["oncall"]),
    ).json()["items"]
    assert [(r["flow_id"], r["resolved_by"]) for r in resolved] == [
        (record_flow_id(SOURCE, event_id(2)), "syncwatch")
    ]
    assert "arrived" in resolved[0]["resolution"]
    four = next(i for i in open_unreported(api, keys["oncall"]) if event_id(4) in i["flow_id"])
    done = api.post(
        f"/v1/exceptions/{four['id']}/resolve",
        json={"note": "lost by the CLM webhook outage"},
        headers=bearer(keys["oncall"]),
    )
    assert done.status_code == 200, done.text
    assert [i["flow_id"] for i in open_unreported(api, keys["oncall"])] == [
        record_flow_id(SOURCE, event_id(6))
    ]
    assert oncall_open_kpi(api, keys["viewer"], utc_now() + timedelta(seconds=1)) == 1
    assert oncall_open_kpi(api, keys["viewer"], before) == 3  # open then: counted as of then

    third = run_reconcile(
        database, "clm", settings, mapper, clock=lambda: now + timedelta(minutes=2)
    )
    assert third.findings == 0
    assert len(open_unreported(api, keys["oncall"])) == 1


def test_a_failing_source_raises_nothing_and_records_the_error(
    database: Database, source: tuple[SourceState, str], now: datetime
) -> None:
    state, url = source
    state.fail_next.append((403, {}))
    settings = settings_for(url)
    report = run_reconcile(
        database, "clm", settings, make_mapper(settings.preset, [PRESETS]), clock=lambda: now
    )
    assert report.error is not None and "403" in report.error
    with database.read() as connection:
        assert (
            connection.execute(sa.select(sa.func.count()).select_from(findings)).scalar_one() == 0
        )
        assert "403" in load_cursor(connection, "reconcile:clm").state["last_error"]["reason"]
    assert stamp(now).endswith("Z") and now.tzinfo is UTC
