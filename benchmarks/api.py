"""API benchmark: a year of history for 1,000 devices, loaded straight into the database (readings,
hourly rollups, daily CSA rollups), then each request under load with wrk (16 connections), next to
the same question asked of the raw hypertable with time_bucket, and a streamed CSV export with the
API's peak memory.

The history is generated in SQL (generate_series with daily and rush-hour cycles), so 20 million rows
load in minutes, laid out in time order as the ingestor writes them (an hour's rows side by side, not each
device's year); every device reports its kind's metrics at one interval chosen to reach the
requested number of readings over the year.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import httpx
import psycopg

from benchmarks.common import TICK, Stack, machine_cpu_s, percentile, python_module
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
ORDER BY t
"""

HOURLY = """
INSERT INTO readings_hourly (bucket, device_key, metric_key, count, sum, min, max, energy)
SELECT time_bucket('1 hour', r.time), r.device_key, r.metric_key, count(*), sum(r.value), min(r.value), max(r.value),
       sum(power(10::float8, r.value / 10)) FILTER (WHERE m.aggregation = 'energy')
FROM readings r JOIN metrics m USING (metric_key)
WHERE r.time >= %(start)s AND r.time < %(end)s
GROUP BY 1, 2, 3
ORDER BY 1
"""


def _qol_history(dsn: str) -> int:
    """The API's background job (services/api/qol/history.py) until nothing is left; the days it did."""
    import asyncio

    from services.api.qol.history import area_indices, catch_up_once

    async def compute(*args):
        return area_indices(*args)

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            done = 0
            while n := await catch_up_once(conn, "America/New_York", 7, compute):
                done += n
            return done
    return asyncio.run(run())


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
        conn.execute("DROP INDEX readings_metric_time_value_idx")
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
        conn.execute("CREATE INDEX readings_metric_time_value_idx ON readings (metric_key, time DESC) INCLUDE (value)")
        conn.execute("CREATE INDEX readings_hourly_metric_bucket_idx ON readings_hourly (metric_key, bucket DESC)")
        conn.execute("INSERT INTO rollup_dirty_days SELECT DISTINCT (bucket AT TIME ZONE 'America/New_York')::date "
                     "FROM readings_hourly ON CONFLICT DO NOTHING")
        while refresh(conn, "America/New_York", max_days=400):
            pass
        # Each CSA's AQI and noise at every past hour, as the API's background job keeps them (one process
        # per core).
        t1 = time.time()
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            qol_days = sum(pool.map(_qol_history, [st.dsn] * 2))
        log(f"    past hours' AQI and noise by CSA for {qol_days} days in {time.time() - t1:.0f} s")
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


