"""Resolving correlation IDs (``spec/events.md``). Pure: a function of a set of events.

An event with ``correlationid`` has it. One without is resolved through the first fallback key
that resolves: ``data.contract_id`` (the correlation ID of the ``contract.signed`` with that
contract_id), then ``data.project_id`` (that of the ``project.created`` with that project_id).
Links chain: a
``project.created`` resolved through its contract_id links its project_id. Where two events would
link one key to different correlation IDs, the earliest by event time wins, ties broken by
``(source, id)``. The answer depends only on the set of events, never on their order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.events import CanonicalEvent

#: (data field, the event type whose correlation ID it links to), in order of precedence
FALLBACKS: tuple[tuple[str, str], ...] = (
    ("contract_id", "contract.signed"),
    ("project_id", "project.created"),
)

#: Enough for any chain of the two fallback keys; a safety bound, not a tuning knob.
_MAX_ROUNDS = 8

EventKey = tuple[str, str]  # (source, id)


@dataclass(frozen=True, order=True)
class Link:
    """A key linked to a correlation ID by its earliest linking event."""

    time: float  # POSIX seconds of the linking event, for ordering
    source: str
    event_id: str
    correlation_id: str


def _key_value(event: CanonicalEvent, field: str) -> str | None:
    value = event.data.get(field)
    return value if isinstance(value, str) and value else None


def links_from(
    events: Iterable[CanonicalEvent], resolved: dict[EventKey, str]
) -> dict[str, dict[str, Link]]:
    """For each fallback field, the winning link of each key value among resolved events."""
    links: dict[str, dict[str, Link]] = {field: {} for field, _ in FALLBACKS}
    for event in events:
        for field, linking_type in FALLBACKS:
            if event.type != linking_type:
                continue
            value = _key_value(event, field)
            correlation = resolved.get((event.source, event.id))
            if value is None or correlation is None:
                continue
            link = Link(event.time.timestamp(), event.source, event.id, correlation)
            current = links[field].get(value)
            if current is None or link < current:
                links[field][value] = link
    return links


def resolve_with(event: CanonicalEvent, links: dict[str, dict[str, Link]]) -> str | None:
    if event.correlation_id:
        return event.correlation_id
    for field, _ in FALLBACKS:
        value = _key_value(event, field)
        if value is not None and value in links[field]:
            return links[field][value].correlation_id
    return None


def resolve(events: Iterable[CanonicalEvent]) -> dict[EventKey, str | None]:
    """The correlation ID of every event (None: not resolvable from these events)."""
    pool = list(events)
    resolved: dict[EventKey, str] = {
        (e.source, e.id): e.correlation_id for e in pool if e.correlation_id
    }
    for _ in range(_MAX_ROUNDS):
        links = links_from(pool, resolved)
        changed = False
        for event in pool:
            if event.correlation_id:
                continue
            key = (event.source, event.id)
            found = resolve_with(event, links)
            if found != resolved.get(key):
                changed = True
                if found is None:
                    resolved.pop(key, None)
                else:
                    resolved[key] = found
        if not changed:
            break
    return {(e.source, e.id): resolved.get((e.source, e.id)) for e in pool}
