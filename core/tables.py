"""SQLAlchemy Core tables of the store. The migrations in ``core/migrations`` create them; these
definitions are what the code queries with and must match the latest migration (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every database. SQLite keeps naive UTC text (which
    sorts and compares correctly); PostgreSQL keeps ``timestamptz``. Naive values are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; times must be timezone-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


#: An auto-incrementing 64-bit key; SQLite needs plain INTEGER for its rowid alias.
BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "events",
    metadata,
    # The ingest sequence number: probes pick up new events by it (see docs/store.md).
    sa.Column("seq", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("time", UTCDateTime(), nullable=False),
    sa.Column("correlation_id", sa.String(255)),  # as sent
    sa.Column("resolved_correlation_id", sa.String(255)),  # as resolved by the probes
    sa.Column("contract_id", sa.String(255)),  # fallback keys, copied from data for lookups
    sa.Column("project_id", sa.String(255)),
    sa.Column("subject", sa.Text()),
    sa.Column("traceparent", sa.String(55)),
    sa.Column("specversion", sa.String(10), nullable=False),
    sa.Column("data", json_type(), nullable=False),
    sa.Column("extensions", json_type()),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("source", "event_id"),
    sa.Index(None, "type", "time"),
    sa.Index(None, "correlation_id"),
    sa.Index(None, "contract_id"),
    sa.Index(None, "project_id"),
    sa.Index(None, "resolved_correlation_id"),
    sa.Index(None, "source", "time"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("channel", sa.String(50), nullable=False),  # api, cli, ...
    sa.Column("content_type", sa.String(255)),
    sa.Column("batch_index", sa.Integer()),
    sa.Column("source", sa.String(255)),  # whatever could be read from the rejected input
    sa.Column("event_id", sa.String(255)),
    sa.Column("type", sa.String(255)),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
    # pending, retried (re-ingested: accepted or duplicate)
    sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_attempt_at", UTCDateTime()),
    sa.Column("retried_by", sa.String(255)),
    sa.Column("event_seq", sa.BigInteger()),  # the stored event after a successful retry
    sa.Index(None, "status", "received_at"),
    sa.Index(None, "received_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("roles", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime()),
    sa.Column("revoked_at", UTCDateTime()),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target_type", sa.String(50), nullable=False),
    sa.Column("target_id", sa.String(255)),
    sa.Column("details", json_type()),
    sa.Index(None, "at"),
    sa.Index(None, "target_type", "target_id"),
)

# --- probes (migration 0002) ---

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("flow_id", sa.String(700), primary_key=True),
    sa.Column("flow_type", sa.String(100), nullable=False),
    sa.Column("correlation_id", sa.String(255), nullable=False),
    sa.Column("subkey", sa.String(255)),
    sa.Column("t0", UTCDateTime(), nullable=False),
    sa.Column("deadline_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime()),
    sa.Column("cancelled_at", UTCDateTime()),
    # completed_at or cancelled_at (a flow has at most one): the flow is open as of T when
    # t0 <= T and ended_at is NULL or after T, which the KPIs count through this index
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("duration_us", sa.BigInteger()),  # completed_at - t0 in microseconds, when complete
    # the next instant at which time alone can change the flow's state (a pending stage deadline
    # not yet passed when last evaluated); the probe runner's deadline sweep reads it
    sa.Column("next_check_at", UTCDateTime()),
    sa.Column("legal_entity", sa.String(255)),
    sa.Column("region", sa.String(255)),
    sa.Column("service_line", sa.String(255)),
    sa.Column("value", sa.String(64)),  # exact decimal text
    sa.Column("currency", sa.String(3)),
    sa.Column("facts", json_type(), nullable=False),  # stages, integration marks, trace links
    sa.Column("facts_hash", sa.String(32)),  # probes.facts_codec.facts_hash: skip unchanged flows
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "flow_type", "t0"),
    sa.Index(None, "flow_type", "deadline_at"),
    sa.Index(None, "flow_type", "completed_at"),
    sa.Index(None, "next_check_at"),
    sa.Index(None, "correlation_id"),
    sa.Index(None, "ended_at", "t0", "flow_type"),  # covers counting open flows
)

findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("flow_id", sa.String(700), nullable=False),
    # distinguishes findings of one kind on one flow: the stage of a stuck finding, the invoice
    # of an amendment conflict, "" otherwise
    sa.Column("key", sa.String(255), nullable=False, server_default=""),
    sa.Column("queue", sa.String(50), nullable=False),
    sa.Column("opened_at", UTCDateTime(), nullable=False),  # an event-time instant
    sa.Column("details", json_type()),
    sa.Column("acknowledged_at", UTCDateTime()),
    sa.Column("acknowledged_by", sa.String(255)),
    sa.Column("assignee", sa.String(255)),
    sa.Column("assigned_at", UTCDateTime()),
    sa.Column("resolved_at", UTCDateTime()),
    sa.Column("resolved_by", sa.String(255)),  # a key's name, or "syncwatch" when by itself
    sa.Column("resolution", sa.Text()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("kind", "flow_id", "key"),
    sa.Index(None, "queue", "resolved_at"),
    sa.Index(None, "flow_id"),
    sa.Index(None, "kind", "opened_at"),
    sa.Index(None, "kind", "resolved_by"),
)

probe_state = sa.Table(
    "probe_state",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_cycle_at", UTCDateTime()),
)

# --- KPIs, metrics and traces (migration 0003) ---

flow_outcomes = sa.Table(
    "flow_outcomes",
    metadata,
    # One row per flow ever evaluated; what is decided here is never revised (metrics.md: the
    # deadline outcome is counted once, when decided; a completion's duration once, when seen).
    sa.Column("flow_id", sa.String(700), primary_key=True),
    sa.Column("flow_type", sa.String(100), nullable=False),
    sa.Column("deadline_outcome", sa.String(10)),  # met, missed; NULL while undecided
    sa.Column("deadline_decided_at", UTCDateTime()),
    sa.Column("duration_seconds", sa.Float()),  # completed_at - T0, when the completion was seen
    sa.Column("completion_seen_at", UTCDateTime()),
    # Traces (OpenTelemetry): the flow's state as last evaluated when it is complete, stuck or
    # cancelled; the state last exported; and whether an export is waiting.
    sa.Column("trace_state", sa.String(20)),
    sa.Column("traced_state", sa.String(20)),
    sa.Column("trace_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index(None, "trace_pending"),
)

flow_stages = sa.Table(
    "flow_stages",
    metadata,
    # Each stage of each flow, derived from its facts and rewritten with them: the funnel and the
    # stage misses of kpis.md are counted from it by SQL.
    sa.Column("flow_id", sa.String(700), primary_key=True),
    sa.Column("idx", sa.Integer(), primary_key=True),  # the stage's position in its flow type
    sa.Column("flow_type", sa.String(100), nullable=False),
    sa.Column("stage", sa.String(100), nullable=False),
    sa.Column("t0", UTCDateTime(), nullable=False),
    sa.Column("deadline_at", UTCDateTime(), nullable=False),
    sa.Column("reached_at", UTCDateTime()),
    sa.Column("ended_at", UTCDateTime()),  # the flow's completed_at or cancelled_at
    sa.Index(None, "flow_type", "deadline_at"),
    sa.Index(None, "flow_type", "t0"),
)

stuck_spans = sa.Table(
    "stuck_spans",
    metadata,
    # When each flow is stuck, on which stage, in which queue (probes.evaluate.StuckSpan): stuck
    # at T when opened_at < T, since <= T and (until IS NULL or T < until). Derived from the
    # facts and rewritten with them, so "stuck as of T" is one indexed query for any T.
    sa.Column("flow_id", sa.String(700), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("flow_type", sa.String(100), nullable=False),
    sa.Column("stage", sa.String(100), nullable=False),
    sa.Column("queue", sa.String(50), nullable=False),
    sa.Column("opened_at", UTCDateTime(), nullable=False),  # the stage's deadline
    sa.Column("since", UTCDateTime(), nullable=False),
    sa.Column("until", UTCDateTime()),
    # the flow's, copied so that counting stuck flows reads this table alone
    sa.Column("legal_entity", sa.String(255)),
    sa.Column("region", sa.String(255)),
    sa.Column("service_line", sa.String(255)),
    sa.Column("value", sa.String(64)),
    sa.Column("currency", sa.String(3)),
    sa.Index(None, "until"),
)

metric_totals = sa.Table(
    "metric_totals",
    metadata,
    # Running totals behind the counters and histograms of /metrics, kept up to date by the probe
    # runner in the transaction that decides what they count, so a scrape reads a few rows and
    # every replica exposes the same values.
    sa.Column("metric", sa.String(100), primary_key=True),
    sa.Column("flow_type", sa.String(100), primary_key=True),
    sa.Column("label", sa.String(100), primary_key=True),  # outcome, bucket bound, "sum"
    sa.Column("value", sa.Float(), nullable=False, server_default="0"),
    sa.Column("exemplar", json_type()),  # the latest observation in a bucket
)

# --- replays and the Alertmanager receiver (migration 0004) ---

replays = sa.Table(
    "replays",
    metadata,
    # One row per replay asked for, refused ones included (api.md, Replay; docs/replays.md).
    # outcome: refused | sending | sent | failed | effective | ineffective. A row in ``sending``
    # is being sent; after a crash it stays so and is never sent again by itself.
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("flow_id", sa.String(700), nullable=False),
    sa.Column("flow_type", sa.String(100)),
    sa.Column("correlation_id", sa.String(255)),
    sa.Column("stage", sa.String(100)),  # the stuck stage when asked
    sa.Column("source", sa.String(255)),  # the middleware source of the failure event
    sa.Column("execution_id", sa.String(255)),
    sa.Column("failure_event_id", sa.String(255)),
    sa.Column("trigger", sa.String(20), nullable=False),  # api | cli | alert
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("idempotency_key", sa.String(255), unique=True),
    sa.Column("alert_delivery_id", sa.BigInteger()),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("refusal", sa.String(50)),  # the guardrail's code when refused
    sa.Column("message", sa.Text()),  # why refused or failed
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),  # refused, sent or failed at
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("request", json_type()),  # what was sent, credentials redacted
    sa.Column("response", json_type()),  # the last answer: status and an excerpt
    sa.Column("follow_up_until", UTCDateTime()),
    sa.Column("concluded_at", UTCDateTime()),  # effective or ineffective at
    sa.Column("stage_reached_at", UTCDateTime()),
    sa.Index(None, "flow_id", "requested_at"),
    sa.Index(None, "requested_at"),
    sa.Index(None, "outcome"),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    # One row per alert (fingerprint and start time) that Alertmanager delivered: the same alert
    # delivered again finds its row and does nothing more. state: pending | working | done |
    # ignored (not an automatic-replay alert, or resolved).
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("starts_at", UTCDateTime(), nullable=False),
    sa.Column("alertname", sa.String(255)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("labels", json_type(), nullable=False),
    sa.Column("received_by", sa.String(255), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("claimed_at", UTCDateTime()),
    sa.Column("processed_at", UTCDateTime()),
    sa.Column("result", json_type()),
    sa.UniqueConstraint("fingerprint", "starts_at"),
    sa.Index(None, "state"),
)

# --- weekly reports and claimed job runs (migration 0005) ---

reports = sa.Table(
    "reports",
    metadata,
    # The weekly KPI report, one row per ISO week (in the report's time zone) and format; kept
    # for ``reports.keep_weeks`` weeks (docs/reports.md).
    sa.Column("week", sa.String(8), primary_key=True),  # 2026-W48
    sa.Column("format", sa.String(4), primary_key=True),  # html, pdf, md
    sa.Column("content", sa.LargeBinary(), nullable=False),
    sa.Column("media_type", sa.String(100), nullable=False),
    sa.Column("size_bytes", sa.Integer(), nullable=False),
    sa.Column("generated_at", UTCDateTime(), nullable=False),
    sa.Column("generated_by", sa.String(255), nullable=False),  # scheduler, api:<key>, cli
)

job_runs = sa.Table(
    "job_runs",
    metadata,
    # One row per run of a scheduled job that must run once however many replicas run it: the
    # replica whose insert of (job, scheduled_for) succeeds does the work (PITFALLS.md).
    sa.Column("job", sa.String(50), primary_key=True),
    sa.Column("scheduled_for", UTCDateTime(), primary_key=True),
    sa.Column("claimed_by", sa.String(255), nullable=False),
    sa.Column("claimed_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("outcome", sa.String(20)),  # done, failed
    sa.Column("details", json_type()),
)

# --- source integrations: webhook deliveries and pull cursors (migration 0006) ---

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    # One row per signed webhook delivery accepted, so that a replayed delivery (the same id
    # again, inside the timestamp tolerance) is refused; rows older than the tolerance may go.
    sa.Column("preset", sa.String(50), primary_key=True),
    sa.Column("delivery_id", sa.String(255), primary_key=True),
    sa.Column("signed_at", UTCDateTime()),  # the delivery's own timestamp, when signed with one
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index(None, "received_at"),
)

source_cursors = sa.Table(
    "source_cursors",
    metadata,
    # Where each pull connector or reconciliation left off (a modified-since instant or the
    # source's own page token), so that a restart resumes instead of starting over.
    sa.Column("connector", sa.String(100), primary_key=True),
    sa.Column("cursor", sa.Text()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("state", json_type()),  # anything else the connector keeps (last error, counts)
)
