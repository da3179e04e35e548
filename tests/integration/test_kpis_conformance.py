"""The spec's conformance example (spec/examples) against GET /v1/kpis, on SQLite and PostgreSQL:
the 723 events delivered shuffled, partly re-delivered, with the seven invalid events among them,
in several batches with probe cycles (whole and partial) in between; then the answers as of
2026-11-30T00:00:00Z over 7 days, 30 days and 7 days by region must hold every field of the
expected files (rates to 4 decimals, durations to 0.01 s, money to the cent, counts exactly). The
answer may carry more keys. The probes' clock is the as_of instant or a week later: they store facts
independent of it."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core import jsoncodec
from core.db import Database
from core.settings import Settings
from probes.flowtypes import configured_flow_types
from probes.runner import run_cycle, run_until_idle
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support.examples import EXAMPLES


def _load(name: str) -> Any:
    return jsoncodec.loads((EXAMPLES / name).read_bytes())


EVENTS: list[dict[str, Any]] = _load("events.json")
INVALID: list[dict[str, Any]] = _load("invalid.json")
EXPECTED = {
    "7d": _load("expected-7d.json"),
    "30d": _load("expected-30d.json"),
    "7d-region": _load("expected-7d-region.json"),
}
REQUESTS = {
    "7d": {"window": "7d"},
    "30d": {"window": "30d"},
    "7d-region": {"window": "7d", "group_by": "region"},
}
AS_OF = datetime(2026, 11, 30, tzinfo=UTC)
AS_OF_TEXT = "2026-11-30T00:00:00Z"
FLOW_TYPES = configured_flow_types(None)
RATES = {"success_rate", "invoice_dispute_rate"}
SECONDS = {"mean", "p50", "p90", "p95", "max", "oldest_age_seconds"}


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` does not hold ``expected``: every key of an expected object must be in the
    answer; rates equal to 4 decimals, durations within 0.01 s, money strings to the cent, counts
    and nulls exactly."""
    name = path.rsplit(".", 1)[-1]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{path}.{key}: missing")
            else:
                found += mismatches(value, actual[key], f"{path}.{key}")
        return found
    if expected is None or isinstance(expected, bool | str):
        ok = actual == expected and type(actual) is type(expected)
        if ok and isinstance(expected, str) and path.startswith(".revenue_at_risk"):
            ok = Decimal(actual) == Decimal(expected)
    elif isinstance(expected, int) and name not in RATES | SECONDS:
        ok = type(actual) is int and actual == expected
    elif isinstance(actual, bool) or not isinstance(actual, int | float):
        ok = False
    elif name in RATES:
        ok = Decimal(str(actual)) == Decimal(expected).quantize(Decimal("0.0001"))
    elif name in SECONDS:
        ok = abs(Decimal(str(actual)) - Decimal(expected)) <= Decimal("0.01")
    else:
        ok = Decimal(str(actual)) == Decimal(expected)
    return [] if ok else [f"{path}: expected {expected!r}, got {actual!r}"]


def assert_conforms(expected: Any, actual: Any) -> None:
    found = mismatches(expected, actual)
    assert not found, "\n".join(found)


def test_the_comparison_itself() -> None:
    expected = EXPECTED["7d"]
    answer = json.loads(jsoncodec.dumps(expected))  # numbers as an HTTP client reads them
    assert mismatches(expected, answer) == []
    answer["flows"]["milestone_billing"]["duration_seconds"]["mean"] = 280735.206  # within
    answer["flows"]["contract_onboarding"]["success_rate"] = 0.7501
    answer["revenue_at_risk"]["EUR"] = "922254.98"
    answer["exceptions"]["pmo"]["open"] = 7
    answer["more"] = "an answer may carry more keys"
    del answer["uncorrelated_events"]
    assert len(mismatches(expected, answer)) == 4
    answer["flows"]["milestone_billing"]["duration_seconds"]["mean"] = 280735.21  # 0.013 s off
    assert len(mismatches(expected, answer)) == 5
    assert mismatches({"x": None}, {"x": 0}) and mismatches({"x": 1}, {"x": 1.0})


# --- delivery ---


