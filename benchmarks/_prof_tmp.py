import sys
from benchmarks import ingest
from benchmarks.common import stack, register_devices
n=int(sys.argv[1])
with stack() as st:
    ids = register_devices(st.dsn, 8)
    print(ingest.run_consumer(st, ids, n, "paho_acks"))
