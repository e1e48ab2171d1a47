"""Health for people and orchestrators.

- ``/livez``: the process answers (no database involved): restart it only when this fails.
- ``/readyz``: the database is reachable and its schema has every migration this build carries: send
  traffic only when this passes. A schema newer than the build (a migration ran ahead of a rolling
  upgrade) is still ready: migrations are written to be compatible with the previous release.
- ``/healthz``: the database check alone, as before (kept for existing monitors).
"""

from __future__ import annotations

import logging
from functools import cache

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from services.api.deps import PoolDep
from services.api.schemas import Health, Readiness
from services.store.migrate import applied_versions, discover

router = APIRouter(tags=["health"])
log = logging.getLogger("citysense.api")


@cache
def expected_versions() -> frozenset[int]:
    return frozenset(m.version for m in discover())


@router.get("/livez", summary="Liveness: the process answers", response_model=dict[str, str])
async def livez():
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, summary="Readiness: database reachable, schema current",
            responses={503: {"model": Readiness, "description": "Not ready: `detail` says why"}})
async def readyz(pool: PoolDep):
    try:
        async with pool.connection(timeout=2) as conn:
            applied = await applied_versions(conn)
    except psycopg.errors.UndefinedTable:
        return _not_ready("ok", "the database has no schema yet: run `citysense migrate`")
    except (psycopg.Error, PoolTimeout) as exc:
        return _not_ready("unavailable", f"database unavailable ({type(exc).__name__})")
    missing = sorted(expected_versions() - applied)
    if missing:
        return _not_ready("ok", f"migrations not applied yet: {', '.join(map(str, missing))} (run `citysense migrate`)")
    return {"status": "ready", "database": "ok", "schema": "current", "detail": None}


def _not_ready(database: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": "not ready", "database": database,
                         "schema": "unknown" if database != "ok" else "behind", "detail": detail}, status_code=503)


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "Database unavailable"}})
async def healthz(pool: PoolDep):
    try:
        async with pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, PoolTimeout) as exc:
        log.info("health check: database unavailable (%s)", type(exc).__name__)
        return JSONResponse({"status": "degraded", "database": "unavailable"}, status_code=503)
    return {"status": "ok", "database": "ok"}
