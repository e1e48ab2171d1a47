"""The ingestor's database: the registry it validates against, one transaction per batch, and the
housekeeping on the shared tables (daily rollups, fleet freshness, retention).

One batch, one transaction: readings go through COPY into a session-local staging table, then one
``INSERT … ON CONFLICT DO NOTHING … RETURNING`` moves them into the hypertable; the hourly rollups are
updated in the same statement from the rows it really inserted (a redelivered or duplicated reading
changes neither the raw table nor the rollups), and the local days it touched are marked dirty for the
daily rollups. Readings of a device that is retired or deleted by then are not inserted: the device rows
are read with FOR KEY SHARE, so a purge waits for the batch, and the batch cannot write for a device the
purge removed.

Locks are taken in one order everywhere: devices (key share), readings, hourly rollups, dirty-day marks,
then devices again (last_seen, status), each set sorted by key; so two ingestors writing overlapping
batches, or an ingestor and a purge, wait for each other but never deadlock.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from services.core.catalogue import Metric, Reason
from services.store.model import Batch, Reading, RejectedRow, WriteResult
from services.store.pool import is_transient, sync_pool, transient

log = logging.getLogger("citysense.store")

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    t float8, device_key int4, metric_key int2, value float8, flags int2, msg int4
) ON COMMIT DELETE ROWS
"""

INSERT_READINGS = """
WITH active AS (
    SELECT d.device_key FROM devices d
    WHERE d.device_key IN (SELECT DISTINCT device_key FROM staging_readings) AND d.retired_at IS NULL
    ORDER BY d.device_key
    FOR KEY SHARE
), inserted AS (
    INSERT INTO readings (time, device_key, metric_key, value, flags)
    SELECT to_timestamp(s.t), s.device_key, s.metric_key, s.value, s.flags
    FROM staging_readings s
    WHERE s.device_key IN (SELECT device_key FROM active)
    ORDER BY s.device_key, s.t, s.metric_key, s.msg, s.ctid  -- on equal keys, the earliest message (and reading) wins
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
    -- DO UPDATE, not DO NOTHING: it locks an existing mark, so a refresh that deletes it waits for this
    -- transaction and then recomputes with its rows (DO NOTHING took no lock, and a concurrent refresh
    -- could consume the mark without them: the day stayed wrong for good).
    INSERT INTO rollup_dirty_days AS dd (day)
    SELECT DISTINCT (bucket AT TIME ZONE %(tz)s)::date FROM hourly ORDER BY 1
    ON CONFLICT (day) DO UPDATE SET day = dd.day
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled), (SELECT count(*) FROM dirty),
       (SELECT coalesce(array_agg(DISTINCT device_key), '{}') FROM staging_readings
        WHERE device_key NOT IN (SELECT device_key FROM active))
"""

#: Run only when a batch had duplicates (fewer rows inserted than staged): the staged readings whose key
#: now holds another value (stored earlier, or by an earlier message of the batch). Visible, never dropped
#: silently. The time bounds let TimescaleDB exclude chunks.
CONFLICTS = """
SELECT s.msg, s.metric_key, s.t, s.value, r.value
FROM staging_readings s
JOIN readings r ON r.device_key = s.device_key AND r.time = to_timestamp(s.t) AND r.metric_key = s.metric_key
WHERE r.value IS DISTINCT FROM s.value AND s.device_key <> ALL(%(refused)s::int4[])
  AND r.time >= %(lo)s AND r.time <= %(hi)s
ORDER BY s.msg
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

#: A status says what the device claims; it never makes a device look fresh (last_seen is readings only).
UPDATE_STATUS = """
UPDATE devices SET status = %(status)s, status_at = to_timestamp(%(t)s)
WHERE device_key = %(key)s AND (status_at IS NULL OR status_at <= to_timestamp(%(t)s))
"""

#: A message is stored once per reason: the same bytes on the same topic again (a redelivery, or a
#: device repeating itself) count as another receipt of the same row.
INSERT_REJECTED = """
INSERT INTO rejected_messages AS m (digest, reason, received_at, last_received_at, topic, device_id, payload,
                                   payload_bytes, detail)
VALUES (%s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s, %s)
ON CONFLICT (digest, reason) DO UPDATE SET
    times = m.times + 1, last_received_at = GREATEST(m.last_received_at, EXCLUDED.last_received_at)
