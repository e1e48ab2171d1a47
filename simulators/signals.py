"""Plausible readings for each device kind: daily cycles (rush hours, afternoon heat, overnight
humidity) plus noise. Pure: the value depends only on the device, the time and the seed."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone

from services.core.catalogue import KIND_METRICS

#: Baltimore is UTC−5 in winter (−4 in summer); cycles follow local solar time well enough with −5.
UTC_OFFSET_H = -5


def _rush(hour: float) -> float:
    """0..1: how much of a rush hour it is (peaks at 08:00 and 17:30)."""
    return max(math.exp(-((hour - 8.0) ** 2) / 2.0), math.exp(-((hour - 17.5) ** 2) / 2.5))


def _day(hour: float) -> float:
    """-1..1, warmest mid-afternoon (15:00)."""
    return math.sin(2 * math.pi * (hour - 9.0) / 24.0)


def readings_for(kind: str, device_index: int, t: float, seed: int = 1) -> dict[str, float]:
    rng = random.Random(hash((seed, device_index, int(t))))
    hour = ((t / 3600.0) + UTC_OFFSET_H) % 24
    weekday = datetime.fromtimestamp(t, tz=timezone.utc).weekday() < 5
    rush = _rush(hour) * (1.0 if weekday else 0.4)
    day = _day(hour)
    noise = rng.gauss
    values = {
        "pm25": max(0.5, 7 + 6 * rush + noise(0, 1.5)),
        "o3": max(1.0, 28 + 18 * day + noise(0, 3)),
        "no2": max(0.5, 12 + 20 * rush + noise(0, 2)),
        "co": max(0.05, 0.3 + 0.5 * rush + noise(0, 0.05)),
        "so2": max(0.1, 1.5 + noise(0, 0.4)),
        "noise_laeq": min(110, max(30, 56 + 12 * rush + 5 * day + noise(0, 2))),
        "temperature": 13 + 7 * day + noise(0, 0.4),
        "humidity": min(100, max(5, 62 - 18 * day + noise(0, 2))),
        "rainfall": max(0.0, noise(0, 0.2)) if rng.random() < 0.05 else 0.0,
        "traffic_count": float(max(0, round(40 + 160 * rush + noise(0, 10)))),
        "water_level": 1.2 + 0.15 * math.sin(2 * math.pi * t / (12.42 * 3600)) + noise(0, 0.01),
    }
    values["pm10"] = values["pm25"] * 1.7 + abs(noise(0, 2))
    return {m: round(values[m], 3) for m in KIND_METRICS[kind]}
