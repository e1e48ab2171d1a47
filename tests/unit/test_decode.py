"""Decoders: native JSON and SenML (RFC 8428 examples), topics and status payloads."""

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from services.ingest.decode import Rejected, decode_readings, decode_status, parse_topic

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def decode(doc, device="dev1", **kw):
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return decode_readings(payload, NOW, device, **kw)


def reason(doc, **kw):
    with pytest.raises(Rejected) as exc:
        decode(doc, **kw)
    return exc.value.reason


def test_native_object_with_rfc3339_time():
    (a, b) = decode({"time": "2025-06-15T15:00:00Z", "readings": {"pm25": 12.4, "noise_laeq": 58.1}})
    assert (a.metric, a.value, a.time, a.time_assumed) == ("pm25", 12.4, 1749999600.0, False)
    assert b.metric == "noise_laeq"


def test_native_epoch_seconds_and_offset_times_agree():
    (a,) = decode({"time": 1749999600, "readings": {"pm25": 1}})
    (b,) = decode({"time": "2025-06-15T11:00:00-04:00", "readings": {"pm25": 1}})
    assert a.time == b.time == 1749999600.0


def test_native_missing_time_is_receipt_time_and_flagged():
    (a,) = decode({"readings": {"pm25": 3}})
    assert a.time == NOW and a.time_assumed


def test_native_backlog_list():
    out = decode([{"time": NOW - 60 * i, "readings": {"pm25": i, "pm10": i}} for i in range(10)])
    assert len(out) == 20


@pytest.mark.parametrize("doc, expected", [
    (b"\xff\xfe", "not_utf8"),
    (b"{", "malformed_json"),
    (b"", "malformed_json"),
    ({"readings": {}}, "bad_shape"),
    ({"reading": {"pm25": 1}}, "bad_shape"),
    ([], "bad_shape"),
    ([1, 2], "bad_shape"),
    ("text", "bad_shape"),
    ({"time": "yesterday", "readings": {"pm25": 1}}, "bad_time"),
    ({"time": "2025-06-15T15:00:00", "readings": {"pm25": 1}}, "bad_time"),
    ({"time": True, "readings": {"pm25": 1}}, "bad_time"),
    ({"device_id": "other", "readings": {"pm25": 1}}, "topic_mismatch"),
])
def test_native_structural_rejections(doc, expected):
    assert reason(doc) == expected


def test_too_large_and_too_many():
    assert reason(b"x" * 100, max_bytes=50) == "too_large"
    assert reason({"readings": {f"m{i}": i for i in range(11)}}, max_readings=10) == "too_many_readings"


def test_nan_and_infinity_literals_decode_and_are_left_to_validation():
    (a,) = decode(b'{"readings": {"pm25": NaN}}')
    assert math.isnan(a.value)


# --- SenML, RFC 8428 -------------------------------------------------------------------------------

def test_senml_rfc8428_5_1_2_multiple_datapoints():
    """RFC 8428 §5.1.2: a base name and time, records with relative times and units."""
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e+09, "bu": "%RH", "v": 20},
        {"u": "lon", "v": 24.30621},
        {"u": "lat", "v": 60.07965},
        {"t": 60, "v": 20.3},
        {"u": "lon", "t": 60, "v": 24.30622},
        {"u": "lat", "t": 60, "v": 60.07965},
        {"t": 120, "v": 20.7},
    ]
    # Names end in ':' so the metric is empty: a device must name its metrics. Here we give it one.
    for rec in pack:
        rec.setdefault("n", "humidity")
    out = decode_readings(json.dumps(pack).encode(), NOW, "10e2073a01080063")
    assert len(out) == 7
    assert out[0].metric == "humidity" and out[0].unit == "%RH" and out[0].time == 1.320067464e9
    assert out[3].time == 1.320067464e9 + 60 and out[3].value == 20.3
    assert out[1].unit == "lon"  # unit checks belong to validation


