import json, time
import httpx
from benchmarks.api import start_api
info = json.load(open("/tmp/benchdb.json"))
class S:
    dsn = info["dsn"]; mqtt_port = info["mq"]
    from pathlib import Path; root = Path("/tmp")
proc, base = start_api(S, 0, 1)
paths = ["/v1/aggregates?metric=no2&bucket=15m&start=2026-10-12T21%3A00%3A00%2B00%3A00&end=2026-10-14T21%3A00%3A00%2B00%3A00&limit=1000&group_by=csa&csa=Midtown",
         "/v1/metrics", "/v1/devices?limit=100", "/healthz"]
try:
    with httpx.Client(base_url=base) as c:
        for p in paths:
            ts = []
            for i in range(8):
                t = time.perf_counter(); r = c.get(p); ts.append(round((time.perf_counter() - t) * 1000, 1))
            print(r.status_code, ts, p[:60])
finally:
    proc.terminate()
