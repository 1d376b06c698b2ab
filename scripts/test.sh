#!/usr/bin/env bash
# The project's test command (README): sets up what the tests need, then runs them all.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a build directory outside the clone when the caller does not choose one, so repeated
# CI runs on this machine do not rebuild everything (a fresh machine builds from scratch).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forewarn/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# incremental compilation data is many GB and a one-off CI build gains nothing from it
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The daemon tests (feature `daemon`) run against a real mosquitto: install it when missing.
# Nothing is skipped without it: the tests fail loudly.
# (openssl makes the TLS test's throw-away CA; mosquitto_passwd and mosquitto_pub come with it.)
if ! { command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null 2>&1 \
    || ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    echo "== installing mosquitto (apt-get)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
fi

# The CAP tests validate every message with xmllint against the CAP 1.2 schema: install it when
# missing. Nothing is skipped without it: the tests fail loudly.
if ! command -v xmllint >/dev/null 2>&1; then
    echo "== installing xmllint (apt-get)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libxml2-utils >/dev/null
fi

# The history tests read the Parquet files with pyarrow too: install it when missing.
# Nothing is skipped without it: the test fails loudly.
if ! python3 -c 'import pyarrow' >/dev/null 2>&1; then
    echo "== installing pyarrow (pip)"
    python3 -m pip install --quiet pyarrow
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo clippy (default features: the core builds without the daemon)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo clippy (the default members alone: the engine without the bench's features)"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-features --locked "$@"
echo "== benchmark smoke run: every storm benchmark once at S=50 H=6, answers checked (bench/run.sh)"
bash bench/run.sh --smoke > "${CARGO_TARGET_DIR}/bench-smoke.log" 2>&1 \
    || { cat "${CARGO_TARGET_DIR}/bench-smoke.log"; exit 1; }
tail -1 "${CARGO_TARGET_DIR}/bench-smoke.log"
echo "== forewarn test tests/cases (the same runner the case tests use)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$CARGO_TARGET_DIR/debug/forewarn" test tests/cases > "$log" || { cat "$log"; exit 1; }
tail -1 "$log"
echo "== case file format lint"
python3 tests/cases/check_cases.py
echo "== forewarn backtest -c config/backtest.toml (the README's command): report with plots"
bt="$(mktemp -d)"
"$CARGO_TARGET_DIR/debug/forewarn" backtest -c config/backtest.toml --out "$bt" --quiet | tail -5
grep -q "<svg" "$bt/backtest.html" || { echo "backtest.html has no plots"; exit 1; }
rm -rf "$bt"
