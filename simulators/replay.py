"""Replay mode: publish readings from a CSV file (time, device, metric, value)."""

from __future__ import annotations

import csv
import logging
import threading
import time
from datetime import datetime

from services.core.catalogue import device_topic
from services.core.settings import Settings
from simulators.faults import Message, encode
from simulators.load import shared_client
from simulators.record import Recorder, stop_event

log = logging.getLogger("citysense.simulate")


def replay(settings: Settings, path: str, speed: float = 0.0, record: str | None = None,
           stop: threading.Event | None = None) -> int:
    """Publish readings from a CSV file with columns time, device, metric, value (time as RFC 3339 or
    epoch seconds). Rows of one device at one time become one message. ``speed``: 0 publishes as fast
    as the broker takes it; 60 plays an hour of data in a minute. Devices must be registered (the
    ingestor rejects the others as unknown_device, as it should)."""
    stop = stop or stop_event()
    recorder = Recorder(record)
    c = shared_client(settings, "sim-replay")
    infos = []
    first_t = wall0 = None

    def emit(device: str, t: float, values: dict[str, float]) -> None:
        nonlocal first_t, wall0
        if speed > 0:
            first_t, wall0 = (t, time.time()) if first_t is None else (first_t, wall0)
            delay = wall0 + (t - first_t) / speed - time.time()
            if delay > 0:
                time.sleep(delay)
        doc = {"time": t, "readings": values}
        msg = Message(device_topic(device), encode(doc), device, None, sorted(values), None)
        infos.append(c.publish(msg.topic, msg.payload, qos=1))
        recorder(msg, time.time())

    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = {"time", "device", "metric", "value"} - set(rows.fieldnames or [])
        if missing:
            raise SystemExit(f"{path}: missing columns {sorted(missing)} (need time, device, metric, value)")
        current, values = None, {}
        for row in rows:
            if stop.is_set():
                break
            t = row["time"]
            t = float(t) if t.replace(".", "", 1).lstrip("-").isdigit() else datetime.fromisoformat(t).timestamp()
            key = (row["device"], t)
            if key != current and current is not None:
                emit(*current, values)
                values = {}
            current = key
            try:
                values[row["metric"]] = float(row["value"])
            except ValueError:
                values[row["metric"]] = row["value"]  # sent as is: the ingestor rejects it with a reason
        if current is not None and values:
            emit(*current, values)
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()
    recorder.close()
    log.info("replayed %d messages from %s", len(infos), path)
    return 0

