#!/usr/bin/env python3
"""Tables for bench/run.sh: RESULTS.md and results.json from the runs bench.py recorded.

    python3 bench/summarize.py --runs runs.jsonl --machine machine.json \
        --expected DATA/expected.json [--meta DATA/meta.json] --out DIR

Standard library only (the smoke run has no venv).  Every RESULT is checked against
expected.json (the generator's reference answer): `check=full` rows compare n_events,
the three edge counts, the checksum (and checksum_micro when both have it) whenever the
RESULT has `edges` and is not `"partial": true` (a main-table row must have edges);
`check=n_events` rows (decode) compare n_events; `check=1h` (pathway's 1 h rule only)
compares n_events, yellow and checksum_micro["1h"].  expected.json itself is compared with
the reference answers of WORKLOAD.md where the dataset is one of those.

Prints the main table to stdout.  Exit status: 0 all good; 1 some answer differs from
expected.json (or expected.json from WORKLOAD.md); 2 some row failed (and none differs).
"""
import argparse
import json
import os
import statistics
import sys

# WORKLOAD.md "Reference answers (seed 42)": n_events, yellow, orange, red, checksum
REFERENCE = {
    (200, 72, 42): (172_637, 94, 43, 26, "5001013.500000"),
    (1000, 72, 42): (863_202, 467, 222, 132, "23353576.600000"),
    (10000, 24, 42): (2_877_145, 1069, 584, 228, "30524400.500000"),
    (10000, 72, 42): (8_631_305, 4914, 2321, 1426, "240283989.500000"),
}
COLORS = ("yellow", "orange", "red")
INPUT_LABEL = {"parquet": "parquet", "csv": "csv", "sorted-csv": "sorted csv"}


def load_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def rate(x):
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def mb(x):
    if x is None:
        return "—"
    return f"{x / 1024:.2f} GB" if x >= 1024 else f"{x:.0f} MB"


def num(x, fmt="{:,.0f}"):
    return "—" if x is None else fmt.format(x)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def check_result(res, mode, exp, group):
    """(ok: True/False/None, why) for one RESULT; None = nothing to check."""
    if mode == "none" or exp is None:
        return None, "not checked"
    diffs = []
    if mode == "n_events":
        if "n_events" not in res:
            return False, "RESULT has no n_events"
        if int(res["n_events"]) != int(exp["n_events"]):
            diffs.append(f"n_events {res['n_events']} != {exp['n_events']}")
        return (not diffs), "; ".join(diffs) or "n_events"
    if mode == "1h":
        if int(res.get("n_events", -1)) != int(exp["n_events"]):
            diffs.append(f"n_events {res.get('n_events')} != {exp['n_events']}")
        if int(res.get("edges", {}).get("yellow", -1)) != int(exp["edges"]["yellow"]):
            diffs.append(f"yellow {res.get('edges', {}).get('yellow')} != {exp['edges']['yellow']}")
        if "checksum_micro" in exp and \
                int(res.get("checksum_micro", {}).get("1h", -1)) != int(exp["checksum_micro"]["1h"]):
            diffs.append(f"checksum_micro[1h] {res.get('checksum_micro', {}).get('1h')} "
                         f"!= {exp['checksum_micro']['1h']}")
        return (not diffs), "; ".join(diffs) or "1 h rule only"
    # full
    if res.get("partial"):
        return None, "partial run (not checked)"
    if "edges" not in res:
        if group == "main":
            return False, "RESULT has no edges"
        return None, "no edges in RESULT"
    if int(res.get("n_events", -1)) != int(exp["n_events"]):
        diffs.append(f"n_events {res.get('n_events')} != {exp['n_events']}")
    edges = res.get("edges") or {}
    for c in COLORS:
        got = edges.get(c)
        if got is None or int(got) != int(exp["edges"][c]):
            diffs.append(f"{c} {got} != {exp['edges'][c]}")
    if any(d.split()[0] in COLORS for d in diffs):
        # storm --trace also reports the edges counted at readings only (WORKLOAD.md's definition)
        re_ = (res.get("trace") or {}).get("reading_edges")
        if isinstance(re_, dict) and all(int(re_.get(c, -1)) == int(exp["edges"][c]) for c in COLORS):
            diffs.append("(trace.reading_edges do match: the engine's raises differ)")
    if res.get("checksum") is None:
        if mode == "full+checksum":
            diffs.append("RESULT has no checksum")
        what = "n_events, edges (no checksum reported)"
    else:
        what = "n_events, edges, checksum"
        if str(res["checksum"]) != str(exp["checksum"]):
            diffs.append(f"checksum {res.get('checksum')} != {exp['checksum']}")
    if isinstance(res.get("checksum_micro"), dict) and "checksum_micro" in exp:
        for w in ("1h", "3h", "24h"):
            if int(res["checksum_micro"].get(w, -1)) != int(exp["checksum_micro"][w]):
                diffs.append(f"checksum_micro[{w}] {res['checksum_micro'].get(w)} != {exp['checksum_micro'][w]}")
    return (not diffs), "; ".join(diffs) or what


