"""OpenTelemetry, switched on by ``tracing.enabled`` (docs/tracing.md). Nothing happens at import.

- :func:`export_pending` exports the traces of the flows whose trace changed (``flow_outcomes``
  rows with ``trace_pending``, set by the probe runner) over OTLP/HTTP, built by the pure
  :mod:`probes.tracing` with deterministic IDs, and clears them only after the collector accepted
  them. The scheduler's ``trace_export`` job runs it (:func:`trace_export_job`).
- :func:`trace_requests` traces the service's own HTTP requests: one SERVER span per request, on a
  TracerProvider of the app's own (never the global one), exported in batches to the same endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import sqlalchemy as sa
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import syncwatch
from core.db import Database
from core.settings import TracingSettings
from core.tables import flow_outcomes, flows
from core.web import utc_now
from probes.facts_codec import facts_from_row
from probes.tracing import FlowSpan, flow_spans

log = logging.getLogger("syncwatch.telemetry")

FLOW_SCOPE = "syncwatch.flows"
HTTP_SCOPE = "syncwatch.http"


def make_resource(tracing: TracingSettings) -> Resource:
    # Resource.create also applies OTEL_RESOURCE_ATTRIBUTES; service.name is ours.
    return Resource.create(
        {SERVICE_NAME: tracing.service_name, SERVICE_VERSION: syncwatch.__version__}
    )


def make_span_exporter(tracing: TracingSettings) -> OTLPSpanExporter:
    """The OTLP/HTTP exporter of the settings. With no ``endpoint`` the exporter reads the
    standard ``OTEL_EXPORTER_OTLP_*`` variables; the headers come from ``headers_env``."""
    return OTLPSpanExporter(
        endpoint=tracing.endpoint,
        headers=tracing.headers() or None,
        timeout=tracing.timeout_seconds,
    )


def _context(trace_id: str, span_id: str, *, remote: bool = False, flags: int = 1) -> SpanContext:
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=remote, trace_flags=TraceFlags(flags)
    )


def _status(span: FlowSpan) -> Status:
    if span.error:
        return Status(StatusCode.ERROR, span.status_message)
    return Status(StatusCode.OK if span.ok else StatusCode.UNSET)


def readable_span(
    span: FlowSpan, resource: Resource, scope: InstrumentationScope | None = None
) -> ReadableSpan:
    """An SDK span with the flow span's fixed IDs, times, attributes, events and links."""
    parent = None if span.parent_span_id is None else _context(span.trace_id, span.parent_span_id)
    return ReadableSpan(
        name=span.name,
        context=_context(span.trace_id, span.span_id),
        parent=parent,
        resource=resource,
        attributes=dict(span.attributes),
        events=[Event(e.name, dict(e.attributes), timestamp=e.time_ns) for e in span.events],
        links=[
            Link(_context(link.trace_id, link.span_id, remote=True, flags=link.trace_flags))
            for link in span.links
        ],
        kind=SpanKind.INTERNAL,
        status=_status(span),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=scope or InstrumentationScope(FLOW_SCOPE, syncwatch.__version__),
    )


@dataclass(frozen=True)
class ExportReport:
    flows: int  # pending flows read
    spans: int  # spans sent
    cleared: int  # flows no longer pending (exported, unless their state changed meanwhile)
    ok: bool  # the collector accepted the spans (True when there was nothing to send)


def _pending(database: Database, limit: int) -> list[Any]:
    query = (
        sa.select(
            flow_outcomes.c.flow_id.label("outcome_flow_id"),
            flow_outcomes.c.trace_state,
            *flows.c,
        )
        .select_from(flow_outcomes.outerjoin(flows, flows.c.flow_id == flow_outcomes.c.flow_id))
        .where(flow_outcomes.c.trace_pending.is_(sa.true()))
        .order_by(flow_outcomes.c.flow_id)
        .limit(limit)
    )
    with database.read() as connection:
        return list(connection.execute(query))


def _clear(database: Database, done: Sequence[tuple[str, str | None]]) -> int:
    """Mark exported, but only rows whose trace_state is still the exported one: a probe cycle
    that changed it meanwhile set trace_pending again for the new state, which must stay."""
    if not done:
        return 0
    statement = (
        sa.update(flow_outcomes)
        .where(
            flow_outcomes.c.flow_id == sa.bindparam("b_flow_id"),
            flow_outcomes.c.trace_state.is_not_distinct_from(sa.bindparam("b_state")),
        )
        .values(traced_state=sa.bindparam("b_state"), trace_pending=False)
    )
    with database.write() as connection:
        result = connection.execute(
            statement, [{"b_flow_id": flow, "b_state": state} for flow, state in done]
        )
    return int(result.rowcount)


