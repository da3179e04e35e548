"""dashboard/tables.py: the API's items as table rows people read."""

from __future__ import annotations

from dashboard import tables


def test_instants_are_shown_in_utc_to_the_minute_or_the_second() -> None:
    assert tables.when("2026-12-04T17:02:44.330720Z") == "2026-12-04 17:02 UTC"
    assert tables.when("2026-12-04T18:02:44+01:00", seconds=True) == "2026-12-04 17:02:44 UTC"
    assert tables.when(None) == ""
    # the text sorts by time
    earlier, later = tables.when("2026-11-09T23:59:00Z"), tables.when("2026-11-10T00:00:00Z")
    assert earlier < later


def test_money_is_exact_with_separators_and_never_a_float() -> None:
    assert tables.money("146500.00") == "146,500.00"
    assert tables.money("12345678901234567.89") == "12,345,678,901,234,567.89"
    assert tables.money("0.1") == "0.10"
    assert tables.money("146500", "EUR") == "146,500.00 EUR"
    assert tables.money(None) == ""


def test_rows_keep_the_field_names_and_show_each_kind_of_value() -> None:
    items = [
        {
            "flow_id": "contract_onboarding:Q2C-1",
            "age_seconds": 4630233.044,
            "value_at_risk": "146500.00",
            "currency": "GBP",
            "opened_at": "2026-11-14T22:44:16Z",
            "time": "2026-11-14T22:44:16.5Z",
            "assignee": None,
            "aging": "gt_7d",
            "extra": "not shown",
        },
        {"flow_id": "contract_onboarding:Q2C-2", "age_seconds": None, "value_at_risk": None},
    ]
    columns = ("flow_id", "age_seconds", "value_at_risk", "opened_at", "time", "assignee", "aging")
    assert tables.rows(items, columns) == [
        {
            "flow_id": "contract_onboarding:Q2C-1",
            "age_seconds": 53.6,
            "value_at_risk": "146,500.00 GBP",
            "opened_at": "2026-11-14 22:44 UTC",
            "time": "2026-11-14 22:44:16 UTC",
            "assignee": "",
            "aging": "> 7 d",
        },
        {
            "flow_id": "contract_onboarding:Q2C-2",
            "age_seconds": None,
            "value_at_risk": "",
            "opened_at": "",
            "time": "",
            "assignee": "",
            "aging": "",
        },
    ]
    assert tables.headers(("flow_id", "age_seconds", "unknown")) == {
        "flow_id": "Flow",
        "age_seconds": "Age (days)",
        "unknown": "unknown",
    }


def test_a_findings_details_fit_one_line() -> None:
    assert tables.details({"differences": ["missing M3", "amount M1: 100.00 != 97.50"]}) == (
        "differences: missing M3, amount M1: 100.00 != 97.50"
    )
    assert tables.details({"invoice_id": "INV-1", "amendment_id": "A1"}) == (
        "invoice_id: INV-1; amendment_id: A1"
    )
    assert tables.details({"stage": None}) == "stage: "
    assert tables.details(None) == tables.details({}) == ""
    assert tables.rows([{"details": {"missing": ["currency"]}}], ["details"]) == [
        {"details": "missing: currency"}
    ]