def test_senml_rfc8428_5_1_1_single_datapoint_with_device_prefix():
    pack = [{"n": "urn:dev:ow:10e2073a01080063:temperature", "u": "Cel", "v": 23.1}]
    (a,) = decode_readings(json.dumps(pack).encode(), NOW, "10e2073a01080063")
    assert (a.metric, a.unit, a.value, a.time) == ("temperature", "Cel", 23.1, NOW)  # no time: now


def test_senml_base_value_relative_time_and_content_type():
    pack = [{"bn": "dev1:", "bv": 10, "bt": -30}, {"n": "pm25", "v": 2.5}, {"n": "pm10", "v": 5, "t": 10}]
    out = decode(pack, content_type="application/senml+json")
    assert [(c.metric, c.value, c.time) for c in out] == [("pm25", 12.5, NOW - 30), ("pm10", 15, NOW - 20)]


def test_senml_other_device_is_topic_mismatch():
    assert reason([{"n": "urn:dev:mac:other:pm25", "v": 1}]) == "topic_mismatch"


@pytest.mark.parametrize("pack", [
    [{"n": "pm25", "v": 1, "foo_": 1}],  # must-understand field
    [{"bver": 99, "n": "pm25", "v": 1}],
    [{"n": "pm25"}],  # no value
    [{"n": 5, "v": 1}],
    [{"bt": "noon", "n": "pm25", "v": 1}],
])
def test_senml_rejections(pack):
    assert reason(pack, content_type="application/senml+json") == "bad_senml"


def test_senml_string_and_boolean_values_decode_as_non_numeric():
    (a,) = decode([{"n": "pm25", "vs": "high"}])
    assert not isinstance(a.value, (int, float))


# --- topics and status ---------------------------------------------------------------------------

def test_topics():
    assert parse_topic("city/v1/devices/aq-1/readings").device_id == "aq-1"
    assert parse_topic("city/v1/devices/aq-1/status").channel == "status"
    for bad in ("city/v1/devices/aq-1", "city/v2/devices/aq-1/readings", "city/v1/devices/a b/readings",
                "city/v1/devices/aq-1/readings/extra"):
        with pytest.raises(Rejected):
            parse_topic(bad)


def test_status_payloads():
    assert decode_status(b"online") == "online"
    assert decode_status(b'{"status": "offline"}') == "offline"
    for bad in (b"sleepy", b"\xff", b"{", b'{"status": 1}'):
        with pytest.raises(Rejected):
            decode_status(bad)


# --- properties -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_rejected_with_a_reason(payload):
    try:
        out = decode_readings(payload, NOW, "dev1")
    except Rejected as r:
        assert r.reason and r.detail
    else:
        assert isinstance(out, list) and out


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json_decodes_or_is_rejected_with_a_reason(doc):
    try:
        out = decode_readings(json.dumps(doc).encode(), NOW, "dev1")
        out2 = decode_readings(json.dumps(doc).encode(), NOW, "dev1", content_type="application/senml+json")
    except Rejected as r:
        assert r.reason
    else:
        assert out and out2


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["pm25", "pm10", "o3", "noise_laeq"]),
                       st.floats(min_value=0, max_value=500, allow_nan=False), min_size=1),
       st.integers(min_value=1_000_000_000, max_value=2_000_000_000))
def test_native_round_trip(readings, t):
    out = decode({"time": t, "readings": readings})
    assert {c.metric: c.value for c in out} == readings
    assert all(c.time == t for c in out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pm25", "o3"]), st.floats(-100, 100, allow_nan=False),
                          st.integers(-3600, 0)), min_size=1, max_size=20),
       st.floats(0, 10, allow_nan=False))
def test_senml_base_fields_apply_to_every_record(records, bv):
    pack = [{"bn": "dev1:", "bt": NOW, "bv": bv}] + [{"n": m, "v": v, "t": t} for m, v, t in records]
    out = decode(pack)
    assert [(c.metric, c.value, c.time) for c in out] == [(m, v + bv, NOW + t) for m, v, t in records]
