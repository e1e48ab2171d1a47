"""PostgreSQL failover under load, with the real parts: the primary's postmaster is SIGKILLed while readings
stream over MQTT; Patroni promotes the synchronous standby; the ingestor and the API find the new primary by
themselves (libpq multi-host URLs with target_session_attrs). Nothing acknowledged is lost, nothing is stored
twice, and the API answers outside the failover window. The figures go to .citysense/ha-failover.json."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.helpers import REPO, Publisher, Service, count, metric_value, register_device, service_env, unique, wait_until

pytestmark = pytest.mark.ha
T0 = time.time() - 3600


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_killing_the_primary_loses_nothing_and_stores_nothing_twice(ha, workdir, broker):
    dsn = ha.dsn()
    devices = [unique("ha") for _ in range(5)]
    for d in devices:
        register_device(dsn, d)
    ingest = Service("ingest", service_env(dsn, broker, CITYSENSE_INGEST_RETRY_MAX_S=1), workdir / "ha-ingest.log").start()
    ingest.metrics_port = int(ingest.env["CITYSENSE_INGEST_METRICS_PORT"])
    env = service_env(dsn, broker, CITYSENSE_API_READ_DATABASE_URL=ha.dsn(attrs="prefer-standby"))
    api = Service("api", env, workdir / "ha-api.log").start()
    base = f"http://127.0.0.1:{env['CITYSENSE_API_PORT']}"
    wait_until(lambda: _ok(base + "/readyz"), 30, what="the API")
    wait_until(lambda: metric_value(ingest.metrics_port, "citysense_ingest_broker_connected") == 1, 30)

    n, rate = 3000, 150.0  # 20 s of readings, the primary killed a third of the way
    stop = threading.Event()
    answers: list[tuple[float, int]] = []
    progress: list[tuple[float, float]] = []

    def poll_api():
        while not stop.is_set():
            try:
                code = httpx.get(base + f"/v1/devices/{devices[0]}", timeout=2).status_code
            except httpx.HTTPError:
                code = 0
            answers.append((time.time(), code))
            time.sleep(0.1)

    def poll_ingest():
        while not stop.is_set():
            try:
                progress.append((time.time(), metric_value(ingest.metrics_port, "citysense_ingest_readings_stored_total")))
            except OSError:
                pass
            time.sleep(0.1)

    def publish():
        pub = Publisher(broker)
        infos = []
        for i in range(n):
            d = devices[i % len(devices)]
            infos.append(pub.readings(d, {"time": T0 + i * 0.01, "readings": {"pm25": 10 + i % 50, "no2": 20}}, wait=False))
            time.sleep(1 / rate)
        for info in infos:
            info.wait_for_publish(120)

    watchers = [threading.Thread(target=f, daemon=True) for f in (poll_api, poll_ingest)]
    for w in watchers:
        w.start()
    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    try:
        time.sleep(n / rate / 3)
        old = ha.primary()
        assert old is not None
        killed_at = time.time()
        os.kill(old.postmaster_pid(), signal.SIGKILL)
        new = wait_until(lambda: (p := ha.primary()) is not None and p is not old and p, 60, interval=0.1,
                         what="Patroni promoting the standby")
        promoted_at = time.time()
        sender.join(120)
        assert not sender.is_alive()
        expected = 2 * n
        wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) "
                                      "WHERE d.device_id = ANY(%s)", (devices,)) >= expected, 120, interval=0.5,
                   what="every reading on the new primary")
        time.sleep(2)  # anything still arriving (a redelivery) would show now
        stop.set()
        stored = count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = ANY(%s)",
                       (devices,))
        assert stored == expected  # each reading once: none lost, none twice
        assert count(dsn, "SELECT coalesce(sum(count), 0) FROM readings_hourly h JOIN devices d USING (device_key) "
                          "WHERE d.device_id = ANY(%s)", (devices,)) == expected  # and counted once in the rollups
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = ANY(%s)", (devices,)) == 0
        assert ingest.alive() and api.alive()  # both reconnected by themselves
        # the API answered before and after; its failures stayed within the failover window
        failures = [t for t, code in answers if code != 200]
        assert any(code == 200 and t > promoted_at for t, code in answers)
        assert all(killed_at - 1 <= t <= promoted_at + 15 for t in failures), (killed_at, promoted_at, failures[:5])
        # the longest the ingestor stored nothing while readings kept coming
        pause, last_t, last_v = 0.0, None, None
        for t, v in progress:
            if killed_at - 5 <= t and (last_v is None or v > last_v):
                if last_t is not None:
                    pause = max(pause, t - last_t)
                last_t, last_v = t, v
        figures = {"failover_s": round(promoted_at - killed_at, 2), "ingest_pause_s": round(pause, 2),
                   "api_failed_requests": len(failures), "api_requests": len(answers), "readings": expected,
                   "new_primary": new.name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        print(f"\nfailover: {figures}")
        out = REPO / ".citysense" / "ha-failover.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(figures, indent=1))
    finally:
        stop.set()
        ingest.stop()
        api.stop()