def export_pending(
    database: Database,
    exporter: SpanExporter,
    *,
    now: datetime,
    limit: int,
    resource: Resource | None = None,
) -> ExportReport:
    """Export the traces (as of ``now``) of at most ``limit`` flows waiting for an export, in one
    request. On success they are no longer pending; on failure (logged) they all stay pending for
    the next run. A pending row whose flow is gone or has no trace state has nothing to send and
    is cleared; a flow whose T0 is after ``now`` stays pending until it exists."""
    rows = _pending(database, limit)
    resource = resource or make_resource(TracingSettings())
    scope = InstrumentationScope(FLOW_SCOPE, syncwatch.__version__)
    spans: list[ReadableSpan] = []
    done: list[tuple[str, str | None]] = []
    for row in rows:
        if row.flow_id is None or row.trace_state is None:
            done.append((row.outcome_flow_id, row.trace_state))
            continue
        built = flow_spans(facts_from_row(row), now)
        if built:
            spans.extend(readable_span(span, resource, scope) for span in built)
            done.append((row.outcome_flow_id, row.trace_state))
    if spans:
        result = exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            # the exporter logged the cause; never the headers (they hold credentials)
            log.warning(
                "trace export of %d flows (%d spans) failed; they stay pending",
                len(done),
                len(spans),
            )
            return ExportReport(len(rows), len(spans), 0, False)
    cleared = _clear(database, done)
    if spans:
        log.info("exported the traces of %d flows (%d spans)", len(done), len(spans))
    return ExportReport(len(rows), len(spans), cleared, True)


def export_until_idle(
    database: Database,
    exporter: SpanExporter,
    *,
    now: datetime,
    limit: int,
    resource: Resource | None = None,
    max_batches: int = 1000,
) -> list[ExportReport]:
    """Batches of :func:`export_pending` until no full batch is left, an export fails or nothing
    could be cleared (flows that do not exist yet)."""
    reports = []
    for _ in range(max_batches):
        report = export_pending(database, exporter, now=now, limit=limit, resource=resource)
        reports.append(report)
        if not report.ok or report.flows < limit or report.cleared == 0:
            break
    return reports


def trace_export_job(database: Database, tracing: TracingSettings) -> None:
    """The scheduler's ``trace_export`` job. The exporter is made per run and shut down after it,
    so no connection outlives the run. Errors other than a refused export propagate to
    APScheduler, which logs them; the flows stay pending."""
    exporter = make_span_exporter(tracing)
    try:
        export_until_idle(
            database,
            exporter,
            now=utc_now(),
            limit=tracing.batch_flows,
            resource=make_resource(tracing),
        )
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK


# --- the service's own HTTP requests ---


class RequestTracing:
    """ASGI middleware: one SERVER span per HTTP request (``http.request.method``, ``url.path``,
    ``http.route``, ``http.response.status_code``), a child of the incoming W3C ``traceparent``
    when there is one. It shuts its TracerProvider down (exporting what is buffered) when the
    app's lifespan ends."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.provider = provider
        self.tracer = provider.get_tracer(HTTP_SCOPE, syncwatch.__version__)
        self.propagator = TraceContextTextMapPropagator()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._on_shutdown(send))
        elif scope["type"] == "http":
            await self._traced(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                await anyio.to_thread.run_sync(self.provider.shutdown)
            await send(message)

        return wrapped

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() in {b"traceparent", b"tracestate"}
        }
        method = str(scope.get("method", "GET"))
        span = self.tracer.start_span(
            method,
            context=self.propagator.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": str(scope.get("path", "")),
                "url.scheme": str(scope.get("scheme", "http")),
            },
        )
        status_code: int | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, send_and_note)
        except BaseException:
            status_code = status_code or 500  # the server answers 500 for what escapes the app
            raise
        finally:
            # the route template, known once routing ran (never the path: it holds flow IDs)
            template = getattr(scope.get("route"), "path", None)
            if isinstance(template, str):
                span.set_attribute("http.route", template)
                span.update_name(f"{method} {template}")
            if status_code is not None:
                span.set_attribute("http.response.status_code", status_code)
                if status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()


def trace_requests(app: FastAPI, tracing: TracingSettings) -> None:
    """Trace the app's own HTTP requests when ``tracing.enabled`` and ``tracing.requests``."""
    if not (tracing.enabled and tracing.requests):
        return
    provider = TracerProvider(resource=make_resource(tracing), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(make_span_exporter(tracing)))
    app.add_middleware(RequestTracing, provider=provider)
