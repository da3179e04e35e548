"""Real processes for end-to-end tests: ``syncwatch`` commands and servers, and a throw-away
PostgreSQL cluster that a test may stop and start. Every wait is bounded; every process is ended
(and waited for, so no ResourceWarning) by the helper that started it."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

#: The console script of the virtualenv that runs the tests.
SYNCWATCH = str(Path(sys.executable).parent / "syncwatch")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def syncwatch_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any ``SYNCWATCH_*`` variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    env.update(settings)
    return env


def run_syncwatch(
    args: list[str], env: Mapping[str, str], *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one ``syncwatch`` command to its end; fail the test with its output when it fails."""
    result = subprocess.run(
        [SYNCWATCH, *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"syncwatch {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def create_key(env: Mapping[str, str], *roles: str) -> str:
    args = ["keys", "create"]
    for role in roles:
        args += ["--role", role]
    return run_syncwatch(args, env).stdout.strip().splitlines()[-1]


def wait_ready(
    url: str, *, timeout: float = 30, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``GET {url}/readyz`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode} before ready")
            try:
                answer = client.get(f"{url}/readyz")
            except httpx.TransportError as error:
                last = repr(error)
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            time.sleep(0.1)
    raise TimeoutError(f"{url}/readyz not ready within {timeout}s: {last}")


def start_serve(
    env: Mapping[str, str], port: int, log_path: Path, *, timeout: float = 30
) -> subprocess.Popen[bytes]:
    """Start ``syncwatch serve --port port`` (output appended to ``log_path``) and return once
    ``/readyz`` answers 200. The caller ends it with :func:`stop_process`."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [SYNCWATCH, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=timeout, process=process)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10
) -> int:
    """Send ``sig`` (if still running), wait, and SIGKILL when it does not end in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode


def tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError as error:
        return f"(cannot read {path}: {error})"


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` that holds ``initdb`` and ``pg_ctl``."""
    candidates = [
        Path(d)
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists()
    ]
    if not candidates:
        return None

    def version(path: Path) -> tuple[int, ...]:
        name = path.parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    return max(candidates, key=version)


class PgCluster:
    """A PostgreSQL cluster of its own in a temporary directory (trust auth, 127.0.0.1 only)."""

    def __init__(self, bin_dir: Path, base: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data = base / "data"
        self.log = base / "postgres.log"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        # initdb and the server refuse to run as root: run them as the postgres OS user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*prefix, *args],
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
                f"server log:\n{tail(self.log)}"
            )

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.base}"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started temporary cluster, stopped and removed afterwards (even when the test fails).
    Fails the test when the PostgreSQL server binaries are not installed (scripts/setup.sh
    installs them): a durability test that silently skips proves nothing."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin")
    # Directly under the system temporary directory: pytest's tmp_path is private to root, and the
    # postgres user must be able to reach its data and socket directory.
    base = Path(tempfile.mkdtemp(prefix="syncwatch-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(base, user="postgres", group="postgres")
        cluster = PgCluster(bin_dir, base, free_port())
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running():
                try:
                    cluster.stop("immediate")
                except (RuntimeError, subprocess.TimeoutExpired):
                    _kill_postmaster(cluster)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _kill_postmaster(cluster: PgCluster) -> None:
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
