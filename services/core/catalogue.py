"""The metric catalogue and device kinds: the vocabulary shared by ingestor, API and simulators.

The database's ``metrics`` table is the source of truth (migrations seed it); this module loads it
into plain objects so that validation and maths never touch SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE_KINDS = ("air_quality", "noise", "weather", "traffic", "water")

#: Device ids appear in MQTT topics, URLs and CSV files: no `/`, `+`, `#`, spaces or control characters.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)

#: The metrics a device of each kind usually reports (the simulator follows this; the ingestor accepts
#: any catalogued metric from any device, since real deployments mix sensors on one board).
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "air_quality": ("pm25", "pm10", "o3", "no2", "co", "so2"),
    "noise": ("noise_laeq",),
    "weather": ("temperature", "humidity", "rainfall"),
    "traffic": ("traffic_count",),
    "water": ("water_level", "rainfall"),
}


@dataclass(frozen=True, slots=True)
class Metric:
    key: int
    code: str
    unit: str
    description: str
    min_value: float
    max_value: float
    aggregation: str  # "mean", "energy" or "sum"


def load_metrics(conn) -> dict[str, Metric]:
    """The catalogue by metric code, read from the database (psycopg connection)."""
    rows = conn.execute(
        "SELECT metric_key, metric, unit, description, min_value, max_value, aggregation"
        " FROM metrics ORDER BY metric_key"
    ).fetchall()
    return {r[1]: Metric(*r) for r in rows}
