"""Mapping presets: a vendor's payload onto canonical events, declared in YAML (docs/mapping.md).

Pure: :func:`parse_preset` and :func:`map_payload` take data and give data; only
:func:`load_preset` reads a file. A preset is validated strictly when it is parsed
(:class:`PresetError` names the file and the key); a payload that cannot be mapped raises
:class:`MappingError` with the reason (the caller keeps it in the dead-letter store)."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

PRESETS_DIR = Path(__file__).parent / "presets"
SCHEMES = ("none", "standard-webhooks", "docusign-connect", "ironclad")
CONVERSIONS = ("string", "int", "decimal", "bool", "date", "datetime", "json")
FORMATS = ("auto", "rfc3339", "epoch_s", "epoch_ms", "odata", "date")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")  # webhook_deliveries.preset holds 50


class MappingError(Exception):
    """The payload cannot be mapped; ``reason`` says why (it goes to the dead-letter store)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PresetError(ValueError):
    """A preset file is invalid; the message names the file and the key."""


class UnknownPreset(PresetError):
    """No preset of that name."""


# --- paths -----------------------------------------------------------------------------------

_ABSENT: Any = object()


@dataclass(frozen=True)
class Select:
    """``[field=value]``: the first element of a list (of objects) whose ``field`` is ``value``."""

    field: str
    value: str


Step = str | int | Select | None  # a key, an index, a selection, or None for ``*``
Root = Literal["record", "payload", "headers", "delivery_id", "match"]
_TOKEN = re.compile(
    r'"([^"]*)"|\[(\d+|\*)\]|\[\s*([^\]=\["\s]+)\s*=\s*(?:"([^"]*)"|([^\]"]*?))\s*\]'
    r'|([^.\[\]"]+)|(\.)'
)


@dataclass(frozen=True)
class PathExpr:
    text: str
    root: Root
    steps: tuple[Step, ...]

    @property
    def many(self) -> bool:
        return any(step is None for step in self.steps)


