"""Baltimore's 278 neighbourhoods and 55 Community Statistical Areas (CSAs), and point-in-polygon lookup.

The boundaries ship with the package (``data/``, sources in ``data/SOURCES.md``), so a device's
neighbourhood and CSA are found from its position without a network or a PostGIS install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.strtree import STRtree

DATA_DIR = files("services.core") / "data"


@dataclass(frozen=True)
class Area:
    name: str
    level: str  # "neighbourhood" or "csa"
    centroid: tuple[float, float]  # lon, lat: an interior reference point
    geometry: dict[str, Any] = field(repr=False)
    csa: str | None = None  # for a neighbourhood: the CSA it belongs to
    neighbourhoods: tuple[str, ...] = ()  # for a CSA: its member neighbourhoods


class OutsideCity(ValueError):
    """The position lies in none of the city's neighbourhoods."""


@dataclass(frozen=True)
class Location:
    neighbourhood: str
    csa: str


class Areas:
    """The city's areas, indexed for point lookup. Immutable; safe to share between threads."""

    def __init__(self, neighbourhoods: list[Area], csas: list[Area]):
        self.neighbourhoods = {a.name: a for a in neighbourhoods}
        self.csas = {a.name: a for a in csas}
        self._order = neighbourhoods
        self._shapes = [shape(a.geometry) for a in neighbourhoods]
        self._shapes_by_name = dict(zip(self.neighbourhoods, self._shapes))
        self._tree = STRtree(self._shapes)
        union = shapely.union_all(self._shapes)
        self.bounds = union.bounds  # min lon, min lat, max lon, max lat

    def locate(self, latitude: float, longitude: float) -> Location:
        """The neighbourhood and CSA holding the point; raises OutsideCity when none does.

        A point on a shared border belongs to the first neighbourhood by name, so the answer is stable.
        """
        point = shapely.Point(longitude, latitude)
        for i in sorted(self._tree.query(point, predicate="intersects")):
            area = self._order[i]
            return Location(area.name, area.csa or "")
        raise OutsideCity(
            f"position ({latitude}, {longitude}) is outside Baltimore City: it lies in none of the city's "
            f"neighbourhoods (the city spans latitude {self.bounds[1]:.4f} to {self.bounds[3]:.4f}, "
            f"longitude {self.bounds[0]:.4f} to {self.bounds[2]:.4f})"
        )

    def shape_of(self, name: str):
        """The neighbourhood's polygon (shapely), for sampling positions inside it."""
        return self._shapes_by_name[name]


def _read(path: Traversable) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["features"]


@cache
def baltimore() -> Areas:
    neighbourhoods = sorted(
        (
            Area(
                name=f["properties"]["name"],
                level="neighbourhood",
                centroid=tuple(f["properties"]["centroid"]),
                geometry=f["geometry"],
                csa=f["properties"]["csa2010"],
            )
            for f in _read(DATA_DIR / "neighbourhoods.geojson")
        ),
        key=lambda a: a.name,
    )
    csas = sorted(
        (
            Area(
                name=f["properties"]["name"],
                level="csa",
                centroid=tuple(f["properties"]["centroid"]),
                geometry=f["geometry"],
                neighbourhoods=tuple(f["properties"]["neighbourhoods"]),
            )
            for f in _read(DATA_DIR / "csas.geojson")
        ),
        key=lambda a: a.name,
    )
    return Areas(neighbourhoods, csas)
