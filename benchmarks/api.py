"""API benchmark: a year of history for 1,000 devices, loaded straight into the database (readings,
hourly rollups, daily CSA rollups), then each request under load with wrk (16 connections), next to
the same question asked of the raw hypertable with time_bucket, and a streamed CSV export with the
API's peak memory.

The history is generated in SQL (generate_series with daily and rush-hour cycles), so 20 million rows
load in minutes; every device reports its kind's metrics at one interval chosen to reach the
requested number of readings over the year.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import httpx
import psycopg

from benchmarks.common import Stack, python_module
from services.core.catalogue import KIND_METRICS
from services.launcher.stack import free_port
from services.store.rollups import refresh

VALUE = """
CASE m.metric
  WHEN 'pm25' THEN greatest(0.5, 8 + 5 * rush + 3 * random())
  WHEN 'pm10' THEN greatest(1, 14 + 8 * rush + 5 * random())
  WHEN 'o3' THEN greatest(1, 30 + 18 * day + 4 * random())
  WHEN 'no2' THEN greatest(0.5, 12 + 18 * rush + 3 * random())
  WHEN 'co' THEN greatest(0.05, 0.3 + 0.4 * rush + 0.1 * random())
  WHEN 'so2' THEN 1 + random()
  WHEN 'noise_laeq' THEN 52 + 12 * rush + 4 * day + 3 * random()
  WHEN 'temperature' THEN 13 + 10 * season + 6 * day + random()
  WHEN 'humidity' THEN least(100, 60 - 15 * day + 10 * random())
  WHEN 'traffic_count' THEN round(40 + 160 * rush + 20 * random())
  WHEN 'water_level' THEN 1.2 + 0.15 * sin(2 * pi() * extract(epoch FROM t) / 44712) + 0.02 * random()
  WHEN 'rainfall' THEN CASE WHEN random() < 0.05 THEN 2 * random() ELSE 0 END
END"""

GENERATE = f"""
INSERT INTO readings (time, device_key, metric_key, value)
SELECT t, d.device_key, m.metric_key, {VALUE}
FROM devices d
JOIN (VALUES {{kind_metrics}}) AS km(kind, metric) ON km.kind = d.kind
JOIN metrics m ON m.metric = km.metric
CROSS JOIN LATERAL generate_series(
    %(start)s::timestamptz + (d.device_key %% 60) * interval '1 minute', %(end)s::timestamptz - interval '1 second',
    %(step)s::interval) AS t
CROSS JOIN LATERAL (SELECT extract(hour FROM t AT TIME ZONE 'America/New_York')
                         + extract(minute FROM t) / 60.0 AS h) hh
CROSS JOIN LATERAL (SELECT sin(2 * pi() * (hh.h - 9) / 24) AS day,
                           greatest(exp(-((hh.h - 8) ^ 2) / 2), exp(-((hh.h - 17.5) ^ 2) / 2.5)) AS rush,
                           -cos(2 * pi() * (extract(doy FROM t) - 20) / 365) AS season) c
"""

HOURLY = """
INSERT INTO readings_hourly (bucket, device_key, metric_key, count, sum, min, max, energy)
SELECT time_bucket('1 hour', r.time), r.device_key, r.metric_key, count(*), sum(r.value), min(r.value), max(r.value),
       sum(power(10::float8, r.value / 10)) FILTER (WHERE m.aggregation = 'energy')
