"""/v1/aggregates: readings in time buckets, by city, CSA, neighbourhood or device.

Four sources, the cheapest that can answer (services/store/aggregates.py): buckets of whole days by city
or CSA come from the daily CSA rollups (refreshed by the ingestor about once a minute); other buckets of
whole hours by city or CSA from the hourly CSA rollups (refreshed with them; the hours not yet refreshed
from the hourly rollups); other buckets of whole hours from the hourly rollups (kept in the same
transaction as the readings); shorter buckets from the raw hypertable. A day is the city's local day
(CITYSENSE_TIMEZONE): a bucket of whole days starts at local midnight, and a day of a DST change is 23 or 25
hours long. Shorter buckets are UTC-aligned. Each hour counts for the area its device was in at that hour.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from services.api import pagination
from services.api.deps import PoolDep, SettingsDep
from services.api.problems import Problem
from services.api.qol.noise import level
from services.api.responses import cached_json
from services.api.schemas import AggregatePage, DeviceKind
from services.api.scope import CsaParam, NeighbourhoodParam, resolve, time_range
from services.core.areas import baltimore
from services.core.catalogue import DEVICE_ID_PATTERN
from services.store.devices import count_in_scope
from services.store import aggregates as store
from services.store.readings import Unknown

router = APIRouter(tags=["aggregates"])
_BUCKET = re.compile(r"^(\d{1,4})(m|h|d)$")


def parse_bucket(text: str) -> timedelta:
    m = _BUCKET.match(text)
    if not m:
        raise Problem(422, "bucket: a number and a unit, m, h or d (5m, 15m, 1h, 1d…)")
    n, unit = int(m.group(1)), m.group(2)
    size = {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]
    if not timedelta(minutes=1) <= size <= timedelta(days=366):
        raise Problem(422, "bucket: between 1m and 366d")
    return size


@router.get("/v1/aggregates", response_model=AggregatePage, summary="Readings in time buckets")
async def aggregates(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    metric: Annotated[str, Query(max_length=40, pattern=r"^[a-z0-9_]+$")],
    bucket: Annotated[str, Query(max_length=8, description="5m, 15m, 1h, 1d, 7d…")] = "1h",
    start: Annotated[datetime | None, Query(description="Inclusive, RFC 3339 (default: end − 1 day).")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive, RFC 3339 (default: now).")] = None,
    group_by: Literal["city", "csa", "neighbourhood", "device"] = "city",
    csa: CsaParam = None,
    neighbourhood: NeighbourhoodParam = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    kind: DeviceKind | None = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
):
    limit = pagination.page_size(limit, settings)
    size = parse_bucket(bucket)
    scope = resolve(csa, neighbourhood, device_id)
    explicit_end, start_param = end is not None, start
    whole_hours = size % timedelta(hours=1) == timedelta(0)
    whole_days = size % timedelta(days=1) == timedelta(0)
    by_csa = group_by in ("city", "csa") and neighbourhood is None and device_id is None and kind is None
    if whole_days and by_csa:
        source = "daily_rollups"
    elif whole_hours and by_csa:
        source = "city_hourly_rollups" if group_by == "city" and csa is None else "csa_hourly_rollups"
    else:
        source = "hourly_rollups" if whole_hours else "raw"
    max_days = settings.api_max_aggregate_days if whole_hours else settings.api_max_range_days
    start, end = time_range(start, end, max_days, too_wide=f"a {bucket} aggregate may cover at most {max_days} days"
                            + ("" if whole_hours else " (buckets of whole hours may cover more)"))
    after = pagination.decode(cursor, (str, datetime))
    await check_cells(pool, settings, scope, group_by, kind, start, end, size, bucket)
    now = datetime.now(timezone.utc)
    key = ("aggregates", metric, size, start_param, end if explicit_end else now.replace(second=0, microsecond=0), group_by,
           scope, kind, limit, cursor)

    async def compute():
        async with pool.connection() as conn:
            try:
                m, g0, g1, rows = await store.aggregate(
                    conn, metric=metric, size=size, start=start, end=end, group_by=group_by, scope=scope.key(),
                    kind=kind, limit=limit + 1, after=tuple(after) if after else None, source=source,
                    timezone=settings.timezone)
            except Unknown:
                raise Problem(404, f"no metric {metric!r} in the catalogue (see /v1/metrics)") from None
        _, unit, aggregation = m
        items = [_item(r, aggregation) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = pagination.encode([last[1], last[0].isoformat()])
        return {"items": items, "next_cursor": next_cursor, "metric": metric, "unit": unit, "bucket": bucket,
                "start": g0, "end": g1, "source": source}
    # the items are the database's columns in the model's order and types (tests/integration/test_api_data.py
    # checks each source's answer against the model): serialised without a second validation
    return await cached_json(request, key, explicit_end and end < now - timedelta(hours=2), AggregatePage, compute,
                             validate=False)


async def check_cells(pool, settings, scope, group_by: str, kind, start: datetime, end: datetime, size: timedelta,
                      bucket: str) -> None:
    """Refuse (422) a question of more than CITYSENSE_API_MAX_AGGREGATE_CELLS buckets × groups, before any
    of it is computed: the whole aggregation runs before a page is cut from it."""
    buckets = math.ceil((end - start) / size) + 1  # +1: buckets align to their grid, not to start
    areas = baltimore()
    if group_by == "city" or scope.level == "device" or (scope.level == "neighbourhood" and group_by != "device") \
            or (scope.level == "csa" and group_by == "csa"):
        groups = 1
    elif group_by == "csa":
        groups = len(areas.csas)
    elif group_by == "neighbourhood":
        groups = len(areas.csas[scope.name].neighbourhoods) if scope.level == "csa" else len(areas.neighbourhoods)
    else:
        async with pool.connection() as conn:
            groups = await count_in_scope(conn, kind=kind, csa=scope.name if scope.level == "csa" else None,
                                          neighbourhood=scope.name if scope.level == "neighbourhood" else None)
    cap = settings.api_max_aggregate_cells
    if buckets * max(groups, 1) > cap:
        raise Problem(422, f"this asks for about {buckets} buckets of {bucket} × {groups} groups ({group_by}) = "
                           f"{buckets * groups} values, more than the {cap} one request may: use a larger bucket, a "
                           "shorter range, or a narrower question (csa=, neighbourhood=, device_id=, kind=, or a "
                           "coarser group_by)")


def _item(row, aggregation: str) -> dict:
    b, grp, count, total, mn, mx, energy = row
    if aggregation == "energy":
        mean = level(energy / count) if energy and count else None
    else:
        mean = total / count if count else None
    return {"bucket": b, "group": grp, "count": count, "mean": mean, "min": mn, "max": mx,
            "sum": total if aggregation == "sum" else None}
