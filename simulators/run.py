"""``citysense simulate``: register a simulated fleet and run it against the broker the settings name.

Modes:
- live (default): each device reports at its interval over its own MQTT 5 connection, with faults,
  outages and backlogs as asked; ``--backfill`` first publishes that much history, as fast as the
  broker takes it (a day of a fleet in seconds, for demos and tests of daily cycles);
- ``--load``: N devices' topics at a target message rate over a few shared connections; prints the rate
  it achieved (for benchmarks);
- ``--replay FILE.csv``: publish readings from a CSV file (time, device, metric, value).

``--record FILE`` writes one JSON line per message sent: topic, fault, and what the ingestor must store
or reject, so a test can compare sent against stored and rejected.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.types.json import Jsonb

from services.core.areas import OutsideCity
from services.core.devices import INSERT_DEVICE, placed
from services.core.settings import Settings
from simulators.devices import backlog, message, topic
from simulators.faults import FaultRates, Message, encode
from simulators.fleet import SimDevice, load_fleet
from simulators.publisher import Fleet

log = logging.getLogger("citysense.simulate")


def register_fleet(dsn: str, fleet: list[SimDevice], min_interval_s: float = 0) -> int:
    """Register the fleet's devices (those not yet registered); returns how many were new."""
    new = 0
    with psycopg.connect(dsn) as conn:
        for d in fleet:
            try:
                values = placed({"device_id": d.device_id, "kind": d.kind, "latitude": d.latitude,
                                 "longitude": d.longitude, "interval_s": int(max(d.interval_s, min_interval_s)),
                                 "metadata": Jsonb({"simulated": True, "firmware": getattr(d, "firmware", None),
                                                    "format": getattr(d, "format", "native")})})
            except OutsideCity:
                continue
            new += conn.execute(INSERT_DEVICE, values).rowcount
    return new


def _fleet_path(settings: Settings, fleet_file):
    """``"default"``: the settings' fleet file, else the one shipped with citysense; None: build it."""
    from simulators.fleet import FLEET_FILE

    if fleet_file != "default":
        return fleet_file
    if settings.sim_fleet_file is not None:
        if not settings.sim_fleet_file.is_file():
            raise SystemExit(f"citysense simulate: CITYSENSE_SIM_FLEET_FILE {settings.sim_fleet_file} is not a file")
        return settings.sim_fleet_file
    return FLEET_FILE


class Recorder:
    """What was sent, one JSON line per message (or nothing, without a path)."""

    def __init__(self, path: str | None):
        self._f = open(path, "a", encoding="utf-8") if path else None
        self.sent = 0
        self.by_fault: dict[str, int] = {}

    def __call__(self, msg: Message, t: float) -> None:
        self.sent += msg.copies
        key = msg.fault or "none"
        self.by_fault[key] = self.by_fault.get(key, 0) + 1
        if self._f:
            self._f.write(json.dumps({"t": round(t, 3), "topic": msg.topic, "device_id": msg.device_id,
                                      "fault": msg.fault, "stored": msg.stored, "rejected": msg.rejected,
                                      "copies": msg.copies, "backlog": msg.backlog, "bytes": len(msg.payload)}) + "\n")

    def close(self) -> None:
        if self._f:
            self._f.close()


def _stop_event() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def run(settings: Settings, duration_s: float | None = None, register: bool = True, *,
        rate: float | None = None, faults: FaultRates | None = None, record: str | None = None,
        backfill_s: float = 0.0, outage_rate: float = 0.0, outage_s: tuple[float, float] = (120.0, 600.0),
        fleet_file: Path | None | str = "default", stop: threading.Event | None = None) -> int:
    """Live mode. ``rate``: messages per second for the whole fleet (else each device every
    CITYSENSE_SIM_INTERVAL_S); ``outage_rate``: outages per device per hour, each lasting between
    ``outage_s`` seconds."""
    n, seed = settings.sim_devices, settings.sim_seed
    fleet = load_fleet(n, seed, _fleet_path(settings, fleet_file))
    interval = n / rate if rate else settings.sim_interval_s
    faults = faults or FaultRates({})
    stop = stop or _stop_event()
    recorder = Recorder(record)
    if register:
        new = register_fleet(settings.dsn, fleet, min_interval_s=interval)
        log.info("fleet of %d devices (%d newly registered)", len(fleet), new)
    active = [d for d in fleet if not faults.is_silent(seed, d.device_id)]
    links = Fleet(settings.mqtt_host, settings.mqtt_port_from_url)
    for d in active:
        links.connect(links.add(d.device_id))
    log.info("%d devices connected (%d silent)", len(active), len(fleet) - len(active))

    start = time.time()
    if backfill_s > 0:
        _backfill(active, links, start, backfill_s, seed, recorder, stop)
    seq = {d.device_id: 0 for d in active}
    offline: dict[str, tuple[float, list[float]]] = {}  # device → (back at, buffered times)
    due = [(time.time() + interval * i / max(1, len(active)), i) for i in range(len(active))]
    heapq.heapify(due)
    end = None if duration_s is None else start + duration_s
    while not stop.is_set() and due:
        t, i = due[0]
        if end is not None and t > end:
            break
        while time.time() < t and not stop.is_set():
            links.pump(min(0.05, max(0.0, t - time.time())))
        if stop.is_set():
            break
        heapq.heapreplace(due, (t + interval, i))
        d = active[i]
        link = links.links[d.device_id]
        now = time.time()
        if d.device_id in offline:
            back_at, buffered = offline[d.device_id]
            if now < back_at:
                if "backlog" in d.quirks:
                    buffered.append(now)
                continue
            del offline[d.device_id]
            links.connect(link)
            if buffered:
                msg = backlog(d, buffered, seed)
                link.publish(msg)
                recorder(msg, now)
        elif outage_rate and _chance(seed, d.device_id, int(now / interval), outage_rate * interval / 3600):
            links.disconnect(link, with_will=True)
            low, high = outage_s
            offline[d.device_id] = (now + low + (high - low) * _chance_value(seed, d.device_id, now), [])
            continue
        msg = message(d, now, seq[d.device_id], seed, faults)
        seq[d.device_id] += 1
        link.publish(msg)
        recorder(msg, now)
    for device_id, (_, buffered) in offline.items():  # back online before leaving: nothing buffered is lost
        link = links.links[device_id]
        links.connect(link)
        if buffered:
            msg = backlog(next(d for d in active if d.device_id == device_id), buffered, seed)
            link.publish(msg)
            recorder(msg, time.time())
    ok = links.flush()
    for link in links.links.values():
        if link.online:
            link.client.publish(topic(link.device_id, "status"), "offline", qos=1, retain=True)
    links.close()
    recorder.close()
    elapsed = max(1e-9, time.time() - start)
    log.info("simulator stopped: %d messages in %.0f s (%.1f/s); faults %s; all acknowledged: %s",
             recorder.sent, elapsed, recorder.sent / elapsed, recorder.by_fault, ok)
    return 0 if ok else 1


