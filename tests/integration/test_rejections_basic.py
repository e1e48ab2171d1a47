"""Bad messages end up in rejected_messages with a clear reason, and the ingestor keeps running."""

import psycopg

from tests.helpers import count, register_device, unique, wait_until


def rejected(dsn, topic):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT reason, detail, payload FROM rejected_messages WHERE topic = %s", (topic,)).fetchall()


def test_unknown_device_malformed_payload_and_out_of_range_are_recorded(dsn, publisher, ingestor):
    known = unique("aq")
    register_device(dsn, known)
    unknown = unique("ghost")
    cases = [
        (unknown, b'{"readings": {"pm25": 5}}', "unknown_device", "not registered"),
        (known, b'{"readings": {"pm25": 5', "malformed_json", "line 1"),
        (known, b'{"readings": {"pm25": 5000}}', "out_of_range", "plausible range"),
    ]
    for device_id, payload, _, _ in cases:
        publisher.readings(device_id, payload)
    for device_id, payload, reason, words in cases:
        topic = f"city/v1/devices/{device_id}/readings"
        rows = wait_until(lambda: [r for r in rejected(dsn, topic) if r[0] == reason], what=f"a {reason} rejection")
        assert words in rows[0][1]
        assert bytes(rows[0][2]) == payload
    # still alive, still storing
    publisher.readings(known, {"readings": {"pm25": 7.5}})
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE device_id = %s",
                             (known,)) == 1, what="the good reading")
    assert ingestor.alive()
