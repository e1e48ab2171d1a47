"""/v1/metrics and /v1/areas: the vocabulary of every other answer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from services.api import pagination
from services.api.deps import PoolDep, SettingsDep
from services.api.responses import json_response
from services.api.schemas import AreaPublic, MetricPublic, Page
from services.core.areas import baltimore
from services.core.catalogue import DEVICE_KINDS
from services.store import catalogue as store

router = APIRouter(tags=["catalogue"])


@router.get("/v1/metrics", response_model=Page[MetricPublic], summary="The metric catalogue")
async def list_metrics(pool: PoolDep):
    async with pool.connection() as conn:
        rows = await store.metrics(conn)
    return json_response(Page[MetricPublic], {"items": rows, "next_cursor": None})


@router.get("/v1/areas", response_model=Page[AreaPublic], summary="Community Statistical Areas or neighbourhoods",
            description="Baltimore's 55 CSAs (the unit of its neighbourhood indicators) or 278 neighbourhoods, with a "
                        "reference point inside each, device counts by kind, and boundaries on request.")
async def list_areas(
    pool: PoolDep,
    settings: SettingsDep,
    level: Literal["csa", "neighbourhood"] = "csa",
    geometry: Annotated[bool, Query(description="Include each boundary as a GeoJSON geometry.")] = False,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
):
    limit = pagination.page_size(limit, settings)
    after = pagination.decode(cursor, (str,))
    areas = baltimore()
    chosen = areas.csas if level == "csa" else areas.neighbourhoods
    async with pool.connection() as conn:
        rows = await store.devices_by_area(conn, level)
    counts: dict[str, dict[str, int]] = {}
    for name, kind, n in rows:
        counts.setdefault(name, {k: 0 for k in DEVICE_KINDS})[kind] = n
    names = sorted(n for n in chosen if after is None or n > after[0])
    page = names[:limit]
    items = []
    for name in page:
        a = chosen[name]
        c = counts.get(name, {k: 0 for k in DEVICE_KINDS})
        items.append({
            "name": name, "level": level, "csa": a.csa if level == "neighbourhood" else name,
            "neighbourhoods": list(a.neighbourhoods) if level == "csa" else None,
            "reference_point": {"longitude": a.centroid[0], "latitude": a.centroid[1]},
            "devices": sum(c.values()), "devices_by_kind": c,
            "geometry": a.geometry if geometry else None,
        })
    next_cursor = pagination.encode([page[-1]]) if len(names) > limit else None
    return json_response(Page[AreaPublic], {"items": items, "next_cursor": next_cursor})
