"""The two consumers citysense is compared with, each in its own process:

* ``paho``: a bare paho-mqtt subscriber at QoS 1 that only counts messages (the client library's limit);
* ``naive``: the bridge found in many projects: one INSERT per reading and one commit per message;
* ``paho_acks``: paho with manual acknowledgement from a second thread, in batches of up to 500 as the
  ingestor's pipeline does (no decoding, no database): the cost of "acknowledge after commit" alone;
* ``gmqtt``: a bare gmqtt (asyncio) subscriber that only counts: the alternative to paho that issue 13
  asked to evaluate, measured under the same load as paho.

Each prints ``ready`` once subscribed, then one JSON line when it has handled ``--count`` messages:
the wall-clock time of the last one.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["paho", "naive", "gmqtt", "paho_acks"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--account", required=True, help="user name and client id of an account on the broker")
    p.add_argument("--password", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--dsn")
    a = p.parse_args()
    if a.mode == "gmqtt":
        return bare_gmqtt(a)
    done = threading.Event()
    state = {"n": 0, "last": 0.0}
    conn = devices = metrics = None
    if a.mode == "naive":
        conn = psycopg.connect(a.dsn)
        devices = dict(conn.execute("SELECT device_id, device_key FROM devices").fetchall())
        metrics = dict(conn.execute("SELECT metric, metric_key FROM metrics").fetchall())
        conn.commit()

    import queue

    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def acker() -> None:  # the pipeline thread's part, without the work in between
        while True:
            batch = [inbox.get()]
            while len(batch) < 500:
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            for mid in batch:
                c.ack(mid, 1)
            state["n"] += len(batch)
            if state["n"] >= a.count and not done.is_set():
                state["last"] = time.time()
                done.set()

    def on_message(client, userdata, msg):
        if a.mode == "paho_acks":
            inbox.put(msg.mid)
            return
        if a.mode == "naive":
            device = msg.topic.split("/")[3]
            doc = json.loads(msg.payload)
            for metric, value in doc["readings"].items():
                conn.execute(
                    "INSERT INTO readings (time, device_key, metric_key, value) VALUES (to_timestamp(%s), %s, %s, %s)"
                    " ON CONFLICT DO NOTHING", (doc["time"], devices[device], metrics[metric], value))
            conn.commit()
        state["n"] += 1
        if state["n"] >= a.count:
            state["last"] = time.time()
            done.set()

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=a.account,
                    protocol=mqtt.MQTTv5, manual_ack=a.mode == "paho_acks")
    if a.mode == "paho_acks":
        threading.Thread(target=acker, daemon=True).start()
    c.on_message = on_message
    subscribed = threading.Event()
    c.on_subscribe = lambda *args: subscribed.set()
    c.on_connect = lambda client, *args: client.subscribe("city/v1/devices/+/readings", qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 1000
    c.username_pw_set(a.account, a.password)
    c.connect("127.0.0.1", a.port, properties=props)
    c.loop_start()
    subscribed.wait(30)
    print("ready", flush=True)
    done.wait(3600)
    print(json.dumps({"count": state["n"], "last": state["last"]}), flush=True)
    c.disconnect()
    c.loop_stop()
    return 0


def bare_gmqtt(a) -> int:
    import asyncio

    import gmqtt

    async def run() -> None:
        done = asyncio.Event()
        state = {"n": 0, "last": 0.0}
        subscribed = asyncio.Event()
        c = gmqtt.Client(a.account, clean_session=True, receive_maximum=1000)
        c.set_auth_credentials(a.account, a.password)

        def on_message(client, topic, payload, qos, properties):
            state["n"] += 1
            if state["n"] >= a.count:
                state["last"] = time.time()
                done.set()
            return 0  # PUBACK, success
        c.on_message = on_message
        c.on_subscribe = lambda *args: subscribed.set()
        await c.connect("127.0.0.1", a.port)
        c.subscribe("city/v1/devices/+/readings", qos=1)
        await asyncio.wait_for(subscribed.wait(), 30)
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 3600)
        print(json.dumps({"count": state["n"], "last": state["last"]}), flush=True)
        await c.disconnect()
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
