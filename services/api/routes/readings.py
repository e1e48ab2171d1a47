"""/v1/readings: raw readings, in time order, keyset-paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.api import pagination
from services.api.deps import PoolDep, SettingsDep
from services.api.problems import Problem
from services.api.responses import rows_response
from services.api.schemas import Page, ReadingPublic
from services.api.scope import time_range
from services.core.catalogue import DEVICE_ID_PATTERN
from services.store import readings as store
from services.store.readings import Unknown

router = APIRouter(prefix="/v1/readings", tags=["readings"])


@router.get("", response_model=Page[ReadingPublic], summary="Raw readings")
async def list_readings(
    pool: PoolDep,
    settings: SettingsDep,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    metric: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$")] = None,
    start: Annotated[datetime | None, Query(description="Inclusive, RFC 3339 (default: end − 1 day).")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive, RFC 3339 (default: now).")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
):
    limit = pagination.page_size(limit, settings)
    start, end = time_range(start, end, settings.api_max_range_days)
    after = pagination.decode(cursor, (datetime, int, int))
    async with pool.connection() as conn:
        try:
            rows = await store.page(conn, start=start, end=end, limit=limit + 1, device_id=device_id, metric=metric,
                                    after=tuple(after) if after else None)
        except Unknown as exc:
            if exc.args[0] == "device":
                raise Problem(404, f"no device {device_id!r}") from None
            raise Problem(404, f"no metric {metric!r} in the catalogue (see /v1/metrics)") from None
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = pagination.encode([last["time"].isoformat(), last["device_key"], last["metric_key"]])
    for r in rows:
        del r["device_key"], r["metric_key"]
    return rows_response({"items": rows[:limit], "next_cursor": next_cursor})
