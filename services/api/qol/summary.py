"""The city-wide summary (one row per CSA: AQI, heat index, noise, coverage), which the dashboard's map
and most visitors ask for.

For the present it is never computed for a request: :class:`SummaryKeeper` recomputes it in the background
every ``CITYSENSE_API_SUMMARY_REFRESH_S`` seconds (its queries on the pool, its maths and the encoding of
both answers, JSON and GeoJSON, in a worker thread) and requests are served the bytes it keeps. Each answer
says when it was computed (``computed_at``) and how often it is (``refresh_s``), and carries an ``Age``
header. If a computation fails (the database away), the last one stays served with its time: stale data
stated as such beats no map. Summaries of a past hour are computed on request (each area's AQI and noise
read from what services/api/qol/history.py keeps, once it has caught up with that hour) and cached for an hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from services.api.background import BackgroundTask
from services.api.qol import indicators, noise
from services.api.qol.aqi import WINDOWS
from services.api.qol.history import LOOKBACK
from services.api.responses import dump
from services.api.schemas import AQIPublic
from services.api.qol.series import COVERAGE, latest_values, recent_hours
from services.api.scope import Scope, floor_hour
from services.core.areas import baltimore
from services.store import qol_history
from services.store import qol as store

log = logging.getLogger("citysense.api.summary")


async def summary_rows(pool, at: datetime, timezone_name: str | None = None) -> tuple[list[dict], dict[str, dict]]:
    """The rows of the summary at ``at``, and each CSA's whole AQI answer when it was computed (as
    indicators.area_aqi gives it). With ``timezone_name`` (a past hour), the areas' AQI and noise are
    read from what the background job keeps (services/api/qol/history.py) when it has caught up with that
    hour (no AQI answers then), and computed from every device's hours otherwise; its coverage counts the
    devices in service and reporting then (from their readings, not their last report)."""
    city = Scope("city", None)
    latest_hour = floor_hour(at) - timedelta(hours=1)
    async with pool.connection() as conn:
        kept = None if timezone_name is None else await qol_history.read_hour(conn, latest_hour, timezone_name)
        if kept is None:
            aq = await recent_hours(conn, city, WINDOWS, latest_hour)
            nz = await store.energy_means_by_csa(conn, "noise_laeq", latest_hour, 24, COVERAGE)
        else:
            aq, nz = {}, {csa: v[3] for csa, v in kept.items() if v[3] is not None}
        wx = await latest_values(conn, city, ("temperature", "humidity"), at)
        coverage = await (store.coverage(conn, at) if timezone_name is None else store.coverage_at(conn, at))
    # 55 areas' indicators over every device's hours: off the event loop, which keeps serving meanwhile.
    return await run_in_threadpool(_summary, aq, nz, wx, coverage, kept)


def _by_csa(by_device: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for k, v in by_device.items():
        out.setdefault(v.csa, {})[k] = v
    return out


def _summary(aq, nz, wx, coverage, kept: dict[str, tuple] | None = None) -> tuple[list[dict], dict[str, dict]]:
    rows, answers = [], {}
    aq_csa = {p: _by_csa(v) for p, v in aq.items()}
    wx_csa = _by_csa(wx)
    for name, area in sorted(baltimore().csas.items()):
        if kept is None:
            a = answers[name] = indicators.area_aqi({p: v.get(name, {}) for p, v in aq_csa.items()})
        else:
            aqi, category, main, _ = kept.get(name, (None, None, None, None))
            a = {"aqi": aqi, "category": category, "main_pollutant": main}
        h = indicators.area_heat_index(wx_csa.get(name, {}))
        energy = nz.get(name)
        n, fresh = coverage.get(name, (0, 0))
        rows.append({
            "csa": name, "reference_point": {"longitude": area.centroid[0], "latitude": area.centroid[1]},
            "aqi": a["aqi"], "aqi_category": a["category"], "main_pollutant": a["main_pollutant"],
            "heat_index_f": h["heat_index_f"], "heat_index_category": h["category"],
            "noise_leq_24h": round(noise.level(energy), 1) if energy else None,
            "devices": n, "devices_reporting": fresh, "coverage": round(fresh / n, 3) if n else None,
        })
    return rows, answers


FORMATS = ("json", "geojson")


def document(fmt: str, rows: list[dict], at: datetime, computed_at: datetime | None = None,
             refresh_s: float | None = None) -> bytes:
    """One answer, encoded: rows (``json``) or a FeatureCollection with the CSA boundaries (``geojson``)."""
    fresh = {"at": at}
    if computed_at is not None:
        fresh.update(computed_at=computed_at, refresh_s=refresh_s)
    if fmt == "json":
        return to_json({"items": rows, "next_cursor": None, **fresh})
    areas = baltimore().csas
    return to_json({"type": "FeatureCollection", **fresh,
                    "features": [{"type": "Feature", "geometry": areas[r["csa"]].geometry, "properties": r}
                                 for r in rows]})


@dataclass(frozen=True)
class Snapshot:
    computed_at: datetime
    monotonic: float
    bodies: dict[str, bytes]
    #: /v1/qol/aqi's answer for each CSA at computed_at (encoded), unless a device moved in the hours it read
    #: (the summary places a device by its latest hour, an area's own answer counts only its hours there)
    aqi: dict[str, bytes] | None = None

    def age_s(self) -> int:
        return int(time.monotonic() - self.monotonic)


class SummaryKeeper(BackgroundTask):
    """Keeps the present's summary current in the background (one task per API process)."""

    name = "citysense-summary"

    def __init__(self, pool_getter, refresh_s: float):
        self._pool = pool_getter
        self.refresh_s = refresh_s
        self.snapshot: Snapshot | None = None
        self._ready = asyncio.Event()
        super().__init__()
        self.failures = 0

    async def refresh(self) -> None:
        now = datetime.now(timezone.utc)
        rows, answers = await summary_rows(self._pool(), now)
        async with self._pool().connection() as conn:
            moved = await qol_history.moved(conn, floor_hour(now) - timedelta(hours=1), LOOKBACK)

        def encode():
            bodies = {f: document(f, rows, now, now, self.refresh_s) for f in FORMATS}
            aqi = None if moved else {
                csa: dump(AQIPublic, {"scope": Scope("csa", csa).public(), "at": now, **a}) for csa, a in answers.items()}
            return bodies, aqi
        bodies, aqi = await run_in_threadpool(encode)
        self.snapshot = Snapshot(now, time.monotonic(), bodies, aqi)
        self._ready.set()

    def present_aqi(self, csa: str) -> tuple[bytes, int] | None:
        """(the encoded answer, its age in seconds) of a CSA's present AQI, when the last computation was of
        the present's latest complete hour; None otherwise (the caller computes it)."""
        snap = self.snapshot
        if snap is None or snap.aqi is None or floor_hour(snap.computed_at) != floor_hour(datetime.now(timezone.utc)):
            return None
        body = snap.aqi.get(csa)
        return None if body is None else (body, snap.age_s())

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, a timeout: keep the last one, say so, try again
                self.failures += 1
                if self.failures == 1 or self.failures % 20 == 0:
                    log.warning("could not refresh the city-wide summary (%s: %s); serving the one computed at %s",
                                type(exc).__name__, str(exc)[:200],
                                self.snapshot.computed_at.isoformat() if self.snapshot else "never")
            # Quicker retries until there is a first one to serve.
            pause = self.refresh_s if self.snapshot is not None else min(self.refresh_s, 2.0)
            await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))

    async def current(self, wait_s: float = 10.0) -> Snapshot | None:
        """The latest snapshot; at start-up, waits up to ``wait_s`` for the first."""
        if self.snapshot is None:
            try:
                await asyncio.wait_for(self._ready.wait(), wait_s)
            except TimeoutError:
                return None
        return self.snapshot
