"""Neighbourhood lookup and settings."""

import pytest

from services.broker.connect import Endpoint
from pydantic import ValidationError

from services.core.areas import OutsideCity, baltimore
from services.core.settings import Settings, redact_url


def test_every_area_is_loaded_with_its_csa():
    areas = baltimore()
    assert len(areas.neighbourhoods) == 278 and len(areas.csas) == 55
    assert {a.csa for a in areas.neighbourhoods.values()} == set(areas.csas)


@pytest.mark.parametrize("lat, lon, neighbourhood, csa", [
    (39.2904, -76.6122, "Downtown", "Downtown/Seton Hill"),      # Baltimore & Charles
    (39.2856, -76.6087, "Inner Harbor", "Inner Harbor/Federal Hill"),
    (39.3289, -76.6205, "Johns Hopkins Homewood", "Greater Charles Village/Barclay"),
])
def test_known_places(lat, lon, neighbourhood, csa):
    loc = baltimore().locate(lat, lon)
    assert (loc.neighbourhood, loc.csa) == (neighbourhood, csa)


def test_every_reference_point_lies_in_its_own_neighbourhood():
    areas = baltimore()
    for a in areas.neighbourhoods.values():
        assert areas.locate(a.centroid[1], a.centroid[0]).neighbourhood == a.name


@pytest.mark.parametrize("lat, lon", [(39.40, -76.60), (39.29, -76.75), (0, 0), (39.25, -76.50)])
def test_outside_the_city(lat, lon):
    with pytest.raises(OutsideCity, match="outside Baltimore City"):
        baltimore().locate(lat, lon)


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("CITYSENSE_MQTT_URL", "mqtt://broker.example:1884")
    monkeypatch.setenv("CITYSENSE_API_PORT", "9000")
    s = Settings()
    e = Endpoint.of(s)
    assert (e.host, e.port, e.tls, s.api_port) == ("broker.example", 1884, False, 9000)
    monkeypatch.setenv("CITYSENSE_MQTT_URL", "mqtts://broker.example")
    monkeypatch.setenv("CITYSENSE_MQTT_CA_FILE", "/etc/citysense/ca.crt")
    e = Endpoint.of(Settings())
    assert (e.port, e.tls, str(e.ca_file)) == (8883, True, "/etc/citysense/ca.crt")


@pytest.mark.parametrize("name, value", [("CITYSENSE_MQTT_URL", "http://x"), ("CITYSENSE_API_PORT", "99999"),
                                         ("CITYSENSE_DATABASE_URL", "mysql://x"), ("CITYSENSE_INGEST_BATCH_SIZE", "0")])
def test_bad_settings_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_secrets_never_show(monkeypatch):
    monkeypatch.setenv("CITYSENSE_DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("CITYSENSE_ADMIN_TOKEN", "sekrit-token-sekrit-token")
    s = Settings()
    assert "hunter2" not in repr(s) and "sekrit" not in repr(s)
    assert redact_url(s.dsn) == "postgresql://u:***@db/x"


@pytest.mark.parametrize("env, token, host, ok", [
    ("production", "", "127.0.0.1", False), ("production", "changeme", "127.0.0.1", False),
    ("production", "short", "127.0.0.1", False), ("production", "a-long-random-token-123", "0.0.0.0", True),
    ("development", "dev", "127.0.0.1", True), ("development", "", "127.0.0.1", False),
    # development on an address others reach: a weak token is refused there too
    ("development", "admin", "0.0.0.0", False), ("development", "a-long-random-token-123", "0.0.0.0", True),
])
def test_weak_admin_tokens_are_refused_outside_local_development(monkeypatch, env, token, host, ok):
    monkeypatch.setenv("CITYSENSE_ENVIRONMENT", env)
    monkeypatch.setenv("CITYSENSE_ADMIN_TOKEN", token)
    monkeypatch.setenv("CITYSENSE_API_HOST", host)
    assert (Settings().admin_token_problem() is None) == ok
