"""The built-in vendor mapping presets (collector/presets/*.yaml) against vendor-shaped samples.

Each sample ``tests/fixtures/presets/<preset>/<sample>.json`` (shaped after the public vendor
document named in that directory's README.md) is mapped with ``load_preset`` + ``map_payload`` and
must give EXACTLY the canonical events of ``<sample>.expected.json`` (a list), every one of them
valid by the project's own canonical validation (core.events.validate_event); or, when the
expected file is ``{"rejected": "<part of the reason>"}``, the sample must be refused with a
MappingError giving that reason (it would go to the dead-letter store). Pure: no database."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from collector.mapping import MappingError, load_preset, map_payload, parse_path
from core import jsoncodec
from core.events import validate_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "presets"

#: The presets of this suite: name -> (canonical source, verified against a vendor document).
PRESETS: dict[str, tuple[str, bool]] = {
    "netsuite": ("erp/netsuite", False),
    "sap_s4hana_events": ("erp/sap-s4hana", False),
    "sap_s4hana_odata": ("erp/sap-s4hana", False),
    "dynamics365": ("erp/dynamics365", True),
    "mulesoft": ("middleware/mulesoft", False),
    "boomi": ("middleware/boomi", True),
    "workato": ("middleware/workato", True),
}

MIDDLEWARE_TYPES = {"integration.succeeded", "integration.failed", "integration.dead_lettered"}


def _samples() -> list[tuple[str, Path]]:
    found = []
    for name in PRESETS:
        for sample in sorted((FIXTURES / name).glob("*.json")):
            if not sample.name.endswith(".expected.json"):
                found.append((name, sample))
    return found


SAMPLES = _samples()


def _expected(sample: Path) -> Any:
    return jsoncodec.loads(sample.with_name(sample.stem + ".expected.json").read_bytes())


def _map(name: str, sample: Path) -> list[dict[str, Any]]:
    return map_payload(load_preset(name), jsoncodec.loads(sample.read_bytes()))


def _plain(value: Any) -> Any:
    """JSON as written (decimals as their text), so that 12500.00 and "12500.00" never mix."""
    return jsoncodec.loads(jsoncodec.dumps(value))


@pytest.mark.parametrize(
    ("name", "sample"), SAMPLES, ids=[f"{name}/{path.stem}" for name, path in SAMPLES]
)
def test_sample_maps_to_exactly_the_expected_events(name: str, sample: Path) -> None:
    expected = _expected(sample)
    if isinstance(expected, dict):
        with pytest.raises(MappingError) as refused:
            _map(name, sample)
        assert expected["rejected"] in refused.value.reason
        return
    events = _map(name, sample)
    assert _plain(events) == _plain(expected)
    for event in events:
        validated = validate_event(event)
        assert validated.known_type, event["type"]
        assert validated.source == PRESETS[name][0]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_has_mapped_samples_and_a_cited_readme(name: str) -> None:
    directory = FIXTURES / name
    samples = [path for preset, path in SAMPLES if preset == name]
    assert samples, f"no samples for {name}"
    for sample in samples:
        assert sample.with_name(sample.stem + ".expected.json").is_file(), sample
    assert any(isinstance(_expected(sample), list) and _expected(sample) for sample in samples)
    readme = (directory / "README.md").read_text(encoding="utf-8")
    preset = load_preset(name)
    for url in preset.docs:
        assert url in readme, f"{name}/README.md does not cite {url}"
    assert ("verified: true" if preset.verified else "verified: false") in readme


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_metadata(name: str) -> None:
    preset = load_preset(name)
    source, verified = PRESETS[name]
    assert preset.name == name
    assert preset.source == source
    assert preset.verified is verified
    assert preset.docs and all(url.startswith("https://") for url in preset.docs)
    assert preset.signature is None
    assert preset.notes  # each preset says what it maps and what it cannot


@pytest.mark.parametrize("name", ["boomi", "workato", "mulesoft"])
def test_middleware_presets_give_only_integration_events_with_step_and_execution_id(
    name: str,
) -> None:
    events = [event for preset, sample in SAMPLES if preset == name
              if isinstance(_expected(sample), list) for event in _map(name, sample)]  # fmt: skip
    assert {event["type"] for event in events} <= MIDDLEWARE_TYPES
    assert events
    for event in events:
        assert event["data"]["step"] in {
            "customer.synced", "project.created", "billing_plan.created", "project.activated",
            "billing_plan.updated", "milestone.completed", "invoice.posted", "invoice.disputed",
            "purchase_order.created",
        }  # fmt: skip
        assert event["data"]["execution_id"]


# --- vendor time formats: OData /Date(ms)/ and 7-digit fractions -------------------------------


def test_sap_odata_dates_and_datetimeoffsets_are_converted_to_utc() -> None:
    events = _map("sap_s4hana_odata", FIXTURES / "sap_s4hana_odata" / "enterprise_projects.json")
    created, created_released, activated = events
    # CreationDateTime "/Date(1795166130000+0000)/" (Edm.DateTimeOffset)
    assert created["time"] == "2026-11-20T09:15:30Z"
    # ProjectStartDate "/Date(1795392000000)/" (Edm.DateTime holding a date)
    assert created["data"]["start_date"] == "2026-11-23"
    # LastChangeDateTime "/Date(1795507331123+0000)/": milliseconds are kept
    assert activated["time"] == "2026-11-24T08:02:11.123000Z"
    # a project already released (10) gives project.created (its CreationDateTime) too
    assert created_released["type"] == "project.created"
    assert created_released["time"] == "2026-11-19T14:00:00Z"
    assert created_released["data"]["project_id"] == activated["data"]["project_id"]


def test_dataverse_operation_time_is_converted_from_odata_date() -> None:
    (event,) = _map("dynamics365", FIXTURES / "dynamics365" / "dataverse_account_create.json")
    # OperationCreatedOn "\/Date(1795083072000+0000)\/" (JSON-escaped slashes)
    assert event["time"] == "2026-11-19T10:11:12Z"


def test_finance_and_operations_seven_digit_fraction_and_odata_fallback() -> None:
    directory = FIXTURES / "dynamics365"
    (iso,) = _map("dynamics365", directory / "fo_sales_invoice_posted.json")
    # EventTimeIso8601 "2026-11-25T16:03:12.4563127Z": 7 digits, truncated to microseconds
    assert iso["time"] == "2026-11-25T16:03:12.456312Z"
    assert validate_event(iso).time.microsecond == 456312
    (fallback,) = _map("dynamics365", directory / "fo_sales_invoice_posted_no_iso_time.json")
    # EventTime "/Date(1795622592000)/" when EventTimeIso8601 is missing
    assert fallback["time"] == "2026-11-25T16:03:12Z"
    # InvoiceDate "/Date(1795564800000)/" as a date
    assert fallback["data"]["invoice_date"] == "2026-11-25"


# --- the presets refuse what they cannot map (it goes to the dead-letter store) ----------------


def test_workato_job_of_an_unlisted_recipe_is_refused_naming_recipe_id() -> None:
    payload = jsoncodec.loads((FIXTURES / "workato" / "job_succeeded.json").read_bytes())
    payload["recipe_id"] = 99999
    with pytest.raises(MappingError) as refused:
        map_payload(load_preset("workato"), payload)
    assert "recipe_id" in refused.value.reason


def test_mulesoft_notification_without_step_is_refused() -> None:
    payload = jsoncodec.loads((FIXTURES / "mulesoft" / "notification_succeeded.json").read_bytes())
    del payload["customProperties"]["syncwatchStep"]
    with pytest.raises(MappingError) as refused:
        map_payload(load_preset("mulesoft"), payload)
    assert "syncwatchStep" in refused.value.reason


def test_netsuite_invoice_with_a_non_decimal_total_is_refused() -> None:
    payload = jsoncodec.loads((FIXTURES / "netsuite" / "invoice.json").read_bytes())
    payload["total"] = "12,500.00"
    with pytest.raises(MappingError) as refused:
        map_payload(load_preset("netsuite"), payload)
    assert "total" in refused.value.reason


def test_boomi_single_record_is_mapped_as_the_pull_path_maps_it() -> None:
    """The pull path maps each record alone (records: $); the QueryResult wrapper is optional."""
    answer = jsoncodec.loads((FIXTURES / "boomi" / "execution_records.json").read_bytes())
    preset = dataclasses.replace(load_preset("boomi"), records=parse_path("$"))
    mapped = [event for record in answer["result"] for event in map_payload(preset, record)]
    assert _plain(mapped) == _plain(_expected(FIXTURES / "boomi" / "execution_records.json"))
