"""/v1/audit: the record of admin writes (services/api/bounds.py writes it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api import pagination
from services.api.deps import Admin, PoolDep, SettingsDep
from services.api.problems import doc
from services.api.responses import json_response
from services.api.schemas import AuditEntry, Page
from services.core.catalogue import DEVICE_ID_PATTERN
from services.store import audit as store

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=Page[AuditEntry], dependencies=[Admin], summary="Admin writes, newest first",
            description="Every authenticated write (registration, change, new credentials, retirement, purge): when, "
                        "which route, which device, from which address, and the answer's status. Never a token or "
                        "a password.",
            responses={401: doc("Missing or wrong admin token")})
async def audit_log(
    pool: PoolDep,
    settings: SettingsDep,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
):
    limit = pagination.page_size(limit, settings)
    before = pagination.decode(cursor, (int,))
    async with pool.connection() as conn:
        rows = await store.page(conn, device_id=device_id, before=before[0] if before else None, limit=limit + 1)
    next_cursor = pagination.encode([rows[limit - 1]["id"]]) if len(rows) > limit else None
    return json_response(Page[AuditEntry], {"items": rows[:limit], "next_cursor": next_cursor},
                         headers={"Cache-Control": "no-store"})
