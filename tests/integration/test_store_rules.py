"""The store's rules on the shared tables, each against a real TimescaleDB (issue 10's correctness bugs:
each test here failed before its fix)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest

from services.store import rollups
from services.store.migrate import create_database, migrate
from services.store.ingest import STAGING_DDL, IngestStore
from services.store.model import Batch, Reading
from tests.helpers import count, metric_value, register_device, unique, wait_until

TZ = "America/New_York"


def _key(dsn: str, device_id: str) -> int:
    return count(dsn, "SELECT device_key FROM devices WHERE device_id = %s", (device_id,))


def _daily_vs_hourly(dsn: str, day, device_key: int) -> tuple[int, int]:
    """(count in the daily rollups, count in the hourly rollups) of the device's CSA on a local day."""
    with psycopg.connect(dsn) as conn:
        csa = conn.execute("SELECT csa FROM devices WHERE device_key = %s", (device_key,)).fetchone()[0]
        daily = conn.execute("SELECT coalesce(sum(count), 0) FROM readings_daily_csa WHERE day = %s AND csa = %s "
                             "AND metric_key = 1", (day, csa)).fetchone()[0]
        hourly = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM hourly_placed WHERE csa = %s AND metric_key = 1 "
            "AND bucket >= (%s::date::timestamp AT TIME ZONE %s) AND bucket < ((%s::date + 1)::timestamp AT TIME ZONE %s)",
            (csa, day, TZ, day, TZ)).fetchone()[0]
    return daily, hourly


def test_a_refresh_racing_a_writer_never_leaves_a_day_short(dsn):
    """The writer holds a day's mark (locked) until it commits; a refresh that claims the mark waits for it
    and recomputes with its rows. With ON CONFLICT DO NOTHING the refresh ran past the uncommitted rows and
    consumed the mark: the day stayed short for good."""
    device = unique("race")
    register_device(dsn, device)
    key = _key(dsn, device)
    t = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=15, minute=0, second=0, microsecond=0)
    day = t.astimezone(ZoneInfo(TZ)).date()
    store = IngestStore(dsn, TZ)
    try:
        store.write(Batch(readings=[Reading(key, 1, t.timestamp(), 10.0, 0)]))  # marks the day
        with psycopg.connect(dsn) as writer:  # an ingest transaction, held open
            writer.execute(STAGING_DDL)
            store._write(writer, Batch(readings=[Reading(key, 1, t.timestamp() + 60, 20.0, 0)]))
            done = []
            refresher = threading.Thread(target=lambda: done.append(
                rollups.refresh(psycopg.connect(dsn, autocommit=True), TZ, max_days=10_000)))
            refresher.start()
            time.sleep(1.0)  # the refresh claims the marks meanwhile (or waits on ours)
            writer.commit()
        refresher.join(30)
        while rollups.refresh(psycopg.connect(dsn, autocommit=True), TZ, max_days=10_000):
            pass
        assert _daily_vs_hourly(dsn, day, key)[0] == _daily_vs_hourly(dsn, day, key)[1] > 0
    finally:
        store.close()


@pytest.fixture
def quiet_dsn(pg) -> str:
    """A database of its own, where no ingestor or API runs the rollup job behind a test's back."""
    name = unique("quiet")
    create_database(pg.superuser_dsn, name)
    url = pg.dsn.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    return url


def test_writers_never_wait_for_a_refresh_recomputing_their_day(quiet_dsn):
    """The refresh recomputes without holding the marks: held up mid-way (here by a lock on the CSA table it
    is about to swap), an ingest batch marking the same day commits at once, its mark survives the refresh
    that did not see its rows, and the next refresh brings the day level. Before, the refresh took the marks
    first and every batch of the day queued behind the whole recompute (the ingest lag's p99 went to 1.8 s).
    On a database of its own: the session's ingestor refreshing the day first made the test fail (CI, once)."""
    dsn = quiet_dsn
    device = unique("nowait")
    register_device(dsn, device)
    key = _key(dsn, device)
    t = (datetime.now(timezone.utc) - timedelta(days=4)).replace(hour=15, minute=0, second=0, microsecond=0)
    day = t.astimezone(ZoneInfo(TZ)).date()
    store = IngestStore(dsn, TZ)
    try:
        store.write(Batch(readings=[Reading(key, 1, t.timestamp(), 10.0, 0)]))  # marks the day
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE readings_daily_csa IN ACCESS EXCLUSIVE MODE")
            done = []
            refresher = threading.Thread(target=lambda: done.append(
                rollups.refresh(psycopg.connect(dsn, autocommit=True), TZ, max_days=10_000)))
            refresher.start()
            time.sleep(1.0)  # the refresh has read the marks and waits for the table
            with psycopg.connect(dsn) as writer:
                writer.execute("SET lock_timeout = '3s'")
                writer.execute(STAGING_DDL)
                started = time.monotonic()
                store._write(writer, Batch(readings=[Reading(key, 1, t.timestamp() + 60, 20.0, 0)]))
                writer.commit()
                waited = time.monotonic() - started
            assert not done, "the refresh was not held up: the test proves nothing"
        refresher.join(30)
        assert done and waited < 1.0
        daily, hourly = _daily_vs_hourly(dsn, day, key)
        assert daily == hourly - 1  # the held-up refresh did not see the writer's reading…
        assert count(dsn, "SELECT count(*) FROM rollup_dirty_days WHERE day = %s", (day,)) == 1  # …and kept its mark
        while rollups.refresh(psycopg.connect(dsn, autocommit=True), TZ, max_days=10_000):
            pass
        daily, hourly = _daily_vs_hourly(dsn, day, key)
        assert daily == hourly > 0
    finally:
        store.close()


