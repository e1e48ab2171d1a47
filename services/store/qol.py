"""What the quality-of-life maths needs, for many devices at once, and data freshness. Area scopes use
placements: an hour or a reading counts for the area its device was in at that time."""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import sql

from services.store.fleet import reporting_sql

_SCOPE = {"csa": sql.SQL("h.csa"), "neighbourhood": sql.SQL("h.neighbourhood"), "device": sql.SQL("d.device_id")}


def _scope(level: str) -> sql.Composable:
    return sql.SQL("TRUE") if level == "city" else sql.SQL("{} = %(scope_name)s").format(_SCOPE[level])


async def hourly(conn, scope: tuple[str, str | None], metrics: tuple[str, ...], start: datetime, end: datetime,
                 energy: bool = False) -> list[tuple]:
    """Rows (metric, device_id, csa, neighbourhood, interval_s, bucket, mean, count) of the hourly rollups in
    [start, end); with ``energy`` the mean is the energy mean (decibels)."""
    mean = sql.SQL("10 * log(h.energy / h.count)" if energy else "h.sum / h.count")
    q = sql.SQL("""
        SELECT m.metric, d.device_id, h.csa, h.neighbourhood, d.interval_s, h.bucket, {mean}, h.count
        FROM hourly_placed h JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
        WHERE m.metric = ANY(%(metrics)s) AND h.bucket >= %(start)s AND h.bucket < %(end)s AND {scope}""").format(
        mean=mean, scope=_scope(scope[0]))
    return await (await conn.execute(q, {"scope_name": scope[1], "metrics": list(metrics), "start": start,
                                         "end": end})).fetchall()


async def latest(conn, scope: tuple[str, str | None], metrics: tuple[str, ...], at: datetime,
                 window: timedelta = timedelta(hours=1)) -> list[tuple]:
    """Rows (device_id, csa, metric, value): each device's most recent reading of each metric in
    (at − window, at]."""
    q = sql.SQL("""
        SELECT DISTINCT ON (h.device_key, h.metric_key) d.device_id, h.csa, m.metric, h.value
        FROM readings_placed h JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
        WHERE m.metric = ANY(%(metrics)s) AND h.time > %(from)s AND h.time <= %(at)s AND {scope}
        ORDER BY h.device_key, h.metric_key, h.time DESC""").format(scope=_scope(scope[0]))
    return await (await conn.execute(q, {"scope_name": scope[1], "metrics": list(metrics), "from": at - window,
                                         "at": at})).fetchall()


async def coverage(conn, at: datetime) -> dict[str, tuple[int, int]]:
    """{csa: (devices in service, devices reporting at ``at``)}."""
    rows = await (await conn.execute(
        f"SELECT d.csa, count(*), count(*) FILTER (WHERE {reporting_sql('d', '%(at)s::timestamptz')}) "
        "FROM devices d WHERE d.retired_at IS NULL GROUP BY d.csa", {"at": at})).fetchall()
    return {csa: (n, fresh) for csa, n, fresh in rows}


async def freshness(conn, kind: str | None, csa: str | None) -> list[tuple]:
    """Per kind and CSA: devices, newest report, devices reporting, and the silent ones (JSON list)."""
    reporting = reporting_sql("d")
    return await (await conn.execute(f"""
        SELECT d.kind, d.csa, count(*), max(d.last_seen), count(*) FILTER (WHERE {reporting}),
               coalesce(jsonb_agg(jsonb_build_object('device_id', d.device_id, 'last_seen', d.last_seen,
                                                     'interval_s', d.interval_s) ORDER BY d.device_id)
                        FILTER (WHERE NOT {reporting}), '[]'::jsonb)
        FROM devices d
        WHERE d.retired_at IS NULL AND (%(kind)s::text IS NULL OR d.kind = %(kind)s)
          AND (%(csa)s::text IS NULL OR d.csa = %(csa)s)
        GROUP BY d.kind, d.csa ORDER BY d.kind, d.csa""", {"kind": kind, "csa": csa})).fetchall()
