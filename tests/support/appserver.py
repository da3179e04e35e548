"""An ASGI app (syncwatch's, or a tiny one a test makes) served over real HTTP by uvicorn in a
background thread of the test process, on a loopback socket bound before uvicorn starts (so no
port race): for clients that are not Python, such as Prometheus. The app keeps whatever the test
injected (a fixed ``clock``, its database)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def serving(app: Any, *, probe_path: str = "/", timeout: float = 15) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 and yield its base URL (``http://127.0.0.1:PORT``) once
    uvicorn started and ``probe_path`` answers (any status); stop it (``should_exit``, then
    ``force_exit``) and join the thread when the block ends."""
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the test process's logging alone
        log_level="warning",
        lifespan="on",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        errors: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as error:  # reported by the test thread below
                errors.append(error)

        thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_answering(server, thread, url + probe_path, timeout, errors)
            yield url
        finally:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"uvicorn on port {port} did not stop within {2 * timeout}s")
        if errors:
            raise RuntimeError(f"uvicorn on port {port} failed") from errors[0]


def _wait_answering(
    server: uvicorn.Server,
    thread: threading.Thread,
    url: str,
    timeout: float,
    errors: list[BaseException],
) -> None:
    deadline = time.monotonic() + timeout
    last = "not started"
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError(f"uvicorn exited before serving {url}") from (
                    errors[0] if errors else None
                )
            if server.started:
                try:
                    client.get(url)
                except httpx.TransportError as error:
                    last = repr(error)
                else:
                    return
            time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")
