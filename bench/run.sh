#!/usr/bin/env bash
# The storm benchmark (issue 5): forewarn and its peers on the same generated files, in one
# invocation, strictly one after another; a table of readings/s, wall time, peak RSS and the
# forewarn ÷ peer ratios, latency/core/memory/history tables, every answer checked.
#
#   bash bench/run.sh [options]
#
#   --stations S       rain gauges (default 10000)
#   --hours H          hours of feed (default 72)
#   --seed N           generator seed (default 42)
#   --runs N           timed runs per row, the median is reported (default 3; memory rows: 1)
#   --peers LIST       comma list of duckdb,polars,limit,bytewax,flink,pathway, or none
#                      (default duckdb,polars,limit,bytewax,flink; pathway runs its 1 h rule only)
#   --forewarn LIST    comma list of e2e,decode,core,latency,memory,history, all or none (default all)
#   --flink-runs N     runs of the Flink row (default 1: ~10 min at S=10000 H=72)
#   --flink-timeout S  seconds before a Flink run is killed (default 1800)
#   --timeout S        seconds before any other run is killed (default 900)
#   --latency-seconds D  how long each `storm latency` run offers load (default 10)
#   --traced           also one `storm e2e --trace` run, which reports the checksum (slow)
#   --smoke            S=50 H=6, 1 run, no peers, small latency/memory rows, --traced, debug
#                      build, output in the build directory (what CI runs); any failure or
#                      mismatch exits non-zero
#   --profile P        release (default) or debug: which build of the benchmark binaries runs
#                      (debug reuses what `cargo test` built; its figures mean nothing)
#   --data DIR         datasets, DIR/S{S}_H{H} (default $HOME/.cache/forewarn/bench-data)
#   --out DIR          where RESULTS.md and results.json go (default bench/; --smoke:
#                      <cargo target dir>/bench-smoke, outside git)
#   --generator rust|python  rust: target/release/storm_gen (default; falls back to python
#                      when the binary is missing); python: bench/peers/gen_storm.py, whose
#                      expected.json is then DuckDB's answer (marked so in RESULTS.md)
#   --storm PATH       the forewarn `storm` binary to time (default: the one cargo builds)
#   --no-build         do not run cargo build
#
# Binaries are built with `cargo build --release -p forewarn-bench --locked` into cargo's
# target directory (target/, or $CARGO_TARGET_DIR as scripts/test.sh and CI set it).
# Peers come from bench/setup-peers.sh (venvs under $PEERS_VENV, storm-limit under
# $PEERS_LIMIT_TARGET).  Exit status: 0 all rows ran and agree; 1 some answer differs from
# expected.json; 2 some row failed (not built, not installed, crashed, timed out).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
P="$HERE/peers"
COMMAND_LINE="bash bench/run.sh"
for a in "$@"; do
    case "$a" in
        *[!A-Za-z0-9_./,=:+-]*|'') COMMAND_LINE+=" $(printf '%q' "$a")" ;;
        *) COMMAND_LINE+=" $a" ;;
    esac
done

S=10000 H=72 SEED=42 RUNS=3
PEERS="duckdb,polars,limit,bytewax,flink"
FOREWARN="all"
FLINK_RUNS=1 FLINK_TIMEOUT=1800 TIMEOUT=900 LAT_SECONDS=10
SMOKE=no BUILD=yes GENERATOR=rust TRACED=no PROFILE=""
DATA="$HOME/.cache/forewarn/bench-data"
OUT="" STORM=""
LAT_RATES="10000 100000 1000000" MQTT_RATE=50000 GAUGES="10000 100000 1000000"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
need() { if [ $# -lt 2 ] || [ -z "$2" ]; then echo "run.sh: $1 needs a value" >&2; exit 64; fi; }
while [ $# -gt 0 ]; do
    case "$1" in
        --stations) need "$@"; S="$2"; shift 2 ;;
        --hours) need "$@"; H="$2"; shift 2 ;;
        --seed) need "$@"; SEED="$2"; shift 2 ;;
        --runs) need "$@"; RUNS="$2"; shift 2 ;;
        --peers) need "$@"; PEERS="$2"; shift 2 ;;
        --forewarn) need "$@"; FOREWARN="$2"; shift 2 ;;
        --flink-runs) need "$@"; FLINK_RUNS="$2"; shift 2 ;;
        --flink-timeout) need "$@"; FLINK_TIMEOUT="$2"; shift 2 ;;
        --timeout) need "$@"; TIMEOUT="$2"; shift 2 ;;
        --latency-seconds) need "$@"; LAT_SECONDS="$2"; shift 2 ;;
        --smoke) SMOKE=yes; shift ;;
        --profile) need "$@"; PROFILE="$2"; shift 2 ;;
        --traced) TRACED=yes; shift ;;
        --data) need "$@"; DATA="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --generator) need "$@"; GENERATOR="$2"; shift 2 ;;
        --storm) need "$@"; STORM="$2"; shift 2 ;;
        --no-build) BUILD=no; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option: $1 (see --help)" >&2; exit 64 ;;
    esac
