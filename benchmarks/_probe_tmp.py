import json, time, statistics, sys
from datetime import datetime
import httpx, psycopg
from benchmarks.api import request_mix, start_api
from benchmarks.common import Stack
info = json.load(open("/tmp/benchdb.json"))
class S:  # minimal Stack stand-in
    dsn = info["dsn"]; mqtt_port = info["mq"]
    from pathlib import Path; root = Path("/tmp")
end = datetime.fromisoformat(info["end"])
mix = request_mix(S, end, 120, n=60)
cls = sys.argv[1]
c = mix[cls]
proc, base = start_api(S, 0, 1)
try:
    rows = []
    with psycopg.connect(S.dsn) as conn:
        for path, (sql, params) in zip(c["paths"], c["sql"]):
            httpx.get(base + path, timeout=60)
            t = time.perf_counter(); r = httpx.get(base + path, timeout=60); api = (time.perf_counter() - t) * 1000
            t = time.perf_counter(); conn.execute(sql, params).fetchall(); raw = (time.perf_counter() - t) * 1000
            rows.append((api, raw, r.status_code, path))
    rows.sort(key=lambda x: x[0] - x[1], reverse=True)
    for r in rows[:15]: print(f"{r[0]:7.1f} {r[1]:7.1f} {r[2]} {r[3][:150]}")
    print("median api", statistics.median(r[0] for r in rows), "raw", statistics.median(r[1] for r in rows))
finally:
    proc.terminate()
