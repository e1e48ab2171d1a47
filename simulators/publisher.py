"""Many simulated devices, each with its own MQTT 5 connection, driven from one thread.

Each device connects with its own account (user name and client id = its device id, the password the
API issued at registration; see simulators/registration.py) and a last will on its status topic (``offline``,
retained), announces ``online`` (retained), and publishes its readings at QoS 1. An outage closes the
connection with MQTT 5's "disconnect with will message" (so the broker publishes the will, as it does
when a device loses power), and the device buffers readings until it reconnects.

paho is driven through its external-loop interface (loop_read / loop_write / loop_misc on a selector)
instead of a thread per device: a thousand devices are a thousand sockets, not a thousand threads.
"""

from __future__ import annotations

import logging
import selectors
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.broker.connect import Endpoint, client, connect
from simulators.devices import topic
from simulators.faults import Message

log = logging.getLogger("citysense.simulate")


class DeviceLink:
    """One device's MQTT connection."""

    def __init__(self, device_id: str, endpoint: Endpoint, password: str | None, on_refused=None):
        self.device_id, self.endpoint = device_id, endpoint
        c = client(endpoint, device_id, device_id, password)
        c.on_publish = self._on_publish
        self._on_refused = on_refused
        c.will_set(topic(device_id, "status"), "offline", qos=1, retain=True)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(10_000)
        self.client = c
        self.online = False
        self.pending: list[mqtt.MQTTMessageInfo] = []

    def _on_publish(self, c, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure and self._on_refused is not None:  # 0x87: not this device's topic
            self._on_refused(self.device_id, reason_code)

    def connect(self) -> None:
        connect(self.client, self.endpoint, keepalive=60, clean_start=True)
        self.online = True
        self.client.publish(topic(self.device_id, "status"), "online", qos=1, retain=True)

    def publish(self, msg: Message) -> None:
        props = None
        if msg.content_type:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = msg.content_type
        for _ in range(msg.copies):
            self.pending.append(self.client.publish(msg.topic, msg.payload, qos=1, properties=props))

    def drop(self) -> None:
        """Lose the connection the way a device does: the broker publishes the last will."""
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        self.online = False


class Fleet:
    """The links of many devices and the selector loop that moves their bytes."""

    def __init__(self, endpoint: Endpoint, credentials: dict[str, str]):
        self.endpoint, self.credentials = endpoint, credentials
        self.links: dict[str, DeviceLink] = {}
        self.selector = selectors.DefaultSelector()
        self._last_misc = 0.0
        self.refused = 0  # publishes the broker refused (MQTT 5 reason code ≥ 0x80)

    def _refused(self, device_id: str, reason) -> None:
        self.refused += 1
        log.debug("the broker refused a message of %s: %s", device_id, reason)

    def add(self, device_id: str) -> DeviceLink:
        link = DeviceLink(device_id, self.endpoint, self.credentials.get(device_id), self._refused)
        self.links[device_id] = link
        return link

    def connect(self, link: DeviceLink) -> None:
        for attempt in range(30):
            try:
                link.connect()
                break
            except OSError:
                time.sleep(min(2.0, 0.1 * 2 ** attempt))
        else:
            raise ConnectionError(f"{link.device_id}: the broker at {self.endpoint.url} does not answer")
        self.selector.register(link.client.socket(), selectors.EVENT_READ, link)

    def disconnect(self, link: DeviceLink, with_will: bool = True) -> None:
        sock = link.client.socket()
        if sock is not None:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        self.pump(0)
        if with_will:
            link.drop()
        else:
            link.client.disconnect()
            link.online = False
        for _ in range(20):  # let the DISCONNECT go out
            if not link.client.want_write():
                break
            link.client.loop_write()

    def pump(self, timeout: float) -> None:
        """Move bytes: write what is queued, read what arrived (PUBACKs), run keepalives."""
        for link in self.links.values():
            if link.online and link.client.want_write():
                link.client.loop_write()
        for key, _ in self.selector.select(timeout):
            link = key.data
            if link.client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                log.warning("%s lost its connection; reconnecting", link.device_id)
                self.selector.unregister(key.fileobj)
                link.online = False
                self.connect(link)
        now = time.monotonic()
        if now - self._last_misc > 1.0:
            self._last_misc = now
            for link in self.links.values():
                if link.online:
                    link.client.loop_misc()

    def unacknowledged(self) -> int:
        n = 0
        for link in self.links.values():
            link.pending = [p for p in link.pending if not p.is_published()]
            n += len(link.pending)
        return n

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the broker has acknowledged every QoS 1 message; True when it has."""
        deadline = time.monotonic() + timeout
        while self.unacknowledged() and time.monotonic() < deadline:
            self.pump(0.05)
        return self.unacknowledged() == 0

    def close(self) -> None:
        self.flush()
        for link in self.links.values():
            if link.online:
                self.disconnect(link, with_will=False)
