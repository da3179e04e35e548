"""The mapping engine (collector/mapping.py, docs/mapping.md): paths, conditions, values, every
conversion, strict validation of preset files, and the Ironclad and DocuSign presets on their
samples (tests/fixtures/presets/<preset>/<name>.json -> <name>.expected.json)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.mapping import (
    MappingError,
    PresetError,
    Select,
    UnknownPreset,
    builtin_presets,
    convert,
    delivery_id,
    load_preset,
    map_payload,
    parse_path,
    parse_preset,
)
from core import jsoncodec
from core.events import validate_event

FIXTURES = Path(__file__).parents[1] / "fixtures" / "presets"
MINE = ("ironclad", "docusign")


def preset(**overrides: Any) -> Any:
    document: dict[str, Any] = {
        "name": "demo",
        "title": "Demo",
        "source": "erp/demo",
        "verified": False,
        "docs": [],
        "events": [
            {
                "type": "invoice.posted",
                "id": "{number}",
                "time": "postedAt",
                "data": {"invoice_id": "number"},
            }
        ],
    }
    document.update(overrides)
    return parse_preset(document, origin="demo.yaml")


# --- the presets on their samples ------------------------------------------------------------


def samples(name: str) -> list[Path]:
    return sorted(
        path
        for path in (FIXTURES / name).glob("*.json")
        if not path.name.endswith(".expected.json")
    )


@pytest.mark.parametrize(
    "sample", [s for name in MINE for s in samples(name)], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_each_preset_maps_its_samples_to_the_expected_canonical_events(sample: Path) -> None:
    chosen = load_preset(sample.parent.name)
    expected = json.loads(sample.with_name(sample.stem + ".expected.json").read_text())
    mapped = map_payload(chosen, jsoncodec.loads(sample.read_bytes()))
    assert mapped == expected
    for event in mapped:  # and each is a valid canonical event
        validate_event(event, require_specversion=True)


def test_my_presets_are_builtin_with_their_metadata() -> None:
    assert set(MINE) <= set(builtin_presets())
    ironclad, docusign = load_preset("ironclad"), load_preset("docusign")
    assert (ironclad.source, ironclad.signature, ironclad.verified) == (
        "clm/ironclad",
        "ironclad",
        True,
    )
    assert (docusign.source, docusign.signature, docusign.verified) == (
        "clm/docusign",
        "docusign-connect",
        False,
    )
    assert all(url.startswith("https://") for url in ironclad.docs + docusign.docs)
    for name in MINE:
        assert (FIXTURES / name / "README.md").is_file()


def test_an_unknown_ironclad_event_is_unmappable_and_a_docusign_one_ignored() -> None:
    payload = {"payload": {"event": "workflow_something_new", "workflowID": "w1"}, "timestamp": 1}
    with pytest.raises(MappingError, match="no rule matches"):
        map_payload(load_preset("ironclad"), payload)
    assert map_payload(load_preset("docusign"), {"event": "template-created", "data": {}}) == []


def test_delivery_ids_of_the_presets() -> None:
    headers = {"X-Ironclad-Webhook-Event-Id": "evt-1"}
    assert delivery_id(load_preset("ironclad"), {}, headers) == "evt-1"
    payload = jsoncodec.loads((FIXTURES / "docusign" / "envelope_completed.json").read_bytes())
    assert delivery_id(load_preset("docusign"), payload) == (
        "envelope-completed:a70a5ef2-12c4-4aaf-84c5-b84134dce420:2026-11-23T10:00:00.1234567Z:0"
    )


# --- conversions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2026-11-23T10:00:00Z", "auto", "2026-11-23T10:00:00Z"),
        ("2026-11-23T12:00:00+02:00", "rfc3339", "2026-11-23T10:00:00Z"),
        ("2026-11-23T10:00:00.1234567Z", "auto", "2026-11-23T10:00:00.123456Z"),
        ("2026-11-23T10:00:00.123456789-01:30", "rfc3339", "2026-11-23T11:30:00.123456Z"),
        (1700000000, "auto", "2023-11-14T22:13:20Z"),
        (1700000000, "epoch_s", "2023-11-14T22:13:20Z"),
        ("1700000000", "epoch_s", "2023-11-14T22:13:20Z"),
        (Decimal("1700000000.5"), "epoch_s", "2023-11-14T22:13:20.500000Z"),
        (1700000000000, "auto", "2023-11-14T22:13:20Z"),
        (1700000000123, "epoch_ms", "2023-11-14T22:13:20.123000Z"),
        ("/Date(1700000000000)/", "auto", "2023-11-14T22:13:20Z"),
        ("/Date(1700000000000+0100)/", "odata", "2023-11-14T22:13:20Z"),
        ("/Date(1700000000000-0530)/", "auto", "2023-11-14T22:13:20Z"),
        ("2026-11-23", "auto", "2026-11-23T00:00:00Z"),
        ("2026-11-23", "date", "2026-11-23T00:00:00Z"),
    ],
)
def test_datetime_conversions(value: Any, fmt: str, expected: str) -> None:
    assert convert(value, "datetime", fmt) == expected


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        ("2026-11-23T10:00:00", "auto"),  # no offset: refused, never guessed
        ("2026-11-23T10:00:00", "rfc3339"),
        ("23/11/2026", "auto"),
        ("2026-02-30", "date"),
        ("/Date(abc)/", "odata"),
        ("2026-11-23T10:00:00Z", "epoch_ms"),
        (True, "auto"),
        ({"at": 1}, "auto"),
    ],
)
def test_datetime_conversions_refuse(value: Any, fmt: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        convert(value, "datetime", fmt)


@pytest.mark.parametrize(
    ("value", "conversion", "expected"),
    [
        (Decimal("125000.00"), "decimal", "125000.00"),
        (125000, "decimal", "125000"),
        ("125000.50", "decimal", "125000.50"),
        (" -3.10 ", "decimal", "-3.10"),
        ("2026-11-23T22:30:00-05:00", "date", "2026-11-24"),
        ("2026-11-23", "date", "2026-11-23"),
        ("/Date(1700000000000)/", "date", "2023-11-14"),
        (1700000000, "date", "2023-11-14"),
        (True, "bool", True),
        ("yes", "bool", True),
        ("FALSE", "bool", False),
        ("0", "bool", False),
        (1, "bool", True),
        (42, "string", "42"),
        (Decimal("1.50"), "string", "1.50"),
        (False, "string", "false"),
        ("12", "int", 12),
        (Decimal("12.0"), "int", 12),
        (7, "int", 7),
        ({"kept": [1]}, "json", {"kept": [1]}),
    ],
)
def test_scalar_conversions(value: Any, conversion: str, expected: Any) -> None:
    result = convert(value, conversion)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "conversion"),
    [
        ("1,250.50", "decimal"),
        ("12e3", "decimal"),
        (True, "decimal"),
        (Decimal("NaN"), "decimal"),
        ("maybe", "bool"),
        (2, "bool"),
        ("1.5", "int"),
        (True, "int"),
        ([1], "string"),
    ],
)
def test_scalar_conversions_refuse(value: Any, conversion: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        convert(value, conversion)


def test_decimal_is_never_a_float_end_to_end() -> None:
    chosen = preset(
        events=[
            {
                "type": "invoice.posted",
                "id": {"const": "x"},
                "time": {"const": "2026-11-23T10:00:00Z"},
                "data": {"invoice_id": {"const": "i"}, "amount": {"path": "a", "as": "decimal"}},
            }
        ]
    )
    [event] = map_payload(chosen, jsoncodec.loads(b'{"a": 0.1000000000000000055511151231257827}'))
    assert event["data"]["amount"] == "0.1000000000000000055511151231257827"


# --- paths, conditions, values ---------------------------------------------------------------


def test_paths_with_index_star_quotes_and_roots() -> None:
    payload = {
        "d": {"results": [{"Id": "a", "x": {"odata.etag": "W1"}}, {"Id": "b"}, {"Id": None}]},
        "env": "prod",
    }
    rule = {
        "type": "invoice.posted",
        "id": "{d.results[0].Id}-{$headers.x-delivery}",
        "time": {"const": "2026-11-23T10:00:00Z"},
        "data": {
            "invoice_id": "d.results[1].Id",
            "all_ids": "d.results[*].Id",
            "also_all": "d.results.*.Id",
            "etag": 'd.results[0].x."odata.etag"',
            "env": "$payload.env",
            "whole": {"path": "$", "optional": True},
            "missing": {"path": "d.results[9].Id", "optional": True},
        },
    }
    [event] = map_payload(preset(events=[rule]), payload, headers={"X-Delivery": "7"})
    assert event["id"] == "a-7"
    data = event["data"]
    assert data["invoice_id"] == "b" and data["all_ids"] == ["a", "b"] == data["also_all"]
    assert data["etag"] == "W1" and data["env"] == "prod" and data["whole"] == payload
    assert "missing" not in data


@pytest.mark.parametrize("bad", ["", "a..b", "a.", "$nope.x", "a[x]", "$headers.a.b", 'a"b"'])
def test_malformed_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_path(bad)


def test_records_conditions_first_match_ignore_and_unmatched() -> None:
    chosen = preset(
        records="value",
        events=[
            {"when": [{"path": "deleted", "exists": True}], "ignore": True},
            {
                "when": [
                    {"path": "Status", "in": ["Posted", "Paid"]},
                    {"path": "Amount", "equals": 10},
                ],
                "type": "invoice.posted",
                "id": "{No}",
                "time": "At",
                "data": {"invoice_id": "No", "amount": {"path": "Amount", "as": "decimal"}},
            },
            {
                "when": [{"path": "Status", "equals": "Disputed"}],
                "type": "invoice.disputed",
                "id": "{No}:disputed",
                "time": {"path": "At", "format": "odata"},
                "data": {"invoice_id": "No"},
            },
        ],
    )
    payload = {
        "value": [
            {"No": "1", "Status": "Posted", "Amount": Decimal("10.0"), "At": "2026-11-23"},
            {"No": "2", "Status": "Disputed", "At": "/Date(1700000000000)/"},
            {"No": "3", "deleted": True},
        ]
    }
    mapped = map_payload(chosen, payload)
    assert [(e["type"], e["id"]) for e in mapped] == [
        ("invoice.posted", "1"),
        ("invoice.disputed", "2:disputed"),
    ]
    assert mapped[0]["data"]["amount"] == "10.0" and mapped[0]["source"] == "erp/demo"
    with pytest.raises(MappingError, match="no rule matches the payload"):
        map_payload(chosen, {"value": [{"No": "4", "Status": "Open"}]})
    ignoring = preset(records="value", unmatched="ignore", events=chosen_rules(chosen))
    assert map_payload(ignoring, {"value": [{"No": "4", "Status": "Open"}]}) == []
    with pytest.raises(MappingError, match="no records at value"):
        map_payload(chosen, {"other": []})
    assert map_payload(chosen, {"value": []}) == []


def chosen_rules(_chosen: Any) -> list[dict[str, Any]]:
    return [{"when": [{"path": "No", "exists": False}], "ignore": True}]


def test_a_payload_array_is_a_list_of_records() -> None:
    chosen = preset()
    payload = [
        {"number": "A", "postedAt": "2026-11-23T10:00:00Z"},
        {"number": "B", "postedAt": 1700000000},
    ]
    assert [e["id"] for e in map_payload(chosen, payload)] == ["A", "B"]


def test_constants_templates_maps_defaults_optional_lists_and_type_from_a_field() -> None:
    rule = {
        "type": {
            "path": "kind",
            "map": {"signed": "contract.signed", "ended": "contract.terminated"},
        },
        "id": {"template": "C-{contract.no}"},
        "source": {"path": "instance", "map": {"emea": "clm/acme/emea"}, "default": "clm/acme"},
        "time": {"path": ["signedAt", "createdAt"]},
        "correlationid": {"path": "corr", "optional": True},
        "data": {
            "contract_id": {"path": "contract.no", "as": "string"},
            "channel": {"const": "webhook"},
            "currency": {"path": "cur", "default": "EUR"},
            "subcontract": {"path": "sub", "as": "bool", "optional": True},
            "start_date": {"path": "start", "as": "date", "format": "odata"},
            "approver_role": {"path": "role", "map": {"LEG": "legal"}, "default": "finance"},
            "milestones": {
                "list": "ms",
                "optional": True,
                "item": {
                    "milestone_id": {"path": "id", "as": "string"},
                    "amount": {"path": "amt", "as": "decimal"},
                    "due_date": {"path": "due", "as": "date", "optional": True},
                    "contract_id": "$payload.contract.no",
                },
            },
        },
    }
    chosen = preset(source="clm/acme", events=[rule])
    payload = {
        "kind": "signed",
        "instance": "emea",
        "contract": {"no": 42},
        "createdAt": "2026-11-23T10:00:00+01:00",
        "sub": "no",
        "start": "/Date(1767225600000)/",
        "role": "OTHER",
        "ms": [{"id": 1, "amt": Decimal("10.50"), "due": "2026-12-01"}, {"id": 2, "amt": 5}],
    }
    [event] = map_payload(chosen, payload)
    assert event == {
        "specversion": "1.0",
        "type": "contract.signed",
        "id": "C-42",
        "source": "clm/acme/emea",
        "time": "2026-11-23T09:00:00Z",
        "data": {
            "contract_id": "42",
            "channel": "webhook",
            "currency": "EUR",
            "subcontract": False,
            "start_date": "2026-01-01",
            "approver_role": "finance",
            "milestones": [
                {
                    "milestone_id": "1",
                    "amount": "10.50",
                    "due_date": "2026-12-01",
                    "contract_id": 42,
                },
                {"milestone_id": "2", "amount": "5", "contract_id": 42},
            ],
        },
    }
    with pytest.raises(MappingError, match=r"'other' at kind is not one of"):
        map_payload(chosen, {**payload, "kind": "other"})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"number": None}, r"events\[0\], the payload: id: nothing at template \{number\}"),
        (
            {"postedAt": "yesterday"},
            r"events\[0\], the payload: time: postedAt: 'yesterday' is not a date-time",
        ),
        ({"postedAt": "2026-11-23T10:00:00"}, r"postedAt.*not a date-time"),
    ],
)
def test_a_required_value_that_is_absent_or_wrong_names_rule_field_and_path(
    change: dict[str, Any], reason: str
) -> None:
    payload = {"number": "A", "postedAt": "2026-11-23T10:00:00Z", **change}
    with pytest.raises(MappingError, match=reason):
        map_payload(preset(), payload)


def test_an_absent_data_field_names_the_data_key() -> None:
    chosen = preset(
        events=[
            {
                "type": "invoice.posted",
                "id": {"const": "x"},
                "time": {"const": "2026-11-23T10:00:00Z"},
                "data": {"invoice_id": "inv.no", "lines": {"list": "ls", "item": {"a": "amt"}}},
            }
        ]
    )
    with pytest.raises(MappingError, match=r"data\.invoice_id: nothing at inv\.no"):
        map_payload(chosen, {"ls": [{"amt": 1}]})
    with pytest.raises(MappingError, match=r"data\.lines: \[1\]\.a: nothing at amt"):
        map_payload(chosen, {"inv": {"no": 1}, "ls": [{"amt": 1}, {}]})
    with pytest.raises(MappingError, match="ls is not a list"):
        map_payload(chosen, {"inv": {"no": 1}, "ls": {"amt": 1}})


# --- list elements by key, several events per record, patterns, alternative records -----------


def test_a_list_element_is_selected_by_a_key() -> None:
    record = {
        "InputParameters": [
            {"key": "Other", "value": {}},
            {
                "key": "Target",
                "value": {
                    "Attributes": [
                        {"key": "name", "value": "ACME"},
                        {"key": "accountnumber", "value": "CUST-1"},
                        {"key": "statecode", "value": {"Value": 0}},
                        {"key": "accountnumber", "value": "second, never reached"},
                    ]
                },
            },
        ],
        "lines": [{"no": 1, "amt": "5"}, {"no": 2, "amt": "7"}, {"flag": True, "amt": "9"}],
        "links": [{"rel": "next", "href": "n"}, {"rel": "self", "href": "s"}],
    }
    target = "InputParameters[key=Target].value.Attributes"
    rule = {
        "type": "customer.synced",
        "id": "{" + target + "[key=accountnumber].value}",
        "time": {"const": "2026-11-23T10:00:00Z"},
        "data": {
            "number": f"{target}[key=accountnumber].value",
            "state": {"path": f"{target}[ key = statecode ].value.Value", "as": "int"},
            "quoted": f'{target}[key="name"].value',
            "second_line": "lines[no=2].amt",  # numbers compare as their text
            "flagged": "lines[flag=true].amt",
            "self": "links[rel=self].href",
            "missing": {"path": f"{target}[key=nope].value", "optional": True},
            "not_a_list": {"path": "links[0][rel=self]", "optional": True},
        },
    }
    [event] = map_payload(preset(events=[rule]), record)
    assert event["id"] == "CUST-1"
    assert event["data"] == {
        "number": "CUST-1",
        "state": 0,
        "quoted": "ACME",
        "second_line": "7",
        "flagged": "9",
        "self": "s",
    }
    assert parse_path("a[key=x.y]").steps[1] == Select("key", "x.y")
    for bad in ("a[key=]", "a[=x]", "a[key=x", "a[key=x]b"):
        with pytest.raises(ValueError, match=r"."):
            parse_path(bad)


def test_continue_gives_several_events_for_one_record() -> None:
    created = {
        "when": [{"path": "Status", "in": ["00", "10"]}],
        "continue": True,
        "type": "project.created",
        "id": "{Id}:created",
        "time": "At",
        "data": {"project_id": "Id"},
    }
    activated = {
        "when": [{"path": "Status", "equals": "10"}],
        "type": "project.activated",
        "id": "{Id}:activated",
        "time": "At",
        "data": {"project_id": "Id"},
    }
    other = {"type": "project.activated", "id": "{Id}:other", "time": "At", "data": {}}
    chosen = preset(records="d.results", events=[created, activated, other])
    at = "2026-11-23T10:00:00Z"
    payload = {"d": {"results": [{"Id": "P1", "Status": "00", "At": at},
                                 {"Id": "P2", "Status": "10", "At": at}]}}  # fmt: skip
    mapped = [event["id"] for event in map_payload(chosen, payload)]
    # P1: created, then (continue) activated does not match, then the catch-all matches and ends
    assert mapped == ["P1:created", "P1:other", "P2:created", "P2:activated"]
    # an ignore rule after a continue rule ends the record's rules
    ignoring = preset(events=[created, {"when": [{"path": "Id", "equals": "P2"}], "ignore": True},
                              activated])  # fmt: skip
    assert [e["id"] for e in map_payload(ignoring, {"Id": "P2", "Status": "10", "At": at})] == [
        "P2:created"
    ]
    # a record that only a continue rule matches is matched (not unmatched)
    alone = preset(events=[created])
    assert len(map_payload(alone, {"Id": "P3", "Status": "00", "At": at})) == 1


def test_matches_prefix_and_not_in_conditions_and_captures_in_templates() -> None:
    chosen = preset(
        events=[
            {"when": [{"path": "status", "not_in": ["COMPLETE", "ERROR"]}], "ignore": True},
            {
                "when": [
                    {
                        "path": "links[rel=self].href",
                        "matches": r"/record/v1/(?P<type>[a-z]+)/(?P<id>\d+)$",
                    },
                    {"path": "process", "prefix": ["sw.", "syncwatch."]},
                ],
                "type": "invoice.posted",
                "id": "{$match.type}:{$match.id}",
                "time": {"const": "2026-11-23T10:00:00Z"},
                "data": {
                    "record_type": "$match.type",
                    "lines": {"list": "lines", "item": {"kind": "$match.type", "n": "n"}},
                },
            },
            {
                "when": [{"path": "code", "matches": "^4\\d\\d$"}],  # numbers as their text
                "type": "invoice.disputed",
                "id": {"template": "code-{code}"},
                "time": {"const": "2026-11-23T10:00:00Z"},
                "data": {},
            },
        ],
        unmatched="ignore",
    )
    href = "https://x.suitetalk.api.netsuite.com/services/rest/record/v1/invoice/5012"
    record = {
        "status": "COMPLETE",
        "links": [{"rel": "self", "href": href}],
        "process": "syncwatch.invoice",
        "lines": [{"n": 1}],
    }
    [event] = map_payload(chosen, record)
    assert event["id"] == "invoice:5012"
    assert event["data"] == {"record_type": "invoice", "lines": [{"kind": "invoice", "n": 1}]}
    assert map_payload(chosen, {**record, "status": "RUNNING"}) == []  # not_in: ignored
    assert map_payload(chosen, {**record, "status": None, "code": 1}) == []  # absent: not_in holds
    assert map_payload(chosen, {**record, "process": "other"}) == []  # prefix fails
    assert map_payload(chosen, {**record, "links": []}) == []  # absent: matches fails
    [disputed] = map_payload(chosen, {"status": "ERROR", "code": 404})
    assert disputed["id"] == "code-404"
    assert map_payload(chosen, {"status": "ERROR", "code": {"x": 404}}) == []  # not text


def test_records_may_name_alternative_paths() -> None:
    rule = {"type": "invoice.posted", "id": "{No}", "time": {"const": "2026-11-23T10:00:00Z"},
            "data": {}}  # fmt: skip
    chosen = preset(records=["d.results", "d"], events=[rule])
    assert [e["id"] for e in map_payload(chosen, {"d": {"results": [{"No": 1}, {"No": 2}]}})] == [
        "1",
        "2",
    ]
    assert [e["id"] for e in map_payload(chosen, {"d": {"No": 3}})] == ["3"]
    with pytest.raises(MappingError, match=r"no records at d\.results or d"):
        map_payload(chosen, {"value": []})
    assert chosen.records.text == "d.results"
    assert [p.text for p in chosen.records_alternatives] == ["d"]


# --- strict validation of preset files -------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"colour": "red"}, "demo.yaml: colour: unknown key"),
        ({"name": "Bad Name"}, "demo.yaml: name: must be lowercase"),
        ({"source": "ironclad"}, "demo.yaml: source: must be KIND/NAME"),
        ({"verified": "yes"}, "demo.yaml: verified: must be true or false"),
        ({"verified": True, "docs": []}, "demo.yaml: verified: true needs"),
        ({"docs": ["http://insecure"]}, "demo.yaml: docs: must be a list of https"),
        ({"signature": "md5"}, "demo.yaml: signature: must be one of"),
        ({"records": "a..b"}, "demo.yaml: records: path"),
        ({"unmatched": "drop"}, "demo.yaml: unmatched: must be reject or ignore"),
        ({"events": []}, "demo.yaml: events: must be a non-empty list"),
        ({"events": [{"type": "x", "id": "i", "data": {}}]}, r"events\[0\]\.time: is required"),
        (
            {"events": [{"type": "x", "id": "i", "time": "t", "data": {}, "extra": 1}]},
            r"events\[0\]: unknown key\(s\) extra",
        ),
        (
            {
                "events": [
                    {
                        "type": "x",
                        "id": "i",
                        "time": "t",
                        "data": {"a": {"path": "p", "as": "float"}},
                    }
                ]
            },
            r"events\[0\]\.data\.a\.as: must be one of",
        ),
        (
            {
                "events": [
                    {"type": "x", "id": "i", "time": "t", "data": {"a": {"path": "p", "const": 1}}}
                ]
            },
            r"events\[0\]\.data\.a: give exactly one of",
        ),
        (
            {
                "events": [
                    {
                        "type": "x",
                        "id": "i",
                        "time": "t",
                        "data": {"a": {"path": "p", "format": "odata"}},
                    }
                ]
            },
            r"data\.a\.format: applies only with as: date",
        ),
        (
            {"events": [{"when": [{"path": "p", "equals": 1, "in": [1]}], "ignore": True}]},
            r"events\[0\]\.when\[0\]: a condition has path and exactly one",
        ),
        (
            {"events": [{"when": [{"path": "p", "in": []}], "ignore": True}]},
            r"events\[0\]\.when\[0\]\.in: must be a non-empty list",
        ),
        (
            {"events": [{"ignore": True, "type": "x"}]},
            r"events\[0\]: an ignore rule has only when",
        ),
        (
            {"events": [{"type": "x", "id": "{a:>3}", "time": "t", "data": {}}]},
            r"events\[0\]\.id: template field",
        ),
        (
            {"events": [{"type": "x", "id": "i", "time": "t", "data": {"l": {"list": "p"}}}]},
            r"data\.l\.item: a list needs item",
        ),
        (
            {"events": [{"when": [{"path": "p", "matches": "("}], "ignore": True}]},
            r"events\[0\]\.when\[0\]\.matches: is not a valid regular expression",
        ),
        (
            {"events": [{"when": [{"path": "p", "prefix": ""}], "ignore": True}]},
            r"events\[0\]\.when\[0\]\.prefix: must be a non-empty text",
        ),
        (
            {"events": [{"when": [{"path": "p", "not_in": []}], "ignore": True}]},
            r"events\[0\]\.when\[0\]\.not_in: must be a non-empty list",
        ),
        (
            {"events": [{"when": [{"path": "$match.x", "exists": True}], "ignore": True}]},
            r"events\[0\]\.when\[0\]\.path: a condition cannot test \$match",
        ),
        (
            {
                "events": [
                    {
                        "when": [{"path": "p", "matches": "(?P<a>x)"}],
                        "type": "x",
                        "id": "{$match.b}",
                        "time": "t",
                        "data": {},
                    }
                ]
            },
            r"events\[0\]\.id: \$match\.b: no condition of this rule has a matches",
        ),
        (
            {
                "events": [
                    {"type": "x", "id": "i", "time": "t", "data": {"a": "$match.a"}},
                ]
            },
            r"events\[0\]\.data\.a: \$match\.a: no condition",
        ),
        (
            {"events": [{"type": "x", "id": "i", "time": "t", "data": {}, "continue": "yes"}]},
            r"events\[0\]\.continue: must be true or false",
        ),
        (
            {"events": [{"ignore": True, "continue": True}]},
            r"events\[0\]: an ignore rule has only when",
        ),
        ({"records": []}, "demo.yaml: records: must name at least one path"),
        ({"records": ["d", "$headers.x"]}, "demo.yaml: records: is a path in the payload"),
        ({"records": "a[key=]"}, "demo.yaml: records: path"),
    ],
)
def test_a_bad_preset_is_refused_naming_file_and_key(
    override: dict[str, Any], message: str
) -> None:
    with pytest.raises(PresetError, match=message):
        preset(**override)


def test_load_preset_from_a_directory_overrides_builtin_and_checks_the_file_name(
    tmp_path: Path,
) -> None:
    document = yaml.safe_load((Path("collector/presets/ironclad.yaml")).read_text())
    document["title"] = "Our Ironclad"
    (tmp_path / "ironclad.yaml").write_text(yaml.safe_dump(document))
    assert load_preset("ironclad", [tmp_path]).title == "Our Ironclad"
    assert load_preset("ironclad").title != "Our Ironclad"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(
        PresetError, match=r"other\.yaml: name: is 'ironclad' but the file is other"
    ):
        load_preset("other", [tmp_path])
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(PresetError, match=r"broken\.yaml: is not valid YAML"):
        load_preset("broken", [tmp_path])
    with pytest.raises(UnknownPreset, match="no preset 'nope'"):
        load_preset("nope", [tmp_path])
    with pytest.raises(UnknownPreset):
        load_preset("../etc/passwd")


def test_every_builtin_preset_loads() -> None:
    for name in builtin_presets():
        assert load_preset(name).name == name


def test_the_example_of_docs_mapping_md_is_a_valid_preset_and_maps() -> None:
    text = (Path(__file__).parents[2] / "docs" / "mapping.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    example = parse_preset(yaml.safe_load(block), origin="docs/mapping.md")
    payload = {
        "payload": {
            "event": "workflow_completed",
            "workflowID": "W1",
            "completedAt": "/Date(1700000000000+0100)/",
            "attributes": {
                "value": {"amount": Decimal("1000.00")},
                "milestones": [{"id": "M1", "amount": 500, "dueDate": "2026-12-01"}],
            },
        }
    }
    [event] = map_payload(example, payload, headers={"webhook-id": "msg_1"})
    assert event["id"] == "msg_1" and event["type"] == "contract.signed"
    assert event["data"]["contract_value"] == "1000.00" and event["data"]["currency"] == "USD"
    validate_event(event, require_specversion=True)
