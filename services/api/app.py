"""The API application: ``create_app(settings)`` builds it; the lifespan opens and closes the pool."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from importlib.resources import files
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.responses import Response

from services.api import problems
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.cache import AnswerCache
from services.api.qol.history import QolHistoryKeeper
from services.api.qol.summary import SummaryKeeper
from services.api.bounds import RequestBounds
from services.api.routes import aggregates, audit, catalogue, devices, health, opendata, qol, readings, status
from services.broker.connect import Endpoint
from services.broker.dynsec import Control
from services.core.areas import baltimore
from services.core.settings import Settings
from services.store.pool import async_pool

log = logging.getLogger("citysense.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        problem = settings.admin_token_problem()
        if problem:
            log.warning("admin routes are disabled: %s", problem)
        # open(wait=False): the API starts and answers /healthz with 503 while the database is away,
        # instead of crash-looping; connections are made as soon as it is back.
        pool = async_pool(settings.dsn, "citysense-api", size=settings.api_pool_size,
                          statement_timeout_ms=settings.api_statement_timeout_ms, idle_in_transaction_ms=60_000)
        await pool.open(wait=False)
        app.state.pool = pool
        read_pool = None
        if settings.api_read_database_url is not None:
            read_pool = async_pool(settings.api_read_database_url.get_secret_value(), "citysense-api-read",
                                   size=settings.api_pool_size, statement_timeout_ms=settings.api_statement_timeout_ms,
                                   idle_in_transaction_ms=60_000)
            await read_pool.open(wait=False)
        app.state.read_pool = read_pool
        # Downloads have their own small pool, so however many stall they never take the others' connections;
        # the database ends one whose client stops reading (idle in transaction) or that runs too long.
        export_pool = async_pool(settings.dsn, "citysense-export", size=settings.api_export_concurrency,
                                 statement_timeout_ms=settings.api_export_statement_timeout_s * 1000,
                                 idle_in_transaction_ms=settings.api_export_idle_s * 1000)
        await export_pool.open(wait=False)
        app.state.export_pool = export_pool
        app.state.exports = asyncio.Semaphore(settings.api_export_concurrency)
        password = settings.mqtt_admin_password.get_secret_value()
        app.state.accounts = Control(Endpoint.of(settings), settings.mqtt_admin_username, password) if password else None
        if app.state.accounts is None:
            log.warning("CITYSENSE_MQTT_ADMIN_PASSWORD is not set: devices cannot be registered (no broker credentials)")
        app.state.summary = SummaryKeeper(lambda: read_pool or pool, settings.api_summary_refresh_s)
        app.state.summary.start()
        # Past hours' AQI and noise by CSA, computed once in the background (it writes: the primary's pool).
        app.state.qol_history = QolHistoryKeeper(lambda: pool, settings.timezone)
        app.state.qol_history.start()
        metrics_server = None
        if settings.api_metrics_port:
            metrics_server = serve_metrics(settings, metrics.registry)
        # Everything allocated at start-up (the app, routes, boundaries) is permanent: load the boundaries
        # now (not on the first request, inside the event loop) and keep it all out of the collector's
        # way, so each collection only walks what requests allocate.
        baltimore()
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.summary.stop()
            await app.state.qol_history.stop()
            if metrics_server is not None:
                metrics_server.shutdown()
            if app.state.accounts is not None:
                app.state.accounts.close()
            await export_pool.close()
            if read_pool is not None:
                await read_pool.close()
            await pool.close()

    app = FastAPI(
        title="citysense",
        version="0.1.0",
        description="Sensor readings and quality-of-life indicators for Baltimore's neighbourhoods.",
        lifespan=lifespan,
        docs_url=None,  # served below from installed files, never from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool = None
    app.state.read_pool = None
    app.state.accounts = None
    app.state.cache = AnswerCache(settings.api_cache_s)
    metrics = ApiMetrics(lambda: app.state.pool)
    app.add_middleware(RequestBounds, settings=settings, pool_getter=lambda: app.state.pool)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    problems.install(app)
    app.include_router(health.router)
    for module in (devices, readings, catalogue, aggregates, qol, status, opendata, audit):
        app.include_router(module.router, responses=problems.RESPONSES)

    if not settings.api_metrics_port:  # otherwise served on its own address only (serve_metrics)
        @app.get("/metrics", include_in_schema=False)
        def prometheus_metrics():
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_pages(app, settings)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = problems.add_component(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema
    app.openapi = openapi
    return app


DASHBOARD = files("services.api.dashboard") / "static"
#: Swagger UI 5 (it reads OpenAPI 3.1), as the fastapi-offline package installs it.
SWAGGER = files("fastapi_offline") / "static"


def install_pages(app: FastAPI, settings: Settings) -> None:
    """The pages for people: the dashboard at / and the API documentation at /docs, both from files
    installed with citysense (the dashboard's libraries come from npm; see services/api/dashboard/)."""
    app.mount("/static/docs", StaticFiles(directory=str(SWAGGER)), name="swagger")
    app.mount("/static", StaticFiles(directory=str(DASHBOARD)), name="dashboard")

    @app.get("/", include_in_schema=False)
    def dashboard():
        return FileResponse(str(DASHBOARD / "index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard/config.json", include_in_schema=False)
    def dashboard_config():
        return {"tiles": settings.dashboard_tiles_url, "attribution": settings.dashboard_tiles_attribution,
                "timezone": settings.timezone, "refresh_s": settings.dashboard_refresh_s}

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png")


def serve_metrics(settings: Settings, registry):
    """/metrics on its own address for scrapers only (a thread of this worker). With several workers,
    worker i takes port + i: each is a scrape target, as each has its own counters."""
    index = int(os.environ.get("CITYSENSE_API_WORKER_INDEX", "0"))
    server, _ = start_http_server(settings.api_metrics_port + index, settings.api_metrics_host, registry=registry)
    return server
