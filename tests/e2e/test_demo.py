"""``syncwatch demo``: the real console script, as a newcomer runs it, on a temporary data directory
(SQLite, the embedded default). Within 60 s of the start the API reports flows, stuck flows and
open findings in every queue (the simulator's backfill and the probes), an on-call replay through
the simulator's fake middleware turns out effective, the dashboard answers its health check,
Prometheus and Alertmanager (installed by scripts/setup.sh) are ready; Ctrl-C
(SIGINT) ends it with 0 and leaves no process behind. Also: the keys it keeps (0600, reused on the
next start) and the Alertmanager configuration it derives from the shipped one (amtool)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from core.apikeys import lookup
from core.db import Database
from kpis.reports.week import last_complete_week
from syncwatch import demo
from tests.support.servers import SYNCWATCH, free_port, syncwatch_env, tail

pytestmark = pytest.mark.slow

QUEUES = ("finance_ops", "legal_ops", "pmo", "integration_oncall")
BUDGET = 60.0  # seconds from the start of `syncwatch demo` to everything in place


def _printed(out: Path) -> str:
    return out.read_text(encoding="utf-8", errors="replace")


def _wait_for_banner(process: subprocess.Popen[bytes], out: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        text = _printed(out)
        if "Press Ctrl-C" in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"syncwatch demo exited with {process.returncode}:\n{text}")
        time.sleep(0.2)
    pytest.fail(f"syncwatch demo printed no URLs and keys within {BUDGET}s:\n{_printed(out)}")


def retryable(flow: dict[str, Any]) -> bool:
    """Whether the latest integration failure of the flow's stuck stage is one a re-run cures
    (a timeout), not the ERP refusing the record (the simulator's ``data_error``)."""
    failures = [
        event
        for event in flow["events"]
        if event["type"] in ("integration.failed", "integration.dead_lettered")
        and event["data"].get("step") == flow["stuck_stage"]
    ]
    return (
        bool(failures)
        and failures[-1]["data"].get("retryable", True) is not False
        and ("refused" not in str(failures[-1]["data"].get("error", "")))
    )


def _urls(text: str) -> dict[str, str]:
    return {
        m.group(1).strip(): m.group(2)
        for m in re.finditer(r"^  ([A-Za-z][A-Za-z ]+?)\s{2,}(http://\S+)$", text, re.M)
    }


def _keys(text: str) -> dict[str, str]:
    return dict(re.findall(r"^  ([a-z_]+)\s+(sw_\S+)$", text, re.M))


def _ours(data_dir: Path) -> dict[int, str]:
    """Every live process started for this demo, by pid, with its command line: its environment
    or command line names the data directory (each child inherits SYNCWATCH_DATA_DIR)."""
    marker = f"SYNCWATCH_DATA_DIR={data_dir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie: ended, not yet reaped by its parent
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if marker in environ or str(data_dir) in cmdline:
            found[int(entry.name)] = cmdline
    return found


class Demos:
    """``syncwatch demo`` runs on one data directory, each ended (Ctrl-C, then SIGKILL) and every
    process left of them killed when the test ends, passed or failed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, port: int, dashboard_port: int) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.tmp_path / f"demo-{len(self.processes)}.out"
        env = syncwatch_env(SYNCWATCH_DATA_DIR=str(self.data_dir), NO_COLOR="1")
        with out.open("wb") as sink:
            process = subprocess.Popen(
                [SYNCWATCH, "demo", "--port", str(port), "--dashboard-port", str(dashboard_port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process, out

    def end(self) -> None:
        for process in self.processes:
            if process.poll() is None:  # the test failed before its Ctrl-C
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        for pid in _ours(self.data_dir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Demos]:
    runs = Demos(tmp_path)
    try:
        yield runs
    finally:
        runs.end()


def test_demo_runs_everything_within_a_minute_and_ctrl_c_leaves_nothing(
    demos: Demos, request: pytest.FixtureRequest
) -> None:
    data_dir, port, dashboard_port = demos.data_dir, free_port(), free_port()
    process, out = demos.start(port, dashboard_port)
    started = time.monotonic()
    deadline = started + BUDGET

    text = _wait_for_banner(process, out, deadline)
    banner_at = time.monotonic() - started
    urls, keys = _urls(text), _keys(text)
    api = f"http://127.0.0.1:{port}"
    assert urls["API"] == api
    assert urls["API docs"] == f"{api}/docs"
    assert urls["metrics"] == f"{api}/metrics"
    assert urls["dashboard"] == f"http://127.0.0.1:{dashboard_port}"
    assert set(keys) == {role.value for role in demo.DEMO_ROLES}, text
    keys_file = data_dir / "demo" / "keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert json.loads(keys_file.read_text(encoding="utf-8")) == keys

    viewer = httpx.Client(
        base_url=api, headers={"Authorization": f"Bearer {keys['viewer']}"}, timeout=10
    )
    request.addfinalizer(viewer.close)
    seen: dict[str, float] = {}

    def check() -> bool:
        now = time.monotonic() - started
        flows = viewer.get("/v1/flows", params={"limit": 1}).json()
        if flows.get("total", 0) > 0:
            seen.setdefault("flows", now)
        stuck = viewer.get("/v1/flows", params={"state": "stuck", "limit": 1}).json()
        if stuck.get("total", 0) > 0:
            seen.setdefault("stuck flows", now)
        for queue in QUEUES:
            found = viewer.get("/v1/exceptions", params={"queue": queue, "limit": 1}).json()
            if found.get("items"):
                seen.setdefault(queue, now)
        return len(seen) == 2 + len(QUEUES)

    while not check():
        if time.monotonic() >= deadline:
            pytest.fail(
                f"within {BUDGET}s only {sorted(seen)} appeared\ndemo printed:\n{_printed(out)}\n"
                f"simulator log:\n{tail(data_dir / 'demo' / 'logs' / 'simulator.log')}\n"
                f"API log:\n{tail(data_dir / 'demo' / 'logs' / 'api.log')}"
            )
        if process.poll() is not None:
            pytest.fail(f"syncwatch demo exited with {process.returncode}:\n{_printed(out)}")
        time.sleep(1)
    # the admin key works too
    admin = httpx.get(f"{api}/v1/kpis", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert admin.status_code == 200, admin.text

    # a replay from on-call goes to the simulator's fake middleware (the demo's replay targets),
    # which answers and sends the step's success: the replay turns out effective
    oncall = {"Authorization": f"Bearer {keys['oncall']}"}
    stuck_flows = viewer.get(
        "/v1/exceptions", params={"queue": "integration_oncall", "limit": 20}
    ).json()["items"]
    replay = None
    for finding in stuck_flows:
        if not retryable(viewer.get(f"/v1/flows/{finding['flow_id']}").json()):
            continue  # a data error: on-call fixes the record first (the first replay fails)
        answer = httpx.post(
            f"{api}/v1/flows/{finding['flow_id']}/replay",
            headers={**oncall, "Idempotency-Key": f"demo-test-{finding['id']}"},
            json={"reason": "the demo's test"},
            timeout=20,
        )
        if answer.status_code < 300:
            replay = answer.json()
            break
    assert replay is not None, f"no flow of the integration queue could be replayed: {stuck_flows}"
    replay_deadline = time.monotonic() + 30
    while replay.get("outcome") != "effective":
        assert time.monotonic() < replay_deadline, f"the replay did not become effective: {replay}"
        time.sleep(0.5)
        replay = httpx.get(f"{api}/v1/replays/{replay['id']}", headers=oncall).json()

    # the latest complete week's report is made once the probes have caught up with the backfill,
    # so that the dashboard's Reports page has one on first start
    week = str(last_complete_week(datetime.now(UTC), ZoneInfo("UTC")))
    report_deadline = time.monotonic() + BUDGET
    while f"the weekly report of {week} is ready" not in _printed(out):
        assert time.monotonic() < report_deadline, _printed(out)
        time.sleep(0.5)
    kept = viewer.get("/v1/reports").json()["items"]
    assert [(item["week"], sorted(item["formats"])) for item in kept] == [
        (week, ["html", "md", "pdf"])
    ]

    for page in ("API docs", "metrics"):  # the printed URLs answer
        assert httpx.get(urls[page], timeout=10).status_code == 200, page
    health = httpx.get(f"{urls['dashboard']}/_stcore/health", timeout=10)
    assert health.status_code == 200
    # Debian's prometheus and prometheus-alertmanager are installed here (scripts/setup.sh)
    assert shutil.which("prometheus") and shutil.which("prometheus-alertmanager")
    for name in ("Prometheus", "Alertmanager"):
        assert name in urls, text
        assert httpx.get(f"{urls[name]}/-/ready", timeout=10).status_code == 200, name
    print(
        f"banner after {banner_at:.1f}s; first seen (s after start): "
        + ", ".join(f"{what} {at:.1f}" for what, at in sorted(seen.items(), key=lambda i: i[1]))
    )

    children = {pid: cmd for pid, cmd in _ours(data_dir).items() if pid != process.pid}
    # the API, the simulator, the dashboard and its streamlit, Prometheus, Alertmanager
    assert len(children) >= 6, children
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0, _printed(out)
    assert not _ours(data_dir), f"left behind: {_ours(data_dir)}"
    assert "demo: stopped" in _printed(out)

    # a second start on the same data directory prints the same keys and sends only the
    # history since the first one stopped; Ctrl-C again ends it all
    process, out = demos.start(port, dashboard_port)
    text = _wait_for_banner(process, out, time.monotonic() + BUDGET)
    assert _keys(text) == keys
    assert "the history since the last run" in text
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0, _printed(out)
    assert not _ours(data_dir), f"left behind: {_ours(data_dir)}"


def test_demo_keys_are_kept_private_and_reused(tmp_path: Path) -> None:
    from core.migrate import upgrade

    database = Database.from_url(f"sqlite:///{tmp_path / 'syncwatch.db'}")
    try:
        upgrade(database)
        keys_file = tmp_path / "demo" / "keys.json"
        first = demo.ensure_keys(database, keys_file)
        assert set(first) == {role.value for role in demo.DEMO_ROLES}
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        with database.read() as connection:
            for role, key in first.items():
                principal = lookup(connection, key)
                assert principal is not None and {r.value for r in principal.roles} == {role}
        assert demo.ensure_keys(database, keys_file) == first  # a later start prints them again

        # a key the store no longer knows (another database) is replaced, the others kept
        stored = dict(first, viewer="sw_AAAAAAAAAAAA_unknown")
        keys_file.write_text(json.dumps(stored), encoding="utf-8")
        again = demo.ensure_keys(database, keys_file)
        assert again["viewer"] != first["viewer"]
        assert {k: v for k, v in again.items() if k != "viewer"} == {
            k: v for k, v in first.items() if k != "viewer"
        }
        assert json.loads(keys_file.read_text(encoding="utf-8")) == again
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    finally:
        database.dispose()


def test_the_demo_alertmanager_configuration_passes_amtool(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool (Debian's prometheus-alertmanager) is not installed"
    shipped = yaml.safe_load(demo.shipped_alertmanager_file().read_text(encoding="utf-8"))
    key_file = tmp_path / "key"
    key_file.write_text("sw_x\n", encoding="utf-8")
    document = demo.alertmanager_config(shipped, 8080, key_file)
    assert document["route"] == shipped["route"]  # the shipped routing, unchanged
    (receiver,) = [r for r in document["receivers"] if r["name"] == "syncwatch"]
    assert receiver["webhook_configs"][0]["url"] == "http://127.0.0.1:8080/v1/alertmanager"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus) is not installed"
    prom = tmp_path / "prometheus.yml"
    prom.write_text(yaml.safe_dump(demo.prometheus_config(8080, 9093)), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", str(prom)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_restart_sends_only_the_history_since_the_last_run(tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    assert demo.backfill_weeks(None, now) == demo.BACKFILL_WEEKS  # first start
    assert demo.backfill_weeks(now - timedelta(days=7), now) == 1.0
    assert demo.backfill_weeks(now - timedelta(days=365), now) == demo.BACKFILL_WEEKS
    assert demo.backfill_weeks(now + timedelta(hours=1), now) == 0.0  # a clock set back
    path = tmp_path / "last-run"
    assert demo.read_last_seen(path) is None
    demo.write_last_seen(path, now)
    assert demo.read_last_seen(path) == now
