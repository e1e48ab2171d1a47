"""Fetch what the quality-of-life maths needs, for many devices at once, and shape it into plain
Python values. All SQL for /v1/qol lives here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.api.scope import Scope

#: An hour's mean is valid when its readings cover at least 75 % of the hour at the device's
#: reporting interval (EPA's completeness rule for hourly averages).
COVERAGE = 0.75


def readings_needed(interval_s: int) -> int:
    return max(1, math.ceil(COVERAGE * 3600 / interval_s))


@dataclass
class DeviceHours:
    """One device's valid hourly means of one metric, most recent hour first."""

    device_id: str
    csa: str
    neighbourhood: str
    means: dict[datetime, float] = field(default_factory=dict)

    def series(self, latest_hour: datetime, hours: int) -> list[float | None]:
        return [self.means.get(latest_hour - timedelta(hours=i)) for i in range(hours)]


async def hourly_means(conn, scope: Scope, metrics: tuple[str, ...], start: datetime, end: datetime,
                       energy: bool = False) -> dict[str, dict[str, DeviceHours]]:
    """{metric: {device_id: DeviceHours}} from the hourly rollups, hours in [start, end); an hour whose
    coverage is too thin is left out. With ``energy``, hourly means are energy means (decibels)."""
    scope_sql, params = scope.where()
    mean = "10 * log(h.energy / h.count)" if energy else "h.sum / h.count"
    rows = await (await conn.execute(f"""
        SELECT m.metric, d.device_id, d.csa, d.neighbourhood, d.interval_s, h.bucket, {mean}, h.count
        FROM readings_hourly h JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
        WHERE m.metric = ANY(%(metrics)s) AND h.bucket >= %(start)s AND h.bucket < %(end)s AND {scope_sql}""",
        {**params, "metrics": list(metrics), "start": start, "end": end})).fetchall()
    out: dict[str, dict[str, DeviceHours]] = {m: {} for m in metrics}
    for metric, device_id, csa, hood, interval_s, bucket, value, count in rows:
        if count < readings_needed(interval_s) or value is None:
            continue
        dh = out[metric].setdefault(device_id, DeviceHours(device_id, csa, hood))
        dh.means[bucket] = value
    return out


@dataclass
class Latest:
    device_id: str
    csa: str
    values: dict[str, float] = field(default_factory=dict)


async def latest_values(conn, scope: Scope, metrics: tuple[str, ...], at: datetime,
                        window: timedelta = timedelta(hours=1)) -> dict[str, Latest]:
    """Each device's most recent reading of each metric in (at − window, at]."""
    scope_sql, params = scope.where()
    rows = await (await conn.execute(f"""
        SELECT DISTINCT ON (r.device_key, r.metric_key) d.device_id, d.csa, m.metric, r.value
        FROM readings r JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
        WHERE m.metric = ANY(%(metrics)s) AND r.time > %(from)s AND r.time <= %(at)s AND {scope_sql}
        ORDER BY r.device_key, r.metric_key, r.time DESC""",
        {**params, "metrics": list(metrics), "from": at - window, "at": at})).fetchall()
    out: dict[str, Latest] = {}
    for device_id, csa, metric, value in rows:
        out.setdefault(device_id, Latest(device_id, csa)).values[metric] = value
    return out
