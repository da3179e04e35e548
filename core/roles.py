"""The roles of api.md. A key has one or more; ``admin`` may do everything."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    INGEST = "ingest"
    VIEWER = "viewer"
    FINANCE_OPS = "finance_ops"
    LEGAL_OPS = "legal_ops"
    PMO = "pmo"
    ONCALL = "oncall"
    ALERTMANAGER = "alertmanager"
    ADMIN = "admin"


ALL_ROLES = tuple(Role)

#: Roles that may read what ``viewer`` reads (api.md: the queue roles and oncall "read" too).
READERS = frozenset(
    {Role.VIEWER, Role.FINANCE_OPS, Role.LEGAL_OPS, Role.PMO, Role.ONCALL, Role.ADMIN}
)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {value!r}; known roles: {known}") from None