def _last_fall_back(tz: ZoneInfo) -> datetime:
    """Local midnight (as UTC) starting the most recent past day with 25 hours in ``tz``."""
    day = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        day -= timedelta(days=1)
        start = day.astimezone(timezone.utc)
        end = (day + timedelta(days=1)).replace(tzinfo=tz).astimezone(timezone.utc)
        if end - start == timedelta(hours=25):
            return start


def test_daily_figures_use_the_citys_local_day_including_a_25_hour_dst_day(http, dsn, ingestor):
    """The most recent day when Baltimore's clocks went back: 25 hours, from local midnight to local midnight.
    Written through the store (any age: the ingestor's 30-day window is not what this tests)."""
    tz = ZoneInfo(TZ)
    start = _last_fall_back(tz)
    device = unique("dst")
    register_device(dsn, device, lat=39.3290, lon=-76.6205)
    key = _key(dsn, device)
    store = IngestStore(dsn, TZ)
    try:
        store.write(Batch(readings=[Reading(key, 1, (start + timedelta(hours=h, minutes=1)).timestamp(), 10.0, 0)
                                    for h in range(25)]))
    finally:
        store.close()
    csa = http.get(f"/v1/devices/{device}").json()["csa"]
    first = start.isoformat().replace("+00:00", "Z")
    window = {"metric": "pm25", "bucket": "1d", "start": first, "end": (start + timedelta(hours=25)).isoformat()}

    def day_of(**params):
        items = http.get("/v1/aggregates", params={**window, **params}).json()["items"]
        return {(i["bucket"], i["group"]): i["count"] for i in items}

    # hourly source (by device): one bucket from local midnight, 25 hours long
    assert day_of(group_by="device", device_id=device) == {(first, device): 25}
    # daily rollups (by CSA, recomputed by the ingestor's housekeeping): the same local day
    wait_until(lambda: day_of(group_by="csa", csa=csa).get((first, csa), 0) >= 25, 30,
               what="the daily rollup of the DST day")


def test_a_redelivered_bad_message_is_recorded_once(publisher, dsn, ingestor):
    device = unique("rj")
    register_device(dsn, device)
    for _ in range(2):  # the same bytes twice, as a redelivery brings them
        publisher.readings(device, b'{"readings": {"pm25": "high"}}')
    wait_until(lambda: count(dsn, "SELECT coalesce(sum(times), 0) FROM rejected_messages WHERE device_id = %s",
                             (device,)) == 2)
    assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device,)) == 1


def test_a_device_reporting_every_second_never_flaps_to_silent(http, publisher, dsn, ingestor):
    device = unique("fast")
    register_device(dsn, device, interval_s=2)
    silent_seen = []
    for i in range(25):
        publisher.readings(device, {"readings": {"pm25": 5 + i}})
        if i > 2:
            rows = http.get("/v1/status/freshness", params={"kind": "air_quality"}).json()["items"]
            silent_seen += [s for r in rows for s in r["silent"] if s["device_id"] == device]
        time.sleep(1.0)
    assert silent_seen == []


def test_retired_device_keeps_its_history_and_its_new_readings_are_refused(http, admin, publisher, dsn, ingestor):
    device = unique("ret")
    register_device(dsn, device)
    t = time.time() - 600
    publisher.readings(device, {"time": t, "readings": {"pm25": 7.0}})
    wait_until(lambda: len(http.get("/v1/readings", params={"device_id": device}).json()["items"]) == 1)
    assert http.delete(f"/v1/devices/{device}", headers=admin).status_code == 200
    # The broker no longer takes the device's account (test_device_identity); a gateway publishing for it
    # is refused by the ingestor, at once: no registry delay
    publisher.readings(device, {"time": t + 60, "readings": {"pm25": 8.0}}, via_bridge=True)
    wait_until(lambda: count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s "
                                  "AND reason = 'unknown_device'", (device,)) == 1)
    assert [r["value"] for r in http.get("/v1/readings", params={"device_id": device}).json()["items"]] == [7.0]
    csv = http.get("/v1/datasets/readings.csv", params={"start": datetime.fromtimestamp(t - 60, timezone.utc).isoformat()})
    assert device in csv.text


