"""Load mode: the fleet's topics at a target message rate over a few shared connections (benchmarks)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from services.core.settings import Settings
from simulators.devices import message
from simulators.fleet import load_fleet
from simulators.record import fleet_path, stop_event
from simulators.registration import register_fleet

log = logging.getLogger("citysense.simulate")


def shared_client(settings: Settings, name: str) -> mqtt.Client:
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
    fleet = load_fleet(settings.sim_devices, settings.sim_seed, fleet_path(settings, fleet_file))
    if register:
        register_fleet(settings.dsn, fleet)
    stop = stop or stop_event()
    clients = [shared_client(settings, f"sim-load-{k}") for k in range(connections)]
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
        msg = message(d, time.time(), seqs[i % len(fleet)], settings.sim_seed, interval_s=len(fleet) / rate)
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