done

V="${PEERS_VENV:-$HOME/.cache/forewarn/peers-venv}"
LIMIT="${PEERS_LIMIT_TARGET:-$HOME/.cache/forewarn/peers-limit-target}/release/storm-limit"
if [ -x "$V/main/bin/python" ]; then PY="$V/main/bin/python"; else PY="$(command -v python3)"; fi
# cargo's own target directory (CARGO_TARGET_DIR, .cargo/config, else <workspace>/target)
TARGET_DIR="$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null \
    | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null)" \
    || TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "$PROFILE" ]; then
    if [ "$SMOKE" = yes ]; then PROFILE=debug; else PROFILE=release; fi
fi
case "$PROFILE" in
    release) BIN="$TARGET_DIR/release"; PROFILE_FLAG=(--release) ;;
    debug) BIN="$TARGET_DIR/debug"; PROFILE_FLAG=() ;;
    *) echo "run.sh: --profile release|debug" >&2; exit 64 ;;
esac
if [ "$SMOKE" = yes ]; then
    # tiny and fast: every forewarn benchmark once, answers checked, nothing in the work tree
    S=50 H=6 RUNS=1 PEERS=none LAT_SECONDS=1 TRACED=yes
    LAT_RATES="10000" MQTT_RATE=5000 GAUGES="1000"
    [ -n "$OUT" ] || OUT="$TARGET_DIR/bench-smoke"
fi
[ -n "$OUT" ] || OUT="$HERE"
[ -n "$STORM" ] || STORM="$BIN/storm"
for n in "$S" "$H" "$SEED" "$RUNS" "$FLINK_RUNS" "$FLINK_TIMEOUT" "$TIMEOUT" "$LAT_SECONDS"; do
    case "$n" in ''|*[!0-9]*) echo "run.sh: not a number: '$n'" >&2; exit 64 ;; esac
done
case "$GENERATOR" in rust|python) ;; *) echo "run.sh: --generator rust|python" >&2; exit 64 ;; esac
[ "$PEERS" = none ] && PEERS=""
[ "$FOREWARN" = none ] && FOREWARN=""
[ "$FOREWARN" = all ] && FOREWARN="e2e,decode,core,latency,memory,history"
for p in ${PEERS//,/ }; do
    case "$p" in duckdb|polars|limit|bytewax|flink|pathway) ;;
        *) echo "run.sh: unknown peer '$p'" >&2; exit 64 ;; esac
done
for f in ${FOREWARN//,/ }; do
    case "$f" in e2e|decode|core|latency|memory|history) ;;
        *) echo "run.sh: unknown forewarn row group '$f'" >&2; exit 64 ;; esac
done
has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }

DS="S${S}_H${H}"
[ "$SEED" = 42 ] || DS="${DS}_seed${SEED}"
D="$DATA/$DS"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/forewarn-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
RUNS_JSONL="$WORK/runs.jsonl"
: > "$RUNS_JSONL"

log() { printf '\n== %s\n' "$*"; }
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
cd "$ROOT"

