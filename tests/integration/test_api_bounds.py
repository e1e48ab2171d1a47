"""The API bounds every request, against the real database: bodies, admin writes, query time, aggregate
size, downloads; while those bounds hold, other requests keep being served. Plus the audit log of admin
writes and /metrics on its own address."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import psycopg
import pytest

from services.launcher.stack import free_port
from tests.conftest import make_cluster
from tests.helpers import Service, service_env, unique, wait_until

pytestmark = pytest.mark.slow
TOKEN = "test-admin-token-0123456789"
BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def bounded(workdir, broker):
    """An API on a database of its own (with a day of one device's readings, enough to make a download of
    tens of megabytes), with small bounds."""
    cluster = make_cluster(workdir, "pg-bounds")
    device = unique("big")
    with psycopg.connect(cluster.dsn) as conn:
        conn.execute("INSERT INTO devices (device_id, kind, latitude, longitude, neighbourhood, csa, interval_s) "
                     "VALUES (%s, 'air_quality', 39.2904, -76.6122, 'Downtown', 'Downtown/Seton Hill', 1)", (device,))
        conn.execute("INSERT INTO device_placements (device_key, valid_from, latitude, longitude, neighbourhood, csa) "
                     "SELECT device_key, '-infinity', 39.2904, -76.6122, 'Downtown', 'Downtown/Seton Hill' FROM devices "
                     "WHERE device_id = %s", (device,))
        conn.execute("INSERT INTO readings (time, device_key, metric_key, value) "
                     "SELECT now() - interval '20 hours' + i * interval '200 ms', d.device_key, m.metric_key, random() * 50 "
                     "FROM devices d, metrics m, generate_series(1, 300000) i WHERE d.device_id = %s AND m.metric = 'pm25'",
                     (device,))
    metrics_port = free_port()
    env = service_env(cluster.dsn, broker, CITYSENSE_API_MAX_BODY_BYTES=BODY_LIMIT, CITYSENSE_API_EXPORT_CONCURRENCY=2,
                      CITYSENSE_API_EXPORT_IDLE_S=3, CITYSENSE_API_STATEMENT_TIMEOUT_MS=1000,
                      CITYSENSE_API_MAX_AGGREGATE_CELLS=5000, CITYSENSE_API_METRICS_PORT=metrics_port)
    svc = Service("api", env, workdir / "api-bounds.log").start()
    svc.base_url = f"http://127.0.0.1:{env['CITYSENSE_API_PORT']}"
    svc.port = int(env["CITYSENSE_API_PORT"])
    svc.metrics_port, svc.dsn, svc.device = metrics_port, cluster.dsn, device
    wait_until(lambda: _ok(svc.base_url + "/readyz"), 30, what="the bounded API")
    yield svc
    svc.stop()
    cluster.stop("immediate")


def _ok(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def raw(port: int, head: str, timeout: float = 5.0) -> bytes:
    """Send a request head (no body) and read what comes back before ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode())
        out = b""
        try:
            while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out


def test_an_anonymous_write_is_refused_before_its_body_is_read(bounded):
    # a client announces 100 MB and sends none of it: the answer comes at once, from the headers alone
    t = time.monotonic()
    out = raw(bounded.port, "POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            "Content-Length: 100000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401") and b"application/problem+json" in out, out[:300]
    assert time.monotonic() - t < 3


def test_bodies_over_the_limit_get_413(bounded):
    admin = {"Authorization": f"Bearer {TOKEN}"}
    out = raw(bounded.port, f"POST /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413"), out[:300]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 1024

    r = httpx.post(bounded.base_url + "/v1/devices", headers={**admin, "Content-Type": "application/json"},
                   content=chunks(), timeout=10)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert str(BODY_LIMIT) in r.json()["detail"]
    # a body within the limit is read as usual
    r = httpx.post(bounded.base_url + "/v1/devices", headers=admin, json={"device_id": "x"}, timeout=10)
    assert r.status_code == 422


def test_a_query_past_its_time_limit_answers_503(bounded):
    with psycopg.connect(bounded.dsn) as conn:
        conn.execute("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")  # held until this block ends
        t = time.monotonic()
        r = httpx.get(bounded.base_url + "/v1/devices", timeout=30)
        took = time.monotonic() - t
    assert r.status_code == 503 and r.headers["retry-after"], r.text
    assert "CITYSENSE_API_STATEMENT_TIMEOUT_MS" in r.json()["detail"]
    assert took < 10
    assert httpx.get(bounded.base_url + "/v1/devices", timeout=10).status_code == 200  # and the pool is fine after


def test_aggregates_refuse_questions_too_large_and_say_how_to_narrow_them(bounded):
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400))
    r = httpx.get(bounded.base_url + "/v1/aggregates", params={"metric": "pm25", "bucket": "1m", "group_by": "device",
                                                                "start": start}, timeout=10)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "bucket" in r.json()["detail"] and "narrower" in r.json()["detail"]
    r = httpx.get(bounded.base_url + "/v1/aggregates", params={"metric": "pm25", "bucket": "1h", "group_by": "csa"},
                  timeout=10)
    assert r.status_code == 200  # 25 buckets × 55 areas is within the bound


