"""A real Prometheus scrapes GET /metrics of syncwatch (served by uvicorn, its clock fixed at
2026-11-30T00:00:00Z) over the conformance example, on SQLite and PostgreSQL, and sees the same
numbers as GET /v1/kpis for that instant (metrics.md's "equals" column), with the exemplars of
syncwatch_flow_duration_seconds pointing at real completed flows and their traces. The text
format passes ``promtool check metrics`` and carries metrics.md's names, types and labels."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from collector.ingest import ingest
from core import jsoncodec
from core.db import Database
from core.settings import Settings
from probes import traceids
from probes.flowtypes import configured_flow_types
from probes.runner import run_until_idle
from syncwatch.app import create_app
from tests.conftest import bearer
from tests.support import prometheus
from tests.support.appserver import serving
from tests.support.examples import EXAMPLES, PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]

EVENTS: list[dict[str, Any]] = jsoncodec.loads((EXAMPLES / "events.json").read_bytes())
AS_OF = datetime(2026, 11, 30, tzinfo=UTC)
AS_OF_TEXT = "2026-11-30T00:00:00Z"
#: The queue whose findings the test resolves, so that one queue has none open.
EMPTIED_QUEUE = "legal_ops"
METRICS_MD = PROJECT.parent / "shared" / "spec" / "metrics.md"


@pytest.fixture
def example(database: Database) -> Database:
    """The example's events, probed as of AS_OF."""
    result = ingest(
        database, EVENTS, require_specversion=False, channel="test", content_type=None, now=AS_OF
    )
    assert result.accepted == len(EVENTS), result.rejected
    run_until_idle(database, configured_flow_types(None), now=AS_OF)
    return database


@dataclass
class Served:
    url: str
    client: httpx.Client
    keys: dict[str, str] = field(repr=False)

    def get(self, path: str, role: str = "viewer", **params: Any) -> Any:
        answer = self.client.get(path, params=params, headers=bearer(self.keys[role]))
        assert answer.status_code == 200, f"GET {path} {params}: {answer.status_code} {answer.text}"
        return answer.json()


@pytest.fixture
def served(settings: Settings, example: Database, keys: dict[str, str]) -> Iterator[Served]:
    """syncwatch over real HTTP with its clock at AS_OF."""
    app = create_app(settings, example, clock=lambda: AS_OF)
    with serving(app, probe_path="/healthz") as url, httpx.Client(base_url=url, timeout=30) as c:
        yield Served(url, c, keys)


def resolve_queue(served: Served, queue: str) -> int:
    """Resolve every open finding of ``queue`` (at the app's clock, AS_OF): none is open then."""
    items = served.get("/v1/exceptions", queue=queue, status="open", limit=1000)["items"]
    for item in items:
        answer = served.client.post(
            f"/v1/exceptions/{item['id']}/resolve",
            json={"resolution": "test: empty the queue"},
            headers=bearer(served.keys[queue]),
        )
        assert answer.status_code == 200, answer.text
    return len(items)


def by_labels(samples: list[prometheus.Sample], *names: str) -> dict[Any, float]:
    """``{label value (or tuple of values): value}``; fails on two samples for one key."""
    out: dict[Any, float] = {}
    for sample in samples:
        values = tuple(sample.labels.get(n, "") for n in names)
        key = values[0] if len(values) == 1 else values
        assert key not in out, f"two samples for {key}: {samples}"
        out[key] = sample.value
    return out


def test_prometheus_sees_the_kpis_and_the_exemplars(served: Served, tmp_path: Path) -> None:
    assert resolve_queue(served, EMPTIED_QUEUE) >= 1  # the example has one open legal finding
    kpis = served.get("/v1/kpis", as_of=AS_OF_TEXT, window="7d")
    assert sum(f["open"] for f in kpis["flows"].values()) > 0  # not a comparison of zeros
    assert kpis["revenue_at_risk"]
    assert kpis["exceptions"][EMPTIED_QUEUE]["open"] == 0

    target = prometheus.Target(served.url.removeprefix("http://"), job="syncwatch")
    with prometheus.running(target, tmp_path / "prometheus") as prom:
        prom.wait_until_scraped()
        # Every scrape gives the same values (the clock is fixed): the latest sample will do.
        mismatches: list[str] = []

        def check(what: str, got: Any, want: Any) -> None:
            if got != want:
                mismatches.append(f"{what}:\n  Prometheus: {got}\n  /v1/kpis:   {want}")

        flows = kpis["flows"]
        check(
            "syncwatch_flows_open{flow_type}",
            by_labels(prom.query("syncwatch_flows_open"), "flow_type"),
            {ft: float(f["open"]) for ft, f in flows.items()},
        )
        check(
            "syncwatch_flows_stuck{flow_type,stage}",
            by_labels(prom.query("syncwatch_flows_stuck"), "flow_type", "stage"),
            {
                (ft, stage): float(n)
                for ft, f in flows.items()
                for stage, n in f["stuck_by_stage"].items()
            },
        )
        # Money to the cent; a currency the KPI does not list may only show 0.
        risk = by_labels(prom.query("syncwatch_revenue_at_risk"), "currency")
        check(
            "syncwatch_revenue_at_risk{currency} (to the cent)",
            {c: cents(v) for c, v in risk.items() if v != 0 or c in kpis["revenue_at_risk"]},
            {c: Decimal(v) for c, v in kpis["revenue_at_risk"].items()},
        )
        exceptions = kpis["exceptions"]
        open_by_queue = by_labels(prom.query("sum by (queue) (syncwatch_findings_open)"), "queue")
        # Every queue is there, with 0 when none is open (as under "exceptions").
        check(
            "sum by (queue) (syncwatch_findings_open)",
            open_by_queue,
            {q: float(e["open"]) for q, e in exceptions.items()},
        )
        oldest = by_labels(prom.query("syncwatch_finding_oldest_opened_timestamp_seconds"), "queue")
        # The KPI's age is rounded to the ms: equal within 1 ms; absent when none is open.
        want_oldest = {
            q: AS_OF.timestamp() - e["oldest_age_seconds"]
            for q, e in exceptions.items()
            if e["oldest_age_seconds"] is not None
        }
        check(
            "syncwatch_finding_oldest_opened_timestamp_seconds{queue} (within 1 ms)",
            {
                q: want_oldest.get(q) if near(v, want_oldest.get(q)) else v
                for q, v in oldest.items()
            },
            want_oldest,
        )
        check(
            "syncwatch_uncorrelated_events",
            [
                (s.labels.get("__name__"), s.value)
                for s in prom.query("syncwatch_uncorrelated_events")
            ],
            [("syncwatch_uncorrelated_events", float(kpis["uncorrelated_events"]))],
        )

        exemplars = prom.query_exemplars("syncwatch_flow_duration_seconds_bucket")
        check(
            "flow types with exemplars on syncwatch_flow_duration_seconds_bucket",
            sorted({series["seriesLabels"]["flow_type"] for series in exemplars}),
            sorted(
                ft
                for ft in flows
                if served.get("/v1/flows", type=ft, state="complete", as_of=AS_OF_TEXT)["total"]
            ),
        )
        mismatches += check_exemplars(served, exemplars)
        assert not mismatches, "\n".join(mismatches)