def parse_path(text: str) -> PathExpr:
    """``a.b[0].*.c``, ``a[key=Target].value``, ``"odata.etag"``, ``$payload.x``,
    ``$headers.webhook-id``, ``$match.group``, ``$``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a path must be a non-empty string")
    text = text.strip()
    root: Root = "record"
    rest = text
    for prefix, name in (("$payload", "payload"), ("$headers", "headers"), ("$match", "match")):
        if rest == prefix or rest.startswith(prefix + ".") or rest.startswith(prefix + "["):
            root = name  # type: ignore[assignment]
            rest = rest[len(prefix) :].lstrip(".")
            break
    else:
        if rest == "$delivery_id":
            return PathExpr(text, "delivery_id", ())
        if rest == "$":
            return PathExpr(text, "record", ())
        if rest.startswith("$"):
            raise ValueError(
                f"path {text!r}: only $, $payload, $headers, $match and $delivery_id start with $"
            )
    steps: list[Step] = []
    position = 0
    expect_step = True
    while position < len(rest):
        match = _TOKEN.match(rest, position)
        if match is None:
            raise ValueError(f"path {text!r} is malformed at {rest[position:]!r}")
        quoted, bracket, field, quoted_wanted, wanted, bare, dot = match.groups()
        if dot is not None:
            if expect_step:
                raise ValueError(f"path {text!r} has an empty step")
            expect_step = True
        elif bracket is not None:
            steps.append(None if bracket == "*" else int(bracket))
            expect_step = False
        elif field is not None:
            value = quoted_wanted if quoted_wanted is not None else wanted
            if not value:
                raise ValueError(f"path {text!r}: [{field}=] needs a value")
            steps.append(Select(field, value))
            expect_step = False
        else:
            if not expect_step:
                raise ValueError(f"path {text!r}: separate steps with dots")
            key = quoted if quoted is not None else bare
            steps.append(None if quoted is None and key == "*" else key)
            expect_step = False
        position = match.end()
    if steps and expect_step:
        raise ValueError(f"path {text!r} ends with a dot")
    if root == "headers":
        if len(steps) != 1 or not isinstance(steps[0], str):
            raise ValueError(f"path {text!r}: $headers takes one header name, $headers.<name>")
        steps = [steps[0].lower()]
    if root == "match" and (len(steps) != 1 or not isinstance(steps[0], str)):
        raise ValueError(f"path {text!r}: $match takes one group name, $match.<group>")
    return PathExpr(text, root, tuple(steps))


@dataclass(frozen=True)
class _Context:
    record: Any
    payload: Any
    headers: Mapping[str, str]
    delivery_id: str | None
    captures: Mapping[str, str] | None = None  # named groups of the rule's `matches` conditions


def _walk(value: Any, steps: Sequence[Step]) -> Any:
    """The value at ``steps``; a ``*`` step gives a list (absent elements left out)."""
    for position, step in enumerate(steps):
        if value is None or value is _ABSENT:
            return _ABSENT
        if step is None:
            if not isinstance(value, list):
                return _ABSENT
            found = [_walk(item, steps[position + 1 :]) for item in value]
            return [item for item in found if item is not _ABSENT and item is not None]
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return _ABSENT
            value = value[step]
        elif isinstance(step, Select):
            if not isinstance(value, list):
                return _ABSENT
            value = next((item for item in value if _selected(item, step)), _ABSENT)
        else:
            if not isinstance(value, dict) or step not in value:
                return _ABSENT
            value = value[step]
    return _ABSENT if value is None else value


def _selected(item: Any, step: Select) -> bool:
    if not isinstance(item, dict) or step.field not in item:
        return False
    found = item[step.field]
    if isinstance(found, bool):
        return ("true" if found else "false") == step.value
    return isinstance(found, str | int | Decimal) and str(found) == step.value


def _resolve(path: PathExpr, context: _Context) -> Any:
    if path.root == "match":
        captured = (context.captures or {}).get(str(path.steps[0]))
        return _ABSENT if captured is None else captured
    if path.root == "delivery_id":
        return _ABSENT if context.delivery_id is None else context.delivery_id
    if path.root == "headers":
        header = context.headers.get(str(path.steps[0]))
        return _ABSENT if header is None else header
    start = context.payload if path.root == "payload" else context.record
    return _walk(start, path.steps)


# --- conversions -----------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_ODATA = re.compile(r"^/Date\((-?\d+)(?:([+-])(\d{2})(\d{2}))?\)/$")
_DECIMAL = re.compile(r"^[+-]?\d+(\.\d+)?$")
_EPOCH = re.compile(r"^-?\d+(\.\d+)?$")
_MS_THRESHOLD = Decimal(10) ** 11
_EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _from_epoch(number: Decimal, unit: str) -> datetime:
    seconds = number / 1000 if unit == "ms" else number
    try:
        return _EPOCH_START + timedelta(seconds=float(seconds))
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"{number} is out of range as epoch {unit}") from exc


def _as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and _EPOCH.match(value.strip()):
        return Decimal(value.strip())
    return None


def _parse_rfc3339(text: str) -> datetime | None:
    match = _RFC3339.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    zone: timezone
    if offset in ("Z", "z"):
        zone = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=zone
    )
    return moment.astimezone(UTC)


def to_datetime(value: Any, fmt: str = "auto") -> datetime:
    """A timezone-aware UTC datetime from the vendor's representation; ValueError otherwise."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{_describe(value)} has no UTC offset")
        return value.astimezone(UTC)
    if isinstance(value, date) and fmt in ("auto", "date"):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = value.strip() if isinstance(value, str) else None
    if fmt in ("auto", "odata") and text is not None:
        match = _ODATA.match(text)
        if match:
            return _from_epoch(Decimal(match.group(1)), "ms")
        if fmt == "odata":
            raise ValueError(f"{_describe(value)} is not an OData date /Date(ms)/")
    if fmt in ("auto", "epoch_s", "epoch_ms"):
        number = _as_number(value)
        if number is not None:
            if fmt == "epoch_s":
                return _from_epoch(number, "s")
            if fmt == "epoch_ms":
                return _from_epoch(number, "ms")
            return _from_epoch(number, "ms" if abs(number) >= _MS_THRESHOLD else "s")
        if fmt != "auto":
            raise ValueError(f"{_describe(value)} is not a number of {fmt[6:]} since the epoch")
    if text is not None and fmt in ("auto", "rfc3339"):
        parsed = _try(_parse_rfc3339, text)
        if parsed is not None:
            return parsed
        if fmt == "rfc3339":
            raise ValueError(
                f"{_describe(value)} is not an RFC 3339 date-time with an offset (Z or +hh:mm)"
            )
    if text is not None and fmt in ("auto", "date"):
        match = _DATE.match(text)
        if match:
            try:
                day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            except ValueError as exc:
                raise ValueError(f"{_describe(value)} is not a valid date") from exc
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        if fmt == "date":
            raise ValueError(f"{_describe(value)} is not a date YYYY-MM-DD")
    raise ValueError(
        f"{_describe(value)} is not a date-time (RFC 3339 with an offset, epoch seconds or "
        "milliseconds, /Date(ms)/, or YYYY-MM-DD)"
    )


