//! `storm`: forewarn on the storm benchmark workload (`bench/peers/WORKLOAD.md`).
//!
//! Every subcommand prints one `RESULT {json}` line in the peers' format
//! (`bench/peers/common.py`) with a `kind` saying what was measured; `bench/run.sh` times
//! the commands and builds `bench/RESULTS.md` from those lines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn_bench::{storm, storm_core, storm_history, storm_latency, storm_memory};
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
        /// Engines (threads) the readings are spread over by a hash of the station id, as
        /// the daemon's shards; this thread reads and routes. Not with --trace.
        #[arg(long, default_value_t = 1, conflicts_with = "trace")]
        threads: usize,
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
    /// The rules alone: the input decoded into memory first (untimed), then only the pushes
    /// into the engine and `finish` timed, on 1 or more threads (gauges split by a hash of
    /// the station id, one engine per thread).
    Core {
        /// events.parquet (or .csv).
        events: PathBuf,
        /// Threads (= engines).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// thresholds.csv (default: next to the events file).
        #[arg(long)]
        thresholds: Option<PathBuf>,
        /// Compare with this expected answer (n_events, edges); exit 1 when it differs.
        #[arg(long)]
        expect: Option<PathBuf>,
    },
    /// Reading -> warning latency at a fixed offered load, corrected for coordinated
    /// omission (in process, or through mosquitto and the daemon with --mqtt).
    Latency {
        /// events.parquet (or .csv), replayed in file order as often as needed.
        events: PathBuf,
        /// Offered load, readings per second.
        #[arg(long)]
        rate: f64,
        /// How long the load is offered, seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Through a mosquitto of our own and the daemon in process.
        #[arg(long)]
        mqtt: bool,
        /// Engines: in process, feeder threads each with its own engine and its share of the
        /// gauges (default 1); with --mqtt, the daemon's evaluator shards (default: the
        /// number of cores).
        #[arg(long)]
        shards: Option<usize>,
        /// --mqtt: readings per message (default: rate / 2000, about 2,000 messages/s).
        #[arg(long)]
        batch: Option<usize>,
        /// thresholds.csv (default: next to the events file).
        #[arg(long)]
        thresholds: Option<PathBuf>,
    },
    /// Bytes of state per gauge holding 24 h of 5-minute data, and the process RSS.
    Memory {
        /// Gauges.
        #[arg(long)]
        gauges: usize,
        /// Hours of data per gauge.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        /// Also report the engine's snapshot (checkpoint) size: auto (up to 200,000 gauges),
        /// always, never.
        #[arg(long, default_value = "auto")]
        snapshot: String,
    },
    /// Parquet history write rate: the events through `forewarn run` with [history] on.
    History {
        /// events.parquet (its .csv sibling is read) or events.csv.
        events: PathBuf,
        /// thresholds.csv (default: next to the events file).
        #[arg(long)]
        thresholds: Option<PathBuf>,
        /// Readings between checkpoints.
        #[arg(long, default_value_t = 100_000)]
        checkpoint_every: u64,
        /// Readings per journal segment sealed into Parquet.
        #[arg(long, default_value_t = 1_000_000)]
        segment_rows: u64,
        /// Also run without history and report that rate.
        #[arg(long)]
        compare: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::E2e {
            events,
            thresholds,
            trace,
            threads,
            expect,
        } => e2e(&events, thresholds, trace, threads, expect),
        Cmd::Decode { events } => decode(&events),
        Cmd::Core {
            events,
            threads,
            thresholds,
            expect,
        } => {
            let thresholds = thresholds.unwrap_or_else(|| storm::default_thresholds(&events));
            let r = storm_core::core(&events, &thresholds, threads)?;
            let edges = storm::Edges::from(r.edges);
            result(
                "core",
                &input_name(&events),
                json!({
                    "threads": r.threads,
                    "n_events": r.n_events,
                    "edges": edges,
                    "clears": storm::Edges::from(r.clears),
                    "events_per_s": r.events_per_s(),
                    "ns_per_event": r.ns_per_event(),
                    "seconds_in_process": r.seconds,
                    "thread_seconds": r.thread_seconds,
                    "thread_events": r.thread_events,
                    "evaluations": r.evaluations,
                    "rejected": r.rejected,
                }),
            );
            if let Some(path) = expect {
                let want: storm::Answer = serde_json::from_slice(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("parsing {}", path.display()))?;
                anyhow::ensure!(
                    r.n_events == want.n_events && edges == want.edges,
                    "n_events {} edges {edges:?} != expected {} {:?}",
                    r.n_events,
                    want.n_events,
                    want.edges
                );
                eprintln!("agrees with {}", path.display());
            }
            Ok(())
        }
        Cmd::Latency {
            events,
            rate,
            seconds,
            mqtt,
            shards,
            batch,
            thresholds,
        } => {
            let thresholds = thresholds.unwrap_or_else(|| storm::default_thresholds(&events));
            let opts = storm_latency::LatencyOptions {
                rate,
                seconds,
                shards,
                batch,
            };
            let r = if mqtt {
                storm_latency::through_mqtt(&events, &thresholds, &opts)?
            } else {
                storm_latency::in_process(&events, &thresholds, &opts)?
            };
            result("latency", &input_name(&events), serde_json::to_value(&r)?);
            Ok(())
        }
        Cmd::Memory {
            gauges,
            hours,
            snapshot,
        } => {
            let mode = match snapshot.as_str() {
                "auto" => storm_memory::SnapshotMode::Auto,
                "always" => storm_memory::SnapshotMode::Always,
                "never" => storm_memory::SnapshotMode::Never,
                other => anyhow::bail!("--snapshot auto|always|never, not {other:?}"),
            };
            let r = storm_memory::memory(gauges, hours, mode, true)?;
            result("memory", "synthetic", serde_json::to_value(&r)?);
            Ok(())
        }
        Cmd::History {
            events,
            thresholds,
            checkpoint_every,
            segment_rows,
            compare,
        } => {
            let thresholds = thresholds.unwrap_or_else(|| storm::default_thresholds(&events));
            let opts = storm_history::HistoryOptions {
                checkpoint_every,
                segment_rows,
                compare,
            };
            let r = storm_history::history(&events, &thresholds, &opts)?;
            result("history", &input_name(&events), serde_json::to_value(&r)?);
            Ok(())
        }
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
    threads: usize,
    expect: Option<PathBuf>,
) -> anyhow::Result<()> {
    let thresholds = thresholds.unwrap_or_else(|| storm::default_thresholds(events));
    let start = Instant::now();
    let run = if threads > 1 {
        storm::run_file_sharded(events, &thresholds, threads)
    } else {
        storm::run_file(events, &thresholds, trace)
    }
    .with_context(|| format!("running {}", events.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let answer = run.answer();
    let mut fields = serde_json::to_value(&answer)?;
    let extra = json!({
        "seconds_in_process": secs,
        "events_per_s": run.n_events as f64 / secs,
        "threads": threads.max(1),
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
