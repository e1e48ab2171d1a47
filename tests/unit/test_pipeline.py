"""The pipeline's acknowledgement rules, with a store stub (the real store is tested against TimescaleDB)."""

from __future__ import annotations

import time

from services.core.catalogue import Metric
from services.core.settings import Settings
from services.ingest.inbox import Inbox
from services.ingest.metrics import IngestMetrics
from services.ingest.mqtt import Subscriber
from services.ingest.pipeline import Pipeline, PipelineConfig
from services.ingest.translate import Envelope
from services.store.ingest import Registry
from services.store.model import WriteResult

METRICS = {"pm25": Metric(1, "pm25", "µg/m³", "", 0, 1000, "mean"), "no2": Metric(4, "no2", "ppb", "", 0, 3000, "mean")}


class Store:
    def __init__(self):
        self.writes, self.remapped = [], {}

    def registry(self):
        return Registry(METRICS, {"d1": 1})

    def device_keys(self, ids):
        return {}

    def first_deliveries(self, digests):
        return {}

    def write(self, batch):
        self.writes.append(len(batch.readings))
        return WriteResult(stored=len(batch.readings), duplicates=0)


def env(i: int, connection: int = 1) -> Envelope:
    payload = f'{{"time": {time.time() - 60 + i}, "readings": {{"pm25": {i}, "no2": 1}}}}'.encode()
    return Envelope(i + 1, 1, "city/v1/devices/d1/readings", payload, time.time(), time.monotonic(), None, connection)


def test_a_batch_over_the_reading_cap_is_written_in_halves_and_each_message_acknowledged_once():
    acked, store = [], Store()
    p = Pipeline(Inbox(1 << 20), store, lambda es: acked.extend(e.mid for e in es), IngestMetrics(),
                 PipelineConfig(batch_max_readings=3))
    assert p.process([env(i) for i in range(8)]) == []  # 16 readings, at most 3 a batch
    assert sorted(acked) == list(range(1, 9)) and max(store.writes) <= 3 and sum(store.writes) == 16


def test_an_acknowledgement_goes_out_only_on_the_connection_that_delivered_the_message():
    sub = Subscriber(Settings(), Inbox(1 << 20), IngestMetrics())
    sent = []

    class Client:
        def ack(self, mid, qos):
            sent.append(mid)

    sub._client = Client()
    sub._connection = 2  # reconnected since message 7 was delivered
    sub.ack([env(6, connection=1)])
    sub.ack([env(7, connection=2)])
    assert sent == [8]  # (env(i) has mid i + 1) the stale one is left to the broker's redelivery


def test_a_batch_is_acknowledged_with_one_buffer_of_pubacks():
    sub = Subscriber(Settings(), Inbox(1 << 20), IngestMetrics())
    queued = []

    class Client:
        def _packet_queue(self, command, packet, mid, qos):
            queued.append((command, bytes(packet)))

    sub._client = Client()
    sub._connection = 1
    sub.ack([env(1, connection=1), env(2, connection=0), env(300, connection=1)])
    # one PUBACK (0x40, remaining length 2, packet id) per message of this connection, in one buffer
    assert queued == [(0x40, bytes([0x40, 2, 0, 2, 0x40, 2, 1, 45]))]
