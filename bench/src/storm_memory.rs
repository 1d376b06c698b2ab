//! `storm memory`: bytes of engine state per gauge holding 24 hours of 5-minute rain.
//!
//! A thresholds table for `N` gauges is written into a temporary directory and the storm
//! rules (`bench/storm.rules`, as they are: the 24 h window and the 15-minute reorder delay)
//! compiled with it. Then `N` gauges × `hours` × 12 synthetic readings (0.1 .. 2.0 mm,
//! pseudo-random, never zero) are pushed in time order, every gauge at every step. The
//! process RSS (`VmRSS` of `/proc/self/status`) is read before the engine is created — the
//! plan, its table and the gauge names already loaded — and after the last push;
//! `state_bytes_per_gauge` is the difference divided by `N`. With the snapshot on, the size
//! of the engine's checkpoint (`Engine::snapshot`, what the daemon and `forewarn run` write)
//! is reported per gauge too.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use forewarn_engine::{Engine, Reading, Value};
use serde::Serialize;

use crate::storm::{self, StormSink};

/// First event time of the synthetic data (2024-06-01T00:00:00Z, as the storm generator's).
pub const T0_MS: i64 = 1_717_200_000_000;

/// Above this many gauges the snapshot is skipped unless asked for: it is built in memory,
/// next to the state it encodes.
pub const SNAPSHOT_AUTO_MAX: usize = 200_000;

/// Whether to take a snapshot after feeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMode {
    /// Up to [`SNAPSHOT_AUTO_MAX`] gauges.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// What `storm memory` measured.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Gauges `N`.
    pub gauges: u64,
    /// Hours of data per gauge.
    pub hours: u32,
    /// Readings pushed (`N × hours × 12`).
    pub readings: u64,
    /// RSS before anything was loaded, bytes.
    pub rss_start_bytes: u64,
    /// RSS with the plan (thresholds table) and the gauge names loaded: the baseline, bytes.
    pub rss_baseline_bytes: u64,
    /// RSS after the last push, bytes.
    pub rss_bytes: u64,
    /// (RSS after − baseline) ÷ N.
    pub state_bytes_per_gauge: f64,
    /// (baseline − RSS at start) ÷ N: the thresholds table in the plan and the names.
    pub table_bytes_per_gauge: f64,
    /// Size of `Engine::snapshot()`, bytes (when taken).
    pub checkpoint_bytes: Option<u64>,
    /// The same per gauge.
    pub checkpoint_bytes_per_gauge: Option<f64>,
    /// Why the snapshot was not taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_skipped: Option<String>,
    /// Entities the engine holds.
    pub entities: u64,
    /// `raise` transitions (all rules).
    pub raises: u64,
    /// Seconds spent pushing.
    pub seconds: f64,
    /// Readings per second while pushing.
    pub events_per_s: f64,
}

/// Resident set size of this process (`VmRSS`), bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// splitmix64: a small deterministic generator for the synthetic rain.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The id of synthetic gauge `g`.
pub fn gauge_id(g: usize) -> String {
    format!("g{g:07}")
}

/// Write a thresholds table for `gauges` synthetic gauges (`station,t1h,t3h,t24h`).
pub fn write_thresholds(path: &Path, gauges: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut rng = SplitMix(7);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "station,t1h,t3h,t24h")?;
    for g in 0..gauges {
        let jitter = (rng.next() % 1000) as f64 / 100.0; // 0 .. 10 mm
        writeln!(
            f,
            "{},{:.2},{:.2},{:.2}",
            gauge_id(g),
            15.0 + jitter,
            30.0 + 2.0 * jitter,
            250.0 + 10.0 * jitter
        )?;
    }
    f.flush()?;
    Ok(())
}

/// Feed `gauges` × `hours` of synthetic 5-minute rain through the storm rules and measure the
/// memory it holds. `progress` prints a line per hour of data to stderr.
pub fn memory(
    gauges: usize,
    hours: u32,
    snapshot: SnapshotMode,
    progress: bool,
) -> anyhow::Result<MemoryReport> {
    anyhow::ensure!(gauges > 0 && hours > 0, "gauges and hours must be > 0");
    let rss_start = rss_bytes().ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?;
    let dir = tempfile::tempdir()?;
    let table = dir.path().join("thresholds.csv");
    write_thresholds(&table, gauges)?;
    let plan = Arc::new(storm::load_plan(&table)?);
    let names: Vec<String> = (0..gauges).map(gauge_id).collect();
    let baseline = rss_bytes().unwrap_or(rss_start);

    let mut engine = Engine::new(Arc::clone(&plan), storm::engine_config(false));
    let feed = engine
        .feed("rain")
        .ok_or_else(|| anyhow::anyhow!("storm.rules declares no feed rain"))?;
    let mut sink = StormSink::default();
    let mut rng = SplitMix(42);
    let steps = hours as u64 * 12;
    let start = Instant::now();
    for k in 0..steps {
        let ts = T0_MS + k as i64 * 300_000;
        for name in &names {
            let value = (1 + rng.next() % 20) as f64 / 10.0;
            // rejections reach the sink and are counted there
            let _ = engine.push(
                &Reading {
                    entity: name,
                    feed,
                    ts,
                    value: Value::Num(value),
                    tag: 0,
                },
                &mut sink,
            );
        }
        if progress && (k + 1) % 12 == 0 {
            eprintln!(
                "storm memory: {} gauges, hour {} of {hours}, {:.1} s, RSS {:.0} MiB",
                gauges,
                (k + 1) / 12,
                start.elapsed().as_secs_f64(),
                rss_bytes().unwrap_or(0) as f64 / (1u64 << 20) as f64
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = rss_bytes().unwrap_or(0);
    anyhow::ensure!(sink.rejected == 0, "{} readings rejected", sink.rejected);
    let take = match snapshot {
        SnapshotMode::Always => true,
        SnapshotMode::Never => false,
        SnapshotMode::Auto => gauges <= SNAPSHOT_AUTO_MAX,
    };
    let checkpoint = take.then(|| engine.snapshot().len() as u64);
    let readings = steps * gauges as u64;
    let n = gauges as f64;
    Ok(MemoryReport {
        gauges: gauges as u64,
        hours,
        readings,
        rss_start_bytes: rss_start,
        rss_baseline_bytes: baseline,
        rss_bytes: after,
        state_bytes_per_gauge: after.saturating_sub(baseline) as f64 / n,
        table_bytes_per_gauge: baseline.saturating_sub(rss_start) as f64 / n,
        checkpoint_bytes: checkpoint,
        checkpoint_bytes_per_gauge: checkpoint.map(|c| c as f64 / n),
        checkpoint_skipped: (!take).then(|| match snapshot {
            SnapshotMode::Never => "--snapshot never".to_string(),
            _ => format!(
                "more than {SNAPSHOT_AUTO_MAX} gauges: the snapshot would be built in memory next \
                 to the state (--snapshot always to take it)"
            ),
        }),
        entities: engine.entity_count() as u64,
        raises: sink.raises.iter().sum(),
        seconds,
        events_per_s: readings as f64 / seconds.max(1e-12),
    })
}
