"""Chaos, accounted for: good readings with and without a device time, identical and conflicting
duplicates and a corpus of hostile messages, sent through a database outage, an ingestor SIGKILL and a
broker restart. Afterwards every message is accounted for: each good reading stored once, each bad message
recorded once with its reason, each conflicting duplicate visible, and the ingestor running."""

from __future__ import annotations

import time

import pytest

from services.ingest.translate import Envelope, Limits, translate
from services.store.ingest import Registry
from tests.conftest import make_broker, make_cluster
from tests.helpers import Publisher, count, metric_value, register_device, unique, wait_until
from tests.integration.test_ingest_reliability import start_ingestor
from tests.unit.test_hostile_messages import HOSTILE, METRICS

pytestmark = pytest.mark.slow


def _only_rejected(payload: bytes) -> bool:
    """Hostile messages that must yield rejections and no reading (checked with the pure translation)."""
    env = Envelope(1, 1, "city/v1/devices/d/readings", payload, time.time(), time.monotonic(), None)
    batch = translate([env], Registry(METRICS, {"d": 1}), Limits())
    return not batch.readings and bool(batch.rejected) and len(payload) < 1_000_000


def test_every_message_is_accounted_for_through_outage_sigkill_and_broker_restart(workdir):
    cluster, broker = make_cluster(workdir, "pg-chaos"), make_broker(workdir, "mq-chaos")
    dsn = cluster.dsn
    devices = [unique("chaos") for _ in range(4)]
    for d in devices:
        register_device(dsn, d)
    t0 = time.time() - 3600
    timed = [(devices[i % 4], {"time": t0 + i, "readings": {"pm25": 10 + i % 50, "no2": 20}}) for i in range(400)]
    timeless = [(devices[i % 4], {"readings": {"pm10": 1 + i / 10, "o3": 30}}) for i in range(200)]
    identical = timed[:20]  # sent again, as they were
    conflicting = [(d, {"time": doc["time"], "readings": {"pm25": 500.0, "no2": 20}}) for d, doc in timed[20:40]]
    hostile = [p for p in HOSTILE if _only_rejected(p)]
    assert len(hostile) >= 10
    client_id = unique("ingest")
    ing = start_ingestor(workdir, dsn, broker, CITYSENSE_INGEST_CLIENT_ID=client_id, CITYSENSE_INGEST_RETRY_MAX_S=1)
    pub = Publisher(broker)
    try:
        def send(messages):
            for device, doc in messages:
                pub.readings(device, doc)

        send(timed[:100] + timeless[:50])
        for p in hostile[:5]:
            pub.readings(devices[0], p)
        cluster.stop("immediate")  # a database outage mid-stream
        send(timed[100:200] + timeless[50:100])
        time.sleep(2)  # the outage lasts a little longer than those messages take to arrive
        cluster.start()
        send(timed[200:300] + timeless[100:150])
        ing.kill()  # SIGKILL, whatever it held
        ing = start_ingestor(workdir, dsn, broker, name=client_id + "-2", CITYSENSE_INGEST_CLIENT_ID=client_id,
                             CITYSENSE_INGEST_RETRY_MAX_S=1)
        pub.close()
        broker.stop()  # a broker restart: its persistent sessions and queue survive
        broker.start()
        pub = Publisher(broker)
        send(timed[300:] + timeless[150:] + identical + conflicting)
        for p in hostile[5:]:
            pub.readings(devices[1], p)

        good = 2 * (len(timed) + len(timeless))

        def stored() -> int:
            return count(dsn, "SELECT count(*) FROM readings")

        def rejected(reason: str | None = None) -> int:
            return count(dsn, "SELECT count(DISTINCT digest) FROM rejected_messages"
                              + (" WHERE reason = %s" if reason else ""), (reason,) if reason else ())

        wait_until(lambda: stored() >= good and rejected("conflicting_duplicate") >= len(conflicting), 90,
                   what="every good reading and every conflict")
        time.sleep(2)  # anything still arriving would show now
        assert stored() == good  # each good reading once: no loss, no double
        assert count(dsn, "SELECT count(*) FROM readings_hourly") > 0
        assert count(dsn, "SELECT sum(count) FROM readings_hourly") == good  # and counted once in the rollups
        assert rejected("conflicting_duplicate") == len(conflicting)  # each conflict visible, once
        assert count(dsn, "SELECT count(*) FROM readings WHERE value = 500") == 0  # the first value stands
        hostile_recorded = count(dsn, "SELECT count(DISTINCT digest) FROM rejected_messages WHERE reason <> "
                                      "'conflicting_duplicate'")
        assert hostile_recorded == len(hostile)  # each bad message recorded (once, whatever was redelivered)
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE reason IN ('storage_error', 'internal_error')") == 0
        assert ing.alive()
        assert metric_value(ing.metrics_port, "citysense_ingest_broker_connected") == 1
    finally:
        pub.close()
        ing.stop()
        broker.stop()
        cluster.stop("immediate")
