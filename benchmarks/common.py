"""Shared by the benchmarks: a throw-away stack (TimescaleDB cluster + Mosquitto on free ports), the
devices and messages they use, and small measuring helpers."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from services.store.migrate import migrate
from services.launcher.stack import MosquittoBroker, PostgresCluster, free_port, owned_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
METRICS5 = ("pm25", "pm10", "o3", "no2", "co")  # one air-quality device's message: 5 readings
BRIDGE_PASSWORD = "bench-bridge-password-0123"


@dataclass
class Stack:
    root: Path
    cluster: PostgresCluster
    broker: MosquittoBroker

    @property
    def dsn(self) -> str:
        return self.cluster.dsn

    @property
    def mqtt_port(self) -> int:
        return self.broker.port

    def account(self, name: str, role: str = "ingest") -> tuple[str, str]:
        """(user name, password) of an account on the benchmark's broker, which refuses anonymous clients
        like every citysense broker: an ingestor's (it may subscribe to every device's topics) or a
        bridge's (it may publish for any device). Its client id must be its user name."""
        if role == "ingest":
            return name, self.broker.add_ingestor(name)
        self.broker.control().add_bridge(name, BRIDGE_PASSWORD)
        return name, BRIDGE_PASSWORD

    def cli_account(self, name: str, role: str = "ingest") -> list[str]:
        """The same, as mosquitto_pub / mosquitto_sub arguments."""
        user, password = self.account(name, role)
        return ["-i", user, "-u", user, "-P", password]


@contextmanager
def stack():
    root = Path(tempfile.mkdtemp(prefix="citysense-bench-"))
    os.chmod(root, 0o755)
    cluster = PostgresCluster(owned_dir(root, "pg", "postgres"), free_port(), root / "secrets.env")
    cluster.init()
    with open(cluster.data_dir / "postgresql.conf", "a") as f:
        # Benchmarks keep synchronous_commit on: the ingestor's promise is "acknowledged once durable".
        f.write("max_wal_size = 4GB\ncheckpoint_timeout = 30min\n")
    cluster.start()
    migrate(cluster.dsn)
    broker = MosquittoBroker(owned_dir(root, "mq", "mosquitto"), free_port())
    broker.start()
    try:
        yield Stack(root, cluster, broker)
    finally:
        broker.stop()
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def register_devices(dsn: str, n: int, prefix: str = "bench") -> list[str]:
    """n air-quality devices spread over the city (positions from the simulator's fleet builder)."""
    from simulators.fleet import build_fleet
    from simulators.registration import register_in_store

    fleet = [d.__class__(f"{prefix}-{i:05d}", "air_quality", d.latitude, d.longitude, 60)
             for i, d in enumerate(build_fleet(n, seed=7))]
    register_in_store(dsn, fleet)  # the load generators publish through bridge accounts
    return [d.device_id for d in fleet]


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, readings_hourly, rejected_messages")


def count_readings(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def python_module(module: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, **kw)


def machine() -> dict:
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release")
                    if line.startswith("PRETTY_NAME")), "?")
    pg = subprocess.run(["/usr/lib/postgresql/" + find_pg_version() + "/bin/postgres", "--version"],
                        capture_output=True, text=True).stdout.strip()
    mq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 1024 / 1024, 1), "os": os_name,
            "python": platform.python_version(), "postgres": pg, "mosquitto": mq,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def find_pg_version() -> str:
    from services.launcher.stack import find_pg_bin

    return find_pg_bin().parts[-2]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


#: /proc's clock ticks per second (CPU times in /proc/stat and /proc/PID/stat are in ticks)
TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy, and taken by the hypervisor for other guests (steal), over
    all cores (/proc/stat: busy is everything but idle, iowait and steal; guest time is already in user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4] - v[7]) / TICK, v[7] / TICK
