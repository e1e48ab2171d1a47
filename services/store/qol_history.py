"""Each CSA's AQI and noise at every past hour, kept by a background job so that a past hour's city-wide
summary reads 55 rows instead of every device's hours (migration 011).

The chain of marks keeps it exact:
- a write to hourly data marks its local day in rollup_dirty_days (services/store/rollups.py);
- the rollup job, when it recomputes a day D, marks D and D+1 in qol_dirty_days in the same transaction
  (rollups.MARK_QOL_DAYS: an hour's AQI reads up to 24 hours back, so D's data reaches into D+1's hours);
- this job locks marks of days that have ended (a day still running stays marked; marks another job holds
  are skipped, so several jobs share the work), computes those days' hours with the same maths as a
  request (services/api/qol), swaps them in and deletes the marks, in one transaction. A rollup job
  marking one of those days meanwhile waits for that commit, then marks it again: it is computed again.
A reader takes an hour from here only when neither its day is marked here nor its day or the day before in
rollup_dirty_days, in the same snapshot as the rows; otherwise it computes the hour from the hourly
rollups as before. So the answer never lags the data, and the job can be behind without anyone seeing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from services.store.qol import VALID_HOUR
from services.store.rollups import delete_local_days

PENDING = """
SELECT day FROM qol_dirty_days
WHERE day < (now() AT TIME ZONE %(tz)s)::date  -- a day still running is computed once it has ended
ORDER BY day LIMIT %(n)s
FOR UPDATE SKIP LOCKED
"""

#: The valid hourly means (services/api/qol/series.py: ≥ 75 % covered) of each pollutant per device over
#: (start, end), with the area each hour belongs to, as parallel arrays (hours from ``start``).
HOURS = f"""
SELECT h.metric_key, d.device_id,
       array_agg((extract(epoch FROM h.bucket - %(start)s::timestamptz) / 3600)::int ORDER BY h.bucket),
       array_agg(h.sum / h.count ORDER BY h.bucket), array_agg(h.csa ORDER BY h.bucket)
FROM hourly_placed h JOIN devices d ON d.device_key = h.device_key
WHERE h.metric_key = ANY(%(keys)s::smallint[]) AND h.bucket > %(start)s AND h.bucket < %(end)s
  AND {VALID_HOUR} AND h.sum / h.count IS NOT NULL
GROUP BY h.metric_key, d.device_id
"""

DELETE_DAYS = delete_local_days("qol_hourly_csa")

#: Each CSA's noise at each of the given hours: the mean over its devices' valid hours in the 24 hours
#: ending there of each hour's energy mean (services/store/qol.py energy_means_by_csa, for many hours).
NOISE = f"""
WITH per_hour AS (
    SELECT h.csa, h.bucket, sum(h.energy / h.count) AS total, count(*) AS n
    FROM hourly_placed h JOIN devices d ON d.device_key = h.device_key
    WHERE h.metric_key = %(key)s AND h.bucket > %(start)s AND h.bucket < %(end)s
      AND {VALID_HOUR} AND h.energy IS NOT NULL
    GROUP BY 1, 2
)
SELECT hours.h, p.csa, sum(p.total) / sum(p.n)
FROM unnest(%(hours)s::timestamptz[]) AS hours(h)
JOIN per_hour p ON p.bucket > hours.h - interval '24 hours' AND p.bucket <= hours.h
GROUP BY 1, 2
"""

INSERT = """
INSERT INTO qol_hourly_csa (bucket, csa, aqi, category, main_pollutant, pollutants, noise_energy)
SELECT * FROM unnest(%(buckets)s::timestamptz[], %(csas)s::text[], %(aqis)s::int[], %(categories)s::text[],
                     %(mains)s::text[], %(pollutants)s::jsonb[], %(noise)s::float8[])
