"""Flow traces exported over OTLP/HTTP with the real exporter to a real local receiver (SQLite and
PostgreSQL): events ingested through the API, the real probe runner marks the flows, and
``export_pending`` sends their spans with deterministic IDs and the event times; a refused export
leaves them pending; a re-export repeats the same IDs; nothing is exported with tracing off. The
service's own HTTP requests are traced when enabled."""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from core.db import Database
from core.settings import ProbeSettings, Settings, TracingSettings
from core.tables import flow_outcomes
from core.web import utc_now
from probes.flowtypes import DEFAULT_FLOW_TYPES
from probes.runner import run_until_idle
from probes.traceids import span_id, trace_id
from syncwatch.app import create_app
from syncwatch.scheduler import make_scheduler
from syncwatch.telemetry import export_pending, export_until_idle, make_resource, trace_export_job
from tests.conftest import bearer
from tests.support.builders import make_event
from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.support.servers import free_port

T = datetime(2026, 11, 2, 9, tzinfo=UTC)
NOW = T + timedelta(days=10)
CORR = "Q2C-OTEL-1"
ONB = f"contract_onboarding:{CORR}"
TP_SIGNED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP_PROJECT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ACTIVATED = T + timedelta(hours=50, microseconds=123456)
STAGE_TIMES = {
    "customer.synced": T + timedelta(hours=1),
    "project.created": T + timedelta(hours=5),
    "billing_plan.created": T + timedelta(hours=30),
    "project.activated": ACTIVATED,
}
TRACING = TracingSettings(enabled=True, service_name="syncwatch-test", timeout_seconds=5)


def ns(at: datetime) -> int:
    return calendar.timegm(at.utctimetuple()) * 10**9 + at.microsecond * 1000