def summarize_row(name, runs, exp):
    tags = {k: runs[0].get(k) for k in ("tool", "group", "input", "check", "threads", "transport",
                                       "rate", "gauges") if runs[0].get(k) is not None}
    ok_runs = [r for r in runs if r["rc"] == 0 and r.get("result") and not r.get("timed_out")]
    failed = [r for r in runs if r not in ok_runs]
    walls = [r["wall_s"] for r in ok_runs]
    results = [r["result"] for r in ok_runs]
    last = results[-1] if results else {}
    n = last.get("n_events")
    wall = med(walls)
    agree, why = None, "no result"
    if results:
        checks = [check_result(res, tags.get("check", "full"), exp, tags.get("group")) for res in results]
        if any(c[0] is False for c in checks):
            agree, why = False, "; ".join(sorted({c[1] for c in checks if c[0] is False}))
        elif all(c[0] is True for c in checks):
            agree, why = True, checks[-1][1]
        else:
            agree, why = None, checks[-1][1]
    fail_reason = None
    if failed:
        f = failed[-1]
        if f.get("timed_out"):
            fail_reason = f"timed out after {f['wall_s']:.0f} s"
        elif f["rc"] == 127 and f.get("wall_s", 0) == 0:
            fail_reason = "not installed / not built"
        elif f["rc"] != 0:
            fail_reason = f"exit code {f['rc']}"
        else:
            fail_reason = "no RESULT line"
    s = dict(name=name, **tags, runs_total=len(runs), runs_ok=len(ok_runs),
             failed=bool(failed), fail_reason=fail_reason,
             stderr_tail=(failed[-1].get("stderr_tail", "") if failed else ""),
             cmd=runs[0].get("cmd"),
             tool_version=last.get("version"), tool_name=last.get("tool"), n_events=n,
             wall_s_median=wall, wall_s_min=min(walls) if walls else None,
             wall_s_max=max(walls) if walls else None,
             readings_per_s=(n / wall if (n and wall) else None),
             peak_rss_mb_median=med(r["peak_rss_mb"] for r in ok_runs),
             load1_median=med(r.get("load1") for r in ok_runs),
             agrees=agree, check_detail=why,
             edges=last.get("edges"), checksum=last.get("checksum"))
    # kind-specific medians over the runs' RESULTs
    for key in ("events_per_s", "ns_per_event", "p50_us", "p99_us", "p999_us", "max_us", "offered_per_s",
                "achieved_per_s", "state_bytes_per_gauge", "rss_bytes", "rows_per_s"):
        vals = [res.get(key) for res in results if isinstance(res.get(key), (int, float))]
        if vals:
            s[key] = statistics.median(vals)
    return s


def wall_cell(s):
    if s["wall_s_median"] is None:
        return "—"
    if s["runs_ok"] == 1:
        return f"{s['wall_s_median']:.2f} (1 run)"
    return f"{s['wall_s_median']:.2f} ({s['wall_s_min']:.2f}–{s['wall_s_max']:.2f})"


def agree_cell(s):
    if s["failed"] and not s["runs_ok"]:
        return f"**FAILED** ({s['fail_reason']})"
    cell = {True: "✓", False: f"**✗ MISMATCH**: {s['check_detail']}", None: "—"}[s["agrees"]]
    if s["agrees"] and "no checksum" in (s["check_detail"] or ""):
        cell += " (n, edges; no checksum reported)"
    if s["failed"]:
        cell += f"; **a run FAILED** ({s['fail_reason']})"
    if s.get("check") == "1h" and s["agrees"]:
        cell += " (1 h rule)"
    return cell


TOOL_LABEL = {"duckdb": "DuckDB (SQL window functions)", "polars": "Polars (rolling_sum_by over station)",
              "storm-limit": "Rust limit (1 thread, hand-written)", "bytewax": "Bytewax (stateful per station)",
              "flink": "Apache Flink (PyFlink SQL, streaming, p=1)", "pathway": "Pathway (1 h rule only)"}