# ---------------------------------------------------------------- 1. build
BUILD_STATUS="skipped (--no-build)"
if [ "$BUILD" = yes ]; then
    log "cargo build ${PROFILE_FLAG[*]} -p forewarn-bench --locked (target dir $TARGET_DIR)"
    if cargo build ${PROFILE_FLAG[@]+"${PROFILE_FLAG[@]}"} -p forewarn-bench --locked; then
        BUILD_STATUS="ok"
    else
        BUILD_STATUS="FAILED"
        echo "run.sh: cargo build FAILED: the forewarn rows will fail (or time a stale binary); going on with the rest" >&2
    fi
fi

# ---------------------------------------------------------------- 2. data
meta_matches() {  # the dataset in $D was generated with these parameters and has its answer
    [ -f "$D/meta.json" ] && [ -f "$D/expected.json" ] && "$PY" - "$D/meta.json" "$S" "$H" "$SEED" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
ok = (int(m.get("stations", -1)), int(m.get("hours", -1)), int(m.get("seed", -1))) == tuple(map(int, sys.argv[2:5]))
sys.exit(0 if ok else 1)
EOF
}
GEN_USED="cached"
if meta_matches; then
    log "data: $D (cached: meta.json and expected.json match S=$S H=$H seed=$SEED)"
else
    mkdir -p "$D"
    rm -f "$D/meta.json" "$D/expected.json"
    if [ "$GENERATOR" = rust ] && [ ! -x "$BIN/storm_gen" ]; then
        echo "run.sh: $BIN/storm_gen is not built: generating with bench/peers/gen_storm.py instead" >&2
        GENERATOR=python
    fi
    if [ "$GENERATOR" = rust ]; then
        log "data: $BIN/storm_gen -S $S -H $H --seed $SEED --out $D"
        "$BIN/storm_gen" -S "$S" -H "$H" --seed "$SEED" --out "$D" >/dev/null \
            || { echo "run.sh: storm_gen failed: no data to run on" >&2; exit 1; }
        GEN_USED="storm_gen"
    else
        log "data: gen_storm.py -S $S -H $H --seed $SEED --out $D (expected.json from DuckDB)"
        "$PY" "$P/gen_storm.py" -S "$S" -H "$H" --seed "$SEED" --out "$D" >/dev/null \
            || { echo "run.sh: gen_storm.py failed (bash bench/setup-peers.sh installs numpy, pyarrow)" >&2; exit 1; }
        "$PY" "$P/peer_duckdb.py" "$D/events.parquet" > "$WORK/duckdb-expected.out" \
            || { echo "run.sh: DuckDB could not compute expected.json" >&2; exit 1; }
        "$PY" - "$WORK/duckdb-expected.out" "$D/expected.json" <<'EOF'
import json, sys
res = [json.loads(l[7:]) for l in open(sys.argv[1]) if l.startswith("RESULT ")][-1]
exp = {k: res[k] for k in ("n_events", "edges", "checksum_micro", "checksum")}
exp["source"] = f"peer_duckdb.py (duckdb {res['version']}): gen_storm.py writes no reference answer"
json.dump(exp, open(sys.argv[2], "w"), indent=1)
EOF
        GEN_USED="gen_storm.py"
    fi
    for f in events.csv events.parquet events_sorted.csv thresholds.csv meta.json expected.json; do
        [ -f "$D/$f" ] || { echo "run.sh: the generator did not write $D/$f" >&2; exit 1; }
    done
fi

# ---------------------------------------------------------------- 3. rows
# row NAME TIMEOUT RUNS TAGS -- CMD...   (TAGS: space-separated KEY=VALUE for bench.py)
row() {
    local name="$1" timeout="$2" runs="$3" tags="$4"; shift 4
    [ "$1" = "--" ] && shift
    local targs=() t
    for t in $tags; do targs+=(--tag "$t"); done
    printf '\n-- %s: %s\n' "$name" "$*"
    "$PY" "$P/bench.py" --name "$name" --dataset "$DS" --runs "$runs" --timeout "$timeout" \
        --out "$RUNS_JSONL" "${targs[@]}" -- "$@" || echo "run.sh: bench.py failed for $name" >&2
}

