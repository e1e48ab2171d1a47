"""/v1/devices: the sensor inventory."""

from __future__ import annotations

from typing import Annotated, Literal

import psycopg
import logging

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from services.api import pagination
from services.api.deps import AccountsDep, Admin, PoolDep, SettingsDep
from services.api.problems import Problem, doc as _doc
from services.api.responses import json_response, rows_response
from services.api.scope import CsaParam, NeighbourhoodParam
from services.api.schemas import (DeviceCreate, DeviceCredentials, DeviceKind, DevicePatch, DevicePublic, DevicePurged,
                                  DeviceRegistered, Page)
from services.broker.dynsec import BrokerUnavailable, CommandFailed
from services.core.areas import OutsideCity, baltimore
from services.core.catalogue import DEVICE_ID_PATTERN, device_topic
from services.store import devices as store
from services.store.devices import Placed

log = logging.getLogger("citysense.api")
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
    # the registry's columns and CHECK constraints already fix the schema: serialised without a second validation
    return rows_response({"items": rows[:limit], "next_cursor": next_cursor})


@router.get("/{device_id}", response_model=DevicePublic, summary="One device",
            responses={404: _doc("No such device")})
async def get_device(device_id: DeviceId, pool: PoolDep):
    async with pool.connection() as conn:
        row = await store.get(conn, device_id)
    if row is None:
        raise Problem(404, f"no device {device_id!r}")
    return json_response(DevicePublic, row)


def credentials(device_id: str, password: str) -> dict:
    return {"username": device_id, "password": password, "client_id": device_id,
            "topics": {"readings": device_topic(device_id, "readings"), "status": device_topic(device_id, "status")}}


async def broker_call(fn, *args):
    """An account command, off the event loop; a broker that does not answer is a 503."""
    try:
        return await run_in_threadpool(fn, *args)
    except (BrokerUnavailable, CommandFailed) as exc:
        log.error("broker account command failed: %s", exc)
        raise Problem(503, "the broker did not confirm the device's account; nothing was changed, try again",
                      {"Retry-After": "10"}) from None


@router.post("", response_model=DeviceRegistered, status_code=201, dependencies=[Admin], summary="Register a device",
             description="Registers the device and answers, once, with its MQTT credentials: the broker lets this "
                         "account publish only to the device's own readings and status topics. Nothing can show "
                         "the password again (POST …/credentials issues new ones).",
             responses={401: _doc("Missing or wrong admin token"),
                        409: _doc("Already registered (or retired: purge it to reuse the id)"),
                        503: _doc("The broker did not confirm the device's account (nothing was registered)")})
async def create_device(body: DeviceCreate, pool: PoolDep, accounts: AccountsDep, settings: SettingsDep, request: Request):
    request.state.audit_device = body.device_id
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
        try:
            password = await broker_call(accounts.add_device, body.device_id)
        except Problem:
            await store.purge(conn, body.device_id, settings.timezone)  # registered a moment ago, nothing stored yet
            raise
    return json_response(DeviceRegistered, {**row, "mqtt": credentials(body.device_id, password)}, 201,
                         headers={"Cache-Control": "no-store"})


@router.post("/{device_id}/credentials", response_model=DeviceCredentials, dependencies=[Admin],
             summary="Issue new MQTT credentials",
             description="The old password stops working at once and a connection made with it is closed; the "
                         "device reconnects with the new one. Answers the new password, once.",
             responses={401: _doc("Missing or wrong admin token"), 404: _doc("No such device in service"),
                        503: _doc("The broker did not confirm the new credentials (the old ones still work)")})
async def rotate_credentials(device_id: DeviceId, pool: PoolDep, accounts: AccountsDep, request: Request):
    request.state.audit_device = device_id
    async with pool.connection() as conn:
        row = await store.get(conn, device_id)
    if row is None or row["retired_at"] is not None:
        raise Problem(404, f"no device {device_id!r} in service")
    password = await broker_call(accounts.rotate_device, device_id)
    return json_response(DeviceCredentials, {"device_id": device_id, "mqtt": credentials(device_id, password)},
                         headers={"Cache-Control": "no-store"})


@router.patch("/{device_id}", response_model=DevicePublic, dependencies=[Admin], summary="Change a device",
              description="A new position starts a new placement: the device's past readings stay in the area "
                          "where they were taken.",
              responses={401: _doc("Missing or wrong admin token"), 404: _doc("No such device (or retired)")})
async def update_device(device_id: DeviceId, body: DevicePatch, pool: PoolDep, settings: SettingsDep, request: Request):
    request.state.audit_device = device_id
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
        row = await store.update(conn, device_id, changes, where, settings.timezone)
    if row is None:
        raise Problem(404, f"no device {device_id!r} in service")
    return row


@router.delete("/{device_id}", response_model=DevicePublic | DevicePurged, dependencies=[Admin],
               summary="Retire a device (or purge it)",
               description="Revokes the device's MQTT credentials (the broker closes its connection) and retires "
                           "the device: it keeps its history, which stays published, and its readings are "
                           "refused from now on. With `purge=true` the device and everything stored about it "
                           "(readings, hourly rollups, placements) are deleted instead, and the answer says how much.",
               responses={401: _doc("Missing or wrong admin token"), 404: _doc("No such device"),
                          503: _doc("The broker did not confirm the revocation (nothing was changed)")})
async def delete_device(device_id: DeviceId, pool: PoolDep, settings: SettingsDep, accounts: AccountsDep,
                        request: Request,
                        purge: Annotated[bool, Query(description="Delete the device and all its data.")] = False):
    request.state.audit_device = device_id
    # The broker account first: once this answers, the device can no longer publish (its connection is
    # closed), whatever happens to the database write after it.
    await broker_call(accounts.revoke_device, device_id)
    async with pool.connection() as conn:
        row = await (store.purge(conn, device_id, settings.timezone) if purge else store.retire(conn, device_id))
    if row is None:
        raise Problem(404, f"no device {device_id!r}")
    return json_response(DevicePurged if purge else DevicePublic, row)
