"""A device is registered through the API, publishes over MQTT, and its reading comes back through the API."""

from datetime import datetime, timedelta, timezone

from tests.helpers import count, unique, wait_until


def test_reading_published_over_mqtt_is_served_by_the_api(http, admin, publisher, ingestor, dsn):
    device_id = unique("aq")
    r = http.post("/v1/devices", headers=admin, json={
        "device_id": device_id, "kind": "air_quality", "latitude": 39.2904, "longitude": -76.6122})
    assert r.status_code == 201, r.text
    assert r.json()["neighbourhood"] == "Downtown"
    assert r.json()["csa"] == "Downtown/Seton Hill"

    t = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
    publisher.readings(device_id, {"time": t.isoformat().replace("+00:00", "Z"),
                                   "readings": {"pm25": 12.4, "no2": 21}})

    def served():
        items = http.get("/v1/readings", params={"device_id": device_id}).json()["items"]
        return items if len(items) == 2 else None

    items = wait_until(served, what="the readings in the API")
    by_metric = {i["metric"]: i for i in items}
    assert by_metric["pm25"]["value"] == 12.4
    assert by_metric["pm25"]["unit"] == "µg/m³"
    assert by_metric["no2"]["value"] == 21
    assert datetime.fromisoformat(by_metric["pm25"]["time"]) == t
    assert by_metric["pm25"]["time_assumed"] is False
    device = http.get(f"/v1/devices/{device_id}").json()
    assert datetime.fromisoformat(device["last_seen"]) == t


def test_backlog_list_and_missing_time(http, admin, publisher, ingestor, dsn):
    device_id = unique("nz")
    assert http.post("/v1/devices", headers=admin, json={
        "device_id": device_id, "kind": "noise", "latitude": 39.33, "longitude": -76.62}).status_code == 201
    now = datetime.now(timezone.utc).replace(microsecond=0)
    backlog = [{"time": (now - timedelta(minutes=m)).isoformat(), "readings": {"noise_laeq": 50 + m}} for m in range(1, 6)]
    publisher.readings(device_id, backlog)
    publisher.readings(device_id, {"readings": {"noise_laeq": 61.5}})
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = %s",
                             (device_id,)) == 6, what="six readings")
    items = http.get("/v1/readings", params={"device_id": device_id, "metric": "noise_laeq"}).json()["items"]
    assumed = [i for i in items if i["time_assumed"]]
    assert len(assumed) == 1 and assumed[0]["value"] == 61.5
    # the receipt time stands in for the missing time: it is recent
    assert abs(datetime.fromisoformat(assumed[0]["time"]) - datetime.now(timezone.utc)) < timedelta(seconds=30)
