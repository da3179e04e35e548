"""A real Alertmanager (Debian's prometheus-alertmanager 0.25) for tests: started on a free
loopback port with a temporary data directory, clustering off, and the configuration the test
gives; ended (SIGTERM, then SIGKILL) when the ``with`` block ends. Its log goes to a file whose
tail is printed when the block fails. Like :mod:`tests.support.prometheus`, a missing binary fails
the test (never skips it).

    with alertmanager.running(config, tmp_path) as manager:
        prometheus.running(..., alertmanager_url=manager.url)
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.prometheus import binary, wait_ready
from tests.support.servers import free_port, stop_process, tail

ALERTMANAGER = "prometheus-alertmanager"


@dataclass
class Alertmanager:
    url: str
    log: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(repr=False)

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts it holds now."""
        answer = self.client.get(f"{self.url}/api/v2/alerts")
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()
        return result

    def diagnostics(self) -> str:
        try:
            held: Any = self.alerts()
        except httpx.HTTPError as error:
            held = repr(error)
        return f"alerts: {held}\nlog ({self.log}):\n{tail(self.log)}"


@contextmanager
def running(
    config: dict[str, Any], directory: Path, *, timeout: float = 30
) -> Iterator[Alertmanager]:
    """An Alertmanager with ``config`` (as data), ready (``/-/ready``) when this yields."""
    executable = binary(ALERTMANAGER)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log = directory / "alertmanager.log"
    for attempt in range(3):  # the free port may be taken before Alertmanager binds it
        port = free_port()
        args = [
            executable,
            f"--config.file={config_path}",
            f"--storage.path={directory / f'data-{attempt}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: one instance, no port 9094
            "--log.level=debug",
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
                if not wait_ready(client, url, process, timeout, "Alertmanager"):
                    if "address already in use" in tail(log, 2000):
                        continue
                    raise AssertionError(
                        f"Alertmanager exited with {process.returncode} before ready\n"
                        f"log:\n{tail(log)}"
                    )
                manager = Alertmanager(url=url, log=log, process=process, client=client)
                try:
                    yield manager
                except BaseException:
                    print(f"--- Alertmanager ({url}) at the failure ---\n{manager.diagnostics()}")
                    raise
                return
            finally:
                stop_process(process)
    raise AssertionError(f"Alertmanager found no free port in 3 attempts\nlog:\n{tail(log)}")
