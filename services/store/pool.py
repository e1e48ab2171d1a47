"""Connection pools and the one policy for database errors.

psycopg_pool owns connecting, reconnecting with back-off and checking connections before use, so no
caller writes its own reconnect loop. ``configure`` runs on every new connection: the session's time
zone, its statement timeout, and (for the ingestor) its COPY staging table.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from pydantic_core import from_json

#: SQLSTATE classes that mean "try again later": connection exceptions (08), insufficient resources (53),
#: operator intervention such as a shutdown or restart (57), system errors (58), transaction rollbacks
#: such as serialization failures and deadlocks (40), and lock-not-available (55P03). Anything else is a
#: property of the data or the schema and fails the same way on every retry.
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40")


class TransientError(Exception):
    """The database is unreachable or asked us to retry: the work must be done again later."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a transient SQLSTATE class, a pool that found no usable connection in time, or a
    connection failure that carries no SQLSTATE."""
    if isinstance(exc, PoolTimeout):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES or sqlstate == "55P03"
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def transient(exc: BaseException) -> TransientError:
    """A TransientError carrying the first line of the database's message (never the DSN)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return TransientError(f"{type(exc).__name__}: {text}"[:300])


#: A connection idle longer than this is checked (a round trip) before it is handed out, and replaced if the
#: database dropped it. One used within this time is handed out unchecked: if the database went away in
#: that half second, that one use fails (an API request answers 503 with Retry-After, an ingestor's batch
#: is retried) and the broken connection is discarded.
RECHECK_IDLE_S = 0.5


class _Returns:
    """When each pooled connection was last given back: both pools check only one idle for longer than
    RECHECK_IDLE_S (a round trip on every checkout was a tenth of a busy API worker's time, and a fiftieth of
    the ingestor's, one per batch)."""

    def __init__(self):
        self._at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def mark(self, conn) -> None:
        self._at[conn] = time.monotonic()

    def idle(self, conn) -> bool:
        return time.monotonic() - self._at.get(conn, 0.0) > RECHECK_IDLE_S


def sync_pool(dsn: str, name: str, *, size: int = 2, configure: Callable[[psycopg.Connection], None] | None = None,
              timeout: float = 5.0) -> ConnectionPool:
    """A pool for a threaded service (the ingestor), opened without waiting: callers get TransientError
    (via PoolTimeout) while the database is away, and connections as soon as it is back."""
    returns = _Returns()

    def setup(conn: psycopg.Connection) -> None:
        conn.execute("SET TIME ZONE 'UTC'")
        if configure is not None:
            configure(conn)
        conn.commit()

    def check_if_idle(conn: psycopg.Connection) -> None:
        # a connection the database dropped since its last use fails the batch's write, which is retried on
        # a new one (the pool discards the broken connection)
        if returns.idle(conn):
            ConnectionPool.check_connection(conn)

    pool = ConnectionPool(dsn, min_size=1, max_size=size, open=False, timeout=timeout, name=name,
                          configure=setup, check=check_if_idle, reset=returns.mark,
                          kwargs={"application_name": name, "connect_timeout": 5})
    pool.open(wait=False)
    return pool


def async_pool(dsn: str, name: str, *, size: int, statement_timeout_ms: int = 0, idle_in_transaction_ms: int = 0,
               timeout: float = 10.0) -> AsyncConnectionPool:
    """A pool for the API, opened by the caller (``await pool.open(wait=False)``) so the API starts and
    answers /livez while the database is away. The database itself ends a statement that runs longer
    than ``statement_timeout_ms`` and a transaction left idle longer than ``idle_in_transaction_ms``.
    JIT compilation is off: the API's queries run for milliseconds, and compiling one of the larger plans
    took 300 ms (make bench's aggregates). Connections are in autocommit: a read is one round trip, not
    BEGIN, the query and COMMIT; the writes that must be atomic say so (``async with conn.transaction()``)."""
    options = "-c timezone=UTC -c jit=off" + (f" -c statement_timeout={int(statement_timeout_ms)}" if statement_timeout_ms else "") \
        + (f" -c idle_in_transaction_session_timeout={int(idle_in_transaction_ms)}" if idle_in_transaction_ms else "")
    returns = _Returns()

    async def mark_returned(conn: psycopg.AsyncConnection) -> None:
        returns.mark(conn)

    async def check_if_idle(conn: psycopg.AsyncConnection) -> None:
        if returns.idle(conn):
            await AsyncConnectionPool.check_connection(conn)

    async def configure(conn: psycopg.AsyncConnection) -> None:
        # JSON columns (a device's metadata, the kept AQI figures) parsed by pydantic-core's parser: the
        # standard library's was a sixth of a busy worker's time serving device lists.
        set_json_loads(from_json, conn)

    return AsyncConnectionPool(dsn, min_size=1, max_size=size, open=False, timeout=timeout, name=name,
                               configure=configure, check=check_if_idle, reset=mark_returned,
                               kwargs={"application_name": name, "options": options, "autocommit": True})
