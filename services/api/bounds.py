"""Bounds every request meets before a route runs, and the audit trail of admin writes.

``RequestBounds`` is plain ASGI middleware, so it acts before FastAPI reads and parses a body:
- every write (POST, PUT, PATCH, DELETE: all are admin routes) must carry the admin token, checked
  before a byte of the body is read: an anonymous client cannot make the API buffer anything;
- a body longer than CITYSENSE_API_MAX_BODY_BYTES is refused with 413, from its Content-Length when
  it gives one, and otherwise while it arrives (chunked bodies are counted, never buffered whole);
- an authenticated write is recorded in the audit log once answered: method, path, device, client
  address and status (never the token).
"""

from __future__ import annotations

import hmac
import logging

from starlette.exceptions import HTTPException

from services.api.problems import problem_response
from services.core.settings import Settings
from services.store import audit

log = logging.getLogger("citysense.api")

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def admin_problem(settings: Settings, authorization: str | None) -> tuple[int, str, dict] | None:
    """Why this Authorization header may not use admin routes (status, detail, headers), or None."""
    problem = settings.admin_token_problem()
    if problem:
        return 403, "admin routes are disabled: the server's admin token is not usable", {}
    scheme, _, token = (authorization or "").partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token:
        return 401, "this route needs `Authorization: Bearer <admin token>`", challenge
    # Constant time, so the token cannot be guessed byte by byte from response times.
    if not hmac.compare_digest(token.strip().encode(), settings.admin_token.get_secret_value().encode()):
        return 401, "the admin token is wrong", challenge
    return None


class RequestBounds:
    def __init__(self, app, settings: Settings, pool_getter):
        self.app, self.settings, self.pool_getter = app, settings, pool_getter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        write = scope["method"] in WRITE_METHODS
        if write:
            refused = admin_problem(self.settings, headers.get("authorization"))
            if refused:
                status, detail, extra = refused
                return await problem_response(status, detail, extra)(scope, receive, send)
        limit = self.settings.api_max_body_bytes
        declared = headers.get("content-length", "")
        if declared and (not declared.isdigit() or int(declared) > limit):
            return await self._too_large(scope, receive, send, limit)
        received = 0

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body is larger than {limit} bytes")
            return message

        audited = not write

        async def watched_send(message):
            nonlocal audited
            if message["type"] == "http.response.start" and not audited:
                # Recorded before the client sees the answer: its next request is audited after this one.
                audited = True
                await self._audit(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        finally:
            if not audited:  # no answer started (an error): recorded as a server error
                await self._audit(scope, 500)

    async def _too_large(self, scope, receive, send, limit: int):
        # Close the connection: the client may still be sending the body we will not read.
        response = problem_response(413, f"the request body is larger than {limit} bytes", {"Connection": "close"})
        await response(scope, receive, send)

    async def _audit(self, scope, status: int) -> None:
        pool = self.pool_getter()
        state = scope.get("state") or {}
        client = scope.get("client")
        try:
            async with pool.connection() as conn:
                await audit.record(conn, method=scope["method"], path=scope["path"], device_id=state.get("audit_device"),
                                   client=client[0] if client else None, status=status)
        except Exception as exc:  # the write itself is done; losing its record is logged, never hidden
            log.error("could not record an admin %s %s (status %d) in the audit log: %s", scope["method"], scope["path"],
                      status, type(exc).__name__)
