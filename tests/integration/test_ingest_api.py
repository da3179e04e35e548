"""POST /v1/events through HTTP on SQLite and PostgreSQL: content modes, dedup, rejection into the
dead-letter store, limits, exact money, the error shape and the stored columns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from core import jsoncodec
from core.db import Database
from core.settings import load_settings
from core.tables import dead_letters, events
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.builders import make_event
from tests.support.examples import EXAMPLES

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def post(
    api: TestClient, key: str, content: Any, content_type: str = "application/json", **extra: str
) -> Any:
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    return api.post(
        "/v1/events", content=raw, headers={**bearer(key), "Content-Type": content_type, **extra}
    )


def stored(database: Database) -> list[Any]:
    with database.read() as connection:
        return list(connection.execute(sa.select(events).order_by(events.c.seq)))


def letters(database: Database) -> list[Any]:
    with database.read() as connection:
        return list(connection.execute(sa.select(dead_letters).order_by(dead_letters.c.id)))


def binary_headers(event: dict[str, Any]) -> dict[str, str]:
    return {f"ce-{name}": value for name, value in event.items() if name != "data"}


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


MODES = ["json-object", "json-array", "structured", "batch", "binary"]


def send(api: TestClient, key: str, mode: str, batch: list[dict[str, Any]]) -> Any:
    """Send the events in one request of the given content mode (one event for single modes)."""
    ce = [{**event, "specversion": "1.0"} for event in batch]
    if mode == "json-object":
        return post(api, key, batch[0])
    if mode == "json-array":
        return post(api, key, batch)
    if mode == "structured":
        return post(api, key, ce[0], STRUCTURED)
    if mode == "batch":
        return post(api, key, ce, BATCH)
    return post(api, key, ce[0]["data"], **binary_headers(ce[0]))


@pytest.mark.parametrize("mode", MODES)
def test_every_content_mode_stores_its_events(
    api: TestClient, keys: dict[str, str], database: Database, mode: str
) -> None:
    batch = [make_event(), make_event("project.created"), make_event("milestone.completed")]
    count = 3 if mode in ("json-array", "batch") else 1
    response = send(api, keys["ingest"], mode, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": count, "duplicates": 0, "rejected": []}
    rows = stored(database)
    assert [(r.source, r.event_id, r.type) for r in rows] == [
        (e["source"], e["id"], e["type"]) for e in batch[:count]
    ]
    assert [r.data for r in rows] == [e["data"] for e in batch[:count]]
    assert all(r.specversion == "1.0" for r in rows)
    if mode == "binary":
        assert rows[0].extensions == {"datacontenttype": "application/json"}
        assert rows[0].correlation_id == batch[0]["correlationid"]


@pytest.mark.parametrize("mode", ["structured", "batch", "binary"])
def test_cloudevents_modes_reject_an_event_without_specversion_1_0(
    api: TestClient, keys: dict[str, str], database: Database, mode: str
) -> None:
    event = make_event()
    if mode == "binary":  # the ce-specversion header is what makes binary mode: send "0.3"
        response = post(
            api, keys["ingest"], event["data"], **binary_headers(event), **{"ce-specversion": "0.3"}
        )
    else:
        response = post(
            api,
            keys["ingest"],
            event if mode == "structured" else [event],
            {"structured": STRUCTURED, "batch": BATCH}[mode],
        )
    [rejection] = response.json()["rejected"]
    assert rejection["index"] == 0 and rejection["id"] == event["id"]
    assert rejection["error"].startswith("specversion: ")
    assert stored(database) == [] and len(letters(database)) == 1


def test_the_same_event_in_another_batch_or_mode_is_a_duplicate(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    event = make_event()
    for mode, expected in [("binary", 1), ("structured", 0), ("json-array", 0), ("batch", 0)]:
        answer = send(api, keys["ingest"], mode, [event]).json()
        assert answer == {"accepted": expected, "duplicates": 1 - expected, "rejected": []}
    same_id_other_source = {**event, "source": "clm/docusign"}
    assert post(api, keys["ingest"], same_id_other_source).json()["accepted"] == 1
    assert len(stored(database)) == 2


def test_a_repeat_within_one_batch_is_a_duplicate(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    one, two = make_event(), make_event()
    answer = post(api, keys["ingest"], [one, two, one, {**two, "subject": "again"}]).json()
    assert answer == {"accepted": 2, "duplicates": 2, "rejected": []}
    assert [r.event_id for r in stored(database)] == [one["id"], two["id"]]


def test_the_first_stored_wins_over_a_redelivery_with_other_content(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    first = make_event()
    post(api, keys["ingest"], first)
    [before] = stored(database)
    changed = {
        **first,
        "time": "2026-11-25T10:00:00Z",
        "correlationid": "OTHER",
        "data": {**first["data"], "contract_value": "1.00", "region": "APAC"},
    }
    assert post(api, keys["ingest"], changed).json()["duplicates"] == 1
    [after] = stored(database)
    assert after._asdict() == before._asdict()
    assert (
        after.data["contract_value"] == "125000.00"
        and after.correlation_id == first["correlationid"]
    )


def test_each_invalid_example_is_rejected_and_kept_as_a_dead_letter(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    invalid = jsoncodec.loads((EXAMPLES / "invalid.json").read_bytes())
    response = post(api, keys["ingest"], (EXAMPLES / "invalid.json").read_bytes())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"]) == (0, 0)
    assert [(r["index"], r["id"]) for r in answer["rejected"]] == [
        (i, item.get("id")) for i, item in enumerate(invalid)
    ]
    attributes = ["id", "time", "time", "data.contract_id", "data", "source", "data.amount"]
    for rejection, attribute in zip(answer["rejected"], attributes, strict=True):
        assert rejection["error"].startswith(f"{attribute}: ")
    assert stored(database) == []
    kept = letters(database)
    assert [(k.batch_index, k.event_id, k.reason) for k in kept] == [
        (r["index"], r["id"], r["error"]) for r in answer["rejected"]
    ]
    for letter, item in zip(kept, invalid, strict=True):
        assert jsoncodec.loads(letter.raw) == item
        assert (letter.status, letter.channel, letter.attempts) == ("pending", "api", 0)
        assert letter.content_type == "application/json"
        assert letter.source == item["source"] and letter.type == item["type"]


def test_a_mixed_batch_stores_the_valid_events(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    good = [make_event(), make_event("project.created"), make_event("integration.failed")]
    bad = make_event("milestone.completed", data={"milestone_id": "M", "amount": "12,5 EUR"})
    # what no store could keep is rejected one by one, never a 500 for the whole batch
    weird = [make_event(subject="nul \x00"), make_event(id="evt-\ud800", data={"x": "\ud800"})]
    answer = post(api, keys["ingest"], [good[0], bad, good[1], 7, *weird, good[2]]).json()
    assert answer["accepted"] == 3
    assert [(r["index"], r["id"]) for r in answer["rejected"]] == [
        (1, bad["id"]),
        (3, None),
        (4, weird[0]["id"]),
        (5, "evt-\\ud800"),  # a lone surrogate cannot be written as UTF-8: shown escaped
    ]
    assert [r.event_id for r in stored(database)] == [e["id"] for e in good]
    kept = letters(database)
    assert [k.batch_index for k in kept] == [1, 3, 4, 5]
    assert kept[1].raw == b"7"
    assert [jsoncodec.loads(k.raw) for k in kept[2:]] == weird
    assert kept[3].event_id == "evt-\\ud800"


@pytest.mark.parametrize("content", [b"\xff\xfe{not json at all", b'{"id": 1,', b"42", b"[" * 3000])
def test_a_body_that_is_not_json_events_is_400_and_kept_byte_for_byte(
    api: TestClient, keys: dict[str, str], database: Database, content: bytes
) -> None:
    error = error_of(post(api, keys["ingest"], content), 400, "malformed")
    assert "JSON" in error["message"] or "event" in error["message"]
    [letter] = letters(database)
    assert letter.raw == content
    assert (letter.batch_index, letter.content_type) == (None, "application/json")
    assert letter.reason == error["message"]
    assert stored(database) == []


def test_a_non_json_content_type_is_415_and_the_body_is_kept(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    content = json.dumps(make_event()).encode()
    error_of(post(api, keys["ingest"], content, "text/plain"), 415, "unsupported_media_type")
    assert stored(database) == []
    assert [k.raw for k in letters(database)] == [content]


@pytest.fixture
def small_api(database: Database, database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    limits = {"max_batch_events": 5, "max_body_bytes": 2048}
    settings = load_settings({"data_dir": tmp_path, "database_url": database_url, "ingest": limits})
    with TestClient(create_app(settings, database)) as client:
        yield client


@pytest.mark.parametrize("content_type", ["application/json", BATCH])
def test_over_the_event_count_is_413_and_nothing_is_stored(
    small_api: TestClient, keys: dict[str, str], database: Database, content_type: str
) -> None:
    batch = [{"id": f"e{i}", "source": "clm/a", "specversion": "1.0"} for i in range(6)]
    error = error_of(post(small_api, keys["ingest"], batch, content_type), 413, "payload_too_large")
    assert error["details"] == {"events": 6, "max_events": 5}
    assert stored(database) == [] and letters(database) == []
    assert post(small_api, keys["ingest"], [make_event() for _ in range(5)]).json()["accepted"] == 5


def test_over_the_byte_size_is_413_and_nothing_is_stored(
    small_api: TestClient, keys: dict[str, str], database: Database
) -> None:
    big = make_event(subject="x" * 2100)
    error_of(post(small_api, keys["ingest"], big), 413, "payload_too_large")
    chunks = iter([json.dumps(big).encode()[:1500], json.dumps(big).encode()[1500:]])
    streamed = small_api.post(
        "/v1/events", content=chunks, headers={**bearer(keys["ingest"]), "Content-Type": STRUCTURED}
    )
    assert "content-length" not in {name.lower() for name in streamed.request.headers}
    error_of(streamed, 413, "payload_too_large")
    assert stored(database) == [] and letters(database) == []
    fits = make_event(subject="x" * 1500)
    assert post(small_api, keys["ingest"], fits).json()["accepted"] == 1


MONEY = "12345678901234567.89"


def test_money_stays_exact_as_a_json_number_and_as_a_string(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    as_string = make_event(
        data={"contract_id": "C-1", "contract_value": MONEY, "currency": "EUR", "milestones": []}
    )
    as_number = make_event(data={"contract_id": "C-2", "currency": "EUR", "milestones": []})
    text = json.dumps(as_number).replace(
        '"milestones": []',
        f'"milestones": [{{"milestone_id": "M", "amount": 0.10}}], "contract_value": {MONEY}, '
        '"wide": 123456789012345678901234567890',
    )
    answer = post(api, keys["ingest"], f"[{json.dumps(as_string)}, {text}]".encode()).json()
    assert answer["accepted"] == 2, answer
    first, second = (row.data for row in stored(database))
    assert first["contract_value"] == MONEY
    assert Decimal(str(second["contract_value"])) == Decimal(MONEY)
    assert not isinstance(second["contract_value"], float)
    assert Decimal(str(second["milestones"][0]["amount"])) == Decimal("0.10")
    assert Decimal(str(second["wide"])) == Decimal("123456789012345678901234567890")


@pytest.mark.parametrize(
    ("key_name", "content_type", "status", "code"),
    [
        (None, "application/json", 401, "unauthenticated"),
        ("viewer", "application/json", 403, "forbidden"),
        ("ingest", "text/plain", 415, "unsupported_media_type"),
        ("ingest", "application/json", 400, "malformed"),
    ],
)
def test_errors_have_the_documented_shape(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    key_name: str | None,
    content_type: str,
    status: int,
    code: str,
) -> None:
    headers = {"Content-Type": content_type, **(bearer(keys[key_name]) if key_name else {})}
    response = api.post("/v1/events", content=b"{not json", headers=headers)
    error_of(response, status, code)


def test_the_stored_columns(api: TestClient, keys: dict[str, str], database: Database) -> None:
    project = make_event(
        "project.created",
        time="2026-11-20T12:30:00.25+02:00",
        subject="PRJ-1 for CTR-1",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tenant="acme",
    )
    anonymous = make_event(
        "project.activated", data={"project_id": "PRJ-1"}, drop=["correlationid"]
    )
    before = datetime.now(UTC)
    assert post(api, keys["ingest"], [project, anonymous]).json()["accepted"] == 2
    after = datetime.now(UTC)
    first, second = stored(database)
    assert first.correlation_id == project["correlationid"] and second.correlation_id is None
    assert (first.contract_id, first.project_id) == ("CTR-1", "PRJ-1")
    assert (second.contract_id, second.project_id) == (None, "PRJ-1")
    assert first.time == datetime(2026, 11, 20, 10, 30, 0, 250000, tzinfo=UTC)
    assert (first.subject, first.traceparent) == (project["subject"], project["traceparent"])
    assert first.extensions == {"tenant": "acme"} and second.extensions is None
    canonical = json.dumps(project, sort_keys=True, separators=(",", ":")).encode()
    assert first.payload_hash == hashlib.sha256(canonical).hexdigest()
    assert first.payload_hash != second.payload_hash
    for row in (first, second):
        assert row.received_at.tzinfo is not None and row.resolved_correlation_id is None
        assert before <= row.received_at <= after
