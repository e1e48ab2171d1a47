"""Raw readings for the API: keyset pages in (time, device, metric) order. Ids are resolved in the
database on every request (one indexed lookup), so a device purged and registered again is never served
under its old key."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import psycopg
from psycopg import sql

from services.store.catalogue import metric_names

RESOLVE = """
SELECT (SELECT device_key FROM devices WHERE device_id = %(device_id)s),
       (SELECT metric_key FROM metrics WHERE metric = %(metric)s)
"""


class Unknown(LookupError):
    """The named device or metric does not exist: ``args[0]`` is "device" or "metric"."""


async def page(conn, *, start: datetime, end: datetime, limit: int, device_id: str | None = None,
               metric: str | None = None, after: tuple[datetime, int, int] | None = None) -> list[dict]:
    """Up to ``limit`` readings in [start, end) after the ``after`` key; each row carries its key
    (device_key, metric_key) for the next cursor. Raises Unknown for an unknown device or metric.
    One round trip: the ids are resolved inside the query, and again apart only when it finds nothing
    (to tell an unknown id from an empty range). Metric names and units come from the catalogue's copy
    (services/store/catalogue.py), and a device's page names the device asked for: the query joins
    nothing it does not need, which took a third of its time in the planner."""
    params: dict = {"start": start, "end": end, "limit": limit, "device_id": device_id, "metric": metric}
    if after is not None:
        params.update(t=after[0], dk=after[1], mk=after[2])
    q = _page_query(device_id is not None, metric is not None, after is not None)
    rows = await (await conn.execute(q, params)).fetchall()
    if not rows and (device_id is not None or metric is not None):
        device_key, metric_key = await (await conn.execute(RESOLVE, params)).fetchone()
        if device_id is not None and device_key is None:
            raise Unknown("device")
        if metric is not None and metric_key is None:
            raise Unknown("metric")
    names = await metric_names(conn, {r[2] for r in rows})
    return [{"time": t, "device_id": d, "metric": names[mk][0], "value": v, "unit": names[mk][1], "time_assumed": a,
             "device_key": dk, "metric_key": mk} for t, d, mk, v, a, dk in rows]


@cache
def _page_query(by_device: bool, by_metric: bool, keyset: bool) -> str:
    """The page's statement for a combination of filters, composed once."""
    where = [sql.SQL("r.time >= %(start)s"), sql.SQL("r.time < %(end)s")]
    if by_device:
        where.append(sql.SQL("r.device_key = (SELECT device_key FROM devices WHERE device_id = %(device_id)s)"))
    if by_metric:
        where.append(sql.SQL("r.metric_key = (SELECT metric_key FROM metrics WHERE metric = %(metric)s)"))
    if keyset:
        where.append(sql.SQL("(r.time, r.device_key, r.metric_key) > (%(t)s, %(dk)s, %(mk)s)"))
    name = sql.SQL("%(device_id)s::text" if by_device else "d.device_id")
    source = sql.SQL("readings r" if by_device else "readings r JOIN devices d USING (device_key)")
    return sql.SQL("""
        SELECT r.time, {name}, r.metric_key, r.value, (r.flags & 1) = 1, r.device_key
        FROM {source}
        WHERE {where}
        ORDER BY r.time, r.device_key, r.metric_key
        LIMIT %(limit)s""").format(name=name, source=source, where=sql.SQL(" AND ").join(where)).as_string()


def any_stored(dsn: str) -> bool:
    """True when the database already holds readings (``up`` backfills history only on a fresh one)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM readings)").fetchone()[0]
