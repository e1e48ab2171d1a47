"""Load generator: publishes the lines of a message file (``device_id<TAB>payload``) at QoS 1, each to
its device's topic, as fast as the broker takes them or at a fixed rate. Runs as its own process.

With ``--stamp``, each payload's ``time`` is replaced by the publish time, so the benchmark can measure
the lag from publish to commit. Prints one JSON line: messages sent, and seconds from first publish to
the broker's last PUBACK.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--account", required=True, help="user name and client id of an account on the broker")
    p.add_argument("--password", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--rate", type=float, default=0, help="messages per second (0: as fast as possible)")
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--topic", default=None, help="publish every message to this topic instead")
    a = p.parse_args()
    lines = [line.rstrip("\n").split("\t", 1) for line in open(a.file)]
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=a.account,
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.username_pw_set(a.account, a.password)
    c.connect("127.0.0.1", a.port)
    c.loop_start()
    start = time.time()
    infos = []
    for i, (device, payload) in enumerate(lines):
        if a.rate:
            due = start + i / a.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        if a.stamp:
            doc = json.loads(payload)
            doc["time"] = time.time()
            payload = json.dumps(doc)
        infos.append(c.publish(a.topic or f"city/v1/devices/{device}/readings", payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    elapsed = time.time() - start
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"sent": len(infos), "seconds": elapsed, "start": start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
