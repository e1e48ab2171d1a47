"""The API application: ``create_app(settings)`` builds it; the lifespan opens and closes the pool."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from services.api import problems
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.cache import AnswerCache
from services.api.routes import aggregates, catalogue, devices, health, opendata, qol, readings, status
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
        pool = async_pool(settings.dsn, "citysense-api", size=settings.api_pool_size)
        await pool.open(wait=False)
        app.state.pool = pool
        # Everything allocated at start-up (the app, routes, boundaries) is permanent: load the boundaries
        # now (not on the first request, inside the event loop) and keep it all out of the collector's
        # way, so each collection only walks what requests allocate.
        baltimore()
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="citysense",
        version="0.1.0",
        description="Sensor readings and quality-of-life indicators for Baltimore's neighbourhoods.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = None
    app.state.cache = AnswerCache(settings.api_cache_s)
    metrics = ApiMetrics(lambda: app.state.pool)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    problems.install(app)
    app.include_router(health.router)
    for module in (devices, readings, catalogue, aggregates, qol, status, opendata):
        app.include_router(module.router, responses=problems.RESPONSES)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
