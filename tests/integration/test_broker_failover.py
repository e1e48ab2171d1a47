"""The ingestor with a list of brokers (CITYSENSE_MQTT_URL=a,b): when its broker goes away it moves to the
next by itself and stores what devices send there. What it cannot do is said in docs/scale-out.md: each
broker keeps its own session, so what the first had queued waits there until the ingestor comes back."""

from __future__ import annotations

import time

import pytest

from services.launcher.stack import wait_for_port
from tests.conftest import make_broker
from tests.helpers import Publisher, Service, count, metric_value, register_device, service_env, unique, wait_until

pytestmark = pytest.mark.slow


def test_the_ingestor_moves_to_the_next_broker_of_its_list(workdir, dsn):
    a, b = make_broker(workdir, unique("mq-a")), make_broker(workdir, unique("mq-b"))
    client_id = unique("ingest")
    env = service_env(dsn, a, CITYSENSE_INGEST_CLIENT_ID=client_id,
                      CITYSENSE_MQTT_URL=f"mqtt://127.0.0.1:{a.port},mqtt://127.0.0.1:{b.port}")
    b.control().add_ingestor(client_id, env["CITYSENSE_MQTT_PASSWORD"])  # the same account on both brokers
    ing = Service("ingest", env, workdir / f"{client_id}.log").start()
    device = unique("fo")
    register_device(dsn, device)
    stored = lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) "  # noqa: E731
                                "WHERE d.device_id = %s", (device,))
    try:
        port = int(env["CITYSENSE_INGEST_METRICS_PORT"])
        wait_for_port("127.0.0.1", port, 30)
        wait_until(lambda: metric_value(port, "citysense_ingest_broker_connected") == 1, 30, what="connected to a")
        Publisher(a).readings(device, {"time": time.time() - 120, "readings": {"pm25": 1}})
        wait_until(lambda: stored() == 1, 20, what="the reading sent to broker a")
        a.stop()  # broker a goes away for good
        # the ingestor moves to b by itself. (b has no session of it until then: what devices sent to b before
        # it subscribed there reached no one. A cluster of brokers shares sessions; two lone brokers cannot.)
        wait_until(lambda: ing.log().count("connected to the broker (session present") == 2
                   and metric_value(port, "citysense_ingest_broker_connected") == 1, 30, what="the ingestor on broker b")
        Publisher(b).readings(device, {"time": time.time() - 60, "readings": {"pm25": 2}})
        wait_until(lambda: stored() == 2, 60, what="the reading sent to broker b, after the ingestor moved there")
        assert f"127.0.0.1:{b.port}" in ing.log() and ing.alive()
    finally:
        ing.stop()
        b.stop()
        a.stop()
