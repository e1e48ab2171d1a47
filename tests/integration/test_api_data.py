"""Aggregates, areas, the metric catalogue and device administration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from services.api.qol import noise
from tests.helpers import count, unique, wait_until

HOUR = (datetime.now(timezone.utc) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
LATLON = {"latitude": 39.284, "longitude": -76.57637}  # the Canton CSA's reference point


def stored(dsn, device_id):
    return count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = %s",
                 (device_id,))


@pytest.fixture(scope="module")
def canton(http_module, admin_module, publisher_module, dsn, ingestor):
    """A traffic counter and a noise meter in Canton, with two hours of readings every 10 minutes."""
    ids = {}
    for kind in ("traffic", "noise"):
        ids[kind] = unique(kind[:2])
        r = http_module.post("/v1/devices", headers=admin_module, json={"device_id": ids[kind], "kind": kind, **LATLON})
        assert r.status_code == 201
    traffic, levels = [], []
    for i in range(12):
        t = (HOUR + timedelta(minutes=10 * i)).timestamp()
        traffic.append({"time": t, "readings": {"traffic_count": 10 * (i + 1)}})
        levels.append({"time": t, "readings": {"noise_laeq": 50 + 2 * i}})
    publisher_module.readings(ids["traffic"], traffic)
    publisher_module.readings(ids["noise"], levels)
    wait_until(lambda: stored(dsn, ids["traffic"]) == 12 and stored(dsn, ids["noise"]) == 12)
    return ids


def agg(http, **params):
    r = http.get("/v1/aggregates", params={"start": HOUR.isoformat(), "end": (HOUR + timedelta(hours=2)).isoformat(), **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_raw_reading_pages(http, canton):
    """A device's readings and a metric's (every device's) page through in time order, each reading once,
    with its device, metric and unit."""
    def pages(**params):
        items, cursor = [], None
        while True:
            r = http.get("/v1/readings", params={"start": HOUR.isoformat(), "end": (HOUR + timedelta(hours=2)).isoformat(),
                                                 "limit": 5, **params, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            items += r.json()["items"]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return items
    traffic = pages(device_id=canton["traffic"])
    assert [r["value"] for r in traffic] == [10.0 * (i + 1) for i in range(12)]
    assert {(r["device_id"], r["metric"], r["unit"], r["time_assumed"]) for r in traffic} == {
        (canton["traffic"], "traffic_count", "vehicles", False)}
    assert [r["time"] for r in traffic] == sorted(r["time"] for r in traffic)
    noisy = [r for r in pages(metric="noise_laeq") if r["device_id"] == canton["noise"]]
    assert [r["value"] for r in noisy] == [50.0 + 2 * i for i in range(12)]
    assert {(r["metric"], r["unit"]) for r in noisy} == {("noise_laeq", "dB(A)")}
    assert pages(device_id=canton["noise"], metric="traffic_count") == []


def test_hourly_traffic_sums_from_rollups(http, canton):
    r = agg(http, metric="traffic_count", bucket="1h", device_id=canton["traffic"])
    assert r["source"] == "hourly_rollups" and r["unit"] == "vehicles"
    first, second = r["items"]
    assert (first["count"], first["sum"], first["min"], first["max"]) == (6, 210, 10, 60)
    assert second["sum"] == 570 and second["mean"] == 95
    assert datetime.fromisoformat(first["bucket"]) == HOUR


def test_noise_averages_as_energy_on_both_paths(http, canton):
    levels = [50 + 2 * i for i in range(6)]
    hourly = agg(http, metric="noise_laeq", bucket="1h", device_id=canton["noise"])["items"][0]
    raw = agg(http, metric="noise_laeq", bucket="30m", device_id=canton["noise"])
    assert raw["source"] == "raw"
    assert hourly["mean"] == pytest.approx(noise.leq(levels))
    assert hourly["sum"] is None
    assert raw["items"][0]["mean"] == pytest.approx(noise.leq(levels[:3]))


def test_rollups_and_raw_agree_for_whole_hours(http, canton):
    hourly = agg(http, metric="traffic_count", bucket="1h", csa="Canton", group_by="device")["items"]
    quarter = agg(http, metric="traffic_count", bucket="15m", csa="Canton", group_by="device")["items"]
    mine = lambda items: [i for i in items if i["group"] == canton["traffic"]]  # noqa: E731
    assert sum(i["sum"] for i in mine(hourly)) == sum(i["sum"] for i in mine(quarter)) == 780


def test_city_wide_buckets_agree_with_the_areas_and_the_kinds(http, canton):
    """The city as a whole is read without the placement and device joins (raw and hourly paths): the
    same totals as every CSA's rows, and as the city's rows of one device kind (which joins the devices)."""
    total = lambda r: sum(i["sum"] for i in r["items"])  # noqa: E731
    for bucket in ("15m", "3h"):
        city = agg(http, metric="traffic_count", bucket=bucket)
        by_csa = agg(http, metric="traffic_count", bucket=bucket, group_by="csa", limit=1000)
        typed = agg(http, metric="traffic_count", bucket=bucket, kind="traffic")
        assert typed["source"] in ("raw", "hourly_rollups")
        assert total(city) == total(by_csa) == total(typed) >= 780, bucket
    assert agg(http, metric="traffic_count", bucket="15m", kind="weather")["items"] == []


def test_aggregate_answers_are_what_their_model_would_write(http, canton):
    """Aggregates are serialised from the database's rows without a second validation: from every source, the
    answer is byte for byte what the response model writes after validating it (types, order, nulls)."""
    from services.api.schemas import AggregatePage

    window = {"start": HOUR.isoformat(), "end": (HOUR + timedelta(hours=2)).isoformat()}
    # whole days come from the daily rollups, which the ingestor's housekeeping computes in the background
    wait_until(lambda: agg(http, metric="traffic_count", bucket="1d", group_by="csa")["items"], what="the daily rollup",
               timeout=30)
    sources = set()
    for params in ({"metric": "traffic_count", "bucket": "1d", "group_by": "csa"},
                   {"metric": "noise_laeq", "bucket": "1h"},
                   {"metric": "noise_laeq", "bucket": "1h", "csa": "Canton", "group_by": "csa"},
                   {"metric": "traffic_count", "bucket": "1h", "device_id": canton["traffic"]},
                   {"metric": "noise_laeq", "bucket": "15m", "csa": "Canton", "group_by": "device", "limit": 3},
                   {"metric": "traffic_count", "bucket": "30m", "kind": "traffic"}):
        r = http.get("/v1/aggregates", params={**window, **params})
        assert r.status_code == 200, r.text
        page = AggregatePage.model_validate_json(r.content)
        assert page.items and r.content == page.model_dump_json().encode(), params
        sources.add(page.source)
    assert sources == {"daily_rollups", "city_hourly_rollups", "csa_hourly_rollups", "hourly_rollups", "raw"}


def test_daily_rollups_by_csa_agree_with_the_hourly_path(http, canton):
    hourly = agg(http, metric="traffic_count", bucket="1h", group_by="csa", csa="Canton")
    total = sum(i["sum"] for i in hourly["items"])
    # (the two hours cross local midnight when the suite runs at 04:00–05:59 UTC: then they span two days)
    daily = wait_until(lambda: (r := agg(http, metric="traffic_count", bucket="1d", group_by="csa", csa="Canton"))
                       and sum(i["sum"] for i in r["items"]) == total and r, what="the daily rollup", timeout=30)
    assert daily["source"] == "daily_rollups" and hourly["source"] == "csa_hourly_rollups"
    assert {i["group"] for i in daily["items"]} == {"Canton"} and 1 <= len(daily["items"]) <= 2
    assert sum(i["count"] for i in daily["items"]) == sum(i["count"] for i in hourly["items"])
    by_device = agg(http, metric="traffic_count", bucket="1d", group_by="device", csa="Canton")
    assert by_device["source"] == "hourly_rollups"


def test_hourly_csa_rollups_answer_exactly_before_and_after_the_rollup_job(http, canton, dsn):
    def per_hour(**params):
        r = agg(http, metric="traffic_count", bucket="1h", **params)
        out: dict[datetime, float] = {}
        for i in r["items"]:
            b = datetime.fromisoformat(i["bucket"])
            out[b] = out.get(b, 0) + i["sum"]
        return r["source"], out

    source, by_device = per_hour(group_by="device", csa="Canton")
    assert source == "hourly_rollups" and sum(by_device.values()) >= 780
    # at once (the day still marked for the rollup job) and after the job: the same hours as device by device
    assert per_hour(group_by="csa", csa="Canton") == ("csa_hourly_rollups", by_device)
    day = "(%s::timestamptz AT TIME ZONE 'America/New_York')::date"
    marked = f"SELECT count(*) FROM rollup_dirty_days WHERE day IN ({day}, {day} + 1)"
    wait_until(lambda: count(dsn, marked, (HOUR, HOUR)) == 0, what="the rollup job", timeout=60)
    assert per_hour(group_by="csa", csa="Canton") == ("csa_hourly_rollups", by_device)
    source, city = per_hour(group_by="city")
    assert source == "city_hourly_rollups" and all(city[b] >= v for b, v in by_device.items())
    # the answer really comes from the CSA rows for a day the job has done, and from the device rows for a
    # day still marked: doctor the CSA rows, then mark the day
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE readings_hourly_csa SET sum = sum + 1000 WHERE csa = 'Canton' AND bucket = %s", (HOUR,))
        conn.execute("UPDATE readings_hourly_city SET sum = sum + 2000 WHERE bucket = %s", (HOUR,))
        assert per_hour(group_by="csa", csa="Canton")[1][HOUR] == by_device[HOUR] + 1000
        assert per_hour(group_by="city")[1][HOUR] == city[HOUR] + 2000
        conn.execute(f"INSERT INTO rollup_dirty_days (day) VALUES ({day}) ON CONFLICT DO NOTHING", (HOUR,))
        assert per_hour(group_by="csa", csa="Canton")[1] == by_device  # (the job will recompute it)
        assert per_hour(group_by="city")[1][HOUR] == city[HOUR]
    wait_until(lambda: count(dsn, marked, (HOUR, HOUR)) == 0, what="the rollup job", timeout=60)
    assert per_hour(group_by="csa", csa="Canton")[1] == by_device
    assert per_hour(group_by="city")[1][HOUR] == city[HOUR]


def test_grouping_and_grid(http, canton):
    r = agg(http, metric="traffic_count", bucket="1d", group_by="device", csa="Canton")
    assert datetime.fromisoformat(r["start"]) <= HOUR < datetime.fromisoformat(r["end"])
    assert canton["traffic"] in [i["group"] for i in r["items"]]
    city = agg(http, metric="traffic_count", bucket="2h")
    assert all(i["group"] == "city" for i in city["items"])


def test_aggregate_pagination(http, canton):
    seen, cursor = [], None
    while True:
        params = {"metric": "noise_laeq", "bucket": "10m", "device_id": canton["noise"], "limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = agg(http, **params)
        seen += [i["bucket"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 12 == len(set(seen))


@pytest.mark.parametrize("params, status", [
    ({"metric": "radon"}, 404), ({"metric": "pm25", "bucket": "3w"}, 422), ({"metric": "pm25", "bucket": "0m"}, 422),
    ({"metric": "pm25", "bucket": "5m", "start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}, 422),
    ({"metric": "pm25", "bucket": "1d", "start": "2010-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}, 422),
    ({"metric": "pm25", "group_by": "planet"}, 422), ({}, 422), ({"metric": "pm25", "csa": "Atlantis"}, 404),
])
def test_bad_aggregate_requests(http, params, status):
    assert http.get("/v1/aggregates", params=params).status_code == status


def test_metrics_catalogue(http):
    items = {m["metric"]: m for m in http.get("/v1/metrics").json()["items"]}
    assert len(items) == 12
    assert items["noise_laeq"]["aggregation"] == "energy" and items["rainfall"]["aggregation"] == "sum"
    assert items["pm25"] == {"metric": "pm25", "unit": "µg/m³", "description": "Fine particulate matter (PM2.5)",
                             "min_value": 0, "max_value": 1000, "aggregation": "mean"}


def test_areas(http, canton):
    csas, cursor = [], None
    while True:
        page = http.get("/v1/areas", params={"level": "csa", "limit": 20, **({"cursor": cursor} if cursor else {})}).json()
        csas += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(csas) == 55
    canton_row = next(a for a in csas if a["name"] == "Canton")
    assert canton_row["devices_by_kind"]["traffic"] >= 1 and canton_row["geometry"] is None
    hoods = http.get("/v1/areas", params={"level": "neighbourhood", "limit": 1000, "geometry": "true"}).json()["items"]
    assert len(hoods) == 278
    assert hoods[0]["geometry"]["type"] in ("Polygon", "MultiPolygon") and hoods[0]["csa"]


def test_patch_moves_a_device_delete_retires_it_and_purge_removes_it(http, admin, dsn):
    device_id = unique("mv")
    assert http.post("/v1/devices", headers=admin, json={"device_id": device_id, "kind": "weather", **LATLON}).status_code == 201
    r = http.patch(f"/v1/devices/{device_id}", headers=admin, json={"latitude": 39.2904, "longitude": -76.6122,
                                                                    "metadata": {"firmware": "2.1"}})
    assert r.status_code == 200, r.text
    assert (r.json()["neighbourhood"], r.json()["metadata"]) == ("Downtown", {"firmware": "2.1"})
    assert http.patch(f"/v1/devices/{device_id}", headers=admin, json={"latitude": 40.0}).status_code == 422
    assert http.patch(f"/v1/devices/{device_id}", headers=admin, json={"kind": None}).status_code == 422
    assert http.patch(f"/v1/devices/{device_id}", json={"interval_s": 5}).status_code == 401
    assert http.delete(f"/v1/devices/{device_id}").status_code == 401
    retired = http.delete(f"/v1/devices/{device_id}", headers=admin)
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None
    assert http.get(f"/v1/devices/{device_id}").json()["retired_at"] is not None  # it stays, with its history
    listed = {d["device_id"] for d in http.get("/v1/devices", params={"limit": 1000}).json()["items"]}
    assert device_id not in listed
    assert http.post("/v1/devices", headers=admin, json={"device_id": device_id, "kind": "weather", **LATLON}).status_code == 409
    purged = http.delete(f"/v1/devices/{device_id}", headers=admin, params={"purge": "true"})
    assert purged.status_code == 200 and purged.json() == {"device_id": device_id, "readings_deleted": 0,
                                                           "hourly_rollups_deleted": 0}
    assert http.get(f"/v1/devices/{device_id}").status_code == 404
    assert http.delete(f"/v1/devices/{device_id}", headers=admin).status_code == 404
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM devices WHERE device_id = %s", (device_id,)).fetchone()[0] == 0


@pytest.mark.parametrize("size", [timedelta(minutes=1), timedelta(minutes=15), timedelta(minutes=7), timedelta(hours=1),
                                  timedelta(hours=5), timedelta(hours=30)])
def test_the_grid_drawn_in_python_is_time_buckets_grid(dsn, size):
    """Sub-day buckets' grid is computed without the database: it must be exactly time_bucket()'s."""
    from services.store.aggregates import utc_grid

    start = datetime(2026, 3, 8, 6, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5)))
    with psycopg.connect(dsn) as conn:
        for k in range(40):
            s = start + k * timedelta(minutes=37, seconds=11)
            e = s + k * timedelta(hours=3, minutes=1)
            if e <= s:
                e = s + timedelta(seconds=1)
            want = conn.execute("SELECT time_bucket(%(b)s, %(s)s::timestamptz), "
                                "time_bucket(%(b)s, %(e)s::timestamptz - interval '1 microsecond') + %(b)s",
                                {"b": size, "s": s, "e": e}).fetchone()
            assert utc_grid(size, s, e) == tuple(want), (size, s, e)
