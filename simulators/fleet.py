"""The simulated fleet: which devices exist, where, how often they report, and how they misbehave.

``simulators/baltimore_fleet.json`` is the editable definition (written by ``citysense simulate
--write-fleet``); ``load_fleet`` reads it, and builds more devices the same way when asked for more than
it holds. Placement is seeded: every CSA gets devices first, then the rest lean towards downtown and the
major roads (I-83, I-95, US-40, the Charles/York corridor, MD-295), where cities put traffic counters,
noise meters and air-quality sensors.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from shapely.geometry import Point

from services.core.areas import baltimore
from simulators.signals import DOWNTOWN

#: The fleet shipped with citysense (package data); CITYSENSE_SIM_FLEET_FILE names another.
FLEET_FILE = files("simulators") / "baltimore_fleet.json"

KIND_SHARES = (("air_quality", 0.30), ("noise", 0.25), ("weather", 0.20), ("traffic", 0.15), ("water", 0.10))
KIND_PREFIX = {"air_quality": "aq", "noise": "nz", "weather": "wx", "traffic": "tc", "water": "wl"}
KIND_INTERVAL_S = {"air_quality": 60, "noise": 60, "weather": 300, "traffic": 60, "water": 300}
#: Kinds that sit by the road when they can.
ROADSIDE = {"traffic": 0.9, "noise": 0.6, "air_quality": 0.5}

#: Approximate centre lines (lat, lon) of Baltimore's major roads.
MAJOR_ROADS = {
    "I-83": [(39.2905, -76.6045), (39.3110, -76.6230), (39.3350, -76.6470), (39.3600, -76.6620)],
    "I-95": [(39.2590, -76.6800), (39.2680, -76.6270), (39.2770, -76.5900), (39.2900, -76.5400), (39.3180, -76.5300)],
    "US-40": [(39.2930, -76.7050), (39.2925, -76.6400), (39.2950, -76.6000), (39.2980, -76.5600), (39.3000, -76.5350)],
    "Charles/York": [(39.2880, -76.6150), (39.3300, -76.6120), (39.3680, -76.6100)],
    "MD-295": [(39.2850, -76.6250), (39.2500, -76.6500), (39.2300, -76.6600)],
}


@dataclass
class SimDevice:
    device_id: str
    kind: str
    latitude: float
    longitude: float
    interval_s: int
    #: "native" JSON or "senml"
    format: str = "native"
    #: seconds its clock runs ahead (+) or behind (−)
    clock_skew_s: float = 0.0
    firmware: str = "1.0"
    #: quirks: "kelvin" (SenML temperature in K), "backlog" (buffers when offline)
    quirks: list[str] = field(default_factory=list)


def _point_in(shape, rng: random.Random) -> tuple[float, float]:
    minx, miny, maxx, maxy = shape.bounds
    for _ in range(1000):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if shape.contains(Point(x, y)):
            return y, x
    p = shape.representative_point()
    return p.y, p.x


def _near_road(rng: random.Random) -> tuple[float, float]:
    name = rng.choice(sorted(MAJOR_ROADS))
    line = MAJOR_ROADS[name]
    i = rng.randrange(len(line) - 1)
    f = rng.random()
    (a_lat, a_lon), (b_lat, b_lon) = line[i], line[i + 1]
    jitter = 0.0015  # ~150 m either side
    return a_lat + f * (b_lat - a_lat) + rng.uniform(-jitter, jitter), a_lon + f * (b_lon - a_lon) + rng.uniform(-jitter, jitter)


def _quirks(kind: str, rng: random.Random) -> dict:
    senml = rng.random() < 0.3
    quirks = []
    if senml and kind == "weather" and rng.random() < 0.5:
        quirks.append("kelvin")
    if senml and kind == "air_quality":
        rng.random()  # (was the never-used "ug_ascii" quirk: kept so seeded fleets stay the same)
    if rng.random() < 0.7:
        quirks.append("backlog")
    skew = rng.gauss(0, 2.0) if rng.random() < 0.9 else rng.choice([-1, 1]) * rng.uniform(30, 120)
    return {"format": "senml" if senml else "native", "clock_skew_s": round(skew, 1),
            "firmware": rng.choice(["1.0", "1.2", "2.0", "2.1"]), "quirks": quirks}


def build_fleet(n: int, seed: int = 1, prefix: str = "sim") -> list[SimDevice]:
    rng = random.Random(seed)
    areas = baltimore()
    csas = sorted(areas.csas)
    kinds = [k for k, share in KIND_SHARES for _ in range(max(1, round(share * max(n, 20))))]
    rng.shuffle(kinds)
    hood_names = sorted(areas.neighbourhoods)
    # denser downtown: a neighbourhood's weight falls with its distance from downtown
    weights = [0.25 + math.exp(-math.hypot((areas.neighbourhoods[h].centroid[1] - DOWNTOWN[0]) * 111,
                                           (areas.neighbourhoods[h].centroid[0] - DOWNTOWN[1]) * 86) / 3.0)
               for h in hood_names]
    fleet = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if i < len(csas):  # every CSA first
            hood = rng.choice(areas.csas[csas[i]].neighbourhoods)
            lat, lon = _point_in(areas.shape_of(hood), rng)
        elif rng.random() < ROADSIDE.get(kind, 0.0):
            for _ in range(50):
                lat, lon = _near_road(rng)
                try:
                    areas.locate(lat, lon)
                    break
                except ValueError:
                    continue
        else:
            hood = rng.choices(hood_names, weights)[0]
            lat, lon = _point_in(areas.shape_of(hood), rng)
        fleet.append(SimDevice(f"{prefix}-{KIND_PREFIX[kind]}-{i + 1:04d}", kind, round(lat, 6), round(lon, 6),
                               KIND_INTERVAL_S[kind], **_quirks(kind, rng)))
    return fleet


def write_fleet(fleet: list[SimDevice], path: Path) -> None:
    doc = {"about": "citysense's simulated Baltimore fleet. Edit freely: device_id, kind, position, interval_s "
                    "(seconds between reports), format (native|senml), clock_skew_s, firmware, quirks "
                    "(kelvin, backlog).",
           "devices": [asdict(d) for d in fleet]}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def load_fleet(n: int | None = None, seed: int = 1, path: Path | Traversable | None = FLEET_FILE) -> list[SimDevice]:
    """The first ``n`` devices of the fleet file; more are built (seeded) when it holds fewer."""
    fleet: list[SimDevice] = []
    if path is not None and path.is_file():
        fleet = [SimDevice(**d) for d in json.loads(path.read_text())["devices"]]
    if n is None:
        return fleet
    if len(fleet) < n:
        extra = build_fleet(n, seed, prefix="simx")[len(fleet):]
        fleet += extra
    return fleet[:n]
