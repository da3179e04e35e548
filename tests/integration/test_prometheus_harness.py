"""The test harness around the real Prometheus (tests/support/prometheus.py) and the in-process
uvicorn server (tests/support/appserver.py), on a tiny static exposition: Prometheus scrapes it
with a bearer token, asks for OpenMetrics, stores the exemplar, and the helpers read back the
values, the exemplar and the targets; ``promtool check metrics`` reports lint problems; a missing
binary fails the test instead of skipping it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support import prometheus
from tests.support.appserver import serving

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]

TOKEN = "harness-token"

TEXT = """\
# HELP demo_flows_open Open flows now.
# TYPE demo_flows_open gauge
demo_flows_open{flow_type="contract_onboarding"} 15.0
demo_flows_open{flow_type="milestone_billing"} 22.0
# HELP demo_duration_seconds Durations.
# TYPE demo_duration_seconds histogram
demo_duration_seconds_bucket{le="60.0"} 1.0
demo_duration_seconds_bucket{le="+Inf"} 2.0
demo_duration_seconds_count 2.0
demo_duration_seconds_sum 100.5
"""

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
OPENMETRICS = f"""\
# HELP demo_flows_open Open flows now.
# TYPE demo_flows_open gauge
demo_flows_open{{flow_type="contract_onboarding"}} 15.0
demo_flows_open{{flow_type="milestone_billing"}} 22.0
# HELP demo_duration_seconds Durations.
# TYPE demo_duration_seconds histogram
demo_duration_seconds_bucket{{le="60.0"}} 1.0 # {{correlation_id="Q-1",trace_id="{TRACE_ID}"}} 42.5
demo_duration_seconds_bucket{{le="+Inf"}} 2.0
demo_duration_seconds_count 2.0
demo_duration_seconds_sum 100.5
# EOF
"""


def make_app(seen: list[dict[str, str]]) -> Starlette:
    def metrics(request: Request) -> Response:
        seen.append(dict(request.headers))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return PlainTextResponse("no", status_code=401)
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            return Response(
                OPENMETRICS,
                media_type="application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        return Response(TEXT, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/custom/metrics", metrics)])


def test_prometheus_scrapes_queries_and_keeps_exemplars() -> None:
    started = time.monotonic()
    seen: list[dict[str, str]] = []
    with serving(make_app(seen)) as url:
        address = url.removeprefix("http://")
        good = prometheus.Target(address, metrics_path="/custom/metrics", bearer_token=TOKEN)
        # The same endpoint without the token: its scrapes fail with 401.
        bad = prometheus.Target(address, metrics_path="/custom/metrics", job="no_token")
        with prometheus.running([good, bad]) as prom:
            prom.wait_for('up{job="target"}', lambda s: bool(s) and s[0].value == 1)
            prom.wait_for('up{job="no_token"}', lambda s: bool(s) and s[0].value == 0)

            samples = prom.query("demo_flows_open")
            assert {s.labels["flow_type"]: s.value for s in samples} == {
                "contract_onboarding": 15.0,
                "milestone_billing": 22.0,
            }
            assert all(s.labels["job"] == "target" for s in samples)
            assert prom.value("sum(demo_flows_open)") == 37.0
            assert prom.value("scalar(sum(demo_flows_open))") == 37.0
            assert prom.value("demo_flows_open{flow_type='none'}") is None
            assert prom.wait_for("demo_duration_seconds_count", lambda s: s[0].value == 2)

            exemplars = prom.query_exemplars("demo_duration_seconds_bucket")
            assert len(exemplars) == 1, exemplars
            assert exemplars[0]["seriesLabels"]["le"] == "60.0"
            [exemplar] = exemplars[0]["exemplars"]
            assert exemplar["labels"] == {
                "correlation_id": "Q-1",
                "trace_id": TRACE_ID,
            }
            assert float(exemplar["value"]) == 42.5
            # Without a timestamp of its own, the exemplar is stamped with the scrape's time.
            assert abs(exemplar["timestamp"] - time.time()) < 60

            by_job = {t["labels"]["job"]: t for t in prom.targets()}
            assert by_job["target"]["health"] == "up"
            assert by_job["target"]["lastError"] == ""
            assert by_job["target"]["scrapeUrl"] == f"{url}/custom/metrics"
            assert by_job["no_token"]["health"] == "down"
            assert "401" in by_job["no_token"]["lastError"]

            with pytest.raises(AssertionError, match="did not satisfy") as failure:
                prom.wait_for("demo_flows_open", lambda s: len(s) == 3, timeout=0.3)
            assert "targets:" in str(failure.value)
            assert "401" in str(failure.value)  # the failing target's lastError
            with pytest.raises(AssertionError, match="keep failing"):
                prom.wait_until_scraped(failing_for=0)
            assert "log (" in str(failure.value)
        assert prom.process.poll() is not None  # ended with the block
    assert {h.get("authorization") for h in seen} == {f"Bearer {TOKEN}", None}
    assert all("application/openmetrics-text" in h["accept"] for h in seen)
    assert time.monotonic() - started < 15


def test_config_with_rules_and_alertmanager() -> None:
    document = prometheus.config(
        prometheus.Target("127.0.0.1:1", bearer_token="t", job="syncwatch"),
        rule_files=[Path("/x/rules.yml")],
        alertmanager_url="http://127.0.0.1:9093/am",
    )
    assert document["rule_files"] == ["/x/rules.yml"]
    assert document["alerting"]["alertmanagers"] == [
        {
            "scheme": "http",
            "static_configs": [{"targets": ["127.0.0.1:9093"]}],
            "path_prefix": "/am",
        }
    ]
    [scrape] = document["scrape_configs"]
    assert scrape["authorization"] == {"type": "Bearer", "credentials": "t"}
    assert scrape["scrape_interval"] == "1s"


def test_promtool_check_metrics() -> None:
    assert prometheus.promtool_check_metrics(TEXT) == (0, "")
    code, output = prometheus.promtool_check_metrics(
        "# HELP demo_ms A.\n# TYPE demo_ms gauge\ndemo_ms 1\n"
        "# HELP demo_total B.\n# TYPE demo_total gauge\ndemo_total 2\n"
    )
    assert code != 0
    assert "abbreviated units" in output
    assert 'should not have "_total" suffix' in output
    code, output = prometheus.promtool_check_metrics("garbage{\n")
    assert code != 0
    assert "parsing error" in output


def test_a_missing_binary_fails_the_test_instead_of_skipping_it() -> None:
    with pytest.raises(pytest.fail.Exception, match="is not installed"):
        prometheus.binary("prometheus-that-does-not-exist")
