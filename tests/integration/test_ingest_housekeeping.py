"""Retention, operator-facing metrics and log rate limiting."""

import logging
import time

import psycopg

from services.ingest.pipeline import RateLimitedLog
from services.store.ingest import Housekeeping, IngestStore
from tests.helpers import register_device, unique


def test_retention_drops_old_raw_chunks_and_keeps_rollups(dsn):
    device_id = unique("ret")
    register_device(dsn, device_id)
    with psycopg.connect(dsn) as conn:
        key = conn.execute("SELECT device_key FROM devices WHERE device_id = %s", (device_id,)).fetchone()[0]
        for days in (400, 2):
            conn.execute("INSERT INTO readings VALUES (now() - %s * interval '1 day', %s, 1, 5, 0)", (days, key))
            conn.execute("INSERT INTO readings_hourly VALUES (date_trunc('hour', now() - %s * interval '1 day'), %s, 1, 1, 5, 5, 5, NULL)",
                         (days, key))
        conn.execute("INSERT INTO rejected_messages (digest, reason, received_at, last_received_at, topic, device_id, "
                     "payload, payload_bytes, detail) VALUES ('\\x00', 'x', now() - interval '400 days', "
                     "now() - interval '400 days', 't', %s, '', 0, 'y')", (device_id,))
    store = IngestStore(dsn, "America/New_York")
    try:
        assert Housekeeping(store, "America/New_York").apply_retention(365, 365) >= 2
    finally:
        store.close()
    with psycopg.connect(dsn) as conn:
        raw = conn.execute("SELECT count(*) FROM readings WHERE device_key = %s", (key,)).fetchone()[0]
        rolled = conn.execute("SELECT count(*) FROM readings_hourly WHERE device_key = %s", (key,)).fetchone()[0]
        rejected = conn.execute("SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device_id,)).fetchone()[0]
    assert (raw, rolled, rejected) == (1, 2, 0)


def test_ingestor_metrics_are_complete_and_carry_no_device_ids(ingestor, publisher, dsn):
    import urllib.request

    device_id = unique("mx")
    register_device(dsn, device_id)
    publisher.readings(device_id, {"readings": {"pm25": 3}})
    time.sleep(0.5)
    text = urllib.request.urlopen(f"http://127.0.0.1:{ingestor.metrics_port}/metrics").read().decode()
    for name in ("messages_received_total", "readings_stored_total", "readings_duplicate_total", "rejections_total",
                 "batch_messages_bucket", "write_seconds_bucket", "lag_seconds_bucket", "inflight_messages",
                 "queued_messages", "broker_connected", "database_connected", "last_write_timestamp_seconds"):
        assert f"citysense_ingest_{name}" in text, name
    assert device_id not in text


def test_repeated_rejections_are_rate_limited_in_the_log(caplog):
    limiter = RateLimitedLog(interval_s=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            limiter.rejection("non_finite", "city/v1/devices/x/readings", "pm25: nan")
        limiter.rejection("wrong_type", "city/v1/devices/x/readings", "pm25: '1'")
    assert len(caplog.records) == 2


def test_retention_gives_up_on_a_lock_instead_of_stalling_behind_a_long_reader(dsn):
    """A long export holds the old chunk (AccessShareLock); drop_chunks would wait for it, and everything
    after it would queue behind: retention waits 5 s at most, then tries again next round."""
    from services.store.pool import TransientError

    device_id = unique("lock")
    register_device(dsn, device_id)
    with psycopg.connect(dsn) as conn:
        key = conn.execute("SELECT device_key FROM devices WHERE device_id = %s", (device_id,)).fetchone()[0]
        conn.execute("INSERT INTO readings VALUES (now() - interval '500 days', %s, 1, 5, 0)", (key,))
    store = IngestStore(dsn, "America/New_York")
    reader = psycopg.connect(dsn)
    try:
        reader.execute("SELECT count(*) FROM readings WHERE time < now() - interval '400 days'")  # holds the chunk
        started = time.monotonic()
        try:
            Housekeeping(store, "America/New_York").apply_retention(365, 365, lock_timeout_s=1.0)
            gave_up = False
        except TransientError:
            gave_up = True
        assert gave_up and time.monotonic() - started < 5
        reader.rollback()
        assert Housekeeping(store, "America/New_York").apply_retention(365, 365) >= 1
    finally:
        reader.close()
        store.close()