"""

INSERT_RECEIPTS = """
INSERT INTO message_receipts AS m (digest, received_at)
SELECT d, to_timestamp(t) FROM unnest(%s::bytea[], %s::float8[]) AS u(d, t) ORDER BY d
ON CONFLICT (digest) DO UPDATE SET received_at = GREATEST(m.received_at, EXCLUDED.received_at)
"""

#: last_seen is written when it advances by at least this much: a row update per device per batch is
#: costly. Freshness allows for it (see services/store/fleet.py).
LAST_SEEN_STEP_S = 15.0


def digest(topic: str, payload: bytes) -> bytes:
    """A message's identity: sha256 of its topic, a NUL, and its payload."""
    return hashlib.sha256(topic.encode("utf-8", "surrogateescape") + b"\0" + payload).digest()


@dataclass(frozen=True)
class Registry:
    """A snapshot of what validation needs: the metric catalogue, and device id → key for the devices
    that may send readings (not retired). Immutable: the pipeline swaps in a new one."""

    metrics: dict[str, Metric]
    devices: dict[str, int]

    def device_key(self, device_id: str) -> int | None:
        return self.devices.get(device_id)


class IngestStore:
    """The ingestor's database, over a small pool (the pipeline thread and the housekeeping thread each
    hold at most one connection). Every method raises TransientError while the database is down or
    restarting, and psycopg.Error when the database refuses the work itself.
    """

    def __init__(self, dsn: str, timezone: str, rejected_payload_bytes: int = 4096):
        self._tz = timezone
        self._keep = rejected_payload_bytes  # a rejected payload is stored cut to this
        # Two threads, two connections: a wait for one means the database is away, so report it soon
        # (the pipeline then backs off and retries) instead of after a long pool timeout.
        self.pool = sync_pool(dsn, "citysense-ingest", size=2, configure=lambda conn: conn.execute(STAGING_DDL),
                              timeout=1.5)
        self._last_seen: dict[int, float] = {}  # what this store last wrote, per device key
        self.metrics: dict[str, Metric] = {}  # the catalogue, once loaded (names metrics in rejection details)
        #: Device ids found under a new key at write time (purged and registered again), for the registry.
        self.remapped: dict[str, int] = {}

    def close(self) -> None:
        self.pool.close()

    def _run(self, work):
        """``work(conn)`` in one transaction, with the error policy: TransientError for what a retry
        may cure, psycopg.Error for the rest."""
        try:
            with self.pool.connection() as conn:
                return work(conn)
        except Exception as exc:  # psycopg.Error, or PoolTimeout: no connection in time
            if is_transient(exc):
                raise transient(exc) from exc
            raise

    # -- registry -------------------------------------------------------------------------------
    def registry(self) -> Registry:
        def load(conn: psycopg.Connection) -> Registry:
            rows = conn.execute("SELECT metric_key, metric, unit, description, min_value, max_value, aggregation"
                                " FROM metrics ORDER BY metric_key").fetchall()
            devices = dict(conn.execute("SELECT device_id, device_key FROM devices WHERE retired_at IS NULL").fetchall())
            return Registry({r[1]: Metric(*r) for r in rows}, devices)
        reg = self._run(load)
        self.metrics = reg.metrics
        return reg

    def device_keys(self, device_ids: list[str]) -> dict[str, int]:
        """Keys of the given ids among the devices that may send readings."""
        return self._run(lambda conn: dict(conn.execute(
            "SELECT device_id, device_key FROM devices WHERE device_id = ANY(%s) AND retired_at IS NULL",
            (device_ids,)).fetchall()))

    def first_deliveries(self, digests: list[bytes]) -> dict[bytes, float]:
        """The first delivery time of messages already committed, by digest (for redelivered copies)."""
        return self._run(lambda conn: {bytes(d): t.timestamp() for d, t in conn.execute(
            "SELECT digest, received_at FROM message_receipts WHERE digest = ANY(%s)", (digests,)).fetchall()})

    # -- writing --------------------------------------------------------------------------------
    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch in one transaction. Raises TransientError (retry later) or psycopg.Error (the
        batch itself is at fault: the caller splits it to find the culprit)."""
        return self._run(lambda conn: self._write(conn, batch))

    @staticmethod
    def _conflicts(cur, staged: list[Reading], stored: int, refused: set[int] = frozenset()) -> list:
        """Conflicting duplicates among the staged readings (of devices not refused), looked for only when
        there were duplicates."""
        if stored >= len(staged):
            return []
        # a millisecond either side: Python and PostgreSQL may round a float's microseconds differently
        lo, hi = min(r.time for r in staged) - 0.001, max(r.time for r in staged) + 0.001
        return cur.execute(CONFLICTS, {"lo": datetime.fromtimestamp(lo, timezone.utc), "refused": list(refused),
                                       "hi": datetime.fromtimestamp(hi, timezone.utc)}).fetchall()

    def _remap(self, cur, batch: Batch, refused_keys: list[int], seen: dict[int, float]) -> tuple[int, list[int], list]:
        """Readings refused because their key is gone: a device purged and registered again has the same id
        and a new key. Those rows are inserted again under the current key, in the same transaction;
        returns (rows stored, keys still refused: retired or deleted devices, conflicts found)."""
        ids = {}
        for r in batch.readings:
            if r.device_key in refused_keys and r.msg >= 0 and r.device_key not in ids:
                ids[r.device_key] = batch.messages[r.msg].device_id
        remap = dict(cur.execute(
            "SELECT u.k, d.device_key FROM unnest(%s::int4[], %s::text[]) AS u(k, id) "
            "JOIN devices d ON d.device_id = u.id AND d.retired_at IS NULL", (list(ids), list(ids.values()))).fetchall())
        if not remap:
            return 0, refused_keys, []
        cur.execute("DELETE FROM staging_readings WHERE NOT (device_key = ANY(%s))", (list(remap),))
        cur.execute("UPDATE staging_readings s SET device_key = m.new FROM unnest(%s::int4[], %s::int4[]) AS m(old, new) "
                    "WHERE s.device_key = m.old", (list(remap), list(remap.values())))
        stored = cur.execute(INSERT_READINGS, {"tz": self._tz}).fetchone()[0]
        conflicts = self._conflicts(cur, [r for r in batch.readings if r.device_key in remap], stored)
        for k, new in remap.items():
            seen[new] = seen.pop(k)
            self.remapped[ids[k]] = new
        return stored, [k for k in refused_keys if k not in remap], conflicts

    def _write(self, conn: psycopg.Connection, batch: Batch) -> WriteResult:
        stored, keys, seen, refused_keys, conflicts = 0, [], {}, [], []
        rejected = list(batch.rejected)
        with conn.transaction():
            with conn.cursor() as cur:
                if batch.readings:
                    with cur.copy("COPY staging_readings (t, device_key, metric_key, value, flags, msg) "
                                  "FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(["float8", "int4", "int2", "float8", "int2", "int4"])
                        for r in batch.readings:
                            copy.write_row((r.time, r.device_key, r.metric_key, r.value, r.flags, r.msg))
                    stored, _, _, refused_keys = cur.execute(INSERT_READINGS, {"tz": self._tz}).fetchone()
                    gone = set(refused_keys)
                    conflicts = self._conflicts(cur, [r for r in batch.readings if r.device_key not in gone]
                                                if gone else batch.readings, stored, gone)
                    for r in batch.readings:
                        if r.time > seen.get(r.device_key, 0.0):
                            seen[r.device_key] = r.time
                    if refused_keys:
                        more, refused_keys, more_conflicts = self._remap(cur, batch, refused_keys, seen)
                        stored += more
                        conflicts += more_conflicts
                    refused = set(refused_keys)
                    for k in refused:
                        del seen[k]
                    rejected += self._refusals(batch, refused, conflicts)
                    keys = sorted(k for k, t in seen.items() if t >= self._last_seen.get(k, 0.0) + LAST_SEEN_STEP_S)
                    if keys:
                        cur.execute(UPDATE_LAST_SEEN, (keys, [seen[k] for k in keys]))
                if batch.receipts:
                    cur.execute(INSERT_RECEIPTS, ([d for d, _ in batch.receipts], [t for _, t in batch.receipts]))
                for st in sorted(batch.statuses, key=lambda st: (st.device_key, st.time)):
                    cur.execute(UPDATE_STATUS, {"status": st.status, "t": st.time, "key": st.device_key})
                if rejected:
                    # sorted by key, so concurrent writers lock rejection rows in one order
                    rows = sorted(((r.digest or digest(r.topic, r.payload), r.reason, r.received_at, r.received_at,
                                    r.topic, r.device_id, r.payload, r.size if r.size >= 0 else len(r.payload), r.detail)
                                   for r in rejected), key=lambda row: row[:2])
                    cur.executemany(INSERT_REJECTED, rows)
        for k in keys:
            self._last_seen[k] = seen[k]
        refused = set(refused_keys)
        attempted = sum(1 for r in batch.readings if r.device_key not in refused) if refused else len(batch.readings)
        refused_ids = {batch.messages[r.msg].device_id for r in batch.readings if r.device_key in refused and r.msg >= 0}
        return WriteResult(stored=stored, duplicates=attempted - stored - len(conflicts), conflicts=len(conflicts),
                           rejections=tuple(rejected), refused_devices=tuple(sorted(filter(None, refused_ids))))

    def _refusals(self, batch: Batch, refused: set[int], conflicts: list) -> list[RejectedRow]:
        """The messages of readings refused at write time, each once per reason: devices retired or deleted
        (unknown_device), and readings whose key already holds another value (conflicting_duplicate, with
        both values)."""
        def record(m: RejectedRow, reason: str, detail: str) -> RejectedRow:
            return RejectedRow(m.received_at, m.topic, m.device_id, m.payload[:self._keep], reason, detail, m.size,
                               m.digest or digest(m.topic, m.payload))

        out = []
        gone = sorted({r.msg for r in batch.readings if r.device_key in refused and r.msg >= 0})
        for i in gone:
            m = batch.messages[i]
            out.append(record(m, Reason.UNKNOWN_DEVICE, f"device {m.device_id!r} was retired or deleted"))
        by_msg: dict[int, list[str]] = {}
        codes = {m.key: m.code for m in self.metrics.values()} if self.metrics else {}
        for msg, metric_key, t, value, stored in conflicts:
            when = datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
            by_msg.setdefault(msg, []).append(f"{codes.get(metric_key, metric_key)} at {when}: sent {value:g}, "
                                              f"stored {stored:g}")
        for msg, details in by_msg.items():
            if msg >= 0:
                m = batch.messages[msg]
                more = f"; and {len(details) - 5} more" if len(details) > 5 else ""
                out.append(record(m, Reason.CONFLICTING_DUPLICATE,
                                  "a different value is already stored: " + "; ".join(details[:5]) + more))
        return out


class Housekeeping:
    """The ingestor's periodic work on the shared tables, over the same pool: daily rollups, fleet
    freshness, retention. Called from the housekeeping thread, never the pipeline thread."""

    def __init__(self, store: IngestStore, timezone: str):
        self._store, self._tz = store, timezone

    def refresh_daily(self, max_days: int = 62) -> int:
        from services.store import rollups

        def work(conn: psycopg.Connection) -> int:
            conn.autocommit = True
            try:
                return rollups.refresh(conn, self._tz, max_days)
            finally:
                conn.autocommit = False
        return self._store._run(work)

    def clock_offset(self) -> float:
        """The database's clock minus this host's, in seconds (the round trip's midpoint)."""
        def measure(conn: psycopg.Connection) -> float:
            before = time.time()
            db = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
            return db - (before + time.time()) / 2
        return self._store._run(measure)

    def fleet(self) -> tuple[int, int]:
        """(devices registered and not retired, silent ones)."""
        from services.store.fleet import FLEET_COUNTS

        return self._store._run(lambda conn: tuple(conn.execute(FLEET_COUNTS).fetchone()))

    def apply_retention(self, raw_days: int, rejected_days: int, receipts_s: float = 7 * 86400,
                        lock_timeout_s: float = 5.0) -> int:
        """Drop raw readings older than ``raw_days`` (whole chunks; the rollups stay) and rejected messages
        last received more than ``rejected_days`` ago, and receipts older than the broker may redeliver. Waits at most ``lock_timeout_s`` for a lock (a long
        export holds the chunks it reads): then it gives up until next time instead of stalling others.
        One ingestor at a time does it (an advisory lock). Returns chunks dropped plus rows deleted."""
        def work(conn: psycopg.Connection) -> int:
            with conn.transaction():
                if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (RETENTION_LOCK,)).fetchone()[0]:
                    return 0
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_s * 1000)}ms")))
                n = len(conn.execute("SELECT drop_chunks('readings', older_than => %s * interval '1 day')",
                                     (raw_days,)).fetchall())
                n += conn.execute("DELETE FROM rejected_messages WHERE last_received_at < now() - %s * interval '1 day'",
                                  (rejected_days,)).rowcount
                n += conn.execute("DELETE FROM message_receipts WHERE received_at < now() - %s * interval '1 second'",
                                  (receipts_s,)).rowcount
                return n
        return self._store._run(work)


RETENTION_LOCK = 0x72657465  # "rete"
