"""How far one Mosquitto carries a fleet on this machine (docs/scale-out.md): connected devices, each with
its own account and a QoS 1 publish, and messages per second through the broker from several C clients
(`mosquitto_pub -l`, bridge accounts) to one subscriber (an ingestor's account), with the broker's memory.

    .venv/bin/python -m benchmarks.broker_capacity [--devices 2000] [--messages 200000] [--publishers 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from benchmarks.common import stack
from services.broker.connect import Endpoint
from simulators.publisher import Fleet


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def connections(st, n: int) -> dict:
    """n devices, each with its own account, connected at once; each publishes one QoS 1 message."""
    control = st.broker.control()
    before = rss_mb(st.broker.process.pid)
    t = time.time()
    creds = {f"cap-{i:05d}": control.add_device(f"cap-{i:05d}") for i in range(n)}
    provisioned = time.time() - t
    fleet = Fleet(Endpoint("127.0.0.1", st.mqtt_port), creds)
    t = time.time()
    for d in creds:
        fleet.connect(fleet.add(d))
    connected = time.time() - t
    for d, link in fleet.links.items():
        link.client.publish(f"city/v1/devices/{d}/status", "online", qos=1)
    ok = fleet.flush(120)
    after = rss_mb(st.broker.process.pid)
    fleet.close()
    return {"devices": n, "accounts_per_s": round(n / provisioned), "connects_per_s": round(n / connected),
            "all_acknowledged": ok, "broker_rss_mb": round(after, 1), "rss_per_connection_kb": round((after - before) * 1024 / n, 1)}


def throughput(st, n: int, publishers: int) -> dict:
    topic = "city/v1/devices/cap-throughput/readings"
    payload = json.dumps({"time": 1.75e9, "readings": {"pm25": 12.5, "pm10": 20.1, "o3": 31.0, "no2": 14.2, "co": 0.4}})
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(st.mqtt_port), "-t", topic, "-q", "1", "-C", str(n),
                            *st.cli_account(f"cap-sub-{time.time_ns()}")], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    pubs = [subprocess.Popen(["mosquitto_pub", "-p", str(st.mqtt_port), "-t", topic, "-q", "1", "-l", "-M", "1000",
                              *st.cli_account(f"cap-pub-{k}-{time.time_ns()}", "bridge")], stdin=subprocess.PIPE)
            for k in range(publishers)]
    t = time.time()
    for k, p in enumerate(pubs):
        p.stdin.write(((payload + "\n") * (n // publishers + (k < n % publishers))).encode())
        p.stdin.flush()
    sub.wait(600)
    seconds = time.time() - t
    for p in pubs:
        p.stdin.close()
        p.wait(30)
    return {"messages": n, "publishers": publishers, "seconds": round(seconds, 2), "msg_per_s": round(n / seconds),
            "broker_rss_mb": round(rss_mb(st.broker.process.pid), 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--publishers", type=int, default=4)
    a = p.parse_args(argv)
    with stack() as st:
        result = {"connections": connections(st, a.devices), "throughput": throughput(st, a.messages, a.publishers)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
