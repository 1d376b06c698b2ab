//! Generates the `storm` benchmark workload byte for byte like `gen_storm.py` (see
//! `forewarn_bench::storm_gen`), plus `expected.json`, the reference answer of a naive oracle.
//!
//! ```sh
//! cargo run --release -p forewarn-bench --bin storm_gen -- -S 10000 -H 72 --out /tmp/peers-data/S10000_H72
//! ```
//!
//! Prints `meta.json` on one line, as the Python generator does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use forewarn_bench::storm_gen::{generate, python_json, GenOptions, StormParams};

/// Deterministic generator for the 'storm' early-warning workload (WORKLOAD.md, version 1).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Number of rain gauges S (ids st00000..).
    #[arg(short = 'S', long, default_value_t = 10_000)]
    stations: u32,
    /// Length of the feed in hours H.
    #[arg(short = 'H', long, default_value_t = 72)]
    hours: u32,
    /// Root seed of the numpy SeedSequence.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Do not write events.csv / events_sorted.csv.
    #[arg(long)]
    no_csv: bool,
    /// Do not write events.parquet / events_sorted.parquet.
    #[arg(long)]
    no_parquet: bool,
    /// Do not compute expected.json (the oracle's answer).
    #[arg(long)]
    no_expected: bool,
    /// Worker threads (the output does not depend on it).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let params = StormParams::new(a.stations, a.hours, a.seed);
    let opts = GenOptions {
        csv: !a.no_csv,
        parquet: !a.no_parquet,
        expected: !a.no_expected,
        threads: a.threads,
    };
    match generate(&params, &a.out, &opts) {
        Ok(meta) => {
            println!("{}", python_json(&meta));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storm_gen: {e}");
            ExitCode::FAILURE
        }
    }
}
