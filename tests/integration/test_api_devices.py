"""/v1/devices and /v1/readings as an app developer meets them: auth, validation, pagination, errors."""

import pytest

from tests.helpers import unique

DOWNTOWN = {"latitude": 39.2904, "longitude": -76.6122}


def create(http, admin, **body):
    return http.post("/v1/devices", headers=admin, json={"kind": "weather", **DOWNTOWN, **body})


def test_registering_needs_the_admin_token(http):
    body = {"device_id": unique("wx"), "kind": "weather", **DOWNTOWN}
    r = http.post("/v1/devices", json=body)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    r = http.post("/v1/devices", json=body, headers={"Authorization": "Bearer wrong-token-of-some-length"})
    assert r.status_code == 401
    assert "test-admin-token" not in r.text  # the token is never echoed


def test_position_outside_the_city_is_refused_clearly(http, admin):
    r = create(http, admin, device_id=unique("wx"), latitude=39.40, longitude=-76.60)  # Towson, north of the city
    assert r.status_code == 422
    assert "outside Baltimore City" in r.json()["detail"]


def test_duplicate_registration_is_a_conflict(http, admin):
    device_id = unique("wx")
    assert create(http, admin, device_id=device_id).status_code == 201
    r = create(http, admin, device_id=device_id)
    assert r.status_code == 409 and device_id in r.json()["detail"]


@pytest.mark.parametrize("body, where", [
    ({"device_id": "bad/id"}, "device_id"),
    ({"device_id": "ok-id", "kind": "volcano"}, "kind"),
    ({"device_id": "ok-id", "latitude": "north"}, "latitude"),
    ({"device_id": "ok-id", "latitude": 1e308}, "latitude"),
    ({"device_id": "ok-id", "extra": 1}, "extra"),
])
def test_bad_bodies_get_a_problem_naming_the_field(http, admin, body, where):
    r = create(http, admin, **body)
    assert r.status_code == 422
    assert where in r.json()["detail"]


def test_nul_in_metadata_is_refused(http, admin):
    r = create(http, admin, device_id=unique("wx"), metadata={"note": "a\x00b"})
    assert r.status_code == 422 and "NUL" in r.text


def test_nan_in_json_body_is_refused(http, admin):
    r = http.post("/v1/devices", headers={**admin, "content-type": "application/json"},
                  content=b'{"device_id": "nan-dev", "kind": "noise", "latitude": NaN, "longitude": -76.6}')
    assert r.status_code == 422


def test_listing_pages_through_every_device_once(http, admin):
    kind_csa = None
    ids = sorted(unique("pg") for _ in range(7))
    for device_id in ids:
        r = create(http, admin, device_id=device_id, kind="traffic", latitude=39.3335, longitude=-76.5589)
        kind_csa = r.json()["csa"]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "kind": "traffic", "csa": kind_csa}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/v1/devices", params=params).json()
        seen += [d["device_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [s for s in seen if s in ids] == ids
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 10**6}, {"limit": "many"}, {"cursor": "not-a-cursor"},
                                    {"status": "asleep"}, {"kind": "volcano"},
                                    {"neighbourhood": "Canton\x00"},  # found by the fuzzer: PostgreSQL refuses NUL
                                    {"cursor": "WyJhXHUwMDAwIl0"}])  # a cursor holding ["a\u0000"]
def test_bad_list_parameters_are_4xx_problems(http, params):
    r = http.get("/v1/devices", params=params)
    assert 400 <= r.status_code < 500
    assert r.json()["status"] == r.status_code


def test_unknown_device_is_404(http):
    r = http.get("/v1/devices/nobody-here")
    assert r.status_code == 404 and "nobody-here" in r.json()["detail"]


@pytest.mark.parametrize("params", [
    {"start": "2024-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"},  # wider than the bound
    {"start": "2024-02-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"},  # reversed
    {"start": "2024-01-01T00:00:00"},  # no offset
    {"start": "yesterday"},
    {"metric": "PM25; DROP TABLE readings"},
    {"device_id": "x1", "end": "0001-01-01T00:00:00Z"},  # found by the fuzzer: end − 1 day overflowed
    {"start": "2150-01-01T00:00:00Z"},
])
def test_bad_reading_queries_are_refused(http, params):
    r = http.get("/v1/readings", params=params)
    assert r.status_code == 422, r.text


def test_health_and_docs(http):
    assert http.get("/healthz").json() == {"status": "ok", "database": "ok"}
    assert http.get("/docs").status_code == 200
    spec = http.get("/openapi.json").json()
    assert {"/v1/devices", "/v1/devices/{device_id}", "/v1/readings", "/healthz"} <= set(spec["paths"])


def test_api_metrics_use_route_templates(http):
    http.get("/v1/devices/some-device-id-xyz")
    text = http.get("/metrics").text
    assert 'route="/v1/devices/{device_id}"' in text
    assert "some-device-id-xyz" not in text
    assert "citysense_api_db_pool_size" in text
