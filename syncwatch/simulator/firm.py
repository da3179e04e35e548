"""Firm profiles for the simulator: how many contracts a professional-services firm signs a week,
which CLM, ERP and middleware it runs, and how often each fault happens (docs/simulator.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

#: Every fault the generator can inject, with its weight: a firm's rate of that fault is
#: ``fault_rate * weight``, the probability that one contract shows it.
FAULT_WEIGHTS: Mapping[str, float] = {
    "stuck_stage": 1.0,  # an ERP stage comes days after its deadline, or never
    "middleware_failure": 1.0,  # integration.failed, then a retry succeeds (late)
    "dead_letter": 0.8,  # integration.failed + dead_lettered: the ERP event never comes
    # a dead letter whose cause is data (the ERP refuses the record): the first replay fails
    # again; one after someone fixed the record works
    "data_error": 0.4,
    "duplicate_delivery": 1.0,  # one event delivered twice (same source + id)
    "late_delivery": 1.0,  # one event delivered hours or days after its time
    "out_of_order": 1.0,  # a stage event delivered before the previous stage's
    "erp_clock_skew": 1.5,  # the ERP's times a few minutes behind the CLM's
    "duplicate_project": 0.5,  # two project.created with different project_ids
    "amendment_conflict": 0.5,  # an invoice posted after an amendment that did not propagate
    "term_mismatch": 0.5,  # the billing plan's milestones differ from the contract's
    "missing_correlation": 1.5,  # ERP events without correlationid (fallback keys resolve them)
    "unresolvable_correlation": 0.3,  # no correlationid and a key that resolves to nothing
    "incomplete_contract": 0.6,  # contract.signed without value, currency or legal entity
}
FAULTS: tuple[str, ...] = tuple(FAULT_WEIGHTS)


@dataclass(frozen=True)
class FirmProfile:
    """One firm: ``contracts_per_week`` signed (weekdays), contract values drawn between
    ``min_value`` and ``max_value`` (major units), and ``faults``: fault name -> probability per
    contract (0..1)."""

    name: str
    contracts_per_week: float
    min_value: Decimal
    max_value: Decimal
    clm_sources: tuple[str, ...]
    #: region -> (ERP source, currency, legal entity)
    regions: Mapping[str, tuple[str, str, str]]
    middleware_sources: tuple[str, ...]
    service_lines: tuple[str, ...] = (
        "Advisory",
        "Implementation",
        "Managed Services",
        "Training",
    )
    faults: Mapping[str, float] = field(default_factory=dict)

    def rate(self, fault: str) -> float:
        return self.faults.get(fault, 0.0)

    def with_fault_rate(self, fault_rate: float) -> FirmProfile:
        """Every fault at ``fault_rate * weight`` (capped at 1)."""
        if not 0 <= fault_rate <= 1:
            raise ValueError(f"fault rate must be within 0..1, got {fault_rate}")
        faults = {name: min(1.0, fault_rate * weight) for name, weight in FAULT_WEIGHTS.items()}
        return replace(self, faults=faults)

    def with_faults(self, **rates: float) -> FirmProfile:
        """Only the named faults, at the given rates (every other fault at 0)."""
        unknown = set(rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")
        return replace(self, faults=dict(rates))


DEFAULT_FAULT_RATE = 0.1

_PRESETS: dict[str, FirmProfile] = {
    "small": FirmProfile(
        name="small",
        contracts_per_week=6,
        min_value=Decimal("15000"),
        max_value=Decimal("180000"),
        clm_sources=("clm/docusign",),
        regions={"NA": ("erp/netsuite", "USD", "Northwind Advisory LLC")},
        middleware_sources=("middleware/boomi",),
    ),
    "medium": FirmProfile(
        name="medium",
        contracts_per_week=25,
        min_value=Decimal("40000"),
        max_value=Decimal("750000"),
        clm_sources=("clm/ironclad",),
        regions={
            "NA": ("erp/netsuite", "USD", "Contoso Consulting Inc."),
            "EMEA": ("erp/sap-s4hana", "EUR", "Contoso Consulting GmbH"),
            "UK": ("erp/sap-s4hana", "GBP", "Contoso Consulting Ltd"),
        },
        middleware_sources=("middleware/mulesoft",),
    ),
    "large": FirmProfile(
        name="large",
        contracts_per_week=120,
        min_value=Decimal("80000"),
        max_value=Decimal("3500000"),
        clm_sources=("clm/ironclad", "clm/docusign"),
        regions={
            "NA": ("erp/netsuite", "USD", "Fabrikam Partners Inc."),
            "EMEA": ("erp/sap-s4hana/emea", "EUR", "Fabrikam Partners SE"),
            "UK": ("erp/sap-s4hana/emea", "GBP", "Fabrikam Partners UK Ltd"),
            "APAC": ("erp/sap-s4hana/apac", "AUD", "Fabrikam Partners Pty Ltd"),
        },
        middleware_sources=("middleware/mulesoft", "middleware/boomi"),
    ),
}
SIZES: tuple[str, ...] = tuple(_PRESETS)


def firm_profile(size: str, fault_rate: float = DEFAULT_FAULT_RATE) -> FirmProfile:
    """The preset ``small``, ``medium`` or ``large`` with every fault at ``fault_rate``."""
    try:
        preset = _PRESETS[size]
    except KeyError:
        raise ValueError(f"firm size must be one of {', '.join(SIZES)}, got {size!r}") from None
    return preset.with_fault_rate(fault_rate)
