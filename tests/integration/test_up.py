"""`citysense up`, as a new user runs it: the whole system, a fleet, a clean stop, data kept."""

import json
import os
import signal
import socket
import subprocess
import sys

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from services.launcher.stack import free_port
from tests.helpers import REPO, wait_until

pytestmark = pytest.mark.slow


def start_up(home, ports, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(CITYSENSE_HOME=str(home), CITYSENSE_PG_PORT=str(ports["pg"]), CITYSENSE_MQTT_PORT=str(ports["mqtt"]),
               CITYSENSE_MQTT_TLS_PORT=str(ports["mqtts"]),
               CITYSENSE_API_PORT=str(ports["api"]), CITYSENSE_INGEST_METRICS_PORT=str(ports["metrics"]),
               CITYSENSE_SIM_INTERVAL_S="1")
    return subprocess.Popen([sys.executable, "-m", "services.launcher.cli", "up", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def readings_of(base, device_id, since=None):
    params = {"device_id": device_id, "limit": 1000}
    if since is not None:
        params["start"] = since.isoformat()
    try:
        r = httpx.get(f"{base}/v1/readings", params=params, timeout=10)
    except httpx.HTTPError:  # not up yet
        return 0
    return len(r.json()["items"]) if r.status_code == 200 else 0


def test_up_runs_the_whole_system_and_stops_cleanly(tmp_path):
    home = tmp_path / "home"
    ports = {k: free_port() for k in ("pg", "mqtt", "mqtts", "api", "metrics")}
    base = f"http://127.0.0.1:{ports['api']}"
    proc = start_up(home, ports, "--devices", "100")
    try:
        def fleet():
            try:
                page = httpx.get(f"{base}/v1/devices", params={"limit": 1000}, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return None
            return page["items"] if len(page["items"]) == 100 else None

        devices = wait_until(fleet, timeout=120, interval=1, what="the simulated fleet in /v1/devices")
        assert len({d["csa"] for d in devices}) > 30  # spread over the city
        device_id = devices[0]["device_id"]
        since = datetime.now(timezone.utc)
        first = wait_until(lambda: readings_of(base, device_id, since), timeout=60, what="a first live reading")
        wait_until(lambda: readings_of(base, device_id, since) > first, timeout=30, what="more readings")
        # the first run backfilled a day, so the quality-of-life answers have data at once
        assert readings_of(base, device_id, since - timedelta(hours=20)) > first
        # the dashboard is there, and the city's air, heat and noise are on it within a minute of start-up
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "citysense" in page.text

        def shown():
            rows = httpx.get(f"{base}/v1/qol/summary", timeout=30).json()["items"]
            return all(any(r[k] is not None for r in rows) for k in ("aqi", "heat_index_f", "noise_leq_24h"))
        wait_until(shown, timeout=60, interval=2, what="AQI, heat index and noise on the dashboard's map")
        metrics = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics").text
        assert "citysense_ingest_readings_stored_total" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "admin token" in out and f"{base}/docs" in out and f"dashboard      {base}/" in out
    assert "***@" in out  # the database password is not printed
    secrets = dict(line.split("=", 1) for line in (home / "secrets.env").read_text().splitlines() if "=" in line)
    for key in ("ADMIN_TOKEN", "MQTT_ADMIN_PASSWORD", "MQTT_INGEST_PASSWORD"):
        assert secrets[key] not in out, f"{key} printed"
    # the simulated devices connected over TLS, each with its own account
    creds_file = home / "simulator" / "credentials.json"
    creds = json.loads(creds_file.read_text())
    assert len(creds) == 100 and len(set(creds.values())) == 100
    assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
    for port in ports.values():  # every process it started has gone
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"

    # a second run keeps the data
    proc = start_up(home, ports, "--no-simulator")
    try:
        wait_until(lambda: readings_of(base, device_id, since) >= first, timeout=60, interval=1, what="the earlier readings")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out


def test_port_in_use_names_the_setting(tmp_path):
    ports = {k: free_port() for k in ("pg", "mqtt", "mqtts", "api", "metrics")}
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports["mqtt"]))
        blocker.listen()
        proc = start_up(tmp_path / "home", ports)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"port {ports['mqtt']}" in out and "CITYSENSE_MQTT_PORT" in out
    assert "Traceback" not in out
