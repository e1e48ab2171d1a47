"""Fault injection: what a misbehaving device sends, and what citysense must make of it.

Each fault has a rate (the share of messages it affects, decided by seeded hashing so a run is
reproducible) and an expected outcome: the rejection reason the ingestor must record, or, for
duplicates, that the reading is stored once. A message carries at most one fault.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from simulators.signals import unit_noise

#: fault → the rejection reason it must produce (None: nothing is rejected). An impersonation (a device
#: publishing on another device's topic) never reaches the ingestor: the broker refuses it (MQTT 5
#: reason code 0x87, Not authorized), which the simulator counts.
FAULTS: dict[str, str | None] = {
    "malformed_json": "malformed_json",
    "wrong_type": "wrong_type",
    "nan": "non_finite",
    "out_of_range": "out_of_range",
    "unknown_metric": "unknown_metric",
    "duplicate": None,
    "late": "time_too_old",
    "future": "time_in_future",
    "impersonation": "not_authorized",
    "oversized": "too_large",
}
#: Whole-message faults reject every reading of the message; the others spoil one reading only.
WHOLE_MESSAGE = {"malformed_json", "late", "future", "impersonation", "oversized"}
#: Faults the broker refuses (their FAULTS value is the broker's reason, not a rejection reason).
BROKER_REFUSED = {"impersonation"}
#: Far beyond any metric's plausible range in the catalogue (the largest is 10,000): always out_of_range,
#: without a copy of the catalogue's ranges here.
IMPLAUSIBLE = 1e9


@dataclass(frozen=True)
class FaultRates:
    rates: dict[str, float]
    silent: float = 0.0  # share of devices that never report

    def pick(self, seed: int, device_id: str, seq: int) -> str | None:
        """The fault of a device's seq-th message, if any."""
        u = unit_noise(seed, "fault", device_id, seq)
        acc = 0.0
        for name in FAULTS:
            acc += self.rates.get(name, 0.0)
            if u < acc:
                return name
        return None

    def is_silent(self, seed: int, device_id: str) -> bool:
        return unit_noise(seed, "silent", device_id) < self.silent


@dataclass
class Message:
    topic: str
    payload: bytes
    device_id: str
    fault: str | None
    stored: list[str]  # metrics whose readings must be stored (duplicates: stored once)
    rejected: str | None  # the rejection reason expected, if any
    content_type: str | None = None
    copies: int = 1  # a duplicate is sent twice
    backlog: bool = False  # readings buffered during an outage
    refused: bool = False  # the broker must refuse it (not authorized)


def spoil(fault: str, readings: dict[str, float]) -> tuple[dict[str, object], list[str]]:
    """Readings with one of them spoiled, and the metrics still expected to be stored."""
    out: dict[str, object] = dict(readings)
    victim = sorted(readings)[0]
    if fault == "wrong_type":
        out[victim] = str(readings[victim])
    elif fault == "nan":
        out[victim] = math.nan
    elif fault == "out_of_range":
        out[victim] = IMPLAUSIBLE
    elif fault == "unknown_metric":
        out["radon"] = 4.2
        return out, sorted(readings)
    return out, sorted(m for m in readings if m != victim)


def encode(doc) -> bytes:
    """JSON as devices write it: NaN stays the bare literal NaN (as many firmwares emit it)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
