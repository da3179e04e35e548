"""Replays of stuck flows and the alerts delivered to the Alertmanager receiver.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.tables import BigIntKey, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "replays",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("flow_id", sa.String(700), nullable=False),
        sa.Column("flow_type", sa.String(100)),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("stage", sa.String(100)),
        sa.Column("source", sa.String(255)),
        sa.Column("execution_id", sa.String(255)),
        sa.Column("failure_event_id", sa.String(255)),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("alert_delivery_id", sa.BigInteger()),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("refusal", sa.String(50)),
        sa.Column("message", sa.Text()),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("request", _json),
        sa.Column("response", _json),
        sa.Column("follow_up_until", UTCDateTime()),
        sa.Column("concluded_at", UTCDateTime()),
        sa.Column("stage_reached_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replays")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_replays_idempotency_key")),
    )
    op.create_index(op.f("ix_replays_flow_id_requested_at"), "replays", ["flow_id", "requested_at"])
    op.create_index(op.f("ix_replays_requested_at"), "replays", ["requested_at"])
    op.create_index(op.f("ix_replays_outcome"), "replays", ["outcome"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("alertname", sa.String(255)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("labels", _json, nullable=False),
        sa.Column("received_by", sa.String(255), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("processed_at", UTCDateTime()),
        sa.Column("result", _json),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
        sa.UniqueConstraint(
            "fingerprint", "starts_at", name=op.f("uq_alert_deliveries_fingerprint_starts_at")
        ),
    )
    op.create_index(op.f("ix_alert_deliveries_state"), "alert_deliveries", ["state"])


def downgrade() -> None:
    op.drop_table("alert_deliveries")
    op.drop_table("replays")
