"""The open datasets citysense publishes: what each is, and how a row becomes CSV and GeoJSON (each
dataset's query is the store's: services/store/datasets.py). The DCAT-US 1.1 catalogue (data.json) is
built from the same definitions, so the catalogue cannot name a dataset the API does not serve."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from services.api.qol import aqi, heat, noise
from services.core.areas import baltimore
from services.core.catalogue import POLLUTANTS as AIR


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
            "Every sensor in the network, retired ones included: kind, current position, neighbourhood and Community "
            "Statistical Area, reporting interval, status, when it last reported and when it was retired.",
            ("sensors", "internet of things", "air quality", "noise", "weather", "traffic", "water"), "R/PT1H",
            ("device_id", "kind", "latitude", "longitude", "neighbourhood", "csa", "installed", "interval_s", "status",
             "last_seen", "retired_at"), (), "device", timed=False),
    Dataset("readings", "Raw sensor readings",
            "Every validated reading: time, device, metric, value and unit, with the device's position and area "
            "when the reading was taken.",
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
