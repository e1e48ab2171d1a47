"""/v1/status: how current the data is (the "currency of datasets" of the city's open-data reports)."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import PoolDep
from services.api.schemas import DeviceKind
from services.api.scope import CsaParam, resolve
from services.store import qol as store

router = APIRouter(tags=["status"])


@router.get("/v1/status/freshness", summary="How fresh the data is, by device kind and CSA",
            description="Per device kind and CSA, over the devices in service: the newest report, the share of devices "
                        "that reported within twice their expected interval (plus 20 s: the ingestor records "
                        "`last_seen` at most every 15 s), and the silent devices with their last report.")
async def freshness(pool: PoolDep, kind: DeviceKind | None = None, csa: CsaParam = None):
    if csa is not None:
        resolve(csa, None, None)
    async with pool.connection() as conn:
        rows = await store.freshness(conn, kind, csa)
    items = [{"kind": k, "csa": c, "devices": n, "newest_reading": newest, "reporting": fresh,
              "share_reporting": round(fresh / n, 3), "silent": silent}
             for k, c, n, newest, fresh, silent in rows]
    return {"items": items, "next_cursor": None}
