"""The open datasets citysense publishes: what each is, the SQL that produces it (streamed from a
server-side cursor), and how a row becomes CSV and GeoJSON. The DCAT-US 1.1 catalogue (data.json) is
built from the same definitions, so the catalogue cannot name a dataset the API does not serve."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from services.api.qol import aqi, heat, noise
from services.core.areas import baltimore

AIR = ("pm25", "pm10", "o3", "no2", "co", "so2")


@dataclass(frozen=True)
class Dataset:
    id: str
    title: str
    description: str
    keywords: tuple[str, ...]
    periodicity: str  # ISO 8601 repeating duration, or "irregular"
    columns: tuple[str, ...]
    metrics: tuple[str, ...]  # whose newest reading sets `modified`; empty: the device registry
    geometry: str  # "device" (lat/lon columns) or "csa" (the CSA's reference point)
    timed: bool = True  # takes start/end
    derive: Callable[[dict], dict] | None = field(default=None, repr=False)


def _round(x, n=3):
    return None if x is None else round(x, n)


def _weather(row: dict) -> dict:
    t, rh = row.get("temperature"), row.get("humidity")
    hi = heat.heat_index_f(heat.c_to_f(t), rh) if t is not None and rh is not None else None
    row["heat_index_f"] = _round(hi, 1)
    row["heat_index_category"] = heat.category(hi) if hi is not None else None
    return row


def _daily(row: dict) -> dict:
    pm = row.get("pm25_mean")
    row["pm25_aqi"] = aqi.sub_index(pm, "pm25_24h") if pm is not None and row.get("pm25_hours", 0) >= 18 else None
    e = {k: row.pop(f"energy_{k}", None) for k in ("day", "evening", "night")}
    levels = {k: noise.level(v) if v else None for k, v in e.items()}
    row["lden"] = _round(noise.lden(levels["day"], levels["evening"], levels["night"]), 1) if all(levels.values()) else None
    row["lnight"] = _round(levels["night"], 1)
    return row


DATASETS: dict[str, Dataset] = {d.id: d for d in (
    Dataset("sensors", "Environmental sensor inventory",
            "Every sensor in the network: kind, position, neighbourhood and Community Statistical Area, reporting "
            "interval, status and when it last reported.",
            ("sensors", "internet of things", "air quality", "noise", "weather", "traffic", "water"), "R/PT1H",
            ("device_id", "kind", "latitude", "longitude", "neighbourhood", "csa", "installed", "interval_s", "status",
             "last_seen"), (), "device", timed=False),
    Dataset("readings", "Raw sensor readings",
            "Every validated reading: time, device, metric, value and unit, with the device's position and area.",
            ("sensors", "readings", "time series"), "R/PT1M",
            ("time", "device_id", "kind", "metric", "value", "unit", "latitude", "longitude", "neighbourhood", "csa"),
            ("pm25", "pm10", "o3", "no2", "co", "so2", "noise_laeq", "temperature", "humidity", "traffic_count",
             "water_level", "rainfall"), "device"),
    Dataset("air-quality-hourly", "Hourly air quality by Community Statistical Area",
            "Hourly mean concentrations of PM2.5, PM10 (µg/m³), ozone, NO2, SO2 (ppb) and CO (ppm) over the "
            "sensors in each of Baltimore's 55 Community Statistical Areas.",
            ("air quality", "pm2.5", "ozone", "community statistical areas"), "R/PT1H",
            ("hour", "csa", *AIR, "devices"), AIR, "csa"),
    Dataset("weather-hourly", "Hourly weather and heat index by Community Statistical Area",
            "Hourly mean temperature (°C) and relative humidity (%), total rainfall (mm), and the US National "
            "Weather Service heat index (°F) computed from them, per Community Statistical Area.",
            ("weather", "heat index", "temperature", "community statistical areas"), "R/PT1H",
            ("hour", "csa", "temperature", "humidity", "rainfall", "heat_index_f", "heat_index_category", "devices"),
            ("temperature", "humidity", "rainfall"), "csa", derive=_weather),
    Dataset("noise-hourly", "Hourly noise levels by Community Statistical Area",
            "Hourly equivalent continuous sound level (Leq, dB(A), energy-averaged over the area's noise "
            "sensors) per Community Statistical Area.",
            ("noise", "sound level", "community statistical areas"), "R/PT1H",
            ("hour", "csa", "leq", "readings", "devices"), ("noise_laeq",), "csa"),
    Dataset("csa-daily-summary", "Daily quality-of-life summary by Community Statistical Area",
            "Per Community Statistical Area and local day: 24-hour mean PM2.5 and its EPA AQI (when 18 of 24 hours "
            "have data), the highest hourly temperature, noise Lden and Lnight (WHO/EU definitions), and how many "
            "sensors reported.",
            ("quality of life", "air quality index", "noise", "community statistical areas", "daily"), "R/P1D",
            ("day", "csa", "pm25_mean", "pm25_hours", "pm25_aqi", "temperature_max", "lden", "lnight", "devices"),
            ("pm25", "temperature", "noise_laeq"), "csa", derive=_daily),
)}


def sql_for(ds: Dataset, filters: dict) -> tuple[str, dict]:
    """The export query of a dataset, with bound parameters only."""
    p = dict(filters)
    if ds.id == "sensors":
        where = "WHERE (%(csa)s::text IS NULL OR csa = %(csa)s)"
        return (f"SELECT device_id, kind, latitude, longitude, neighbourhood, csa, installed, interval_s, status, last_seen "
                f"FROM devices {where} ORDER BY device_id"), p
    if ds.id == "readings":
        return ("""SELECT r.time, d.device_id, d.kind, m.metric, r.value, m.unit, d.latitude, d.longitude, d.neighbourhood, d.csa
                   FROM readings r JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
                   WHERE r.time >= %(start)s AND r.time < %(end)s
                     AND (%(metric)s::text IS NULL OR m.metric = %(metric)s) AND (%(csa)s::text IS NULL OR d.csa = %(csa)s)
                   ORDER BY r.time, r.device_key, r.metric_key"""), p
    if ds.id == "csa-daily-summary":
        return ("""SELECT (h.bucket AT TIME ZONE %(tz)s)::date AS day, d.csa,
                   sum(h.sum) FILTER (WHERE m.metric = 'pm25') / nullif(sum(h.count) FILTER (WHERE m.metric = 'pm25'), 0) AS pm25_mean,
                   count(DISTINCT h.bucket) FILTER (WHERE m.metric = 'pm25') AS pm25_hours,
                   max(h.sum / h.count) FILTER (WHERE m.metric = 'temperature') AS temperature_max,
                   sum(h.energy) FILTER (WHERE m.metric = 'noise_laeq' AND extract(hour FROM h.bucket AT TIME ZONE %(tz)s) BETWEEN 7 AND 18)
                     / nullif(sum(h.count) FILTER (WHERE m.metric = 'noise_laeq' AND extract(hour FROM h.bucket AT TIME ZONE %(tz)s) BETWEEN 7 AND 18), 0) AS energy_day,
                   sum(h.energy) FILTER (WHERE m.metric = 'noise_laeq' AND extract(hour FROM h.bucket AT TIME ZONE %(tz)s) BETWEEN 19 AND 22)
                     / nullif(sum(h.count) FILTER (WHERE m.metric = 'noise_laeq' AND extract(hour FROM h.bucket AT TIME ZONE %(tz)s) BETWEEN 19 AND 22), 0) AS energy_evening,
                   sum(h.energy) FILTER (WHERE m.metric = 'noise_laeq' AND (extract(hour FROM h.bucket AT TIME ZONE %(tz)s) >= 23 OR extract(hour FROM h.bucket AT TIME ZONE %(tz)s) < 7))
                     / nullif(sum(h.count) FILTER (WHERE m.metric = 'noise_laeq' AND (extract(hour FROM h.bucket AT TIME ZONE %(tz)s) >= 23 OR extract(hour FROM h.bucket AT TIME ZONE %(tz)s) < 7)), 0) AS energy_night,
                   count(DISTINCT h.device_key) AS devices
                   FROM readings_hourly h JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
                   WHERE m.metric = ANY(%(metrics)s) AND h.bucket >= %(start)s AND h.bucket < %(end)s
                     AND (%(csa)s::text IS NULL OR d.csa = %(csa)s)
                   GROUP BY 1, 2 ORDER BY 1, 2"""), {**p, "metrics": list(ds.metrics)}
    # hourly per-CSA pivots
    if ds.id == "noise-hourly":
        cols = ("10 * log(sum(h.energy) / sum(h.count)) AS leq, sum(h.count) AS readings",)
    else:
        cols = tuple(
            (f"sum(h.sum) FILTER (WHERE m.metric = '{metric}')" if metric == "rainfall" else
             f"sum(h.sum) FILTER (WHERE m.metric = '{metric}') / nullif(sum(h.count) FILTER (WHERE m.metric = '{metric}'), 0)")
            + f" AS {metric}" for metric in ds.metrics)  # metric names come from the fixed definitions above
    return (f"""SELECT h.bucket AS hour, d.csa, {", ".join(cols)}, count(DISTINCT h.device_key) AS devices
               FROM readings_hourly h JOIN devices d USING (device_key) JOIN metrics m USING (metric_key)
               WHERE m.metric = ANY(%(metrics)s) AND h.bucket >= %(start)s AND h.bucket < %(end)s
                 AND (%(csa)s::text IS NULL OR d.csa = %(csa)s)
               GROUP BY 1, 2 ORDER BY 1, 2"""), {**p, "metrics": list(ds.metrics)}


#: Datasets published exactly as stored (raw values are never rounded); the others are means.
EXACT = {"sensors", "readings"}


def formatter(ds: Dataset, names: list[str]) -> Callable[[tuple], list]:
    """Turns a fetched row (a tuple, in ``names`` order) into the published values, in column order.
    The common case, a dataset without derived columns, is a straight pass over the tuple: exports
    run to millions of rows."""
    exact = ds.id in EXACT
    if ds.derive is None and list(names) == list(ds.columns):
        if exact:
            return list
        return lambda row: [round(v, 4) if isinstance(v, float) and math.isfinite(v) else v for v in row]

    def shaped(row: tuple) -> list:
        d = ds.derive(dict(zip(names, row))) if ds.derive else dict(zip(names, row))
        return [round(v, 4) if isinstance((v := d.get(c)), float) and math.isfinite(v) and not exact else v
                for c in ds.columns]
    return shaped


def geometry(ds: Dataset, values: dict) -> dict | None:
    """A published row's GeoJSON geometry: the device's position, or its CSA's reference point."""
    if ds.geometry == "device":
        return {"type": "Point", "coordinates": [values["longitude"], values["latitude"]]}
    area = baltimore().csas.get(values.get("csa"))
    return {"type": "Point", "coordinates": list(area.centroid)} if area else None
