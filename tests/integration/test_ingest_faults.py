"""Faults of the database itself are never acknowledged away; one message's fault costs that message only."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from tests.conftest import make_broker, make_cluster
from tests.helpers import Publisher, count, metric_value, register_device, unique, wait_until
from tests.integration.test_ingest_reliability import start_ingestor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(workdir):
    cluster, broker = make_cluster(workdir, "pg-faults"), make_broker(workdir, "mq-faults")
    yield cluster, broker
    broker.stop()
    cluster.stop("immediate")


def _stored(dsn, device):
    return count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = %s",
                 (device,))


def test_a_renamed_column_holds_every_message_until_it_is_back(workdir, stack):
    cluster, broker = stack
    dsn = cluster.dsn
    device = unique("drift")
    register_device(dsn, device)
    ing = start_ingestor(workdir, dsn, broker, CITYSENSE_INGEST_RETRY_MAX_S=1)
    pub = Publisher(broker)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:  # a rolling upgrade gone wrong: the rollup breaks
            conn.execute("ALTER TABLE readings_hourly RENAME COLUMN energy TO energy_x")
        t = time.time() - 600
        for i in range(30):
            pub.readings(device, {"time": t + i, "readings": {"pm25": i}})
        port = ing.metrics_port
        wait_until(lambda: metric_value(port, "citysense_ingest_database_fault") == 1, what="the fault reported")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503 and ready.json()["database_writable"] is False
        time.sleep(2)
        assert _stored(dsn, device) == 0
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device,)) == 0
        assert metric_value(port, "citysense_ingest_inflight_messages") >= 30  # held, not acknowledged
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings_hourly RENAME COLUMN energy_x TO energy")
        wait_until(lambda: _stored(dsn, device) == 30, 30, what="every held reading")
        assert metric_value(port, "citysense_ingest_database_fault") == 0
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device,)) == 0
    finally:
        pub.close()
        ing.stop()


def test_a_constraint_every_message_violates_holds_them_and_one_only_it_violates_rejects_it(workdir, stack):
    cluster, broker = stack
    dsn = cluster.dsn
    device = unique("chk")
    register_device(dsn, device)
    ing = start_ingestor(workdir, dsn, broker, CITYSENSE_INGEST_RETRY_MAX_S=1, CITYSENSE_INGEST_BATCH_AGE_MS=300)
    pub = Publisher(broker)
    t = time.time() - 600
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:  # every reading violates it
            conn.execute("ALTER TABLE readings ADD CONSTRAINT only_negative CHECK (value < 0) NOT VALID")
        for i in range(5):
            pub.readings(device, {"time": t + i, "readings": {"pm25": 10 + i}})
        wait_until(lambda: metric_value(ing.metrics_port, "citysense_ingest_database_fault") == 1, what="the fault")
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device,)) == 0
        with psycopg.connect(dsn, autocommit=True) as conn:  # now only 666 violates it
            conn.execute("ALTER TABLE readings DROP CONSTRAINT only_negative")
            conn.execute("ALTER TABLE readings ADD CONSTRAINT not_666 CHECK (value <> 666) NOT VALID")
        wait_until(lambda: _stored(dsn, device) == 5, 30, what="the held readings")
        pub.readings(device, {"time": t + 100, "readings": {"pm25": 666}})
        for i in range(3):
            pub.readings(device, {"time": t + 200 + i, "readings": {"pm25": 20 + i}})
        wait_until(lambda: _stored(dsn, device) == 8, 30, what="the batch-mates of the bad message")
        wait_until(lambda: count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s "
                                      "AND reason = 'storage_error'", (device,)) == 1, what="its storage_error")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings DROP CONSTRAINT IF EXISTS only_negative")
            conn.execute("ALTER TABLE readings DROP CONSTRAINT IF EXISTS not_666")
        pub.close()
        ing.stop()


def test_an_oversized_message_is_cut_at_receipt_and_recorded_once_with_its_length(workdir, stack):
    import hashlib

    cluster, broker = stack
    dsn = cluster.dsn
    device = unique("big")
    register_device(dsn, device)
    ing = start_ingestor(workdir, dsn, broker)
    pub = Publisher(broker)
    try:
        payload = b'{"readings": {"pm25": 1}, "pad": "' + b"x" * 200_000 + b'"}'
        for _ in range(2):
            pub.readings(device, payload)
        wait_until(lambda: count(dsn, "SELECT coalesce(sum(times), 0) FROM rejected_messages WHERE device_id = %s",
                                 (device,)) == 2, what="two receipts of one rejection")
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT reason, octet_length(payload), payload_bytes, digest FROM rejected_messages "
                               "WHERE device_id = %s", (device,)).fetchall()
        topic = f"city/v1/devices/{device}/readings".encode()
        assert row == [("too_large", 4096, len(payload), hashlib.sha256(topic + b"\0" + payload).digest())]
    finally:
        pub.close()
        ing.stop()


def test_qos0_messages_beyond_the_inbox_byte_budget_are_dropped_and_counted(workdir, stack):
    cluster, broker = stack
    dsn = cluster.dsn
    device = unique("q0")
    register_device(dsn, device)
    budget = 1 << 20
    # the pipeline's held batch is bounded too (batch bytes): here small, so the inbox budget is what fills
    ing = start_ingestor(workdir, dsn, broker, CITYSENSE_INGEST_INBOX_MAX_BYTES=budget,
                         CITYSENSE_INGEST_BATCH_MAX_BYTES=65536, CITYSENSE_INGEST_RETRY_MAX_S=1)
    pub = Publisher(broker)
    try:
        cluster.stop("immediate")  # the pipeline holds its batch; the inbox fills
        pad = "y" * 40_000
        for i in range(100):  # 4 MB at QoS 0
            pub.readings(device, {"time": time.time() - 60 + i / 100, "readings": {"pm25": i}, "pad": pad}, qos=0, wait=False)
        port = ing.metrics_port
        wait_until(lambda: metric_value(port, "citysense_ingest_messages_dropped_total", 'reason="inbox_full"') > 0,
                   what="QoS 0 drops")
        assert metric_value(port, "citysense_ingest_inbox_bytes") <= budget
        assert ing.alive()
    finally:
        cluster.start()
        pub.close()
        ing.stop()


def test_an_ingestor_whose_clock_is_ten_minutes_slow_still_takes_a_citys_live_readings(workdir, stack):
    """Its receipt times are corrected by its offset from the database's clock: without that, every live
    reading would be 600 s 'in the future' and rejected."""
    import glob

    cluster, broker = stack
    dsn = cluster.dsn
    device = unique("skew")
    register_device(dsn, device)
    lib = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")[0]
    ing = start_ingestor(workdir, dsn, broker,
                         process_env={"LD_PRELOAD": lib, "FAKETIME": "-10m", "DONT_FAKE_MONOTONIC": "1"})
    pub = Publisher(broker)
    try:
        assert metric_value(ing.metrics_port, "citysense_ingest_clock_offset_seconds") > 590
        for i in range(5):
            pub.readings(device, {"time": time.time() - i, "readings": {"pm25": 10 + i}})
        pub.readings(device, {"readings": {"pm25": 99}})  # no device time: stamped with the corrected clock
        wait_until(lambda: _stored(dsn, device) == 6, what="every live reading")
        newest = count(dsn, "SELECT extract(epoch FROM max(time))::bigint FROM readings r JOIN devices d "
                            "USING (device_key) WHERE d.device_id = %s", (device,))
        assert abs(newest - time.time()) < 30
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device,)) == 0
    finally:
        pub.close()
        ing.stop()


def test_two_ingestors_with_one_client_id_are_told_and_counted(workdir, stack):
    cluster, broker = stack
    same = unique("same-id")
    a = start_ingestor(workdir, cluster.dsn, broker, CITYSENSE_INGEST_CLIENT_ID=same)
    b = start_ingestor(workdir, cluster.dsn, broker, name=same + "-b", CITYSENSE_INGEST_CLIENT_ID=same)
    try:
        wait_until(lambda: metric_value(a.metrics_port, "citysense_ingest_session_takeovers_total")
                   + metric_value(b.metrics_port, "citysense_ingest_session_takeovers_total") >= 1, 40,
                   what="a takeover counted")
        assert "CITYSENSE_INGEST_CLIENT_ID" in a.log() + b.log()
        assert a.alive() and b.alive()
    finally:
        a.stop()
        b.stop()


def test_the_brokers_own_counters_are_exported(workdir, stack):
    cluster, broker = stack
    ing = start_ingestor(workdir, cluster.dsn, broker)
    try:
        wait_until(lambda: metric_value(ing.metrics_port, "citysense_broker", 'stat="clients_connected"') >= 1, 25,
                   what="the broker's $SYS counters")
        assert 'citysense_broker{stat="publish_messages_dropped"}' in httpx.get(
            f"http://127.0.0.1:{ing.metrics_port}/metrics").text
    finally:
        ing.stop()
