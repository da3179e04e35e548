"""Broker messages to received items (collector.brokers.messages), pure: the same content modes as
``POST /v1/events``, the AMQP binding's header prefixes, the source override, mapping presets,
and poison messages with their reasons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from collector.brokers.consume import Backoff, preset_mapper
from collector.brokers.messages import Poison, decode, normalize_headers
from collector.ingest import judge
from core import jsoncodec
from tests.support.builders import make_event


def _decode(body: Any, headers: Mapping[str, Any] | None = None, **options: Any) -> Any:
    raw = body if isinstance(body, bytes) else jsoncodec.dumps(body)
    content_type = (headers or {}).get("content-type")
    rest = {k: v for k, v in (headers or {}).items() if k != "content-type"}
    return decode(raw, normalize_headers(rest, content_type), max_events=100, **options)


def test_one_event_or_an_array_of_events() -> None:
    event = make_event()
    one = _decode(event)
    assert one.items == [event]
    assert not one.require_specversion
    events = [make_event(), make_event("project.created")]
    assert _decode(events).items == events


def test_cloudevents_structured_and_batched_modes_require_specversion() -> None:
    event = make_event(specversion="1.0")
    structured = _decode(event, {"content-type": "application/cloudevents+json"})
    assert structured.items == [event]
    assert structured.require_specversion
    assert structured.content_type == "application/cloudevents+json"
    batch = _decode([event], {"content-type": "application/cloudevents-batch+json"})
    assert batch.items == [event]
    assert batch.require_specversion


@pytest.mark.parametrize("prefix", ["cloudEvents:", "cloudEvents_", "ce_", "ce-"])
def test_binary_mode_from_the_amqp_binding_prefixes(prefix: str) -> None:
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": b"bin-1",  # AMQP header values may come as bytes
        f"{prefix}source": "middleware/mulesoft",
        f"{prefix}type": "integration.failed",
        f"{prefix}time": "2026-11-20T10:00:00Z",
        f"{prefix}correlationid": "Q2C-1",
        "content-type": "application/json",
    }
    part = _decode({"step": "project.created"}, headers)
    [item] = part.items
    assert item["id"] == "bin-1"
    assert item["data"] == {"step": "project.created"}
    assert part.require_specversion
    judgement = judge(part.items, require_specversion=True)
    assert not judgement.rejected


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"this is { not JSON", None, "not valid JSON"),
        (b"", None, "not valid JSON"),
        (b'"a string"', None, "an event object or an array"),
        (b"[1, 2", "application/json", "not valid JSON"),
        (b"<xml/>", "application/xml", "is not accepted"),
        (b"[]", "application/cloudevents+json", "one event object"),
    ],
)
def test_poison_messages_carry_the_reason(
    body: bytes, content_type: str | None, reason: str
) -> None:
    with pytest.raises(Poison) as raised:
        _decode(body, {"content-type": content_type} if content_type else None)
    assert reason in raised.value.reason


def test_more_events_than_the_limit_is_poison() -> None:
    with pytest.raises(Poison, match="at most 100"):
        _decode([make_event() for _ in range(101)])


def test_invalid_events_in_a_readable_message_are_judged_one_by_one() -> None:
    part = _decode([make_event(id="ok"), make_event(id="bad", drop=["time"])])
    judgement = judge(part.items, require_specversion=part.require_specversion)
    assert [event.id for _, event in judgement.valid] == ["ok"]
    [(rejection, _)] = judgement.rejected
    assert rejection.id == "bad"
    assert "time" in rejection.error


def test_the_source_override_fills_in_events_without_a_source_only() -> None:
    without = make_event(id="a", drop=["source"])
    with_source = make_event(id="b", source="erp/netsuite")
    part = _decode([without, with_source], source="erp/sap/emea")
    assert [item["source"] for item in part.items] == ["erp/sap/emea", "erp/netsuite"]
    assert "source" not in without  # the input is not changed


MULESOFT = {
    "id": "n-1",
    "domain": "q2c-app",
    "message": "project creation failed",
    "priority": "ERROR",
    "createdAt": "2026-11-20T10:00:00Z",
    "transactionId": "tx-9",
    "customProperties": {
        "syncwatchStatus": "failed",
        "syncwatchStep": "project.created",
        "correlationId": "Q2C-7",
        "error": "timeout",
    },
}


def test_a_preset_maps_vendor_payloads_with_the_source_override() -> None:
    mapper = preset_mapper("mulesoft", "middleware/mulesoft/emea")
    part = _decode(MULESOFT, mapper=mapper)
    [item] = part.items
    assert (item["type"], item["id"], item["source"]) == (
        "integration.failed",
        "n-1",
        "middleware/mulesoft/emea",
    )
    assert item["data"]["execution_id"] == "tx-9"
    assert not judge(part.items, require_specversion=False).rejected
    # a notification without syncwatchStatus is ignored by the preset: no events, not poison
    assert _decode({**MULESOFT, "customProperties": {}}, mapper=mapper).items == []


def test_a_payload_the_preset_cannot_map_is_poison() -> None:
    mapper = preset_mapper("mulesoft", None)
    broken = {**MULESOFT, "createdAt": "not a time"}
    with pytest.raises(Poison, match="mulesoft"):
        _decode(broken, mapper=mapper)
    with pytest.raises(Poison, match="not valid JSON"):
        _decode(b"{", mapper=mapper)


def test_an_unknown_preset_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no-such-preset"):
        preset_mapper("no-such-preset", None)


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 3)
    assert [backoff.next() for _ in range(5)] == [0.5, 1, 2, 3, 3]
    backoff.reset()
    assert backoff.next() == 0.5