def test_purged_then_registered_again_serves_only_the_new_devices_data_at_once(http, admin, publisher, dsn, ingestor):
    device = unique("again")
    body = {"device_id": device, "kind": "air_quality", "latitude": 39.2904, "longitude": -76.6122}
    assert http.post("/v1/devices", headers=admin, json=body).status_code == 201
    t = time.time() - 600
    publisher.readings(device, {"time": t, "readings": {"pm25": 1.0}})
    wait_until(lambda: len(http.get("/v1/readings", params={"device_id": device}).json()["items"]) == 1)
    purged = http.delete(f"/v1/devices/{device}", headers=admin, params={"purge": "true"}).json()
    assert purged["readings_deleted"] == 1 and purged["hourly_rollups_deleted"] == 1
    assert http.post("/v1/devices", headers=admin, json=body).status_code == 201
    assert http.get("/v1/readings", params={"device_id": device}).json()["items"] == []
    publisher.readings(device, {"time": t + 60, "readings": {"pm25": 2.0}})
    wait_until(lambda: [r["value"] for r in http.get("/v1/readings", params={"device_id": device}).json()["items"]] == [2.0],
               what="the new device's reading")
    assert count(dsn, "SELECT count(*) FROM readings r LEFT JOIN devices d USING (device_key) "
                      "WHERE d.device_key IS NULL") == 0  # no orphans


def test_a_device_that_moves_keeps_its_past_in_its_old_area(http, admin, publisher, dsn, ingestor):
    device = unique("mover")
    body = {"device_id": device, "kind": "air_quality", "latitude": 39.2904, "longitude": -76.6122}  # Downtown
    assert http.post("/v1/devices", headers=admin, json=body).status_code == 201
    old_csa = http.get(f"/v1/devices/{device}").json()["csa"]
    past = (datetime.now(timezone.utc) - timedelta(hours=5)).replace(minute=10, second=0, microsecond=0)
    publisher.readings(device, {"time": past.timestamp(), "readings": {"pm25": 30.0}})
    wait_until(lambda: len(http.get("/v1/readings", params={"device_id": device}).json()["items"]) == 1)
    moved = http.patch(f"/v1/devices/{device}", headers=admin, json={"latitude": 39.3481, "longitude": -76.5806})
    new_csa = moved.json()["csa"]
    assert new_csa != old_csa
    publisher.readings(device, {"time": time.time() + 1, "readings": {"pm25": 40.0}})  # taken after the move
    wait_until(lambda: len(http.get("/v1/readings", params={"device_id": device}).json()["items"]) == 2)
    # 5-minute buckets come from raw readings, each placed at its own time (hourly buckets are placed at
    # the hour's start: the hour of the move stays with the old area)
    params = {"metric": "pm25", "bucket": "5m", "start": (past - timedelta(hours=1)).isoformat(), "limit": 1000}

    def by_csa(csa):
        items = http.get("/v1/aggregates", params={**params, "csa": csa, "group_by": "device"}).json()["items"]
        return sorted(i["max"] for i in items if i["group"] == device)

    assert by_csa(old_csa) == [30.0] and by_csa(new_csa) == [40.0]


def test_a_conflicting_duplicate_is_recorded_with_both_values_and_an_identical_one_is_a_no_op(publisher, dsn, ingestor):
    device = unique("dup")
    register_device(dsn, device)
    t = time.time() - 300
    publisher.readings(device, {"time": t, "readings": {"pm25": 900.0, "pm10": 20.0}})
    publisher.readings(device, {"time": t, "readings": {"pm25": 900.0}})            # identical: a no-op
    publisher.readings(device, {"time": t, "readings": {"pm25": 5.0, "pm10": 20.0}})  # pm25 conflicts
    publisher.readings(device, [{"time": t + 60, "readings": {"o3": 1.0}},          # and within one message
                                {"time": t + 60, "readings": {"o3": 2.0}}])
    wait_until(lambda: count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s "
                                  "AND reason = 'conflicting_duplicate'", (device,)) == 2, what="two conflicts")
    with psycopg.connect(dsn) as conn:
        details = sorted(r[0] for r in conn.execute(
            "SELECT detail FROM rejected_messages WHERE device_id = %s ORDER BY received_at", (device,)))
        values = dict(conn.execute("SELECT m.metric, r.value FROM readings r JOIN devices d USING (device_key) "
                                   "JOIN metrics m USING (metric_key) WHERE d.device_id = %s", (device,)).fetchall())
    assert values == {"pm25": 900.0, "pm10": 20.0, "o3": 1.0}  # the first value stands
    assert any("pm25" in d and "sent 5, stored 900" in d for d in details)
    assert any("o3" in d and "sent 2, stored 1" in d for d in details)
    assert metric_value(ingestor.metrics_port, "citysense_ingest_readings_conflicting_total") >= 2
