#!/usr/bin/env bash
# Install the peer tools that bench/run.sh times next to forewarn (issue 5), idempotently.
#
#   bash bench/setup-peers.sh [--with-pathway] [--force]
#
# * Python venvs (pip, packages by name from PyPI) under
#   ${PEERS_VENV:-$HOME/.cache/forewarn/peers-venv}:
#     main/   numpy pyarrow duckdb polars psutil   (also runs bench.py, gen_storm.py, summarize.py)
#     flink/  apache-flink                          (PyFlink; needs a Java 11/17 runtime: `java`)
#     bw/     bytewax
#     pw/     pathway    only with --with-pathway: it does not finish the workload (bench/peers/SOURCE.md)
#   A venv whose packages already import is left alone; --force reinstalls.
# * The Rust physical-limit program bench/peers/limit, built (--release, --locked) into
#   ${PEERS_LIMIT_TARGET:-$HOME/.cache/forewarn/peers-limit-target}/release/storm-limit.
# Prints what is installed, with versions.  The Python used to make the venvs: $PYTHON (python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
V="${PEERS_VENV:-$HOME/.cache/forewarn/peers-venv}"
LIMIT_TARGET="${PEERS_LIMIT_TARGET:-$HOME/.cache/forewarn/peers-limit-target}"
PYTHON="${PYTHON:-python3}"
with_pathway=no
force=no
for arg in "$@"; do
    case "$arg" in
        --with-pathway) with_pathway=yes ;;
        --force) force=yes ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "setup-peers.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '== %s\n' "$*"; }

# venv NAME "import-check statement" PIP_PACKAGES...
venv() {
    local name="$1" check="$2"; shift 2
    local py="$V/$name/bin/python"
    if [ "$force" = no ] && [ -x "$py" ] && "$py" -c "$check" >/dev/null 2>&1; then
        log "venv $name: present ($V/$name)"
        return 0
    fi
    log "venv $name: installing $* (pip) into $V/$name"
    mkdir -p "$V"
    [ -x "$py" ] || "$PYTHON" -m venv "$V/$name"
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet "$@"
    "$py" -c "$check"
}

venv main "import numpy, pyarrow, duckdb, polars, psutil" numpy pyarrow duckdb polars psutil
if ! command -v java >/dev/null 2>&1; then
    echo "setup-peers.sh: 'java' not found: PyFlink needs a Java runtime (e.g. apt-get install openjdk-17-jre-headless)" >&2
fi
venv flink "import pyflink.table" apache-flink
venv bw "import bytewax.operators" bytewax
if [ "$with_pathway" = yes ]; then
    venv pw "import pathway" pathway
fi

log "building bench/peers/limit -> $LIMIT_TARGET/release/storm-limit"
cargo build --release --locked --quiet --manifest-path "$HERE/peers/limit/Cargo.toml" --target-dir "$LIMIT_TARGET"
test -x "$LIMIT_TARGET/release/storm-limit"

log "installed"
ver() {  # ver VENV PKG...
    local py="$V/$1/bin/python"; shift
    [ -x "$py" ] || return 0
    "$py" - "$@" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for p in sys.argv[1:]:
    try:
        print(f"  {p:<14} {version(p)}")
    except PackageNotFoundError:
        print(f"  {p:<14} (not installed)")
EOF
}
echo "venv main ($("$V/main/bin/python" -c 'import sys; print(sys.version.split()[0])'), $V/main):"
ver main numpy pyarrow duckdb polars psutil
echo "venv flink ($V/flink):"
ver flink apache-flink pyarrow numpy
if command -v java >/dev/null 2>&1; then
    echo "  java           $(java -version 2>&1 | head -1)"
fi
echo "venv bw ($V/bw):"
ver bw bytewax
if [ -x "$V/pw/bin/python" ]; then
    echo "venv pw ($V/pw):"
    ver pw pathway
fi
echo "storm-limit:     $LIMIT_TARGET/release/storm-limit ($(rustc --version))"