def tool_cell(s):
    tool = s.get("tool")
    if tool == "forewarn":
        return f"**forewarn** {s['tool_version']}" if s.get("tool_version") else "**forewarn**"
    label = TOOL_LABEL.get(tool, s["name"])
    if s.get("tool_version") and tool != "storm-limit":
        label += f" {s['tool_version']}"
    return label


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


# The end-to-end row on two engine threads (`storm e2e --threads 2`, as the daemon's shards).
FW_PARQUET_2T = "forewarn parquet 2 threads"


def main_table(rows):
    by_name = {s["name"]: s for s in rows}
    refs = {"parquet": "forewarn parquet", "csv": "forewarn csv", "parquet2": FW_PARQUET_2T}
    fw_rate = {k: (by_name[n]["readings_per_s"] if n in by_name else None) for k, n in refs.items()}
    two = fw_rate["parquet2"] is not None
    head = ("| tool | input | readings/s (median) | wall s (median, min–max) | peak RSS | "
            "forewarn parquet ÷ peer | forewarn csv ÷ peer |")
    rule = "|---|---|---:|---:|---:|---:|---:|"
    if two:
        head += " forewarn parquet, 2 threads ÷ peer |"
        rule += "---:|"
    lines = [head + " agrees |", rule + "---|"]
    for s in rows:
        if s.get("group") != "main":
            continue
        inp = INPUT_LABEL.get(s.get("input"), s.get("input") or "")
        if s.get("tool") == "forewarn":
            cells = ["1 (reference)" if s["name"] == refs[k] else "—"
                     for k in ("parquet", "csv", "parquet2")]
        else:
            r = s["readings_per_s"]
            csv_in = "csv" in (s.get("input") or "")
            cells = [ratio(fw_rate["parquet"], r),
                     ratio(fw_rate["csv"], r) if csv_in else "—",
                     ratio(fw_rate["parquet2"], r)]
        if not two:
            cells = cells[:2]
        inp_cell = inp + (" (2 threads)" if s["name"] == FW_PARQUET_2T else "")
        rss = mb(s["peak_rss_mb_median"])
        lines.append(f"| {tool_cell(s)} | {inp_cell} | {rate(s['readings_per_s'])} | {wall_cell(s)} | {rss} "
                     f"| {' | '.join(cells)} | {agree_cell(s)} |")
    return lines


