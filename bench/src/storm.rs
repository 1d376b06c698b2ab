//! The `storm` workload (`bench/peers/WORKLOAD.md`) run through forewarn: the rules
//! (`bench/storm.rules`, compiled like any user's), the input readers (CSV and Parquet in
//! arrival order), the edge counter, the evaluation-trace check, and the `RESULT` line the
//! peers print (`bench/peers/common.py`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use forewarn_engine::loader::load_rules;
use forewarn_engine::{
    Engine, EngineConfig, EvalCause, Evaluation, Reading, Rejection, Sink, StatusEvent,
    TransitionKind, Value, Warning,
};
use forewarn_rules::ir::Plan;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

/// The workload's rules in order: name, window label, threshold column.
pub const RULES: [(&str, &str, &str); 3] = [
    ("yellow", "1h", "t1h"),
    ("orange", "3h", "t3h"),
    ("red", "24h", "t24h"),
];

/// `bench/storm.rules`: the workload in forewarn's rule language.
pub fn rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("storm.rules")
}

/// The `thresholds.csv` next to an events file.
pub fn default_thresholds(events: &Path) -> PathBuf {
    events
        .parent()
        .unwrap_or(Path::new("."))
        .join("thresholds.csv")
}

/// Compile `bench/storm.rules` with the dataset's thresholds table.
pub fn load_plan(thresholds: &Path) -> anyhow::Result<Plan> {
    let overrides = HashMap::from([("thresholds.csv".to_string(), thresholds.to_path_buf())]);
    let loaded =
        load_rules(&rules_path(), overrides).map_err(|e| anyhow::anyhow!("storm rules: {e:?}"))?;
    for (i, (name, _, _)) in RULES.iter().enumerate() {
        anyhow::ensure!(
            loaded.plan.rules.get(i).map(|r| r.name.as_str()) == Some(name),
            "storm.rules must declare the rules yellow, orange, red in that order"
        );
    }
    Ok(loaded.plan)
}

/// The engine settings every storm run uses (event clock, defaults otherwise).
pub fn engine_config(trace: bool) -> EngineConfig {
    EngineConfig {
        trace,
        ..EngineConfig::default()
    }
}

/// Per-rule counts in the workload's order (yellow, orange, red).
pub type PerRule = [u64; 3];

/// Counts the engine's transitions per rule; with the trace on, also checks every evaluation
/// the way the workload defines the answer (see [`TraceCheck`]).
#[derive(Debug, Default)]
pub struct StormSink {
    /// `raise` transitions per rule: the engine's rising edges.
    pub raises: PerRule,
    /// `clear` transitions per rule.
    pub clears: PerRule,
    /// Readings the engine rejected (none are expected).
    pub rejected: u64,
    /// The trace check, when tracing.
    pub trace: Option<TraceCheck>,
}

fn rule_index(name: &str) -> Option<usize> {
    RULES.iter().position(|(n, _, _)| *n == name)
}

impl Sink for StormSink {
    fn warning(&mut self, w: Warning) {
        if let Some(i) = rule_index(&w.rule) {
            match w.kind {
                TransitionKind::Raise => self.raises[i] += 1,
                TransitionKind::Clear => self.clears[i] += 1,
                _ => {}
            }
        }
    }
    fn status(&mut self, _s: StatusEvent) {}
    fn rejected(&mut self, _r: Rejection) {
        self.rejected += 1;
    }
    fn evaluated(&mut self, e: &Evaluation<'_>) {
        if let Some(t) = self.trace.as_mut() {
            t.evaluated(e);
        }
    }
}

/// Per (rule, entity) state of the trace check.
#[derive(Debug, Clone, Copy, Default)]
struct TraceState {
    /// The rule's window value at the entity's previous reading (0 before the first).
    prev: f64,
    /// A time-driven evaluation since that reading found the value below the threshold.
    dipped: bool,
}

/// Recomputes the workload's answer from the engine's evaluation trace, independently of the
/// engine's levels: for every evaluation caused by a reading it takes the window value `R`,
/// adds `round(R · 10⁶)` to the checksum and counts a rising edge where `R ≥ thr` and the
/// value at the entity's previous reading was `< thr` — exactly WORKLOAD.md's definition,
/// i.e. evaluation limited to readings.
///
/// The engine also evaluates between readings (a sample leaving a window when a reading is
/// missing); such an evaluation can clear a warning that the next reading raises again, where
/// the workload sees no edge. Those cases are counted in `time_driven_edges`, so that
/// `raises = reading_edges + time_driven_edges` accounts for every difference exactly.
#[derive(Debug, Default)]
pub struct TraceCheck {
    thresholds: HashMap<String, [f64; 3]>,
    state: HashMap<String, [TraceState; 3]>,
    /// Rising edges by the workload's definition (evaluations at readings only).
    pub reading_edges: PerRule,
    /// Engine edges the workload does not see: cleared between two readings by a time-driven
    /// evaluation, raised again at the second reading.
    pub time_driven_edges: PerRule,
    /// Σ round(R · 10⁶) over reading evaluations, per rule (= per window).
    pub checksum_micro: [i128; 3],
    /// Evaluations caused by readings, per rule.
    pub reading_evaluations: PerRule,
    /// Evaluations caused by deadlines, per rule.
    pub deadline_evaluations: PerRule,
    /// Evaluations of entities without a thresholds row (none are expected).
    pub unknown: u64,
}