log "forewarn ($STORM) on $D"
has "$FOREWARN" e2e && {
    row "forewarn parquet" "$TIMEOUT" "$RUNS" "tool=forewarn group=main input=parquet check=full" -- \
        "$STORM" e2e "$D/events.parquet"
    row "forewarn csv" "$TIMEOUT" "$RUNS" "tool=forewarn group=main input=csv check=full" -- \
        "$STORM" e2e "$D/events.csv"
    row "forewarn parquet 2 threads" "$TIMEOUT" "$RUNS" "tool=forewarn group=main input=parquet check=full" -- \
        "$STORM" e2e "$D/events.parquet" --threads 2
}
[ "$TRACED" = yes ] && has "$FOREWARN" e2e && \
    row "forewarn e2e --trace" "$TIMEOUT" 1 "tool=forewarn group=trace input=parquet check=full+checksum" -- \
        "$STORM" e2e "$D/events.parquet" --trace
has "$FOREWARN" decode && {
    row "forewarn decode parquet" "$TIMEOUT" "$RUNS" "tool=forewarn group=floor input=parquet check=n_events" -- \
        "$STORM" decode "$D/events.parquet"
    row "forewarn decode csv" "$TIMEOUT" "$RUNS" "tool=forewarn group=floor input=csv check=n_events" -- \
        "$STORM" decode "$D/events.csv"
}
has "$FOREWARN" core && for t in 1 2; do
    row "forewarn core ${t}t" "$TIMEOUT" "$RUNS" "tool=forewarn group=core input=parquet threads=$t check=full" -- \
        "$STORM" core "$D/events.parquet" --threads "$t"
done
has "$FOREWARN" latency && {
    for r in $LAT_RATES; do
        row "forewarn latency $r/s" "$TIMEOUT" "$RUNS" "tool=forewarn group=latency transport=in-process rate=$r check=full" -- \
            "$STORM" latency "$D/events.parquet" --rate "$r" --seconds "$LAT_SECONDS"
    done
    row "forewarn latency mqtt $MQTT_RATE/s" "$TIMEOUT" "$RUNS" "tool=forewarn group=latency transport=mqtt rate=$MQTT_RATE check=full" -- \
        "$STORM" latency "$D/events.parquet" --mqtt --rate "$MQTT_RATE" --seconds "$LAT_SECONDS"
}
has "$FOREWARN" memory && for g in $GAUGES; do
    row "forewarn memory $g gauges" "$TIMEOUT" 1 "tool=forewarn group=memory gauges=$g check=full" -- \
        "$STORM" memory --gauges "$g"
done
has "$FOREWARN" history && \
    row "forewarn history" "$TIMEOUT" "$RUNS" "tool=forewarn group=history input=parquet check=full" -- \
        "$STORM" history "$D/events.parquet"

[ -n "$PEERS" ] && log "peers on $D"
has "$PEERS" duckdb && {
    row "duckdb" "$TIMEOUT" "$RUNS" "tool=duckdb group=main input=parquet check=full" -- \
        "$V/main/bin/python" "$P/peer_duckdb.py" "$D/events.parquet"
    row "duckdb csv" "$TIMEOUT" "$RUNS" "tool=duckdb group=main input=csv check=full" -- \
        "$V/main/bin/python" "$P/peer_duckdb.py" "$D/events.csv"
}
has "$PEERS" polars && {
    row "polars" "$TIMEOUT" "$RUNS" "tool=polars group=main input=parquet check=full" -- \
        "$V/main/bin/python" "$P/peer_polars.py" "$D/events.parquet"
    row "polars csv" "$TIMEOUT" "$RUNS" "tool=polars group=main input=csv check=full" -- \
        "$V/main/bin/python" "$P/peer_polars.py" "$D/events.csv"
}
has "$PEERS" limit && \
    row "Rust limit (1 thread)" "$TIMEOUT" "$RUNS" "tool=storm-limit group=main input=csv check=full" -- \
        "$LIMIT" "$D/events.csv" --reps 1
