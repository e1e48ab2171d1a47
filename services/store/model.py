"""What the ingestor hands the store, and what the store answers: plain typed values, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Bit 1 of a reading's flags: the device sent no time; `time` is the ingestor's delivery time.
FLAG_TIME_ASSUMED = 1


# Not frozen: built once per reading on the hot path, and frozen dataclasses construct ~4x slower.
@dataclass(slots=True)
class Reading:
    """A validated reading, ready for the database."""

    device_key: int
    metric_key: int
    time: float  # epoch seconds
    value: float
    flags: int


@dataclass(slots=True)
class RejectedRow:
    received_at: float
    topic: str
    device_id: str | None
    payload: bytes
    reason: str
    detail: str


@dataclass(slots=True)
class StatusChange:
    device_key: int
    status: str
    time: float


@dataclass(slots=True)
class Batch:
    readings: list[Reading] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    #: For each device key, the messages whose readings the batch carries: if the device turns out to be
    #: retired or deleted when the batch is written, those messages become unknown_device rejections.
    sources: dict[int, list[RejectedRow]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicates: int
    #: Every rejection the transaction recorded: the batch's own, and the messages of devices found
    #: retired or deleted at write time (reason unknown_device).
    rejections: tuple[RejectedRow, ...] = ()
    #: Those devices' ids: the caller's registry should forget them.
    refused_devices: tuple[str, ...] = ()