def post(client: TestClient, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    answer = client.post(
        "/v1/events",
        content=jsoncodec.dumps(items),
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def deliver(
    client: TestClient,
    key: str,
    database: Database,
    *,
    order: str,
    batches: int,
    now: datetime,
    seed: int = 0,
) -> None:
    """Every event once, some twice, the invalid ones among them, in ``batches`` requests with a
    probe cycle after each: alternately until idle and one cycle of 50 events (a backlog left
    for later cycles); then until idle."""
    rng = random.Random(seed)
    redelivered = rng.sample(EVENTS, 90)
    if order == "shuffled":
        items = [*EVENTS, *INVALID, *redelivered]
        rng.shuffle(items)
    else:  # newest first by event time, the invalid ones first, every re-delivery at the end
        newest = sorted(EVENTS, key=lambda e: datetime.fromisoformat(e["time"]), reverse=True)
        items = [*INVALID, *newest, *redelivered]
    cuts = sorted(rng.sample(range(1, len(items)), batches - 1))
    accepted = duplicates = 0
    rejected: list[Any] = []
    for number, (begin, end) in enumerate(zip([0, *cuts], [*cuts, len(items)], strict=True)):
        result = post(client, key, items[begin:end])
        accepted += result["accepted"]
        duplicates += result["duplicates"]
        rejected += [r["id"] for r in result["rejected"]]
        if number % 2 == 0:
            run_until_idle(database, FLOW_TYPES, now=now)
        else:
            run_cycle(database, FLOW_TYPES, now=now, batch_events=50)
    run_until_idle(database, FLOW_TYPES, now=now)
    assert (accepted, duplicates) == (len(EVENTS), len(redelivered))
    assert sorted(rejected, key=str) == sorted((e.get("id") for e in INVALID), key=str)


def kpis(client: TestClient, key: str, **params: str) -> dict[str, Any]:
    answer = client.get("/v1/kpis", params={"as_of": AS_OF_TEXT, **params}, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


DELIVERIES = [
    pytest.param("shuffled", 4, 0, 11, id="shuffled-4-batches-now-as_of"),
    pytest.param("shuffled", 7, 7, 12, id="shuffled-7-batches-now-a-week-later"),
    pytest.param("newest-first", 3, 0, 13, id="newest-first-3-batches-now-as_of"),
]


@pytest.mark.parametrize(("order", "batches", "later_days", "seed"), DELIVERIES)
def test_the_example_gives_the_expected_answers(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    order: str,
    batches: int,
    later_days: int,
    seed: int,
) -> None:
    now = AS_OF + timedelta(days=later_days)
    deliver(api, keys["ingest"], database, order=order, batches=batches, now=now, seed=seed)
    for name, params in REQUESTS.items():
        answer = kpis(api, keys["viewer"], **params)
        assert answer["as_of"] == AS_OF_TEXT
        found = mismatches(EXPECTED[name], answer)
        assert not found, f"{name}:\n" + "\n".join(found)


# --- one delivery, several questions ---


@pytest.fixture
def example(settings: Settings, database: Database, keys: dict[str, str]) -> Iterator[TestClient]:
    """The example delivered shuffled, with the API's clock at the as_of instant (the dead
    letters are received then)."""
    with TestClient(create_app(settings, database, clock=lambda: AS_OF)) as client:
        deliver(client, keys["ingest"], database, order="shuffled", batches=5, now=AS_OF, seed=5)
        yield client


def test_a_region_filter_gives_that_regions_group(
    example: TestClient, keys: dict[str, str]
) -> None:
    """kpis.md: a filter keeps the flows whose contract.signed has the value and their findings;
    a group holds the flows whose contract.signed has it: the same flows."""
    groups = EXPECTED["7d-region"]["groups"]
    for region in sorted(set(groups) - {"unknown"}):
        answer = kpis(example, keys["viewer"], window="7d", region=region)
        assert_conforms(groups[region], answer)
        assert "uncorrelated_events" not in answer and "duplicate_projects" not in answer
    # the groups together are the whole
    whole = EXPECTED["7d"]
    for flow_type, figures in whole["flows"].items():
        for name in ("due", "met", "completed", "open", "stuck"):
            assert sum(g["flows"][flow_type][name] for g in groups.values()) == figures[name]


def test_the_series_ends_with_the_expected_answer(
    example: TestClient, keys: dict[str, str]
) -> None:
    params = {
        "from": "2026-11-16T00:00:00Z",
        "to": AS_OF_TEXT,
        "step": "7d",
        "window": "7d",
        "group_by": "region",
    }
    answer = example.get("/v1/kpis/series", params=params, headers=bearer(keys["viewer"]))
    assert answer.status_code == 200, answer.text
    series = answer.json()
    assert [e["as_of"] for e in series] == [
        "2026-11-16T00:00:00Z",
        "2026-11-23T00:00:00Z",
        AS_OF_TEXT,
    ]
    assert_conforms(EXPECTED["7d-region"], series[-1])
    assert series[0] != series[-1]


def test_the_invalid_events_are_dead_lettered_and_change_no_number(
    settings: Settings, database: Database, keys: dict[str, str]
) -> None:
    with TestClient(create_app(settings, database, clock=lambda: AS_OF)) as client:
        ingest, viewer = keys["ingest"], keys["viewer"]
        result = post(client, ingest, EVENTS)
        assert (result["accepted"], result["rejected"]) == (len(EVENTS), [])
        run_until_idle(database, FLOW_TYPES, now=AS_OF)
        before = {name: kpis(client, viewer, **params) for name, params in REQUESTS.items()}

        result = post(client, ingest, INVALID)
        assert result["accepted"] == 0
        assert [r["index"] for r in result["rejected"]] == list(range(len(INVALID)))
        assert all(r["error"] for r in result["rejected"])
        letters = client.get(
            "/v1/dead-letters", params={"limit": 100}, headers=bearer(keys["admin"])
        )
        assert letters.status_code == 200, letters.text
        assert len(letters.json()["items"]) == len(INVALID)
        run_until_idle(database, FLOW_TYPES, now=AS_OF)

        for name, params in REQUESTS.items():
            after = kpis(client, viewer, **params)
            assert_conforms(EXPECTED[name], after)
            # nothing changes but the count of dead letters received in the window
            quality = after.pop("data_quality")
            assert quality == {
                **before[name].pop("data_quality"),
                "dead_letters": quality["dead_letters"],
            }
            assert sum(quality["dead_letters"].values()) == len(INVALID)
            assert after == before[name], name
