"""Device and metric ids → their integer keys, remembered briefly: a page of readings then costs one
database round trip instead of three. A decommissioned device's key is forgotten within a minute, and
its readings are deleted with it, so a stale key finds nothing."""

from __future__ import annotations

from cachetools import TTLCache

_devices: TTLCache = TTLCache(maxsize=100_000, ttl=60)
_metrics: TTLCache = TTLCache(maxsize=1_000, ttl=300)


async def _lookup(cache: TTLCache, conn, sql: str, value: str) -> int | None:
    if value in cache:
        return cache[value]
    row = await (await conn.execute(sql, (value,))).fetchone()
    if row is not None:  # unknown ids are not remembered: a device registered a moment ago is found
        cache[value] = row[0]
    return row[0] if row else None


async def device(conn, device_id: str) -> int | None:
    return await _lookup(_devices, conn, "SELECT device_key FROM devices WHERE device_id = %s", device_id)


async def metric(conn, code: str) -> int | None:
    return await _lookup(_metrics, conn, "SELECT metric_key FROM metrics WHERE metric = %s", code)
