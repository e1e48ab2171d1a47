"""The rollup rules, in one place.

- Hourly rollups (per device, metric and hour) are kept by the ingestor in the same statement as the raw
  insert, from the rows it really inserted (services/store/ingest.py, INSERT_READINGS).
- Daily and hourly rollups per CSA (readings_daily_csa, readings_hourly_csa) are by the city's local day (a
  date; DST days have 23 or 25 hours), attributed to the CSA each device was placed in at each hour (the
  view hourly_placed). Whoever changes hourly data marks the local days it touched dirty, in the same
  transaction and with a lock on the mark (ON CONFLICT DO UPDATE); ``refresh`` claims marks and recomputes
  those days, daily and hourly rows together. Contract: after ``refresh`` returns, every day marked dirty by
  a transaction committed before it claimed the mark is up to date; a writer holding a mark makes the claim
  wait for its commit. A day's mark and its rows change in one transaction, so a reader that takes the
  days still marked from hourly_placed and the others from the CSA rollups sees every hour exactly once.
"""

from __future__ import annotations

import psycopg

#: Session advisory lock: one refresher at a time across every ingestor.
LOCK_KEY = 0x726F6C6C  # "roll"

CLAIM = """
DELETE FROM rollup_dirty_days
WHERE day IN (SELECT day FROM rollup_dirty_days ORDER BY day LIMIT %(n)s)
RETURNING day
"""

#: One scan of the claimed days' hours feeds both tables (the claim is held while it runs, and writers
#: marking the same days wait for it).
RECOMPUTE = """
WITH src AS MATERIALIZED (
    SELECT days.day, h.bucket, h.csa, h.metric_key, h.device_key, h.count, h.sum, h.min, h.max, h.energy
    FROM unnest(%(days)s::date[]) AS days(day)
    JOIN hourly_placed h ON h.bucket >= (days.day::timestamp AT TIME ZONE %(tz)s)
                        AND h.bucket < ((days.day + 1)::timestamp AT TIME ZONE %(tz)s)
), hours AS (
    INSERT INTO readings_hourly_csa (bucket, csa, metric_key, count, sum, min, max, energy, devices)
    SELECT bucket, csa, metric_key, sum(count), sum(sum), min(min), max(max), sum(energy), count(*)
    FROM src GROUP BY 1, 2, 3
    ORDER BY 3, 1  -- a metric's hours side by side: a month of one metric reads a few hundred pages
)
INSERT INTO readings_daily_csa (day, csa, metric_key, count, sum, min, max, energy, devices)
SELECT day, csa, metric_key, sum(count), sum(sum), min(min), max(max), sum(energy), count(DISTINCT device_key)
FROM src GROUP BY 1, 2, 3
"""

DELETE_HOURS = """
DELETE FROM readings_hourly_csa h USING unnest(%(days)s::date[]) AS days(day)
WHERE h.bucket >= (days.day::timestamp AT TIME ZONE %(tz)s) AND h.bucket < ((days.day + 1)::timestamp AT TIME ZONE %(tz)s)
"""

#: The local days holding one device's hourly data: marked when its data changes outside the ingestor.
MARK_DEVICE_DAYS = """
INSERT INTO rollup_dirty_days AS dd (day)
SELECT DISTINCT (bucket AT TIME ZONE %(tz)s)::date FROM readings_hourly WHERE device_key = %(key)s ORDER BY 1
ON CONFLICT (day) DO UPDATE SET day = dd.day
"""


def refresh(conn: psycopg.Connection, timezone: str, max_days: int = 62) -> int:
    """Recompute up to ``max_days`` dirty days (oldest first); returns how many were done, 0 when another
    refresher holds the lock. ``conn`` must be in autocommit mode (the advisory lock is the session's)."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        return 0
    try:
        with conn.transaction():
            days = [r[0] for r in conn.execute(CLAIM, {"n": max_days})]
            if days:
                conn.execute("DELETE FROM readings_daily_csa WHERE day = ANY(%s)", (days,))
                conn.execute(DELETE_HOURS, {"days": days, "tz": timezone})
                conn.execute(RECOMPUTE, {"days": days, "tz": timezone})
        return len(days)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
