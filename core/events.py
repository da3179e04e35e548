"""Canonical events (``spec/events.md``): the dataclass and its validation. Pure: no I/O.

Validation judges one event on its own and either returns a :class:`CanonicalEvent` or raises
:class:`EventRejected` with a reason a person can act on."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from core.jsoncodec import dumps_canonical
from core.vocabulary import (
    APPROVER_ROLES,
    EVENT_TYPES,
    FALLBACK_KEYS,
    MILESTONE_FIELDS,
    SOURCE_KINDS,
    DataField,
    FieldKind,
)

#: CloudEvents context attributes syncwatch knows by name; anything else is an extension.
_KNOWN_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
        "correlationid",
        "traceparent",
        "tracestate",
    }
)

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII,
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$", re.ASCII)
_CURRENCY = re.compile(r"^[A-Z]{3}$", re.ASCII)
_SOURCE = re.compile(
    r"^(" + "|".join(SOURCE_KINDS) + r")/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)?$", re.ASCII
)
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$", re.ASCII)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", re.ASCII)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.~-]{1,100}$", re.ASCII)

#: Limits that keep every accepted event storable, and readable again, on SQLite and PostgreSQL.
MAX_DEPTH = 64  # nested objects and lists
MAX_NUMBER_DIGITS = 1000  # digits before, and after, the decimal point
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # integers the JSON writer writes as integers


class EventRejected(Exception):
    """An event is invalid; ``reason`` says why, naming the attribute or data field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    source: str
    id: str
    type: str
    time: datetime  # timezone-aware UTC
    data: dict[str, Any]
    correlation_id: str | None = None
    subject: str | None = None
    traceparent: str | None = None
    specversion: str = "1.0"
    extensions: dict[str, Any] = field(default_factory=dict)
    #: sha256 (hex) of the event as received, serialized canonically (sorted keys)
    payload_hash: str = ""

    @property
    def known_type(self) -> bool:
        return self.type in EVENT_TYPES


