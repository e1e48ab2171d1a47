"""The daily rollup job: recompute the days the ingestor marked dirty, from the hourly rollups, into
readings_daily_csa. Runs in its own thread with its own connection, about once a minute; a session
advisory lock lets only one ingestor of several do it at a time.

Contract: after :func:`refresh` returns, every day marked dirty before it started is up to date. A
day that receives readings while it runs is marked dirty again and done next time.
"""

from __future__ import annotations

import logging
import threading

import psycopg

log = logging.getLogger("citysense.ingest.rollups")
LOCK_KEY = 0x726F6C6C  # "roll"

RECOMPUTE = """
WITH days AS (SELECT unnest(%(days)s::timestamptz[]) AS day)
INSERT INTO readings_daily_csa (day, csa, metric_key, count, sum, min, max, energy, devices)
SELECT time_bucket('1 day', h.bucket), d.csa, h.metric_key, sum(h.count), sum(h.sum), min(h.min), max(h.max),
       sum(h.energy), count(DISTINCT h.device_key)
FROM days JOIN readings_hourly h ON h.bucket >= days.day AND h.bucket < days.day + interval '1 day'
JOIN devices d USING (device_key)
GROUP BY 1, 2, 3
"""


#: A device is silent when it has not reported within twice its interval (as /v1/status/freshness says).
FLEET = """
SELECT count(*), count(*) FILTER (WHERE last_seen IS NULL OR last_seen < now() - 2 * interval_s * interval '1 second')
FROM devices
"""


def refresh(conn: psycopg.Connection, max_days: int = 62) -> int:
    """Recompute up to ``max_days`` dirty days (oldest first); returns how many were done.
    ``conn`` must be in autocommit mode (the advisory lock is held by the session)."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        return 0
    try:
        with conn.transaction():
            days = [r[0] for r in conn.execute(
                "DELETE FROM rollup_dirty_days WHERE day IN (SELECT day FROM rollup_dirty_days ORDER BY day LIMIT %s) "
                "RETURNING day", (max_days,))]
            if days:
                conn.execute("DELETE FROM readings_daily_csa WHERE day = ANY(%s)", (days,))
                conn.execute(RECOMPUTE, {"days": days})
        return len(days)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


class RollupJob(threading.Thread):
    """Each round: the dirty days, then the fleet's freshness for the metrics (devices registered and
    silent), which operators alert on."""

    def __init__(self, dsn: str, every_s: float = 60.0, metrics=None):
        super().__init__(name="rollups", daemon=True)
        self._dsn, self._every, self._metrics = dsn, every_s, metrics
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        conn = None
        while not self._stop.wait(self._every):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._dsn, connect_timeout=5, autocommit=True,
                                           application_name="citysense-rollups")
                while (n := refresh(conn)) and not self._stop.is_set():
                    log.info("daily rollups recomputed for %d days", n)
                if self._metrics is not None:
                    registered, silent = conn.execute(FLEET).fetchone()
                    self._metrics.devices_registered.set(registered)
                    self._metrics.devices_silent.set(silent)
            except psycopg.Error as exc:  # the database is away: try again next round
                log.warning("daily rollups skipped this round: %s", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
