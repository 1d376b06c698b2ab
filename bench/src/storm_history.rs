//! `storm history`: the storm events through `forewarn run` with `[history]` on — the journal,
//! checkpoints and the Parquet history (readings, warnings, status, rejected) sealed from
//! it — as `bench/src/bin/history_cost.rs` does for Harvey, here with the storm rules and
//! the storm events.
//!
//! `forewarn run` reads files through its sources (`csv`, `csv-wide`, `jsonl`, `history`), not
//! Parquet: the readings come from the events CSV (`station,ts,value,late`, each row one
//! arrival, exactly the rows of the Parquet file). Given a `.parquet` file, the `.csv` of the
//! same name next to it is used when there is one; otherwise the Parquet file is converted to
//! a temporary CSV first (untimed). The rules are `bench/storm.rules` as they are (with the
//! reorder delay), their table the dataset's `thresholds.csv`, both copied into a temporary
//! directory that also holds the outputs and the data directory.
//!
//! Reported: Parquet rows written per second of sealing (`rows_per_s`, the engine's own
//! measure of the sealing time: reading the journal segment, encoding, compressing, fsync),
//! the rows and bytes written, checkpoints, and the end-to-end readings per second of the run
//! with history on (its edges are the workload's answer, checked like any e2e run).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use forewarn_engine::config::RunConfig;
use forewarn_engine::run::{run_with, RunOptions, Summary};
use forewarn_engine::TransitionKind;
use serde::Serialize;

use crate::storm::{self, Edges};

/// Intervals of the history (those of `[history]`).
#[derive(Debug, Clone, Copy)]
pub struct HistoryOptions {
    /// Readings between checkpoints (`checkpoint-every`, default 100,000).
    pub checkpoint_every: u64,
    /// Readings per journal segment sealed into Parquet (`segment-rows`, default 1,000,000).
    pub segment_rows: u64,
    /// Also run without history (same input, same process) and report the ratio.
    pub compare: bool,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            checkpoint_every: 100_000,
            segment_rows: 1_000_000,
            compare: false,
        }
    }
}

/// What `storm history` measured.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    /// Readings read.
    pub n_events: u64,
    /// Rising edges (`raise` transitions) per rule.
    pub edges: Edges,
    /// Parquet rows written (all tables).
    pub rows: u64,
    /// Parquet bytes written.
    pub bytes: u64,
    /// Parquet rows per second of sealing.
    pub rows_per_s: f64,
    /// Seconds spent sealing.
    pub seal_seconds: f64,
    /// Journal segments sealed.
    pub segments: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Size of the last checkpoint, bytes.
    pub checkpoint_bytes: u64,
    /// Seconds spent writing checkpoints.
    pub checkpoint_seconds: f64,
    /// Warning records written.
    pub warnings: u64,
    /// Wall time of the run (`run_with`, history sealed at the end included), seconds.
    pub seconds: f64,
    /// Readings per second, end to end, with history on.
    pub events_per_s: f64,
    /// The run's own replay time (its summary), seconds.
    pub run_seconds: f64,
    /// The CSV the readings were read from.
    pub csv: String,
    /// With `compare`: readings per second of the same run without history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_s_without_history: Option<f64>,
}

/// The CSV holding the rows of `events` (see the module documentation); converts into `tmp`
/// when needed.
pub fn events_csv(events: &Path, tmp: &Path) -> anyhow::Result<PathBuf> {
    if events.extension().is_some_and(|e| e == "csv") {
        return Ok(events.to_path_buf());
    }
    let sibling = events.with_extension("csv");
    if sibling.is_file() {
        return Ok(sibling);
    }
    let out = tmp.join("events.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
    writeln!(f, "station,ts,value")?;
    let mut err = None;
    storm::read_events(events, |station, ts, value| {
        if err.is_none() {
            if let Err(e) = writeln!(f, "{station},{ts},{value}") {
                err = Some(e);
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    f.flush()?;
    Ok(out)
}

fn config(
    dir: &Path,
    csv: &Path,
    name: &str,
    history: Option<&HistoryOptions>,
) -> anyhow::Result<RunConfig> {
    let out = dir.join(name);
    std::fs::create_dir_all(&out)?;
    let mut text = format!(
        r#"
rules = "{rules}"
[engine]
watermark-delay = "1m"
[[source]]
name = "storm"
format = "csv"
path = "{csv}"
feed = "rain"
entity-column = "station"
time-column = "ts"
value-column = "value"
[output]
warnings = "{out}/warnings.jsonl"
status = "{out}/status.jsonl"
dead-letter = "{out}/dead-letter.jsonl"
console = false
"#,
        rules = dir.join("storm.rules").display(),
        csv = csv.display(),
        out = out.display(),
    );
    if let Some(h) = history {
        text.push_str(&format!(
            "[history]\ndir = \"{}/history\"\ncheckpoint-every = {}\ncheckpoint-interval = \"1h\"\nsegment-rows = {}\n",
            out.display(),
            h.checkpoint_every,
            h.segment_rows
        ));
    }
    RunConfig::parse(&text, &out.join("storm.toml")).map_err(|e| anyhow::anyhow!("{e}"))
}

fn raises(s: &Summary) -> Edges {
    let raise = TransitionKind::ALL
        .iter()
        .position(|k| *k == TransitionKind::Raise)
        .unwrap_or(0);
    let per_rule = |name: &str| {
        s.rules
            .iter()
            .position(|(r, _)| r == name)
            .and_then(|i| s.counters.transitions.get(i))
            .map_or(0, |t| t[raise])
    };
    Edges {
        yellow: per_rule("yellow"),
        orange: per_rule("orange"),
        red: per_rule("red"),
    }
}

/// Run `events` through the storm rules with `[history]` on (and, with `compare`, without).
pub fn history(
    events: &Path,
    thresholds: &Path,
    opts: &HistoryOptions,
) -> anyhow::Result<HistoryReport> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    std::fs::copy(storm::rules_path(), dir.join("storm.rules"))?;
    std::fs::copy(thresholds, dir.join("thresholds.csv"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", thresholds.display()))?;
    let csv = events_csv(events, dir)?;
    let fresh = RunOptions { fresh: true };
    let without = if opts.compare {
        let cfg = config(dir, &csv, "plain", None)?;
        let start = Instant::now();
        let s = run_with(&cfg, fresh)?;
        Some(s.counters.read as f64 / start.elapsed().as_secs_f64())
    } else {
        None
    };
    let cfg = config(dir, &csv, "hist", Some(opts))?;
    let start = Instant::now();
    let s = run_with(&cfg, fresh)?;
    let seconds = start.elapsed().as_secs_f64();
    let h = s
        .history
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the run kept no history"))?;
    Ok(HistoryReport {
        n_events: s.counters.read,
        edges: raises(&s),
        rows: h.parquet_rows,
        bytes: h.parquet_bytes,
        rows_per_s: h.parquet_rows as f64 / h.seal_seconds.max(1e-9),
        seal_seconds: h.seal_seconds,
        segments: h.segments_sealed,
        checkpoints: h.checkpoints,
        checkpoint_bytes: h.checkpoint_bytes,
        checkpoint_seconds: h.checkpoint_seconds,
        warnings: s.warnings,
        seconds,
        events_per_s: s.counters.read as f64 / seconds.max(1e-12),
        run_seconds: s.seconds,
        csv: csv.display().to_string(),
        events_per_s_without_history: without,
    })
}
