"""``make bench``: run every benchmark, write ``benchmarks/results/latest.json`` and ``latest.md``, and
put the table into the README between its benchmark markers.

Options: ``--quick`` (smaller sizes, for trying things out), ``--only ingest|api``,
``--readings N`` (API history size; ``--large`` for 100 million).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.common import REPO, RESULTS, machine

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def stolen(x: dict | None) -> str:
    """The cores a virtual machine's hypervisor gave other guests during a run, when it was measured."""
    return f"{x['cores_stolen']:.2f}" if x and "cores_stolen" in x else "–"


def ingest_table(r: dict) -> list[str]:
    c1 = r["citysense_1"]["msg_per_s"]

    def row(label: str, key: str, bold: bool = False) -> str:
        x = r[key]
        v = f"**{fmt(x['msg_per_s'])}**" if bold else fmt(x["msg_per_s"])
        return (f"| {label} | {v} | {fmt(5 * x['msg_per_s'])} | {x['msg_per_s'] / c1:.2f}× | "
                f"{fmt(x['generator_msg_per_s'])} | {stolen(x)} |")

    rows = [
        f"Ingest: {fmt(r['n_messages'])} messages of {r['readings_per_message']} readings (QoS 1) from "
        f"{r['publishers']} `mosquitto_pub -l` C clients (one device topic each), median of {r['repeats']} interleaved "
        "rounds; broker, database, load generator and consumer share the machine's cores.",
        "",
        "| consumer, under the same C-client load | messages/s | readings/s | ÷ citysense (1 process) | generator's own pace, msg/s "
        "| cores taken by the hypervisor (steal) |",
        "|---|---:|---:|---:|---:|---:|",
        row("`mosquitto_sub` (the broker end to end, counts only)", "broker_c"),
        row("bare paho-mqtt subscriber (counts only)", "paho"),
        row("paho, acknowledged in batches from a second thread (the ingestor's scheme, no work)", "paho_acks"),
        row("bare gmqtt (asyncio) subscriber (counts only): the alternative evaluated", "gmqtt"),
        row("**citysense ingestor, 1 process** (validated, stored, acknowledged after commit)", "citysense_1", True),
        row("citysense ingestor, 2 processes (shared subscription)", "citysense_2"),
        row(f"naive bridge (INSERT per reading, commit per message; {fmt(r['naive']['runs'][0]['messages'])} messages)", "naive"),
        f"| PostgreSQL COPY of the same readings straight into the hypertable (no MQTT) | {fmt(r['copy']['msg_equiv_per_s'])} | "
        f"{fmt(r['copy']['rows_per_s'])} | {r['copy']['msg_equiv_per_s'] / c1:.2f}× | – | – |",
        "",
        f"- citysense ÷ bare paho: **{r['ratios']['citysense_vs_paho']:.2f}×** (target ≥ 0.7×); "
        f"÷ naive bridge: **{r['ratios']['citysense_vs_naive']:.1f}×** (target ≥ 6×); "
        f"÷ the C clients end to end: {r['ratios']['citysense_vs_c_clients']:.2f}×.",
        f"- 2 processes ÷ 1 end to end: **{r['ratios']['two_vs_one_process']:.2f}×** (target > 1).",
        f"- Lag from publish to commit at {fmt(r['lag']['rate_msg_per_s'])} msg/s (half the measured rate; the generator "
        f"kept {fmt(r['lag']['achieved_msg_per_s'])}), {fmt(r['lag']['messages'])} messages: p50 {fmt(r['lag']['p50_ms'])} ms, "
        f"**p99 {fmt(r['lag']['p99_ms'])} ms** (target ≤ 1,000 ms), max {fmt(r['lag']['max_ms'])} ms; the pipeline thread "
        f"spent {r['lag'].get('pipeline_busy', float('nan')):.0%} of the publishing time writing {fmt(r['lag'].get('batches', 0))} batches, "
        f"and {fmt(r['lag'].get('receipt_to_commit_over_1s', 0))} messages took over a second from receipt to commit.",
        f"- Ingestor peak RSS: **{r['peak_rss_mb']:.0f} MB** (target ≤ 200 MB).",
    ]
    prof = r.get("profile")
    if prof and prof.get("by_area"):
        areas = ", ".join(f"{k} {v}%" for k, v in prof["by_area"].items())
        rows.append(f"- Where the ingestor's CPU goes (py-spy, {fmt(prof['samples'])} samples at "
                    f"{fmt(prof['run_msg_per_s'])} msg/s): {areas}.")
    return rows


