"""What one simulated device sends: its payloads (native JSON or SenML), with its clock skew, unit
quirks, injected faults and backlogs. Pure: builds messages, sends nothing."""

from __future__ import annotations

from datetime import datetime, timezone

from services.core.catalogue import device_topic as topic
from simulators.faults import BROKER_REFUSED, FAULTS, WHOLE_MESSAGE, FaultRates, Message, encode, spoil
from simulators.fleet import SimDevice
from simulators.signals import readings_for

SENML_UNITS = {"pm25": "ug/m3", "pm10": "ug/m3", "o3": "ppb", "no2": "ppb", "co": "ppm", "so2": "ppb",
               "noise_laeq": "dBA", "temperature": "Cel", "humidity": "%RH", "traffic_count": "count",
               "water_level": "m", "rainfall": "mm"}


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _senml(device: SimDevice, entries: list[tuple[float, dict[str, object]]]) -> list[dict]:
    """A SenML pack: base name and base time on the first record, relative times after it."""
    bt = entries[0][0]
    pack: list[dict] = []
    for t, values in entries:
        for metric, v in values.items():
            unit = SENML_UNITS.get(metric)
            if metric == "temperature" and "kelvin" in device.quirks and isinstance(v, float):
                v, unit = round(v + 273.15, 3), "K"
            rec: dict = {"n": metric, "v": v}
            if unit:
                rec["u"] = unit
            if t != bt:
                rec["t"] = round(t - bt, 3)
            pack.append(rec)
    pack[0] = {"bn": f"urn:dev:id:{device.device_id}:", "bt": round(bt, 3), **pack[0]}
    return pack


def payload(device: SimDevice, entries: list[tuple[float, dict[str, object]]]) -> tuple[bytes, str | None]:
    """Payload and MQTT 5 content type for readings taken at the given (device clock) times."""
    if device.format == "senml":
        return encode(_senml(device, entries)), "application/senml+json"
    docs = [{"time": rfc3339(t), "readings": values} for t, values in entries]
    return encode(docs[0] if len(docs) == 1 else docs), None


def message(device: SimDevice, t: float, seq: int, seed: int, faults: FaultRates | None = None,
            interval_s: float | None = None) -> Message:
    """The device's seq-th live message, taken at true time t. ``interval_s``: how often the device really
    publishes (default: its nominal interval); counts and rainfall are for that interval, so hourly sums
    come out right whatever the publishing pace."""
    readings = readings_for(device.kind, device.device_id, device.latitude, device.longitude, t, seed,
                            interval_s or device.interval_s)
    fault = faults.pick(seed, device.device_id, seq) if faults else None
    device_time = t + device.clock_skew_s
    device_id, stored, rejected, copies = device.device_id, sorted(readings), None, 1
    values: dict[str, object] = dict(readings)
    if fault == "late":
        device_time -= 40 * 86400
    elif fault == "future":
        device_time += 86400
    elif fault == "impersonation":
        device_id = f"ghost-{device.device_id}"  # another device's topic: the broker refuses it
    elif fault == "duplicate":
        copies = 2
    elif fault in FAULTS and fault not in WHOLE_MESSAGE:
        values, stored = spoil(fault, readings)
    if fault is not None and fault not in BROKER_REFUSED:
        rejected = FAULTS[fault]
    if fault in WHOLE_MESSAGE:
        stored = []
    body, ctype = payload(device, [(device_time, values)])
    if fault == "malformed_json":
        body = body[:-1]
    elif fault == "oversized":
        body = body + b" " * 70_000  # valid JSON, padded past the ingestor's 64 KiB limit
    return Message(topic(device_id), body, device_id, fault, stored, rejected, ctype, copies,
                   refused=fault in BROKER_REFUSED)


def backlog(device: SimDevice, times: list[float], seed: int) -> Message:
    """Readings buffered during an outage, sent as one message when the device is back."""
    entries = [(t + device.clock_skew_s,
                readings_for(device.kind, device.device_id, device.latitude, device.longitude, t, seed, device.interval_s))
               for t in times]
    body, ctype = payload(device, entries)
    stored = sorted(m for _, values in entries for m in values)
    return Message(topic(device.device_id), body, device.device_id, None, stored, None, ctype, backlog=True)
