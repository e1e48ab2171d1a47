"""The ingestor's MQTT side: a persistent MQTT 5 session that hands messages to the pipeline and
acknowledges them only when told to.

Contracts:
* paho's network thread calls ``_on_message``; it only timestamps and enqueues, never blocks or raises.
* subscriptions are made in ``_on_connect``, so they are renewed on every reconnect.
* acknowledgements (``ack``) come from the pipeline thread after the batch holding the message has
  committed; paho queues the PUBACK for its network thread.
* the broker may send at most ``inflight`` unacknowledged messages (MQTT 5 Receive Maximum), which
  bounds the pipeline's queue: when the database is down the window fills and the broker holds the
  rest in the session's queue (back-pressure).
"""

from __future__ import annotations

import logging
import struct
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.broker.connect import Endpoint, client, connect
from services.core.catalogue import device_topic
from services.core.settings import Settings
from services.ingest.metrics import IngestMetrics
from services.ingest.inbox import Inbox, cut
from services.ingest.translate import Envelope

log = logging.getLogger("citysense.ingest.mqtt")

#: The broker's own counters ($SYS, every sys_interval): what it dropped or holds, which the ingestor
#: cannot see otherwise (queue caps, oversized messages). Exported as citysense_broker_* gauges.
SYS_TOPICS = {
    "$SYS/broker/publish/messages/dropped": "publish_messages_dropped",
    "$SYS/broker/store/messages/count": "store_messages",
    "$SYS/broker/store/messages/bytes": "store_bytes",
    "$SYS/broker/clients/connected": "clients_connected",
}
READINGS_TOPIC = device_topic("+", "readings")
STATUS_TOPIC = device_topic("+", "status")