"""

CLAIM = "DELETE FROM qol_dirty_days WHERE day = ANY(%(days)s)"

#: An hour's rows, or none at all when the hour is still behind (its day or the one before marked).
BEHIND = """
WITH behind AS (
    SELECT EXISTS (SELECT 1 FROM qol_dirty_days WHERE day = (%(h)s::timestamptz AT TIME ZONE %(tz)s)::date)
        OR EXISTS (SELECT 1 FROM rollup_dirty_days
                   WHERE day BETWEEN (%(h)s::timestamptz AT TIME ZONE %(tz)s)::date - 1
                                 AND (%(h)s::timestamptz AT TIME ZONE %(tz)s)::date) AS b
)
"""
READ_HOUR = BEHIND + """
SELECT behind.b, a.csa, a.aqi, a.category, a.main_pollutant, a.noise_energy
FROM behind LEFT JOIN qol_hourly_csa a ON NOT behind.b AND a.bucket = %(h)s
"""

#: One area's kept AQI at an hour. The rows follow the city-wide rule (a device counts, with all its hours, in
#: the area of its latest one), which is an area's own rule (only the hours spent in the area count) as long as
#: no device moved in the hours read: the caller computes the hour when one did.
MOVED = """EXISTS (SELECT 1 FROM device_placements
        WHERE valid_from > %(h)s::timestamptz - %(lookback)s AND valid_from <= %(h)s::timestamptz + interval '1 hour')"""
READ_CSA_HOUR = BEHIND + f"""
SELECT behind.b OR {MOVED}, a.aqi, a.category, a.main_pollutant, a.pollutants
FROM behind LEFT JOIN qol_hourly_csa a ON NOT behind.b AND a.bucket = %(h)s AND a.csa = %(csa)s
"""

@dataclass
class Series:
    """One device's valid hourly means of one pollutant: hour index (from the span's start) → (mean, CSA)."""

    metric: str
    device_id: str
    hours: dict[int, tuple[float, str]]


async def read_hour(conn, hour: datetime, timezone: str) -> dict[str, tuple] | None:
    """{csa: (aqi, category, main pollutant, noise energy)} at the latest complete hour ``hour``, or None
    when the job has not caught up with it (the caller computes it from the hourly rollups)."""
    rows = await (await conn.execute(READ_HOUR, {"h": hour, "tz": timezone})).fetchall()
    if rows[0][0]:
        return None
    return {r[1]: tuple(r[2:]) for r in rows if r[1] is not None}


async def read_csa_hour(conn, hour: datetime, csa: str, timezone: str, lookback: timedelta) -> tuple | None:
    """(aqi, category, main pollutant, kept pollutants) of one CSA at the latest complete hour ``hour`` (all
    None: no valid index), or None when the caller must compute it: the job has not caught up with the hour,
    or a device moved within ``lookback`` of it."""
    row = await (await conn.execute(READ_CSA_HOUR, {"h": hour, "tz": timezone, "csa": csa, "lookback": lookback})).fetchone()
    # behind, or a row without its pollutants: written by an API of before migration 013 still running its
    # job during an upgrade (the migration marked the older rows' days, so those read as behind)
    if row[0] or (row[1] is not None and row[4] is None):
        return None
    return tuple(row[1:])


async def moved(conn, hour: datetime, lookback: timedelta) -> bool:
    """Whether a device moved within ``lookback`` of the latest complete hour ``hour`` (or in it)."""
    return (await (await conn.execute(f"SELECT {MOVED}", {"h": hour, "lookback": lookback})).fetchone())[0]


async def pending(conn, timezone: str, max_days: int) -> list[date]:
    """Up to ``max_days`` marked days that have ended, oldest first, locked until the transaction ends."""
    return [r[0] for r in await (await conn.execute(PENDING, {"tz": timezone, "n": max_days})).fetchall()]


async def series(conn, keys: dict[int, str], start: datetime, end: datetime, coverage: float) -> list[Series]:
    rows = await (await conn.execute(HOURS, {"keys": list(keys), "start": start, "end": end,
                                             "coverage": coverage})).fetchall()
    return [Series(keys[k], device_id, {i: (v, c) for i, v, c in zip(idx, means, csas)})
            for k, device_id, idx, means, csas in rows]


async def noise(conn, key: int, hours: list[datetime], coverage: float) -> list[tuple]:
    """Rows (hour, csa, noise energy) for the given hours (ascending)."""
    return await (await conn.execute(NOISE, {"key": key, "hours": hours, "start": hours[0] - timedelta(hours=24),
                                             "end": hours[-1] + timedelta(hours=1), "coverage": coverage})).fetchall()


async def replace(conn, days: list[date], rows: list[tuple], timezone: str) -> None:
    """The days' rows swapped for ``rows`` (bucket, csa, aqi, category, main pollutant, kept pollutants, noise
    energy), and their marks deleted."""
    await conn.execute(DELETE_DAYS, {"days": days, "tz": timezone})
    if rows:
        cols = list(zip(*rows))
        await conn.execute(INSERT, {"buckets": list(cols[0]), "csas": list(cols[1]), "aqis": list(cols[2]),
                                    "categories": list(cols[3]), "mains": list(cols[4]),
                                    "pollutants": [None if p is None else Jsonb(p) for p in cols[5]], "noise": list(cols[6])})
    await conn.execute(CLAIM, {"days": days})


def day_hours(day: date, tz: ZoneInfo) -> list[datetime]:
    """Every hour of a local day (23, 24 or 25), as UTC bucket starts."""
    start = datetime.combine(day, time(), tz).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(timezone.utc)
    return [start + timedelta(hours=i) for i in range(int((end - start).total_seconds()) // 3600)]
