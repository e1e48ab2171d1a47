"""/v1/qol: quality-of-life indicators by area."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from services.api.deps import PoolDep, SettingsDep
from services.api.responses import cached_json
from services.api.problems import Problem
from services.api.qol import indicators
from services.api.qol.summary import document, summary_rows
from services.api.qol.aqi import WINDOWS
from services.api.qol.history import LOOKBACK
from services.api.qol.series import hourly_means, latest_values, recent_hours
from services.api.schemas import AQIPublic, HeatIndexPublic, NoisePublic
from services.api.scope import CsaParam, NeighbourhoodParam, Scope, floor_hour, moment, resolve
from services.core.catalogue import DEVICE_ID_PATTERN
from services.store import qol_history

router = APIRouter(tags=["quality of life"])

Device = Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)]
At = Annotated[datetime | None, Query(description="A past moment, RFC 3339 (default: now), taken to the start of its "
                                                  "hour: answers about the past are per hour, and cached as such.")]


def when(at: datetime | None) -> datetime:
    """The moment a question is about: now, or the start of the hour of a given ``at`` (so a varying ``at``
    cannot force a fresh computation per request)."""
    t = moment(at)
    return t if at is None else floor_hour(t)


def _past(at: datetime | None) -> bool:
    return at is not None and at < datetime.now(timezone.utc) - timedelta(hours=2)


async def compute_aqi(conn, scope: Scope, at: datetime, timezone_name: str | None = None) -> dict:
    """The AQI of ``scope`` at ``at``. With ``timezone_name`` (a past ``at``), a CSA's is read from what the
    background job keeps (services/api/qol/history.py) when that is exact for the hour."""
    latest_hour = floor_hour(at) - timedelta(hours=1)
    if timezone_name is not None and scope.level == "csa":
        kept = await qol_history.read_csa_hour(conn, latest_hour, scope.name, timezone_name, LOOKBACK)
        if kept is not None:
            return {"scope": scope.public(), "at": at, **indicators.kept_area_aqi(*kept)}
    hours = await recent_hours(conn, scope, WINDOWS, latest_hour)
    return {"scope": scope.public(), "at": at, **indicators.area_aqi(hours)}


async def compute_heat(conn, scope: Scope, at: datetime) -> dict:
    latest = await latest_values(conn, scope, ("temperature", "humidity"), at)
    return {"scope": scope.public(), "at": at, **indicators.area_heat_index(latest)}


@router.get("/v1/qol/aqi", response_model=AQIPublic, summary="US EPA Air Quality Index")
async def qol_aqi(request: Request, pool: PoolDep, csa: CsaParam = None, neighbourhood: NeighbourhoodParam = None,
                  device_id: Device = None, at: At = None):
    """The AQI (EPA breakpoints in force since May 2024) for the latest complete hour before `at`: PM2.5
    and PM10 by NowCast over hourly means, O3 8-hour (1-hour where more precautionary), CO 8-hour, NO2 and
    SO2 1-hour. An area reports its highest device per pollutant; without enough data `aqi` is null. A CSA's
    present AQI is computed in the background with the city-wide summary (every `refresh_s` seconds): its `at`
    is when, and the `Age` header says how long ago."""
    scope = resolve(csa, neighbourhood, device_id)
    if at is None and scope.level == "csa":
        # The present's, as the summary keeper computed it for every CSA (at most refresh_s old: `Age`)
        kept = request.app.state.summary.present_aqi(scope.name)
        if kept is not None:
            body, age = kept
            return Response(body, media_type="application/json", headers={"Age": str(age)})
    t = when(at)
    key = ("aqi", scope, floor_hour(t))
    tz = request.app.state.settings.timezone if at is not None else None

    async def compute():
        async with pool.connection() as conn:
            return await compute_aqi(conn, scope, t, tz)
    return await cached_json(request, key, _past(at), AQIPublic, compute)


@router.get("/v1/qol/heat-index", response_model=HeatIndexPublic, summary="US NWS heat index")
async def qol_heat(request: Request, pool: PoolDep, csa: CsaParam = None, neighbourhood: NeighbourhoodParam = None,
                   device_id: Device = None, at: At = None):
    """From each device's latest temperature and humidity in the hour before `at`; an area reports its
    highest heat index. Shade values: full sun can add up to 15 °F."""
    scope = resolve(csa, neighbourhood, device_id)
    t = when(at)
    key = ("heat", scope, t.replace(second=0, microsecond=0))

    async def compute():
        async with pool.connection() as conn:
            return await compute_heat(conn, scope, t)
    return await cached_json(request, key, _past(at), HeatIndexPublic, compute)


@router.get("/v1/qol/noise", response_model=NoisePublic, summary="Noise levels: Leq, Lden, Lnight")
async def qol_noise(request: Request, pool: PoolDep, settings: SettingsDep, csa: CsaParam = None, neighbourhood: NeighbourhoodParam = None,
                    device_id: Device = None, at: At = None):
    """For the local day holding `at` (default: today so far): hourly Leq (energy means over the area's
    devices), Lday 07–19, Levening 19–23, Lnight 23–07, Lden (evening +5 dB, night +10 dB), and the hours
    above the WHO 2018 (53 dB Lden, 45 dB Lnight) and US EPA 1974 (55 dB Ldn) guideline levels."""
    scope = resolve(csa, neighbourhood, device_id)
    t = when(at)
    tz = ZoneInfo(settings.timezone)
    day = t.astimezone(tz).date().isoformat()

    async def compute():
        start, end = indicators.day_bounds(day, tz)
        async with pool.connection() as conn:
            hours = await hourly_means(conn, scope, ("noise_laeq",), start, end, energy=True)
        return {"scope": scope.public(), "date": day, **indicators.area_noise(hours["noise_laeq"], start, end, tz)}
    return await cached_json(request, ("noise", scope, day, floor_hour(t)), _past(at), NoisePublic, compute)


@router.get("/v1/qol/summary", summary="One row per CSA, for maps",
            responses={200: {"content": {"application/json": {}, "application/geo+json": {"schema": {"type": "object"}}},
                             "description": "Rows (JSON), or a GeoJSON FeatureCollection with format=geojson"},
                       503: {"description": "The summary has not been computed yet (the database is unavailable)"}},
            description="Per Community Statistical Area: AQI, heat index, the last 24 hours' noise Leq, and data "
                        "coverage. `format=geojson` answers a FeatureCollection with the CSA boundaries. The present's "
                        "summary is recomputed in the background every `refresh_s` seconds: `computed_at` (and the "
                        "`Age` header) say how fresh the answer is. With `at`, the summary of that past hour.")
async def qol_summary(request: Request, pool: PoolDep, at: At = None,
                      format: Literal["json", "geojson"] = "json"):
    media_type = "application/json" if format == "json" else "application/geo+json"
    if at is None:
        snap = await request.app.state.summary.current()
        if snap is None:
            raise Problem(503, "the city-wide summary has not been computed yet: the database is not answering",
                          headers={"Retry-After": "5"})
        return Response(snap.bodies[format], media_type=media_type, headers={"Age": str(snap.age_s())})
    t = when(at)

    async def compute() -> bytes:
        rows, _ = await summary_rows(pool, t, request.app.state.settings.timezone)
        return await run_in_threadpool(document, format, rows, t)
    body = await request.app.state.cache.get(("summary", format, t), _past(at), compute)
    return Response(body, media_type=media_type)
