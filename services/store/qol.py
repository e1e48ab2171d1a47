"""What the quality-of-life maths needs, for many devices at once, and data freshness. Area scopes use
placements: an hour or a reading counts for the area its device was in at that time."""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import sql

from services.store.catalogue import metric_rows
from services.store.fleet import SLACK_S, reporting_sql

_SCOPE = {"csa": sql.SQL("h.csa"), "neighbourhood": sql.SQL("h.neighbourhood"), "device": sql.SQL("d.device_id")}


#: The devices that were ever in an area: lets the planner read only theirs by the rollups' and readings'
#: (device_key, …) keys, where the placement test alone would read every device's rows and filter them.
_EVER_IN = {"csa": sql.SQL(" AND h.device_key IN (SELECT device_key FROM device_placements WHERE csa = %(scope_name)s)"),
            "neighbourhood": sql.SQL(" AND h.device_key IN (SELECT device_key FROM device_placements "
                                     "WHERE neighbourhood = %(scope_name)s)"),
            "device": sql.SQL(" AND h.device_key = (SELECT device_key FROM devices WHERE device_id = %(scope_name)s)")}


#: An hour is valid when its readings cover ``coverage`` of it at the device's interval (services/api/qol/series.py).
VALID_HOUR = "h.count >= greatest(1, ceil(%(coverage)s * 3600 / d.interval_s))"


def _scope(level: str) -> sql.Composable:
    if level == "city":
        return sql.SQL("TRUE")
    return sql.SQL("{} = %(scope_name)s{}").format(_SCOPE[level], _EVER_IN[level])


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


async def recent_hours(conn, scope: tuple[str, str | None], windows: dict[str, int], latest_hour: datetime,
                       coverage: float, energy: bool = False) -> list[tuple]:
    """Rows (metric, device_id, csa, neighbourhood, hours ago[], means[]): each device's valid hourly means of
    each metric over the ``windows[metric]`` hours ending with ``latest_hour`` (0 hours ago), one row per
    device and metric, aggregated here so that a city's hours cross the wire as a few hundred rows (the
    arrays are parallel, in no order), with the area of the device's latest hour among them. An hour is valid
    when its readings cover ``coverage`` of it at the device's interval. City-wide, hours are grouped by
    integer keys and placed once per device (a third less work than placing every hour); an area's hours
    are placed one by one, since only those spent in the area count."""
    catalogue = await metric_rows(conn, tuple(windows))
    keys = [catalogue[m][0] for m in windows if m in catalogue]
    names = {catalogue[m][0]: m for m in windows if m in catalogue}
    mean = sql.SQL("10 * log(h.energy / h.count)" if energy else "h.sum / h.count")
    source = sql.SQL("readings_hourly" if scope[0] == "city" else "hourly_placed")
    q = sql.SQL("""
        SELECT g.metric_key, d.device_id, p.csa, p.neighbourhood, g.ago, g.means
        FROM (SELECT h.device_key, h.metric_key, max(h.bucket) AS last,
                     array_agg((extract(epoch FROM %(latest)s::timestamptz - h.bucket) / 3600)::int) AS ago,
                     array_agg({mean}) AS means
              FROM {source} h JOIN devices d ON d.device_key = h.device_key
              WHERE h.metric_key = ANY(%(keys)s::smallint[]) AND h.bucket > %(earliest)s AND h.bucket <= %(latest)s
                AND h.bucket > %(latest)s::timestamptz
                               - (%(hours)s::int[])[array_position(%(keys)s::smallint[], h.metric_key)] * interval '1 hour'
                AND {valid} AND {mean} IS NOT NULL AND {scope}
              GROUP BY h.device_key, h.metric_key) g
        JOIN devices d ON d.device_key = g.device_key
        JOIN device_placements p ON p.device_key = g.device_key AND g.last >= p.valid_from
                                 AND (p.valid_to IS NULL OR g.last < p.valid_to)""").format(
        mean=mean, source=source, scope=_scope(scope[0]), valid=sql.SQL(VALID_HOUR))
    rows = await (await conn.execute(q, {
        "scope_name": scope[1], "keys": keys, "hours": [windows[names[k]] for k in keys], "latest": latest_hour,
        "earliest": latest_hour - timedelta(hours=max(windows.values())), "coverage": coverage})).fetchall()
    return [(names[r[0]], *r[1:]) for r in rows]


async def energy_means_by_csa(conn, metric: str, latest_hour: datetime, hours: int, coverage: float) -> dict[str, float]:
    """{csa: the mean over its devices' valid hours of each hour's energy mean (Σ 10^(L/10) / n)} for the
    ``hours`` hours ending with ``latest_hour``; each hour counts for the area its device was in then."""
    key = (await metric_rows(conn, (metric,)))[metric][0]
    rows = await (await conn.execute(f"""
        SELECT h.csa, avg(h.energy / h.count)
        FROM hourly_placed h JOIN devices d ON d.device_key = h.device_key
        WHERE h.metric_key = %(key)s AND h.bucket > %(earliest)s AND h.bucket <= %(latest)s
          AND {VALID_HOUR} AND h.energy IS NOT NULL
        GROUP BY h.csa""", {"key": key, "earliest": latest_hour - timedelta(hours=hours), "latest": latest_hour,
                            "coverage": coverage})).fetchall()
    return dict(rows)


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
    """{csa: (devices in service, devices reporting at ``at``)}, now: from each device's last report."""
    rows = await (await conn.execute(
        f"SELECT d.csa, count(*), count(*) FILTER (WHERE {reporting_sql('d', '%(at)s::timestamptz')}) "
        "FROM devices d WHERE d.retired_at IS NULL GROUP BY d.csa", {"at": at})).fetchall()
    return {csa: (n, fresh) for csa, n, fresh in rows}


#: A device reporting at a past moment: a reading within twice its interval plus the slack before it (the
#: present's rule, services/store/fleet.py, asked of the readings instead of the last report). The readings
#: are read once, over the widest device's window: both its bounds are parameters, so only the chunks inside
#: it are planned (with the lower bound a subquery, every chunk before the moment was planned and opened: a
#: past summary took about 20 ms uncached on the benchmark's database, 14 ms with both bounds parameters).
COVERAGE_AT = f"""
WITH recent AS (
    SELECT r.device_key, max(r.time) AS last
    FROM readings r
    WHERE r.time <= %(at)s AND r.time > %(since)s
    GROUP BY r.device_key
)
SELECT p.csa, count(*),
       count(*) FILTER (WHERE recent.last > %(at)s - (2 * d.interval_s + {SLACK_S:g}) * interval '1 second')
FROM devices d
JOIN device_placements p ON p.device_key = d.device_key AND p.valid_from <= %(at)s
                         AND (p.valid_to IS NULL OR %(at)s < p.valid_to)
LEFT JOIN recent ON recent.device_key = d.device_key
WHERE d.retired_at IS NULL OR d.retired_at > %(at)s
GROUP BY p.csa
"""


async def coverage_at(conn, at: datetime) -> dict[str, tuple[int, int]]:
    """{csa: (devices in service, devices reporting)} at a past moment: the devices not retired by then, in
    the area they were placed in then, and those with a reading in the window before it. (A device's last
    report says nothing about a past hour: it counted every device as reporting, or none.)"""
    widest = (await (await conn.execute("SELECT coalesce(max(interval_s), 0) FROM devices")).fetchone())[0]
    since = at - timedelta(seconds=2 * widest + SLACK_S)
    rows = await (await conn.execute(COVERAGE_AT, {"at": at, "since": since})).fetchall()
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
