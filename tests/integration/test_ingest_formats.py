"""Every rejection reason, SenML, duplicates, device status and rollups, through the real broker,
ingestor and database."""

from __future__ import annotations

import json
import math
import time

import psycopg
import pytest

from tests.helpers import count, metric_value, register_device, unique, wait_until

NOW = time.time()


def rows(dsn, sql, params=()):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def rejections(dsn, device_id):
    return rows(dsn, "SELECT reason, detail FROM rejected_messages WHERE device_id = %s OR topic LIKE %s",
                (device_id, f"%/{device_id}/%"))


def readings_of(dsn, device_id):
    return rows(dsn, "SELECT m.metric, r.value, extract(epoch FROM r.time)::float8, r.flags FROM readings r "
                     "JOIN devices d USING (device_key) JOIN metrics m USING (metric_key) WHERE d.device_id = %s "
                     "ORDER BY r.time, m.metric", (device_id,))


CASES = [
    ("too_large", b'{"readings": {"pm25": 1}, "pad": "' + b"x" * 70000 + b'"}', None),
    ("not_utf8", b'{"readings": {"pm25": 1}}\xff', None),
    ("malformed_json", b'{"readings": {"pm25": 1}', None),
    ("bad_shape", b'{"values": {"pm25": 1}}', None),
    ("bad_senml", b'[{"n": "pm25", "v": 1, "must_": true}]', "application/senml+json"),
    ("bad_time", b'{"time": "last tuesday", "readings": {"pm25": 1}}', None),
    ("too_many_readings", json.dumps({"readings": {f"m{i}": 1 for i in range(2001)}}).encode(), None),
    ("unknown_metric", b'{"readings": {"radon": 3}}', None),
    ("wrong_type", b'{"readings": {"pm25": "12"}}', None),
    ("wrong_unit", b'[{"n": "pm25", "u": "furlong", "v": 3}]', None),
    ("non_finite", b'{"readings": {"pm25": NaN}}', None),
    ("non_finite", b'{"readings": {"pm25": 1e999}}', None),
    ("out_of_range", b'{"readings": {"humidity": 140}}', None),
    ("time_in_future", json.dumps({"time": NOW + 86400, "readings": {"pm25": 1}}).encode(), None),
    ("time_too_old", b'{"time": "1999-01-01T00:00:00Z", "readings": {"pm25": 1}}', None),
    ("topic_mismatch", b'{"device_id": "someone-else", "readings": {"pm25": 1}}', None),
    ("topic_mismatch", b'[{"bn": "urn:dev:mac:someone-else:", "n": "pm25", "v": 1}]', None),
]