def parse_time(value: Any, what: str) -> datetime:
    """An RFC 3339 date-time with an offset, as timezone-aware UTC."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise EventRejected(
            f"{what}: must be an RFC 3339 date-time with an offset (Z or +hh:mm), got {value!r}"
        )
    try:
        parsed = datetime.fromisoformat(value.upper())
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise EventRejected(f"{what}: not a valid date-time: {value!r}") from exc


def _parse_date(value: Any, what: str) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise EventRejected(f"{what}: must be a date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise EventRejected(f"{what}: not a valid date: {value!r}") from exc


def parse_decimal(value: Any, what: str) -> Decimal:
    """A decimal given as a JSON string ("125000.00") or number; never a bool or a float."""
    if isinstance(value, bool):
        raise EventRejected(f"{what}: must be a decimal, got a boolean")
    if isinstance(value, int | Decimal):
        result = Decimal(value)
        if not result.is_finite():
            raise EventRejected(f"{what}: must be a finite decimal")
        return result
    if isinstance(value, str) and _DECIMAL.match(value):
        return Decimal(value)
    raise EventRejected(f'{what}: must be a decimal such as "125000.00", got {value!r}')


def _check_field(spec: DataField, value: Any, what: str) -> None:
    kind = spec.kind
    if kind is FieldKind.ID:
        if not isinstance(value, str) or not value.strip():
            raise EventRejected(f"{what}: must be a non-empty string, got {value!r}")
        _check_length(value, what)
    elif kind is FieldKind.TEXT:
        if not isinstance(value, str):
            raise EventRejected(f"{what}: must be a string, got {value!r}")
        _check_length(value, what)
    elif kind is FieldKind.DECIMAL:
        parse_decimal(value, what)
    elif kind is FieldKind.CURRENCY:
        if not isinstance(value, str) or not _CURRENCY.match(value):
            raise EventRejected(f"{what}: must be an ISO 4217 code such as EUR, got {value!r}")
    elif kind is FieldKind.DATE:
        _parse_date(value, what)
    elif kind is FieldKind.DATETIME_OR_DATE:
        if isinstance(value, str) and _DATE.match(value):
            _parse_date(value, what)
        else:
            parse_time(value, what)
    elif kind is FieldKind.BOOL:
        if not isinstance(value, bool):
            raise EventRejected(f"{what}: must be true or false, got {value!r}")
    elif kind is FieldKind.APPROVER_ROLE:
        if value not in APPROVER_ROLES:
            raise EventRejected(f"{what}: must be one of {', '.join(APPROVER_ROLES)}")
    elif kind is FieldKind.ERROR:
        if not isinstance(value, str | dict):
            raise EventRejected(f"{what}: must be a string or an object")
    elif kind is FieldKind.MILESTONES:
        if not isinstance(value, list):
            raise EventRejected(f"{what}: must be a list of milestone objects")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise EventRejected(f"{what}[{index}]: must be an object")
            _check_fields(MILESTONE_FIELDS, item, f"{what}[{index}]")


def _check_fields(specs: tuple[DataField, ...], data: Mapping[str, Any], prefix: str) -> None:
    for spec in specs:
        value = data.get(spec.name)
        what = f"{prefix}.{spec.name}"
        if value is None:
            if spec.required:
                reason = "is required" if spec.name not in data else "must not be null"
                raise EventRejected(f"{what}: {reason}")
            continue
        _check_field(spec, value, what)


#: The longest identifier or dimension value kept in an indexed column (events, flows).
MAX_ID_LENGTH = 255
MAX_TYPE_LENGTH = 100


def _check_length(value: str, what: str, limit: int = MAX_ID_LENGTH) -> None:
    if len(value) > limit:
        raise EventRejected(f"{what}: at most {limit} characters, got {len(value)}")


def _optional_string(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise EventRejected(f"{name}: must be a non-empty string, got {value!r}")
    _check_length(value, name)
    return value


def _required_string(raw: Mapping[str, Any], name: str, limit: int = MAX_ID_LENGTH) -> str:
    value = raw.get(name)
    if value is None:
        raise EventRejected(f"{name}: is required")
    if not isinstance(value, str) or not value.strip():
        raise EventRejected(f"{name}: must be a non-empty string, got {value!r}")
    _check_length(value, name, limit)
    return value


def _key_path(prefix: str, key: str) -> str:
    shown = key if _PLAIN_KEY.match(key) else repr(key)
    return f"{prefix}.{shown}" if prefix else shown


def _check_storable(value: Any, path: str, depth: int = 0) -> None:
    """Reject what a store cannot keep faithfully: NUL characters (PostgreSQL refuses them), lone
    surrogates (not UTF-8), numbers beyond the limits, non-JSON values, too deep nesting."""
    where = path or "the event"
    if isinstance(value, str):
        if "\x00" in value:
            raise EventRejected(f"{where}: contains a NUL character (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EventRejected(f"{where}: contains a lone surrogate, not valid Unicode") from exc
    elif value is None or isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EventRejected(f"{where}: integer out of range; send large numbers as decimals")
    elif isinstance(value, Decimal | float):
        number = Decimal(value)
        if not number.is_finite():
            raise EventRejected(f"{where}: must be a finite number")
        exponent = number.as_tuple().exponent
        if number.adjusted() >= MAX_NUMBER_DIGITS or (
            isinstance(exponent, int) and exponent < -MAX_NUMBER_DIGITS
        ):
            raise EventRejected(
                f"{where}: a number with more than {MAX_NUMBER_DIGITS} digits before or after "
                "the decimal point"
            )
    elif isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise EventRejected(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, list):
            for index, item in enumerate(value):
                _check_storable(item, f"{where}[{index}]", depth + 1)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventRejected(f"{where}: object keys must be strings, got {key!r}")
            _check_storable(key, _key_path(path, key), depth + 1)
            _check_storable(item, _key_path(path, key), depth + 1)
    else:
        raise EventRejected(f"{where}: not a JSON value ({type(value).__name__})")


def _plainly_storable(raw: dict[str, Any]) -> bool:
    """True when :func:`_check_storable` would find nothing to reject, proven cheaply for the
    common case: one pass without recursion or path strings, the strings checked all at once.
    False means "look closer": the full walk then finds and names the problem (or finds none).
    On the benchmark's events (docs/benchmarks.md) about ten times cheaper than the walk."""
    if type(raw) is not dict:
        return False
    strings: list[str] = []
    stack: list[tuple[Any, int]] = [(raw, 0)]
    while stack:
        container, depth = stack.pop()
        if depth >= MAX_DEPTH:
            return False
        if type(container) is dict:
            strings.extend(container)  # the keys; one that is not a string fails the join below
            items = container.values()
        else:
            items = container
        for item in items:
            kind = type(item)
            if kind is str:
                strings.append(item)
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif item is None or kind is bool:
                continue
            elif kind is int:
                if not _INT_MIN <= item <= _INT_MAX:
                    return False
            elif kind is Decimal:
                if not (
                    item.is_finite()
                    and item.adjusted() < MAX_NUMBER_DIGITS
                    and int(item.as_tuple().exponent) >= -MAX_NUMBER_DIGITS
                ):
                    return False
            else:  # floats, subclasses, anything else: the full walk decides
                return False
    try:
        text = "".join(strings)
    except TypeError:
        return False
    if "\x00" in text:
        return False
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def payload_hash(raw: Any) -> str:
    """sha256 of the event serialized canonically. Raises EventRejected for text that is not valid
    Unicode (a lone surrogate escaped in the JSON), which no database column could store."""
    try:
        return hashlib.sha256(dumps_canonical(raw)).hexdigest()
    except TypeError as exc:
        raise EventRejected(f"the event cannot be stored as JSON: {exc}") from exc


