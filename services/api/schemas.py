"""Request and response models, named by role: ``…Create`` comes in, ``…Public`` goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.core.catalogue import DEVICE_ID_PATTERN

DeviceKind = Literal["air_quality", "noise", "weather", "traffic", "water"]
T = TypeVar("T")


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

    @field_validator("metadata")
    @classmethod
    def _small(cls, v: dict) -> dict:
        import json

        if len(json.dumps(v)) > 4096:
            raise ValueError("metadata is larger than 4 KiB")
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
