"""The FastAPI application factory: mounts every router, maps errors to JSON once, here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import syncwatch
from alerts.replays import Replayer
from alerts.routes import router as alerts_router
from collector.routes import router as collector_router
from collector.webhooks import load_presets
from collector.webhooks import router as webhooks_router
from core.apikeys import KeyVerifier
from core.db import Database
from core.errors import StoreUnavailable, SyncwatchError
from core.instruments import Instruments
from core.settings import Settings
from core.web import Clock, utc_now
from kpis.exporter import StoreCollector
from kpis.exporter import router as metrics_router
from kpis.reports.routes import router as reports_router
from kpis.routes import router as kpis_router
from probes.flowtypes import configured_flow_types
from probes.routes import router as probes_router
from syncwatch.audit_routes import router as audit_router
from syncwatch.scheduler import make_scheduler
from syncwatch.telemetry import trace_requests

log = logging.getLogger("syncwatch.api")

_HTTP_CODES = {
    400: "malformed",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "store_unavailable",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def create_app(
    settings: Settings,
    database: Database,
    *,
    clock: Clock = utc_now,
    run_scheduler: bool = False,
    replayer: Replayer | None = None,
) -> FastAPI:
    """Build the API. The caller owns the database (and applies migrations before serving).
    With ``run_scheduler``, the probe cycles run in this process while the app is up. A bad
    ``flows`` configuration raises ConfigError here, before anything starts. ``replayer`` sends
    the replays (tests pass one with their own transport); by default one from the settings."""
    flow_types = configured_flow_types(settings.flows)
    presets = load_presets(
        settings.webhooks, settings.preset_dirs
    )  # a bad mapping preset stops start-up here

    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    registry = CollectorRegistry()
    instruments = Instruments(registry, sources=settings.sources)
    registry.register(
        StoreCollector(
            database,
            flow_types,
            clock,
            exemplars=settings.metrics.exemplars,
            slo=settings.slo,
            sources=settings.sources,
        )
    )

    replayer = replayer or Replayer(database, settings.replay)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        scheduler = (
            make_scheduler(database, settings, flow_types, instruments, replayer, clock)
            if run_scheduler
            else None
        )
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=True)
            replayer.close()

    app = FastAPI(
        lifespan=lifespan,
        title="syncwatch",
        version=syncwatch.__version__,
        description="Observability and business KPIs for the CLM -> middleware -> ERP bridge.",
    )
    app.state.settings = settings
    app.state.database = database
    app.state.clock = clock
    app.state.flow_types = flow_types
    app.state.key_verifier = KeyVerifier(database, cache_seconds=settings.key_cache_seconds)
    app.state.registry = registry
    app.state.instruments = instruments
    app.state.replayer = replayer
    app.state.presets = presets

    app.include_router(collector_router)
    app.include_router(webhooks_router)
    app.include_router(probes_router)
    app.include_router(kpis_router)
    app.include_router(reports_router)
    app.include_router(alerts_router)
    app.include_router(metrics_router)
    app.include_router(audit_router)
    _add_health(app, database)
    _add_error_handlers(app)
    trace_requests(app, settings.tracing)  # when tracing.enabled and tracing.requests
    return app


def _add_health(app: FastAPI, database: Database) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "database unavailable"}})
    async def readyz() -> JSONResponse:
        """Readiness: the database answers."""
        try:
            await run_in_threadpool(database.ping)
        except StoreUnavailable as error:
            return JSONResponse(
                status_code=503, content=error_body(error.code, error.message, error.details)
            )
        return JSONResponse({"status": "ok", "database": "ok"})


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SyncwatchError)
    async def _syncwatch_error(request: Request, error: SyncwatchError) -> JSONResponse:
        if error.status_code >= 500:
            log.warning(
                "%s %s -> %s: %s",
                request.method,
                request.url.path,
                error.status_code,
                error.message,
            )
        return JSONResponse(
            status_code=error.status_code,
            content=error_body(error.code, error.message, error.details),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        return JSONResponse(
            status_code=error.status_code,
            content=error_body(code, str(error.detail)),
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in error.errors()
        ]
        return JSONResponse(
            status_code=422, content=error_body("invalid", "the request is invalid", details)
        )