class Subscriber:
    def __init__(self, settings: Settings, inbox: Inbox, metrics: IngestMetrics, now=time.time):
        self._settings = settings
        self._inbox = inbox
        self._now = now  # receipt time (corrected for this host's clock offset)
        self._metrics = metrics
        self.connected = False
        #: Brokers to try in turn (CITYSENSE_MQTT_URL may list several): after a connection fails or is lost,
        #: the next one. Each broker keeps its own persistent session for this client id: messages queued on
        #: one while the ingestor is on another wait there until it comes back (or the session expires).
        self._endpoints = Endpoint.all_of(settings)
        self._current = 0
        self._endpoint = self._endpoints[0]
        c = client(self._endpoint, settings.client_id, *settings.mqtt_account, manual_ack=True)
        c.reconnect_delay_set(min_delay=1, max_delay=15)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c
        self._subacks: set[int] = set()  # mids of SUBACKs received, guarded by _subacked
        #: Which connection is current: packet ids are per connection, so an acknowledgement for a message
        #: that an earlier connection delivered must not be sent on this one (it could acknowledge another,
        #: uncommitted message with the same id). The broker redelivers such messages anyway.
        self._connection = 0
        self._connected_at = 0.0
        self._quick_losses = 0
        self._subacked = threading.Condition()

    @property
    def readings_topic(self) -> str:
        group = self._settings.ingest_share_group
        return f"$share/{group}/{READINGS_TOPIC}" if group else READINGS_TOPIC

    @property
    def status_topic(self) -> str:
        group = self._settings.ingest_share_group
        return f"$share/{group}/{STATUS_TOPIC}" if group else STATUS_TOPIC

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._settings.ingest_session_expiry_s
        props.ReceiveMaximum = self._settings.ingest_inflight
        # A first connection now, so a broker whose certificate cannot be verified is a start-up error
        # (BrokerUnverified) instead of a log of retries; a broker that is down is retried by paho.
        self._props = props
        for i, endpoint in enumerate(self._endpoints):
            try:
                self._current, self._endpoint = i, endpoint
                connect(self._client, endpoint, keepalive=30, clean_start=False, properties=props)
                break
            except OSError as exc:
                log.warning("the broker at %s does not answer (%s)", endpoint.url, exc)
        else:
            self._next_broker()
        self._client.loop_start()

    def _next_broker(self) -> None:
        """Point paho's next reconnect at the next broker of the list (the same one when there is one)."""
        self._current = (self._current + 1) % len(self._endpoints)
        self._endpoint = self._endpoints[self._current]
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30, clean_start=False,
                                   properties=self._props)
        if len(self._endpoints) > 1:
            log.warning("trying the broker at %s next", self._endpoint.url)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly: the broker keeps the session (and any unacknowledged message) for the
        session expiry interval, and redelivers on the next connect.

        First waits until the broker has processed every acknowledgement sent so far. While the broker
        is still streaming messages at us, closing the socket with unread data makes the kernel reset
        the connection, and a reset can discard our last PUBACKs in flight: acknowledged messages would
        then be redelivered (harmless duplicates, but avoidable). A SUBSCRIBE to a private topic is
        answered in order, so its SUBACK proves the PUBACKs before it were handled.
        """
        if self.connected:
            barrier = f"citysense/internal/{self._settings.client_id}/ack-barrier"
            result, mid = self._client.subscribe(barrier, qos=0)
            with self._subacked:
                confirmed = result == mqtt.MQTT_ERR_SUCCESS and self._subacked.wait_for(lambda: mid in self._subacks, timeout)
            if not confirmed:
                log.warning("the broker did not confirm the last acknowledgements within %.0f s", timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, envelopes: list[Envelope]) -> None:
        """Acknowledge a batch's messages once it has committed (pipeline thread).

        paho's ``ack()`` queues one PUBACK at a time, and each wakes its network thread (a socketpair write)
        and costs a send() of 4 bytes: acknowledging from another thread that way took a fifth of a bare
        subscriber's throughput (benchmarks: "paho, acknowledged in batches from a second thread"). Here the
        batch's PUBACKs go to paho's output queue as one buffer: one wake-up, one send. PUBACK is 4 bytes
        in MQTT 3.1.1 and 5 alike (success needs no reason code). With a paho lacking that internal queue,
        one ``ack()`` per message."""
        connection = self._connection
        mids = [e.mid for e in envelopes if e.qos > 0 and e.connection == connection]
        if not mids:
            return
        queue = getattr(self._client, "_packet_queue", None)
        if queue is None:
            for mid in mids:
                self._client.ack(mid, 1)
            return
        queue(PUBACK, struct.pack("!" + "BBH" * len(mids), *[x for mid in mids for x in (PUBACK, 2, mid)]), 0, 1)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("the broker refused the connection (%s): check this ingestor's account (CITYSENSE_MQTT_USERNAME, "
                      "default its client id %r, and CITYSENSE_MQTT_PASSWORD)", reason_code, self._settings.client_id)
            return
        self._connection += 1
        self._connected_at = time.monotonic()
        self.connected = True
        self._metrics.broker_connected(True)
        log.info("connected to the broker (session present: %s); subscribing to %s", flags.session_present, self.readings_topic)
        # Retain Handling 2: no retained message at subscribe. A retained reading or status would come back
        # on every reconnect as if new (and statuses went through the share group like readings, so
        # several ingestors do not each handle every status).
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        client.subscribe([(self.readings_topic, options), (self.status_topic, options),
                          *((topic, SubscribeOptions(qos=0)) for topic in SYS_TOPICS)])

    def _on_connect_fail(self, client, userdata) -> None:
        """A reconnect found no broker at the current address: with several, try the next."""
        if len(self._endpoints) > 1:
            self._next_broker()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._subacked:
            self._subacks.add(mid)
            self._subacked.notify_all()

    #: A connection lost this soon after it was made, while the broker answers, is most likely another
    #: client taking the session with the same client id (Mosquitto 2.0.11 closes the socket without the
    #: MQTT 5 reason "Session taken over", later versions send 0x8E).
    QUICK_LOSS_S = 5.0
    TAKEOVER_BACKOFF_S = 30.0

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        self._metrics.broker_connected(False)
        if not reason_code.is_failure:
            log.info("disconnected from the broker")
            return
        quick = time.monotonic() - self._connected_at < self.QUICK_LOSS_S
        self._quick_losses = self._quick_losses + 1 if quick else 0
        if reason_code.value == 0x8E or self._quick_losses >= 2:
            self._metrics.takeovers.inc()
            log.error("the broker gave this ingestor's session to another client with the same client id %r: "
                      "give every ingestor its own CITYSENSE_INGEST_CLIENT_ID (or CITYSENSE_INGEST_INSTANCE); "
                      "reconnecting in %.0f s", self._settings.client_id, self.TAKEOVER_BACKOFF_S)
            client.reconnect_delay_set(min_delay=self.TAKEOVER_BACKOFF_S, max_delay=self.TAKEOVER_BACKOFF_S * 4)
        else:
            client.reconnect_delay_set(min_delay=1, max_delay=15)
            log.warning("disconnected from the broker at %s (%s); reconnecting", self._endpoint.url, reason_code)
            if len(self._endpoints) > 1:
                self._next_broker()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic in SYS_TOPICS:
                self._metrics.broker.labels(SYS_TOPICS[msg.topic]).set(float(msg.payload))
                return
            props = getattr(msg, "properties", None)
            ctype = getattr(props, "ContentType", None) if props is not None else None
            try:
                topic = msg.topic
            except UnicodeDecodeError:  # the pipeline rejects it as bad_topic, and acknowledges it
                topic = msg._topic.decode("utf-8", "replace")
            payload, size, whole = cut(topic, msg.payload, self._settings.ingest_max_payload_bytes,
                                       self._settings.ingest_rejected_payload_bytes)
            self._inbox.put(Envelope(msg.mid, msg.qos, topic, payload, self._now(), time.monotonic(), ctype,
                                     self._connection, bool(msg.dup), bool(msg.retain), size, whole))
        except Exception:  # a callback must never raise into paho's network loop
            log.exception("could not enqueue a message on %r", getattr(msg, "topic", "?"))
