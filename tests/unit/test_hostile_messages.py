"""No input stops ingestion: any bytes on any topic become readings, a status or a recorded rejection
with a precise reason, through the whole message path (topic, registry, decoding, validation, batch),
never an exception. The real-broker half is tests/integration/test_ingest_hostile.py."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.catalogue import Metric
from services.ingest.metrics import REJECTION_REASONS
from services.ingest.translate import Envelope, Limits, translate
from services.store.ingest import Registry

METRICS = {
    "pm25": Metric(1, "pm25", "µg/m³", "", 0, 1000, "mean"),
    "temperature": Metric(8, "temperature", "°C", "", -40, 60, "mean"),
    "noise_laeq": Metric(7, "noise_laeq", "dB(A)", "", 20, 140, "energy"),
}
NOW = time.time()


REGISTRY = Registry(METRICS, {"dev1": 1})


def envelope(topic: str, payload: bytes, content_type: str | None = None) -> Envelope:
    return Envelope(1, 1, topic, payload, NOW, time.monotonic(), content_type)


def accounted(env: Envelope) -> None:
    batch = translate([env], REGISTRY, Limits())
    outcomes = len(batch.readings) + len(batch.statuses) + len(batch.rejected)
    assert outcomes >= 1, "a message vanished without a reading, a status or a rejection"
    for r in batch.rejected:
        assert r.reason in REJECTION_REASONS and r.reason != "internal_error", (r.reason, r.detail)
        assert r.detail


HOSTILE = [
    b'{"readings":{"pm25":' + b"1" * 4301 + b"}}",                 # Python's 4,300-digit conversion limit
    b'[{"n":"pm25","v":' + b"9" * 400 + b"}]",                     # SenML value too large for a float
    b'[{"n":"pm25","v":' + b"9" * 400 + b',"bv":1.5}]',            # ... plus a base value
    b'[{"n":"pm25","v":1e308,"bv":1e308}]',                        # float overflow to inf
    b'[{"n":"pm25","v":1,"t":' + b"9" * 400 + b"}]",               # absurd time
    b'{"time":' + b"9" * 400 + b',"readings":{"pm25":1}}',
    b'{"time":"\\ud800","readings":{"pm25":1}}',                   # lone surrogate
    b'{"readings":{"\\ud800":1}}',
    b'{"readings":{"pm25":1,"pm25":2}}',                           # duplicate keys
    b"[" * 100_000 + b"]" * 100_000,                               # deep nesting, over the size limit
    b"[" * 30_000 + b"]" * 30_000,                                 # deep nesting, under it
    b'{"readings":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    b'{"readings":{"pm25":1e-400}}',                               # underflow
    b'{"readings":{"pm25":-0.0,"temperature":NaN,"noise_laeq":Infinity}}',
    b"\xff\xfe\x00",
    b"",
    b"null",
]


def test_a_corpus_of_hostile_payloads_is_rejected_message_by_message():
    for payload in HOSTILE:
        accounted(envelope("city/v1/devices/dev1/readings", payload))
        accounted(envelope("city/v1/devices/dev1/readings", payload, "application/senml+json"))
        accounted(envelope("city/v1/devices/dev1/status", payload))


def test_a_bug_in_handling_one_message_rejects_it_as_internal_error_and_the_rest_flow():
    class Broken(Registry):
        def device_key(self, device_id: str) -> int | None:
            if device_id == "bug":
                raise KeyError("a bug")
            return 1

    seen = []
    batch = translate([envelope("city/v1/devices/bug/readings", b'{"readings":{"pm25":1}}'),
                       envelope("city/v1/devices/dev1/readings", b'{"readings":{"pm25":2}}')],
                      Broken(METRICS, {}), Limits(), lambda exc, topic: seen.append(type(exc)))
    assert seen == [KeyError]  # logged
    assert [r.reason for r in batch.rejected] == ["internal_error"]
    assert "KeyError" in batch.rejected[0].detail
    assert [r.value for r in batch.readings] == [2.0]


huge_numbers = st.integers(min_value=-(10**5000), max_value=10**5000) | st.floats() | st.integers()
json_values = st.recursive(
    st.none() | st.booleans() | huge_numbers | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def _dump(doc) -> bytes:
    try:
        return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    except ValueError:  # an integer too long for str(): write its digits by hand
        return b'{"readings":{"pm25":' + b"7" * 5000 + b"}}"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["readings", "status", "readingz"]), st.sampled_from(["dev1", "ghost"]))
def test_any_bytes_on_any_topic_are_accounted_for(payload, channel, device):
    accounted(envelope(f"city/v1/devices/{device}/{channel}", payload))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_through_the_whole_path_is_accounted_for(doc):
    for content_type in (None, "application/senml+json"):
        accounted(envelope("city/v1/devices/dev1/readings", _dump({"readings": doc}), content_type))
        accounted(envelope("city/v1/devices/dev1/readings", _dump(doc), content_type))


senml_record = st.fixed_dictionaries({}, optional={
    "bn": st.sampled_from(["", "dev1:", "urn:dev:id:dev1:", "other:"]) | st.text(max_size=5),
    "bt": huge_numbers, "bv": huge_numbers, "bu": st.sampled_from(["Cel", "K", "ug/m3", "x"]),
    "n": st.sampled_from(["pm25", "temperature", "noise_laeq", "radon"]) | st.text(max_size=5),
    "v": huge_numbers, "t": huge_numbers, "u": st.sampled_from(["Cel", "K", "dBA", "ug/m3"]) | st.integers(),
    "vs": st.text(max_size=5), "vb": st.booleans(), "s": huge_numbers, "bver": st.integers(),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(senml_record, max_size=8))
def test_any_senml_pack_through_the_whole_path_is_accounted_for(pack):
    accounted(envelope("city/v1/devices/dev1/readings", _dump(pack), "application/senml+json"))
