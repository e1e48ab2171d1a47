"""Hostile messages through the real broker and the running ingestor: each is recorded as a rejection,
the ingestor keeps running, and the good message sent after them is stored."""

from __future__ import annotations

import time

from tests.helpers import count, register_device, unique, wait_until
from tests.unit.test_hostile_messages import HOSTILE


def test_a_corpus_of_hostile_messages_then_a_good_one(ingestor, publisher, dsn):
    device = unique("hostile")
    register_device(dsn, device)
    for payload in HOSTILE:
        if len(payload) < 1_000_000:  # the broker itself refuses larger messages (message_size_limit)
            publisher.readings(device, payload)
    t = time.time() - 60
    publisher.readings(device, {"time": t, "readings": {"pm25": 12.5}})
    wait_until(lambda: count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) "
                                  "WHERE d.device_id = %s AND r.value = 12.5", (device,)) == 1,
               what="the good reading after the hostile ones")
    assert ingestor.alive()
    sent = sum(1 for p in HOSTILE if len(p) < 1_000_000)
    rejected = count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s", (device,))
    reasons = count(dsn, "SELECT count(*) FROM rejected_messages WHERE device_id = %s AND reason = 'internal_error'",
                    (device,))
    # every hostile message left a record, none an internal error; 1e-400 is a storable 0 (no rejection)
    assert rejected == sent - 1 and reasons == 0
