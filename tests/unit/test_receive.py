"""collector.receive.parse_request: the CloudEvents content modes of POST /v1/events, and the
400, 413 and 415 refusals. Pure: no database, no HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from collector.receive import parse_request
from core.errors import MalformedRequest, PayloadTooLarge, SyncwatchError, UnsupportedMediaType
from core.events import EventRejected, validate_event
from tests.support.builders import make_event

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def parse(content: bytes, content_type: str | None = "application/json", **headers: str) -> Any:
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return parse_request(content, all_headers, max_events=5)


def refused(error: type[SyncwatchError], content: bytes, *args: Any, **headers: str) -> str:
    with pytest.raises(error) as caught:
        parse(content, *args, **headers)
    return caught.value.message


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON"],
)
def test_plain_json_carries_one_event_or_an_array(content_type: str | None) -> None:
    one, two = make_event(), make_event()
    received = parse(body(one), content_type)
    assert (received.items, received.mode, received.require_specversion) == ([one], "json", False)
    assert parse(body([one, two]), content_type).items == [one, two]
    assert parse(b"[]", content_type).items == []


def test_structured_mode_carries_one_event_and_requires_specversion() -> None:
    event = make_event(specversion="1.0")
    received = parse(body(event), f"{STRUCTURED}; charset=utf-8")
    assert (received.items, received.mode, received.require_specversion) == (
        [event],
        "structured",
        True,
    )
    assert BATCH in refused(MalformedRequest, body([event]), STRUCTURED)


def test_batched_mode_carries_an_array_and_requires_specversion() -> None:
    events = [make_event(specversion="1.0") for _ in range(3)]
    received = parse(body(events), BATCH)
    assert (received.items, received.mode, received.require_specversion) == (events, "batch", True)
    assert "array" in refused(MalformedRequest, body(events[0]), BATCH)


def test_binary_mode_reads_percent_encoded_ce_headers_and_the_body_as_data() -> None:
    headers = {
        "ce-specversion": "1.0",
        "CE-ID": "bin-1",  # header names are case-insensitive
        "ce-source": "erp%2Fnetsuite%2Femea",
        "ce-type": "project.created",
        "ce-time": "2026-11-20T12%3A00%3A00%2B02%3A00",
        "ce-correlationid": "Q2C-9",
        "ce-subject": "caf%C3%A9%20%2F%20100%25",
        "ce-traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "x-other": "ignored",
    }
    data = {"project_id": "PRJ-9", "contract_value": 12345678901234567.89}
    raw = b'{"project_id": "PRJ-9", "contract_value": 12345678901234567.89}'
    received = parse(raw, "application/json", **headers)
    assert received.mode == "binary" and received.require_specversion
    [item] = received.items
    assert item["source"] == "erp/netsuite/emea"
    assert item["time"] == "2026-11-20T12:00:00+02:00"
    assert item["subject"] == "café / 100%"
    assert item["id"] == "bin-1" and "other" not in item
    assert item["data"] == {**data, "contract_value": Decimal("12345678901234567.89")}
    assert item["datacontenttype"] == "application/json"
    event = validate_event(item, require_specversion=True)
    assert (event.source, event.id, event.correlation_id) == ("erp/netsuite/emea", "bin-1", "Q2C-9")
    assert event.time.isoformat() == "2026-11-20T10:00:00+00:00"


def test_binary_mode_without_a_body_has_no_data_and_is_then_rejected_for_it() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "clm/a", "ce-type": "t.u"}
    received = parse(b"", None, **headers, **{"ce-time": "2026-11-20T10:00:00Z"})
    [item] = received.items
    assert "data" not in item and "datacontenttype" not in item
    with pytest.raises(EventRejected, match=r"^data: is required"):
        validate_event(item, require_specversion=True)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"not json", "application/json"),
        (b"\xff\xfe{}", "application/json"),  # not UTF-8
        (b"", "application/json"),
        (b'{"id": "x",}', "application/json"),
        (b'{"amount": NaN}', "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),  # too deep for the parser
        (b"42", "application/json"),
        (b'"an event"', "application/json"),
        (b"null", "application/json"),
        (b"{", STRUCTURED),
        (b"[{}", BATCH),
    ],
)
def test_a_body_that_is_not_json_or_not_events_is_malformed(
    content: bytes, content_type: str
) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse(content, content_type)
    assert caught.value.status_code == 400


def test_a_binary_mode_body_that_is_not_json_is_malformed() -> None:
    message = refused(MalformedRequest, b"<xml/>", "application/json", **{"ce-specversion": "1.0"})
    assert "binary-mode body" in message


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "text/csv"],
)
def test_a_non_json_content_type_is_unsupported(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        parse(body(make_event()), content_type)
    assert caught.value.status_code == 415
    assert content_type.split(";", maxsplit=1)[0] in caught.value.message
    binary = {"ce-specversion": "1.0", "ce-id": "x"}
    with pytest.raises(UnsupportedMediaType):
        parse(b"hello", content_type, **binary)


@pytest.mark.parametrize("content_type", ["application/json", BATCH])
def test_more_events_than_the_limit_is_too_large(content_type: str) -> None:
    events = [make_event(specversion="1.0") for _ in range(6)]
    assert len(parse(body(events[:5]), content_type).items) == 5
    with pytest.raises(PayloadTooLarge) as caught:
        parse(body(events), content_type)
    assert caught.value.status_code == 413
    assert caught.value.details == {"events": 6, "max_events": 5}


def test_money_given_as_a_json_number_is_read_as_an_exact_decimal() -> None:
    raw = b'{"a": 12345678901234567.89, "b": 0.10, "c": 1e5, "d": 123456789012345678901234567890}'
    [item] = parse(raw).items
    assert item == {
        "a": Decimal("12345678901234567.89"),
        "b": Decimal("0.10"),
        "c": Decimal("1E+5"),
        "d": Decimal("123456789012345678901234567890"),
    }
    assert str(item["b"]) == "0.10"
    assert all(not isinstance(value, float) for value in item.values())