@pytest.mark.parametrize("reason, payload, content_type", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rejection_reason_is_recorded_and_counted(dsn, publisher, ingestor, reason, payload, content_type):
    device_id = unique("rj")
    register_device(dsn, device_id)
    before = metric_value(ingestor.metrics_port, "citysense_ingest_rejections_total", f'reason="{reason}"')
    publisher.readings(device_id, payload, content_type=content_type)
    got = wait_until(lambda: rejections(dsn, device_id), what=f"a {reason} rejection")
    assert [r[0] for r in got] == [reason], got
    assert got[0][1]  # a detail a person can read
    assert readings_of(dsn, device_id) == []
    assert metric_value(ingestor.metrics_port, "citysense_ingest_rejections_total", f'reason="{reason}"') > before


def test_unknown_device_and_bad_topic(dsn, publisher, ingestor):
    ghost = unique("ghost")
    publisher.readings(ghost, {"readings": {"pm25": 1}})
    assert wait_until(lambda: rejections(dsn, ghost))[0][0] == "unknown_device"
    publisher.publish("city/v1/devices/bad id!/readings", b'{"readings": {"pm25": 1}}')
    got = wait_until(lambda: rows(dsn, "SELECT reason FROM rejected_messages WHERE topic = %s",
                                  ("city/v1/devices/bad id!/readings",)))
    assert got[0][0] == "bad_topic"


def test_one_bad_reading_does_not_sink_the_rest_of_the_message(dsn, publisher, ingestor):
    device_id = unique("mix")
    register_device(dsn, device_id)
    t = NOW - 10
    publisher.readings(device_id, b'{"time": %f, "readings": {"pm25": 8, "no2": NaN, "o3": 30, "radon": 1}}' % t)
    wait_until(lambda: len(readings_of(dsn, device_id)) == 2 and len(rejections(dsn, device_id)) == 2)
    assert [r[0] for r in readings_of(dsn, device_id)] == ["o3", "pm25"]
    assert sorted(r[0] for r in rejections(dsn, device_id)) == ["non_finite", "unknown_metric"]


def test_senml_pack_with_units_and_relative_times(dsn, publisher, ingestor):
    device_id = unique("sml")
    register_device(dsn, device_id, kind="weather")
    pack = [
        {"bn": f"urn:dev:id:{device_id}:", "bt": math.floor(NOW) - 120, "n": "temperature", "u": "Cel", "v": 21.5},
        {"n": "humidity", "u": "%RH", "v": 40},
        {"n": "temperature", "u": "K", "v": 295.15, "t": 60},
        {"n": "pm25", "u": "kg/m3", "v": 1.2e-8, "t": 60},
    ]
    publisher.readings(device_id, pack)  # recognised by its shape
    publisher.readings(device_id, [{"n": "rainfall", "u": "mm", "v": 0.4}], content_type="application/senml+json")
    got = wait_until(lambda: (r := readings_of(dsn, device_id)) and len(r) == 5 and r)
    values = {(m, round(t)): v for m, v, t, _ in got if m != "rainfall"}
    base = math.floor(NOW) - 120
    assert values[("temperature", base)] == 21.5
    assert values[("humidity", base)] == 40
    assert values[("temperature", base + 60)] == pytest.approx(22.0)
    assert values[("pm25", base + 60)] == pytest.approx(12.0)
    rain = [r for r in got if r[0] == "rainfall"][0]
    assert abs(rain[2] - time.time()) < 60  # no time: now, by SenML's rule


def test_duplicates_are_stored_once_and_counted(dsn, publisher, ingestor):
    device_id = unique("dup")
    register_device(dsn, device_id)
    before = metric_value(ingestor.metrics_port, "citysense_ingest_readings_duplicate_total")
    msg = {"time": NOW - 30, "readings": {"pm25": 5, "pm10": 9}}
    for _ in range(3):
        publisher.readings(device_id, msg)
    wait_until(lambda: metric_value(ingestor.metrics_port, "citysense_ingest_readings_duplicate_total") - before >= 4,
               what="4 duplicates counted")
    assert len(readings_of(dsn, device_id)) == 2
    assert count(dsn, "SELECT sum(count) FROM readings_hourly h JOIN devices d USING (device_key) WHERE device_id = %s",
                 (device_id,)) == 2


def test_status_topic_updates_the_device(dsn, publisher, ingestor, http):
    device_id = unique("st")
    register_device(dsn, device_id)
    publisher.publish(f"city/v1/devices/{device_id}/status", b"online", retain=True)
    wait_until(lambda: http.get(f"/v1/devices/{device_id}").json()["status"] == "online")
    # a status is what the device claims, not a report: it never makes a silent device look fresh
    assert http.get(f"/v1/devices/{device_id}").json()["last_seen"] is None
    publisher.publish(f"city/v1/devices/{device_id}/status", b'{"status": "offline"}', retain=True)
    wait_until(lambda: http.get(f"/v1/devices/{device_id}").json()["status"] == "offline")
    publisher.publish(f"city/v1/devices/{device_id}/status", b"asleep")
    assert wait_until(lambda: rejections(dsn, device_id))[0][0] == "bad_status"
    publisher.publish(f"city/v1/devices/{device_id}/status", b"", retain=True)  # clear the retained message


def test_rollups_equal_an_aggregate_recomputed_from_raw(dsn, publisher, ingestor):
    noise, air = unique("rn"), unique("ra")
    register_device(dsn, noise, kind="noise")
    register_device(dsn, air)
    hour = math.floor(NOW / 3600) * 3600 - 4 * 3600
    for i in range(60):  # 3 hours, every 3 minutes, with repeats
        t = hour + i * 180
        publisher.readings(noise, {"time": t, "readings": {"noise_laeq": 40 + (i * 7) % 45}}, wait=False)
        publisher.readings(air, {"time": t, "readings": {"pm25": (i * 3.7) % 50}}, wait=False)
        if i % 5 == 0:  # duplicates must not count twice
            publisher.readings(noise, {"time": t, "readings": {"noise_laeq": 40 + (i * 7) % 45}}, wait=False)
    publisher.readings(air, {"time": hour, "readings": {"pm25": 1}})
    # the rollups commit in the same transaction as the raw rows: once these are in, so are they
    wait_until(lambda: len(readings_of(dsn, noise)) == 60 and len(readings_of(dsn, air)) == 60)
    raw = rows(dsn, """
        SELECT d.device_id, time_bucket('1 hour', r.time) AS b, count(*), sum(value), min(value), max(value),
               10 * log(avg(power(10, value / 10)))
        FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2""",
               ([noise, air],))
    rolled = rows(dsn, """
        SELECT d.device_id, bucket, count, sum, min, max, 10 * log(energy / count)
        FROM readings_hourly h JOIN devices d USING (device_key) WHERE d.device_id = ANY(%s) ORDER BY 1, 2""",
                  ([noise, air],))
    assert len(raw) == len(rolled) >= 6
    for r, h in zip(raw, rolled):
        assert r[:3] == h[:3]
        assert r[3:6] == pytest.approx(h[3:6])
        if r[0] == noise:
            assert h[6] == pytest.approx(r[6])  # energy mean, in dB
            assert h[6] > r[3] / r[2]  # louder than the arithmetic mean of the levels, as energy means are
        else:
            assert h[6] is None
