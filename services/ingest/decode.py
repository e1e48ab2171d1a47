"""Decode MQTT messages into candidate readings: pure functions, no I/O.

Two payload formats arrive on ``city/v1/devices/{device_id}/readings``:

* native JSON: ``{"time": …, "readings": {metric: value, …}}`` or a list of such objects (a backlog);
  ``time`` is RFC 3339 or epoch seconds; without it the broker receipt time is used and flagged;
* SenML JSON (RFC 8428): an array of records with base fields, recognised by its shape or by the
  MQTT 5 content type ``application/senml+json``.

Decoding checks structure only; whether the device, metric, unit, value and time are acceptable is
``validate``'s job. Anything that cannot be decoded raises :class:`Rejected` with a reason code.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from datetime import datetime

from services.core.catalogue import CHANNELS, DEVICE_ID_RE, Reason, TOPIC_PREFIX

SENML_CONTENT_TYPE = "application/senml+json"
#: SenML times below 2**28 are relative to "now" (RFC 8428 §4.5.3).
SENML_RELATIVE_LIMIT = 2**28


class Rejected(Exception):
    """A message (or one reading of it) that cannot be stored, with a reason code and a detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Not frozen: built once per reading on the hot path, and frozen dataclasses construct ~4x slower.
@dataclass(slots=True)
class Candidate:
    """A reading as the device sent it, before validation against the catalogue."""

    metric: str
    value: object  # whatever JSON held: validation insists on a finite number
    time: float  # epoch seconds
    time_assumed: bool = False
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    device_id: str
    channel: str  # "readings" or "status"


def parse_topic(topic: str) -> Topic:
    """The device and channel a topic names; raises Rejected(bad_topic). Every message's topic is parsed
    twice (registry lookup, then translation) and a fleet repeats a few thousand topics: well-formed ones of
    a device's length are remembered (16,384 at most, a few MB; a bad topic is never cached)."""
    return _parse_topic_cached(topic) if len(topic) <= 128 else _parse_topic(topic)


def _parse_topic(topic: str) -> Topic:
    if not topic.startswith(TOPIC_PREFIX):
        raise Rejected(Reason.BAD_TOPIC, f"topic {topic!r} is not under {TOPIC_PREFIX}")
    rest = topic[len(TOPIC_PREFIX):].split("/")
    if len(rest) != 2 or rest[1] not in CHANNELS:
        raise Rejected(Reason.BAD_TOPIC, f"topic {topic!r} is not {TOPIC_PREFIX}<device_id>/readings|status")
    if not DEVICE_ID_RE.match(rest[0]):
        raise Rejected(Reason.BAD_TOPIC, f"device id {rest[0]!r} in the topic is not a valid device id")
    return Topic(rest[0], rest[1])


_parse_topic_cached = functools.lru_cache(maxsize=16384)(_parse_topic)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are unique: ``{"pm25": 1, "pm25": 2}`` would otherwise keep 2 and silently
    drop 1 (RFC 8259 leaves duplicate names undefined)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(f"key {dup[:40]!r} appears twice in one object")
    return obj


