"""data.json as a harvester reads it, and the dataset downloads as an analyst opens them."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import count, unique, wait_until

T0 = (datetime.now(timezone.utc) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
WINDOW = {"start": (T0 - timedelta(hours=1)).isoformat(), "end": (T0 + timedelta(hours=3)).isoformat()}


@pytest.fixture(scope="module")
def fed(http_module, admin_module, publisher_module, dsn, ingestor):
    device_id = unique("od")
    r = http_module.post("/v1/devices", headers=admin_module, json={
        "device_id": device_id, "kind": "weather", "latitude": 39.284, "longitude": -76.57637})
    assert r.status_code == 201
    backlog = [{"time": (T0 + timedelta(minutes=20 * i)).timestamp(),
                "readings": {"temperature": 30.0 + i, "humidity": 60, "rainfall": 0.5}} for i in range(6)]
    publisher_module.readings(device_id, backlog)
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE device_id = %s",
                             (device_id,)) == 18)
    return device_id


def test_data_json_is_a_dcat_us_catalogue(http, fed):
    cat = http.get("/data.json").json()
    assert cat["conformsTo"] == "https://project-open-data.cio.gov/v1.1/schema"
    assert cat["@type"] == "dcat:Catalog" and cat["describedBy"].endswith("catalog.json")
    ids = {d["identifier"].rsplit("/", 1)[1]: d for d in cat["dataset"]}
    assert {"sensors", "air-quality-hourly", "weather-hourly", "noise-hourly", "csa-daily-summary", "readings"} <= set(ids)
    for d in cat["dataset"]:
        for key in ("title", "description", "keyword", "modified", "publisher", "contactPoint", "identifier", "accessLevel"):
            assert d[key], key
        assert d["accessLevel"] == "public"
        assert d["contactPoint"]["hasEmail"].startswith("mailto:")
        assert d["publisher"]["name"]
        assert len(d["spatial"].split(",")) == 4
        assert d["accrualPeriodicity"].startswith("R/P")
        datetime.fromisoformat(d["modified"].replace("Z", "+00:00"))
        media = {x.get("mediaType") for x in d["distribution"] if "downloadURL" in x}
        assert media == {"text/csv", "application/geo+json"}
        assert all(x.get("mediaType") for x in d["distribution"] if "downloadURL" in x)
        assert "" not in [v for x in d["distribution"] for v in x.values()] and "" not in d.values()
    weather = ids["weather-hourly"]
    newest = datetime.fromisoformat(weather["modified"].replace("Z", "+00:00"))
    assert newest >= T0 + timedelta(minutes=100)
    start, end = weather["temporal"].split("/")
    assert datetime.fromisoformat(start.replace("Z", "+00:00")) <= T0


def test_every_catalogued_download_answers(http, fed):
    for d in http.get("/data.json").json()["dataset"]:
        for dist in d["distribution"]:
            if "downloadURL" in dist:
                path = dist["downloadURL"].split("://", 1)[1].split("/", 1)[1]
                r = http.get("/" + path, params=WINDOW)
                assert r.status_code == 200, (path, r.text[:200])
                assert r.headers["content-type"].startswith(dist["mediaType"])
                assert "attachment" in r.headers["content-disposition"]


def test_readings_csv_holds_exactly_the_stored_readings(http, fed):
    r = http.get("/v1/datasets/readings.csv", params={**WINDOW, "metric": "temperature"})
    rows = [row for row in csv.DictReader(io.StringIO(r.text)) if row["device_id"] == fed]
    assert [float(x["value"]) for x in rows] == [30.0 + i for i in range(6)]
    assert rows[0]["unit"] == "°C" and rows[0]["csa"] == "Canton"
    assert datetime.fromisoformat(rows[0]["time"].replace("Z", "+00:00")) == T0


def test_weather_hourly_csv_and_geojson(http, fed):
    rows = list(csv.DictReader(io.StringIO(http.get("/v1/datasets/weather-hourly.csv", params={**WINDOW, "csa": "Canton"}).text)))
    first = next(r for r in rows if datetime.fromisoformat(r["hour"].replace("Z", "+00:00")) == T0)
    assert float(first["temperature"]) == pytest.approx(31.0)  # mean of 30, 31, 32 in the first hour
    assert float(first["rainfall"]) == pytest.approx(1.5)  # rainfall adds up
    assert float(first["heat_index_f"]) > 87 and first["heat_index_category"]
    fc = http.get("/v1/datasets/weather-hourly.geojson", params={**WINDOW, "csa": "Canton"}).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(rows)
    assert fc["features"][0]["geometry"]["type"] == "Point"


def test_sensor_inventory_geojson(http, fed):
    fc = http.get("/v1/datasets/sensors.geojson").json()
    mine = [f for f in fc["features"] if f["properties"]["device_id"] == fed]
    assert mine[0]["geometry"]["coordinates"] == [-76.57637, 39.284]


@pytest.mark.parametrize("path, params, status", [
    ("/v1/datasets/unicorns.csv", {}, 404),
    ("/v1/datasets/readings.xlsx", {}, 422),
    ("/v1/datasets/readings.csv", {"start": "2001-01-01T00:00:00Z", "end": "2011-01-01T00:00:00Z"}, 422),
    ("/v1/datasets/readings.csv", {"csa": "Atlantis"}, 404),
    ("/v1/datasets/readings.csv", {"start": "yesterday"}, 422),
])
def test_bad_download_requests(http, path, params, status):
    assert http.get(path, params=params).status_code == status
