"""Validation against the catalogue, units and the time window."""

import pytest

from services.core.catalogue import Metric
from services.ingest.decode import Candidate
from services.ingest.validate import FLAG_TIME_ASSUMED, Rejection, Window, summarise, validate

NOW = 1_750_000_000.0
METRICS = {
    "pm25": Metric(1, "pm25", "µg/m³", "", 0, 1000, "mean"),
    "temperature": Metric(8, "temperature", "°C", "", -40, 60, "mean"),
    "humidity": Metric(9, "humidity", "%", "", 0, 100, "mean"),
    "co": Metric(5, "co", "ppm", "", 0, 200, "mean"),
}
WINDOW = Window(max_past_s=86400, max_future_s=300)


def check(value, metric="pm25", unit=None, t=NOW, assumed=False):
    v = validate([Candidate(metric, value, t, assumed, unit)], 7, METRICS, NOW, WINDOW)
    return v.readings[0] if v.readings else v.rejections[0]


@pytest.mark.parametrize("value, metric, unit, t, expected", [
    ("12", "pm25", None, NOW, "wrong_type"),
    (True, "pm25", None, NOW, "wrong_type"),
    (None, "pm25", None, NOW, "wrong_type"),
    (("non-numeric", "x"), "pm25", None, NOW, "wrong_type"),
    (float("nan"), "pm25", None, NOW, "non_finite"),
    (float("inf"), "pm25", None, NOW, "non_finite"),
    (10**400, "pm25", None, NOW, "out_of_range"),
    (-1, "pm25", None, NOW, "out_of_range"),
    (1000.5, "pm25", None, NOW, "out_of_range"),
    (5, "radon", None, NOW, "unknown_metric"),
    (5, "pm25", "furlongs", NOW, "wrong_unit"),
    (5, "pm25", None, NOW + 301, "time_in_future"),
    (5, "pm25", None, NOW - 86401, "time_too_old"),
])
def test_each_rejection_reason(value, metric, unit, t, expected):
    r = check(value, metric, unit, t)
    assert isinstance(r, Rejection) and r.reason == expected, r


def test_bounds_are_inclusive():
    assert check(0).value == 0 and check(1000).value == 1000


@pytest.mark.parametrize("value, metric, unit, stored", [
    (296.15, "temperature", "K", 23.0),
    (23.0, "temperature", "Cel", 23.0),
    (0.45, "humidity", "/", 45.0),
    (45, "humidity", "%RH", 45.0),
    (12e-9, "pm25", "kg/m3", 12.0),
    (12, "pm25", "ug/m3", 12.0),
    (900, "co", "ppb", 0.9),
])
def test_units_are_converted_to_the_catalogue_unit(value, metric, unit, stored):
    assert check(value, metric, unit).value == pytest.approx(stored)


def test_a_bad_reading_does_not_sink_the_good_ones():
    cands = [Candidate("pm25", 5, NOW), Candidate("pm25", float("nan"), NOW - 1), Candidate("temperature", 20, NOW, True)]
    v = validate(cands, 7, METRICS, NOW, WINDOW)
    assert [r.value for r in v.readings] == [5, 20]
    assert v.readings[1].flags == FLAG_TIME_ASSUMED and v.readings[0].flags == 0
    assert [r.reason for r in v.rejections] == ["non_finite"]


def test_summarise_groups_by_reason():
    rs = [Rejection("non_finite", f"n{i}") for i in range(8)] + [Rejection("wrong_type", "w")]
    out = summarise(rs)
    assert [r.reason for r in out] == ["non_finite", "wrong_type"]
    assert out[0].detail.endswith("and 3 more")
