"""Sampling, once a second, how the machine's cores are shared and how much memory the server
holds: CPU time of the server process, of the client process and of every PostgreSQL process
(backends, WAL writer, checkpointer, ...), the machine's totals from ``/proc/stat``, and the
server's resident set size (RSS). Runs as a thread of the orchestrator (run.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine() -> dict[str, float]:
    """Seconds of CPU since boot, all cores together: busy, idle and waiting for I/O."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {
        "busy": (user + nice + system + irq + softirq + steal) / _TICKS,
        "idle": idle / _TICKS,
        "iowait": iowait / _TICKS,
    }


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _cpu(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


class Monitor:
    """Start it just before the client, stop it just after; ``result()`` gives the CPU split and
    the server's RSS curve (one sample a second)."""

    def __init__(self, *, server_pid: int | None, watch_postgres: bool, interval: float = 1.0):
        self.server = psutil.Process(server_pid) if server_pid else None
        self.watch_postgres = watch_postgres
        self.interval = interval
        self.client: psutil.Process | None = None
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._pg_first: dict[int, float] = {}
        self._pg_last: dict[int, float] = {}
        self._client_last = 0.0

    def _postgres(self) -> None:
        for process in psutil.process_iter(["name", "create_time"]):
            if process.info["name"] != "postgres":
                continue
            used = _cpu(process)
            if used is None:
                continue
            if process.pid not in self._pg_first:
                # A backend born during the run counts from zero; one alive before, from now.
                born_during = process.info["create_time"] >= self._started_at
                self._pg_first[process.pid] = 0.0 if born_during else used
            self._pg_last[process.pid] = used

    def _postgres_total(self) -> float:
        return sum(self._pg_last[pid] - self._pg_first[pid] for pid in self._pg_last)

    def _sample(self) -> None:
        now = time.perf_counter() - self._t0
        sample: dict[str, float] = {"t": now}
        if self.server is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                sample["server_rss"] = float(self.server.memory_info().rss)
            used = _cpu(self.server)
            if used is not None:
                sample["server_cpu"] = used - self._server_start
        if self.client is not None:
            used = _cpu(self.client)
            if used is not None:
                self._client_last = used
            sample["client_cpu"] = self._client_last
        if self.watch_postgres:
            self._postgres()
            sample["postgres_cpu"] = self._postgres_total()
        machine = _machine()
        sample["machine_busy"] = machine["busy"] - self._machine_start["busy"]
        self.samples.append(sample)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._started_at = time.time() - 0.5
        self._t0 = time.perf_counter()
        self._machine_start = _machine()
        self._load_start = load_average()
        self._server_start = (_cpu(self.server) or 0.0) if self.server else 0.0
        if self.watch_postgres:
            self._postgres()
        self._sample()
        self._thread.start()

    def watch_client(self, pid: int) -> None:
        try:
            self.client = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self.client = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.perf_counter() - self._t0
        self._machine_end = _machine()
        self._load_end = load_average()
        self._peak_hwm = _vm_hwm(self.server.pid) if self.server else None

    def result(self, *, client_cpu: float | None = None) -> dict[str, Any]:
        """CPU seconds per party over the window, as average cores and as a share of both cores;
        ``client_cpu`` (the client's own count) replaces the sampled one when given."""
        last = self.samples[-1]
        wall = self.wall
        cores = os.cpu_count() or 1
        machine = {k: self._machine_end[k] - self._machine_start[k] for k in self._machine_end}
        parties = {
            "server": last.get("server_cpu", 0.0) if self.server else None,
            "client": client_cpu if client_cpu is not None else last.get("client_cpu"),
            "postgres": last.get("postgres_cpu") if self.watch_postgres else None,
        }
        known = sum(v for v in parties.values() if v)
        split: dict[str, Any] = {}
        for name, seconds in parties.items():
            if seconds is None:
                continue
            split[name] = _share(seconds, wall, cores)
        split["other"] = _share(max(0.0, machine["busy"] - known), wall, cores)
        split["idle"] = _share(machine["idle"], wall, cores)
        split["iowait"] = _share(machine["iowait"], wall, cores)
        result: dict[str, Any] = {
            "wall_seconds": wall,
            "cores": cores,
            "load_average_1m": {"start": self._load_start, "end": self._load_end},
            "cpu": split,
        }
        if self.server is not None:
            result["server_rss"] = _rss_summary(self.samples, self._peak_hwm)
        return result


def _share(seconds: float, wall: float, cores: int) -> dict[str, float]:
    return {
        "cpu_seconds": round(seconds, 2),
        "cores": round(seconds / wall, 3) if wall else 0.0,
        "share_of_machine": round(seconds / (wall * cores), 3) if wall else 0.0,
    }


def _vm_hwm(pid: int) -> int | None:
    """The kernel's peak RSS of the process (VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_summary(samples: list[dict[str, float]], hwm: int | None) -> dict[str, Any]:
    """Peak RSS, the curve (MB, one point a second), and whether it is flat: after the first
    quarter of the run, the RSS moves by less than 5 % of the peak (or 10 MB)."""
    points = [(s["t"], s["server_rss"]) for s in samples if "server_rss" in s]
    if not points:
        return {}
    mb = 1024 * 1024
    peak = max(rss for _, rss in points)
    steady = points[len(points) // 4 :]
    low = min(rss for _, rss in steady)
    high = max(rss for _, rss in steady)
    slope = _slope(steady) * 60 / mb  # MB per minute
    tolerance = max(0.05 * peak, 10 * mb)
    return {
        "peak_mb": round(peak / mb, 1),
        "vm_hwm_mb": round(hwm / mb, 1) if hwm else None,
        "start_mb": round(points[0][1] / mb, 1),
        "end_mb": round(points[-1][1] / mb, 1),
        "steady_min_mb": round(low / mb, 1),
        "steady_max_mb": round(high / mb, 1),
        "steady_slope_mb_per_minute": round(slope, 2),
        "flat": (high - low) <= tolerance,
        "curve_mb": [round(rss / mb, 1) for _, rss in points],
    }


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var