#: wrk picks each request's path at random from a file of paths (one per line): a varied mix, never one
#: URL repeated (which with the answer cache on would measure the cache).
PICK = """
local paths = {}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(tonumber(args[2]))
end
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def wrk(base: str, paths: list[str], seconds: int, connections: int, workdir, seed: int = 1,
        cpu: "CpuShare | None" = None) -> dict:
    """wrk's figures for the paths at random; with ``cpu``, where the CPU went during the measured run (not
    the warm-up), per request."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: run `make bench` (it installs it)")
    script, listing = workdir / "pick.lua", workdir / f"paths-{seed}.txt"
    script.write_text(PICK)
    listing.write_text("\n".join(paths) + "\n")
    threads = min(2, connections)
    args = [exe, f"-t{threads}", f"-c{connections}", "-s", str(script)]
    subprocess.run([*args, "-d1s", base, "--", str(listing), str(seed + 99)], capture_output=True)  # warm-up
    with cpu or contextlib.nullcontext():
        out = subprocess.run([*args, f"-d{seconds}s", "--timeout", "30s", "--latency", base, "--", str(listing), str(seed)],
                             capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if "99" not in lat:
        raise RuntimeError(f"wrk gave no latency distribution:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result = {"p50_ms": _unit_ms(lat["50"]), "p99_ms": _unit_ms(lat["99"]), "rps": rps, "requests": total,
              "errors": (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)}
    if cpu is not None:
        result["cpu"] = cpu.per_request_ms(total, "wrk")
    return result


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its children."""
    total = 0.0
    for p in _process_tree(pid):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


class CpuShare:
    """Where the machine's CPU went while a load ran, per request: the API's processes (``api_pid``), the
    client (wrk, or this process's own threads asking SQL directly), and the rest (the database, mostly;
    the broker and everything else on the machine too). What stands between the API and the bare question
    when both saturate the same cores. On a virtual machine, time the hypervisor gave other guests (steal)
    is reported apart: a line run while it was high ran on a slower machine."""

    def __init__(self, api_pid: int | None = None) -> None:
        self.api_pid = api_pid

    def _now(self) -> tuple[float, ...]:
        t = os.times()
        return (*machine_cpu_s(), process_tree_cpu_s(self.api_pid) if self.api_pid else 0.0,
                t.children_user + t.children_system, t.user + t.system, time.monotonic())

    def __enter__(self) -> "CpuShare":
        self._start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        self._end = self._now()

    def per_request_ms(self, requests: int, client: str) -> dict:
        """``client`` "wrk" (a child process that has exited) or "self" (this process's threads)."""
        machine, steal, api, children, own, wall = (b - a for a, b in zip(self._start, self._end))
        used = children if client == "wrk" else own
        n = max(requests, 1)
        return {"api_ms": 1000 * api / n, "client_ms": 1000 * used / n,
                "rest_ms": 1000 * max(machine - api - used, 0.0) / n, "cores_busy": machine / wall,
                "cores_stolen": steal / wall}


def time_sql(dsn: str, queries: list[tuple[str, dict]], connections: int, seconds: float) -> dict:
    """The same questions asked of the raw hypertable under the same concurrency as the API's run:
    ``connections`` threads, each on its own connection, asking them at random for ``seconds``."""
    import random

    times: list[float] = []
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        with psycopg.connect(dsn) as conn:
            while time.monotonic() < stop:
                sql, params = rnd.choice(queries)
                t = time.perf_counter()
                conn.execute(sql, params).fetchall()
                times.append((time.perf_counter() - t) * 1000)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "queries": len(times)}


RAW_AQI = """SELECT d.device_key, r.metric_key, time_bucket('1 hour', r.time), avg(r.value) FROM readings r
  JOIN devices d USING (device_key) WHERE r.metric_key = ANY(%(m)s) {csa} AND r.time >= %(t)s - interval '24 hours'
  AND r.time < %(t)s GROUP BY 1, 2, 3"""
RAW_AGG = """SELECT {grp}, time_bucket(%(b)s, r.time{tz}) AS b, count(*), avg(r.value), min(r.value), max(r.value)
  FROM readings r JOIN devices d USING (device_key) WHERE r.metric_key = %(m)s {csa} AND r.time >= %(s)s AND r.time < %(e)s
  GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 1000"""
RAW_PAGE = """SELECT r.time, r.metric_key, r.value FROM readings r JOIN devices d USING (device_key)
  WHERE d.device_id = %(d)s AND r.time >= %(s)s AND r.time < %(e)s ORDER BY r.time, r.metric_key LIMIT 100"""
RAW_DEVICES = """SELECT * FROM devices WHERE (%(k)s::text IS NULL OR kind = %(k)s) ORDER BY device_id LIMIT 100"""


def request_mix(st: Stack, end: datetime, days: int, n: int = 400, seed: int = 7) -> dict[str, dict]:
    """What a city's users ask, n varied instances per class: each a path for the API and the same question
    as SQL on the raw hypertable."""
    import random

    rnd = random.Random(seed)
    with psycopg.connect(st.dsn) as conn:
        csas = [r[0] for r in conn.execute("SELECT DISTINCT csa FROM devices WHERE kind = 'air_quality' AND csa IS NOT NULL")]
        devices = [r[0] for r in conn.execute("SELECT device_id FROM devices")]
        metrics = dict(conn.execute("SELECT metric, metric_key FROM metrics").fetchall())
        kinds = [r[0] for r in conn.execute("SELECT DISTINCT kind FROM devices")]
        pollutants = [metrics[m] for m in ("pm25", "pm10", "o3", "co", "no2", "so2") if m in metrics]
        used = [r[0] for r in conn.execute("SELECT DISTINCT m.metric FROM metrics m JOIN readings_hourly h USING (metric_key) "
                                           "WHERE h.bucket > %s", (end - timedelta(days=2),))]
    q = lambda **kw: str(httpx.QueryParams(kw))  # noqa: E731
    hour = lambda d: (end - timedelta(hours=rnd.randrange(1, d * 24))).replace(minute=0)  # noqa: E731
    mix: dict[str, dict] = {k: {"paths": [], "sql": []} for k in
                            ("city-wide summary", "AQI of one CSA, now or a past hour", "aggregates over random windows",
                             "raw readings, one device's page", "device lists")}
    for i in range(n):
        # the summary: JSON or the map's GeoJSON, mostly now (the map's question, kept in the background),
        # one in ten about a past hour (computed on request, then cached for an hour)
        fmt = rnd.choice(["json", "geojson"])
        t = end if i % 10 else hour(days)
        mix["city-wide summary"]["paths"].append("/v1/qol/summary?" + q(format=fmt, **({} if t is end else {"at": t.isoformat()})))
        mix["city-wide summary"]["sql"].append((RAW_AQI.format(csa=""), {"m": pollutants, "t": t}))
        csa = rnd.choice(csas)
        t = end if i % 2 else hour(30)
        mix["AQI of one CSA, now or a past hour"]["paths"].append(
            "/v1/qol/aqi?" + q(csa=csa, **({} if t is end else {"at": t.isoformat()})))
        mix["AQI of one CSA, now or a past hour"]["sql"].append((RAW_AQI.format(csa="AND d.csa = %(c)s"),
                                                                 {"m": pollutants, "t": t, "c": csa}))
        metric = rnd.choice(used)
        bucket, span = rnd.choice([("1h", rnd.randint(1, 30)), ("1d", rnd.randint(7, min(days, 365))),
                                   ("15m", rnd.randint(1, 3))])
        group = rnd.choice(["city", "csa"])
        e = end - timedelta(days=rnd.randint(0, max(0, days - span)))
        s = e - timedelta(days=span)
        params = {"metric": metric, "bucket": bucket, "start": s.isoformat(), "end": e.isoformat(), "limit": 1000}
        scope = {}
        if group == "csa":
            scope = {"csa": rnd.choice(csas)}
        mix["aggregates over random windows"]["paths"].append("/v1/aggregates?" + q(**params, group_by=group, **scope))
        size = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "15m": timedelta(minutes=15)}[bucket]
        mix["aggregates over random windows"]["sql"].append((
            RAW_AGG.format(grp="d.csa" if scope else "'city'", csa="AND d.csa = %(c)s" if scope else "",
                           tz=", 'America/New_York'" if bucket == "1d" else ""),
            {"b": size, "m": metrics[metric], "s": s, "e": e, "c": scope.get("csa")}))
        device = rnd.choice(devices)
        s = end - timedelta(days=rnd.randint(1, days))
        mix["raw readings, one device's page"]["paths"].append(
            "/v1/readings?" + q(device_id=device, limit=100, start=s.isoformat(), end=(s + timedelta(days=7)).isoformat()))
        mix["raw readings, one device's page"]["sql"].append((RAW_PAGE, {"d": device, "s": s, "e": s + timedelta(days=7)}))
        kind = rnd.choice([None, *kinds])
        mix["device lists"]["paths"].append("/v1/devices?" + q(limit=100, **({"kind": kind} if kind else {})))
        mix["device lists"]["sql"].append((RAW_DEVICES, {"k": kind}))
    return mix


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


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the API's launcher and its worker processes)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def process_tree_peak_rss_mb(pid: int) -> float:
    peaks = []
    for p in _process_tree(pid):
        try:
            peaks += [int(line.split()[1]) / 1024 for line in open(f"/proc/{p}/status") if line.startswith("VmHWM:")]
        except OSError:
            pass
    return max(peaks)


