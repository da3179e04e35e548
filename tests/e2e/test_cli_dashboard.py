"""``syncwatch dashboard``: the real console script starts Streamlit on the given port (its health
endpoint answers), and refuses clearly to start without SYNCWATCH_API_URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SYNCWATCH = Path(sys.executable).parent / "syncwatch"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    env.update(SYNCWATCH_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path), NO_COLOR="1")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_dashboard_needs_the_api_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(SYNCWATCH), "dashboard"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SYNCWATCH_API_URL is not set" in done.stderr


def test_the_dashboard_serves_on_the_given_port(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, SYNCWATCH_API_URL="http://127.0.0.1:9", SYNCWATCH_API_KEY="k")
    process = subprocess.Popen(
        [str(SYNCWATCH), "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, process.communicate(timeout=5)
        assert health.status_code == 200
        assert health.text == "ok"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
