import sys, time, json
from benchmarks.common import stack
from benchmarks.api import load_history
with stack() as st:
    h = load_history(st, 200, 2_000_000, 120, print)
    print(json.dumps({"dsn": st.dsn, "end": str(h["end"]), "mq": st.mqtt_port}), flush=True)
    open("/tmp/benchdb.json","w").write(json.dumps({"dsn": st.dsn, "end": str(h["end"]), "mq": st.mqtt_port}))
    time.sleep(3600*2)
