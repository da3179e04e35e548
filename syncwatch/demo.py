"""``syncwatch demo``: the whole product on the data directory's SQLite database, in one command.

It applies the migrations, makes one key per role on first start (kept in ``demo/keys.json``
under the data directory, readable only by the user: the store keeps only their hashes), writes a
demo configuration (replay targets on the simulator's fake middleware, silence thresholds, a fast
probe cycle) and starts, each as a child process in its own process group with its log under
``demo/logs``: the API with its scheduler (``syncwatch serve``), the simulator (``syncwatch
simulate``), the dashboard (``syncwatch dashboard``) and, when Debian's binaries are installed,
Prometheus with the shipped rules and Alertmanager with the shipped routing. It prints the URLs and
the keys, has the last complete week's report made once the probes have caught up with the
simulator's backfill, waits, and on Ctrl-C or SIGTERM ends every child (SIGTERM to its group,
SIGKILL after a timeout) and exits 0."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

import alerts as alerts_package
from core import apikeys, audit
from core.db import Database
from core.errors import SyncwatchError
from core.roles import Role
from core.settings import ENV_PREFIX, Settings, load_yaml
from core.web import utc_now
from kpis.reports.week import last_complete_week
from syncwatch.simulator.firm import firm_profile

#: The keys the demo makes, one per role, in the order it prints them.
DEMO_ROLES: tuple[Role, ...] = (
    Role.ADMIN,
    Role.INGEST,
    Role.VIEWER,
    Role.ONCALL,
    Role.FINANCE_OPS,
    Role.LEGAL_OPS,
    Role.PMO,
    Role.ALERTMANAGER,
)
#: The firm the simulator plays (``syncwatch simulate --firm``).
FIRM = "medium"
PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
DEFAULT_PROMETHEUS_PORT = 9090
DEFAULT_ALERTMANAGER_PORT = 9093
DEFAULT_MIDDLEWARE_PORT = 8091
#: Weeks of history the simulator sends on the first start.
BACKFILL_WEEKS = 8.0
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 60.0
#: How long after the backfill the demo waits for the probes to catch up before it makes the
#: latest complete week's report.
REPORT_TIMEOUT = 300.0


class DemoError(SyncwatchError):
    """The demo cannot start (a child failed to come up): the message says which and why."""


# --- ports ---------------------------------------------------------------------------------


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def preferred_port(port: int) -> int:
    """``port`` when nothing listens on it, else a free one."""
    return port if port_is_free(port) else free_port()


# --- keys ----------------------------------------------------------------------------------


def ensure_keys(database: Database, keys_file: Path) -> dict[str, str]:
    """One working key per role of :data:`DEMO_ROLES`: those in ``keys_file`` that the store
    still accepts, plus new ones for the others (then the file is rewritten, mode 0600)."""
    stored: dict[str, str] = {}
    if keys_file.exists():
        with suppress(OSError, ValueError):
            loaded = json.loads(keys_file.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                stored = {str(k): str(v) for k, v in loaded.items()}
    keys: dict[str, str] = {}
    now = utc_now()
    with database.write() as connection:
        names = {info.name for info in apikeys.list_keys(connection)}
        for role in DEMO_ROLES:
            key = stored.get(role.value)
            if key is not None:
                principal = apikeys.lookup(connection, key)
                if principal is not None and role in principal.roles:
                    keys[role.value] = key
                    continue
            name = f"demo-{role.value}"
            while name in names:
                name = f"demo-{role.value}-{secrets.token_hex(3)}"
            names.add(name)
            keys[role.value] = apikeys.create_key(connection, name=name, roles=[role], now=now)
            audit.record(
                connection,
                at=now,
                actor="cli:demo",
                action="key.create",
                target_type="api_key",
                target_id=name,
                details={"roles": [role.value]},
            )
    if keys != stored:
        write_private(keys_file, json.dumps(keys, indent=2) + "\n")
    return keys


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by the user only (0600), from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    path.chmod(0o600)


# --- history ------------------------------------------------------------------------------


def backfill_weeks(last_seen: datetime | None, now: datetime) -> float:
    """Weeks of history for the simulator to send: :data:`BACKFILL_WEEKS` on the first start;
    on a later one only the gap since the demo last ran (so a restart does not send the same
    weeks twice over)."""
    if last_seen is None:
        return BACKFILL_WEEKS
    gap = (now - last_seen) / timedelta(weeks=1)
    return round(min(BACKFILL_WEEKS, max(0.0, gap)), 4)


def read_last_seen(path: Path) -> datetime | None:
    try:
        moment = datetime.fromisoformat(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def write_last_seen(path: Path, now: datetime) -> None:
    with suppress(OSError):
        path.write_text(now.isoformat() + "\n", encoding="utf-8")


# --- configuration -------------------------------------------------------------------------


def demo_config(
    middleware_port: int,
    sources: Sequence[str],
    middleware_sources: Sequence[str],
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo's settings (YAML, for ``SYNCWATCH_CONFIG``): ``base`` (the user's own file, if
    any) with replay targets on the fake middleware for ``middleware_sources``, silence
    thresholds for ``sources`` and a fast probe cycle."""
    replay_url = f"http://127.0.0.1:{middleware_port}/replay/{{execution_id}}"
    overlay: dict[str, Any] = {
        "probes": {"interval_seconds": 2, "batch_events": 20_000},
        "sources": {source: {"silent_after": "1h"} for source in sources},
        "replay": {
            "targets": {
                source: {"http": {"url": replay_url, "method": "POST"}}
                for source in middleware_sources
            },
            "follow_up_after": "5m",
            "timeout_seconds": 5,
        },
    }
    return _merged(dict(base or {}), overlay)


