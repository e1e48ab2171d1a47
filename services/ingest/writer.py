"""Write one batch to TimescaleDB in one transaction: readings, their hourly rollups, rejected messages
and device state.

Readings go through COPY into a session-local staging table, then one ``INSERT … ON CONFLICT DO
NOTHING … RETURNING`` moves them into the hypertable; the rollups are updated in the same statement
from the rows that statement really inserted, so a redelivered or duplicated reading changes neither
the raw table nor the rollups, and is counted as a duplicate.

Locks are always taken in one order (readings, hourly rollups, dirty-day marks, then devices, each
sorted by key), so two ingestors writing overlapping batches wait for each other but never deadlock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import psycopg

from services.core.catalogue import Metric, load_metrics
from services.ingest.validate import Reading

log = logging.getLogger("citysense.ingest.writer")

#: SQLSTATE classes that mean "try again later": connection exceptions (08), insufficient resources (53),
#: operator intervention such as a shutdown or restart (57), system errors (58), transaction rollbacks
#: such as serialization failures and deadlocks (40), and lock-not-available (55P03). Anything else is
#: a property of the data or the schema and will fail the same way on every retry.
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40")

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    t float8, device_key int4, metric_key int2, value float8, flags int2
) ON COMMIT DELETE ROWS
"""

INSERT_READINGS = """
WITH inserted AS (
    INSERT INTO readings (time, device_key, metric_key, value, flags)
    SELECT to_timestamp(t), device_key, metric_key, value, flags
    FROM staging_readings
    ORDER BY device_key, t, metric_key
    ON CONFLICT DO NOTHING
    RETURNING time, device_key, metric_key, value
), hourly AS (
    SELECT time_bucket('1 hour', i.time) AS bucket, i.device_key, i.metric_key,
           count(*) AS count, sum(i.value) AS sum, min(i.value) AS min, max(i.value) AS max,
           sum(power(10::float8, i.value / 10)) FILTER (WHERE m.aggregation = 'energy') AS energy
    FROM inserted i JOIN metrics m USING (metric_key)
    GROUP BY 1, 2, 3
), rolled AS (
    INSERT INTO readings_hourly AS r (bucket, device_key, metric_key, count, sum, min, max, energy)
    SELECT bucket, device_key, metric_key, count, sum, min, max, energy
    FROM hourly
    ORDER BY device_key, metric_key, bucket
    ON CONFLICT (device_key, metric_key, bucket) DO UPDATE SET
        count = r.count + EXCLUDED.count,
        sum = r.sum + EXCLUDED.sum,
        min = LEAST(r.min, EXCLUDED.min),
        max = GREATEST(r.max, EXCLUDED.max),
        energy = r.energy + EXCLUDED.energy
    RETURNING 1
), dirty AS (
    INSERT INTO rollup_dirty_days (day)
    SELECT DISTINCT time_bucket('1 day', bucket) FROM hourly ORDER BY 1
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled), (SELECT count(*) FROM dirty)
"""

UPDATE_LAST_SEEN = """
WITH seen AS (
    SELECT k, max(to_timestamp(t)) AS t FROM unnest(%s::int4[], %s::float8[]) AS u(k, t) GROUP BY k
), locked AS (
    SELECT d.device_key FROM devices d JOIN seen ON seen.k = d.device_key
    ORDER BY d.device_key FOR NO KEY UPDATE OF d
)
UPDATE devices d SET last_seen = GREATEST(d.last_seen, seen.t)
FROM seen, locked WHERE d.device_key = seen.k AND locked.device_key = seen.k
"""

UPDATE_STATUS = """
UPDATE devices SET status = %(status)s, status_at = to_timestamp(%(t)s),
       last_seen = CASE WHEN %(status)s = 'online' THEN GREATEST(last_seen, to_timestamp(%(t)s)) ELSE last_seen END
WHERE device_key = %(key)s AND (status_at IS NULL OR status_at <= to_timestamp(%(t)s))
"""

INSERT_REJECTED = """
INSERT INTO rejected_messages (received_at, topic, device_id, payload, reason, detail)
VALUES (to_timestamp(%s), %s, %s, %s, %s, %s)
"""