impl TraceCheck {
    /// A check against the thresholds of `thresholds.csv` (`station,t1h,t3h,t24h`).
    pub fn new(thresholds: &Path) -> anyhow::Result<TraceCheck> {
        let text = std::fs::read_to_string(thresholds)?;
        let mut map = HashMap::new();
        for (n, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            anyhow::ensure!(
                f.len() == 4,
                "{}:{}: expected 4 fields",
                thresholds.display(),
                n + 1
            );
            map.insert(
                f[0].to_string(),
                [f[1].parse()?, f[2].parse()?, f[3].parse()?],
            );
        }
        Ok(TraceCheck {
            thresholds: map,
            ..TraceCheck::default()
        })
    }

    fn evaluated(&mut self, e: &Evaluation<'_>) {
        let Some(r) = rule_index(e.rule) else { return };
        let Some(thr) = self.thresholds.get(e.entity).map(|t| t[r]) else {
            self.unknown += 1;
            return;
        };
        let value = e.windows.first().and_then(|w| w.1).unwrap_or(0.0);
        let st = &mut self
            .state
            .entry(e.entity.to_string())
            .or_insert([TraceState::default(); 3])[r];
        match e.cause {
            EvalCause::Reading => {
                self.reading_evaluations[r] += 1;
                self.checksum_micro[r] += (value * 1e6).round() as i128;
                if value >= thr {
                    if st.prev < thr {
                        self.reading_edges[r] += 1;
                    } else if st.dipped {
                        self.time_driven_edges[r] += 1;
                    }
                }
                st.prev = value;
                st.dipped = false;
            }
            // the storm workload has no forecasts: a forecast evaluation is time-driven-like
            EvalCause::Deadline | EvalCause::Forecast => {
                self.deadline_evaluations[r] += 1;
                if value < thr {
                    st.dipped = true;
                }
            }
        }
    }
}

/// Calls `f(station, ts, value)` for every row of a storm CSV file
/// (`station,ts,value,late`, header first), in file order. Returns the number of rows.
///
/// A hand-written scanner over 4 MiB blocks: no allocation per row.
pub fn read_csv(path: &Path, mut f: impl FnMut(&str, i64, f64)) -> anyhow::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0usize;
    let mut rows = 0u64;
    let mut line_no = 0u64;
    let mut header = true;
    loop {
        let n = file.read(&mut buf[filled..])?;
        let eof = n == 0;
        filled += n;
        let mut start = 0;
        while let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            line_no += 1;
            if header {
                header = false;
                continue;
            }
            parse_line(line, &mut f)
                .ok_or_else(|| anyhow::anyhow!("{}:{line_no}: malformed row", path.display()))?;
            rows += 1;
        }
        if eof {
            if start < filled {
                line_no += 1;
                parse_line(&buf[start..filled], &mut f).ok_or_else(|| {
                    anyhow::anyhow!("{}:{line_no}: malformed row", path.display())
                })?;
                rows += 1;
            }
            return Ok(rows);
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

fn parse_line(line: &[u8], f: &mut impl FnMut(&str, i64, f64)) -> Option<()> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let c1 = line.iter().position(|&b| b == b',')?;
    let rest = &line[c1 + 1..];
    let c2 = rest.iter().position(|&b| b == b',')?;
    let rest2 = &rest[c2 + 1..];
    let c3 = rest2.iter().position(|&b| b == b',').unwrap_or(rest2.len());
    let station = std::str::from_utf8(&line[..c1]).ok()?;
    let ts = parse_i64(&rest[..c2])?;
    let value: f64 = std::str::from_utf8(&rest2[..c3]).ok()?.parse().ok()?;
    f(station, ts, value);
    Some(())
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (d - b'0') as i64;
    }
    Some(if neg { -v } else { v })
}

