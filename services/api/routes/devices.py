"""/v1/devices: the sensor inventory."""

from __future__ import annotations

from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Path, Query

from services.api import pagination
from services.api.deps import Admin, PoolDep, SettingsDep
from services.api.problems import Problem
from services.api.responses import json_response
from services.api.scope import CsaParam, NeighbourhoodParam
from services.api.schemas import DeviceCreate, DeviceKind, DevicePatch, DevicePublic, DevicePurged, Page
from services.core.areas import OutsideCity, baltimore
from services.core.catalogue import DEVICE_ID_PATTERN
from services.store import devices as store
from services.store.devices import Placed

router = APIRouter(prefix="/v1/devices", tags=["devices"])
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="The device's id.")]


def place(latitude: float, longitude: float) -> Placed:
    """The position with its neighbourhood and CSA; a 422 problem outside the city."""
    try:
        loc = baltimore().locate(latitude, longitude)
    except OutsideCity as exc:
        raise Problem(422, str(exc)) from None
    return Placed(latitude, longitude, loc.neighbourhood, loc.csa)


@router.get("", response_model=Page[DevicePublic], summary="List devices")
async def list_devices(
    pool: PoolDep,
    settings: SettingsDep,
    kind: DeviceKind | None = None,
    csa: CsaParam = None,
    neighbourhood: NeighbourhoodParam = None,
    status: Literal["online", "offline", "unknown"] | None = None,
    include_retired: Annotated[bool, Query(description="Also list retired devices (their history stays published).")] = False,
    limit: Annotated[int | None, Query(ge=1, description="Page size (at most CITYSENSE_API_MAX_PAGE_SIZE).")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
):
    limit = pagination.page_size(limit, settings)
    after = pagination.decode(cursor, (str,))
    async with pool.connection() as conn:
        rows = await store.page(conn, kind=kind, csa=csa, neighbourhood=neighbourhood, status=status,
                                include_retired=include_retired, after=after[0] if after else None, limit=limit + 1)
    next_cursor = pagination.encode([rows[limit - 1]["device_id"]]) if len(rows) > limit else None
    return json_response(Page[DevicePublic], {"items": rows[:limit], "next_cursor": next_cursor})


@router.get("/{device_id}", response_model=DevicePublic, summary="One device",
            responses={404: {"description": "No such device"}})
async def get_device(device_id: DeviceId, pool: PoolDep):
    async with pool.connection() as conn:
        row = await store.get(conn, device_id)
    if row is None:
        raise Problem(404, f"no device {device_id!r}")
    return json_response(DevicePublic, row)


@router.post("", response_model=DevicePublic, status_code=201, dependencies=[Admin], summary="Register a device",
             responses={401: {"description": "Missing or wrong admin token"},
                        409: {"description": "Already registered (or retired: purge it to reuse the id)"},
                        422: {"description": "Invalid body, or a position outside the city"}})
async def create_device(body: DeviceCreate, pool: PoolDep):
    where = place(body.latitude, body.longitude)
    async with pool.connection() as conn:
        try:
            row = await store.register(conn, body.model_dump(), where)
        except psycopg.errors.CheckViolation:
            raise Problem(422, "the database refused the device: a value is outside what it accepts") from None
        if row is None:
            existing = await store.get(conn, body.device_id)
            retired = existing is not None and existing["retired_at"] is not None
            raise Problem(409, f"device {body.device_id!r} is already registered"
                               + (" and retired: purge it (DELETE …?purge=true) to reuse its id" if retired else ""))
    return row


@router.patch("/{device_id}", response_model=DevicePublic, dependencies=[Admin], summary="Change a device",
              description="A new position starts a new placement: the device's past readings stay in the area "
                          "where they were taken.",
              responses={401: {"description": "Missing or wrong admin token"},
                         404: {"description": "No such device (or retired)"},
                         422: {"description": "Invalid body, or a position outside the city"}})
async def update_device(device_id: DeviceId, body: DevicePatch, pool: PoolDep):
    changes = body.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        raise Problem(422, "fields may be changed, not set to null")
    async with pool.connection() as conn:
        where = None
        if "latitude" in changes or "longitude" in changes:
            current = await store.get(conn, device_id)
            if current is None or current["retired_at"] is not None:
                raise Problem(404, f"no device {device_id!r} in service")
            where = place(changes.get("latitude", current["latitude"]), changes.get("longitude", current["longitude"]))
        row = await store.update(conn, device_id, changes, where)
    if row is None:
        raise Problem(404, f"no device {device_id!r} in service")
    return row


@router.delete("/{device_id}", response_model=DevicePublic | DevicePurged, dependencies=[Admin],
               summary="Retire a device (or purge it)",
               description="Retires the device: it keeps its history, which stays published, and its readings are "
                           "refused from now on. With `purge=true` the device and everything stored about it "
                           "(readings, hourly rollups, placements) are deleted instead, and the answer says how much.",
               responses={401: {"description": "Missing or wrong admin token"}, 404: {"description": "No such device"}})
async def delete_device(device_id: DeviceId, pool: PoolDep, settings: SettingsDep,
                        purge: Annotated[bool, Query(description="Delete the device and all its data.")] = False):
    async with pool.connection() as conn:
        row = await (store.purge(conn, device_id, settings.timezone) if purge else store.retire(conn, device_id))
    if row is None:
        raise Problem(404, f"no device {device_id!r}")
    return json_response(DevicePurged if purge else DevicePublic, row)