def test_stuck_downloads_and_oversized_bodies_do_not_starve_the_api(bounded):
    url = f"/v1/datasets/readings.csv?start={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() - 86400))}"

    def summary() -> float:
        t = time.monotonic()
        assert httpx.get(bounded.base_url + "/v1/qol/summary", timeout=30).status_code == 200
        return time.monotonic() - t

    usual = max(summary() for _ in range(3))
    # eight downloads whose clients never read: two hold the download slots, the others are told to come back
    stuck, answers = [], []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", bounded.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stuck.append(s)
        time.sleep(0.2)
    for s in stuck:
        s.settimeout(5)
        answers.append(s.recv(200))
    assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) == 2, answers
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(refused) == 6 and all(b"retry-after" in a.lower() for a in refused)
    # and a burst of oversized bodies from anonymous clients
    burst = [threading.Thread(target=raw, args=(bounded.port, "POST /v1/devices HTTP/1.1\r\nHost: x\r\n"
                                                "Content-Length: 50000000\r\n\r\n")) for _ in range(20)]
    for th in burst:
        th.start()
    during = max(summary() for _ in range(3))
    for th in burst:
        th.join(10)
    assert during < 3 * usual + 1.0, (usual, during)
    # a stalled download is ended by the database (idle in transaction), which frees its slot
    for s in stuck:
        s.close()
    wait_until(lambda: httpx.get(bounded.base_url + url, timeout=60).status_code == 200, 30, interval=1,
               what="a download slot free again")
    with psycopg.connect(bounded.dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'citysense-export' "
                            "AND state = 'idle in transaction'").fetchone()[0]
    assert left == 0


def test_metrics_can_be_served_on_their_own_address(bounded):
    assert httpx.get(bounded.base_url + "/metrics", timeout=5).status_code == 404
    r = httpx.get(f"http://127.0.0.1:{bounded.metrics_port}/metrics", timeout=5)
    assert r.status_code == 200 and "citysense_api_" in r.text


def test_admin_writes_are_audited(http, admin, api):
    device_id = unique("aud")
    body = {"device_id": device_id, "kind": "noise", "latitude": 39.2904, "longitude": -76.6122}
    assert http.post("/v1/devices", headers=admin, json=body).status_code == 201
    assert http.post("/v1/devices", headers=admin, json=body).status_code == 409
    assert http.patch(f"/v1/devices/{device_id}", headers=admin, json={"interval_s": 120}).status_code == 200
    assert http.post(f"/v1/devices/{device_id}/credentials", headers=admin).status_code == 200
    assert http.delete(f"/v1/devices/{device_id}", headers=admin).status_code == 200
    assert http.post("/v1/devices", json=body).status_code == 401  # unauthenticated: refused, not audited
    assert http.get("/v1/audit").status_code == 401
    r = http.get("/v1/audit", headers=admin, params={"device_id": device_id})
    assert r.status_code == 200
    entries = r.json()["items"]
    assert [(e["method"], e["status"]) for e in reversed(entries)] == [
        ("POST", 201), ("POST", 409), ("PATCH", 200), ("POST", 200), ("DELETE", 200)]
    assert all(e["client"] == "127.0.0.1" and e["device_id"] == device_id for e in entries)
    assert entries[1]["path"] == f"/v1/devices/{device_id}/credentials"
    assert api.token not in r.text
    page = http.get("/v1/audit", headers=admin, params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    older = http.get("/v1/audit", headers=admin, params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert older["items"][0]["id"] < page["items"][-1]["id"]
