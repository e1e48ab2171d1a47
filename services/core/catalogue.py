"""The metric catalogue and device kinds: the vocabulary shared by ingestor, API and simulators.

The database's ``metrics`` table is the source of truth for metrics (migrations seed it; the store loads
it into :class:`Metric` objects, so validation and maths never touch SQL). Every other shared fact is
defined here once: device kinds, the device id pattern, the pollutants, the noise periods, the topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

DEVICE_KINDS = ("air_quality", "noise", "weather", "traffic", "water")

#: The six pollutants of the US AQI, in the catalogue's metric codes.
POLLUTANTS = ("pm25", "pm10", "o3", "no2", "co", "so2")

#: Noise assessment periods by local hour (WHO 2018, EU Directive 2002/49/EC): day 07–19, evening
#: 19–23, night 23–07. The one definition: SQL receives these bounds as parameters.
NOISE_DAY_FROM, NOISE_EVENING_FROM, NOISE_NIGHT_FROM = 7, 19, 23


def noise_period(hour: int) -> str:
    """"day", "evening" or "night" for a local hour."""
    if NOISE_DAY_FROM <= hour < NOISE_EVENING_FROM:
        return "day"
    if NOISE_EVENING_FROM <= hour < NOISE_NIGHT_FROM:
        return "evening"
    return "night"


#: Where devices publish: city/v1/devices/<device_id>/readings|status.
TOPIC_PREFIX = "city/v1/devices/"
CHANNELS = ("readings", "status")


def device_topic(device_id: str, channel: str = "readings") -> str:
    return f"{TOPIC_PREFIX}{device_id}/{channel}"

#: Device ids appear in MQTT topics, URLs and CSV files: no `/`, `+`, `#`, spaces or control characters.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)

#: The metrics a device of each kind usually reports (the simulator follows this; the ingestor accepts
#: any catalogued metric from any device, since real deployments mix sensors on one board).
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "air_quality": POLLUTANTS,
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


class Reason(StrEnum):
    """Why a message (or one reading of it) was not stored: recorded with it in rejected_messages and
    counted in citysense_ingest_rejections_total{reason}."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    BAD_SHAPE = "bad_shape"
    BAD_SENML = "bad_senml"
    BAD_TIME = "bad_time"
    TOO_MANY_READINGS = "too_many_readings"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_TYPE = "wrong_type"
    WRONG_UNIT = "wrong_unit"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    TIME_IN_FUTURE = "time_in_future"
    TIME_TOO_OLD = "time_too_old"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_STATUS = "bad_status"
    RETAINED = "retained"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    STORAGE_ERROR = "storage_error"
    INTERNAL_ERROR = "internal_error"
