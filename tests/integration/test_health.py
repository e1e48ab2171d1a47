"""Liveness and readiness as an orchestrator uses them, and links that follow the deployment."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from services.store.migrate import migrate
from services.launcher.stack import free_port
from tests.helpers import Service, service_env, unique, wait_until


def _get(url: str):
    try:
        return httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return None


def _start_api(workdir, dsn, broker, **extra) -> tuple[Service, str]:
    env = service_env(dsn, broker, **extra)
    svc = Service("api", env, workdir / f"api-{unique('h')}.log").start()
    base = f"http://127.0.0.1:{env['CITYSENSE_API_PORT']}"
    wait_until(lambda: (r := _get(base + "/livez")) is not None and r.status_code == 200, 30, what="the API's liveness")
    return svc, base


def test_the_running_api_and_ingestor_are_live_and_ready(api, ingestor):
    assert httpx.get(api.base_url + "/livez").json() == {"status": "ok"}
    assert httpx.get(api.base_url + "/readyz").json() == {"status": "ready", "database": "ok", "schema": "current",
                                                         "detail": None}
    ready = httpx.get(f"http://127.0.0.1:{ingestor.metrics_port}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "broker_connected": True,
                                                        "database_connected": True, "database_writable": True}


def test_api_is_live_but_not_ready_until_its_schema_is_migrated(workdir, pg, broker):
    name = "health_" + unique("db").replace("-", "_")
    with psycopg.connect(pg.superuser_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER citysense")
    with psycopg.connect(pg.superuser_dsn.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    dsn = pg.dsn.rsplit("/", 1)[0] + f"/{name}"
    svc, base = _start_api(workdir, dsn, broker)
    try:
        r = httpx.get(base + "/readyz")
        assert r.status_code == 503 and "citysense migrate" in r.json()["detail"]
        migrate(dsn)
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200, 10, what="readiness after migrating")
    finally:
        svc.stop()


def test_api_without_its_database_stays_live_and_says_why_it_is_not_ready(workdir, broker):
    svc, base = _start_api(workdir, f"postgresql://citysense:x@127.0.0.1:{free_port()}/citysense", broker)
    try:
        r = httpx.get(base + "/readyz", timeout=10)
        assert r.status_code == 503 and r.json()["database"] == "unavailable"
        assert httpx.get(base + "/livez").status_code == 200
    finally:
        svc.stop()


def test_ingestor_serves_metrics_and_health_before_its_database_is_reachable(workdir, broker):
    env = service_env(f"postgresql://citysense:x@127.0.0.1:{free_port()}/citysense", broker)
    svc = Service("ingest", env, workdir / f"ingest-{unique('h')}.log").start()
    base = f"http://127.0.0.1:{env['CITYSENSE_INGEST_METRICS_PORT']}"
    try:
        wait_until(lambda: (r := _get(base + "/livez")) is not None and r.status_code == 200, 30, what="liveness")
        r = httpx.get(base + "/readyz")
        assert r.status_code == 503 and r.json()["database_connected"] is False
        assert "citysense_ingest_database_connected 0.0" in httpx.get(base + "/metrics").text
        assert svc.alive()
    finally:
        svc.stop()


@pytest.mark.parametrize("extra, headers, expected", [
    ({}, {}, "{base}"),
    ({}, {"X-Forwarded-Proto": "https"}, "https://127.0.0.1:{port}"),  # from 127.0.0.1, trusted by default
    ({"CITYSENSE_API_FORWARDED_ALLOW_IPS": "192.0.2.1"}, {"X-Forwarded-Proto": "https"}, "{base}"),  # untrusted
    ({"CITYSENSE_PUBLIC_URL": "https://sensors.example.gov/"}, {"X-Forwarded-Proto": "https"}, "https://sensors.example.gov"),
])
def test_data_json_links_follow_where_the_api_answers(workdir, dsn, broker, extra, headers, expected):
    svc, base = _start_api(workdir, dsn, broker, **extra)
    try:
        expected = expected.format(base=base, port=base.rsplit(":", 1)[1])
        cat = httpx.get(base + "/data.json", headers=headers).json()
        assert cat["@id"] == f"{expected}/data.json"
        urls = [d["downloadURL"] for ds in cat["dataset"] for d in ds["distribution"] if "downloadURL" in d]
        assert urls and all(u.startswith(f"{expected}/v1/datasets/") for u in urls)
        first = urls[0].replace(expected, base, 1)  # the link answers (reached directly here)
        assert httpx.get(first, params={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}).status_code == 200
    finally:
        svc.stop()


def test_a_database_restart_costs_a_request_at_most_a_503_with_retry_after_never_a_500(workdir, broker):
    """Requests in flight when the database restarts, and the first ones on connections it dropped, answer
    503 with Retry-After (the client's request was fine); the API then serves again by itself. Before,
    they answered 500 and logged an unhandled error."""
    import threading
    import time

    from tests.conftest import make_cluster

    cluster = make_cluster(workdir, "pg-api-restart")
    svc, base = _start_api(workdir, cluster.dsn, broker)
    answers: list[httpx.Response | None] = []
    stop = threading.Event()

    def poll():
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                try:
                    answers.append(client.get("/v1/devices", params={"limit": 5}))
                except httpx.HTTPError:
                    answers.append(None)
                time.sleep(0.02)
    try:
        wait_until(lambda: (r := _get(base + "/readyz")) is not None and r.status_code == 200, 30, what="ready")
        pollers = [threading.Thread(target=poll) for _ in range(3)]
        for p in pollers:
            p.start()
        time.sleep(1)
        for _ in range(2):
            cluster.stop("fast")
            cluster.start()
            time.sleep(1.5)
        stop.set()
        for p in pollers:
            p.join(60)
        codes = [r.status_code if r is not None else 0 for r in answers]
        assert codes and set(codes) <= {200, 503}, sorted(set(codes))
        assert all(r.headers.get("retry-after") for r in answers if r is not None and r.status_code == 503)
        assert codes[-3:] == [200, 200, 200]
        assert "unhandled" not in svc.log_path.read_text()
    finally:
        stop.set()
        svc.stop()
        cluster.stop("immediate")
