"""``probes.correlate.resolve`` against events.md, "Resolving the correlation ID": the explicit
correlationid, the fallback keys in their order, chained links, earliest-wins for competing links,
and independence from arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.events import CanonicalEvent, validate_event
from probes.correlate import resolve
from tests.support.builders import make_event

T = datetime(2026, 11, 20, 10, tzinfo=UTC)


def ev(
    type_: str,
    hours: float | str,
    corr: str | None,
    id_: str,
    source: str = "erp/netsuite",
    **data: Any,
) -> CanonicalEvent:
    """A validated event at T + ``hours`` (or at that RFC 3339 time) with exactly ``data``;
    ``corr=None``: no correlationid."""
    time = hours if isinstance(hours, str) else (T + timedelta(hours=hours)).isoformat()
    raw = make_event(type_, id=id_, source=source, time=time, correlationid=corr, data=data)
    if corr is None:
        del raw["correlationid"]
    return validate_event(raw)


def signed(
    hours: float | str, corr: str | None, id_: str, contract: str, source: str = "clm/ironclad"
) -> CanonicalEvent:
    return ev("contract.signed", hours, corr, id_, source, contract_id=contract)


def resolved(events: list[CanonicalEvent]) -> dict[str, str | None]:
    """The resolution, by event id (ids are unique in these tests)."""
    result = resolve(events)
    assert set(result) == {(e.source, e.id) for e in events}
    return {event_id: corr for (_, event_id), corr in result.items()}


def test_explicit_correlationid_wins_over_every_fallback_key() -> None:
    events = [
        signed(0, "Q2C-A", "s1", "C1"),
        ev("project.created", 1, "Q2C-B", "p1", contract_id="C1", project_id="P1"),
        ev("project.activated", 2, "Q2C-C", "a1", project_id="P1", contract_id="C1"),
    ]
    assert resolved(events) == {"s1": "Q2C-A", "p1": "Q2C-B", "a1": "Q2C-C"}


def test_fallback_through_contract_id() -> None:
    events = [
        signed(0, "Q2C-A", "s1", "C1"),
        signed(0, "Q2C-B", "s2", "C2"),
        ev("contract.terminated", 5, None, "t1", "clm/ironclad", contract_id="C2"),
        ev("customer.synced", 1, None, "c1", contract_id="C1", customer_id="CU-1"),
    ]
    assert resolved(events) == {"s1": "Q2C-A", "s2": "Q2C-B", "t1": "Q2C-B", "c1": "Q2C-A"}


def test_fallback_through_project_id() -> None:
    events = [
        ev("project.created", 1, "Q2C-A", "p1", project_id="P1"),
        ev("project.activated", 3, None, "a1", project_id="P1"),
        ev("billing_plan.created", 2, None, "b1", project_id="P1", milestones=[]),
    ]
    assert resolved(events) == {"p1": "Q2C-A", "a1": "Q2C-A", "b1": "Q2C-A"}


def test_links_chain_contract_id_then_project_id() -> None:
    # the project.activated comes (in time and in the list) before the project.created that links
    # its project_id, and that project.created itself is resolved only through its contract_id
    events = [
        ev("project.activated", 1, None, "a1", project_id="P1"),
        ev("project.created", 2, None, "p1", contract_id="C1", project_id="P1"),
        signed(3, "Q2C-A", "s1", "C1"),
    ]
    assert resolved(events) == {"a1": "Q2C-A", "p1": "Q2C-A", "s1": "Q2C-A"}
    # arriving first, alone or with the project.created but not its contract: uncorrelated
    assert resolved(events[:1]) == {"a1": None}
    assert resolved(events[:2]) == {"a1": None, "p1": None}


def test_only_the_linking_types_link_a_key() -> None:
    # contract_id links through contract.signed only, project_id through project.created only
    events = [
        ev("project.created", 0, "Q2C-A", "p1", project_id="P1", contract_id="C9"),
        ev("billing_plan.created", 0, "Q2C-B", "b1", project_id="P2", milestones=[]),
        ev("contract.terminated", 1, None, "t1", "clm/ironclad", contract_id="C9"),
        ev("project.activated", 1, None, "a1", project_id="P2"),
    ]
    assert resolved(events) == {"p1": "Q2C-A", "b1": "Q2C-B", "t1": None, "a1": None}


# Two contract.signed link C1 to different correlation IDs: (time, source, id, corr) each.
_COMPETING = {
    "earlier time wins": (
        (1, "clm/a", "s1", "Q2C-X"),
        (0, "clm/b", "s2", "Q2C-Y"),
    ),
    "the instant counts, not the written offset": (
        ("2026-11-20T10:00:00Z", "clm/a", "s1", "Q2C-X"),
        ("2026-11-20T11:00:00+02:00", "clm/b", "s2", "Q2C-Y"),  # 09:00 UTC
    ),
    "a microsecond earlier wins": (
        ("2026-11-20T10:00:00.000001Z", "clm/a", "s1", "Q2C-X"),
        ("2026-11-20T10:00:00Z", "clm/b", "s2", "Q2C-Y"),
    ),
    "tie on time: smaller source": (
        (0, "clm/b", "s1", "Q2C-X"),
        (0, "clm/a", "s2", "Q2C-Y"),
    ),
    "tie on time and source: smaller id, as a string": (
        (0, "clm/a", "s2", "Q2C-X"),
        (0, "clm/a", "s10", "Q2C-Y"),
    ),
}


@pytest.mark.parametrize("first, second", _COMPETING.values(), ids=_COMPETING.keys())
@pytest.mark.parametrize("reverse", [False, True], ids=["listed", "reversed"])
def test_competing_contract_links_earliest_wins(
    first: tuple[Any, str, str, str], second: tuple[Any, str, str, str], reverse: bool
) -> None:
    links = [signed(at, corr, id_, "C1", source) for at, source, id_, corr in (first, second)]
    follower = ev("contract.terminated", 9, None, "t1", "clm/ironclad", contract_id="C1")
    events = [*links[::-1], follower] if reverse else [*links, follower]
    assert resolved(events)["t1"] == "Q2C-Y"


@pytest.mark.parametrize(
    ("chained_at", "explicit_at", "expected"),
    [(1, 2, "Q2C-A"), (2, 1, "Q2C-B"), (1, 1, "Q2C-A")],  # tie: ("erp/a", ...) < ("erp/b", ...)
)
def test_competing_project_links_chained_or_explicit(
    chained_at: int, explicit_at: int, expected: str
) -> None:
    events = [
        signed(0, "Q2C-A", "s1", "C1"),
        ev("project.created", chained_at, None, "p1", "erp/a", contract_id="C1", project_id="P1"),
        ev("project.created", explicit_at, "Q2C-B", "p2", "erp/b", project_id="P1"),
        ev("project.activated", 5, None, "a1", project_id="P1"),
    ]
    assert resolved(events) == {"s1": "Q2C-A", "p1": "Q2C-A", "p2": "Q2C-B", "a1": expected}


@pytest.mark.parametrize(
    ("contract_id", "expected"),
    [
        ("C1", "Q2C-A"),  # both keys resolve: contract_id comes first
        ("C9", "Q2C-B"),  # no contract.signed with C9: project_id
        ("C2", "Q2C-B"),  # C2's contract.signed is itself unresolved: project_id
    ],
)
def test_contract_id_takes_precedence_over_project_id(contract_id: str, expected: str) -> None:
    events = [
        signed(5, "Q2C-A", "s1", "C1"),
        signed(0, None, "s2", "C2"),
        ev("project.created", 0, "Q2C-B", "p1", project_id="P1"),
        ev(
            "invoice.posted",
            9,
            None,
            "i1",
            invoice_id="I1",
            contract_id=contract_id,
            project_id="P1",
        ),
    ]
    assert resolved(events)["i1"] == expected


def test_unresolvable_events_stay_none() -> None:
    events = [
        signed(0, "Q2C-A", "s1", "C1"),
        ev("customer.synced", 1, None, "c1", customer_id="CU-1"),  # no fallback key at all
        ev("project.activated", 1, None, "a1", project_id="P9"),  # no project.created with P9
        signed(0, None, "s2", "C2"),  # a contract.signed without correlationid links nothing
        ev("project.created", 1, None, "p2", contract_id="C2", project_id="P2"),
        ev("project.activated", 2, None, "a2", project_id="P2"),  # chain of unresolved events
    ]
    assert resolved(events) == {
        "s1": "Q2C-A", "c1": None, "a1": None, "s2": None, "p2": None, "a2": None,
    }  # fmt: skip


# A fixed set exercising every rule at once, and its hand-computed resolution.
_MIXED = [
    signed(0, "Q2C-A", "sA", "CA"),
    signed(1, "Q2C-B", "sB", "CB"),
    signed(-1, "Q2C-Z", "sZ", "CB", "clm/docusign"),  # earlier: CB links to Q2C-Z
    ev("project.created", 2, None, "pA", contract_id="CA", project_id="PA"),  # chained: Q2C-A
    ev("project.created", 3, "Q2C-B", "pB", project_id="PA"),  # later than pA: PA stays Q2C-A
    ev("project.created", 2, "Q2C-B", "pB2", project_id="PB"),
    ev("project.activated", 0, None, "aA", project_id="PA"),
    ev("project.activated", 4, None, "aB", project_id="PB"),
    ev("contract.terminated", 8, None, "tB", "clm/ironclad", contract_id="CB"),
    ev("billing_plan.created", 5, None, "bX", contract_id="CA", project_id="PB", milestones=[]),
    ev("customer.synced", 1, None, "cU", customer_id="CU-9"),
    ev("project.activated", 6, None, "aU", project_id="PU"),
]
_MIXED_EXPECTED = {
    "sA": "Q2C-A", "sB": "Q2C-B", "sZ": "Q2C-Z", "pA": "Q2C-A", "pB": "Q2C-B", "pB2": "Q2C-B",
    "aA": "Q2C-A", "aB": "Q2C-B", "tB": "Q2C-Z", "bX": "Q2C-A", "cU": None, "aU": None,
}  # fmt: skip


def test_mixed_set_hand_computed() -> None:
    assert resolved(_MIXED) == _MIXED_EXPECTED


@given(st.permutations(_MIXED))
def test_any_arrival_order_gives_the_same_resolution(order: list[CanonicalEvent]) -> None:
    assert resolve(order) == resolve(_MIXED)
    assert resolved(order) == _MIXED_EXPECTED
