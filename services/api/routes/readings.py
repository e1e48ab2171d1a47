"""/v1/readings: raw readings, in time order, keyset-paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from psycopg.rows import dict_row

from services.api import keys, pagination
from services.api.deps import PoolDep, SettingsDep
from services.api.problems import Problem
from services.api.responses import rows_response
from services.api.routes.devices import _limit
from services.api.schemas import Page, ReadingPublic
from services.api.scope import time_range
from services.core.catalogue import DEVICE_ID_PATTERN

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
    limit = _limit(limit, settings)
    start, end = time_range(start, end, settings.api_max_range_days)
    after = pagination.decode(cursor, (str, int, int))
    if after:
        try:
            after[0] = datetime.fromisoformat(after[0])
        except ValueError:
            raise Problem(400, "cursor is not valid: pass back the next_cursor of a previous page unchanged") from None
    where = ["r.time >= %(start)s", "r.time < %(end)s"]
    params: dict = {"start": start, "end": end, "limit": limit + 1}
    async with pool.connection() as conn:
        if device_id is not None:
            key = await keys.device(conn, device_id)
            if key is None:
                raise Problem(404, f"no device {device_id!r}")
            where.append("r.device_key = %(device_key)s")
            params["device_key"] = key
        if metric is not None:
            key = await keys.metric(conn, metric)
            if key is None:
                raise Problem(404, f"no metric {metric!r} in the catalogue (see /v1/metrics)")
            where.append("r.metric_key = %(metric_key)s")
            params["metric_key"] = key
        if after:
            where.append("(r.time, r.device_key, r.metric_key) > (%(t)s, %(dk)s, %(mk)s)")
            params.update(t=after[0], dk=after[1], mk=after[2])
        sql = f"""
            SELECT r.time, d.device_id, m.metric, r.value, m.unit, (r.flags & 1) = 1 AS time_assumed,
                   r.device_key, r.metric_key
            FROM readings r JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
            WHERE {' AND '.join(where)}
            ORDER BY r.time, r.device_key, r.metric_key
            LIMIT %(limit)s"""
        rows = await (await conn.cursor(row_factory=dict_row).execute(sql, params)).fetchall()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = pagination.encode([last["time"].isoformat(), last["device_key"], last["metric_key"]])
    for r in rows:
        del r["device_key"], r["metric_key"]
    return rows_response({"items": rows[:limit], "next_cursor": next_cursor})
