"""Validate candidate readings against the catalogue, the device registry and the clock: pure functions.

A message's good readings are kept even when some of its readings are bad; each bad one yields a
rejection with a precise reason, so that nothing a device sent disappears without a trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.core.catalogue import Metric, Reason
from services.ingest.decode import Candidate
from services.store.model import FLAG_TIME_ASSUMED, Reading

#: Units a payload may give for each catalogue unit, and how to convert them (value · factor + offset).
#: SenML symbols come from IANA's SenML Units registry (RFC 8428 §12.1, RFC 8798): `Cel`, `K`, `%RH`,
#: `m`, `kg/m3`, `count`, `ppm`, `dB`... Air-quality units that the registry lacks (µg/m³, ppb) are
#: accepted under their common ASCII spellings; the catalogue's own unit text is always accepted.
UNIT_ALIASES: dict[str, dict[str, tuple[float, float]]] = {
    "µg/m³": {"µg/m³": (1, 0), "ug/m3": (1, 0), "µg/m3": (1, 0), "kg/m3": (1e9, 0), "mg/m3": (1e3, 0)},
    "ppb": {"ppb": (1, 0), "ppm": (1e3, 0)},
    "ppm": {"ppm": (1, 0), "ppb": (1e-3, 0)},
    "dB(A)": {"dB(A)": (1, 0), "dBA": (1, 0), "dB": (1, 0)},
    "°C": {"°C": (1, 0), "Cel": (1, 0), "K": (1, -273.15)},
    "%": {"%": (1, 0), "%RH": (1, 0), "/": (100, 0)},
    "vehicles": {"vehicles": (1, 0), "count": (1, 0), "1": (1, 0)},
    "m": {"m": (1, 0), "cm": (0.01, 0), "mm": (0.001, 0)},
    "mm": {"mm": (1, 0), "m": (1000, 0)},
}


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


@dataclass(slots=True)
class Verdict:
    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Window:
    """The accepted time span around the receipt time, in seconds."""

    max_past_s: float
    max_future_s: float


def convert_unit(value: float, given: str | None, metric: Metric) -> float:
    if given is None or given == metric.unit:
        return value
    factor_offset = UNIT_ALIASES.get(metric.unit, {}).get(given)
    if factor_offset is None:
        raise ValueError(f"{metric.code} is in {metric.unit}; unit {given[:20]!r} is not accepted for it")
    factor, offset = factor_offset
    return value * factor + offset


def check_reading(c: Candidate, metric: Metric | None, received_at: float, window: Window) -> tuple[float, None] | tuple[None, Rejection]:
    """The stored value of one candidate, or the reason it cannot be stored."""
    if metric is None:
        return None, Rejection(Reason.UNKNOWN_METRIC, f"metric {c.metric[:40]!r} is not in the catalogue")
    v = c.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None, Rejection(Reason.WRONG_TYPE, f"{c.metric}: value {str(v)[:40]!r} is not a number")
    try:
        value = float(v)
    except OverflowError:
        return None, Rejection(Reason.OUT_OF_RANGE, f"{c.metric}: value is an integer of {v.bit_length()} bits")
    if not math.isfinite(value):
        return None, Rejection(Reason.NON_FINITE, f"{c.metric}: value {value} is not a finite number")
    try:
        value = convert_unit(value, c.unit, metric)
    except ValueError as exc:
        return None, Rejection(Reason.WRONG_UNIT, str(exc))
    if not metric.min_value <= value <= metric.max_value:
        return None, Rejection(
            "out_of_range",
            f"{c.metric}: {value:g} {metric.unit} is outside the plausible range "
            f"{metric.min_value:g}..{metric.max_value:g}",
        )
    if c.time > received_at + window.max_future_s:
        return None, Rejection(Reason.TIME_IN_FUTURE, f"{c.metric}: time is {c.time - received_at:.0f} s ahead of the receipt time")
    if c.time < received_at - window.max_past_s:
        return None, Rejection(Reason.TIME_TOO_OLD, f"{c.metric}: time is {received_at - c.time:.0f} s before the receipt time")
    return value, None


def validate(
    candidates: list[Candidate],
    device_key: int,
    metrics: dict[str, Metric],
    received_at: float,
    window: Window,
    msg: int = -1,
) -> Verdict:
    verdict = Verdict()
    for c in candidates:
        metric = metrics.get(c.metric)
        value, rejection = check_reading(c, metric, received_at, window)
        if rejection is not None:
            verdict.rejections.append(rejection)
        else:
            verdict.readings.append(
                Reading(device_key, metric.key, c.time, value, FLAG_TIME_ASSUMED if c.time_assumed else 0, msg)
            )
    return verdict


def summarise(rejections: list[Rejection], limit: int = 5) -> list[Rejection]:
    """One rejection per reason, its detail listing the first few cases: a backlog of 500 bad readings
    becomes one row per reason, not 500 copies of the payload."""
    by_reason: dict[str, list[str]] = {}
    for r in rejections:
        by_reason.setdefault(r.reason, []).append(r.detail)
    out = []
    for reason, details in by_reason.items():
        text = "; ".join(details[:limit])
        if len(details) > limit:
            text += f"; and {len(details) - limit} more"
        out.append(Rejection(reason, text))
    return out