def _json(payload: bytes, max_bytes: int) -> object:
    if len(payload) > max_bytes:
        raise Rejected(Reason.TOO_LARGE, f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.NOT_UTF8, f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise Rejected(Reason.MALFORMED_JSON, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise Rejected(Reason.MALFORMED_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise Rejected(Reason.MALFORMED_JSON, "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's conversion limit)
        raise Rejected(Reason.MALFORMED_JSON, f"unreadable JSON: {str(exc)[:120]}") from None


def parse_time(value: object) -> float:
    """RFC 3339 text (with an offset) or epoch seconds, as epoch seconds."""
    if isinstance(value, bool):
        raise Rejected(Reason.BAD_TIME, f"time {value!r} is neither RFC 3339 text nor epoch seconds")
    if isinstance(value, (int, float)):
        t = float(value) if not isinstance(value, int) or abs(value) < 2**62 else math.inf
        if not math.isfinite(t):
            raise Rejected(Reason.BAD_TIME, f"time {value!r} is not a finite number of seconds")
        return t
    if isinstance(value, str) and len(value) <= 64:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise Rejected(Reason.BAD_TIME, f"time {value!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise Rejected(Reason.BAD_TIME, f"time {value!r} has no UTC offset (RFC 3339 requires one)")
        return dt.timestamp()
    raise Rejected(Reason.BAD_TIME, f"time {str(value)[:64]!r} is neither RFC 3339 text nor epoch seconds")


def decode_native(doc: object, received_at: float, max_readings: int) -> list[Candidate]:
    objects = doc if isinstance(doc, list) else [doc]
    if not objects:
        raise Rejected(Reason.BAD_SHAPE, "empty list: no readings")
    out: list[Candidate] = []
    for i, obj in enumerate(objects):
        where = f"item {i}: " if isinstance(doc, list) else ""
        if not isinstance(obj, dict):
            raise Rejected(Reason.BAD_SHAPE, f"{where}expected an object with 'readings', got {type(obj).__name__}")
        readings = obj.get("readings")
        if not isinstance(readings, dict) or not readings:
            raise Rejected(Reason.BAD_SHAPE, f"{where}'readings' must be a non-empty object of metric: value")
        if "time" in obj and obj["time"] is not None:
            t, assumed = parse_time(obj["time"]), False
        else:
            t, assumed = received_at, True
        if len(out) + len(readings) > max_readings:
            raise Rejected(Reason.TOO_MANY_READINGS, f"more than {max_readings} readings in one message")
        out.extend(Candidate(str(metric), value, t, assumed) for metric, value in readings.items())
    return out


def _senml_device_and_metric(name: str, topic_device: str) -> tuple[str, str]:
    """Split a SenML name into (device id, metric).

    Accepted: ``pm25`` (the topic's device), ``<device_id>:pm25`` or ``<device_id>/pm25``, and
    ``urn:dev:<type>:<device_id>:pm25`` (RFC 8428 §5's URN convention).
    """
    cut = max(name.rfind(":"), name.rfind("/"))
    if cut < 0:
        return topic_device, name
    prefix, metric = name[:cut], name[cut + 1:]
    if prefix.startswith("urn:dev:"):
        parts = prefix.split(":", 3)
        prefix = parts[3] if len(parts) == 4 else ""
    return prefix, metric


def decode_senml(doc: object, received_at: float, max_readings: int, topic_device: str) -> list[Candidate]:
    if not isinstance(doc, list) or not doc:
        raise Rejected(Reason.BAD_SENML, "a SenML pack is a non-empty JSON array of records")
    if len(doc) > max_readings:
        raise Rejected(Reason.TOO_MANY_READINGS, f"more than {max_readings} records in one pack")
    bn, bt, bu, bv = "", 0.0, None, 0.0
    out: list[Candidate] = []
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise Rejected(Reason.BAD_SENML, f"record {i} is not an object")
        for label in rec:
            if label.endswith("_"):
                raise Rejected(Reason.BAD_SENML, f"record {i} has field {label!r}, which must be understood (RFC 8428 §4.4)")
        if "bver" in rec and (not isinstance(rec["bver"], int) or rec["bver"] > 10):
            raise Rejected(Reason.BAD_SENML, f"record {i}: unsupported SenML version {rec['bver']!r}")
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise Rejected(Reason.BAD_SENML, f"record {i}: bn must be a string")
            bn = rec["bn"]
        if "bt" in rec:
            bt = _senml_number(rec["bt"], i, "bt")
        if "bu" in rec:
            if not isinstance(rec["bu"], str):
                raise Rejected(Reason.BAD_SENML, f"record {i}: bu must be a string")
            bu = rec["bu"]
        if "bv" in rec:
            bv = _senml_number(rec["bv"], i, "bv")
        if not isinstance(rec.get("n", ""), str):
            raise Rejected(Reason.BAD_SENML, f"record {i}: n must be a string")
        name = bn + rec.get("n", "")
        has_value = any(k in rec for k in ("v", "vs", "vb", "vd", "s"))
        if not has_value:
            if set(rec) <= {"bn", "bt", "bu", "bv", "bver"}:
                continue  # a record that only sets base fields
            raise Rejected(Reason.BAD_SENML, f"record {i} ({name!r}) has no value")
        if not name:
            raise Rejected(Reason.BAD_SENML, f"record {i} has no name (bn + n is empty)")
        device, metric = _senml_device_and_metric(name, topic_device)
        if device != topic_device:
            raise Rejected(Reason.TOPIC_MISMATCH, f"record {i} names device {device!r} but the topic is {topic_device!r}")
        if "v" in rec:
            v = rec["v"]
            value = _plus_base(v, bv) if _is_number(v) else v
        elif "s" in rec:
            value = ("sum", rec["s"])  # a sum has no place in the catalogue: validation rejects it
        else:
            value = rec.get("vs", rec.get("vb", rec.get("vd")))
            value = ("non-numeric", value)
        t = bt + _senml_number(rec.get("t", 0), i, "t")
        if t < SENML_RELATIVE_LIMIT:
            t += received_at
        unit = rec.get("u", bu)
        if unit is not None and not isinstance(unit, str):
            raise Rejected(Reason.BAD_SENML, f"record {i}: u must be a string")
        out.append(Candidate(metric, value, t, False, unit))
    if not out:
        raise Rejected(Reason.BAD_SENML, "the pack holds no record with a value")
    return out


def _plus_base(v: int | float, bv: float) -> int | float:
    """v + bv, never raising: an integer too large for a float stays as it is (validation rejects it as
    out of range), and float overflow gives inf (rejected as non-finite)."""
    if not bv:
        return v
    try:
        return float(v) + bv
    except OverflowError:
        return v


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _senml_number(v: object, i: int, label: str) -> float:
    if not _is_number(v):
        raise Rejected(Reason.BAD_SENML, f"record {i}: {label} must be a number")
    f = float(v) if not isinstance(v, int) or abs(v) < 2**62 else math.inf
    if not math.isfinite(f):
        raise Rejected(Reason.BAD_SENML, f"record {i}: {label} is not finite")
    return f


def looks_like_senml(doc: object) -> bool:
    """A JSON array of records with SenML labels (and no native ``readings``)."""
    return (
        isinstance(doc, list)
        and bool(doc)
        and isinstance(doc[0], dict)
        and "readings" not in doc[0]
        and any(k in doc[0] for k in ("n", "bn", "v", "bt", "bu", "bver", "t", "u"))
    )


def decode_readings(
    payload: bytes,
    received_at: float,
    topic_device: str,
    *,
    content_type: str | None = None,
    max_bytes: int = 65536,
    max_readings: int = 2000,
) -> list[Candidate]:
    """The candidate readings of one message on a device's readings topic, or :class:`Rejected`."""
    doc = _json(payload, max_bytes)
    if (content_type or "").split(";")[0].strip().lower() == SENML_CONTENT_TYPE or looks_like_senml(doc):
        return decode_senml(doc, received_at, max_readings, topic_device)
    if isinstance(doc, dict) and "device_id" in doc and doc["device_id"] != topic_device:
        raise Rejected(Reason.TOPIC_MISMATCH, f"payload names device {str(doc['device_id'])[:64]!r} but the topic is {topic_device!r}")
    return decode_native(doc, received_at, max_readings)


STATUS_VALUES = ("online", "offline")


def decode_status(payload: bytes, max_bytes: int = 1024) -> str:
    """``online`` or ``offline``, sent as plain text or as ``{"status": …}``."""
    if len(payload) > max_bytes:
        raise Rejected(Reason.TOO_LARGE, f"status payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Rejected(Reason.NOT_UTF8, "status payload is not UTF-8") from None
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Rejected(Reason.MALFORMED_JSON, exc.msg) from None
        text = doc.get("status") if isinstance(doc, dict) else None
    if text not in STATUS_VALUES:
        raise Rejected(Reason.BAD_STATUS, f"status must be 'online' or 'offline', got {str(text)[:40]!r}")
    return text
