"""The device registry: registration, moves, retirement and purge, and the inventory's reads.

Rules:
- a device's first placement is valid from -infinity (a backlog may predate its registration);
- a move closes the current placement and opens a new one now: past data stays in the old area;
- retiring keeps the device and its history (published data does not vanish); its readings are refused
  from then on (services/store/ingest.py) and its id cannot be registered again;
- purging deletes the device, its readings, its hourly rollups and placements, and sends its days back
  to the daily rollups; it answers what it deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.store.rollups import MARK_DEVICE_DAYS

COLUMNS = ("device_id", "kind", "latitude", "longitude", "neighbourhood", "csa", "installed", "interval_s", "metadata",
           "status", "status_at", "last_seen", "retired_at")
_SELECT = sql.SQL("SELECT {} FROM devices").format(sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
#: Fields an operator may change (besides the position, which makes a new placement).
EDITABLE = ("kind", "interval_s", "metadata")

#: Upsert-free on purpose: registering an id twice is a conflict the caller reports, not an overwrite.
INSERT_DEVICE = """
INSERT INTO devices (device_id, kind, latitude, longitude, neighbourhood, csa, interval_s, metadata)
VALUES (%(device_id)s, %(kind)s, %(latitude)s, %(longitude)s, %(neighbourhood)s, %(csa)s, %(interval_s)s, %(metadata)s)
ON CONFLICT (device_id) DO NOTHING
RETURNING device_key
"""
INSERT_FIRST_PLACEMENT = """
INSERT INTO device_placements (device_key, valid_from, latitude, longitude, neighbourhood, csa)
VALUES (%(key)s, '-infinity', %(latitude)s, %(longitude)s, %(neighbourhood)s, %(csa)s)
"""


@dataclass(frozen=True)
class Placed:
    """A position with the neighbourhood and CSA that hold it."""

    latitude: float
    longitude: float
    neighbourhood: str
    csa: str


def _values(device: dict, place: Placed) -> dict:
    return {**device, "latitude": place.latitude, "longitude": place.longitude, "neighbourhood": place.neighbourhood,
            "csa": place.csa, "metadata": Jsonb(device.get("metadata") or {})}


# -- writes, async (the API) ------------------------------------------------------------------------------
async def register(conn, device: dict, place: Placed) -> dict | None:
    """Register a device; its row, or None when the id is taken (by a device, retired or not)."""
    async with conn.transaction():
        row = await (await conn.execute(INSERT_DEVICE, _values(device, place))).fetchone()
        if row is None:
            return None
        await conn.execute(INSERT_FIRST_PLACEMENT, {"key": row[0], **_values(device, place)})
    return await get(conn, device["device_id"])


async def get(conn, device_id: str) -> dict | None:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(_SELECT + sql.SQL(" WHERE device_id = %s"), (device_id,))).fetchone()


async def update(conn, device_id: str, changes: dict, place: Placed | None, timezone: str) -> dict | None:
    """Apply ``changes`` (fields of EDITABLE) and, with ``place``, move the device: its current placement
    ends now and a new one starts. None when there is no such device (retired devices included). A new
    reporting interval changes which of its past hours are complete enough to count (the 75 % rule), so
    every day of its data is marked for the rollup job (the same lock order as a purge's)."""
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        # FOR NO KEY UPDATE: does not wait for ingest batches (which hold the row FOR KEY SHARE)
        row = await (await cur.execute(
            "SELECT device_key, latitude, longitude, interval_s FROM devices WHERE device_id = %s "
            "AND retired_at IS NULL FOR NO KEY UPDATE", (device_id,))).fetchone()
        if row is None:
            return None
        assignments = {k: (Jsonb(v) if k == "metadata" else v) for k, v in changes.items() if k in EDITABLE}
        if assignments.get("interval_s", row["interval_s"]) != row["interval_s"]:
            await cur.execute(MARK_DEVICE_DAYS, {"key": row["device_key"], "tz": timezone})
        if place is not None and (place.latitude, place.longitude) != (row["latitude"], row["longitude"]):
            assignments.update(latitude=place.latitude, longitude=place.longitude,
                               neighbourhood=place.neighbourhood, csa=place.csa)
            await cur.execute("UPDATE device_placements SET valid_to = now() WHERE device_key = %s AND valid_to IS NULL",
                              (row["device_key"],))
            await cur.execute(
                "INSERT INTO device_placements (device_key, valid_from, latitude, longitude, neighbourhood, csa) "
                "VALUES (%s, now(), %s, %s, %s, %s)",
                (row["device_key"], place.latitude, place.longitude, place.neighbourhood, place.csa))
        if assignments:
            await cur.execute(
                sql.SQL("UPDATE devices SET {} WHERE device_key = {}").format(
                    sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in assignments),
                    sql.Placeholder("device_key")),
                {**assignments, "device_key": row["device_key"]})
    return await get(conn, device_id)