/// Calls `f(station, ts, value)` for every row of a storm Parquet file, in file order
/// (`station` as a dictionary or plain string column, `ts` int64 ms, `value` float64).
/// Returns the number of rows.
pub fn read_parquet(path: &Path, mut f: impl FnMut(&str, i64, f64)) -> anyhow::Result<u64> {
    let file = File::open(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(64 * 1024)
        .build()?;
    let mut rows = 0u64;
    for batch in reader {
        let batch: RecordBatch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("{}: no column {name}", path.display()))
        };
        let station = col("station")?;
        let ts = col("ts")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| anyhow::anyhow!("{}: ts is not int64", path.display()))?;
        let value = col("value")?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| anyhow::anyhow!("{}: value is not float64", path.display()))?;
        let ts = ts.values();
        let value = value.values();
        match station.data_type() {
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let dict = station.as_dictionary::<Int32Type>();
                let names = dict.values().as_string::<i32>();
                let names: Vec<&str> = (0..names.len()).map(|i| names.value(i)).collect();
                for (i, &key) in dict.keys().values().iter().enumerate() {
                    f(names[key as usize], ts[i], value[i]);
                }
            }
            DataType::Utf8 => {
                let s = station.as_string::<i32>();
                for i in 0..s.len() {
                    f(s.value(i), ts[i], value[i]);
                }
            }
            other => anyhow::bail!("{}: station column is {other}", path.display()),
        }
        rows += batch.num_rows() as u64;
    }
    Ok(rows)
}

/// Calls `f` for every row of a storm events file, CSV or Parquet by extension.
pub fn read_events(path: &Path, f: impl FnMut(&str, i64, f64)) -> anyhow::Result<u64> {
    if path.extension().is_some_and(|e| e == "parquet") {
        read_parquet(path, f)
    } else {
        read_csv(path, f)
    }
}

/// What one end-to-end run found.
#[derive(Debug)]
pub struct RunOutcome {
    /// Readings read from the file and pushed.
    pub n_events: u64,
    /// The sink: edges, rejections, the trace check.
    pub sink: StormSink,
    /// Evaluations the engine made.
    pub evaluations: u64,
    /// Entities the engine holds at the end.
    pub entities: usize,
}

/// Read an events file and run it through the engine with the storm rules: the end-to-end
/// job. Every row is one arrival, pushed in file order; the end of the file ends the input.
pub fn run_file(events: &Path, thresholds: &Path, trace: bool) -> anyhow::Result<RunOutcome> {
    let plan = load_plan(thresholds)?;
    let mut engine = Engine::new(plan, engine_config(trace));
    let rain = engine
        .feed("rain")
        .ok_or_else(|| anyhow::anyhow!("storm.rules declares no feed rain"))?;
    let mut sink = StormSink {
        trace: if trace {
            Some(TraceCheck::new(thresholds)?)
        } else {
            None
        },
        ..StormSink::default()
    };
    let n_events = read_events(events, |station, ts, value| {
        let r = Reading {
            entity: station,
            feed: rain,
            ts,
            value: Value::Num(value),
            tag: 0,
        };
        // Rejections reach the sink and are counted there.
        let _ = engine.push(&r, &mut sink);
    })?;
    engine.finish(&mut sink);
    Ok(RunOutcome {
        n_events,
        evaluations: engine.counters().evaluations,
        entities: engine.entity_count(),
        sink,
    })
}

/// Readings for one shard of [`run_file_sharded`]: the station names first seen in this
/// chunk (appended to the shard's name table before its readings are pushed), then the
/// readings as (index into that table, ts, value), in file order.
#[derive(Default)]
struct Chunk {
    new_names: Vec<String>,
    readings: Vec<(u32, i64, f64)>,
}

/// Readings per chunk handed to a shard.
const CHUNK: usize = 4096;

