"""What the quality-of-life maths reads, shaped into plain values: each device's valid hourly means, and
each device's latest values. The SQL is the store's (services/store/qol.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.api.scope import Scope
from services.store import qol as store

#: An hour's mean is valid when its readings cover at least 75 % of the hour at the device's
#: reporting interval (EPA's completeness rule for hourly averages).
COVERAGE = 0.75


def readings_needed(interval_s: int) -> int:
    return max(1, math.ceil(COVERAGE * 3600 / interval_s))


@dataclass
class DeviceHours:
    """One device's valid hourly means of one metric, by hour."""

    device_id: str
    csa: str
    neighbourhood: str
    means: dict[datetime, float] = field(default_factory=dict)


async def hourly_means(conn, scope: Scope, metrics: tuple[str, ...], start: datetime, end: datetime,
                       energy: bool = False) -> dict[str, dict[str, DeviceHours]]:
    """{metric: {device_id: DeviceHours}}, hours in [start, end); an hour whose coverage is too thin is
    left out. With ``energy``, hourly means are energy means (decibels). A device that moved appears with
    the area of its latest hour in the range."""
    out: dict[str, dict[str, DeviceHours]] = {m: {} for m in metrics}
    for metric, device_id, csa, hood, interval_s, bucket, value, count in await store.hourly(
            conn, scope.key(), metrics, start, end, energy):
        if count < readings_needed(interval_s) or value is None:
            continue
        dh = out[metric].setdefault(device_id, DeviceHours(device_id, csa, hood))
        dh.means[bucket] = value
    return out


@dataclass
class DeviceSeries:
    """One device's valid hourly means of one metric over a window, most recent hour first
    (``values[0]`` is the latest complete hour; None marks a missing or too thinly covered hour)."""

    device_id: str
    csa: str
    neighbourhood: str
    values: list[float | None]


async def recent_hours(conn, scope: Scope, windows: dict[str, int], latest_hour: datetime,
                       energy: bool = False) -> dict[str, dict[str, DeviceSeries]]:
    """{metric: {device_id: DeviceSeries}} over the ``windows[metric]`` hours ending with ``latest_hour``:
    what the AQI's averaging rules read (12 hours for NowCast, 8 for ozone and CO…), and no more."""
    out: dict[str, dict[str, DeviceSeries]] = {m: {} for m in windows}
    for metric, device_id, csa, hood, ago, means in await store.recent_hours(
            conn, scope.key(), windows, latest_hour, COVERAGE, energy):
        values: list[float | None] = [None] * windows[metric]
        for i, v in zip(ago, means):
            values[i] = v
        # a device that moved counts in the area of its latest hour
        out[metric][device_id] = DeviceSeries(device_id, csa, hood, values)
    return out


@dataclass
class Latest:
    device_id: str
    csa: str
    values: dict[str, float] = field(default_factory=dict)


async def latest_values(conn, scope: Scope, metrics: tuple[str, ...], at: datetime,
                        window: timedelta = timedelta(hours=1)) -> dict[str, Latest]:
    """Each device's most recent reading of each metric in (at − window, at]."""
    out: dict[str, Latest] = {}
    for device_id, csa, metric, value in await store.latest(conn, scope.key(), metrics, at, window):
        out.setdefault(device_id, Latest(device_id, csa)).values[metric] = value
    return out
