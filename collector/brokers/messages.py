"""Turning one broker message into received items. Pure: no I/O.

A message body is what ``POST /v1/events`` takes: one canonical event or a JSON array of them,
CloudEvents structured (``application/cloudevents+json``) or batched mode, or binary mode with the
attributes in headers (``ce-*``; the AMQP binding's ``cloudEvents:*`` / ``cloudEvents_*``). With a
mapping preset, the body is a vendor payload mapped onto canonical events instead. A message that
cannot be read this way is *poison*: :class:`Poison` carries the reason it is dead-lettered with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from collector.ingest import Part
from collector.receive import parse_request
from core import jsoncodec
from core.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

#: maps a vendor payload (parsed JSON) and the message headers onto canonical events, or raises
#: :class:`Poison` with the reason it cannot
Mapper = Callable[[Any, Mapping[str, str]], list[Any]]

_CE_PREFIXES = ("cloudevents:", "cloudevents_", "ce_")


class Poison(Exception):
    """The message cannot be read as events: it is dead-lettered whole with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def header_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def normalize_headers(headers: Mapping[str, Any], content_type: str | None) -> dict[str, str]:
    """Lower-case names, text values, the CloudEvents binding prefixes as ``ce-``, and the
    message's content type as ``content-type``."""
    normalized: dict[str, str] = {}
    for name, value in headers.items():
        if value is None:
            continue
        lowered = name.lower()
        for prefix in _CE_PREFIXES:
            if lowered.startswith(prefix) and len(lowered) > len(prefix):
                lowered = "ce-" + lowered[len(prefix) :]
                break
        normalized[lowered] = header_text(value)
    if content_type:
        normalized["content-type"] = content_type
    return normalized


def _with_source(items: list[Any], source: str | None) -> list[Any]:
    if source is None:
        return items
    return [
        {**item, "source": source} if isinstance(item, dict) and "source" not in item else item
        for item in items
    ]


def decode(
    body: bytes,
    headers: Mapping[str, str],
    *,
    max_events: int,
    mapper: Mapper | None = None,
    source: str | None = None,
) -> Part:
    """The message's items, each to be judged on its own; :class:`Poison` when there are none to
    judge (not JSON, not of an accepted shape, too many events, not mappable). ``headers`` are
    normalized (:func:`normalize_headers`); ``source`` fills in events that carry none."""
    content_type = headers.get("content-type")
    if mapper is None:
        try:
            received = parse_request(body, headers, max_events=max_events)
        except (MalformedRequest, UnsupportedMediaType, PayloadTooLarge) as error:
            raise Poison(error.message) from error
        return Part(
            items=_with_source(received.items, source),
            require_specversion=received.require_specversion,
            content_type=content_type,
        )
    try:
        payload = jsoncodec.loads(body)
    except ValueError as error:
        raise Poison(f"the message is not valid JSON: {error}") from error
    items = mapper(payload, headers)
    if len(items) > max_events:
        raise Poison(f"the payload maps to {len(items)} events; at most {max_events}")
    return Part(
        items=_with_source(items, source), require_specversion=False, content_type=content_type
    )
