"""A real Prometheus (Debian's 2.42) for tests: started on a free loopback port with a temporary
data directory and a generated configuration that scrapes its targets every second, and ended
(SIGTERM, then SIGKILL) when the ``with`` block ends. Its log goes to a file whose tail is printed
when the block fails and is part of every timeout message. Also ``promtool check metrics``.

Prometheus 2.42 hands new targets to its scrapers on a fixed 5 s tick, so the first scrape comes
about 5.5 s after start: start one Prometheus per test (with several targets if needed), not one
per check.

Tests that use these helpers fail (never skip) when the binaries are missing: CI installs them
(scripts/setup.sh), and a check that silently does not run proves nothing.

    with prometheus.running(prometheus.Target("127.0.0.1:8080"), tmp_path) as prom:
        prom.wait_until_scraped()
        prom.query('syncwatch_flows_open{flow_type="contract_onboarding"}')
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.support.servers import free_port, stop_process, tail

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
#: 2100-01-01T00:00:00Z, the default end of an exemplar query.
FAR_FUTURE = 4102444800.0


def binary(name: str) -> str:
    """The path of a Prometheus tool; fails the test (not skips) when it is not installed."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path("/usr/bin", name).exists() else None)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: the Prometheus tests need Debian's prometheus package "
            "(`apt-get install -y prometheus prometheus-alertmanager`, done by scripts/setup.sh)",
            pytrace=False,
        )
    return path


def promtool_check_metrics(text: str | bytes, *, timeout: float = 30) -> tuple[int, str]:
    """``promtool check metrics`` with ``text`` (Prometheus text format) on stdin: the return
    code and everything it printed (lint problems, or parse errors)."""
    data = text.encode() if isinstance(text, str) else text
    result = subprocess.run(
        [binary(PROMTOOL), "check", "metrics"],
        input=data,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    return result.returncode, output


@dataclass(frozen=True)
class Target:
    """What Prometheus scrapes: ``address`` is ``host:port``."""

    address: str
    metrics_path: str = "/metrics"
    bearer_token: str | None = None
    job: str = "target"
    scrape_interval: str = "1s"


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or the only value of a scalar: no labels)."""

    labels: dict[str, str]
    value: float
    timestamp: float


def config(
    targets: Target | Sequence[Target],
    *,
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    evaluation_interval: str = "1s",
) -> dict[str, Any]:
    """The Prometheus configuration (as data) that scrapes ``targets`` (distinct ``job``s)."""
    targets = [targets] if isinstance(targets, Target) else list(targets)
    scrapes = []
    for target in targets:
        scrape: dict[str, Any] = {
            "job_name": target.job,
            "scrape_interval": target.scrape_interval,
            "scrape_timeout": target.scrape_interval,
            "metrics_path": target.metrics_path,
            "static_configs": [{"targets": [target.address]}],
        }
        if target.bearer_token is not None:
            scrape["authorization"] = {"type": "Bearer", "credentials": target.bearer_token}
        scrapes.append(scrape)
    document: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": evaluation_interval},
        "scrape_configs": scrapes,
    }
    if rule_files:
        document["rule_files"] = [str(path) for path in rule_files]
    if alertmanager_url is not None:
        url = urlsplit(alertmanager_url)
        manager: dict[str, Any] = {
            "scheme": url.scheme or "http",
            "static_configs": [{"targets": [url.netloc]}],
        }
        if url.path.strip("/"):
            manager["path_prefix"] = url.path
        document["alerting"] = {"alertmanagers": [manager]}
    return document


@dataclass
class Prometheus:
    """A started Prometheus; made by :func:`running`."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(repr=False)

    # --- the HTTP API ---

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/{path}`` and return its ``data`` (fails with Prometheus's error)."""
        answer = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        try:
            body = answer.json()
        except ValueError:
            body = None
        if (
            answer.status_code != 200
            or not isinstance(body, dict)
            or body.get("status") != "success"
        ):
            raise AssertionError(
                f"Prometheus GET /api/v1/{path} {params} -> {answer.status_code}: {answer.text}"
            )
        return body["data"]

    def query(self, expr: str, time: float | datetime | None = None) -> list[Sample]:
        """An instant query (at Prometheus's now by default): the vector as :class:`Sample`s, in
        Prometheus's order; a scalar comes back as one sample without labels."""
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = _unix(time)
        data = self.api("query", **params)
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [
                Sample(dict(item["metric"]), _float(item["value"][1]), float(item["value"][0]))
                for item in result
            ]
        if kind == "scalar":
            return [Sample({}, _float(result[1]), float(result[0]))]
        raise AssertionError(f"{expr!r} gave a {kind}, not a vector: {result}")

    def value(self, expr: str) -> float | None:
        """The value of a query that gives at most one sample (``None`` for none)."""
        samples = self.query(expr)
        if len(samples) > 1:
            raise AssertionError(f"{expr!r} gave {len(samples)} samples: {samples}")
        return samples[0].value if samples else None

    def query_exemplars(
        self, expr: str, start: float | datetime = 0, end: float | datetime = FAR_FUTURE
    ) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars``: a list of ``{"seriesLabels": {...}, "exemplars":
        [{"labels": {...}, "value": "...", "timestamp": ...}]}``. The default range is all time:
        exemplars may carry their own timestamps (syncwatch's: the flows' completion times, which
        in a fixed-clock test may lie before or after the machine's clock)."""
        result: list[dict[str, Any]] = self.api(
            "query_exemplars", query=expr, start=_unix(start), end=_unix(end)
        )
        return result or []

    def targets(self) -> list[dict[str, Any]]:
        """The active targets with ``health``, ``lastError``, ``lastScrape``, ``scrapeUrl``."""
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    # --- waiting ---

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[Sample]], bool] = bool,
        timeout: float = 20,
        interval: float = 0.2,
    ) -> list[Sample]:
        """Poll ``query(expr)`` until ``predicate`` holds for its result and return the result;
        on timeout fail with the last result, the targets (scrape errors) and the log's tail."""
        deadline = time.monotonic() + timeout
        last: list[Sample] | str = "never queried"
        while True:
            try:
                last = self.query(expr)
            except (AssertionError, httpx.TransportError) as error:
                last = repr(error)
            else:
                if predicate(last):
                    return last
            if time.monotonic() >= deadline:
                break
            self._check_alive()
            time.sleep(interval)
        raise AssertionError(
            f"Prometheus: {expr!r} did not satisfy the condition within {timeout}s; last: {last}\n"
            f"{self.diagnostics()}"
        )

    def wait_until_scraped(self, timeout: float = 20, failing_for: float = 3) -> None:
        """Until a scrape of every target succeeded (``up == 1``, which also means that the
        exposition parsed). Fails early when a target's scrapes keep failing for
        ``failing_for`` seconds (a 404, a 401, a parse error), with the target's error."""
        first_failure: float | None = None

        def done(samples: list[Sample]) -> bool:
            nonlocal first_failure
            if any(s.value == 0 for s in samples):
                first_failure = first_failure or time.monotonic()
                if time.monotonic() - first_failure > failing_for:
                    raise AssertionError(
                        f"Prometheus: scrapes keep failing ({failing_for}s)\n{self.diagnostics()}"
                    )
            return bool(samples) and all(s.value == 1 for s in samples)

        self.wait_for("up", done, timeout)

    def diagnostics(self) -> str:
        try:
            targets = [
                {k: t.get(k) for k in ("scrapeUrl", "health", "lastError", "lastScrape")}
                for t in self.targets()
            ]
        except (AssertionError, httpx.TransportError) as error:
            targets = [{"error": repr(error)}]
        return f"targets: {targets}\nlog ({self.log}):\n{tail(self.log)}"

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"Prometheus exited with {self.process.returncode}\nlog:\n{tail(self.log)}"
            )


