"""Plausible readings for each device kind, as pure functions of (seed, device, time).

Deterministic for a given seed: the same seed, device and second always give the same value, so a
test can recompute what the simulator sent. What moves the values:
- daily cycles: rush hours (traffic, noise, NO2, CO, PM), afternoon heat, overnight humidity;
- weekly cycles: weekends have a third less traffic and later, flatter rush hours;
- seasons: a temperature cycle over the year;
- shared weather: temperature, humidity and rain come from one city-wide field (smooth day-to-day
  variation), plus a small per-device offset and the downtown heat island, so nearby devices agree;
- slow drift: each air-quality sensor drifts by up to ±3 % a month until its next calibration;
- pollution episodes: a few seeded multi-hour episodes a week raise PM in a part of the city.
"""

from __future__ import annotations

import hashlib
import math
import struct
from datetime import datetime
from zoneinfo import ZoneInfo

from services.core.catalogue import KIND_METRICS

TZ = ZoneInfo("America/New_York")
DOWNTOWN = (39.2904, -76.6122)


def unit_noise(*key) -> float:
    """A deterministic pseudo-random number in [0, 1) for any key (seeded hashing, no global state)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] / 2**64


def gauss(*key) -> float:
    """A deterministic standard normal variate (Box–Muller over two hashed uniforms)."""
    u1 = max(unit_noise(*key, "a"), 1e-12)
    u2 = unit_noise(*key, "b")
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def smooth(seed: int, name: str, t: float, period_s: float) -> float:
    """Smooth random variation in [-1, 1]: cosine interpolation between hashed knots every period."""
    k = math.floor(t / period_s)
    f = (t / period_s) - k
    a, b = 2 * unit_noise(seed, name, k) - 1, 2 * unit_noise(seed, name, k + 1) - 1
    w = (1 - math.cos(math.pi * f)) / 2
    return a * (1 - w) + b * w


def local(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=TZ)


def rush(t: float) -> float:
    """0..1: how much of a rush hour it is; weekends a softer midday hump."""
    lt = local(t)
    h = lt.hour + lt.minute / 60
    if lt.weekday() >= 5:
        return 0.55 * math.exp(-((h - 13.0) ** 2) / 8.0)
    return max(math.exp(-((h - 8.0) ** 2) / 1.5), math.exp(-((h - 17.5) ** 2) / 2.0))


def diurnal(t: float) -> float:
    """-1..1, warmest about 15:00 local time."""
    lt = local(t)
    h = lt.hour + lt.minute / 60
    return math.sin(2 * math.pi * (h - 9.0) / 24.0)


def night(t: float) -> float:
    """1 in the small hours, 0 in the day."""
    return max(0.0, -diurnal(t))


def weather(seed: int, t: float) -> dict[str, float]:
    """The city-wide weather at time t: temperature (°C), humidity (%), rain rate (mm/h)."""
    doy = local(t).timetuple().tm_yday
    season = -math.cos(2 * math.pi * (doy - 20) / 365.25)  # −1 in late January, +1 in late July
    synoptic = smooth(seed, "front", t, 3 * 86400)  # fronts come and go over days
    temperature = 13.5 + 11.5 * season + 5.5 * diurnal(t) + 3.5 * synoptic
    wet = max(0.0, smooth(seed, "rain", t, 6 * 3600) - 0.55) / 0.45  # rain a minority of hours
    humidity = min(100.0, max(15.0, 62 - 17 * diurnal(t) + 10 * synoptic + 25 * wet))
    return {"temperature": temperature, "humidity": humidity, "rain_mm_h": 8 * wet ** 2}


def episode(seed: int, t: float, lat: float, lon: float) -> float:
    """Extra PM2.5 (µg/m³) from seeded pollution episodes: about three a week, 3–9 hours each, centred
    somewhere in the city and fading with distance."""
    extra = 0.0
    day = math.floor(t / 86400)
    for d in (day - 1, day):
        for i in range(3):
            if unit_noise(seed, "episode", d, i) > 0.43:
                continue
            start = d * 86400 + unit_noise(seed, "ep-start", d, i) * 86400
            length = 3600 * (3 + 6 * unit_noise(seed, "ep-len", d, i))
            if not start <= t < start + length:
                continue
            clat = 39.21 + 0.15 * unit_noise(seed, "ep-lat", d, i)
            clon = -76.70 + 0.16 * unit_noise(seed, "ep-lon", d, i)
            dist_km = math.hypot((lat - clat) * 111, (lon - clon) * 86)
            shape = math.sin(math.pi * (t - start) / length)
            extra += (15 + 40 * unit_noise(seed, "ep-peak", d, i)) * shape * math.exp(-dist_km / 4)
    return extra


def calibration_drift(seed: int, device_id: str, t: float) -> float:
    """Multiplicative drift of an optical sensor: up to ±3 % a month since its last calibration,
    which comes every 90 days (each sensor on its own schedule)."""
    period = 90 * 86400
    age = (t + unit_noise(seed, device_id, "cal") * period) % period
    return 1 + 0.03 * (2 * unit_noise(seed, device_id, "drift") - 1) * age / (30 * 86400)


def heat_island(lat: float, lon: float) -> float:
    """°C warmer than the city field: up to 1.5 °C downtown, fading over ~5 km."""
    dist_km = math.hypot((lat - DOWNTOWN[0]) * 111, (lon - DOWNTOWN[1]) * 86)
    return 1.5 * math.exp(-dist_km / 5)


def readings_for(kind: str, device_id: str, lat: float, lon: float, t: float, seed: int = 1,
                 interval_s: float = 60) -> dict[str, float]:
    """One device's readings at time t (epoch seconds), in the catalogue's units."""
    n = lambda name, sd=1.0: sd * gauss(seed, device_id, name, int(t))  # noqa: E731 - per-reading noise
    r, w = rush(t), weather(seed, t)
    drift = calibration_drift(seed, device_id, t)
    site = 0.7 + 0.6 * unit_noise(seed, device_id, "site")  # a busy corner or a quiet street
    values: dict[str, float] = {}
    if kind == "air_quality":
        pm25 = max(0.5, (6 + 6 * r * site + 3 * night(t) + episode(seed, t, lat, lon)) * drift + n("pm25", 1.2))
        values = {
            "pm25": pm25,
            "pm10": pm25 * 1.6 + abs(n("pm10", 2.0)),
            "o3": max(1.0, 28 + 20 * max(0.0, diurnal(t)) * (1 + 0.3 * (w["temperature"] > 25)) - 8 * r + n("o3", 3)),
            "no2": max(0.5, 9 + 24 * r * site + n("no2", 2)),
            "co": max(0.05, 0.25 + 0.6 * r * site + n("co", 0.05)),
            "so2": max(0.1, 1.2 + n("so2", 0.4)),
        }
    elif kind == "noise":
        values = {"noise_laeq": min(110.0, max(32.0, 50 + 14 * r * site + 4 * diurnal(t) - 6 * night(t) + n("laeq", 1.5)))}
    elif kind == "weather":
        values = {
            "temperature": w["temperature"] + heat_island(lat, lon) + 0.4 * gauss(seed, device_id, "t-offset") + n("t", 0.15),
            "humidity": min(100.0, max(5.0, w["humidity"] + n("rh", 1.5))),
            "rainfall": round(w["rain_mm_h"] * interval_s / 3600, 2),
        }
    elif kind == "traffic":
        per_hour = 60 + 900 * r * site + 80 * max(0.0, diurnal(t))
        values = {"traffic_count": float(max(0, round(per_hour * interval_s / 3600 + n("count", 2))))}
    elif kind == "water":
        tide = 0.2 * math.sin(2 * math.pi * t / (12.42 * 3600))
        values = {"water_level": 1.1 + tide + 0.3 * max(0.0, smooth(seed, "rain", t - 3 * 3600, 6 * 3600) - 0.55) + n("wl", 0.01),
                  "rainfall": round(w["rain_mm_h"] * interval_s / 3600, 2)}
    return {m: round(values[m], 3) for m in KIND_METRICS[kind] if m in values}
