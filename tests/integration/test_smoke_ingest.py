from __future__ import annotations

from fastapi.testclient import TestClient

from core.db import Database
from core.eventstore import count_events
from tests.conftest import bearer
from tests.support.builders import make_event


def test_post_one_event_then_its_duplicate(
    api: TestClient, keys: dict[str, str], database: Database
) -> None:
    event = make_event()
    first = api.post("/v1/events", json=event, headers=bearer(keys["ingest"]))
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    again = api.post("/v1/events", json=[event], headers=bearer(keys["ingest"]))
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    with database.read() as connection:
        assert count_events(connection) == 1
