"""Each CSA's AQI and noise at every past hour, kept in the background by the API (every API process takes a share:
a day is computed by whoever locked its mark), so that a past hour's city-wide summary reads it instead of
every device's hours on request. The AQI is the request's own maths (:func:`indicators.area_aqi` over the
same series), the noise the request's own rule in SQL for many hours at once; services/store/qol_history.py
says how the marks keep every answer exact while the job is behind.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool

from services.api.background import BackgroundTask
from services.api.qol import indicators
from services.api.qol.aqi import WINDOWS
from services.api.qol.series import COVERAGE, DeviceSeries
from services.store import qol_history as store
from services.store.catalogue import metric_rows

log = logging.getLogger("citysense.api.qol_history")

#: The longest window an hour's index reads (SO2's 24 hours).
LOOKBACK = timedelta(hours=max(WINDOWS.values()))


def area_indices(series: list[store.Series], hours: list[datetime], start: datetime) -> list[tuple]:
    """Rows (hour, csa, aqi, category, main pollutant, kept pollutants) for every hour in ``hours`` (UTC bucket starts), from
    series indexed in hours from ``start`` (at least the longest window before the first hour): at each
    hour, each device's values over its pollutant's window (most recent first), in the area of its latest
    valid hour there, exactly what a request at that hour reads (services/store/qol.py recent_hours), then
    each area's index as the request computes it."""
    n = int((hours[-1] - start).total_seconds()) // 3600 + 1
    dense = []
    for s in series:
        values: list[float | None] = [None] * n
        areas: list[str | None] = [None] * n
        for i, (v, c) in s.hours.items():
            if 0 <= i < n:
                values[i], areas[i] = v, c
        latest, running = [-1] * n, -1  # latest[k]: the latest valid hour at or before k
        for i in range(n):
            if values[i] is not None:
                running = i
            latest[i] = running
        dense.append((s.metric, s.device_id, WINDOWS[s.metric], values, areas, latest))
    rows = []
    for hour in hours:
        k = int((hour - start).total_seconds()) // 3600
        by_csa: dict[str, dict[str, dict[str, DeviceSeries]]] = {}
        for metric, device_id, window, values, areas, latest in dense:
            j = latest[k]
            if j < 0 or j <= k - window:
                continue  # nothing valid in this hour's window
            csa = areas[j]
            by_csa.setdefault(csa, {}).setdefault(metric, {})[device_id] = DeviceSeries(
                device_id, csa, "", values[k - window + 1:k + 1][::-1])
        for csa, pollutants in by_csa.items():
            a = indicators.area_aqi(pollutants)
            if a["aqi"] is not None:
                rows.append((hour, csa, a["aqi"], a["category"], a["main_pollutant"], indicators.kept_pollutants(a)))
    return rows


def _runs(days: list[date]) -> list[list[date]]:
    """Consecutive days together: each run's hours are read in one query."""
    runs: list[list[date]] = []
    for d in sorted(days):
        if runs and runs[-1][-1] + timedelta(days=1) == d:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


async def catch_up_once(conn, timezone: str, max_days: int = 7, compute=None) -> int:
    """Compute up to ``max_days`` marked (and ended) days that no other job holds, oldest first, in one
    transaction; returns how many. ``compute`` runs the maths (default: in a
    worker thread, off the event loop)."""
    tz = ZoneInfo(timezone)
    compute = compute or (lambda *a: run_in_threadpool(area_indices, *a))
    async with conn.transaction():
        pending = await store.pending(conn, timezone, max_days)
        if not pending:
            return 0
        catalogue = await metric_rows(conn, (*WINDOWS, "noise_laeq"))
        keys = {catalogue[m][0]: m for m in WINDOWS if m in catalogue}
        figures: dict[tuple, list] = {}
        for run in _runs(pending):
            hours = [h for d in run for h in store.day_hours(d, tz)]
            start = hours[0] - LOOKBACK
            series = await store.series(conn, keys, start, hours[-1] + timedelta(hours=1), COVERAGE)
            for hour, csa, *aqi in await compute(series, hours, start):
                figures[hour, csa] = [*aqi, None]
            for hour, csa, energy in await store.noise(conn, catalogue["noise_laeq"][0], hours, COVERAGE):
                figures.setdefault((hour, csa), [None] * 5)[4] = energy  # no valid AQI, noise only
        await store.replace(conn, pending, [(*k, *v) for k, v in figures.items()], timezone)
    return len(pending)


class QolHistoryKeeper(BackgroundTask):
    """Runs the job every ``interval_s`` seconds until nothing is left, in the API's event loop (the maths in
    a worker thread). Failures (the database away) are logged and retried at the next round."""

    name = "citysense-qol-history"

    def __init__(self, pool_getter, timezone: str, interval_s: float = 60.0):
        self._pool, self._tz, self.interval_s = pool_getter, timezone, interval_s
        super().__init__()
        self.failures = 0

    async def _run(self) -> None:
        while True:
            try:
                done = 1
                while done:
                    async with self._pool().connection() as conn:
                        done = await catch_up_once(conn, self._tz)
                    if done:
                        log.info("past hours' AQI and noise by CSA computed for %d days", done)
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, a timeout: the readers compute on request meanwhile
                self.failures += 1
                if self.failures == 1 or self.failures % 20 == 0:
                    log.warning("could not compute past hours' AQI and noise (%s: %s)", type(exc).__name__, str(exc)[:200])
            await asyncio.sleep(self.interval_s)
