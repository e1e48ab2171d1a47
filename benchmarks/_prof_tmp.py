import sys, time, json
from benchmarks import ingest
from benchmarks.common import stack, register_devices, truncate
n=int(sys.argv[1]) if len(sys.argv)>1 else 30000
with stack() as st:
    ids = register_devices(st.dsn, 8)
    prof = st.root / "profile.txt"
    r = ingest.run_citysense(st, ids, n, 1, profile_to=prof)
    print(json.dumps({k:v for k,v in r.items() if k!='per_process_messages'}))
    s = ingest.summarise_profile(prof, top=25)
    print(json.dumps(s, indent=1))
    import shutil; shutil.copy(prof, "/tmp/profile.txt")
