"""Turning an HTTP request body and headers into received items, by CloudEvents content mode.
Pure: no I/O. Each item is then judged on its own by :func:`core.events.validate_event`.

- ``application/json`` (or no content type): one event object or an array of them;
- ``application/cloudevents+json`` (structured mode): one event object, ``specversion`` required;
- ``application/cloudevents-batch+json`` (batched mode): an array of events, ``specversion``
  required;
- binary mode (a ``ce-specversion`` header): the attributes in ``ce-*`` headers, the body is
  ``data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from core import jsoncodec
from core.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True)
class Received:
    items: list[Any]
    #: true in the CloudEvents content modes, where specversion is mandatory
    require_specversion: bool
    mode: str  # json, structured, batch, binary


def media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_media(media: str) -> bool:
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def _parse_json(body: bytes, what: str) -> Any:
    try:
        return jsoncodec.loads(body)
    except ValueError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc}") from exc


def parse_request(body: bytes, headers: Mapping[str, str], *, max_events: int) -> Received:
    """Raise :class:`MalformedRequest` (400) for a body that is not JSON or not of the mode's
    shape, :class:`UnsupportedMediaType` (415) for a non-JSON content type, and
    :class:`PayloadTooLarge` (413) for more than ``max_events`` events."""
    lowered = {name.lower(): value for name, value in headers.items()}
    media = media_type(lowered.get("content-type"))
    if "ce-specversion" in lowered:
        return _binary(body, lowered, media)
    if media == STRUCTURED:
        value = _parse_json(body, "the body")
        if not isinstance(value, dict):
            raise MalformedRequest(f"{STRUCTURED} carries one event object; send arrays as {BATCH}")
        return Received(items=[value], require_specversion=True, mode="structured")
    if media == BATCH:
        value = _parse_json(body, "the body")
        if not isinstance(value, list):
            raise MalformedRequest(f"{BATCH} carries a JSON array of events")
        _check_count(value, max_events)
        return Received(items=value, require_specversion=True, mode="batch")
    if not _is_json_media(media):
        raise UnsupportedMediaType(
            f"content type {media!r} is not accepted: send application/json, {STRUCTURED}, "
            f"{BATCH}, or binary mode with ce-* headers"
        )
    value = _parse_json(body, "the body")
    if isinstance(value, list):
        _check_count(value, max_events)
        return Received(items=value, require_specversion=False, mode="json")
    if isinstance(value, dict):
        return Received(items=[value], require_specversion=False, mode="json")
    raise MalformedRequest("the body must be an event object or an array of events")


def _check_count(items: list[Any], max_events: int) -> None:
    if len(items) > max_events:
        raise PayloadTooLarge(
            f"{len(items)} events in one request; at most {max_events}: split the batch",
            details={"events": len(items), "max_events": max_events},
        )


def _binary(body: bytes, headers: Mapping[str, str], media: str) -> Received:
    """CloudEvents HTTP binary mode: header values are percent-encoded (HTTP binding 3.1.3.2)."""
    event: dict[str, Any] = {}
    for name, value in headers.items():
        if name.startswith("ce-") and len(name) > 3:
            event[name[3:]] = unquote(value)
    if media and not _is_json_media(media):
        raise UnsupportedMediaType(
            f"binary-mode data must be JSON (application/json), got {media!r}"
        )
    if body.strip():
        event["data"] = _parse_json(body, "the binary-mode body (the event's data)")
    if media:
        event["datacontenttype"] = media
    return Received(items=[event], require_specversion=True, mode="binary")