def _merged(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overlay.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            base[key] = _merged(dict(current), value)
        else:
            base[key] = value
    return base


def rules_file() -> Path:
    return Path(alerts_package.__file__).resolve().parent / "rules" / "syncwatch.rules.yml"


def shipped_alertmanager_file() -> Path:
    return Path(alerts_package.__file__).resolve().parent / "alertmanager" / "alertmanager.yml"


def prometheus_config(api_port: int, alertmanager_port: int | None) -> dict[str, Any]:
    """Scrape the API as job ``syncwatch`` (what the shipped rules expect), load the shipped
    rules, send alerts to the demo's Alertmanager."""
    document: dict[str, Any] = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules_file())],
        "scrape_configs": [
            {
                "job_name": "syncwatch",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
            }
        ],
    }
    if alertmanager_port is not None:
        document["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        }
    return document


def alertmanager_config(
    shipped: Mapping[str, Any], api_port: int, key_file: Path
) -> dict[str, Any]:
    """The shipped routing with syncwatch's receiver pointed at the demo's API (its key in
    ``key_file``); the placeholder receivers (``*.example.invalid``) keep their names and routes but
    send nowhere."""
    document: dict[str, Any] = json.loads(json.dumps(shipped))  # a deep copy of plain data
    receivers = []
    for receiver in document.get("receivers", []):
        if receiver.get("name") == "syncwatch":
            receiver["webhook_configs"] = [
                {
                    "url": f"http://127.0.0.1:{api_port}/v1/alertmanager",
                    "send_resolved": True,
                    "max_alerts": 0,
                    "http_config": {
                        "authorization": {"type": "Bearer", "credentials_file": str(key_file)}
                    },
                }
            ]
            receivers.append(receiver)
        else:
            receivers.append({"name": receiver["name"]})
    document["receivers"] = receivers
    return document


# --- children ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    #: the URL whose 200 says it is ready, or None
    ready_url: str | None = None
    essential: bool = False
    reported: bool = field(default=False, repr=False)


def start_child(
    name: str,
    args: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    ready_url: str | None = None,
    essential: bool = False,
) -> Child:
    """Start ``args`` in a process group of its own (so that stopping it stops what it started),
    its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            list(args),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process, log, ready_url, essential)


def stop_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to every child's process group (the last started first), wait up to ``timeout``
    seconds, then SIGKILL the groups of those still running, and of their leftovers."""
    for child in reversed(children):
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in reversed(children):
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.process.wait(timeout=timeout)
    for child in children:  # a grandchild that outlived its parent (streamlit under `dashboard`)
        _signal_group(child, signal.SIGKILL)


def _signal_group(child: Child, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError as error:
        return f"(cannot read {path}: {error})"


def wait_ready(child: Child, deadline: float) -> None:
    """Until ``child.ready_url`` answers 200; :class:`DemoError` when the child exits first or
    the deadline passes."""
    if child.ready_url is None:
        return
    last = "no answer"
    with httpx.Client(timeout=2) as client:
        while True:
            if child.process.poll() is not None:
                raise DemoError(
                    f"{child.name} exited with {child.process.returncode} before it was ready; "
                    f"the end of its log ({child.log}):\n{tail(child.log)}"
                )
            try:
                answer = client.get(child.ready_url)
            except httpx.TransportError as error:
                last = repr(error)
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"{child.name} not ready at {child.ready_url} in time ({last}); "
                    f"the end of its log ({child.log}):\n{tail(child.log)}"
                )
            time.sleep(0.2)


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and Path("/usr/bin", name).exists():
        found = f"/usr/bin/{name}"
    return found


# --- the demo ------------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM: stop like on Ctrl-C."""


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop


@dataclass
class Demo:
    settings: Settings
    api_port: int
    dashboard_port: int
    #: how to run a ``syncwatch`` command
    syncwatch: list[str]
    out: TextIO = sys.stdout
    children: list[Child] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    backfill_weeks: float = BACKFILL_WEEKS
    #: the keys by role, once made
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.settings.data_dir / "demo"

    @property
    def last_seen_file(self) -> Path:
        """When the demo last ran (its simulator sent traffic up to then)."""
        return self.home / "last-run"

    def backfilled(self) -> str | None:
        """The simulator's line saying its backfill is sent, once it has printed it."""
        return _line_starting(self.home / "logs" / "simulator.log", "simulator:")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> int:
        """Start everything, wait for Ctrl-C or SIGTERM, stop everything. 0 on a clean stop."""
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        # even when started with SIGINT ignored (`cmd &` in a script): Ctrl-C must stop it
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        code = 0
        try:
            keys = self.keys = self.prepare()
            self.start(keys)
            self.report(keys)
            code = self.wait()
        except (KeyboardInterrupt, _Stop):
            code = 0
        except DemoError as error:
            self.say(f"demo: {error}")
            code = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if self.children:
                self.say("demo: stopping ...")
            stop_children(self.children)
            if self.backfilled():  # else the next start sends the whole history again
                write_last_seen(self.last_seen_file, utc_now())
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
            if self.children:
                self.say("demo: stopped")
        return code

    def prepare(self) -> dict[str, str]:
        from core.migrate import upgrade

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        database = Database.from_url(self.settings.resolved_database_url)
        try:
            upgrade(database)
            return ensure_keys(database, self.home / "keys.json")
        finally:
            database.dispose()

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env[f"{ENV_PREFIX}DATA_DIR"] = str(self.settings.data_dir)
        env[f"{ENV_PREFIX}CONFIG"] = str(self.home / "config.yaml")
        env.update(extra)
        return env

    def start(self, keys: dict[str, str]) -> None:
        logs = self.home / "logs"
        middleware_port = preferred_port(DEFAULT_MIDDLEWARE_PORT)
        user_config = os.environ.get(f"{ENV_PREFIX}CONFIG")
        base = load_yaml(Path(user_config)) if user_config else None
        firm = firm_profile(FIRM)
        erp_sources = sorted({erp for erp, _currency, _entity in firm.regions.values()})
        config = demo_config(
            middleware_port,
            [*firm.clm_sources, *firm.middleware_sources, *erp_sources],
            firm.middleware_sources,
            base,
        )
        (self.home / "config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
        )
        api_url = f"http://127.0.0.1:{self.api_port}"
        deadline = time.monotonic() + READY_TIMEOUT

        self.say(f"demo: starting the API on {api_url} (data in {self.settings.data_dir}) ...")
        api = start_child(
            "the API",
            [*self.syncwatch, "serve", "--host", "127.0.0.1", "--port", str(self.api_port)],
            self._env(),
            logs / "api.log",
            ready_url=f"{api_url}/readyz",
            essential=True,
        )
        self.children.append(api)
        wait_ready(api, deadline)

        weeks = backfill_weeks(read_last_seen(self.last_seen_file), utc_now())
        self.backfill_weeks = weeks
        simulator_args = [
            *self.syncwatch,
            "simulate",
            "--api-url",
            api_url,
            "--middleware-port",
            str(middleware_port),
            "--firm",
            FIRM,
            "--backfill-weeks",
            str(weeks),
        ]
        self.children.append(
            start_child(
                "the simulator",
                simulator_args,
                self._env(SYNCWATCH_INGEST_KEY=keys[Role.INGEST.value]),
                logs / "simulator.log",
            )
        )
        self.children.append(
            start_child(
                "the dashboard",
                [*self.syncwatch, "dashboard", "--port", str(self.dashboard_port)],
                self._env(
                    SYNCWATCH_API_URL=api_url,
                    SYNCWATCH_API_KEY=keys[Role.VIEWER.value],
                    # like everything the demo starts, on the loopback interface only
                    STREAMLIT_SERVER_ADDRESS="127.0.0.1",
                ),
                logs / "dashboard.log",
                ready_url=f"http://127.0.0.1:{self.dashboard_port}/_stcore/health",
            )
        )
        self.urls = {
            "API": api_url,
            "API docs": f"{api_url}/docs",
            "metrics": f"{api_url}/metrics",
            "dashboard": f"http://127.0.0.1:{self.dashboard_port}",
            "fake middleware": f"http://127.0.0.1:{middleware_port}",
        }
        self._start_monitoring(keys[Role.ALERTMANAGER.value])
        for child in self.children:
            wait_ready(child, deadline)

    def _start_monitoring(self, alertmanager_key: str) -> None:
        prometheus, alertmanager = find_binary(PROMETHEUS), find_binary(ALERTMANAGER)
        missing = [
            name
            for name, path in ((PROMETHEUS, prometheus), (ALERTMANAGER, alertmanager))
            if not path
        ]
        if missing:
            self.say(
                f"demo: {' and '.join(missing)} not installed, so not started; to get them: "
                "`apt install prometheus prometheus-alertmanager` (Debian/Ubuntu)"
            )
        logs = self.home / "logs"
        alertmanager_port: int | None = None
        if alertmanager is not None:
            alertmanager_port = preferred_port(DEFAULT_ALERTMANAGER_PORT)
            directory = self.home / "alertmanager"
            key_file = directory / "syncwatch-alertmanager-key"
            write_private(key_file, alertmanager_key + "\n")
            shipped = yaml.safe_load(shipped_alertmanager_file().read_text(encoding="utf-8"))
            config_path = directory / "alertmanager.yml"
            config_path.write_text(
                yaml.safe_dump(alertmanager_config(shipped, self.api_port, key_file)),
                encoding="utf-8",
            )
            url = f"http://127.0.0.1:{alertmanager_port}"
            self.children.append(
                start_child(
                    "Alertmanager",
                    [
                        alertmanager,
                        f"--config.file={config_path}",
                        f"--storage.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                        f"--web.external-url={url}",
                        "--cluster.listen-address=",  # one instance: no gossip port
                    ],
                    self._env(),
                    logs / "alertmanager.log",
                    ready_url=f"{url}/-/ready",
                )
            )
            self.urls["Alertmanager"] = url
        if prometheus is not None:
            port = preferred_port(DEFAULT_PROMETHEUS_PORT)
            directory = self.home / "prometheus"
            directory.mkdir(parents=True, exist_ok=True)
            config_path = directory / "prometheus.yml"
            config_path.write_text(
                yaml.safe_dump(prometheus_config(self.api_port, alertmanager_port)),
                encoding="utf-8",
            )
            url = f"http://127.0.0.1:{port}"
            self.children.append(
                start_child(
                    "Prometheus",
                    [
                        prometheus,
                        f"--config.file={config_path}",
                        f"--storage.tsdb.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        f"--web.external-url={url}",
                        "--enable-feature=exemplar-storage",
                        "--storage.tsdb.retention.time=15d",
                    ],
                    self._env(),
                    logs / "prometheus.log",
                    ready_url=f"{url}/-/ready",
                )
            )
            self.urls["Prometheus"] = url

    def report(self, keys: dict[str, str]) -> None:
        order = ["API", "API docs", "metrics", "dashboard", "Prometheus", "Alertmanager"]
        self.urls = dict(
            sorted(self.urls.items(), key=lambda i: order.index(i[0]) if i[0] in order else 99)
        )
        width = max(len(name) for name in self.urls)
        self.say()
        self.say(f"syncwatch demo is running (data in {self.settings.data_dir}):")
        for name, url in self.urls.items():
            self.say(f"  {name.ljust(width)}  {url}")
        self.say()
        self.say(f"keys (kept in {self.home / 'keys.json'}, readable only by you):")
        for role, key in keys.items():
            self.say(f"  {role.ljust(12)}  {key}")
        self.say()
        if self.backfill_weeks == BACKFILL_WEEKS:
            history = f"{BACKFILL_WEEKS:g} weeks of history"
        else:
            history = f"the history since the last run ({self.backfill_weeks:g} weeks)"
        self.say(
            f"The simulator sends {history}, then live traffic; logs in "
            f"{self.home / 'logs'}. Press Ctrl-C to stop everything."
        )

    def wait(self) -> int:
        """Until a signal; 1 when the API exits by itself (the others are reported)."""
        backfill_seen = False
        report_due: float | None = None  # the monotonic time to give up on the week's report
        saved = time.monotonic()
        while True:
            time.sleep(0.5)
            if backfill_seen and time.monotonic() - saved > 60:  # also after a power cut
                write_last_seen(self.last_seen_file, utc_now())
                saved = time.monotonic()
            if not backfill_seen:
                line = self.backfilled()
                if line is not None:
                    backfill_seen = True
                    report_due = time.monotonic() + REPORT_TIMEOUT
                    self.say(f"demo: {line}")
            elif report_due is not None:
                said = self.make_last_weeks_report(give_up=time.monotonic() > report_due)
                if said is not None:
                    report_due = None
                    self.say(f"demo: {said}")
            for child in self.children:
                if child.process.poll() is None or child.reported:
                    continue
                child.reported = True
                self.say(
                    f"demo: {child.name} exited with {child.process.returncode}; the end of its "
                    f"log ({child.log}):\n{tail(child.log)}"
                )
                if child.essential:
                    return 1

    def make_last_weeks_report(self, *, give_up: bool = False) -> str | None:
        """After the backfill, once the probes have processed every stored event: the latest
        complete week's report in every configured format, asked of the API as a reader would
        (a complete week not kept yet is made and kept), so that the dashboard's Reports page has
        one on first start, not only after the next weekly run. None while the probes are still
        catching up; else what to tell the user."""
        api_url = self.urls["API"]
        reports = self.settings.reports
        week = last_complete_week(utc_now(), reports.tz)
        headers = {"Authorization": f"Bearer {self.keys[Role.VIEWER.value]}"}
        try:
            with httpx.Client(base_url=api_url, headers=headers, timeout=120) as client:
                if probe_lag(client.get("/metrics").text) and not give_up:
                    return None
                for fmt in reports.formats:
                    answer = client.get(f"/v1/reports/{week}.{fmt}")
                    if answer.status_code != 200:
                        return (
                            f"the report of {week} could not be made "
                            f"({answer.status_code}: {answer.text[:200]})"
                        )
        except httpx.TransportError as error:
            return f"the report of {week} could not be made: {error}"
        where = self.urls.get("dashboard", api_url)
        return f"the weekly report of {week} is ready: {where}/reports"


def probe_lag(metrics: str) -> float:
    """``syncwatch_probe_lag_events`` from a ``/metrics`` answer (the stored events the probes
    have not processed yet); infinity when it is missing."""
    for family in text_string_to_metric_families(metrics):
        if family.name == "syncwatch_probe_lag_events":
            return float(family.samples[0].value)
    return float("inf")


def _line_starting(path: Path, prefix: str) -> str | None:
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith(prefix):
                    return line.strip()
    except OSError:
        return None
    return None


def run(settings: Settings, *, api_port: int, dashboard_port: int, out: TextIO = sys.stdout) -> int:
    """``syncwatch demo``: the exit code."""
    demo = Demo(settings, api_port, dashboard_port, [sys.executable, "-m", "syncwatch"], out)
    return demo.run()
