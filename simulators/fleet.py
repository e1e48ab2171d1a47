"""A simulated fleet: devices spread over Baltimore's neighbourhoods. Pure and seeded: the same seed
and size always give the same fleet."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shapely.geometry import Point

from services.core.areas import baltimore

#: Share of each kind in the fleet, roughly what a city deploys.
KIND_SHARES = (("air_quality", 0.30), ("noise", 0.25), ("weather", 0.20), ("traffic", 0.15), ("water", 0.10))
KIND_PREFIX = {"air_quality": "aq", "noise": "nz", "weather": "wx", "traffic": "tc", "water": "wl"}
KIND_INTERVAL_S = {"air_quality": 60, "noise": 60, "weather": 300, "traffic": 60, "water": 300}


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    kind: str
    latitude: float
    longitude: float
    interval_s: int


def build_fleet(n: int, seed: int = 1, prefix: str = "sim") -> list[SimDevice]:
    rng = random.Random(seed)
    areas = baltimore()
    names = sorted(areas.neighbourhoods)
    kinds = [k for k, share in KIND_SHARES for _ in range(max(1, round(share * n)))]
    rng.shuffle(kinds)
    kinds = (kinds * (n // len(kinds) + 1))[:n]
    fleet = []
    for i, kind in enumerate(kinds):
        # Round-robin over a shuffled list of neighbourhoods first, so a fleet of ≥ 278 devices covers
        # every neighbourhood (and so every CSA).
        if i % len(names) == 0:
            order = names[:]
            rng.shuffle(order)
        shape = areas.shape_of(order[i % len(names)])
        lon, lat = _point_in(shape, rng)
        fleet.append(SimDevice(f"{prefix}-{KIND_PREFIX[kind]}-{i + 1:04d}", kind, round(lat, 6), round(lon, 6),
                               KIND_INTERVAL_S[kind]))
    return fleet


def _point_in(shape, rng: random.Random) -> tuple[float, float]:
    minx, miny, maxx, maxy = shape.bounds
    for _ in range(1000):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if shape.contains(Point(x, y)):
            return x, y
    p = shape.representative_point()
    return p.x, p.y
