"""/v1/devices: the sensor inventory."""

from __future__ import annotations

from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Path, Query, Response
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.api import pagination
from services.api.deps import Admin, PoolDep, SettingsDep
from services.api.problems import Problem
from services.api.responses import json_response
from services.api.scope import CsaParam, NeighbourhoodParam
from services.api.schemas import DeviceCreate, DeviceKind, DevicePatch, DevicePublic, Page
from services.core.areas import OutsideCity
from services.core.catalogue import DEVICE_ID_PATTERN
from services.core.devices import INSERT_DEVICE, placed

router = APIRouter(prefix="/v1/devices", tags=["devices"])

COLUMNS = ("device_id, kind, latitude, longitude, neighbourhood, csa, installed, interval_s, metadata, "
           "status, status_at, last_seen")
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="The device's id.")]


@router.get("", response_model=Page[DevicePublic], summary="List devices")
async def list_devices(
    pool: PoolDep,
    settings: SettingsDep,
    kind: DeviceKind | None = None,
    csa: CsaParam = None,
    neighbourhood: NeighbourhoodParam = None,
    status: Literal["online", "offline", "unknown"] | None = None,
    limit: Annotated[int | None, Query(ge=1, description="Page size (at most CITYSENSE_API_MAX_PAGE_SIZE).")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
):
    limit = _limit(limit, settings)
    after = pagination.decode(cursor, (str,))
    where, params = [], {"limit": limit + 1}
    for column, value in (("kind", kind), ("csa", csa), ("neighbourhood", neighbourhood), ("status", status)):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = value
    if after:
        where.append("device_id > %(after)s")
        params["after"] = after[0]
    sql = f"SELECT {COLUMNS} FROM devices {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY device_id LIMIT %(limit)s"
    async with pool.connection() as conn:
        rows = await (await conn.cursor(row_factory=dict_row).execute(sql, params)).fetchall()
    next_cursor = pagination.encode([rows[limit - 1]["device_id"]]) if len(rows) > limit else None
    return json_response(Page[DevicePublic], {"items": rows[:limit], "next_cursor": next_cursor})


@router.get("/{device_id}", response_model=DevicePublic, summary="One device",
            responses={404: {"description": "No such device"}})
async def get_device(device_id: DeviceId, pool: PoolDep):
    async with pool.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(f"SELECT {COLUMNS} FROM devices WHERE device_id = %s", (device_id,))
        row = await cur.fetchone()
    if row is None:
        raise Problem(404, f"no device {device_id!r}")
    return json_response(DevicePublic, row)


@router.post("", response_model=DevicePublic, status_code=201, dependencies=[Admin], summary="Register a device",
             responses={401: {"description": "Missing or wrong admin token"}, 409: {"description": "Already registered"},
                        422: {"description": "Invalid body, or a position outside the city"}})
async def create_device(body: DeviceCreate, pool: PoolDep):
    try:
        values = placed(body.model_dump())
    except OutsideCity as exc:
        raise Problem(422, str(exc)) from None
    values["metadata"] = Jsonb(values["metadata"])
    async with pool.connection() as conn:
        try:
            inserted = await (await conn.execute(INSERT_DEVICE, values)).fetchone()
        except psycopg.errors.CheckViolation as exc:
            raise Problem(422, f"device refused by the database: {exc.diag.message_primary}") from None
        if inserted is None:
            raise Problem(409, f"device {body.device_id!r} is already registered")
        row = await (await conn.cursor(row_factory=dict_row).execute(
            f"SELECT {COLUMNS} FROM devices WHERE device_id = %s", (body.device_id,))).fetchone()
    return row


@router.patch("/{device_id}", response_model=DevicePublic, dependencies=[Admin], summary="Change a device",
              responses={401: {"description": "Missing or wrong admin token"}, 404: {"description": "No such device"},
                         422: {"description": "Invalid body, or a position outside the city"}})
async def update_device(device_id: DeviceId, body: DevicePatch, pool: PoolDep):
    changes = body.model_dump(exclude_unset=True)
    if any(changes.get(k) is None and k in changes for k in ("kind", "latitude", "longitude", "interval_s", "metadata")):
        raise Problem(422, "fields may be changed, not set to null")
    async with pool.connection() as conn:
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            row = await (await cur.execute(f"SELECT {COLUMNS} FROM devices WHERE device_id = %s FOR UPDATE",
                                           (device_id,))).fetchone()
            if row is None:
                raise Problem(404, f"no device {device_id!r}")
            if "latitude" in changes or "longitude" in changes:
                try:
                    loc = placed({"latitude": changes.get("latitude", row["latitude"]),
                                  "longitude": changes.get("longitude", row["longitude"])})
                except OutsideCity as exc:
                    raise Problem(422, str(exc)) from None
                changes.update(latitude=loc["latitude"], longitude=loc["longitude"],
                               neighbourhood=loc["neighbourhood"], csa=loc["csa"])
            if "metadata" in changes:
                changes["metadata"] = Jsonb(changes["metadata"])
            if changes.get("csa", row["csa"]) != row["csa"]:
                await _mark_days(conn, device_id)
            if changes:
                # Column names come from the model's fixed field set, never from the request.
                assignments = ", ".join(f"{k} = %({k})s" for k in changes)
                await cur.execute(f"UPDATE devices SET {assignments} WHERE device_id = %(device_id)s",
                                  {**changes, "device_id": device_id})
            row = await (await cur.execute(f"SELECT {COLUMNS} FROM devices WHERE device_id = %s", (device_id,))).fetchone()
    return row


@router.delete("/{device_id}", status_code=204, dependencies=[Admin], summary="Decommission a device",
               description="Removes the device and its readings and rollups; its rejected messages stay for audit.",
               responses={401: {"description": "Missing or wrong admin token"}, 404: {"description": "No such device"}})
async def delete_device(device_id: DeviceId, pool: PoolDep):
    async with pool.connection() as conn:
        async with conn.transaction():
            await _mark_days(conn, device_id)
            row = await (await conn.execute("DELETE FROM devices WHERE device_id = %s RETURNING device_key",
                                            (device_id,))).fetchone()
            if row is None:
                raise Problem(404, f"no device {device_id!r}")
            await conn.execute("DELETE FROM readings WHERE device_key = %s", (row[0],))
            await conn.execute("DELETE FROM readings_hourly WHERE device_key = %s", (row[0],))
    return Response(status_code=204)


async def _mark_days(conn, device_id: str) -> None:
    """The device's days go back to the daily-rollup job, to be attributed to its new CSA (or to none)."""
    await conn.execute("""
        INSERT INTO rollup_dirty_days (day)
        SELECT DISTINCT time_bucket('1 day', h.bucket) FROM readings_hourly h JOIN devices d USING (device_key)
        WHERE d.device_id = %s ORDER BY 1
        ON CONFLICT DO NOTHING""", (device_id,))


def _limit(limit: int | None, settings) -> int:
    if limit is None:
        return min(settings.api_default_page_size, settings.api_max_page_size)
    if limit > settings.api_max_page_size:
        raise Problem(422, f"limit: at most {settings.api_max_page_size}")
    return limit
