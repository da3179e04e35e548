"""The API as ``syncwatch serve`` runs it, with a fixed clock, for the KPI benchmark.

    SYNCWATCH_DATABASE_URL=... SYNCWATCH_PROBES__ENABLED=false \\
        .venv/bin/python bench/kpis/serve.py --as-of 2026-12-01T00:00:00Z --port 8099

``create_app`` with ``clock`` returning ``--as-of`` (so that "now" is the data set's as_of for
``/v1/kpis`` without ``as_of`` and for ``/metrics``), no probe scheduler, uvicorn with its default
settings (one worker, the access log off: ``--log-level warning``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.settings import load_settings  # noqa: E402
from syncwatch.app import create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--as-of", required=True, type=datetime.fromisoformat)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    as_of: datetime = args.as_of
    if as_of.tzinfo is None:
        raise SystemExit("--as-of needs an offset (Z or +hh:mm)")

    settings = load_settings()
    database = Database.from_url(settings.resolved_database_url)
    upgrade(database)  # as serve does (a no-op on a loaded database)
    app = create_app(settings, database, clock=lambda: as_of, run_scheduler=False)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
