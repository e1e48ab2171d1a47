"""The ingestor under failure, with the real services: nothing acknowledged is lost, nothing is stored
twice, whatever happens to the database, the broker or the ingestor itself."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import make_broker, make_cluster
from tests.helpers import Publisher, Service, count, metric_value, register_device, service_env, unique, wait_until

pytestmark = pytest.mark.slow
T0 = time.time() - 3600  # all stream readings fall within the last hour


def stream(broker, devices: list[str], n: int, rate: float | None = None, timeless: bool = False) -> threading.Thread:
    """Publish ``n`` messages round-robin over ``devices`` (2 readings each, unique times; ``timeless``:
    no time, each payload unique) at QoS 1, in a thread; every publish is confirmed by the broker before the
    thread ends."""
    def run():
        pub = Publisher(broker)
        infos = []
        for i in range(n):
            d = devices[i % len(devices)]
            doc = {"readings": {"pm25": i / 10, "no2": 20}} if timeless else \
                {"time": T0 + i * 0.001, "readings": {"pm25": 10 + i % 50, "no2": 20}}
            infos.append(pub.readings(d, doc, wait=False))
            if rate:
                time.sleep(1 / rate)
        for info in infos:
            info.wait_for_publish(60)
        pub.close()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def stored(dsn: str, devices: list[str]) -> int:
    return count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = ANY(%s)",
                 (devices,))


def rollup_total(dsn: str, devices: list[str]) -> int:
    return count(dsn, "SELECT coalesce(sum(count), 0) FROM readings_hourly h JOIN devices d USING (device_key) "
                      "WHERE d.device_id = ANY(%s)", (devices,))


def fleet(dsn: str, n: int = 5) -> list[str]:
    ids = [unique("rel") for _ in range(n)]
    for d in ids:
        register_device(dsn, d)
    return ids


def start_ingestor(workdir, dsn, broker, name=None, process_env: dict | None = None, **extra) -> Service:
    """An ingestor with these settings (``extra``, CITYSENSE_ added) and process variables (``process_env``)."""
    env = {**service_env(dsn, broker, **extra), **(process_env or {})}
    svc = Service("ingest", env, workdir / f"{name or env['CITYSENSE_INGEST_CLIENT_ID']}.log").start()
    svc.env = env
    svc.metrics_port = int(env["CITYSENSE_INGEST_METRICS_PORT"])
    wait_until(lambda: _metrics_up(svc), 30, what="the ingestor's metrics endpoint")
    return svc


def _metrics_up(svc) -> bool:
    try:
        return metric_value(svc.metrics_port, "citysense_ingest_broker_connected") == 1
    except OSError:
        return False


@pytest.fixture
def own_broker(workdir):
    b = make_broker(workdir, unique("mq"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def own_pg(workdir):
    cluster = make_cluster(workdir, "pg-restart")
    yield cluster
    cluster.stop("immediate")


def test_database_restart_mid_stream_loses_nothing(workdir, own_pg, own_broker):
    dsn = own_pg.dsn
    devices = fleet(dsn)
    ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_RETRY_MAX_S=1, CITYSENSE_INGEST_INFLIGHT=300)
    try:
        n = 3000
        th = stream(own_broker, devices, n, rate=1000)
        wait_until(lambda: stored(dsn, devices) > 0, what="the first readings")
        own_pg.stop("immediate")  # as a crash: no shutdown checkpoint
        time.sleep(3)
        assert ing.alive()
        assert metric_value(ing.metrics_port, "citysense_ingest_database_connected") == 0
        # back-pressure: the ingestor holds no more than its in-flight window; the broker keeps the rest
        inflight = metric_value(ing.metrics_port, "citysense_ingest_inflight_messages")
        assert 0 < inflight <= 300
        own_pg.start()
        th.join(60)
        wait_until(lambda: stored(dsn, devices) == 2 * n, timeout=60, what=f"{2 * n} readings")
        assert rollup_total(dsn, devices) == 2 * n
        assert metric_value(ing.metrics_port, "citysense_ingest_write_retries_total") > 0
        assert ing.alive()
    finally:
        ing.stop()


@pytest.mark.parametrize("timeless", [False, True], ids=["device-time", "no-device-time"])
def test_sigkill_mid_stream_then_restart_loses_nothing_and_stores_nothing_twice(workdir, dsn, own_broker, timeless):
    """Readings without a device time take their delivery time; a copy redelivered after the SIGKILL takes
    its first delivery's time (found by the message's receipt), so it is not stored a second time either."""
    devices = fleet(dsn)
    client_id = unique("ingest")
    ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_CLIENT_ID=client_id)
    n = 4000
    th = stream(own_broker, devices, n, timeless=timeless)
    wait_until(lambda: stored(dsn, devices) > 500, what="some readings")
    ing.kill()
    th.join(60)
    assert stored(dsn, devices) < 2 * n  # it really died mid-stream
    ing = start_ingestor(workdir, dsn, own_broker, name=client_id + "-2", CITYSENSE_INGEST_CLIENT_ID=client_id)
    try:
        wait_until(lambda: stored(dsn, devices) == 2 * n, timeout=60, what=f"{2 * n} readings")
        time.sleep(0.5)
        assert stored(dsn, devices) == 2 * n
        # redelivered messages were counted as duplicates and did not count twice in the rollups
        assert rollup_total(dsn, devices) == 2 * n
    finally:
        ing.stop()


def test_sigterm_flushes_acknowledges_and_exits_zero(workdir, dsn, own_broker):
    devices = fleet(dsn)
    client_id = unique("ingest")
    ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_CLIENT_ID=client_id)
    n = 3000
    th = stream(own_broker, devices, n, rate=2000)
    wait_until(lambda: stored(dsn, devices) > 200, what="some readings")
    assert ing.terminate() == 0
    assert "acknowledged" in ing.log()
    received = [line for line in ing.log().splitlines() if "pipeline stopped" in line][-1]
    # everything it had received was written and acknowledged before it left
    got, acked = [int(w) for w in received.split('"msg": "pipeline stopped: ')[1].replace(",", "").split() if w.isdigit()]
    assert got == acked
    th.join(60)
    ing2 = start_ingestor(workdir, dsn, own_broker, name=client_id + "-2", CITYSENSE_INGEST_CLIENT_ID=client_id)
    try:
        wait_until(lambda: stored(dsn, devices) == 2 * n, timeout=60, what=f"{2 * n} readings")
        got2 = metric_value(ing2.metrics_port, "citysense_ingest_messages_received_total", 'channel="readings"')
        assert metric_value(ing2.metrics_port, "citysense_ingest_readings_duplicate_total") == 0, (got, got2, n)
    finally:
        ing2.stop()


def test_broker_restart_reconnects_and_resubscribes(workdir, dsn, own_broker):
    devices = fleet(dsn, 1)
    ing = start_ingestor(workdir, dsn, own_broker)
    try:
        pub = Publisher(own_broker)
        pub.readings(devices[0], {"time": T0, "readings": {"pm25": 1}})
        pub.close()
        wait_until(lambda: stored(dsn, devices) == 1, what="the first reading")
        own_broker.stop()
        wait_until(lambda: metric_value(ing.metrics_port, "citysense_ingest_broker_connected") == 0, what="disconnect")
        own_broker.start()
        wait_until(lambda: metric_value(ing.metrics_port, "citysense_ingest_broker_connected") == 1, timeout=30,
                   what="reconnect")
        pub = Publisher(own_broker)
        pub.readings(devices[0], {"time": T0 + 1, "readings": {"pm25": 2}})
        pub.close()
        wait_until(lambda: stored(dsn, devices) == 2, what="a reading after the restart")
    finally:
        ing.stop()


def test_messages_queued_while_the_ingestor_is_down_arrive_after_restart(workdir, dsn, own_broker):
    """The persistent session: the broker holds messages for the stopped ingestor."""
    devices = fleet(dsn)
    client_id = unique("ingest")
    ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_CLIENT_ID=client_id)
    assert ing.terminate() == 0
    stream(own_broker, devices, 2500).join(60)  # more than Mosquitto's default queue of 1000
    ing = start_ingestor(workdir, dsn, own_broker, name=client_id + "-2", CITYSENSE_INGEST_CLIENT_ID=client_id)
    try:
        wait_until(lambda: stored(dsn, devices) == 5000, timeout=60, what="5000 readings")
    finally:
        ing.stop()


def test_two_ingestors_on_a_shared_subscription_store_each_reading_once(workdir, dsn, own_broker):
    devices = fleet(dsn, 20)
    group = unique("g")
    a = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_SHARE_GROUP=group)
    b = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_SHARE_GROUP=group)
    try:
        n = 3000
        stream(own_broker, devices, n).join(60)
        wait_until(lambda: stored(dsn, devices) == 2 * n, timeout=60, what=f"{2 * n} readings")
        got = [metric_value(s.metrics_port, "citysense_ingest_messages_received_total", 'channel="readings"') for s in (a, b)]
        assert sum(got) == n and min(got) > 0, got  # split between them, each message to one of them
        dups = sum(metric_value(s.metrics_port, "citysense_ingest_readings_duplicate_total") for s in (a, b))
        assert dups == 0
        assert rollup_total(dsn, devices) == 2 * n
    finally:
        a.stop()
        b.stop()


def test_batches_are_not_capped_by_the_brokers_default_inflight_window(workdir, dsn, own_broker):
    devices = fleet(dsn)
    ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_BATCH_AGE_MS=1000)
    try:
        assert ing.terminate() == 0  # leave a backlog for it to find on restart
        stream(own_broker, devices, 2000).join(60)
        ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_BATCH_AGE_MS=1000,
                             CITYSENSE_INGEST_CLIENT_ID=ing.env["CITYSENSE_INGEST_CLIENT_ID"],
                             CITYSENSE_INGEST_METRICS_PORT=ing.env["CITYSENSE_INGEST_METRICS_PORT"])
        wait_until(lambda: stored(dsn, devices) == 4000, timeout=60, what="4000 readings")
        batches = metric_value(ing.metrics_port, "citysense_ingest_batch_messages_count")
        small = metric_value(ing.metrics_port, "citysense_ingest_batch_messages_bucket", 'le="50.0"')
        assert batches < 2000 / 20  # far fewer batches than 20-message windows would need
        assert small < batches  # some batch held more than 50 messages
    finally:
        ing.stop()


def test_retained_messages_are_not_replayed_on_reconnect_and_statuses_do_not_refresh_last_seen(workdir, dsn, own_broker):
    device = fleet(dsn, 1)[0]
    client_id = unique("ingest")
    ing = start_ingestor(workdir, dsn, own_broker, CITYSENSE_INGEST_CLIENT_ID=client_id)
    pub = Publisher(own_broker)
    try:
        pub.readings(device, {"readings": {"pm25": 42.42}}, retain=True)
        pub.publish(f"city/v1/devices/{device}/status", "online", retain=True)
        wait_until(lambda: stored(dsn, [device]) == 1, what="the live reading")
        wait_until(lambda: count(dsn, "SELECT count(*) FROM devices WHERE device_id = %s AND status = 'online'",
                                 (device,)) == 1, what="the status")
        seen = count(dsn, "SELECT extract(epoch FROM last_seen)::bigint FROM devices WHERE device_id = %s", (device,))
        for _ in range(2):  # restarts: a retained message came back on every resubscribe before
            assert ing.terminate() == 0
            ing = start_ingestor(workdir, dsn, own_broker, name=unique("r"), CITYSENSE_INGEST_CLIENT_ID=client_id)
            time.sleep(1.5)
        assert stored(dsn, [device]) == 1
        assert count(dsn, "SELECT extract(epoch FROM last_seen)::bigint FROM devices WHERE device_id = %s",
                     (device,)) == seen
    finally:
        pub.publish(f"city/v1/devices/{device}/readings", b"", retain=True)  # clear the retained messages
        pub.publish(f"city/v1/devices/{device}/status", b"", retain=True)
        pub.close()
        ing.stop()