def run(readings: int = 20_000_000, devices: int = 1000, days: int = 365, seconds: int = 10,
        export_readings: int = 10_000_000, connections: int = 8, workers: int | None = None, log=print) -> dict:
    # One API worker per core, as a deployment on this machine would run (CITYSENSE_API_WORKERS).
    workers = workers or os.cpu_count() or 1
    from benchmarks.common import stack as make_stack

    result: dict = {"devices": devices, "days": days, "connections": connections, "seconds": seconds, "tool": "wrk",
                    "api_workers": workers}
    with make_stack() as st:
        log(f"  loading {readings:,} readings")
        hist = load_history(st, devices, readings, days, log)
        result.update(readings=hist["readings"], history=hist)
        end = hist["end"]
        mix = request_mix(st, end, days)
        log("  the same questions of the raw hypertable")
        raw = {}
        for name, c in mix.items():
            with CpuShare() as cpu:
                raw[name] = time_sql(st.dsn, c["sql"], connections, min(seconds, 10))
            raw[name]["cpu"] = cpu.per_request_ms(raw[name]["queries"], "self")
        everything = [p for c in mix.values() for p in c["paths"]]
        result["classes"] = {}
        for cache_s, label in ((30, "default cache"), (0, "no cache")):
            # the mix on API processes of its own: it must not find the answers the class lines left in the cache
            for lines in (list(mix.items()), [("all of the above, mixed", {"paths": everything})]):
                proc, base = start_api(st, cache_s, workers)
                try:
                    for name, c in lines:
                        log(f"  wrk, {label}: {name}")
                        w = wrk(base, c["paths"], seconds, connections, st.root, cpu=CpuShare(proc.pid))
                        result["classes"].setdefault(name, {"raw": raw.get(name), "examples": c["paths"][:2]})[label] = w
                finally:
                    proc.terminate()
                    proc.wait(30)
        if export_readings:
            result["export"] = run_export(st, hist, days, export_readings, log)
    return result


