"""Probes: flows, findings, the probe runner's state; events by resolved correlation ID.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")
_key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index(
        op.f("ix_events_resolved_correlation_id"), "events", ["resolved_correlation_id"]
    )
    op.create_table(
        "flows",
        sa.Column("flow_id", sa.String(700), nullable=False),
        sa.Column("flow_type", sa.String(100), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=False),
        sa.Column("subkey", sa.String(255)),
        sa.Column("t0", UTCDateTime(), nullable=False),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("cancelled_at", UTCDateTime()),
        sa.Column("next_check_at", UTCDateTime()),
        sa.Column("legal_entity", sa.String(255)),
        sa.Column("region", sa.String(255)),
        sa.Column("service_line", sa.String(255)),
        sa.Column("value", sa.String(64)),
        sa.Column("currency", sa.String(3)),
        sa.Column("facts", _json, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name=op.f("pk_flows")),
    )
    for columns in (
        ["flow_type", "t0"],
        ["flow_type", "deadline_at"],
        ["flow_type", "completed_at"],
        ["next_check_at"],
        ["correlation_id"],
    ):
        op.create_index(op.f("ix_flows_" + "_".join(columns)), "flows", columns)

    op.create_table(
        "findings",
        sa.Column("id", _key, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("flow_id", sa.String(700), nullable=False),
        sa.Column("key", sa.String(255), nullable=False, server_default=""),
        sa.Column("queue", sa.String(50), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("details", _json),
        sa.Column("acknowledged_at", UTCDateTime()),
        sa.Column("acknowledged_by", sa.String(255)),
        sa.Column("assignee", sa.String(255)),
        sa.Column("assigned_at", UTCDateTime()),
        sa.Column("resolved_at", UTCDateTime()),
        sa.Column("resolved_by", sa.String(255)),
        sa.Column("resolution", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_findings")),
        sa.UniqueConstraint("kind", "flow_id", "key", name=op.f("uq_findings_kind_flow_id_key")),
    )
    op.create_index(op.f("ix_findings_queue_resolved_at"), "findings", ["queue", "resolved_at"])
    op.create_index(op.f("ix_findings_flow_id"), "findings", ["flow_id"])

    op.create_table(
        "probe_state",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_cycle_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_probe_state")),
    )


def downgrade() -> None:
    op.drop_table("probe_state")
    op.drop_table("findings")
    op.drop_table("flows")
    op.drop_index(op.f("ix_events_resolved_correlation_id"), table_name="events")