def _try(function: Any, text: str) -> datetime | None:
    try:
        result: datetime | None = function(text)
    except ValueError as exc:
        raise ValueError(f"{_describe(text)} is not a valid date-time: {exc}") from exc
    return result


def format_datetime(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def convert(value: Any, conversion: str, fmt: str = "auto") -> Any:
    """One conversion of docs/mapping.md; ValueError with the reason when it does not apply."""
    if conversion == "json":
        return value
    if conversion == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | Decimal):
            return str(value)
        raise ValueError(f"{_describe(value)} is not text or a number")
    if conversion == "int":
        if isinstance(value, bool):
            raise ValueError(f"{_describe(value)} is a boolean, not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        if isinstance(value, str) and re.match(r"^[+-]?\d+$", value.strip()):
            return int(value.strip())
        raise ValueError(f"{_describe(value)} is not an integer")
    if conversion == "decimal":
        if isinstance(value, bool):
            raise ValueError(f"{_describe(value)} is a boolean, not a decimal")
        if isinstance(value, int | Decimal):
            if isinstance(value, Decimal) and not value.is_finite():
                raise ValueError(f"{_describe(value)} is not a finite decimal")
            return str(value)
        if isinstance(value, float):  # only from a YAML constant; written digit for digit
            return repr(value)
        if isinstance(value, str) and _DECIMAL.match(value.strip()):
            return value.strip()
        raise ValueError(f"{_describe(value)} is not a decimal (digits with an optional point)")
    if conversion == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return value == 1
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "yes", "1"):
                return True
            if lowered in ("false", "no", "0"):
                return False
        raise ValueError(f"{_describe(value)} is not a boolean")
    if conversion == "date":
        if isinstance(value, str) and _DATE.match(value.strip()) and fmt in ("auto", "date"):
            return to_datetime(value, "date").date().isoformat()
        return to_datetime(value, fmt).date().isoformat()
    if conversion == "datetime":
        return format_datetime(to_datetime(value, fmt))
    raise ValueError(f"unknown conversion {conversion!r}")


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One value of a rule: a path (or paths), a constant, a template or a list."""

    kind: Literal["path", "const", "template", "list"]
    paths: tuple[PathExpr, ...] = ()
    constant: Any = None
    template: tuple[tuple[str, PathExpr | None], ...] = ()
    item: tuple[tuple[str, Value], ...] = ()
    conversion: str | None = None
    fmt: str = "auto"
    lookup: tuple[tuple[Any, Any], ...] | None = None
    default: Any = _ABSENT
    optional: bool = False

    @property
    def has_default(self) -> bool:
        return self.default is not _ABSENT


ConditionOp = Literal["equals", "in", "not_in", "exists", "matches", "prefix"]
_CONDITION_OPS: tuple[ConditionOp, ...] = ("equals", "in", "not_in", "exists", "matches", "prefix")


@dataclass(frozen=True)
class Condition:
    path: PathExpr
    op: ConditionOp
    operand: Any  # for matches: a compiled pattern; for prefix: a tuple of texts


@dataclass(frozen=True)
class Rule:
    index: int
    when: tuple[Condition, ...]
    ignore: bool
    fields: tuple[tuple[str, Value], ...] = ()
    data: tuple[tuple[str, Value], ...] = ()
    then_continue: bool = False  # `continue: true`: the rules after this one are tried too


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    source: str
    verified: bool
    docs: list[str]
    signature: str | None
    records: PathExpr  # the first of the alternatives below (kept for callers that replace it)
    rules: tuple[Rule, ...]
    unmatched: Literal["reject", "ignore"] = "reject"
    delivery_id: Value | None = None
    notes: str | None = None
    origin: str = "<memory>"
    #: further paths to the records, tried in order when ``records`` leads nowhere
    records_alternatives: tuple[PathExpr, ...] = ()


def _same(left: Any, right: Any) -> bool:
    numeric = (int, Decimal, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, numeric) and isinstance(right, numeric):
        return Decimal(str(left)) == Decimal(str(right))
    return bool(left == right)


def _text(found: Any) -> str | None:
    """Text for matches and prefix: a string, or a number written digit for digit."""
    if isinstance(found, str):
        return found
    if isinstance(found, int | Decimal) and not isinstance(found, bool):
        return str(found)
    return None


def _holds(condition: Condition, context: _Context, captures: dict[str, str]) -> bool:
    """Whether the condition holds; a ``matches`` adds its named groups to ``captures``."""
    found = _resolve(condition.path, context)
    if condition.op == "exists":
        return (found is not _ABSENT) is bool(condition.operand)
    if condition.op == "not_in":
        return found is _ABSENT or not any(_same(found, c) for c in condition.operand)
    if found is _ABSENT:
        return False
    if condition.op == "equals":
        return _same(found, condition.operand)
    if condition.op == "in":
        return any(_same(found, candidate) for candidate in condition.operand)
    text = _text(found)
    if text is None:
        return False
    if condition.op == "prefix":
        return text.startswith(condition.operand)
    matched = condition.operand.search(text)
    if matched is None:
        return False
    captures.update(
        {name: group for name, group in matched.groupdict().items() if group is not None}
    )
    return True


def _matches(rule: Rule, context: _Context) -> dict[str, str] | None:
    """The named captures when every condition of the rule holds, else None."""
    captures: dict[str, str] = {}
    if all(_holds(condition, context, captures) for condition in rule.when):
        return captures
    return None


def _raw(value: Value, context: _Context) -> Any:
    if value.kind == "const":
        return value.constant
    if value.kind == "path":
        for path in value.paths:
            found = _resolve(path, context)
            if found is not _ABSENT:
                return found
        return _ABSENT
    if value.kind == "template":
        parts: list[str] = []
        for literal, field_path in value.template:
            parts.append(literal)
            if field_path is not None:
                found = _resolve(field_path, context)
                if found is _ABSENT or isinstance(found, dict | list):
                    return _ABSENT
                parts.append(convert(found, "string"))
        return "".join(parts)
    # a list
    elements = _resolve(value.paths[0], context)
    if elements is _ABSENT:
        return _ABSENT
    if not isinstance(elements, list):
        raise MappingError(f"{value.paths[0].text} is not a list")
    if not elements:
        return _ABSENT
    result = []
    for position, element in enumerate(elements):
        inner = _Context(
            element, context.payload, context.headers, context.delivery_id, context.captures
        )
        obj: dict[str, Any] = {}
        for name, item_value in value.item:
            try:
                found = evaluate(item_value, inner)
            except MappingError as error:
                raise MappingError(f"[{position}].{name}: {error.reason}") from error
            if found is not _ABSENT:
                obj[name] = found
        result.append(obj)
    return result


def _where(value: Value) -> str:
    if value.kind in ("path", "list"):
        return " or ".join(path.text for path in value.paths)
    if value.kind == "template":
        return "template " + "".join(
            literal + ("{" + part.text + "}" if part else "") for literal, part in value.template
        )
    return "constant"


def evaluate(value: Value, context: _Context) -> Any:
    """The value, converted; ``_ABSENT`` when absent and optional; MappingError otherwise."""
    found = _raw(value, context)
    if found is not _ABSENT and value.lookup is not None:
        for key, mapped in value.lookup:
            if _same(found, key):
                found = mapped
                break
        else:
            if not value.has_default:
                known = ", ".join(repr(key) for key, _ in value.lookup)
                raise MappingError(f"{_describe(found)} at {_where(value)} is not one of {known}")
            found = _ABSENT
    if found is _ABSENT:
        if value.has_default:
            found = value.default
        elif value.optional:
            return _ABSENT
        else:
            raise MappingError(f"nothing at {_where(value)}")
    if value.conversion is not None and value.kind != "list":
        try:
            return convert(found, value.conversion, value.fmt)
        except ValueError as exc:
            raise MappingError(f"{_where(value)}: {exc}") from exc
    return found


# --- mapping ---------------------------------------------------------------------------------


def _records(preset: Preset, payload: Any) -> list[Any]:
    if preset.records.root == "record" and not preset.records.steps:
        return payload if isinstance(payload, list) else [payload]
    context = _Context(payload, payload, {}, None)
    for path in (preset.records, *preset.records_alternatives):
        if path.root == "record" and not path.steps:
            return payload if isinstance(payload, list) else [payload]
        found = _resolve(path, context)
        if found is not _ABSENT:
            return found if isinstance(found, list) else [found]
    tried = " or ".join(path.text for path in (preset.records, *preset.records_alternatives))
    raise MappingError(f"no records at {tried}")


def delivery_id(
    preset: Preset, payload: Any, headers: Mapping[str, str] | None = None
) -> str | None:
    """The vendor's delivery ID of this payload, when the preset (or its scheme) names one."""
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    spec = preset.delivery_id
    if spec is None and preset.signature == "standard-webhooks":
        return lowered.get("webhook-id")
    if spec is None:
        return None
    found = _raw(spec, _Context(payload, payload, lowered, None))
    if found is _ABSENT or isinstance(found, dict | list):
        return None
    text = convert(found, "string")
    return str(text) if text else None


