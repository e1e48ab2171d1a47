"""From fetched data to the answers of /v1/qol: area-level AQI, heat index and noise. Pure functions;
an area reports as an EPA reporting area does, by its highest device, and says which devices it used."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.api.qol import aqi, heat, noise
from services.api.qol.series import DeviceHours, DeviceSeries, Latest


def area_aqi(hours: dict[str, dict[str, DeviceSeries]]) -> dict:
    """hours: {pollutant: {device_id: DeviceSeries}}, each series ending with the latest complete hour and
    as long as aqi.WINDOWS says."""
    best_of: dict[str, tuple] = {}
    results = []
    for p in aqi.AQI_POLLUTANTS:
        best = None
        for dh in hours.get(p, {}).values():
            r = aqi.pollutant_aqi(p, dh.values)
            if r.aqi is not None and (best is None or r.aqi > best[0].aqi):
                best = (r, dh.device_id)
        if best is not None:
            r, device_id = best
            results.append(r)
            best_of[p] = (r.concentration, min(r.aqi, 500), r.averaging, device_id)
    o = aqi.overall(results)
    return _area_answer(o.aqi, o.category, o.main_pollutant, best_of)


def kept_pollutants(answer: dict) -> dict[str, list]:
    """What the background job keeps of an area's answer besides its index, category and main pollutant:
    {pollutant: [concentration, aqi, averaging, device_id]} for the pollutants with a valid index."""
    return {p: [v["concentration"], v["aqi"], v["averaging"], v["device_id"]]
            for p, v in answer["pollutants"].items() if v["aqi"] is not None}


def kept_area_aqi(index: int | None, category: str | None, main: str | None, kept: dict[str, list] | None) -> dict:
    """An area's answer rebuilt from what the background job kept (:func:`kept_pollutants`): the same
    dict :func:`area_aqi` gives."""
    return _area_answer(index, category, main, {p: tuple(v) for p, v in (kept or {}).items()})


def _area_answer(index: int | None, category: str | None, main: str | None, best_of: dict[str, tuple]) -> dict:
    pollutants: dict[str, dict] = {}
    for p in aqi.AQI_POLLUTANTS:
        unit, averaging = _NO_DATA[p]
        if p in best_of:
            concentration, value, averaging, device_id = best_of[p]
            pollutants[p] = {"concentration": concentration, "unit": unit, "aqi": value, "averaging": averaging,
                             "device_id": device_id}
        else:
            pollutants[p] = {"concentration": None, "unit": unit, "aqi": None, "averaging": averaging, "device_id": None}
    note = None
    if index is None:
        note = ("not enough data for a valid AQI: no pollutant has the hours EPA requires "
                "(NowCast: 2 of the 3 latest hours; 8-hour averages: 6 of 8; hours ≥ 75 % covered)")
    return {"aqi": index, "category": category, "colour": aqi.COLOURS.get(category or ""), "main_pollutant": main,
            "pollutants": pollutants, "devices": sorted({b[3] for b in best_of.values()}), "note": note}


#: Each pollutant's unit and averaging when it has no valid index.
_NO_DATA = {p: (r.unit, r.averaging) for p in aqi.AQI_POLLUTANTS for r in [aqi.pollutant_aqi(p, [])]}


def area_heat_index(latest: dict[str, Latest]) -> dict:
    best = None
    used = []
    for dev in latest.values():
        t, rh = dev.values.get("temperature"), dev.values.get("humidity")
        if t is None or rh is None:
            continue
        used.append(dev.device_id)
        hi = heat.heat_index_f(heat.c_to_f(t), rh)
        if best is None or hi > best[0]:
            best = (hi, t, rh, dev.device_id)
    if best is None:
        return {"heat_index_f": None, "heat_index_c": None, "category": None, "temperature_c": None,
                "humidity": None, "device_id": None, "devices": [],
                "note": "no device reported both temperature and humidity in the hour before `at`"}
    hi, t, rh, device_id = best
    return {"heat_index_f": round(hi, 1), "heat_index_c": round(heat.f_to_c(hi), 1), "category": heat.category(hi),
            "temperature_c": t, "humidity": rh, "device_id": device_id, "devices": sorted(used), "note": None}


def day_bounds(day: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(day).replace(tzinfo=tz)
    return start, (start + timedelta(days=1)).replace(tzinfo=tz)


def area_noise(hours: dict[str, DeviceHours], day_start: datetime, day_end: datetime, tz: ZoneInfo) -> dict:
    """Hourly Leq of the area (energy mean over its devices' hourly energy means), then Lday, Levening,
    Lnight, Lden and the hours above the WHO and EPA guideline levels, for one local day."""
    hourly = []
    t = day_start.astimezone(ZoneInfo("UTC"))
    end = day_end.astimezone(ZoneInfo("UTC"))
    by_period: dict[str, list[float]] = {"day": [], "evening": [], "night": []}
    while t < end:
        levels = [dh.means[t] for dh in hours.values() if t in dh.means]
        if levels:
            leq = noise.leq(levels)
            local_hour = t.astimezone(tz).hour
            by_period[noise.period(local_hour)].append(leq)
            hourly.append({"hour": t, "leq": round(leq, 1), "exceeds_who": noise.exceeds_who(local_hour, leq),
                           "exceeds_epa": noise.exceeds_epa(leq)})
        t += timedelta(hours=1)
    lvl = {k: (noise.leq(v) if v else None) for k, v in by_period.items()}
    complete = all(lvl.values())
    lden = noise.lden(lvl["day"], lvl["evening"], lvl["night"]) if complete else None
    r1 = lambda x: None if x is None else round(x, 1)  # noqa: E731
    return {
        "hourly": hourly,
        "leq_24h": r1(noise.leq([h["leq"] for h in hourly])) if hourly else None,
        "lday": r1(lvl["day"]), "levening": r1(lvl["evening"]), "lnight": r1(lvl["night"]), "lden": r1(lden),
        "hours_with_data": len(hourly),
        "hours_exceeding_who": sum(h["exceeds_who"] for h in hourly),
        "hours_exceeding_epa": sum(h["exceeds_epa"] for h in hourly),
        "guidelines": {"who_lden": noise.WHO_LDEN, "who_lnight": noise.WHO_LNIGHT, "epa_ldn": noise.EPA_LDN,
                       "epa_leq24": noise.EPA_LEQ24},
        "devices": sorted(d.device_id for d in hours.values() if any(day_start <= h < day_end for h in d.means)),
        "note": None if complete else "Lden needs data in the day, evening and night periods of the day",
    }
