"""Readings in time buckets, from the cheapest source that can answer:

- ``daily_rollups``: whole-day buckets by city or CSA (local days, from readings_daily_csa);
- ``csa_hourly_rollups``: other whole-hour buckets by city or CSA (readings_hourly_csa, the hours of local
  days the rollup job has not yet recomputed from hourly_placed: never behind the hourly rollups);
- ``city_hourly_rollups``: the same by city (readings_hourly_city, one row an hour), same rule;
- ``hourly_rollups``: other whole-hour buckets (hourly_placed: each hour in the area its device was in);
- ``raw``: shorter buckets (readings_placed).

Buckets of whole days are local days everywhere (time_bucket with the city's time zone, so a DST day is a
23- or 25-hour bucket); shorter buckets are UTC-aligned. Start and end are widened to the bucket grid, so
every source gives the same answer for the same question.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from psycopg import sql

from services.store.catalogue import metric_row
from services.store.readings import Unknown
from services.store.rollups import in_local_day

GROUPS = {"city": sql.SQL("'city'"), "csa": sql.SQL("h.csa"), "neighbourhood": sql.SQL("h.neighbourhood"),
          "device": sql.SQL("d.device_id")}
SCOPES = {"csa": sql.SQL("h.csa"), "neighbourhood": sql.SQL("h.neighbourhood"), "device": sql.SQL("d.device_id")}


def _bucket_expr(column: sql.Composable, whole_days: bool) -> sql.Composable:
    if whole_days:
        return sql.SQL("time_bucket(%(bucket)s, {}, %(tz)s)").format(column)
    return sql.SQL("time_bucket(%(bucket)s, {})").format(column)


#: TimescaleDB's default origin for time_bucket on timestamptz (a Monday): buckets of fixed length are
#: counted from it.
ORIGIN = datetime(2000, 1, 3, tzinfo=dt_timezone.utc)


def utc_grid(size: timedelta, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to a UTC-aligned grid of ``size`` exactly as time_bucket() draws it, without a
    round trip to the database."""
    g0 = ORIGIN + ((start - ORIGIN) // size) * size
    g1 = ORIGIN + ((end - timedelta(microseconds=1) - ORIGIN) // size) * size + size
    return g0, g1


async def grid(conn, size: timedelta, start: datetime, end: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) widened to the bucket grid. Whole days are local days: the end is the next local
    midnight (wall-clock arithmetic, so a DST day keeps its 23 or 25 hours)."""
    if size % timedelta(days=1) != timedelta(0):
        return utc_grid(size, start, end)
    q = ("SELECT time_bucket(%(b)s, %(s)s::timestamptz, %(tz)s), "
         "((time_bucket(%(b)s, %(e)s::timestamptz - interval '1 microsecond', %(tz)s) AT TIME ZONE %(tz)s) + %(b)s)"
         " AT TIME ZONE %(tz)s")
    return await (await conn.execute(q, {"b": size, "s": start, "e": end, "tz": timezone})).fetchone()


async def aggregate(conn, *, metric: str, size: timedelta, start: datetime, end: datetime, group_by: str,
                    scope: tuple[str, str | None], kind: str | None, limit: int,
                    after: tuple[str, datetime] | None, source: str, timezone: str):
    """(metric row, grid start, grid end, rows of (bucket, group, count, sum, min, max, energy)).
    Raises Unknown("metric") for a metric not in the catalogue."""
    m = await metric_row(conn, metric)
    if m is None:
        raise Unknown("metric")
    metric_key, _, aggregation = m
    g0, g1 = await grid(conn, size, start, end, timezone)
    whole_days = size % timedelta(days=1) == timedelta(0)
    params = {"bucket": size, "metric_key": metric_key, "start": g0, "end": g1, "limit": limit,
              "kind": kind, "tz": timezone, "scope_name": scope[1]}
    keyset = sql.SQL("")
    if after is not None:
        keyset = sql.SQL("WHERE (grp, b) > (%(after_group)s, %(after_bucket)s)")
        params.update(after_group=after[0], after_bucket=after[1])
    if source == "daily_rollups":
        # local days stored as dates: the bucket is the local midnight that starts it
        where = sql.SQL("TRUE") if scope[0] == "city" else sql.SQL("h.csa = %(scope_name)s")
        # grouped by date, then each bucket's date made its local midnight (once a bucket, not once a row);
        # read from the covering index (migration 014) without visiting the table
        inner = sql.SQL("""
            SELECT (x.d::timestamp AT TIME ZONE %(tz)s) AS b, x.grp, x.count, x.sum, x.min, x.max, x.energy
            FROM (SELECT time_bucket(%(bucket)s, h.day) AS d, {grp} AS grp,
                         sum(h.count)::bigint AS count, sum(h.sum) AS sum, min(h.min) AS min, max(h.max) AS max,
                         sum(h.energy) AS energy
                  FROM readings_daily_csa h
                  WHERE h.metric_key = %(metric_key)s
                    AND h.day >= (%(start)s::timestamptz AT TIME ZONE %(tz)s)::date
                    AND h.day < (%(end)s::timestamptz AT TIME ZONE %(tz)s)::date AND {where}
                  GROUP BY 1, 2) x""").format(grp=sql.SQL("'city'") if group_by == "city" else sql.SQL("h.csa"), where=where)
    elif source in ("csa_hourly_rollups", "city_hourly_rollups"):
        # the days the rollup job has recomputed from its rows (the CSAs' or the city's), the days still marked
        # from hourly_placed: one statement, one snapshot, so every hour is counted once (services/store/rollups.py)
        city_rows = source == "city_hourly_rollups"
        where = sql.SQL("TRUE") if scope[0] == "city" else sql.SQL("csa = %(scope_name)s")
        inner = sql.SQL("""
            SELECT time_bucket(%(bucket)s, h.bucket) AS b, {grp} AS grp, sum(h.count)::bigint AS count,
                   sum(h.sum) AS sum, min(h.min) AS min, max(h.max) AS max, sum(h.energy) AS energy
            FROM (SELECT bucket, {csa} AS csa, count, sum, min, max, energy FROM {table}
                  WHERE metric_key = %(metric_key)s AND bucket >= %(start)s AND bucket < %(end)s AND {where}
                    AND (bucket AT TIME ZONE %(tz)s)::date NOT IN (SELECT day FROM rollup_dirty_days)
                  UNION ALL
                  SELECT p.bucket, p.csa, p.count, p.sum, p.min, p.max, p.energy
                  FROM rollup_dirty_days dd JOIN hourly_placed p ON {in_day}
                  WHERE p.metric_key = %(metric_key)s AND p.bucket >= %(start)s AND p.bucket < %(end)s
                    AND {where_p}) h
            GROUP BY 1, 2""").format(
            grp=sql.SQL("'city'") if group_by == "city" else sql.SQL("h.csa"),
            csa=sql.SQL("NULL::text" if city_rows else "csa"),
            table=sql.Identifier("readings_hourly_city" if city_rows else "readings_hourly_csa"),
            where=sql.SQL("TRUE") if city_rows else where, in_day=sql.SQL(in_local_day("p.bucket", "dd.day")),
            where_p=sql.SQL("TRUE") if scope[0] == "city" else sql.SQL("p.csa = %(scope_name)s"))
    else:
        # Areas need each row's placement, device ids and kinds the devices table; the city as a whole neither
        # (every reading has its device and a placement from -infinity): the joins are left out then.
        placed = "csa" in (group_by, scope[0]) or "neighbourhood" in (group_by, scope[0])
        devices = kind is not None or "device" in (group_by, scope[0])
        if source == "hourly_rollups":
            table, t = sql.SQL("hourly_placed h" if placed else "readings_hourly h"), sql.SQL("h.bucket")
            cnt, sm, mn, mx, en = (sql.SQL(x) for x in ("sum(h.count)", "sum(h.sum)", "min(h.min)", "max(h.max)",
                                                         "sum(h.energy)"))
        else:
            table, t = sql.SQL("readings_placed h" if placed else "readings h"), sql.SQL("h.time")
            cnt, sm, mn, mx = (sql.SQL(x) for x in ("count(*)", "sum(h.value)", "min(h.value)", "max(h.value)"))
            en = sql.SQL("sum(power(10::float8, h.value / 10))" if aggregation == "energy" else "NULL::float8")
        where = [sql.SQL("h.metric_key = %(metric_key)s"), sql.SQL("{} >= %(start)s").format(t),
                 sql.SQL("{} < %(end)s").format(t)]
        if scope[0] != "city":
            where.append(sql.SQL("{} = %(scope_name)s").format(SCOPES[scope[0]]))
        if kind is not None:
            where.append(sql.SQL("d.kind = %(kind)s"))
        inner = sql.SQL("""
            SELECT {b} AS b, {grp} AS grp, {cnt}::bigint AS count, {sm} AS sum, {mn} AS min, {mx} AS max, {en} AS energy
            FROM {table}{join}
            WHERE {where}
            GROUP BY 1, 2""").format(b=_bucket_expr(t, whole_days), grp=GROUPS[group_by], cnt=cnt, sm=sm, mn=mn,
                                     mx=mx, en=en, table=table, where=sql.SQL(" AND ").join(where),
                                     join=sql.SQL(" JOIN devices d USING (device_key)" if devices else ""))
    q = sql.SQL("SELECT b, grp, count, sum, min, max, energy FROM ({inner}) a {keyset} ORDER BY grp, b LIMIT %(limit)s"
                ).format(inner=inner, keyset=keyset)
    rows = await (await conn.execute(q, params)).fetchall()
    return m, g0, g1, rows