def _event(preset: Preset, rule: Rule, context: _Context, where: str) -> dict[str, Any]:
    event: dict[str, Any] = {"specversion": "1.0"}
    try:
        for name, spec in rule.fields:
            try:
                found = evaluate(spec, context)
            except MappingError as error:
                raise MappingError(f"{name}: {error.reason}") from error
            if found is not _ABSENT:
                event[name] = found
        data: dict[str, Any] = {}
        for name, spec in rule.data:
            try:
                found = evaluate(spec, context)
            except MappingError as error:
                raise MappingError(f"data.{name}: {error.reason}") from error
            if found is not _ABSENT:
                data[name] = found
    except MappingError as error:
        raise MappingError(
            f"preset {preset.name}, events[{rule.index}], {where}: {error.reason}"
        ) from error
    event.setdefault("source", preset.source)
    event["data"] = data
    return event


def map_payload(
    preset: Preset, payload: Any, *, headers: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Canonical events as ``POST /v1/events`` accepts them (0..n per payload). Raises
    :class:`MappingError` with the reason when a record cannot be mapped."""
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    delivery = delivery_id(preset, payload, lowered)
    events: list[dict[str, Any]] = []
    records = _records(preset, payload)
    for position, record in enumerate(records):
        where = f"record {position}" if len(records) > 1 else "the payload"
        base = _Context(record, payload, lowered, delivery)
        matched_any = False
        for rule in preset.rules:
            captures = _matches(rule, base)
            if captures is None:
                continue
            matched_any = True
            if rule.ignore:
                break
            context = _Context(record, payload, lowered, delivery, captures)
            events.append(_event(preset, rule, context, where))
            if not rule.then_continue:
                break
        if not matched_any and preset.unmatched == "reject":
            raise MappingError(f"preset {preset.name}: no rule matches {where}")
    return events


# --- parsing a preset ------------------------------------------------------------------------

_TOP_KEYS = {
    "name", "title", "source", "verified", "docs", "signature", "delivery_id", "records",
    "events", "unmatched", "notes",
}  # fmt: skip
_RULE_KEYS = {"when", "ignore", "continue", "type", "id", "source", "time", "correlationid",
              "subject", "traceparent", "data"}  # fmt: skip
_VALUE_KEYS = {"path", "const", "template", "list", "item", "as", "format", "map", "default",
               "optional"}  # fmt: skip
#: event attributes: (name, required, a bare string is a constant, implied conversion)
_ATTRIBUTES = (
    ("type", True, True, "string"),
    ("id", True, False, "string"),
    ("source", False, True, "string"),
    ("time", True, False, "datetime"),
    ("correlationid", False, False, "string"),
    ("subject", False, False, "string"),
    ("traceparent", False, False, "string"),
)


class _Parser:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, key: str, message: str) -> PresetError:
        return PresetError(f"{self.origin}: {key}: {message}")

    def path(self, key: str, text: Any) -> PathExpr:
        if not isinstance(text, str):
            raise self.fail(key, "must be a path (a string)")
        try:
            return parse_path(text)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from exc

    def template(self, key: str, text: str) -> tuple[tuple[str, PathExpr | None], ...]:
        parts: list[tuple[str, PathExpr | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise self.fail(key, f"is not a valid template ({exc}); write a brace as {{{{") from exc
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None))
                continue
            if spec or conversion:
                raise self.fail(key, f"template field {{{name}}}: no ':' or '!' allowed")
            parts.append((literal, self.path(key, name)))
        return tuple(parts)

    def value(self, key: str, spec: Any, *, bare_const: bool = False, conv: str | None = None
              ) -> Value:  # fmt: skip
        if isinstance(spec, str):
            if bare_const:
                return Value("const", constant=spec, conversion=conv)
            if "{" in spec or "}" in spec:
                return Value("template", template=self.template(key, spec), conversion=conv)
            return Value("path", paths=(self.path(key, spec),), conversion=conv)
        if not isinstance(spec, dict):
            if bare_const and isinstance(spec, int | bool):
                return Value("const", constant=spec, conversion=conv)
            raise self.fail(key, "must be a path (string) or a mapping such as {path: ...}")
        unknown = set(spec) - _VALUE_KEYS
        if unknown:
            known = ", ".join(sorted(_VALUE_KEYS))
            raise self.fail(key, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                 f"known: {known}")  # fmt: skip
        kinds = [kind for kind in ("path", "const", "template", "list") if kind in spec]
        if len(kinds) != 1:
            raise self.fail(key, "give exactly one of path, const, template, list")
        kind = kinds[0]
        conversion = spec.get("as", conv)
        if conversion is not None and conversion not in CONVERSIONS:
            raise self.fail(f"{key}.as", f"must be one of {', '.join(CONVERSIONS)}")
        fmt = spec.get("format", "auto")
        if fmt not in FORMATS:
            raise self.fail(f"{key}.format", f"must be one of {', '.join(FORMATS)}")
        if "format" in spec and conversion not in ("date", "datetime"):
            raise self.fail(f"{key}.format", "applies only with as: date or as: datetime")
        optional = spec.get("optional", False)
        if not isinstance(optional, bool):
            raise self.fail(f"{key}.optional", "must be true or false")
        lookup = spec.get("map")
        if lookup is not None and (not isinstance(lookup, dict) or not lookup):
            raise self.fail(f"{key}.map", "must be a non-empty mapping of value: replacement")
        if "item" in spec and kind != "list":
            raise self.fail(f"{key}.item", "applies only with list")
        common: dict[str, Any] = {
            "conversion": conversion,
            "fmt": fmt,
            "lookup": tuple(lookup.items()) if lookup else None,
            "default": spec.get("default", _ABSENT),
            "optional": optional,
        }
        if kind == "path":
            raw = spec["path"]
            texts = raw if isinstance(raw, list) else [raw]
            if not texts:
                raise self.fail(f"{key}.path", "must name at least one path")
            paths = tuple(self.path(f"{key}.path", text) for text in texts)
            return Value("path", paths=paths, **common)
        if kind == "const":
            return Value("const", constant=spec["const"], **common)
        if kind == "template":
            if not isinstance(spec["template"], str):
                raise self.fail(f"{key}.template", "must be a string")
            return Value("template", template=self.template(f"{key}.template", spec["template"]),
                         **common)  # fmt: skip
        item = spec.get("item")
        if not isinstance(item, dict) or not item:
            raise self.fail(f"{key}.item", "a list needs item: {field: value, ...}")
        if conversion is not None and conversion != "json":
            raise self.fail(f"{key}.as", "a list takes conversions on its item fields")
        fields = tuple(
            (str(name), self.value(f"{key}.item.{name}", sub)) for name, sub in item.items()
        )
        return Value("list", paths=(self.path(f"{key}.list", spec["list"]),), item=fields,
                     **common)  # fmt: skip

    def condition(self, key: str, spec: Any) -> Condition:
        ops = [op for op in _CONDITION_OPS if isinstance(spec, dict) and op in spec]
        if not isinstance(spec, dict) or "path" not in spec:
            raise self.fail(key, f"a condition is {{path: ..., {'|'.join(_CONDITION_OPS)}: ...}}")
        unknown = set(spec) - {"path", *_CONDITION_OPS}
        if unknown or len(ops) != 1:
            raise self.fail(
                key, f"a condition has path and exactly one of {', '.join(_CONDITION_OPS)}"
            )
        op = ops[0]
        operand = spec[op]
        if op in ("in", "not_in") and (not isinstance(operand, list) or not operand):
            raise self.fail(f"{key}.{op}", "must be a non-empty list")
        if op == "exists" and not isinstance(operand, bool):
            raise self.fail(f"{key}.exists", "must be true or false")
        if op == "equals" and isinstance(operand, dict | list):
            raise self.fail(f"{key}.equals", "must be a scalar (use in for several values)")
        if op == "prefix":
            prefixes = operand if isinstance(operand, list) else [operand]
            if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
                raise self.fail(f"{key}.prefix", "must be a non-empty text or a list of them")
            operand = tuple(prefixes)
        if op == "matches":
            if not isinstance(operand, str) or not operand:
                raise self.fail(f"{key}.matches", "must be a regular expression (text)")
            try:
                operand = re.compile(operand)
            except re.error as exc:
                raise self.fail(f"{key}.matches", f"is not a valid regular expression: {exc}"
                                ) from exc  # fmt: skip
        path = self.path(f"{key}.path", spec["path"])
        if path.root == "match":
            raise self.fail(f"{key}.path", "a condition cannot test $match")
        return Condition(path, op, operand)

    def rule(self, index: int, spec: Any) -> Rule:
        key = f"events[{index}]"
        if not isinstance(spec, dict):
            raise self.fail(key, "a rule is a mapping")
        unknown = set(spec) - _RULE_KEYS
        if unknown:
            raise self.fail(key, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                 f"known: {', '.join(sorted(_RULE_KEYS))}")  # fmt: skip
        when = spec.get("when", [])
        if not isinstance(when, list):
            raise self.fail(f"{key}.when", "must be a list of conditions")
        conditions = tuple(self.condition(f"{key}.when[{n}]", item) for n, item in enumerate(when))
        ignore = spec.get("ignore", False)
        if not isinstance(ignore, bool):
            raise self.fail(f"{key}.ignore", "must be true or false")
        if ignore:
            extra = set(spec) - {"when", "ignore"}
            if extra:
                raise self.fail(key, f"an ignore rule has only when; remove {sorted(extra)}")
            return Rule(index, conditions, True)
        then_continue = spec.get("continue", False)
        if not isinstance(then_continue, bool):
            raise self.fail(f"{key}.continue", "must be true or false")
        fields = []
        for name, required, bare_const, conv in _ATTRIBUTES:
            if name not in spec:
                if required:
                    raise self.fail(f"{key}.{name}", "is required (or write ignore: true)")
                continue
            fields.append(
                (name, self.value(f"{key}.{name}", spec[name], bare_const=bare_const, conv=conv))
            )
        data = spec.get("data")
        if not isinstance(data, dict):
            raise self.fail(f"{key}.data", "is required: a mapping of field: value (may be {})")
        data_values = tuple(
            (str(name), self.value(f"{key}.data.{name}", sub)) for name, sub in data.items()
        )
        groups = {
            name
            for condition in conditions
            if condition.op == "matches"
            for name in condition.operand.groupindex
        }
        for name, value in (*fields, *((f"data.{n}", v) for n, v in data_values)):
            for path in _paths_of(value):
                if path.root == "match" and path.steps[0] not in groups:
                    raise self.fail(
                        f"{key}.{name}",
                        f"{path.text}: no condition of this rule has a matches with a named "
                        f"group (?P<{path.steps[0]}>...)",
                    )
        return Rule(index, conditions, False, tuple(fields), data_values, then_continue)

    def preset(self, document: Any, expected_name: str | None) -> Preset:
        if not isinstance(document, dict):
            raise PresetError(f"{self.origin}: a preset is a YAML mapping")
        unknown = set(document) - _TOP_KEYS
        if unknown:
            raise self.fail(", ".join(sorted(map(str, unknown))),
                            f"unknown key; known: {', '.join(sorted(_TOP_KEYS))}")  # fmt: skip
        for required in ("name", "title", "source", "verified", "docs", "events"):
            if required not in document:
                raise self.fail(required, "is required")
        name = document["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.fail("name", "must be lowercase letters, digits, - and _ (at most 50)")
        if expected_name is not None and name != expected_name:
            raise self.fail("name", f"is {name!r} but the file is {expected_name}.yaml")
        for text_key in ("title", "source"):
            if not isinstance(document[text_key], str) or not document[text_key].strip():
                raise self.fail(text_key, "must be a non-empty string")
        if not re.match(r"^(clm|erp|middleware|crm|psa)/[^/\s]+(/[^/\s]+)?$", document["source"]):
            raise self.fail("source", "must be KIND/NAME[/instance], KIND one of clm, erp, "
                                      "middleware, crm, psa")  # fmt: skip
        if not isinstance(document["verified"], bool):
            raise self.fail("verified", "must be true or false")
        docs = document["docs"]
        if not isinstance(docs, list) or not all(
            isinstance(url, str) and url.startswith("https://") for url in docs
        ):
            raise self.fail("docs", "must be a list of https:// URLs")
        if document["verified"] and not docs:
            raise self.fail("verified", "true needs the vendor documents followed, under docs")
        signature = document.get("signature", "none")
        if signature not in SCHEMES:
            raise self.fail("signature", f"must be one of {', '.join(SCHEMES)}")
        unmatched = document.get("unmatched", "reject")
        if unmatched not in ("reject", "ignore"):
            raise self.fail("unmatched", "must be reject or ignore")
        notes = document.get("notes")
        if notes is not None and not isinstance(notes, str):
            raise self.fail("notes", "must be text")
        raw_records = document.get("records", "$")
        texts = raw_records if isinstance(raw_records, list) else [raw_records]
        if not texts:
            raise self.fail("records", "must name at least one path")
        all_records = [self.path("records", text) for text in texts]
        if any(path.root != "record" for path in all_records):
            raise self.fail("records", "is a path in the payload (no $payload, $headers, $match)")
        delivery = None
        if document.get("delivery_id") is not None:
            delivery = self.value("delivery_id", document["delivery_id"])
        events = document["events"]
        if not isinstance(events, list) or not events:
            raise self.fail("events", "must be a non-empty list of rules")
        rules = tuple(self.rule(index, spec) for index, spec in enumerate(events))
        return Preset(
            name=name,
            title=document["title"].strip(),
            source=document["source"],
            verified=document["verified"],
            docs=list(docs),
            signature=None if signature == "none" else signature,
            records=all_records[0],
            records_alternatives=tuple(all_records[1:]),
            rules=rules,
            unmatched=unmatched,
            delivery_id=delivery,
            notes=notes,
            origin=self.origin,
        )


def _paths_of(value: Value) -> list[PathExpr]:
    """Every path a value reads (its paths, its template fields, its list items' paths)."""
    found = list(value.paths)
    found.extend(path for _, path in value.template if path is not None)
    for _, item in value.item:
        found.extend(_paths_of(item))
    return found


def parse_preset(
    document: Any, *, origin: str = "<memory>", expected_name: str | None = None
) -> Preset:
    """A preset from its parsed YAML; :class:`PresetError` naming ``origin`` and the key."""
    return _Parser(origin).preset(document, expected_name)


def builtin_presets() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def preset_file(name: str, extra_dirs: Sequence[Path] = ()) -> Path:
    """The file of preset ``name``: the configured directories first (in order), then builtins."""
    if not _NAME.match(name):
        raise UnknownPreset(f"no preset {name!r}: a name is lowercase letters, digits, - and _")
    for directory in [*extra_dirs, PRESETS_DIR]:
        candidate = Path(directory) / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise UnknownPreset(f"no preset {name!r}; built-in: {', '.join(builtin_presets())}")


def load_preset(name: str, extra_dirs: Sequence[Path] = ()) -> Preset:
    path = preset_file(name, extra_dirs)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PresetError(f"{path}: is not valid YAML: {exc}") from exc
    except OSError as exc:
        raise PresetError(f"{path}: cannot be read: {exc}") from exc
    return parse_preset(document, origin=str(path), expected_name=name)


def available_presets(extra_dirs: Sequence[Path] = ()) -> list[str]:
    names = set(builtin_presets())
    for directory in extra_dirs:
        names.update(path.stem for path in Path(directory).glob("*.yaml"))
    return sorted(names)