/// [`run_file`] on `threads` engines, as the daemon shards: this thread reads and decodes
/// the file and routes each reading by a hash of its station id (the same as `storm core`)
/// to one engine thread over a bounded channel, in chunks; every engine sees its stations'
/// readings in file order. The storm rules have no group function, so each gauge's
/// warnings do not depend on the others'. `threads <= 1` is [`run_file`] without a trace.
pub fn run_file_sharded(
    events: &Path,
    thresholds: &Path,
    threads: usize,
) -> anyhow::Result<RunOutcome> {
    if threads <= 1 {
        return run_file(events, thresholds, false);
    }
    let plan = std::sync::Arc::new(load_plan(thresholds)?);
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(threads);
        let mut shards = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(8);
            senders.push(tx);
            let plan = std::sync::Arc::clone(&plan);
            shards.push(
                scope.spawn(move || -> anyhow::Result<(StormSink, u64, usize)> {
                    let mut engine = Engine::new(plan, engine_config(false));
                    let rain = engine
                        .feed("rain")
                        .ok_or_else(|| anyhow::anyhow!("storm.rules declares no feed rain"))?;
                    let mut sink = StormSink::default();
                    let mut names: Vec<String> = Vec::new();
                    for chunk in rx {
                        names.extend(chunk.new_names);
                        for &(i, ts, value) in &chunk.readings {
                            let r = Reading {
                                entity: &names[i as usize],
                                feed: rain,
                                ts,
                                value: Value::Num(value),
                                tag: 0,
                            };
                            // Rejections reach the sink and are counted there.
                            let _ = engine.push(&r, &mut sink);
                        }
                    }
                    engine.finish(&mut sink);
                    Ok((sink, engine.counters().evaluations, engine.entity_count()))
                }),
            );
        }
        // station -> (shard, index in the shard's name table)
        let mut ids: HashMap<String, (usize, u32)> = HashMap::new();
        let mut named = vec![0u32; threads];
        let mut chunks: Vec<Chunk> = (0..threads).map(|_| Chunk::default()).collect();
        let mut shard_gone = false;
        let read = read_events(events, |station, ts, value| {
            let (s, i) = match ids.get(station) {
                Some(&at) => at,
                None => {
                    let s = crate::storm_core::shard_of(station, threads);
                    let at = (s, named[s]);
                    named[s] += 1;
                    chunks[s].new_names.push(station.to_string());
                    ids.insert(station.to_string(), at);
                    at
                }
            };
            let chunk = &mut chunks[s];
            chunk.readings.push((i, ts, value));
            if chunk.readings.len() >= CHUNK {
                let full = std::mem::take(chunk);
                shard_gone |= senders[s].send(full).is_err();
            }
        });
        for (s, chunk) in chunks.into_iter().enumerate() {
            shard_gone |= senders[s].send(chunk).is_err();
        }
        drop(senders);
        let mut sink = StormSink::default();
        let (mut evaluations, mut entities) = (0, 0);
        for shard in shards {
            let (s, e, n) = shard
                .join()
                .map_err(|_| anyhow::anyhow!("an engine thread panicked"))??;
            for r in 0..RULES.len() {
                sink.raises[r] += s.raises[r];
                sink.clears[r] += s.clears[r];
            }
            sink.rejected += s.rejected;
            evaluations += e;
            entities += n;
        }
        anyhow::ensure!(!shard_gone, "an engine thread stopped taking readings");
        Ok(RunOutcome {
            n_events: read?,
            sink,
            evaluations,
            entities,
        })
    })
}

/// The peers' answer format (`bench/peers/common.py`): one `RESULT {json}` line.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Answer {
    /// Events processed.
    pub n_events: u64,
    /// Rising edges per rule.
    pub edges: Edges,
    /// Σ round(R · 10⁶) per window, when known.
    pub checksum_micro: Option<Micro>,
    /// The three checksums' sum in mm with 6 decimals, when known.
    pub checksum: Option<String>,
}

/// Rising edges per rule, named as the workload names them.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Edges {
    /// 1 h rule.
    pub yellow: u64,
    /// 3 h rule.
    pub orange: u64,
    /// 24 h rule.
    pub red: u64,
}

impl From<PerRule> for Edges {
    fn from(e: PerRule) -> Edges {
        Edges {
            yellow: e[0],
            orange: e[1],
            red: e[2],
        }
    }
}

/// Checksums per window, named as the workload names them.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Micro {
    /// Σ round(R_1h · 10⁶).
    #[serde(rename = "1h")]
    pub h1: i128,
    /// Σ round(R_3h · 10⁶).
    #[serde(rename = "3h")]
    pub h3: i128,
    /// Σ round(R_24h · 10⁶).
    #[serde(rename = "24h")]
    pub h24: i128,
}

/// The workload's checksum string: Σ micro / 10⁶ with exactly 6 decimals.
pub fn checksum_string(m: &Micro) -> String {
    let total = m.h1 + m.h3 + m.h24;
    format!("{}.{:06}", total / 1_000_000, total % 1_000_000)
}

impl RunOutcome {
    /// The answer in the workload's terms. Edges are the engine's own `raise` transitions;
    /// with the trace, the checksum too (computed from the evaluations at readings).
    pub fn answer(&self) -> Answer {
        let micro = self.sink.trace.as_ref().map(|t| Micro {
            h1: t.checksum_micro[0],
            h3: t.checksum_micro[1],
            h24: t.checksum_micro[2],
        });
        Answer {
            n_events: self.n_events,
            edges: self.sink.raises.into(),
            checksum: micro.as_ref().map(checksum_string),
            checksum_micro: micro,
        }
    }
}
