"""The dead-letter store over HTTP: listing with status filter and pagination, one letter, and
retry (corrected or as stored) with its 404/409/422 answers and its audit entries."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from core import audit, jsoncodec
from core.db import Database
from core.tables import events
from tests.conftest import bearer
from tests.support.builders import make_event
from tests.support.examples import EXAMPLES

BAD_MONEY = 6  # the index in invalid.json of the milestone with amount "12,5 EUR"


def ingest(api: TestClient, keys: dict[str, str], content: Any, content_type: str) -> Any:
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    headers = {**bearer(keys["ingest"]), "Content-Type": content_type}
    return api.post("/v1/events", content=raw, headers=headers)


def load_invalid(api: TestClient, keys: dict[str, str]) -> list[dict[str, Any]]:
    """Post invalid.json; return the seven dead letters, oldest first."""
    ingest(api, keys, (EXAMPLES / "invalid.json").read_bytes(), "application/json")
    page = api.get("/v1/dead-letters", headers=bearer(keys["viewer"])).json()
    return list(reversed(page["items"]))


def retry(api: TestClient, key: str, letter_id: int, body: Any = None) -> Any:
    content = b"" if body is None else json.dumps(body).encode()
    headers = {**bearer(key), "Content-Type": "application/json"}
    return api.post(f"/v1/dead-letters/{letter_id}/retry", content=content, headers=headers)


def letter(api: TestClient, keys: dict[str, str], letter_id: int) -> dict[str, Any]:
    response = api.get(f"/v1/dead-letters/{letter_id}", headers=bearer(keys["viewer"]))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def listing(api: TestClient, keys: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api.get("/v1/dead-letters", params=params, headers=bearer(keys["viewer"]))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_the_listing_shows_each_rejected_event_with_its_reason_and_raw_text(
    api: TestClient, keys: dict[str, str]
) -> None:
    invalid = jsoncodec.loads((EXAMPLES / "invalid.json").read_bytes())
    items = load_invalid(api, keys)
    assert [item["batch_index"] for item in items] == list(range(7))
    assert [item["id"] for item in items] == sorted(item["id"] for item in items)
    for item, raw in zip(items, invalid, strict=True):
        assert item["raw_encoding"] == "utf-8"
        assert jsoncodec.loads(item["raw"]) == raw
        assert (item["status"], item["attempts"], item["event_seq"]) == ("pending", 0, None)
        assert item["event_id"] == raw.get("id") and item["reason"]
    assert letter(api, keys, items[BAD_MONEY]["id"]) == items[BAD_MONEY]


def test_pages_follow_next_before_id_until_it_is_null(
    api: TestClient, keys: dict[str, str]
) -> None:
    everything = [item["id"] for item in reversed(load_invalid(api, keys))]
    seen: list[int] = []
    cursor: int | None = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"before_id": cursor} if cursor is not None else {})
        page = listing(api, keys, **params)
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_before_id"]
        if cursor is None:
            break
        assert cursor == page["items"][-1]["id"]
    assert seen == everything and pages == 3


def test_a_raw_body_that_is_not_utf8_is_shown_in_base64(
    api: TestClient, keys: dict[str, str]
) -> None:
    content = b"\xff\xfe\x00 not json \x80"
    assert ingest(api, keys, content, "application/json").status_code == 400
    [item] = listing(api, keys)["items"]
    assert item["raw_encoding"] == "base64"
    assert base64.b64decode(item["raw"]) == content
    assert (item["batch_index"], item["event_id"], item["content_type"]) == (
        None,
        None,
        "application/json",
    )


def test_retry_with_a_corrected_event_stores_it_and_marks_the_letter_retried(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = load_invalid(api, keys)
    bad = items[BAD_MONEY]
    corrected = jsoncodec.loads(bad["raw"])
    corrected["data"]["amount"] = "12.50"
    response = retry(api, keys["oncall"], bad["id"], {"event": corrected})
    assert response.status_code == 200, response.text
    assert response.json() == {"dead_letter_id": bad["id"], "accepted": 1, "duplicates": 0}
    with database.read() as connection:
        [row] = connection.execute(sa.select(events)).all()
    assert (row.event_id, row.data["amount"]) == ("bad-money", "12.50")
    after = letter(api, keys, bad["id"])
    assert (after["status"], after["attempts"], after["retried_by"]) == ("retried", 1, "oncall")
    assert after["event_seq"] == row.seq and after["last_attempt_at"] is not None
    assert [i["id"] for i in listing(api, keys, status="retried")["items"]] == [bad["id"]]
    assert bad["id"] not in [i["id"] for i in listing(api, keys)["items"]]
    assert len(listing(api, keys, status="all")["items"]) == 7
    conflict = retry(api, keys["oncall"], bad["id"], {"event": corrected})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"
    assert letter(api, keys, bad["id"])["attempts"] == 1


def test_retry_without_a_body_of_a_still_invalid_letter_is_422_and_counts_the_attempt(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    bad = load_invalid(api, keys)[BAD_MONEY]
    for attempt in (1, 2):
        response = retry(api, keys["oncall"], bad["id"])
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid" and "data.amount" in error["message"]
        assert error["details"]["reason"].startswith("data.amount: ")
        now = letter(api, keys, bad["id"])
        assert (now["status"], now["attempts"], now["event_seq"]) == ("pending", attempt, None)
        assert now["reason"] == error["details"]["reason"]
    still_bad = jsoncodec.loads(bad["raw"])
    still_bad["data"]["amount"] = True
    replaced = retry(api, keys["oncall"], bad["id"], {"event": still_bad})
    assert replaced.status_code == 422 and letter(api, keys, bad["id"])["attempts"] == 3
    with database.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 0


def test_retry_without_a_body_stores_the_letter_once_it_is_acceptable(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    """A structured-mode event without specversion is valid as plain JSON: the stored raw body
    retried as it is goes through; a letter whose event was meanwhile stored is a duplicate."""
    first, second = make_event(), make_event()
    for event in (first, second):
        ingest(api, keys, event, "application/cloudevents+json")
    ingest(api, keys, second, "application/json")
    older, newer = reversed(listing(api, keys)["items"])
    assert retry(api, keys["oncall"], older["id"]).json()["accepted"] == 1
    assert retry(api, keys["admin"], newer["id"]).json() == {
        "dead_letter_id": newer["id"],
        "accepted": 0,
        "duplicates": 1,
    }
    with database.read() as connection:
        seqs = dict(connection.execute(sa.select(events.c.event_id, events.c.seq)).all())
    assert letter(api, keys, older["id"])["event_seq"] == seqs[first["id"]]
    assert letter(api, keys, newer["id"])["event_seq"] == seqs[second["id"]]
    assert letter(api, keys, newer["id"])["retried_by"] == "admin"


def test_retry_of_a_body_that_is_still_not_json_is_422(
    api: TestClient, keys: dict[str, str]
) -> None:
    ingest(api, keys, b"{oops", "application/json")
    [item] = listing(api, keys)["items"]
    response = retry(api, keys["oncall"], item["id"])
    assert response.status_code == 422
    assert "still not valid JSON" in response.json()["error"]["details"]["reason"]
    fixed = retry(api, keys["oncall"], item["id"], {"event": [make_event(), make_event()]})
    assert fixed.json()["accepted"] == 2
    assert letter(api, keys, item["id"])["event_seq"] is None  # several events: no single seq


@pytest.mark.parametrize(
    ("method", "path", "key_name", "status"),
    [
        ("get", "/v1/dead-letters/999999", "viewer", 404),
        ("post", "/v1/dead-letters/999999/retry", "oncall", 404),
        ("get", "/v1/dead-letters?status=bogus", "viewer", 422),
        ("get", "/v1/dead-letters", "ingest", 403),
        ("post", "/v1/dead-letters/1/retry", "viewer", 403),
        ("get", "/v1/dead-letters", None, 401),
    ],
)
def test_refusals(
    api: TestClient,
    keys: dict[str, str],
    method: str,
    path: str,
    key_name: str | None,
    status: int,
) -> None:
    headers = bearer(keys[key_name]) if key_name else {}
    response = api.request(method.upper(), path, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("body", [b"{not json", b'{"evnt": {}}', b"[1]", b'{"event": null}'])
def test_a_retry_body_that_is_not_an_event_wrapper_is_400_and_changes_nothing(
    api: TestClient, keys: dict[str, str], body: bytes
) -> None:
    bad = load_invalid(api, keys)[BAD_MONEY]
    headers = {**bearer(keys["oncall"]), "Content-Type": "application/json"}
    response = api.post(f"/v1/dead-letters/{bad['id']}/retry", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed"
    assert letter(api, keys, bad["id"])["attempts"] == 0


def test_every_retry_is_audited_with_the_key_name_as_actor(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    items = load_invalid(api, keys)
    bad, no_id = items[BAD_MONEY], items[0]
    retry(api, keys["oncall"], bad["id"])  # still invalid
    corrected = {**jsoncodec.loads(bad["raw"]), "data": {"milestone_id": "M", "amount": "12.5"}}
    retry(api, keys["admin"], bad["id"], {"event": corrected})
    retry(api, keys["oncall"], bad["id"])  # 409: refused, not an attempt
    retry(api, keys["oncall"], no_id["id"], {"event": {**jsoncodec.loads(no_id["raw"]), "id": "n"}})
    response = api.get(
        "/v1/audit", params={"target_type": "dead_letter"}, headers=bearer(keys["admin"])
    )
    assert response.status_code == 200, response.text
    entries = [
        (e["actor"], e["action"], e["target_id"]) for e in reversed(response.json()["items"])
    ]
    assert entries == [
        ("oncall", "dead_letter.retry_failed", str(bad["id"])),
        ("admin", "dead_letter.retry", str(bad["id"])),
        ("oncall", "dead_letter.retry", str(no_id["id"])),
    ]
    with database.read() as connection:
        [failed] = audit.entries(connection, action="dead_letter.retry_failed")
    assert failed.details is not None and failed.details["reason"].startswith("data.amount: ")
    assert failed.details["replacement"] is False