def event(type_: str, at: datetime, data: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    attrs.setdefault("correlationid", CORR)
    return make_event(type_, time=at.isoformat(), data=data, **attrs)


def signed(correlation: str = CORR) -> dict[str, Any]:
    data = {"contract_id": f"CTR-{correlation}", "contract_value": "125000.00", "currency": "EUR"}
    return event("contract.signed", T, data, correlationid=correlation, traceparent=TP_SIGNED)


def complete_events() -> list[dict[str, Any]]:
    return [
        signed(),
        event("customer.synced", STAGE_TIMES["customer.synced"], {"customer_id": "C-1"}),
        event(
            "project.created",
            STAGE_TIMES["project.created"],
            {"project_id": "PRJ-OTEL-1"},
            traceparent=TP_PROJECT,
        ),
        event("billing_plan.created", STAGE_TIMES["billing_plan.created"], {}),
        event("project.activated", ACTIVATED, {}),
    ]


def post(api: TestClient, key: str, events: Sequence[dict[str, Any]]) -> None:
    answer = api.post("/v1/events", json=list(events), headers=bearer(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(events), answer.text


def probe(database: Database, now: datetime = NOW, *, traces: bool = True) -> None:
    run_until_idle(database, DEFAULT_FLOW_TYPES, now=now, traces=traces)


def outcome(database: Database, flow: str) -> Any:
    with database.read() as connection:
        return connection.execute(
            sa.select(flow_outcomes).where(flow_outcomes.c.flow_id == flow)
        ).one()


def set_pending(database: Database, flow: str) -> None:
    with database.write() as connection:
        connection.execute(
            flow_outcomes.update().where(flow_outcomes.c.flow_id == flow).values(trace_pending=True)
        )


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def exporter(receiver: OtlpReceiver) -> Iterator[OTLPSpanExporter]:
    made = OTLPSpanExporter(endpoint=receiver.url, timeout=5)
    yield made
    made.shutdown()  # type: ignore[no-untyped-call]


def export(database: Database, exporter: SpanExporter, now: datetime = NOW) -> Any:
    return export_pending(database, exporter, now=now, limit=10, resource=make_resource(TRACING))


def test_the_flow_trace_has_deterministic_ids_and_the_event_times(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    receiver: OtlpReceiver,
    exporter: OTLPSpanExporter,
) -> None:
    post(api, keys["ingest"], complete_events())
    probe(database)
    before = outcome(database, ONB)
    assert (before.trace_state, before.trace_pending, before.traced_state) == (
        "complete",
        True,
        None,
    )

    report = export(database, exporter)
    assert (report.flows, report.spans, report.cleared, report.ok) == (1, 5, 1, True)
    after = outcome(database, ONB)
    assert (after.trace_pending, after.traced_state) == (False, "complete")

    spans = {span.name: span for span in receiver.spans}
    assert sorted(spans) == sorted(
        ["flow contract_onboarding"] + [f"stage {stage}" for stage in STAGE_TIMES]
    )
    root = spans["flow contract_onboarding"]
    assert {span.trace_id for span in receiver.spans} == {trace_id(ONB)}
    assert root.span_id == span_id(ONB, "flow")
    assert root.parent_span_id == ""
    assert (root.start_ns, root.end_ns) == (ns(T), ns(ACTIVATED))
    assert root.status_code == Status.STATUS_CODE_OK
    assert root.kind == Span.SPAN_KIND_INTERNAL
    assert root.attributes["syncwatch.flow_id"] == ONB
    assert root.attributes["syncwatch.correlation_id"] == CORR
    assert root.attributes["syncwatch.state"] == "complete"
    assert root.attributes["syncwatch.value"] == "125000.00"
    assert sorted(root.links) == sorted(
        [(TP_SIGNED[3:35], TP_SIGNED[36:52]), (TP_PROJECT[3:35], TP_PROJECT[36:52])]
    )
    assert root.resource["service.name"] == "syncwatch-test"
    assert root.scope == "syncwatch.flows"
    for stage, reached in STAGE_TIMES.items():
        span = spans[f"stage {stage}"]
        assert span.span_id == span_id(ONB, f"stage {stage}")
        assert span.parent_span_id == root.span_id
        assert (span.start_ns, span.end_ns) == (ns(T), ns(reached))
        assert span.attributes["syncwatch.stage.late"] is False

    # Marked again (as the runner does when the state changes): the same IDs and times again.
    first = sorted(
        (s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_ns, s.end_ns)
        for s in receiver.spans
    )
    receiver.spans.clear()
    set_pending(database, ONB)
    assert export(database, exporter, NOW + timedelta(days=3)).cleared == 1
    again = sorted(
        (s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_ns, s.end_ns)
        for s in receiver.spans
    )
    assert again == first
    # nothing left pending: the next run sends nothing
    requests = receiver.requests
    assert export(database, exporter).flows == 0
    assert receiver.requests == requests


def test_a_stuck_flow_ends_now_with_its_failure(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    receiver: OtlpReceiver,
    exporter: OTLPSpanExporter,
) -> None:
    failed_at = T + timedelta(hours=10)
    post(
        api,
        keys["ingest"],
        [
            signed(),
            event("customer.synced", T + timedelta(hours=1), {}),
            event(
                "integration.failed", failed_at, {"step": "project.created", "execution_id": "EX-7"}
            ),
        ],
    )
    now = T + timedelta(hours=30)
    probe(database, now)
    assert outcome(database, ONB).trace_state == "stuck"
    assert export(database, exporter, now).ok
    spans = {span.name: span for span in receiver.spans}
    root = spans["flow contract_onboarding"]
    assert root.end_ns == ns(now)
    assert root.status_code == Status.STATUS_CODE_ERROR
    assert root.attributes["syncwatch.stuck_stage"] == "project.created"
    stuck = spans["stage project.created"]
    assert stuck.status_code == Status.STATUS_CODE_ERROR
    assert stuck.end_ns == ns(now)
    assert stuck.events == [
        (
            "integration failure",
            ns(failed_at),
            {
                "syncwatch.integration.source": "middleware/mulesoft",
                "syncwatch.integration.event_id": stuck.events[0][2][
                    "syncwatch.integration.event_id"
                ],
                "syncwatch.integration.execution_id": "EX-7",
            },
        )
    ]

    # It completes later: the runner marks it again and the new state is exported, same IDs.
    later = [
        event(t, at, {"project_id": "PRJ-1"} if t == "project.created" else {})
        for t, at in STAGE_TIMES.items()
        if t != "customer.synced"
    ]
    post(api, keys["ingest"], later)
    probe(database, NOW)
    assert outcome(database, ONB).trace_pending
    receiver.spans.clear()
    assert export(database, exporter).cleared == 1
    root_again = next(s for s in receiver.spans if s.parent_span_id == "")
    assert (root_again.span_id, root_again.end_ns) == (root.span_id, ns(ACTIVATED))
    assert root_again.attributes["syncwatch.state"] == "complete"
    assert outcome(database, ONB).traced_state == "complete"


@pytest.mark.parametrize("failure", ["503", "closed port"])
def test_a_refused_export_leaves_the_flow_pending(
    api: TestClient, keys: dict[str, str], database: Database, failure: str
) -> None:
    post(api, keys["ingest"], complete_events())
    probe(database)
    with otlp_receiver(status=503) as refusing:
        url = refusing.url if failure == "503" else f"http://127.0.0.1:{free_port()}/v1/traces"
        # a short timeout: the exporter gives up instead of backing off for seconds
        exporter = OTLPSpanExporter(endpoint=url, timeout=0.5)
        try:
            report = export(database, exporter)
        finally:
            exporter.shutdown()  # type: ignore[no-untyped-call]
        assert refusing.requests == (1 if failure == "503" else 0)
    assert (report.ok, report.cleared) == (False, 0)
    row = outcome(database, ONB)
    assert (row.trace_pending, row.traced_state, row.trace_state) == (True, None, "complete")


class ChangesStateMeanwhile(SpanExporter):
    """Exports, while a probe cycle (simulated) changes the flow's trace state."""

    def __init__(self, inner: SpanExporter, database: Database) -> None:
        self.inner = inner
        self.database = database

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.database.write() as connection:
            connection.execute(
                flow_outcomes.update()
                .where(flow_outcomes.c.flow_id == ONB)
                .values(trace_state="cancelled", trace_pending=True)
            )
        return self.inner.export(spans)


def test_a_state_changed_during_the_export_stays_pending(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    receiver: OtlpReceiver,
    exporter: OTLPSpanExporter,
) -> None:
    post(api, keys["ingest"], complete_events())
    probe(database)
    report = export(database, ChangesStateMeanwhile(exporter, database))
    assert report.ok and report.cleared == 0
    assert receiver.spans
    row = outcome(database, ONB)
    assert (row.trace_pending, row.trace_state, row.traced_state) == (True, "cancelled", None)


def test_the_export_job_and_the_scheduler(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    settings: Settings,
    receiver: OtlpReceiver,
) -> None:
    post(api, keys["ingest"], complete_events())
    probe(database)
    assert make_scheduler(database, settings, DEFAULT_FLOW_TYPES).get_job("trace_export") is None

    enabled = settings.model_copy(
        update={"tracing": TracingSettings(enabled=True, endpoint=receiver.url)}
    )
    job = make_scheduler(database, enabled, DEFAULT_FLOW_TYPES).get_job("trace_export")
    assert job is not None
    job.func(*job.args)
    assert {span.trace_id for span in receiver.spans} == {trace_id(ONB)}
    assert receiver.spans[0].resource["service.name"] == "syncwatch"
    assert not outcome(database, ONB).trace_pending


def test_with_tracing_off_the_runner_marks_nothing(
    api: TestClient, keys: dict[str, str], database: Database, receiver: OtlpReceiver
) -> None:
    post(api, keys["ingest"], complete_events())
    probe(database, traces=False)
    with database.read() as connection:
        pending = connection.execute(
            sa.select(sa.func.count()).where(flow_outcomes.c.trace_pending.is_(sa.true()))
        ).scalar()
    assert pending == 0
    trace_export_job(database, TracingSettings(enabled=True, endpoint=receiver.url))
    assert receiver.requests == 0


def test_the_export_sends_the_headers_of_headers_env(
    monkeypatch: pytest.MonkeyPatch,
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    receiver: OtlpReceiver,
) -> None:
    post(api, keys["ingest"], complete_events())
    probe(database)
    monkeypatch.setenv("SW_TEST_OTLP_HEADERS", "Authorization=Bearer%20t0ken,X-Scope-OrgID=acme")
    tracing = TracingSettings(
        enabled=True, endpoint=receiver.url, headers_env="SW_TEST_OTLP_HEADERS"
    )
    trace_export_job(database, tracing)
    assert receiver.headers[0]["authorization"] == "Bearer t0ken"
    assert receiver.headers[0]["x-scope-orgid"] == "acme"


# --- the service's own requests ---


def traced_app(settings: Settings, database: Database, endpoint: str, **tracing: Any) -> TestClient:
    options = {"enabled": True, "endpoint": endpoint, **tracing}
    return TestClient(
        create_app(settings.model_copy(update={"tracing": TracingSettings(**options)}), database)
    )


def test_the_service_requests_are_traced(
    settings: Settings, database: Database, keys: dict[str, str], receiver: OtlpReceiver
) -> None:
    incoming = "00-11111111111111111111111111111111-2222222222222222-01"
    with traced_app(settings, database, receiver.url) as client:
        assert client.get("/healthz", headers={"traceparent": incoming}).status_code == 200
        assert client.get(f"/v1/flows/{ONB}").status_code == 401
        assert client.get(f"/v1/flows/{ONB}", headers=bearer(keys["viewer"])).status_code == 404
    # leaving the client ends the lifespan, which shuts the provider down and flushes its spans
    spans = receiver.spans
    assert [(s.name, s.attributes["http.response.status_code"]) for s in spans] == [
        ("GET /healthz", 200),
        ("GET /v1/flows/{flow_id:path}", 401),
        ("GET /v1/flows/{flow_id:path}", 404),
    ]
    health, unauthenticated, _ = spans
    assert health.kind == Span.SPAN_KIND_SERVER
    assert health.attributes["http.request.method"] == "GET"
    assert health.attributes["url.path"] == "/healthz"
    assert health.attributes["http.route"] == "/healthz"
    assert (health.trace_id, health.parent_span_id) == ("1" * 32, "2" * 16)
    assert unauthenticated.parent_span_id == ""
    assert unauthenticated.attributes["url.path"] == f"/v1/flows/{ONB}"
    assert unauthenticated.trace_id != health.trace_id
    assert health.resource["service.name"] == "syncwatch"
    assert health.scope == "syncwatch.http"
    # never the key
    assert all("Bearer" not in str(s.attributes) for s in spans)


@pytest.mark.parametrize("tracing", [{"requests": False}, {"enabled": False}])
def test_requests_are_not_traced_when_off(
    settings: Settings, database: Database, receiver: OtlpReceiver, tracing: dict[str, Any]
) -> None:
    with traced_app(settings, database, receiver.url, **tracing) as client:
        assert client.get("/healthz").status_code == 200
    assert receiver.requests == 0


def test_serve_marks_and_exports_flow_traces_by_itself(
    settings: Settings, database: Database, keys: dict[str, str], receiver: OtlpReceiver
) -> None:
    """The wiring of ``serve``: the scheduler's probe job marks the flow for export (traces on
    because tracing is enabled) and its trace_export job sends it, with no call from the test."""
    start = utc_now().replace(microsecond=0) - timedelta(days=10)
    reached = start + timedelta(hours=2)
    events = [
        make_event("contract.signed", time=start.isoformat(), correlationid=CORR),
        make_event("customer.synced", time=reached.isoformat(), correlationid=CORR, data={}),
        *[
            make_event(t, time=reached.isoformat(), correlationid=CORR, data={"project_id": "P"})
            for t in ("project.created", "billing_plan.created", "project.activated")
        ],
    ]
    serving = settings.model_copy(
        update={
            "probes": ProbeSettings(interval_seconds=0.05),
            "tracing": TracingSettings(
                enabled=True, endpoint=receiver.url, export_interval_seconds=0.05, requests=False
            ),
        }
    )
    with TestClient(create_app(serving, database, run_scheduler=True)) as client:
        post(client, keys["ingest"], events)
        receiver.wait_until(lambda spans: any(s.parent_span_id == "" for s in spans))
    root = next(s for s in receiver.spans if s.parent_span_id == "")
    assert (root.trace_id, root.name) == (trace_id(ONB), "flow contract_onboarding")
    assert (root.start_ns, root.end_ns) == (ns(start), ns(reached))
    assert root.attributes["syncwatch.state"] == "complete"
    assert all(s.scope == "syncwatch.flows" for s in receiver.spans)  # requests: false


def test_a_backlog_goes_out_in_batches(
    api: TestClient,
    keys: dict[str, str],
    database: Database,
    receiver: OtlpReceiver,
    exporter: OTLPSpanExporter,
) -> None:
    post(api, keys["ingest"], [signed("Q2C-OTEL-A"), signed("Q2C-OTEL-B"), signed("Q2C-OTEL-C")])
    probe(database, T + timedelta(hours=5))  # all three stuck on customer.synced
    reports = export_until_idle(
        database, exporter, now=T + timedelta(hours=5), limit=2, resource=make_resource(TRACING)
    )
    assert [(r.flows, r.cleared) for r in reports] == [(2, 2), (1, 1)]
    assert receiver.requests == 2
    roots = sorted(
        s.attributes["syncwatch.correlation_id"] for s in receiver.spans if not s.parent_span_id
    )
    assert roots == ["Q2C-OTEL-A", "Q2C-OTEL-B", "Q2C-OTEL-C"]


def test_a_request_that_fails_is_an_error_span(
    settings: Settings, database: Database, receiver: OtlpReceiver
) -> None:
    tracing = TracingSettings(enabled=True, endpoint=receiver.url)
    app = create_app(settings.model_copy(update={"tracing": tracing}), database)

    def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
    [span] = receiver.spans
    assert span.name == "GET /boom"
    assert span.attributes["http.response.status_code"] == 500
    assert span.status_code == Status.STATUS_CODE_ERROR
    assert [name for name, _, _ in span.events] == ["exception"]
