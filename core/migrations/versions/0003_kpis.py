"""KPIs, metrics and traces: per-flow outcomes decided once, running metric totals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("flows", sa.Column("ended_at", UTCDateTime()))
    op.add_column("flows", sa.Column("duration_us", sa.BigInteger()))
    op.add_column("flows", sa.Column("facts_hash", sa.String(32)))
    op.execute("UPDATE flows SET ended_at = COALESCE(completed_at, cancelled_at)")
    op.create_index(
        op.f("ix_flows_ended_at_t0_flow_type"), "flows", ["ended_at", "t0", "flow_type"]
    )
    op.create_index(op.f("ix_findings_kind_opened_at"), "findings", ["kind", "opened_at"])
    op.create_index(op.f("ix_findings_kind_resolved_by"), "findings", ["kind", "resolved_by"])
    op.create_index(op.f("ix_events_source_time"), "events", ["source", "time"])
    op.create_index(op.f("ix_dead_letters_received_at"), "dead_letters", ["received_at"])
    op.create_table(
        "flow_outcomes",
        sa.Column("flow_id", sa.String(700), nullable=False),
        sa.Column("flow_type", sa.String(100), nullable=False),
        sa.Column("deadline_outcome", sa.String(10)),
        sa.Column("deadline_decided_at", UTCDateTime()),
        sa.Column("duration_seconds", sa.Float()),
        sa.Column("completion_seen_at", UTCDateTime()),
        sa.Column("trace_state", sa.String(20)),
        sa.Column("traced_state", sa.String(20)),
        sa.Column("trace_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("flow_id", name=op.f("pk_flow_outcomes")),
    )
    op.create_index(op.f("ix_flow_outcomes_trace_pending"), "flow_outcomes", ["trace_pending"])
    op.create_table(
        "flow_stages",
        sa.Column("flow_id", sa.String(700), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("flow_type", sa.String(100), nullable=False),
        sa.Column("stage", sa.String(100), nullable=False),
        sa.Column("t0", UTCDateTime(), nullable=False),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("reached_at", UTCDateTime()),
        sa.Column("ended_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("flow_id", "idx", name=op.f("pk_flow_stages")),
    )
    op.create_index(
        op.f("ix_flow_stages_flow_type_deadline_at"), "flow_stages", ["flow_type", "deadline_at"]
    )
    op.create_index(op.f("ix_flow_stages_flow_type_t0"), "flow_stages", ["flow_type", "t0"])
    op.create_table(
        "stuck_spans",
        sa.Column("flow_id", sa.String(700), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("flow_type", sa.String(100), nullable=False),
        sa.Column("stage", sa.String(100), nullable=False),
        sa.Column("queue", sa.String(50), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime()),
        sa.Column("legal_entity", sa.String(255)),
        sa.Column("region", sa.String(255)),
        sa.Column("service_line", sa.String(255)),
        sa.Column("value", sa.String(64)),
        sa.Column("currency", sa.String(3)),
        sa.PrimaryKeyConstraint("flow_id", "seq", name=op.f("pk_stuck_spans")),
    )
    op.create_index(op.f("ix_stuck_spans_until"), "stuck_spans", ["until"])
    op.create_table(
        "metric_totals",
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("flow_type", sa.String(100), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False, server_default="0"),
        sa.Column("exemplar", _json),
        sa.PrimaryKeyConstraint("metric", "flow_type", "label", name=op.f("pk_metric_totals")),
    )


def downgrade() -> None:
    op.drop_table("metric_totals")
    op.drop_index(op.f("ix_stuck_spans_until"), table_name="stuck_spans")
    op.drop_table("stuck_spans")
    op.drop_index(op.f("ix_flow_stages_flow_type_t0"), table_name="flow_stages")
    op.drop_index(op.f("ix_flow_stages_flow_type_deadline_at"), table_name="flow_stages")
    op.drop_table("flow_stages")
    op.drop_index(op.f("ix_flow_outcomes_trace_pending"), table_name="flow_outcomes")
    op.drop_table("flow_outcomes")
    op.drop_index(op.f("ix_dead_letters_received_at"), table_name="dead_letters")
    op.drop_index(op.f("ix_events_source_time"), table_name="events")
    op.drop_index(op.f("ix_findings_kind_resolved_by"), table_name="findings")
    op.drop_index(op.f("ix_findings_kind_opened_at"), table_name="findings")
    op.drop_index(op.f("ix_flows_ended_at_t0_flow_type"), table_name="flows")
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("facts_hash")
        batch.drop_column("duration_us")
        batch.drop_column("ended_at")
