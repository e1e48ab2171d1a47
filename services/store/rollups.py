"""The rollup rules, in one place.

- Hourly rollups (per device, metric and hour) are kept by the ingestor in the same statement as the raw
  insert, from the rows it really inserted (services/store/ingest.py, INSERT_READINGS).
- Daily and hourly rollups per CSA and hourly ones for the city (readings_daily_csa, readings_hourly_csa,
  readings_hourly_city) are kept by the city's local day (a date; DST days have 23 or 25 hours), attributed
  to the CSA each device was placed in at each hour (the view hourly_placed). Whoever changes hourly data
  marks the local days it touched dirty, in the same transaction and with a lock on the mark (ON CONFLICT
  DO UPDATE, which writes a new row version).
  ``refresh`` reads marks without locking them, recomputes those days into a scratch table, swaps the days'
  rows in, and only then deletes the marks whose row version is still the one it read: a writer that marked
  a day again meanwhile keeps its mark (the day is recomputed next time), and writers never wait for the
  recompute, only for the moment between the marks' delete and the commit. Contract: after ``refresh``
  returns, every day marked dirty by a transaction committed before it read the marks is up to date. A
  day's mark and its rows change in one transaction, so a reader that takes the days still marked from
  hourly_placed and the others from the CSA rollups sees every hour exactly once.
"""

from __future__ import annotations

import psycopg

#: Session advisory lock: one refresher at a time across every ingestor.
LOCK_KEY = 0x726F6C6C  # "roll"


def in_local_day(column: str, day: str) -> str:
    """SQL: the timestamp ``column`` falls on the city's local ``day`` (a date; the zone is ``%(tz)s``)."""
    return (f"{column} >= ({day}::timestamp AT TIME ZONE %(tz)s) "
            f"AND {column} < (({day} + 1)::timestamp AT TIME ZONE %(tz)s)")


#: The oldest marks, unlocked, with their row version (xmin: a writer's ON CONFLICT DO UPDATE changes it).
PENDING = """
SELECT day, xmin::text FROM rollup_dirty_days ORDER BY day LIMIT %(n)s
"""

#: The claimed days' hours, read once for both tables (a statement of its own: its snapshot is taken after
#: the marks were read, so it holds every write that committed a mark we read).
SCRATCH = f"""
CREATE TEMP TABLE rollup_src ON COMMIT DROP AS
SELECT days.day, h.bucket, h.csa, h.metric_key, h.device_key, h.count, h.sum, h.min, h.max, h.energy
FROM unnest(%(days)s::date[]) AS days(day) JOIN hourly_placed h ON {in_local_day("h.bucket", "days.day")}
"""

#: The next link of the chain (services/store/qol_history.py): the days' hourly AQI and noise by CSA are
#: computed again, those days' and the next days' (an hour's AQI reads up to 24 hours back).
MARK_QOL_DAYS = """
INSERT INTO qol_dirty_days AS dd (day)
SELECT DISTINCT d FROM unnest(%(days)s::date[]) AS days(day), LATERAL (VALUES (day), (day + 1)) AS both_(d) ORDER BY 1
ON CONFLICT (day) DO UPDATE SET day = dd.day
"""


def delete_local_days(table: str) -> str:
    """SQL: delete the rows of ``table`` whose ``bucket`` falls on one of the local days ``%(days)s``."""
    return (f"DELETE FROM {table} h USING unnest(%(days)s::date[]) AS days(day) "
            f"WHERE {in_local_day('h.bucket', 'days.day')}")


SWAP = [
    "DELETE FROM readings_daily_csa WHERE day = ANY(%(days)s)",
    delete_local_days("readings_hourly_csa"),
    """INSERT INTO readings_hourly_csa (bucket, csa, metric_key, count, sum, min, max, energy, devices)
       SELECT bucket, csa, metric_key, sum(count), sum(sum), min(min), max(max), sum(energy), count(*)
       FROM rollup_src GROUP BY 1, 2, 3
       ORDER BY 3, 1  -- a metric's hours side by side: a month of one metric reads a few hundred pages""",
    delete_local_days("readings_hourly_city"),
    """INSERT INTO readings_hourly_city (metric_key, bucket, count, sum, min, max, energy, devices)
       SELECT metric_key, bucket, sum(count), sum(sum), min(min), max(max), sum(energy), count(*)
       FROM rollup_src GROUP BY 1, 2 ORDER BY 1, 2""",
    """INSERT INTO readings_daily_csa (day, csa, metric_key, count, sum, min, max, energy, devices)
       SELECT day, csa, metric_key, sum(count), sum(sum), min(min), max(max), sum(energy),
              count(DISTINCT device_key)
       FROM rollup_src GROUP BY 1, 2, 3""",
    MARK_QOL_DAYS,
]

#: Last, so a writer marking one of these days waits only for the commit that follows. A mark written
#: again since it was read (another version) stays: its writer's rows may be missing from the scratch.
CLAIM = """
DELETE FROM rollup_dirty_days dd USING unnest(%(days)s::date[], %(versions)s::text[]) AS seen(day, version)
WHERE dd.day = seen.day AND dd.xmin::text = seen.version
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
            pending = conn.execute(PENDING, {"n": max_days}).fetchall()
            if pending:
                args = {"days": [d for d, _ in pending], "versions": [v for _, v in pending], "tz": timezone}
                conn.execute(SCRATCH, args)
                for statement in SWAP:
                    conn.execute(statement, args)
                conn.execute(CLAIM, args)
        return len(pending)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
