//! `storm`: forewarn on the storm benchmark workload (`bench/peers/WORKLOAD.md`).
//!
//! Every subcommand prints one `RESULT {json}` line in the peers' format
//! (`bench/peers/common.py`) with a `kind` saying what was measured; `bench/run.sh` times
//! the commands and builds `bench/RESULTS.md` from those lines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn_bench::storm;
use serde_json::{json, Value as Json};

#[derive(Parser, Debug)]
#[command(about = "forewarn on the storm benchmark workload")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// End to end: read events.csv / events.parquet in arrival order, evaluate the storm
    /// rules, count rising edges.
    E2e {
        /// events.csv or events.parquet (or the *_sorted variants).
        events: PathBuf,
        /// thresholds.csv (default: next to the events file).
        #[arg(long)]
        thresholds: Option<PathBuf>,
        /// Trace every evaluation and recompute the workload's checksum and edges from it
        /// (slow: for small datasets).
        #[arg(long)]
        trace: bool,
        /// Compare with this expected answer (expected.json of the generator); exit 1 when
        /// it differs.
        #[arg(long)]
        expect: Option<PathBuf>,
    },
    /// Decode only: read and decode the same input, nothing else (the floor of `e2e`).
    Decode {
        /// events.csv or events.parquet.
        events: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::E2e {
            events,
            thresholds,
            trace,
            expect,
        } => e2e(&events, thresholds, trace, expect),
        Cmd::Decode { events } => decode(&events),
    }
}

fn input_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn result(kind: &str, input: &str, mut fields: Json) {
    let mut line = json!({
        "tool": format!("forewarn-{kind}"),
        "version": env!("CARGO_PKG_VERSION"),
        "kind": kind,
        "input": input,
    });
    if let (Some(l), Some(f)) = (line.as_object_mut(), fields.as_object_mut()) {
        l.append(f);
    }
    println!("RESULT {line}");
}

fn e2e(
    events: &Path,
    thresholds: Option<PathBuf>,
    trace: bool,
    expect: Option<PathBuf>,
) -> anyhow::Result<()> {
    let thresholds = thresholds.unwrap_or_else(|| storm::default_thresholds(events));
    let start = Instant::now();
    let run = storm::run_file(events, &thresholds, trace)
        .with_context(|| format!("running {}", events.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let answer = run.answer();
    let mut fields = serde_json::to_value(&answer)?;
    let extra = json!({
        "seconds_in_process": secs,
        "events_per_s": run.n_events as f64 / secs,
        "evaluations": run.evaluations,
        "entities": run.entities,
        "rejected": run.sink.rejected,
        "clears": storm::Edges::from(run.sink.clears),
    });
    merge(&mut fields, extra);
    if let Some(t) = &run.sink.trace {
        merge(
            &mut fields,
            json!({
                "trace": {
                    "reading_edges": storm::Edges::from(t.reading_edges),
                    "time_driven_edges": storm::Edges::from(t.time_driven_edges),
                    "reading_evaluations": storm::Edges::from(t.reading_evaluations),
                    "deadline_evaluations": storm::Edges::from(t.deadline_evaluations),
                    "unknown_entities": t.unknown,
                }
            }),
        );
    }
    let kind = if events.extension().is_some_and(|e| e == "parquet") {
        "parquet"
    } else {
        "csv"
    };
    result(kind, &input_name(events), fields);
    if let Some(t) = &run.sink.trace {
        // every difference between the engine's edges and the workload's is accounted for
        for r in 0..3 {
            anyhow::ensure!(
                run.sink.raises[r] == t.reading_edges[r] + t.time_driven_edges[r],
                "rule {}: {} raises but {} reading edges + {} time-driven edges",
                storm::RULES[r].0,
                run.sink.raises[r],
                t.reading_edges[r],
                t.time_driven_edges[r]
            );
        }
    }
    if let Some(path) = expect {
        let want: storm::Answer = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        check(&answer, run.sink.trace.as_ref(), &want)?;
        eprintln!("agrees with {}", path.display());
    }
    Ok(())
}

/// Compare with the expected answer: n_events and edges always (edges counted at readings
/// when the trace is on), the checksum when traced.
fn check(
    got: &storm::Answer,
    trace: Option<&storm::TraceCheck>,
    want: &storm::Answer,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.n_events == want.n_events,
        "n_events {} != expected {}",
        got.n_events,
        want.n_events
    );
    let edges = trace.map_or(got.edges, |t| t.reading_edges.into());
    anyhow::ensure!(
        edges == want.edges,
        "edges {edges:?} != expected {:?}",
        want.edges
    );
    if let (Some(c), Some(w)) = (&got.checksum, &want.checksum) {
        anyhow::ensure!(c == w, "checksum {c} != expected {w}");
    }
    Ok(())
}

fn merge(a: &mut Json, b: Json) {
    if let (Some(a), Json::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
}

fn decode(events: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut sum = 0.0f64;
    let mut ts_xor = 0i64;
    let mut name_bytes = 0u64;
    let n = storm::read_events(events, |station, ts, value| {
        sum += value;
        ts_xor ^= ts;
        name_bytes += station.len() as u64;
    })?;
    let secs = start.elapsed().as_secs_f64();
    result(
        "decode",
        &input_name(events),
        json!({
            "n_events": n,
            "format": if events.extension().is_some_and(|e| e == "parquet") { "parquet" } else { "csv" },
            "seconds_in_process": secs,
            "events_per_s": n as f64 / secs,
            "value_sum": sum,
            "ts_xor": ts_xor,
            "station_bytes": name_bytes,
        }),
    );
    Ok(())
}
