"""The simulator against the real broker, ingestor and database: every injected fault is found in the
rejected messages with the right reason, every good reading is stored, and a simulated day has the
shape of a city's day."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest

from services.core.settings import Settings
from simulators import run as sim
from simulators.faults import FAULTS, FaultRates
from simulators.fleet import build_fleet, write_fleet
from tests.helpers import count, unique, wait_until

pytestmark = pytest.mark.slow


def settings_for(dsn, broker, api, tmp_path, **kw) -> Settings:
    """The simulator as `citysense up` runs it: it registers through the API, and each device connects with
    the credentials it was issued (over TLS, verified against the local CA)."""
    return Settings(mqtt_url=f"mqtts://127.0.0.1:{broker.tls_port}", mqtt_ca_file=broker.ca.ca_file,
                    sim_api_url=api.base_url, admin_token=api.token, sim_credentials_file=tmp_path / "creds.json", **kw)


def own_fleet(tmp_path, n, seed):
    path = tmp_path / "fleet.json"
    write_fleet(build_fleet(n, seed, prefix=unique("s")), path)
    return path, [d["device_id"] for d in json.loads(path.read_text())["devices"]]


def test_fault_injection_end_to_end(tmp_path, dsn, broker, ingestor, api):
    path, ids = own_fleet(tmp_path, 20, seed=3)
    record = tmp_path / "sent.jsonl"
    # 20 devices at 30 % silent: the chance that none is silent is 0.7**20, under 0.1 %
    rates = FaultRates({name: 0.06 for name in FAULTS}, silent=0.3)
    s = settings_for(dsn, broker, api, tmp_path, sim_devices=20, sim_seed=3)
    # outages too: at 0.5 s per device tick, 720 outages per device-hour drop one tick in ten; each
    # lasts 1-3 s, with the last will published, readings buffered, and a backlog sent on return
    assert sim.run(s, duration_s=10, rate=40, faults=rates, record=str(record), fleet_file=path,
                   outage_rate=720, outage_s=(1.0, 3.0), stop=threading.Event()) == 0
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    sent = [m for m in lines if "topic" in m]
    faults = Counter(m["fault"] for m in sent if m["fault"])
    assert set(faults) == set(FAULTS), faults  # every kind of fault was injected
    # a device publishing on another device's topic: the broker refused each (MQTT 5: Not authorized)
    assert lines[-1]["summary"]["refused_by_broker"] == faults["impersonation"] > 0
    assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE topic = ANY(%s)",
                 ([f"city/v1/devices/ghost-{d}/readings" for d in ids],)) == 0
    assert sum(m["backlog"] for m in sent) >= 3, "outages produced too few backlogs"
    expected_rejections = Counter(m["rejected"] for m in sent if m["rejected"])
    expected_readings = sum(len(m["stored"]) for m in sent)
    topics = sorted({m["topic"] for m in sent})

    def stored():
        return count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = ANY(%s)",
                     (ids,))

    def rejected():
        with psycopg.connect(dsn) as conn:
            return Counter(dict(conn.execute(
                "SELECT reason, count(*) FROM rejected_messages WHERE topic = ANY(%s) GROUP BY reason", (topics,)).fetchall()))

    wait_until(lambda: stored() == expected_readings and rejected() == expected_rejections, timeout=30,
               what=f"{expected_readings} readings and rejections {dict(expected_rejections)}")
    # silent devices sent nothing and show as silent
    silent = {d for d in ids if rates.is_silent(3, d)}
    assert silent and not silent & {m["device_id"] for m in sent}
    with psycopg.connect(dsn) as conn:
        seen = dict(conn.execute("SELECT device_id, last_seen FROM devices WHERE device_id = ANY(%s)", (ids,)).fetchall())
    assert all(seen[d] is None for d in silent)

    def statuses():
        with psycopg.connect(dsn) as conn:
            return dict(conn.execute("SELECT device_id, status FROM devices WHERE device_id = ANY(%s)", (ids,)).fetchall())
    # announced when the simulator stopped (status messages may trail the last readings a little)
    wait_until(lambda: all(statuses()[d] == "offline" for d in set(ids) - silent), what="every device offline")


def test_a_simulated_day_has_the_shape_of_a_city_day(tmp_path, dsn, broker, ingestor, http, api):
    path, ids = own_fleet(tmp_path, 20, seed=5)
    s = settings_for(dsn, broker, api, tmp_path, sim_devices=20, sim_seed=5)
    assert sim.run(s, duration_s=0, backfill_s=26 * 3600, fleet_file=path, stop=threading.Event()) == 0
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings_hourly h JOIN devices d USING (device_key) "
                                  "WHERE d.device_id = ANY(%s)", (ids,)) > 0, timeout=30)
    tz = ZoneInfo("America/New_York")
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=24)

    def hourly(metric):
        """The fleet's hourly means of a metric, as the API's aggregates give them per device."""
        params = {"metric": metric, "bucket": "1h", "group_by": "device", "start": start.isoformat(),
                  "end": end.isoformat(), "limit": 1000}
        items, cursor = [], None
        while True:
            page = http.get("/v1/aggregates", params={**params, **({"cursor": cursor} if cursor else {})}).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        by_hour: dict[int, list[float]] = {}
        for i in items:
            if i["group"] in ids:
                by_hour.setdefault(datetime.fromisoformat(i["bucket"]).astimezone(tz).hour, []).append(i["mean"])
        return {h: sum(v) / len(v) for h, v in by_hour.items()}

    wait_until(lambda: len(hourly("temperature")) == 24, timeout=60, what="24 hours of temperature")
    temp, hum, traffic, noise = hourly("temperature"), hourly("humidity"), hourly("traffic_count"), hourly("noise_laeq")
    assert 12 <= max(temp, key=temp.get) <= 18  # afternoon heat
    assert min(hum, key=hum.get) in range(11, 19)  # driest in the afternoon
    assert max(traffic[7], traffic[8], traffic[17], traffic[18]) > 2 * traffic[3]  # rush hours
    assert max(noise[8], noise[17]) > noise[3] + 6
    # and the API tells the same story: a valid AQI for the fleet's area, from a day of data
    aq = next(d for d in ids if "-aq-" in d)
    answer = http.get("/v1/qol/aqi", params={"device_id": aq}).json()
    assert answer["aqi"] is not None and answer["category"], answer


def test_load_mode_reports_the_rate_it_achieved(tmp_path, dsn, broker, ingestor, api):
    path, ids = own_fleet(tmp_path, 10, seed=9)
    s = settings_for(dsn, broker, api, tmp_path, sim_devices=10, sim_seed=9)
    result = sim.load(s, rate=300, duration_s=2, stop=threading.Event(), fleet_file=path)
    assert result["refused_by_broker"] == 0
    assert result["sent"] == pytest.approx(600, abs=2)
    assert 200 < result["achieved_msg_per_s"] <= 320
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) "
                                  "WHERE d.device_id = ANY(%s)", (ids,)) > 0)


def test_replay_a_csv(tmp_path, dsn, broker, ingestor, api):
    from tests.helpers import register_device

    device_id = unique("rp")
    register_device(dsn, device_id, kind="weather")
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    csv_path = tmp_path / "replay.csv"
    lines = ["time,device,metric,value"]
    for i in range(10):
        t = (t0 + timedelta(minutes=5 * i)).isoformat()
        lines += [f"{t},{device_id},temperature,{20 + i}", f"{t},{device_id},humidity,{50 + i}"]
    lines.append(f"{t0.isoformat()},{device_id},humidity,wet")  # a bad value: rejected with a reason
    csv_path.write_text("\n".join(lines) + "\n")
    # replay speaks for many devices: through a bridge account
    broker.control().add_bridge("replay-bridge", "replay-bridge-password-123")
    s = settings_for(dsn, broker, api, tmp_path, mqtt_username="replay-bridge", mqtt_password="replay-bridge-password-123")
    assert sim.replay(s, str(csv_path), stop=threading.Event()) == 0
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) "
                                  "WHERE d.device_id = %s", (device_id,)) == 20)
    wait_until(lambda: count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s AND reason = 'wrong_type'",
                             (device_id,)) == 1)
