"""core.events.validate_event against spec/events.md: attributes, data fields per type, time,
extensions, specversion, the conformance examples, and a property test. Pure: no database."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import jsoncodec
from core.events import EventRejected, validate_event
from core.vocabulary import EVENT_TYPES
from tests.support.builders import make_event
from tests.support.examples import EXAMPLES

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# The data fields of events.md, transcribed independently of core.vocabulary: "name:kind" (the kind
# is id when not given), with a "*" after the name of a required field.
_INTEGRATION = "step* execution_id amendment_id milestone_id"
_SPEC_TABLE = {
    "contract.signed": "contract_id* customer_id contract_value:decimal currency:currency"
    " legal_entity:text region:text service_line:text start_date:date subcontract:bool"
    " milestones:milestones",
    "contract.amended": "contract_id* amendment_id* effective_date:datetime_or_date"
    " value_delta:decimal",
    "contract.terminated": "contract_id*",
    "contract.submitted": "contract_id* approver_role:approver_role",
    "contract.approved": "contract_id* approver_role:approver_role",
    "contract.renewal_initiated": "contract_id* renewal_id",
    "contract.renewed": "contract_id* renewal_id",
    "purchase_order.created": "purchase_order_id* contract_id supplier_id amount:decimal"
    " currency:currency",
    "customer.synced": "customer_id erp_customer_id",
    "project.created": "project_id* contract_id",
    "billing_plan.created": "project_id milestones:milestones",
    "project.activated": "project_id",
    "billing_plan.updated": "amendment_id* project_id",
    "milestone.completed": "milestone_id* amount:decimal currency:currency",
    "invoice.posted": "invoice_id* milestone_id amount:decimal currency:currency project_id",
    "invoice.disputed": "invoice_id*",
    "integration.succeeded": _INTEGRATION,
    "integration.failed": f"{_INTEGRATION} error:error retryable:bool",
    "integration.dead_lettered": f"{_INTEGRATION} error:error",
}
SPEC: dict[str, dict[str, str]] = {
    event_type: {name: kind or "id" for name, _, kind in (f.partition(":") for f in fields.split())}
    for event_type, fields in _SPEC_TABLE.items()
}
GOOD: dict[str, list[Any]] = {
    "id": ["X-1", "a b"],
    "text": ["EMEA", ""],
    "decimal": ["125000.00", "-5", "0", 12, Decimal("12.50"), Decimal("1E+5")],
    "currency": ["EUR", "USD"],
    "date": ["2026-11-20", "2024-02-29"],
    "datetime_or_date": ["2026-11-20", "2026-11-20T10:00:00+02:00", "2026-11-20t10:00:00z"],
    "bool": [True, False],
    "approver_role": ["legal", "finance", "delivery"],
    "error": ["timeout", {"code": 504, "message": "gateway"}],
    "milestones": [[], [{"milestone_id": "M1", "amount": "10.00", "due_date": "2026-12-01"}]],
}
NOT_MONEY = ["12,5 EUR", "1e5", "1.2.3", "", " 12.5", "12.", ".5", "+5", "NaN", "Infinity", "1_0"]
BAD: dict[str, list[Any]] = {
    "id": ["", "   ", 5, True, ["X"], {"id": "X"}],
    "text": [5, True, ["EMEA"], {}],
    # a binary float is never money, even when it holds a whole number
    "decimal": [True, False, 12.5, 1.0, Decimal("NaN"), Decimal("-Infinity"), [], {}, *NOT_MONEY],
    "currency": ["eur", "EURO", "EU", "E1R", "", 978, True],
    "date": ["2026-11-32", "2026-02-30", "20261120", "2026-11-20T00:00:00Z", "yesterday", 20261120],
    "datetime_or_date": ["2026-11-20T10:00:00", "2026-13-01", "soon", 5, "2026-11-20 10:00Z"],
    "bool": ["true", 1, 0, "yes"],
    "approver_role": ["Legal", "sales", "", 1, ["legal"]],
    "error": [5, True, ["timeout"]],
    "milestones": ["M1", {"milestone_id": "M1"}, ["M1"], [{}], [{"milestone_id": ""}]],
}


def required(fields: dict[str, str]) -> list[str]:
    return [name[:-1] for name in fields if name.endswith("*")]


def optional(fields: dict[str, str]) -> list[str]:
    return [name for name in fields if not name.endswith("*")]


def event_of(event_type: str, **data: Any) -> dict[str, Any]:
    """A valid event of the type with only its required data fields, plus ``data``."""
    base = {name: f"{name.upper()}-1" for name in required(SPEC[event_type])}
    return make_event(event_type, data={**base, **data})


def rejected(raw: Any, **kwargs: Any) -> str:
    with pytest.raises(EventRejected) as caught:
        validate_event(raw, **kwargs)
    return caught.value.reason


FIELD_CASES = [
    (event_type, name.rstrip("*"), kind)
    for event_type, fields in SPEC.items()
    for name, kind in fields.items()
]


def test_the_vocabulary_lists_exactly_the_types_and_fields_of_the_spec() -> None:
    got = {
        event_type: {f.name + ("*" if f.required else ""): f.kind.value for f in fields}
        for event_type, fields in EVENT_TYPES.items()
    }
    assert got == SPEC


@pytest.mark.parametrize(("event_type", "name", "kind"), FIELD_CASES)
def test_each_data_field_accepts_its_form_and_rejects_others(
    event_type: str, name: str, kind: str
) -> None:
    for value in GOOD[kind]:
        assert validate_event(event_of(event_type, **{name: value})).data[name] == value
    for value in BAD[kind]:
        reason = rejected(event_of(event_type, **{name: value}))
        assert reason.startswith(f"data.{name}"), (value, reason)


@pytest.mark.parametrize(
    ("event_type", "name"),
    [(t, name) for t, fields in SPEC.items() for name in required(fields)],
)
def test_a_required_data_field_missing_or_null_is_rejected(event_type: str, name: str) -> None:
    event = event_of(event_type)
    event["data"][name] = None
    assert rejected(event) == f"data.{name}: must not be null"
    del event["data"][name]
    assert rejected(event) == f"data.{name}: is required"


@pytest.mark.parametrize("event_type", sorted(SPEC))
def test_optional_data_fields_may_be_null_and_unknown_fields_are_kept(event_type: str) -> None:
    nulls = dict.fromkeys(optional(SPEC[event_type]))
    event = validate_event(event_of(event_type, **nulls, vendor_extra={"kept": [1, "two"]}))
    assert event.data["vendor_extra"] == {"kept": [1, "two"]}
    assert all(event.data[name] is None for name in nulls)
    assert event.known_type


@pytest.mark.parametrize(
    ("milestone", "path"),
    [
        ({"amount": "1.00"}, "data.milestones[1].milestone_id: is required"),
        ({"milestone_id": "M2", "amount": "12,5 EUR"}, "data.milestones[1].amount"),
        ({"milestone_id": "M2", "amount": True}, "data.milestones[1].amount"),
        ({"milestone_id": "M2", "due_date": "2026-02-30"}, "data.milestones[1].due_date"),
        ({"milestone_id": 7}, "data.milestones[1].milestone_id"),
        ("M2", "data.milestones[1]: must be an object"),
    ],
)
def test_milestone_items_are_checked_one_by_one(milestone: Any, path: str) -> None:
    items = [{"milestone_id": "M1", "amount": "5.00"}, milestone]
    for event_type in ("contract.signed", "billing_plan.created"):
        assert rejected(event_of(event_type, milestones=items)).startswith(path)


@pytest.mark.parametrize("name", ["id", "source", "type", "time", "data"])
def test_every_required_attribute_missing_or_null_is_rejected(name: str) -> None:
    assert rejected(make_event(drop=[name])) == f"{name}: is required"
    assert rejected({**make_event(), name: None}) == f"{name}: is required"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", ""),
        ("id", "  "),
        ("id", 42),
        ("source", ""),
        ("source", "sap/s4hana"),
        ("source", "clm"),
        ("source", "clm/"),
        ("source", "CLM/ironclad"),
        ("source", "clm/ironclad/emea/extra"),
        ("source", "clm/iron clad"),
        ("type", ""),
        ("type", 3),
        ("data", "not an object"),
        ("data", ["contract_id"]),
        ("correlationid", ""),
        ("correlationid", 17),
        ("subject", 5),
        ("data_base64", "e30="),
    ],
)
def test_attributes_of_the_wrong_form_are_rejected_naming_them(name: str, value: Any) -> None:
    assert rejected({**make_event(), name: value}).startswith(f"{name}: ")


@pytest.mark.parametrize(
    "source", ["clm/ironclad", "erp/netsuite/emea", "middleware/mulesoft", "crm/sf", "psa/kantata"]
)
def test_sources_of_every_kind_are_accepted(source: str) -> None:
    assert validate_event(make_event(source=source)).source == source


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T12:00:00+02:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T05:00:00-05:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20t10:00:00z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T23:30:00-01:00", datetime(2026, 11, 21, 0, 30, tzinfo=UTC)),
        ("2026-11-20T10:00:00.123456Z", datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-20T11:00:00.5+01:00", datetime(2026, 11, 20, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-20T10:00:00.123456789Z", datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_time_with_an_offset_is_converted_to_utc(text: str, utc: datetime) -> None:
    time = validate_event(make_event(time=text)).time
    assert time == utc
    assert time.tzinfo is not None and time.utcoffset() == utc.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T10:00:00",
        "2026-11-20T10:00:00.123",
        "2026-11-20",
        "2026-11-20T10:00Z",
        "2026-11-20T10:00:00+0200",
        "2026-11-20T10:00:00+02",
        "2026-02-30T10:00:00Z",
        "2026-11-20T25:00:00Z",
        "2026-11-20T10:00:00.Z",
        "yesterday",
        "",
        1763632800,
    ],
)
def test_time_without_an_offset_or_not_rfc3339_is_rejected(text: Any) -> None:
    assert rejected(make_event(time=text)).startswith("time: ")


def test_extension_attributes_with_valid_names_are_kept() -> None:
    event = validate_event(make_event(tenant="acme", region2=5, datacontenttype="x/y"))
    assert event.extensions == {"tenant": "acme", "region2": 5, "datacontenttype": "x/y"}
    assert "tenant" not in event.data


@pytest.mark.parametrize("name", ["Tenant", "tenant_id", "tenant-id", "x" * 21, "tenänt"])
def test_extension_attributes_with_invalid_names_are_rejected(name: str) -> None:
    assert rejected(make_event(**{name: "v"})).startswith(f"{name}: not a valid")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACEPARENT, True),
        (None, True),
        (TRACEPARENT.upper(), False),
        (TRACEPARENT[:-1], False),
        (TRACEPARENT.replace("-", ""), False),
        ("", False),
        (5, False),
    ],
)
def test_traceparent_must_be_a_w3c_trace_context(value: Any, valid: bool) -> None:
    event = make_event(traceparent=value)
    if valid:
        assert validate_event(event).traceparent == value
    else:
        assert rejected(event).startswith("traceparent: ")


@pytest.mark.parametrize("require", [False, True])
def test_specversion_is_optional_on_plain_json_and_required_in_cloudevents_modes(
    require: bool,
) -> None:
    assert validate_event(make_event(specversion="1.0"), require_specversion=require)
    for wrong in ("0.3", "1", "", Decimal("1.0"), 1):
        reason = rejected(make_event(specversion=wrong), require_specversion=require)
        assert reason.startswith("specversion: ")
    if require:
        assert rejected(make_event(), require_specversion=True).startswith("specversion: ")
    else:
        assert validate_event(make_event()).specversion == "1.0"


def test_an_unknown_type_is_kept_with_any_data_but_data_must_be_an_object() -> None:
    data = {"amount": "12,5 EUR", "nested": [None, {"x": True}]}
    event = validate_event(make_event("connector.heartbeat", data=data))
    assert event.data == data and not event.known_type
    assert rejected(make_event("connector.heartbeat", data=[1])).startswith("data: ")


def test_optional_attributes_may_be_null_and_correlationid_may_be_absent() -> None:
    event = validate_event(make_event(subject=None, traceparent=None, drop=["correlationid"]))
    assert (event.correlation_id, event.subject, event.traceparent) == (None, None, None)
    sent = validate_event(make_event(correlationid="Q2C-7", subject="s", traceparent=TRACEPARENT))
    assert (sent.correlation_id, sent.subject, sent.traceparent) == ("Q2C-7", "s", TRACEPARENT)


def test_payload_hash_is_the_sha256_of_the_event_as_received_whatever_the_key_order() -> None:
    raw = make_event()
    expected = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    assert validate_event(raw).payload_hash == hashlib.sha256(expected).hexdigest()
    reordered = dict(reversed(list(raw.items())))
    assert validate_event(reordered).payload_hash == validate_event(raw).payload_hash
    changed = {**raw, "data": {**raw["data"], "contract_value": "1.00"}}
    assert validate_event(changed).payload_hash != validate_event(raw).payload_hash


@pytest.mark.parametrize(
    ("where", "value", "reason"),
    [
        ("subject", "a\x00b", "subject: contains a NUL character"),
        ("note", "a\x00b", "data.note: contains a NUL character"),
        ("note", "\ud800", "data.note: contains a lone surrogate"),
        ("note", 2**64, "data.note: integer out of range"),
        ("note", Decimal("1E+1000"), "data.note: a number with more than"),
        ("note", Decimal("1E-1001"), "data.note: a number with more than"),
        ("note", float("inf"), "data.note: must be a finite number"),
        ("note", ("a", "tuple"), "data.note: not a JSON value"),
        ("note", {1: "x"}, "data.note: object keys must be strings"),
        ("note", {"k\x00": 1}, "data.note.'k\\x00': contains a NUL"),
        ("note", json.loads("[" * 80 + "]" * 80), "data.note" + "[0]" * 62 + ": nested more"),
    ],
)
def test_what_no_store_can_keep_faithfully_is_rejected(where: str, value: Any, reason: str) -> None:
    """A NUL character cannot be stored on PostgreSQL, a lone surrogate nowhere; numbers and
    nesting beyond the limits would fail in the JSON writer or when read back."""
    event = make_event() if where == "subject" else make_event("x.y", data={"note": 1})
    target = event if where == "subject" else event["data"]
    target[where] = value
    assert rejected(event).startswith(reason)


def test_every_example_event_of_the_conformance_scenario_is_valid() -> None:
    events = jsoncodec.loads((EXAMPLES / "events.json").read_bytes())
    assert len(events) == 723
    for raw in events:
        event = validate_event(raw)
        assert (event.source, event.id, event.data) == (raw["source"], raw["id"], raw["data"])
        assert event.time.utcoffset() is not None and event.time.utcoffset().total_seconds() == 0


INVALID_ATTRIBUTES = ["id", "time", "time", "data.contract_id", "data", "source", "data.amount"]


@pytest.mark.parametrize(("index", "attribute"), list(enumerate(INVALID_ATTRIBUTES)))
def test_every_invalid_example_is_rejected_naming_the_attribute(index: int, attribute: str) -> None:
    raw = jsoncodec.loads((EXAMPLES / "invalid.json").read_bytes())[index]
    assert rejected(raw).startswith(f"{attribute}: ")
    assert rejected(raw, require_specversion=True).startswith("specversion: ")


# --- properties ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: JSON has no integer limit
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=10),
    st.sampled_from(["\ud800", "a\x00b", "\U0001f600"]),  # a lone surrogate, NUL, an emoji
    st.sampled_from(["2026-11-20", "2026-11-20T10:00:00Z", "1e5", "12.50", "EUR", "legal"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_attribute_names = st.sampled_from(
    ["specversion", "id", "source", "type", "time", "correlationid", "subject", "traceparent"]
)
_field_names = st.sampled_from(sorted({f.name for fs in EVENT_TYPES.values() for f in fs}))


@st.composite
def _near_valid_events(draw: st.DrawFn) -> Any:
    """Mostly valid events with a few attributes and data fields replaced by arbitrary JSON, so
    that the property reaches every check, not only the first."""
    event = make_event(draw(st.sampled_from([*sorted(EVENT_TYPES), "other.type"])))
    event["data"].update(draw(st.dictionaries(_field_names, _json, max_size=3)))
    event["data"]["vendor_note"] = draw(_json)
    event.update(draw(st.dictionaries(_attribute_names | st.text(max_size=5), _json, max_size=2)))
    return event


@settings(max_examples=300)
@given(raw=_json | _near_valid_events(), require=st.booleans())
def test_validation_only_ever_rejects_and_what_it_accepts_round_trips(
    raw: Any, require: bool
) -> None:
    try:
        event = validate_event(raw, require_specversion=require)
    except EventRejected as rejection:
        assert rejection.reason.encode("utf-8")
        assert "\x00" not in rejection.reason
        return
    assert event.time.utcoffset() is not None and event.time.utcoffset().total_seconds() == 0
    assert len(event.payload_hash) == 64
    assert jsoncodec.loads(jsoncodec.dumps(event.data)) == event.data


@given(value=st.decimals(allow_nan=False, allow_infinity=False))
def test_decimals_round_trip_exactly_through_the_json_codec(value: Decimal) -> None:
    back = jsoncodec.loads(jsoncodec.dumps({"amount": value}))["amount"]
    assert back == value
    if isinstance(back, Decimal):
        assert back.as_tuple() == value.as_tuple()
    else:  # an integral value without exponent reads back as int: same digits
        assert str(back) == str(value).removeprefix("-" if value.is_zero() else "")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"id": "x" * 256}, "id: at most 255 characters"),
        ({"source": "erp/" + "n" * 252}, "source: at most 255 characters"),
        ({"correlationid": "c" * 256}, "correlationid: at most 255 characters"),
        ({"type": "t" * 101}, "type: at most 100 characters"),
        ({"data": {"contract_id": "C" * 256}}, "data.contract_id: at most 255 characters"),
        ({"data": {"contract_id": "C", "region": "r" * 256}}, "data.region: at most 255"),
        ({"type": "custom.thing", "data": {"project_id": "P" * 256}}, "data.project_id: at most"),
    ],
)
def test_identifiers_longer_than_their_columns_are_rejected(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EventRejected) as rejected:
        validate_event(make_event(**overrides))
    assert rejected.value.reason.startswith(reason)


def test_identifiers_at_the_limit_are_valid() -> None:
    event = validate_event(make_event(id="x" * 255, correlationid="c" * 255))
    assert len(event.id) == 255