def _chance(seed: int, device_id: str, k: int, p: float) -> bool:
    from simulators.signals import unit_noise

    return unit_noise(seed, "outage", device_id, k) < p


def _chance_value(seed: int, device_id: str, t: float) -> float:
    from simulators.signals import unit_noise

    return unit_noise(seed, "outage-len", device_id, int(t))


def _backfill(fleet: list[SimDevice], links: Fleet, now: float, span_s: float, seed: int, recorder: Recorder,
              stop: threading.Event, per_message: int = 60) -> None:
    """History for every device from now − span to now at its own interval, as backlog messages."""
    for d in fleet:
        times = [now - span_s + k * d.interval_s for k in range(int(span_s // d.interval_s))]
        link = links.links[d.device_id]
        for i in range(0, len(times), per_message):
            msg = backlog(d, times[i:i + per_message], seed)
            link.publish(msg)
            recorder(msg, now)
        while links.unacknowledged() > 2000 and not stop.is_set():
            links.pump(0.05)
    links.flush(120)
    log.info("backfilled %.1f h for %d devices", span_s / 3600, len(fleet))


def _shared_client(settings: Settings, name: str) -> mqtt.Client:
    """A publishing connection that speaks for many devices (load and replay modes)."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{name}-{time.time_ns()}",
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(settings.mqtt_host, settings.mqtt_port_from_url)
    c.loop_start()
    return c


def load(settings: Settings, rate: float, duration_s: float, connections: int = 4, register: bool = True,
         stop: threading.Event | None = None, fleet_file: Path | None | str = "default") -> dict:
    """Load mode: the fleet's topics at ``rate`` messages per second over a few shared connections.
    Returns what it achieved (messages acknowledged by the broker per second)."""
    fleet = load_fleet(settings.sim_devices, settings.sim_seed, _fleet_path(settings, fleet_file))
    if register:
        register_fleet(settings.dsn, fleet)
    stop = stop or _stop_event()
    clients = [_shared_client(settings, f"sim-load-{k}") for k in range(connections)]
    infos, seqs = [], [0] * len(fleet)
    start = time.time()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        if due - start > duration_s:
            break
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        d = fleet[i % len(fleet)]
        msg = message(d, time.time(), seqs[i % len(fleet)], settings.sim_seed)
        seqs[i % len(fleet)] += 1
        infos.append(clients[i % connections].publish(msg.topic, msg.payload, qos=1))
        i += 1
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.time() - start
    for c in clients:
        c.disconnect()
        c.loop_stop()
    result = {"target_msg_per_s": rate, "sent": len(infos), "seconds": round(elapsed, 2),
              "achieved_msg_per_s": round(len(infos) / elapsed, 1)}
    log.info("load: %s", result)
    print(json.dumps(result), flush=True)
    return result


def replay(settings: Settings, path: str, speed: float = 0.0, record: str | None = None,
           stop: threading.Event | None = None) -> int:
    """Publish readings from a CSV file with columns time, device, metric, value (time as RFC 3339 or
    epoch seconds). Rows of one device at one time become one message. ``speed``: 0 publishes as fast
    as the broker takes it; 60 plays an hour of data in a minute. Devices must be registered (the
    ingestor rejects the others as unknown_device, as it should)."""
    stop = stop or _stop_event()
    recorder = Recorder(record)
    c = _shared_client(settings, "sim-replay")
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
        msg = Message(topic(device), encode(doc), device, None, sorted(values), None)
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