@contextmanager
def running(
    targets: Target | Sequence[Target],
    directory: Path | None = None,
    *,
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    evaluation_interval: str = "1s",
    extra_args: Sequence[str] = (),
    timeout: float = 30,
) -> Iterator[Prometheus]:
    """A started Prometheus scraping ``targets``, ready (``/-/ready``) when this yields, with its
    configuration, data and log in ``directory`` (a temporary one, removed afterwards, by
    default). ``rule_files`` and ``alertmanager_url`` are for the alerting tests; ``extra_args``
    are further command-line flags (``--rules.alert.resend-delay=1s``, ...)."""
    executable = binary(PROMETHEUS)
    own = directory is None
    base = Path(tempfile.mkdtemp(prefix="syncwatch-prom-")) if directory is None else directory
    try:
        base.mkdir(parents=True, exist_ok=True)
        config_path = base / "prometheus.yml"
        document = config(
            targets,
            rule_files=rule_files,
            alertmanager_url=alertmanager_url,
            evaluation_interval=evaluation_interval,
        )
        config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        log = base / "prometheus.log"
        with _started(executable, config_path, base, log, extra_args, timeout) as prom:
            try:
                yield prom
            except BaseException:
                # pytest shows this under "Captured stdout call" of the failed test.
                print(f"--- Prometheus ({prom.url}) at the failure ---\n{prom.diagnostics()}")
                raise
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _started(
    executable: str,
    config_path: Path,
    base: Path,
    log: Path,
    extra_args: Sequence[str],
    timeout: float,
) -> Iterator[Prometheus]:
    # The free port may be taken by someone else before Prometheus binds it: try a few.
    for attempt in range(3):
        port = free_port()
        data = base / f"data-{attempt}"
        args = [
            executable,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=debug",
            *extra_args,
        ]
        with log.open("ab") as out:
            out.write(f"$ {' '.join(args)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=5) as client:
            try:
                if not wait_ready(client, url, process, timeout):
                    if "address already in use" in tail(log, 2000):
                        continue
                    raise AssertionError(
                        f"Prometheus exited with {process.returncode} before ready\n"
                        f"log:\n{tail(log)}"
                    )
                yield Prometheus(url=url, log=log, process=process, client=client)
                return
            finally:
                stop_process(process)
    raise AssertionError(f"Prometheus found no free port in 3 attempts\nlog:\n{tail(log)}")


def wait_ready(
    client: httpx.Client,
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    name: str = "Prometheus",
) -> bool:
    """True once ``/-/ready`` answers 200 (Prometheus and Alertmanager both have it); False when
    the process exited first."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            answer = client.get(f"{url}/-/ready")
        except httpx.TransportError as error:
            last = repr(error)
        else:
            if answer.status_code == 200:
                return True
            last = f"{answer.status_code} {answer.text[:200]}"
        time.sleep(0.05)
    raise AssertionError(f"{name} at {url} not ready within {timeout}s: {last}")


def _unix(moment: float | datetime) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous: give it a time zone")
        return moment.timestamp()
    return float(moment)


def _float(text: str) -> float:
    return float(text)  # Prometheus writes NaN, +Inf and -Inf as float() reads them