class TransientError(Exception):
    """The database is unreachable or asked us to retry: the batch must be written again later."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a transient SQLSTATE class, or a connection failure that carries no SQLSTATE."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES or sqlstate == "55P03"
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


@dataclass(slots=True)
class RejectedRow:
    received_at: float
    topic: str
    device_id: str | None
    payload: bytes
    reason: str
    detail: str


@dataclass(slots=True)
class StatusChange:
    device_key: int
    status: str
    time: float


@dataclass(slots=True)
class Batch:
    readings: list[Reading] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicates: int
    rejected: int


class Writer:
    """Owns one database connection. Not thread-safe: the pipeline thread alone calls it.

    Every method raises :class:`TransientError` when the database is down or restarting; the caller
    retries with back-off, and the next call reconnects.
    """

    #: Seconds an unknown device id stays unknown before the registry is asked again.
    UNKNOWN_DEVICE_TTL = 5.0
    #: Seconds between two reloads of the whole registry, so a decommissioned device becomes unknown.
    REGISTRY_TTL = 30.0
    #: last_seen is written when it advances by at least this much: freshness is judged against
    #: reporting intervals of a minute and more, and a row update per device per batch is costly.
    LAST_SEEN_STEP_S = 15.0

    def __init__(self, dsn: str, connect_timeout: float = 5.0):
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self.metrics: dict[str, Metric] = {}
        self._devices: dict[str, int] = {}
        self._devices_until = 0.0
        self._unknown: dict[str, float] = {}
        self._last_seen: dict[int, float] = {}  # what this writer last wrote, per device key

    # -- connection -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _connection(self) -> psycopg.Connection:
        if self.connected:
            return self._conn
        try:
            conn = psycopg.connect(
                self._dsn, connect_timeout=self._connect_timeout, application_name="citysense-ingest"
            )
            conn.execute(STAGING_DDL)
            self.metrics = load_metrics(conn)
            self._load_devices(conn)
            conn.commit()
        except psycopg.Error as exc:
            raise TransientError(f"cannot connect to the database: {type(exc).__name__}") from exc
        self._conn = conn
        log.info("database connected: %d metrics, %d devices", len(self.metrics), len(self._devices))
        return conn

    def connect(self) -> None:
        self._connection()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fail(self, exc: BaseException) -> TransientError:
        """Drop the connection after a transient error, so the next call starts afresh."""
        self.close()
        return TransientError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}")

    # -- device registry ----------------------------------------------------------------------
    def _load_devices(self, conn: psycopg.Connection) -> None:
        self._devices = dict(conn.execute("SELECT device_id, device_key FROM devices").fetchall())
        self._unknown.clear()
        self._devices_until = time.monotonic() + self.REGISTRY_TTL

    def device_key(self, device_id: str) -> int | None:
        """The device's key, or None when it is not registered (asked again after a short delay,
        so a device registered a moment ago is recognised without restarting the ingestor)."""
        if time.monotonic() > self._devices_until:
            conn = self._connection()
            try:
                self._load_devices(conn)
                conn.commit()
            except psycopg.Error as exc:
                if is_transient(exc):
                    raise self._fail(exc) from exc
                raise
        key = self._devices.get(device_id)
        if key is not None:
            return key
        now = time.monotonic()
        if now < self._unknown.get(device_id, 0.0):
            return None
        conn = self._connection()
        try:
            row = conn.execute("SELECT device_key FROM devices WHERE device_id = %s", (device_id,)).fetchone()
            conn.commit()
        except psycopg.Error as exc:
            if is_transient(exc):
                raise self._fail(exc) from exc
            raise
        if row is None:
            if len(self._unknown) > 100_000:
                self._unknown.clear()
            self._unknown[device_id] = now + self.UNKNOWN_DEVICE_TTL
            return None
        self._devices[device_id] = row[0]
        return row[0]

    # -- writing --------------------------------------------------------------------------------
    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch in one transaction. Raises TransientError (retry later) or psycopg.Error
        (the batch itself is at fault: the caller splits it to find the culprit)."""
        conn = self._connection()
        try:
            stored = 0
            with conn.transaction():
                if batch.readings:
                    with conn.cursor() as cur:
                        with cur.copy(
                            "COPY staging_readings (t, device_key, metric_key, value, flags) FROM STDIN (FORMAT BINARY)"
                        ) as copy:
                            copy.set_types(["float8", "int4", "int2", "float8", "int2"])
                            for r in batch.readings:
                                copy.write_row((r.time, r.device_key, r.metric_key, r.value, r.flags))
                        stored = cur.execute(INSERT_READINGS).fetchone()[0]
                        seen: dict[int, float] = {}
                        for r in batch.readings:
                            if r.time > seen.get(r.device_key, 0.0):
                                seen[r.device_key] = r.time
                        keys = sorted(k for k, t in seen.items()
                                      if t >= self._last_seen.get(k, 0.0) + self.LAST_SEEN_STEP_S)
                        if keys:
                            cur.execute(UPDATE_LAST_SEEN, (keys, [seen[k] for k in keys]))
                if batch.statuses:
                    with conn.cursor() as cur:
                        for s in sorted(batch.statuses, key=lambda s: (s.device_key, s.time)):
                            cur.execute(UPDATE_STATUS, {"status": s.status, "t": s.time, "key": s.device_key})
                if batch.rejected:
                    with conn.cursor() as cur:
                        cur.executemany(
                            INSERT_REJECTED,
                            [(r.received_at, r.topic, r.device_id, r.payload, r.reason, r.detail) for r in batch.rejected],
                        )
            conn.commit()
        except psycopg.Error as exc:
            if is_transient(exc) or conn.closed:
                raise self._fail(exc) from exc
            raise
        if batch.readings:
            for k in keys:
                self._last_seen[k] = seen[k]
        return WriteResult(stored=stored, duplicates=len(batch.readings) - stored, rejected=len(batch.rejected))

    def drop_old_chunks(self, raw_days: int) -> int:
        """Apply retention: raw readings and rejected messages older than ``raw_days`` go, whole chunks
        at a time; the hourly rollups stay."""
        conn = self._connection()
        try:
            n = 0
            for table in ("readings", "rejected_messages"):
                rows = conn.execute(
                    "SELECT drop_chunks(%s::regclass, older_than => %s * interval '1 day')", (table, raw_days)
                ).fetchall()
                n += len(rows)
            conn.commit()
            return n
        except psycopg.Error as exc:
            if is_transient(exc) or conn.closed:
                raise self._fail(exc) from exc
            raise
