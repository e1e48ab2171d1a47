"""Request and response models, named by role: ``…Create`` comes in, ``…Public`` goes out."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.broker.dynsec import RESERVED_PREFIX
from services.core.catalogue import DEVICE_ID_PATTERN, DEVICE_KINDS

DeviceKind = Literal[DEVICE_KINDS]
T = TypeVar("T")


def check_metadata(v: dict | None) -> dict | None:
    """Device metadata is free-form but bounded (4 KiB as JSON) and storable (jsonb refuses NUL)."""
    if v is None:
        return v
    text = json.dumps(v)
    if len(text) > 4096:
        raise ValueError("metadata is larger than 4 KiB")
    if "\\u0000" in text:
        raise ValueError("metadata may not contain NUL characters")
    return v


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null on the last page.")


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="Stable id, used in the device's MQTT topics.")
    kind: DeviceKind
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    interval_s: int = Field(60, ge=1, le=7 * 86400, description="Seconds between two reports when healthy.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form (make, firmware…), at most 4 KiB as JSON.")

    _metadata = field_validator("metadata")(lambda cls, v: check_metadata(v))

    @field_validator("device_id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower().startswith(RESERVED_PREFIX):
            raise ValueError(f"ids starting with {RESERVED_PREFIX!r} are citysense's own broker accounts")
        return v


class DevicePublic(BaseModel):
    device_id: str
    kind: DeviceKind
    latitude: float
    longitude: float
    neighbourhood: str
    csa: str
    installed: datetime
    interval_s: int
    metadata: dict[str, Any]
    status: Literal["online", "offline", "unknown"]
    status_at: datetime | None
    last_seen: datetime | None
    retired_at: datetime | None = Field(None, description="When the device was retired; its history stays published.")


class MqttCredentials(BaseModel):
    """A device's broker account. The password is shown once: only the broker keeps it, as a salted hash."""

    username: str = Field(description="The device id.")
    password: str = Field(description="Shown only in this answer; POST …/credentials issues new ones.")
    client_id: str = Field(description="The only MQTT client id this account may connect with (the device id).")
    topics: dict[str, str] = Field(description="The only topics it may publish to (readings, status); it may subscribe to none.")


class DeviceRegistered(DevicePublic):
    mqtt: MqttCredentials


class DeviceCredentials(BaseModel):
    device_id: str
    mqtt: MqttCredentials


class AuditEntry(BaseModel):
    id: int
    at: datetime
    method: str
    path: str
    device_id: str | None
    client: str | None = Field(description="The client's address (as forwarded by a trusted proxy).")
    status: int = Field(description="The status the API answered.")


class DevicePurged(BaseModel):
    device_id: str
    readings_deleted: int
    hourly_rollups_deleted: int


class ReadingPublic(BaseModel):
    time: datetime
    device_id: str
    metric: str
    value: float
    unit: str
    time_assumed: bool = Field(description="True when the device sent no time and the receipt time was used.")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    database: Literal["ok", "unavailable"]
    schema_: Literal["current", "behind", "unknown"] = Field(alias="schema")
    detail: str | None = Field(description="Why the API is not ready, when it is not.")


class DevicePatch(BaseModel):
    """Fields an operator may change; a new position is placed in its neighbourhood and CSA again."""

    model_config = ConfigDict(extra="forbid")

    kind: DeviceKind | None = None
    latitude: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False)
    longitude: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False)
    interval_s: int | None = Field(None, ge=1, le=7 * 86400)
    metadata: dict[str, Any] | None = None

    _metadata = field_validator("metadata")(lambda cls, v: check_metadata(v))


class MetricPublic(BaseModel):
    metric: str
    unit: str
    description: str
    min_value: float = Field(description="Lowest plausible value; readings below it are rejected.")
    max_value: float = Field(description="Highest plausible value; readings above it are rejected.")
    aggregation: Literal["mean", "energy", "sum"] = Field(
        description="How readings combine over time: arithmetic mean, energy mean (decibels), or sum.")


class Point(BaseModel):
    longitude: float
    latitude: float


class AreaPublic(BaseModel):
    name: str
    level: Literal["csa", "neighbourhood"]
    csa: str
    neighbourhoods: list[str] | None = Field(None, description="For a CSA: its neighbourhoods.")
    reference_point: Point = Field(description="A point inside the area, for labels and markers.")
    devices: int
    devices_by_kind: dict[str, int]
    geometry: dict[str, Any] | None = Field(None, description="The boundary as a GeoJSON geometry (geometry=true).")


class AggregatePublic(BaseModel):
    bucket: datetime = Field(description="Start of the time bucket.")
    group: str = Field(description="`city`, or the CSA, neighbourhood or device the row is about.")
    count: int
    mean: float | None = Field(description="Arithmetic mean; for decibels the energy mean.")
    min: float | None
    max: float | None
    sum: float | None = Field(description="Total, for metrics that add up (traffic counts, rainfall); else null.")


class AggregatePage(Page[AggregatePublic]):
    metric: str
    unit: str
    bucket: str
    start: datetime = Field(description="Start of the first bucket (the requested start, rounded down to the bucket grid).")
    end: datetime = Field(description="End of the last bucket (the requested end, rounded up to the bucket grid).")
    source: Literal["daily_rollups", "csa_hourly_rollups", "city_hourly_rollups", "hourly_rollups", "raw"] = Field(
        description="Where the answer came from: daily or hourly rollups per CSA, hourly rollups of the city, "
                    "hourly rollups per device, or the raw readings (the cheapest that can answer).")


class ScopePublic(BaseModel):
    level: Literal["city", "csa", "neighbourhood", "device"]
    name: str | None


class PollutantPublic(BaseModel):
    concentration: float | None = Field(description="Truncated as EPA truncates it, in `unit`.")
    unit: str
    aqi: int | None
    averaging: str
    device_id: str | None = Field(None, description="The device whose value the area reports (its highest).")


class AQIPublic(BaseModel):
    scope: ScopePublic
    at: datetime
    aqi: int | None = Field(description="US EPA AQI (0–500), or null when there is not enough data.")
    category: str | None
    colour: str | None
    main_pollutant: str | None
    pollutants: dict[str, PollutantPublic]
    devices: list[str] = Field(description="Devices whose data entered the answer.")
    note: str | None = None


class HeatIndexPublic(BaseModel):
    scope: ScopePublic
    at: datetime
    heat_index_f: float | None
    heat_index_c: float | None
    category: str | None = Field(description="NWS: Caution, Extreme Caution, Danger, Extreme Danger; null below 80 °F.")
    temperature_c: float | None
    humidity: float | None
    device_id: str | None = Field(description="The device with the highest heat index, which the area reports.")
    devices: list[str]
    note: str | None = None


class NoiseHour(BaseModel):
    hour: datetime
    leq: float
    exceeds_who: bool
    exceeds_epa: bool


class NoisePublic(BaseModel):
    scope: ScopePublic
    date: str = Field(description="The local calendar day (America/New_York unless configured).")
    hourly: list[NoiseHour]
    leq_24h: float | None
    lday: float | None
    levening: float | None
    lnight: float | None
    lden: float | None
    hours_with_data: int
    hours_exceeding_who: int
    hours_exceeding_epa: int
    guidelines: dict[str, float]
    devices: list[str]
    note: str | None = None
