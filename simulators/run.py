"""``citysense simulate``: register a simulated fleet and publish its readings over MQTT.

One MQTT 5 connection publishes for the whole fleet at QoS 1 on each device's own topic; each device
reports every ``interval`` seconds, the devices staggered over that interval.
"""

from __future__ import annotations

import heapq
import json
import logging
import signal
import threading
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.types.json import Jsonb

from services.core.areas import OutsideCity
from services.core.devices import INSERT_DEVICE, placed
from services.core.settings import Settings
from simulators.fleet import SimDevice, build_fleet
from simulators.signals import readings_for

log = logging.getLogger("citysense.simulate")


def register_fleet(dsn: str, fleet: list[SimDevice]) -> int:
    """Register the fleet's devices (those not yet registered); returns how many were new."""
    new = 0
    with psycopg.connect(dsn) as conn:
        for d in fleet:
            try:
                values = placed({"device_id": d.device_id, "kind": d.kind, "latitude": d.latitude,
                                 "longitude": d.longitude, "interval_s": d.interval_s,
                                 "metadata": Jsonb({"simulated": True})})
            except OutsideCity:
                continue
            new += conn.execute(INSERT_DEVICE, values).rowcount
    return new


def payload(d: SimDevice, index: int, t: float, seed: int) -> bytes:
    ts = datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"time": ts, "readings": readings_for(d.kind, index, t, seed)}).encode()


def connect(settings: Settings, client_id: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(100_000)
    c.reconnect_delay_set(1, 15)
    c.connect_async(settings.mqtt_host, settings.mqtt_port_from_url, keepalive=30)
    c.loop_start()
    return c


def run(settings: Settings, duration_s: float | None = None, register: bool = True) -> int:
    fleet = build_fleet(settings.sim_devices, settings.sim_seed)
    interval = settings.sim_interval_s
    if register:
        n = register_fleet(settings.dsn, fleet)
        log.info("fleet of %d devices (%d newly registered)", len(fleet), n)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client = connect(settings, f"citysense-sim-{settings.sim_seed}")
    start = time.time()
    due = [(start + interval * i / len(fleet), i) for i in range(len(fleet))]
    heapq.heapify(due)
    sent = 0
    while not stop.is_set():
        t, i = due[0]
        if duration_s is not None and t > start + duration_s:
            break
        if stop.wait(max(0.0, t - time.time())):
            break
        heapq.heapreplace(due, (t + interval, i))
        d = fleet[i]
        client.publish(f"city/v1/devices/{d.device_id}/readings", payload(d, i, time.time(), settings.sim_seed), qos=1)
        sent += 1
    deadline = time.monotonic() + 10
    while client.want_write() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    log.info("simulator stopped after %d messages", sent)
    return 0
