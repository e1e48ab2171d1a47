"""Errors as RFC 9457 problem documents (``application/problem+json``), for every 4xx and 5xx."""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import PoolTimeout
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.store.pool import is_transient

log = logging.getLogger("citysense.api")

TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 413: "Payload too large", 422: "Invalid request", 429: "Too many requests",
          500: "Internal server error", 503: "Service unavailable"}


class ProblemDocument(BaseModel):
    """RFC 9457 problem details."""

    model_config = {"title": "Problem"}

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict] | None = Field(None, description="For invalid requests: each problem and where it is.")


#: One named component in the OpenAPI document, referenced by every error response, so client
#: generators make one Problem type (an inline schema on each response is dropped by some).
COMPONENT = "Problem"


def doc(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": f"#/components/schemas/{COMPONENT}"}}}}


def add_component(openapi: dict) -> dict:
    openapi.setdefault("components", {}).setdefault("schemas", {})[COMPONENT] = ProblemDocument.model_json_schema()
    return openapi


#: Documented on every route: what a client may get back besides success.
RESPONSES = {
    400: doc("Malformed request (an unreadable cursor, say)"),
    404: doc("No such device, metric, area or dataset"),
    413: doc("Request body larger than CITYSENSE_API_MAX_BODY_BYTES"),
    422: doc("Invalid parameters or body: `errors` says which and why"),
    503: doc("The database or the broker is unavailable, or the query ran longer than its time limit: retry later"),
}


class Problem(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra):
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra


def problem_response(status: int, detail: str, headers=None, **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def _where(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc.status, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"where": _where(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['where']}: {e['message']}" for e in errors)
        return problem_response(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(psycopg.errors.DataError)
    async def _data(request: Request, exc: psycopg.errors.DataError):
        # Validation should have caught it; the database's refusal is still the client's input.
        log.warning("database refused a value on %s: %s", request.url.path, exc.diag.message_primary)
        return problem_response(422, f"a value in the request cannot be stored or compared: {exc.diag.message_primary}")

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def _timeout(request: Request, exc: psycopg.errors.QueryCanceled):
        log.warning("a query of %s ran past its time limit and was cancelled", request.url.path)
        return problem_response(503, "the question took longer than the server allows (CITYSENSE_API_STATEMENT_TIMEOUT_MS): "
                                     "narrow it (a shorter range, one area) or try again later", {"Retry-After": "30"})

    @app.exception_handler(PoolTimeout)
    async def _busy(request: Request, exc: PoolTimeout):
        log.warning("no database connection for %s in time", request.url.path)
        return problem_response(503, "the database is unavailable or busy: try again shortly", {"Retry-After": "5"})

    @app.exception_handler(psycopg.Error)
    async def _database(request: Request, exc: psycopg.Error):
        # A connection the database dropped (a restart, a failover) or one that asked us to retry: the
        # client's request was fine, and will be answered again shortly. Anything else is our bug.
        if is_transient(exc):
            log.warning("database unavailable during %s: %s", request.url.path, type(exc).__name__)
            return problem_response(503, "the database is unavailable or restarting: try again shortly",
                                    {"Retry-After": "5"})
        log.exception("unhandled database error on %s %s", request.method, request.url.path)
        return problem_response(500, "the server failed to answer this request; the error is logged")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "the server failed to answer this request; the error is logged")
