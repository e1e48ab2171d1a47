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
    msg: int = -1  # index of its message in Batch.messages (-1: none)


@dataclass(slots=True)
class RejectedRow:
    received_at: float
    topic: str
    device_id: str | None
    payload: bytes  # possibly cut: the first bytes of the message's payload
    reason: str
    detail: str
    size: int = -1  # the payload's length as sent (-1: len(payload))
    digest: bytes | None = None  # the message's identity: sha256 of topic, NUL and the whole payload


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
    #: The messages whose readings the batch carries (Reading.msg indexes them), with reason and detail
    #: empty and their payload whole: what the store records (cut, with its digest) if a reading turns out
    #: to be refused when the batch is written (its device retired or deleted, or a different value already
    #: stored under its key).
    messages: list[RejectedRow] = field(default_factory=list)
    #: (digest, delivery time) of the messages whose readings took their delivery time: a redelivered copy
    #: finds its first delivery's time here (services/store/ingest.py, receipts).
    receipts: list[tuple[bytes, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    #: readings already stored with the same value (a redelivery, a repeat): a no-op
    duplicates: int
    #: readings whose key already held a different value: recorded as conflicting_duplicate rejections
    conflicts: int = 0
    #: Every rejection the transaction recorded: the batch's own, and the messages of devices found
    #: retired or deleted at write time (reason unknown_device).
    rejections: tuple[RejectedRow, ...] = ()
    #: Those devices' ids: the caller's registry should forget them.
    refused_devices: tuple[str, ...] = ()
