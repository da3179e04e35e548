"""The canonical event vocabulary of ``spec/events.md``: source kinds, types and their data fields.

Each data field has a *kind* that says what form it must have. A required field (``required=True``)
must be present and not null; an optional field may be absent or null."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FieldKind(Enum):
    ID = "id"  # a non-empty string
    TEXT = "text"  # any string
    DECIMAL = "decimal"  # a decimal as a JSON string ("125000.00") or number; never a bool
    CURRENCY = "currency"  # ISO 4217: three upper-case letters
    DATE = "date"  # YYYY-MM-DD
    DATETIME_OR_DATE = "datetime_or_date"  # RFC 3339 date-time with offset, or a date
    BOOL = "bool"
    APPROVER_ROLE = "approver_role"  # legal, finance or delivery
    ERROR = "error"  # a string or an object: middleware error descriptions vary
    MILESTONES = "milestones"  # a list of objects, see MILESTONE_FIELDS


@dataclass(frozen=True)
class DataField:
    name: str
    kind: FieldKind
    required: bool = False


SOURCE_KINDS = ("clm", "erp", "middleware", "crm", "psa")
APPROVER_ROLES = ("legal", "finance", "delivery")


def _f(name: str, kind: FieldKind, required: bool = False) -> DataField:
    return DataField(name, kind, required)


_ID, _TEXT, _DEC, _CUR = FieldKind.ID, FieldKind.TEXT, FieldKind.DECIMAL, FieldKind.CURRENCY

#: Fields of each milestone object inside ``milestones`` lists.
MILESTONE_FIELDS: tuple[DataField, ...] = (
    _f("milestone_id", _ID, True),
    _f("amount", _DEC),
    _f("due_date", FieldKind.DATE),
)

_INTEGRATION_COMMON = (
    _f("step", _ID, True),
    _f("execution_id", _ID),
    _f("amendment_id", _ID),
    _f("milestone_id", _ID),
)

#: The canonical types and the data fields listed for each (events.md). Unknown fields are kept.
EVENT_TYPES: dict[str, tuple[DataField, ...]] = {
    "contract.signed": (
        _f("contract_id", _ID, True),
        _f("customer_id", _ID),
        _f("contract_value", _DEC),
        _f("currency", _CUR),
        _f("legal_entity", _TEXT),
        _f("region", _TEXT),
        _f("service_line", _TEXT),
        _f("start_date", FieldKind.DATE),
        _f("subcontract", FieldKind.BOOL),
        _f("milestones", FieldKind.MILESTONES),
    ),
    "contract.amended": (
        _f("contract_id", _ID, True),
        _f("amendment_id", _ID, True),
        _f("effective_date", FieldKind.DATETIME_OR_DATE),
        _f("value_delta", _DEC),
    ),
    "contract.terminated": (_f("contract_id", _ID, True),),
    "contract.submitted": (
        _f("contract_id", _ID, True),
        _f("approver_role", FieldKind.APPROVER_ROLE),
    ),
    "contract.approved": (
        _f("contract_id", _ID, True),
        _f("approver_role", FieldKind.APPROVER_ROLE),
    ),
    "contract.renewal_initiated": (_f("contract_id", _ID, True), _f("renewal_id", _ID)),
    "contract.renewed": (_f("contract_id", _ID, True), _f("renewal_id", _ID)),
    "purchase_order.created": (
        _f("purchase_order_id", _ID, True),
        _f("contract_id", _ID),
        _f("supplier_id", _ID),
        _f("amount", _DEC),
        _f("currency", _CUR),
    ),
    "customer.synced": (_f("customer_id", _ID), _f("erp_customer_id", _ID)),
    "project.created": (_f("project_id", _ID, True), _f("contract_id", _ID)),
    "billing_plan.created": (_f("project_id", _ID), _f("milestones", FieldKind.MILESTONES)),
    "project.activated": (_f("project_id", _ID),),
    "billing_plan.updated": (_f("amendment_id", _ID, True), _f("project_id", _ID)),
    "milestone.completed": (
        _f("milestone_id", _ID, True),
        _f("amount", _DEC),
        _f("currency", _CUR),
    ),
    "invoice.posted": (
        _f("invoice_id", _ID, True),
        _f("milestone_id", _ID),
        _f("amount", _DEC),
        _f("currency", _CUR),
        _f("project_id", _ID),
    ),
    "invoice.disputed": (_f("invoice_id", _ID, True),),
    "integration.succeeded": _INTEGRATION_COMMON,
    "integration.failed": (
        *_INTEGRATION_COMMON,
        _f("error", FieldKind.ERROR),
        _f("retryable", FieldKind.BOOL),
    ),
    "integration.dead_lettered": (*_INTEGRATION_COMMON, _f("error", FieldKind.ERROR)),
}

#: Data fields through which an event without ``correlationid`` may be resolved (events.md).
FALLBACK_KEYS = ("contract_id", "project_id")