def validate_event(raw: Any, *, require_specversion: bool = False) -> CanonicalEvent:
    """Judge one received event (a parsed JSON value) against events.md.

    ``require_specversion`` is true in the CloudEvents content modes, where ``specversion`` is
    mandatory; on plain ``application/json`` it defaults to ``"1.0"``."""
    if not isinstance(raw, dict):
        raise EventRejected(f"an event must be a JSON object, got {type(raw).__name__}")
    if not _plainly_storable(raw):
        _check_storable(raw, "")
    specversion = raw.get("specversion")
    if specversion is None:
        if require_specversion:
            raise EventRejected("specversion: is required in CloudEvents content modes")
        specversion = "1.0"
    elif specversion != "1.0":
        raise EventRejected(f'specversion: must be "1.0", got {specversion!r}')

    event_id = _required_string(raw, "id")
    source = _required_string(raw, "source")
    if not _SOURCE.match(source):
        raise EventRejected(
            f"source: must be KIND/NAME[/instance] with KIND one of {', '.join(SOURCE_KINDS)}, "
            f"got {source!r}"
        )
    event_type = _required_string(raw, "type", MAX_TYPE_LENGTH)
    if "time" not in raw or raw["time"] is None:
        raise EventRejected("time: is required")
    time = parse_time(raw["time"], "time")
    correlation_id = _optional_string(raw, "correlationid")
    subject = raw.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise EventRejected("subject: must be a string")
    traceparent = _optional_string(raw, "traceparent")
    if traceparent is not None and not _TRACEPARENT.match(traceparent):
        raise EventRejected(f"traceparent: not a W3C trace context, got {traceparent!r}")
    if "data_base64" in raw:
        raise EventRejected("data_base64: canonical events carry JSON data, not base64")
    if "data" not in raw or raw["data"] is None:
        raise EventRejected("data: is required")
    data = raw["data"]
    if not isinstance(data, dict):
        raise EventRejected(f"data: must be a JSON object, got {type(data).__name__}")
    fields = EVENT_TYPES.get(event_type)
    if fields is not None:
        _check_fields(fields, data, "data")
    for name in FALLBACK_KEYS:  # copied to indexed columns, whatever the type
        key = data.get(name)
        if isinstance(key, str):
            _check_length(key, f"data.{name}")

    extensions: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _KNOWN_ATTRIBUTES:
            continue
        if not _EXTENSION_NAME.match(name):
            raise EventRejected(
                f"{name}: not a valid CloudEvents attribute name "
                "(lower-case letters and digits, at most 20 characters)"
            )
        extensions[name] = value
    for name in ("datacontenttype", "dataschema", "tracestate"):
        if name in raw and raw[name] is not None:
            extensions[name] = raw[name]

    return CanonicalEvent(
        source=source,
        id=event_id,
        type=event_type,
        time=time,
        data=data,
        correlation_id=correlation_id,
        subject=subject,
        traceparent=traceparent,
        specversion=specversion,
        extensions=extensions,
        payload_hash=payload_hash(raw),
    )