def run_export(st: Stack, hist: dict, days: int, export_readings: int, log) -> dict:
    """The readings CSV of a span holding ~export_readings readings, through the API, next to PostgreSQL's own
    COPY (SELECT …) TO STDOUT of the same rows (the API's query, read by psql), with the API's peak memory."""
    end = hist["end"]
    span = timedelta(days=min(days, export_readings / (hist["readings"] / days)))
    start = end - span
    q = lambda **kw: str(httpx.QueryParams(kw))  # noqa: E731
    proc, base = start_api(st, 0, 1)
    try:
        url = base + "/v1/datasets/readings.csv?" + q(start=start.isoformat(), end=end.isoformat())
        log(f"  CSV export of ~{export_readings:,} readings")
        t = time.perf_counter()
        lines = size = 0
        with httpx.stream("GET", url, timeout=None) as resp:
            assert resp.status_code == 200, resp.read()[:300]
            for chunk in resp.iter_bytes():
                lines += chunk.count(b"\n")
                size += len(chunk)
        secs = time.perf_counter() - t
        rss = process_tree_peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    from services.store.datasets import READINGS

    log("  COPY (SELECT …) TO STDOUT of the same rows (the API's query, PostgreSQL's own formatting)")
    with psycopg.connect(st.dsn) as conn:
        t = time.perf_counter()
        copied = 0
        with conn.cursor().copy(f"COPY ({READINGS}) TO STDOUT (FORMAT csv, HEADER)",
                                {"start": start, "end": end, "metric": None, "csa": None}) as cp:
            for block in cp:
                copied += bytes(block).count(b"\n")
        copy_s = time.perf_counter() - t
    return {"readings": lines - 1, "seconds": secs, "mb": size / 1e6, "api_peak_rss_mb": rss,
            "copy_rows": copied - 1, "copy_seconds": copy_s, "vs_copy": copy_s / secs}


if __name__ == "__main__":
    import pprint

    pprint.pprint(run(readings=200_000, devices=100, days=30, seconds=2, export_readings=100_000))
