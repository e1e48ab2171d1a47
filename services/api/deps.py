"""Dependencies shared by the routes: the database pool, the settings, and admin authentication."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from services.api.problems import Problem
from services.core.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


_bearer = HTTPBearer(auto_error=False, description="The admin token (CITYSENSE_ADMIN_TOKEN).")


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    settings: Settings = request.app.state.settings
    problem = settings.admin_token_problem()
    if problem:
        raise Problem(403, f"admin routes are disabled: {problem}")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "this route needs `Authorization: Bearer <admin token>`", {"WWW-Authenticate": "Bearer"})
    # Constant time, so the token cannot be guessed byte by byte from response times.
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()):
        raise Problem(401, "the admin token is wrong", {"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
Admin = Depends(require_admin)