def floor_table(rows):
    by_name = {s["name"]: s for s in rows}
    lines = ["| input | e2e readings/s | e2e wall s | decode-only readings/s | decode wall s | "
             "e2e ÷ decode (wall) | decode share of e2e | agrees (e2e / decode n_events) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    any_row = False
    for inp in ("parquet", "csv"):
        e, d = by_name.get(f"forewarn {inp}"), by_name.get(f"forewarn decode {inp}")
        if not d:
            continue
        any_row = True
        ew = e["wall_s_median"] if e else None
        dw = d["wall_s_median"] if d else None
        share = f"{100 * dw / ew:.0f} %" if (ew and dw) else "—"
        lines.append(f"| {inp} | {rate(e['readings_per_s']) if e else '—'} | {wall_cell(e) if e else '—'} "
                     f"| {rate(d['readings_per_s']) if d else '—'} | {wall_cell(d) if d else '—'} "
                     f"| {ratio(ew, dw)} | {share} "
                     f"| {agree_cell(e) if e else '—'} / {agree_cell(d) if d else '—'} |")
    return lines if any_row else []


def core_table(rows):
    core = [s for s in rows if s.get("group") == "core"]
    if not core:
        return []
    one = next((s for s in core if str(s.get("threads")) == "1"), None)
    lines = ["| threads | events/s (median) | ns/event | vs 1 thread | wall s | peak RSS | agrees |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for s in core:
        lines.append(f"| {s.get('threads', '?')} | {rate(s.get('events_per_s'))} "
                     f"| {num(s.get('ns_per_event'), '{:.1f}')} "
                     f"| {ratio(s.get('events_per_s'), one.get('events_per_s')) if one else '—'} "
                     f"| {wall_cell(s)} | {mb(s['peak_rss_mb_median'])} | {agree_cell(s)} |")
    return lines


def latency_table(rows):
    lat = [s for s in rows if s.get("group") == "latency"]
    if not lat:
        return []
    lines = ["| path | offered readings/s | achieved readings/s | p50 µs | p99 µs | p99.9 µs | max µs "
             "| peak RSS | agrees |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in lat:
        offered = s.get("offered_per_s", float(s["rate"]) if s.get("rate") else None)
        lines.append(f"| {s.get('transport', '?')} | {num(offered)} | {num(s.get('achieved_per_s'))} "
                     f"| {num(s.get('p50_us'), '{:,.1f}')} | {num(s.get('p99_us'), '{:,.1f}')} "
                     f"| {num(s.get('p999_us'), '{:,.1f}')} | {num(s.get('max_us'), '{:,.1f}')} "
                     f"| {mb(s['peak_rss_mb_median'])} | {agree_cell(s)} |")
    return lines


def memory_table(rows):
    mem = [s for s in rows if s.get("group") == "memory"]
    if not mem:
        return []
    lines = ["| gauges | state bytes/gauge | RSS (reported) | peak RSS (sampled) | wall s | agrees |",
             "|---:|---:|---:|---:|---:|---|"]
    for s in mem:
        rss = s.get("rss_bytes")
        lines.append(f"| {num(float(s['gauges']) if s.get('gauges') else None)} "
                     f"| {num(s.get('state_bytes_per_gauge'), '{:,.1f}')} "
                     f"| {mb(rss / 2**20) if rss is not None else '—'} | {mb(s['peak_rss_mb_median'])} "
                     f"| {wall_cell(s)} | {agree_cell(s)} |")
    return lines


def history_table(rows):
    hist = [s for s in rows if s.get("group") == "history"]
    if not hist:
        return []
    lines = ["| input | rows/s (reported) | readings/s (wall) | wall s | peak RSS | agrees |",
             "|---|---:|---:|---:|---:|---|"]
    for s in hist:
        lines.append(f"| {s.get('input', '')} | {rate(s.get('rows_per_s'))} | {rate(s['readings_per_s'])} "
                     f"| {wall_cell(s)} | {mb(s['peak_rss_mb_median'])} | {agree_cell(s)} |")
    return lines


def trace_table(rows):
    tr = [s for s in rows if s.get("group") == "trace"]
    if not tr:
        return []
    lines = ["| run | input | wall s | edges y/o/r | checksum | agrees |", "|---|---|---:|---|---|---|"]
    for s in tr:
        e = s.get("edges") or {}
        lines.append(f"| {s['name']} | {s.get('input', '')} | {wall_cell(s)} "
                     f"| {e.get('yellow', '—')}/{e.get('orange', '—')}/{e.get('red', '—')} "
                     f"| {s.get('checksum') or '—'} | {agree_cell(s)} |")
    return lines


def made_by(meta):
    # storm_gen records "numpy": "rust"; gen_storm.py the numpy version it ran with
    return "storm_gen" if meta.get("numpy") == "rust" else f"gen_storm.py, numpy {meta.get('numpy', '?')}"


def reference_check(meta, exp):
    if not meta or not exp:
        return None, "no meta.json/expected.json"
    key = (int(meta.get("stations", -1)), int(meta.get("hours", -1)), int(meta.get("seed", -1)))
    ref = REFERENCE.get(key)
    if ref is None:
        return None, "no WORKLOAD.md reference for these parameters"
    got = (int(exp["n_events"]), *(int(exp["edges"][c]) for c in COLORS), str(exp["checksum"]))
    if got == ref:
        return True, "expected.json equals the WORKLOAD.md reference answer"
    return False, f"expected.json {got} != WORKLOAD.md reference {ref}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--meta")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    runs = load_jsonl(a.runs)
    machine = json.load(open(a.machine))
    exp = json.load(open(a.expected)) if os.path.exists(a.expected) else None
    meta = json.load(open(a.meta)) if a.meta and os.path.exists(a.meta) else None
    groups = {}
    for r in runs:
        groups.setdefault(r["name"], []).append(r)
    rows = [summarize_row(name, rs, exp) for name, rs in groups.items()]
    ref_ok, ref_why = reference_check(meta, exp)

    mismatches = [s for s in rows if s["agrees"] is False]
    failures = [s for s in rows if s["failed"]]
    status = "MISMATCH" if (mismatches or ref_ok is False) else ("FAILURES" if failures else "ok")

    m = machine
    main_lines = main_table(rows)
    md = [f"# forewarn vs peers on the storm workload — {m['dataset']}", ""]
    if status != "ok":
        md += [f"> **{status}**: " + "; ".join(
            [f"{s['name']}: answer differs ({s['check_detail']})" for s in mismatches]
            + ([f"expected.json: {ref_why}"] if ref_ok is False else [])
            + [f"{s['name']}: {s['fail_reason']}" for s in failures]), ""]
    md += [
        f"Command: `{m['command']}`  ",
        f"Date: {m['started']} – {m['finished']} (UTC)  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, kernel {m['kernel']} ({m['os']}); "
        f"load average at start {m['load_at_start']}  ",
        f"Toolchain: {m['rustc']}; forewarn build: {m['build']} ({m.get('profile', 'release')} profile"
        + ("; a debug build's figures mean nothing" if m.get('profile') == 'debug' else "")
        + f"); `storm`: `{m['storm']}`  ",
        "Peers: " + (", ".join(f"{k} {v}" for k, v in m["versions"].items()) or "none installed") + "  ",
        f"Data: `{m['data_dir']}` — S = {m['stations']:,} stations, H = {m['hours']} h, seed {m['seed']}, "
        f"{(exp or {}).get('n_events', 0):,} readings; generator: {m['generator']}"
        + (f" (made by {made_by(meta)})" if meta and m["generator"] == "cached" else "") + "  ",
        "Reference answer (expected.json): "
        + (f"n={exp['n_events']:,}, edges {exp['edges']['yellow']}/{exp['edges']['orange']}/"
           f"{exp['edges']['red']}, checksum {exp['checksum']}" if exp else "MISSING")
        + (f"; source: {exp['source']}" if exp and exp.get("source") else "")
        + f"; {ref_why}",
        "",
        f"Every figure is the median of {m['runs']} run(s) (Flink: {m['flink_runs']}), runs strictly one after "
        "another. Wall time is end to end (process start, reading the input from the page cache, computing, "
        "printing the answer); readings/s = readings ÷ median wall. Peak RSS: the process tree's summed RSS "
        "sampled at 20 Hz. The machine is shared and noisy: read the **ratios**, not the absolute times. "
        "A ratio > 1 means forewarn is faster.",
        "",
        "## forewarn and peers, end to end",
        "",
        *main_lines,
    ]
    for title, lines, note in (
            ("Checksum: a traced run (every evaluation checked)", trace_table(rows),
             "`storm e2e --trace` recomputes WORKLOAD.md's checksum from forewarn's evaluations; "
             "slow, so only with --smoke or --traced."),
            ("Floor: end to end vs decoding only", floor_table(rows),
             "`storm decode` reads and decodes the same file and does nothing else: the floor under the e2e row."),
            ("Core: the rules alone (input in memory)", core_table(rows), ""),
            ("Latency: reading → warning, by offered load", latency_table(rows),
             f"Each run offers the load for {m['latency_seconds']} s; figures are medians over runs of each "
             "run's percentile."),
            ("Memory: state per gauge", memory_table(rows), ""),
            ("History: Parquet history written while running", history_table(rows), "")):
        if lines:
            md += ["", f"## {title}", ""] + ([note, ""] if note else []) + lines
    if failures:
        md += ["", "## Failures", ""]
        for s in failures:
            md += [f"### {s['name']}: {s['fail_reason']}", "", f"`{s['cmd']}`", "", "```",
                   (s["stderr_tail"] or "(no stderr)").rstrip()[-1500:], "```", ""]
    md += ["", "Raw runs (every run, every RESULT line): `results.json`."]

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
        f.write("\n".join(md).rstrip() + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(dict(status=status, machine=machine, dataset_meta=meta, expected=exp,
                       expected_vs_workload_md=dict(ok=ref_ok, detail=ref_why),
                       rows=rows, runs=runs), f, indent=1)

    print(f"storm benchmark, {m['dataset']} ({(exp or {}).get('n_events', 0):,} readings), "
          f"median of {m['runs']} run(s), load at start {m['load_at_start']}")
    print("\n".join(main_lines))
    for title, lines in (("traced", trace_table(rows)), ("floor", floor_table(rows)), ("core", core_table(rows)),
                         ("latency", latency_table(rows)), ("memory", memory_table(rows)),
                         ("history", history_table(rows))):
        if lines:
            print(f"\n{title}:")
            print("\n".join(lines))
    if ref_ok is False:
        print(f"\n!!! expected.json does not match WORKLOAD.md: {ref_why}")
    for s in mismatches:
        print(f"\n!!! MISMATCH {s['name']}: {s['check_detail']}")
    for s in failures:
        lines = [x for x in (s["stderr_tail"] or "").splitlines() if x.strip()]
        keys = ("error", "panicked", "traceback", "cannot", "exception")
        tail = [x for x in lines if any(k in x.lower() for k in keys)][:2]
        tail += [x for x in lines[-2:] if x not in tail]
        print(f"\n!!! FAILED {s['name']}: {s['fail_reason']}" + "".join(f"\n    {t}" for t in tail))
    print(f"\nstatus: {status}")
    sys.exit(1 if status == "MISMATCH" else 2 if status == "FAILURES" else 0)


if __name__ == "__main__":
    main()