async def retire(conn, device_id: str) -> dict | None:
    """Retire a device (idempotent); its row, or None when there is no such device."""
    async with conn.transaction():
        await conn.execute("UPDATE devices SET retired_at = now() WHERE device_id = %s AND retired_at IS NULL",
                           (device_id,))
        return await get(conn, device_id)


async def purge(conn, device_id: str, timezone: str) -> dict | None:
    """Delete a device and everything stored about it; what was deleted, or None when there is no such
    device. Lock order as the ingestor's: the device row first (an ingest batch holding it FOR KEY SHARE
    finishes first, and none can write for it afterwards), then the dirty-day marks, then the data."""
    async with conn.transaction():
        row = await (await conn.execute("DELETE FROM devices WHERE device_id = %s RETURNING device_key",
                                        (device_id,))).fetchone()
        if row is None:
            return None
        key = row[0]
        await conn.execute(MARK_DEVICE_DAYS, {"key": key, "tz": timezone})
        readings = (await conn.execute("DELETE FROM readings WHERE device_key = %s", (key,))).rowcount
        hourly = (await conn.execute("DELETE FROM readings_hourly WHERE device_key = %s", (key,))).rowcount
    return {"device_id": device_id, "readings_deleted": readings, "hourly_rollups_deleted": hourly}


COUNT_IN_SCOPE = """
SELECT count(*) FROM devices
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(csa)s::text IS NULL OR csa = %(csa)s)
  AND (%(neighbourhood)s::text IS NULL OR neighbourhood = %(neighbourhood)s)
"""


async def count_in_scope(conn, *, kind=None, csa=None, neighbourhood=None) -> int:
    """Devices (retired included: their history is aggregated too) of a kind in an area."""
    cur = await conn.execute(COUNT_IN_SCOPE, {"kind": kind, "csa": csa, "neighbourhood": neighbourhood})
    return (await cur.fetchone())[0]


async def page(conn, *, kind=None, csa=None, neighbourhood=None, status=None, include_retired=False,
               after: str | None = None, limit: int = 100) -> list[dict]:
    """Devices by id, ``limit`` of them after ``after``; retired ones only when asked."""
    filters = {"kind": kind, "csa": csa, "neighbourhood": neighbourhood, "status": status}
    given = tuple(k for k, v in filters.items() if v is not None)
    q = _page_query(given, include_retired, after is not None)
    params = {"limit": limit, "after": after, **{k: filters[k] for k in given}}
    return await (await conn.cursor(row_factory=dict_row).execute(q, params)).fetchall()


@cache
def _page_query(given: tuple[str, ...], include_retired: bool, keyset: bool) -> str:
    """The page's statement for a combination of filters, composed once (composing it every time was a tenth
    of this function's time in a single-connection loop, about 0.1 ms a request)."""
    where = [sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column)) for column in given]
    if not include_retired:
        where.append(sql.SQL("retired_at IS NULL"))
    if keyset:
        where.append(sql.SQL("device_id > %(after)s"))
    q = _SELECT + (sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")) + \
        sql.SQL(" ORDER BY device_id LIMIT %(limit)s")
    return q.as_string()


# -- writes, sync (the simulator, tests) -------------------------------------------------------------------
def register_many(dsn: str, devices: list[tuple[dict, Placed]]) -> int:
    """Register the devices not yet registered; returns how many were new."""
    new = 0
    with psycopg.connect(dsn) as conn:
        for device, place in devices:
            row = conn.execute(INSERT_DEVICE, _values(device, place)).fetchone()
            if row is not None:
                conn.execute(INSERT_FIRST_PLACEMENT, {"key": row[0], **_values(device, place)})
                new += 1
    return new