def near(value: float, want: float | None) -> bool:
    return want is not None and abs(value - want) <= 0.0011


def cents(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"))


def check_exemplars(served: Served, exemplars: list[dict[str, Any]]) -> list[str]:
    """Each exemplar names a flow of its series' flow type that completed by AS_OF, by its
    correlation ID and its deterministic trace ID, and its value is that flow's duration, within
    the bucket."""
    problems = []
    completed: dict[str, list[dict[str, Any]]] = {}
    for series in exemplars:
        labels = series["seriesLabels"]
        flow_type = labels.get("flow_type", "")
        if flow_type not in completed:
            listing = served.get(
                "/v1/flows", type=flow_type, state="complete", as_of=AS_OF_TEXT, limit=1000
            )
            completed[flow_type] = listing["items"]
        for exemplar in series["exemplars"]:
            where = f"exemplar {exemplar} of {labels}"
            names = set(exemplar["labels"])
            if names != {"correlation_id", "trace_id"}:
                problems.append(f"{where}: labels {sorted(names)}, not correlation_id, trace_id")
                continue
            trace_id = exemplar["labels"]["trace_id"]
            matches = [
                flow
                for flow in completed[flow_type]
                if flow["correlation_id"] == exemplar["labels"]["correlation_id"]
                and traceids.trace_id(flow["flow_id"]) == trace_id
            ]
            if len(matches) != 1:
                problems.append(f"{where}: no completed {flow_type} flow with that trace")
                continue
            flow = matches[0]
            duration = (
                datetime.fromisoformat(flow["completed_at"]) - datetime.fromisoformat(flow["t0"])
            ).total_seconds()
            value = float(exemplar["value"])
            if not math.isclose(value, duration, abs_tol=0.001):
                problems.append(f"{where}: value {value}, the flow's duration is {duration}")
            if value > float(labels["le"]):
                problems.append(f"{where}: value above the bucket's le")
    return problems


# --- the exposition itself ---


@dataclass(frozen=True)
class Documented:
    name: str
    type: str
    labels: frozenset[str]


def documented_metrics() -> list[Documented]:
    """metrics.md's table: name, type and label names of every metric."""
    rows = []
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`syncwatch_"):
            continue
        labels_cell = re.sub(r"\([^)]*\)", "", cells[2])  # drop the listed label values
        rows.append(
            Documented(
                cells[0].strip("`"), cells[1], frozenset(re.findall(r"`([a-z_]+)`", labels_cell))
            )
        )
    assert len(rows) >= 16, rows
    return rows


@pytest.fixture
def clocked(settings: Settings, example: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, example, clock=lambda: AS_OF)) as client:
        yield client


def test_metrics_text_passes_promtool_and_follows_metrics_md(clocked: TestClient) -> None:
    answer = clocked.get("/metrics", headers={"Accept": "text/plain"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    text = answer.text
    assert "# EOF" not in text  # the text format, not OpenMetrics

    code, output = prometheus.promtool_check_metrics(text)
    assert (code, output) == (0, ""), f"promtool check metrics:\n{output}"

    families = {family.name: family for family in text_string_to_metric_families(text)}
    problems = []
    for metric in documented_metrics():
        # The text parser names a counter's family without its _total suffix.
        family = families.get(metric.name.removesuffix("_total"))
        if family is None:
            problems.append(f"{metric.name}: missing")
            continue
        if family.type != metric.type:
            problems.append(f"{metric.name}: type {family.type}, metrics.md says {metric.type}")
        for sample in family.samples:
            names = set(sample.labels) - {"le"}
            if names != metric.labels:
                problems.append(
                    f"{metric.name}: sample {sample.name}{sample.labels} has labels "
                    f"{sorted(names)}, metrics.md says {sorted(metric.labels)}"
                )
                break
    assert not problems, "\n".join(problems)

    # The state gauges have data here: the example is not empty.
    assert families["syncwatch_flows_open"].samples
    assert families["syncwatch_findings_open"].samples
