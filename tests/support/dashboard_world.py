"""A running API with known data for the dashboard's tests: the real app over HTTP (uvicorn in a
thread), its clock fixed at AS_OF, one key per role, a replay target that is a real local
``http.server`` recording what it receives.

The data, as of AS_OF = 2026-11-10T00:00Z (default window W = (Nov 3, Nov 10]):
- Q2C-A (DE01, EMEA, implementation, EUR 1000.00): signed Nov 5, every stage in time, activated
  10 h after T0: due, met, completed in W.
- Q2C-B (US01, AMER, support, USD 5000.00): signed Nov 9 10:00, the middleware failed
  customer.synced at 11:00: stuck at customer.synced on an integration failure
  (integration_oncall), replayable.
- Q2C-C (DE01, EMEA, implementation, EUR 2000.00): signed Nov 6, customer synced, no project:
  stuck at project.created (pmo).
- Q2C-P (DE01, EMEA, implementation, EUR 1000.00): signed Nov 1, activated 20 h later: completed
  in the previous period (Oct 27, Nov 3], so the tiles have a change to show.
- Invoices INV-1 and INV-2 posted in W, INV-1 disputed: dispute rate 0.5. No milestone: billing
  lag has no data."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from core import apikeys
from core.db import Database
from core.roles import Role
from core.settings import load_settings
from probes.flowtypes import configured_flow_types
from probes.runner import run_until_idle
from syncwatch.app import create_app
from tests.support.appserver import serving

AS_OF = datetime(2026, 11, 10, tzinfo=UTC)
MULE = "middleware/mulesoft"
TOKEN_ENV = "SYNCWATCH_TEST_DASHBOARD_MULE_TOKEN"
_numbers = iter(range(1, 1_000_000))


def z(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def nov(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour)


def event(type_: str, at: datetime, corr: str, source: str = "erp/netsuite", **data: Any) -> Any:
    return {
        "id": f"dash-{type_}-{corr}-{next(_numbers)}",
        "source": source,
        "type": type_,
        "time": z(at),
        "correlationid": corr,
        "data": data,
    }


def signed(
    corr: str, at: datetime, value: str, currency: str, le: str, region: str, sl: str
) -> Any:
    return event(
        "contract.signed",
        at,
        corr,
        "clm/ironclad",
        contract_id=f"CTR-{corr}",
        contract_value=value,
        currency=currency,
        legal_entity=le,
        region=region,
        service_line=sl,
    )


def onboarded(corr: str, t0: datetime, activated_after: int, value: str = "1000.00") -> list[Any]:
    return [
        signed(corr, t0, value, "EUR", "DE01", "EMEA", "implementation"),
        event("customer.synced", t0 + timedelta(hours=1), corr, customer_id=f"CUS-{corr}"),
        event("project.created", t0 + timedelta(hours=2), corr, project_id=f"PRJ-{corr}"),
        event("billing_plan.created", t0 + timedelta(hours=3), corr, project_id=f"PRJ-{corr}"),
        event(
            "project.activated",
            t0 + timedelta(hours=activated_after),
            corr,
            project_id=f"PRJ-{corr}",
        ),
    ]


def scenario() -> list[Any]:
    b_t0 = nov(9, 10)
    return [
        *onboarded("Q2C-A", nov(5), 10),
        *onboarded("Q2C-P", nov(1), 20),
        signed("Q2C-B", b_t0, "5000.00", "USD", "US01", "AMER", "support"),
        event(
            "integration.failed",
            b_t0 + timedelta(hours=1),
            "Q2C-B",
            MULE,
            step="customer.synced",
            execution_id="EX-B",
            error="HTTP 500 from the ERP",
        ),
        signed("Q2C-C", nov(6), "2000.00", "EUR", "DE01", "EMEA", "implementation"),
        event("customer.synced", nov(6, 1), "Q2C-C", customer_id="CUS-C"),
        event("invoice.posted", nov(7), "Q2C-A", invoice_id="INV-1"),
        event("invoice.posted", nov(8), "Q2C-A", invoice_id="INV-2"),
        event("invoice.disputed", nov(8, 5), "Q2C-A", invoice_id="INV-1"),
    ]


@dataclass
class Middleware:
    """The middleware's retry endpoint, a real HTTP server: records each path, answers 200."""

    paths: list[str] = field(default_factory=list)
    url: str = ""


@contextmanager
def middleware() -> Iterator[Middleware]:
    found = Middleware()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            found.paths.append(self.path)
            body = json.dumps({"status": "retrying"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class World:
    url: str
    keys: dict[str, str]
    middleware: Middleware

    def get(self, path: str, role: str = "viewer", **params: Any) -> Any:
        answer = httpx.get(
            self.url + path,
            params={k: v for k, v in params.items() if v is not None},
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


@contextmanager
def running_world(
    tmp_path: Path, database_url: str, database: Database, *, load: bool = True
) -> Iterator[World]:
    """The API with the scenario's data (none unless ``load``), served over HTTP, and its fake
    middleware."""
    with middleware() as mule:
        settings = load_settings(
            {
                "data_dir": tmp_path,
                "database_url": database_url,
                "replay": {
                    "targets": {
                        MULE: {
                            "http": {
                                "url": mule.url + "/executions/{execution_id}/retry",
                                "token_env": TOKEN_ENV,
                            }
                        }
                    },
                    "attempts": 1,
                    "timeout_seconds": 5,
                },
            }
        )
        keys = {}
        with database.write() as connection:
            for role in Role:
                keys[role.value] = apikeys.create_key(
                    connection, name=role.value, roles=[role], now=AS_OF
                )
        app = create_app(settings, database, clock=lambda: AS_OF)
        with serving(app, probe_path="/healthz") as url:
            answer = httpx.post(
                url + "/v1/events",
                json=scenario() if load else [],
                headers={"Authorization": f"Bearer {keys['ingest']}"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["rejected"] == [], answer.json()
            run_until_idle(database, configured_flow_types(None), now=AS_OF)
            yield World(url, keys, mule)