def api_table(r: dict) -> list[str]:
    rows = [
        f"API: {fmt(r['readings'])} readings from {fmt(r['devices'])} devices over {r['days']} days (with rollups), "
        f"{r['api_workers']} API worker processes; {r['tool']}, {r['connections']} connections, {r['seconds']} s per line, each request's path drawn at random "
        "from 400 varied ones of its class (random CSAs, devices, metrics, windows, past hours).",
        "",
        "| request class | default cache: p50 / p99 ms | req/s | errors | no cache: p50 / p99 ms | req/s | errors "
        "| the same questions of the raw hypertable, same concurrency: p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in r["classes"].items():
        d, n = c["default cache"], c["no cache"]
        raw = f"{c['raw']['p50_ms']:,.1f} / {c['raw']['p99_ms']:,.1f}" if c.get("raw") else "–"
        rows.append(f"| {name} | {d['p50_ms']:.1f} / **{d['p99_ms']:.1f}** | {d['rps']:,.0f} | {d['errors']} | "
                    f"{n['p50_ms']:.1f} / {n['p99_ms']:.1f} | {n['rps']:,.0f} | {n['errors']} | {raw} |")
    cpu = [(name, c["no cache"]["cpu"], (c.get("raw") or {}).get("cpu")) for name, c in r["classes"].items()
           if "cpu" in c["no cache"]]
    if cpu:
        rows += ["", "Where the CPU of one uncached request goes, in ms of CPU per request (all processes, all cores): the "
                     "API's processes, the client, and the rest of the machine's busy time (the database, mostly). With "
                     "both loads saturating the same cores, a class keeps pace with the bare question only if its total "
                     "is no larger.", "",
                 "| request class | API processes | wrk | rest (database) | total | the bare question: Python client "
                 "| rest (database) | total | busy cores, API / bare | cores taken by the hypervisor (steal), API / bare |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, a, b in cpu:
            bare = (f"{b['client_ms']:.2f}", f"{b['rest_ms']:.2f}", f"{b['client_ms'] + b['rest_ms']:.2f}",
                    f"{b['cores_busy']:.1f}") if b else ("–",) * 4
            rows.append(f"| {name} | {a['api_ms']:.2f} | {a['client_ms']:.2f} | {a['rest_ms']:.2f} | "
                        f"**{a['api_ms'] + a['client_ms'] + a['rest_ms']:.2f}** | {bare[0]} | {bare[1]} | {bare[2]} | "
                        f"{a['cores_busy']:.1f} / {bare[3]} | {stolen(a)} / {stolen(b)} |")
    if "export" in r:
        x = r["export"]
        rows += ["", f"- CSV export of {fmt(x['readings'])} readings through the API: {x['seconds']:.1f} s "
                     f"({fmt(x['readings'] / x['seconds'])} rows/s, {x['mb']:,.0f} MB); PostgreSQL's `COPY (SELECT …) TO STDOUT` "
                     f"of the same rows: {x['copy_seconds']:.1f} s, so the API runs at **{x['vs_copy']:.0%} of COPY** (target ≥ 50 %); "
                     f"API peak RSS **{x['api_peak_rss_mb']:.0f} MB** (target ≤ 250 MB)."]
    return rows


def render(results: dict) -> str:
    m = results["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; "
             f"{m['postgres']}, {m['mosquitto']}, Python {m['python']}. Command: `{results['command']}` "
             f"({results['wall_s'] / 60:.1f} min).", ""]
    if "ingest" in results:
        lines += ingest_table(results["ingest"]) + [""]
    if "api" in results:
        lines += api_table(results["api"]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def update_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{table}{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="make bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny sizes; results go to a temporary file only")
    p.add_argument("--only", choices=["ingest", "api"])
    p.add_argument("--readings", type=int, default=20_000_000)
    p.add_argument("--large", action="store_true", help="100 million readings for the API benchmark")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    t0 = time.time()
    results: dict = {"machine": machine(), "command": "make bench" + (" BENCH_ARGS=" + " ".join(argv) if argv else "")}
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    if a.only in (None, "ingest"):
        from benchmarks import ingest

        say("ingest benchmark")
        if a.smoke:
            results["ingest"] = ingest.run(n=300, publishers=3, repeats=1, naive_n=100, lag_s=2, profile=False, log=say)
        elif a.quick:
            results["ingest"] = ingest.run(n=20_000, repeats=1, naive_n=3_000, lag_s=10, log=say)
        else:
            results["ingest"] = ingest.run(log=say)
    if a.only in (None, "api"):
        try:
            from benchmarks import api
        except ImportError:
            api = None
        if api is not None:
            say("API benchmark")
            readings = 100_000_000 if a.large else a.readings
            if a.smoke:
                results["api"] = api.run(readings=20_000, devices=20, days=30, seconds=1, export_readings=10_000, log=say)
            elif a.quick:
                results["api"] = api.run(readings=2_000_000, devices=200, days=120, seconds=5,
                                         export_readings=1_000_000, log=say)
            else:
                results["api"] = api.run(readings=readings, log=say)
    results["wall_s"] = time.time() - t0
    table = render(results)
    out = a.out or (None if a.smoke else str(RESULTS / "latest"))
    if out:
        with open(out + ".json", "w") as f:
            json.dump(results, f, indent=1, default=str)
        with open(out + ".md", "w") as f:
            f.write(table)
    if not a.smoke and not a.quick and not a.only:
        update_readme(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