FROM readings r JOIN metrics m USING (metric_key)
WHERE r.time >= %(start)s AND r.time < %(end)s
GROUP BY 1, 2, 3
"""


def load_history(st: Stack, devices: int, readings: int, days: int, log) -> dict:
    from simulators.fleet import build_fleet
    from simulators.registration import register_in_store

    fleet = [d.__class__(f"hist-{i:05d}", d.kind, d.latitude, d.longitude, d.interval_s)
             for i, d in enumerate(build_fleet(devices, seed=11))]
    per_year = sum(len(KIND_METRICS[d.kind]) for d in fleet) * days * 86400
    step_s = max(60, round(per_year / readings))
    fleet = [d.__class__(d.device_id, d.kind, d.latitude, d.longitude, step_s) for d in fleet]
    register_in_store(st.dsn, fleet)
    kind_metrics = ", ".join(f"('{k}', '{m}')" for k, ms in KIND_METRICS.items() for m in ms)
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    t0 = time.time()
    # Two loaders in parallel (one per core), each on its own months; the secondary indexes are built
    # once at the end, which is faster than keeping them up to date row by row.
    with psycopg.connect(st.dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX readings_metric_time_idx")
        conn.execute("DROP INDEX readings_hourly_metric_bucket_idx")
    chunks, s = [], start
    while s < end:
        chunks.append((s, min(s + timedelta(days=15), end)))
        s += timedelta(days=15)

    def loader(my_chunks):
        with psycopg.connect(st.dsn, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            for a, b in my_chunks:
                conn.execute(GENERATE.format(kind_metrics=kind_metrics), {"start": a, "end": b, "step": timedelta(seconds=step_s)})
                conn.execute(HOURLY, {"start": a, "end": b})

    threads = [threading.Thread(target=loader, args=(chunks[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log(f"    {len(chunks)} half-months loaded in {time.time() - t0:.0f} s; indexing and daily rollups")
    with psycopg.connect(st.dsn, autocommit=True) as conn:
        conn.execute("CREATE INDEX readings_metric_time_idx ON readings (metric_key, time DESC)")
        conn.execute("CREATE INDEX readings_hourly_metric_bucket_idx ON readings_hourly (metric_key, bucket DESC)")
        conn.execute("INSERT INTO rollup_dirty_days SELECT DISTINCT (bucket AT TIME ZONE 'America/New_York')::date "
                     "FROM readings_hourly ON CONFLICT DO NOTHING")
        while refresh(conn, "America/New_York", max_days=400):
            pass
        conn.execute("VACUUM ANALYZE")
        n = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        hourly = conn.execute("SELECT count(*) FROM readings_hourly").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(hypertable_size('readings'))").fetchone()[0]
    return {"readings": n, "hourly_rows": hourly, "interval_s": step_s, "start": start, "end": end,
            "load_seconds": time.time() - t0, "readings_table": size}


def _unit_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def wrk(url: str, seconds: int, connections: int = 16) -> dict:
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: run `make bench` (it installs it)")
    subprocess.run([exe, "-t2", f"-c{connections}", "-d1s", url], capture_output=True)  # warm-up
    out = subprocess.run([exe, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if "99" not in lat:
        raise RuntimeError(f"wrk gave no latency distribution for {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"p50_ms": _unit_ms(lat["50"]), "p99_ms": _unit_ms(lat["99"]), "rps": rps,
            "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else None}


def time_sql(dsn: str, sql: str, params: dict, repeats: int = 5) -> float:
    with psycopg.connect(dsn) as conn:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            conn.execute(sql, params).fetchall()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def start_api(st: Stack, cache_s: float, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(CITYSENSE_DATABASE_URL=st.dsn, CITYSENSE_MQTT_URL=f"mqtt://127.0.0.1:{st.mqtt_port}",
               CITYSENSE_API_PORT=str(port), CITYSENSE_API_CACHE_S=str(cache_s), CITYSENSE_API_WORKERS=str(workers),
               CITYSENSE_API_MAX_PAGE_SIZE="1000", CITYSENSE_API_POOL_SIZE="8")
    log = open(st.root / f"api-{port}.log", "ab")
    proc = python_module("services.launcher.cli", "api", env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(base + "/healthz", timeout=1).status == 200:
                return proc, base
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the API did not start")


def process_tree_peak_rss_mb(pid: int) -> float:
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    peaks = []
    for p in pids:
        try:
            peaks += [int(line.split()[1]) / 1024 for line in open(f"/proc/{p}/status") if line.startswith("VmHWM:")]
        except OSError:
            pass
    return max(peaks)


def run(readings: int = 20_000_000, devices: int = 1000, days: int = 365, seconds: int = 10,
        export_readings: int = 10_000_000, workers: int = 1, log=print) -> dict:
    from benchmarks.common import stack as make_stack

    result: dict = {"devices": devices, "days": days, "connections": 16, "seconds": seconds, "tool": "wrk",
                    "api_workers": workers}
    with make_stack() as st:
        log(f"  loading {readings:,} readings")
        hist = load_history(st, devices, readings, days, log)
        result.update(readings=hist["readings"], history=hist)
        end = hist["end"]
        with psycopg.connect(st.dsn) as conn:
            csa = conn.execute("SELECT csa FROM devices WHERE kind = 'air_quality' GROUP BY csa ORDER BY count(*) DESC, csa "
                               "LIMIT 1").fetchone()[0]
            device = conn.execute("SELECT device_id FROM devices WHERE kind = 'air_quality' ORDER BY device_id LIMIT 1").fetchone()[0]
        q = lambda **kw: str(httpx.QueryParams(kw))  # noqa: E731
        month, year = (end - timedelta(days=30)).isoformat(), (end - timedelta(days=days)).isoformat()
        endpoints = [
            ("latest AQI by CSA, city-wide (/v1/qol/summary)", "/v1/qol/summary",
             """SELECT d.csa, r.metric_key, time_bucket('1 hour', r.time), avg(r.value) FROM readings r
                JOIN devices d USING (device_key) WHERE r.metric_key = ANY('{1,2,3,4,5,6}') AND r.time >= %(e)s - interval '24 hours'
                AND r.time < %(e)s GROUP BY 1, 2, 3"""),
            ("hourly pm25 over 30 days, one CSA", "/v1/aggregates?" + q(metric="pm25", bucket="1h", group_by="csa", csa=csa,
                                                                       start=month, end=end.isoformat(), limit=1000),
             """SELECT time_bucket('1 hour', r.time), count(*), avg(r.value), min(r.value), max(r.value) FROM readings r
                JOIN devices d USING (device_key) WHERE r.metric_key = 1 AND d.csa = %(csa)s
                AND r.time >= %(e)s - interval '30 days' AND r.time < %(e)s GROUP BY 1"""),
            ("daily pm25 over a year, city", "/v1/aggregates?" + q(metric="pm25", bucket="1d", group_by="city", start=year,
                                                                    end=end.isoformat(), limit=1000),
             """SELECT time_bucket('1 day', time), count(*), avg(value), min(value), max(value) FROM readings
                WHERE metric_key = 1 AND time >= %(e)s - interval '365 days' AND time < %(e)s GROUP BY 1"""),
            ("one page of raw readings (100, one device)", "/v1/readings?" + q(device_id=device, limit=100,
                                                                                start=(end - timedelta(days=7)).isoformat(),
                                                                                end=end.isoformat()), None),
        ]
        params = {"e": end, "csa": csa}
        result["endpoints"] = []
        log("  raw-hypertable equivalents")
        raw = {name: time_sql(st.dsn, sql, params) if sql else None for name, _, sql in endpoints}
        for cache_s, label in ((30, "cached"), (0, "uncached")):
            proc, base = start_api(st, cache_s, workers)
            try:
                for name, path, _ in endpoints:
                    log(f"  wrk {label}: {name}")
                    cold_t = time.perf_counter()
                    r = httpx.get(base + path, timeout=120)
                    cold_ms = (time.perf_counter() - cold_t) * 1000
                    assert r.status_code == 200, (path, r.text[:300])
                    w = wrk(base + path, seconds)
                    result["endpoints"].append({"name": name + ("" if cache_s else " — no answer cache"), "path": path,
                                                "first_request_ms": cold_ms, "raw_p50_ms": raw[name], **w})
            finally:
                proc.terminate()
                proc.wait(30)
        if export_readings:
            per_day = hist["readings"] / days
            span = timedelta(days=min(days, export_readings / per_day))
            proc, base = start_api(st, 0, 1)
            try:
                url = base + "/v1/datasets/readings.csv?" + q(start=(end - span).isoformat(), end=end.isoformat())
                log(f"  CSV export of ~{export_readings:,} readings")
                t = time.perf_counter()
                lines = size = 0
                with httpx.stream("GET", url, timeout=None) as resp:
                    assert resp.status_code == 200
                    for chunk in resp.iter_bytes():
                        lines += chunk.count(b"\n")
                        size += len(chunk)
                secs = time.perf_counter() - t
                result["export"] = {"readings": lines - 1, "seconds": secs, "mb": size / 1e6,
                                    "api_peak_rss_mb": process_tree_peak_rss_mb(proc.pid)}
            finally:
                proc.terminate()
                proc.wait(30)
    return result


if __name__ == "__main__":
    import pprint

    pprint.pprint(run(readings=200_000, devices=100, days=30, seconds=2, export_readings=100_000))
