"""Dependencies shared by the routes: the database pool, the settings, and admin authentication.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop per request
for what is an attribute read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from services.api.bounds import admin_problem
from services.api.problems import Problem
from services.broker.dynsec import Control
from services.core.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pool(request: Request) -> AsyncConnectionPool:
    """The pool for this request: reads go to the read pool when there is one (CITYSENSE_API_READ_DATABASE_URL,
    e.g. standbys), writes always to the primary's."""
    read = request.app.state.read_pool
    if read is not None and request.method in ("GET", "HEAD"):
        return read
    return request.app.state.pool


_bearer = HTTPBearer(auto_error=False, description="The admin token (CITYSENSE_ADMIN_TOKEN).")


async def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Checked again here (services/api/bounds.py checks every write before its body is read), so a route
    that is not a write but needs the admin (the audit log) is guarded the same way."""
    refused = admin_problem(request.app.state.settings, request.headers.get("authorization"))
    if refused:
        raise Problem(refused[0], refused[1], refused[2] or None)


async def get_accounts(request: Request) -> Control:
    """The broker's account control (the admin account), or a 503 when the API has none."""
    control = request.app.state.accounts
    if control is None:
        raise Problem(503, "device credentials cannot be issued or revoked: CITYSENSE_MQTT_ADMIN_PASSWORD is not set")
    return control


SettingsDep = Annotated[Settings, Depends(get_settings)]
AccountsDep = Annotated[Control, Depends(get_accounts)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
Admin = Depends(require_admin)
