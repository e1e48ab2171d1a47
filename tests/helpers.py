"""Test helpers that talk to the real services: processes, MQTT publishing, polling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.broker.connect import client, connect
from services.launcher.stack import free_port

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


#: Devices the tests registered (they publish with their own accounts; see Publisher).
REGISTERED: set[str] = set()
_links: dict[tuple[str, str], mqtt.Client] = {}  # (broker directory, account) → connection
_passwords: dict[tuple[str, str], str] = {}
_lock = threading.Lock()
BRIDGE = "test-bridge"


def device_password(broker, device_id: str) -> str:
    """The password of ``device_id``'s account on ``broker`` (made there through the admin account on first use)."""
    key = (str(broker.data_dir), device_id)
    with _lock:
        if key not in _passwords:
            _passwords[key] = broker.control().add_device(device_id)
        return _passwords[key]


def device_client(broker, device_id: str, password: str, client_id: str | None = None, tls: bool = False,
                  inflight: int = 500, **kw) -> mqtt.Client:
    """A connected MQTT 5 client with this account (client id: the device id unless given)."""
    endpoint = broker.endpoint(tls)
    c = client(endpoint, client_id or device_id, device_id, password, **kw)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(0.1, 1)  # back quickly after a broker restart
    connect(c, endpoint)
    c.loop_start()
    return c


def _link(broker, topic: str, via_bridge: bool = False) -> mqtt.Client:
    """One connection per (broker, account), shared by every Publisher: a registered device's own account,
    or, for a topic of no registered device (a hostile or unknown one) or when asked, the broker's bridge
    account (what a gateway publishing for many devices uses)."""
    parts = topic.split("/")
    device = parts[3] if topic.startswith("city/v1/devices/") and len(parts) == 5 else None
    if device in REGISTERED and not via_bridge:
        account, password = device, device_password(broker, device)
    else:
        account = BRIDGE
        with _lock:
            key = (str(broker.data_dir), BRIDGE)
            if key not in _passwords:
                broker.control().add_bridge(BRIDGE, "bridge-password-0123456789")
                _passwords[key] = "bridge-password-0123456789"
        password = _passwords[key]
    key = (str(broker.data_dir), account)
    with _lock:
        c = _links.get(key)
        if c is None:
            c = device_client(broker, account, password)
            _links[key] = c
    if not c.is_connected():  # the broker restarted: paho reconnects by itself
        wait_until(c.is_connected, 20, what=f"{account} reconnected to the broker")
    return c


def close_links() -> None:
    with _lock:
        for c in _links.values():
            c.disconnect()
            c.loop_stop()
        _links.clear()


class Publisher:
    """Publishes at QoS 1 and waits for the broker's PUBACKs, each message through the account of the device
    its topic names (registered by the tests), or the bridge account for other topics."""

    def __init__(self, broker):
        self.broker = broker

    def publish(self, topic: str, payload, qos: int = 1, content_type: str | None = None, retain: bool = False,
                wait: bool = True, via_bridge: bool = False):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        props = None
        if content_type:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = content_type
        info = _link(self.broker, topic, via_bridge).publish(topic, payload, qos=qos, retain=retain, properties=props)
        if wait:
            info.wait_for_publish(10)
        return info

    def readings(self, device_id: str, doc, **kw):
        return self.publish(f"city/v1/devices/{device_id}/readings", doc, **kw)

    def close(self):
        pass  # the connections are shared (close_links ends them)


class Service:
    """A citysense service (``citysense ingest`` / ``api``) in a subprocess, with its own environment."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path):
        self.command, self.env, self.log_path = command, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.launcher.cli", self.command], env=self.env,
                                     cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_env(dsn: str, broker, **extra) -> dict[str, str]:
    """The environment of a service against this database and broker: an ingestor account of its own
    (made on the broker), the admin account for the API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update({
        "CITYSENSE_DATABASE_URL": dsn,
        "CITYSENSE_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
        "CITYSENSE_MQTT_ADMIN_PASSWORD": broker.admin_password,
        "CITYSENSE_INGEST_METRICS_PORT": str(free_port()),
        "CITYSENSE_INGEST_CLIENT_ID": unique("ingest"),
        "CITYSENSE_INGEST_BATCH_AGE_MS": "50",
        "CITYSENSE_ROLLUP_INTERVAL_S": "0.5",
        "CITYSENSE_API_CACHE_S": "0",  # tests read their own writes; the cache has its own test
        "CITYSENSE_API_SUMMARY_REFRESH_S": "1",  # the summary is recomputed in the background: often, in tests
        "CITYSENSE_API_PORT": str(free_port()),
        "CITYSENSE_ADMIN_TOKEN": "test-admin-token-0123456789",
        "CITYSENSE_ENVIRONMENT": "test",
    })
    env.update({(k if k.startswith("CITYSENSE_") else f"CITYSENSE_{k.upper()}"): str(v) for k, v in extra.items()})
    env.setdefault("CITYSENSE_MQTT_PASSWORD", broker.add_ingestor(env["CITYSENSE_INGEST_CLIENT_ID"]))
    return env


def metric_value(port: int, name: str, labels: str = "") -> float:
    """A sample read from a service's /metrics endpoint (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def register_device(dsn: str, device_id: str, kind: str = "air_quality", lat: float = 39.2904, lon: float = -76.6122,
                    interval_s: int = 60):
    """Register a device in the database; it publishes with an account of its own on each broker a
    Publisher reaches (the API's registration route, which makes both at once, has its own tests)."""
    from services.core.areas import baltimore
    from services.store.devices import Placed, register_many

    loc = baltimore().locate(lat, lon)
    register_many(dsn, [({"device_id": device_id, "kind": kind, "interval_s": interval_s, "metadata": {}},
                         Placed(lat, lon, loc.neighbourhood, loc.csa))])
    REGISTERED.add(device_id)


def count(dsn: str, sql: str, params=()) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()[0]