has "$PEERS" bytewax && \
    row "bytewax" "$TIMEOUT" "$RUNS" "tool=bytewax group=main input=sorted-csv check=full" -- \
        "$V/bw/bin/python" "$P/peer_bytewax.py" "$D/events_sorted.csv"
has "$PEERS" pathway && \
    row "pathway (1 h rule only)" "$TIMEOUT" "$RUNS" "tool=pathway group=main input=csv check=1h" -- \
        "$V/pw/bin/python" "$P/peer_pathway.py" "$D/events.csv" --rules 1h
has "$PEERS" flink && \
    row "flink p1" "$FLINK_TIMEOUT" "$FLINK_RUNS" "tool=flink group=main input=csv check=full" -- \
        "$V/flink/bin/python" "$P/peer_flink.py" "$D/events.csv" --parallelism 1

# ---------------------------------------------------------------- 4. machine, versions, tables
log "summary"
pyver() {
    local py="$1"; shift
    [ -x "$py" ] || return 0
    "$py" - "$@" <<'EOF' 2>/dev/null || true
import sys
from importlib.metadata import version
for p in sys.argv[1:]:
    try:
        print(p, version(p))
    except Exception:
        pass
EOF
}
{
    pyver "$V/main/bin/python" numpy pyarrow duckdb polars psutil
    pyver "$V/flink/bin/python" apache-flink
    pyver "$V/bw/bin/python" bytewax
    pyver "$V/pw/bin/python" pathway
    if [ -x "$LIMIT" ]; then echo "storm-limit bench/peers/limit (csv 1.4, foldhash 0.2)"; fi
    if command -v java >/dev/null 2>&1; then echo "java $(java -version 2>&1 | head -1 | tr -d '"')"; fi
    if [ -x /usr/sbin/mosquitto ]; then echo "mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | head -1 | awk '{print $NF}')"; fi
} > "$WORK/versions.txt"
export COMMAND_LINE LOAD_AT_START STARTED DS D S H SEED RUNS FLINK_RUNS SMOKE BUILD_STATUS GEN_USED \
    STORM LAT_SECONDS PROFILE
"$PY" - "$WORK/machine.json" "$WORK/versions.txt" <<'EOF'
import json, os, platform, subprocess, sys
e = os.environ
def sh(*c):
    try:
        return subprocess.run(c, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "?"
def first(path, prefix):
    try:
        for line in open(path):
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"
mem = first("/proc/meminfo", "MemTotal")
if mem != "?":
    mem = f"{int(mem.split()[0]) / 2**20:.1f} GiB"
versions = {}
for line in open(sys.argv[2]):
    k, _, v = line.strip().partition(" ")
    if k:
        versions[k] = v
json.dump(dict(
    cpu=first("/proc/cpuinfo", "model name"), cores=os.cpu_count(), ram=mem,
    kernel=platform.release(), os=sh("uname", "-sm"), load_at_start=e["LOAD_AT_START"],
    rustc=sh("rustc", "--version"), versions=versions, command=e["COMMAND_LINE"],
    started=e["STARTED"], finished=sh("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
    dataset=e["DS"], data_dir=e["D"], stations=int(e["S"]), hours=int(e["H"]), seed=int(e["SEED"]),
    runs=int(e["RUNS"]), flink_runs=int(e["FLINK_RUNS"]), smoke=e["SMOKE"] == "yes",
    build=e["BUILD_STATUS"], profile=e["PROFILE"], generator=e["GEN_USED"], storm=e["STORM"],
    latency_seconds=int(e["LAT_SECONDS"])), open(sys.argv[1], "w"), indent=1)
EOF

rc=0
"$PY" "$HERE/summarize.py" --runs "$RUNS_JSONL" --machine "$WORK/machine.json" \
    --expected "$D/expected.json" --meta "$D/meta.json" --out "$OUT" || rc=$?
if [ "$BUILD_STATUS" = FAILED ] && [ "$rc" -eq 0 ]; then rc=2; fi
echo
echo "RESULTS.md and results.json in $OUT"
exit "$rc"
