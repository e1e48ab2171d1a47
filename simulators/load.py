"""Load mode: the fleet's devices at a target message rate in all (each over its own connection)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from services.broker.connect import Endpoint, client, connect
from services.core.settings import Settings
from simulators.devices import message
from simulators.fleet import load_fleet
from simulators.record import fleet_path, stop_event
from simulators.publisher import Fleet
from simulators.registration import credentials_path, load_credentials, register_fleet

log = logging.getLogger("citysense.simulate")


def shared_client(settings: Settings, name: str) -> mqtt.Client:
    """A connection that speaks for many devices (replay mode): a bridge account, named by
    CITYSENSE_MQTT_USERNAME and CITYSENSE_MQTT_PASSWORD (``citysense broker add-bridge``). The broker
    binds a bridge account to its client id, which is its user name."""
    endpoint = Endpoint.of(settings)
    username, password = settings.mqtt_username, settings.mqtt_password
    c = client(endpoint, username or f"{name}-{time.time_ns()}", username,
               password.get_secret_value() if password else None)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    connect(c, endpoint)
    c.loop_start()
    return c


def load(settings: Settings, rate: float, duration_s: float, register: bool = True,
         stop: threading.Event | None = None, fleet_file: Path | None | str = "default") -> dict:
    """Load mode: the fleet's devices, each over its own connection with its own credentials, at ``rate``
    messages per second in all. Returns what it achieved (messages acknowledged by the broker per second)."""
    fleet = load_fleet(settings.sim_devices, settings.sim_seed, fleet_path(settings, fleet_file))
    creds = register_fleet(settings, fleet)[1] if register else load_credentials(credentials_path(settings))
    fleet = [d for d in fleet if d.device_id in creds]
    stop = stop or stop_event()
    links = Fleet(Endpoint.of(settings), creds)
    for d in fleet:
        links.connect(links.add(d.device_id))
    seqs = [0] * len(fleet)
    start = time.time()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        if due - start > duration_s:
            break
        links.pump(max(0.0, min(0.01, due - time.time())))
        if time.time() < due:
            continue
        d = fleet[i % len(fleet)]
        msg = message(d, time.time(), seqs[i % len(fleet)], settings.sim_seed, interval_s=len(fleet) / rate)
        seqs[i % len(fleet)] += 1
        links.links[d.device_id].publish(msg)
        i += 1
    links.flush(60)
    elapsed = time.time() - start
    links.close()
    sent = i
    result = {"target_msg_per_s": rate, "sent": sent, "seconds": round(elapsed, 2),
              "achieved_msg_per_s": round(sent / elapsed, 1), "refused_by_broker": links.refused}
    log.info("load: %s", result)
    print(json.dumps(result), flush=True)
    return result


