"""/healthz: is the API up, and can it reach its database?"""

from __future__ import annotations

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.deps import PoolDep
from services.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "Database unavailable"}})
async def healthz(pool: PoolDep):
    try:
        async with pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, Exception):
        return JSONResponse({"status": "degraded", "database": "unavailable"}, status_code=503)
    return {"status": "ok", "database": "ok"}
