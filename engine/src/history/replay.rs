//! Reading the readings back: batch by batch, in arrival order, to replay history into an
//! engine (backfilling new rules over past data).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use forewarn_rules::ir::{FeedId, Millis};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{HistoryError, Kind};
use crate::engine::{Reading, Value};
use crate::record::{RejectReason, Rejection, Sink, StatusEvent, Warning};
use crate::source::{DeadLetter, ReplayOutput, ReplayTarget, SourceStats};
use crate::time::Zone;

/// One accepted reading read back from the history.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedReading {
    /// Arrival sequence number.
    pub seq: u64,
    /// Entity id.
    pub entity: String,
    /// Feed name.
    pub feed: String,
    /// Event time, UTC ms.
    pub ts: Millis,
    /// The value in the feed's declared unit, when it came as a number.
    pub value: Option<f64>,
    /// The value as text, when it came as text.
    pub text: Option<String>,
}

impl OwnedReading {
    /// The reading to push again (`feed` resolved by the caller), tagged `tag`.
    pub fn reading(&self, feed: FeedId, tag: u64) -> Reading<'_> {
        let value = match (self.value, &self.text) {
            (Some(v), _) => Value::Num(v),
            (None, Some(t)) => Value::Text(t),
            (None, None) => Value::Num(f64::NAN),
        };
        Reading {
            entity: &self.entity,
            feed,
            ts: self.ts,
            value,
            tag,
        }
    }

    /// The reading as one JSON object (the raw bytes of its dead letter in a replay).
    fn to_json(&self) -> Vec<u8> {
        let value = match (self.value, &self.text) {
            (Some(v), _) => serde_json::json!(v),
            (None, Some(t)) => serde_json::json!(t),
            (None, None) => serde_json::Value::Null,
        };
        serde_json::json!({
            "seq": self.seq,
            "entity": self.entity,
            "feed": self.feed,
            "ts": Zone::default().format(self.ts).replace("+00:00", "Z"),
            "value": value,
        })
        .to_string()
        .into_bytes()
    }

    fn value_text(&self) -> Option<String> {
        match (self.value, &self.text) {
            (Some(v), _) => Some(v.to_string()),
            (None, t) => t.clone(),
        }
    }
}

/// Readings that were pushed together (one `push_batch` or `push`): the rows of the
/// `readings` table that share a `batch` number, in `seq` order. Readings of the original
/// batch that the engine rejected are not in it (they are in `rejected`).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedBatch {
    /// The batch number: arrival sequence number of the batch's first reading.
    pub batch: u64,
    /// Wall-clock time of arrival, UTC ms.
    pub received_at: Millis,
    /// Source name.
    pub source: String,
    /// Line (or message) number within the source.
    pub line: u64,
    /// The readings, in arrival order.
    pub readings: Vec<OwnedReading>,
}

/// The Parquet files of one table, ordered by the segment they were sealed from (then by
/// path). Only visible `*.parquet` files under `history_dir/<kind>/` count (temporary files
/// are hidden); a missing directory is an empty table.
pub fn history_files(history_dir: &Path, kind: Kind) -> Result<Vec<PathBuf>, HistoryError> {
    let mut files = Vec::new();
    collect(&history_dir.join(kind.name()), &mut files)?;
    files.sort_by(|a, b| (segment_of(a), a).cmp(&(segment_of(b), b)));
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), HistoryError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(HistoryError::io(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(HistoryError::io(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = e.path();
        let ty = e.file_type().map_err(HistoryError::io(&path))?;
        if ty.is_dir() {
            collect(&path, files)?;
        } else if name.ends_with(".parquet") {
            files.push(path);
        }
    }
    Ok(())
}

/// The segment id in a `part-<id>.parquet` name (others sort last, together).
fn segment_of(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.strip_prefix("part-")?
                .strip_suffix(".parquet")?
                .parse()
                .ok()
        })
        .unwrap_or(u64::MAX)
}

/// The batches of the history under `history_dir`, in arrival order: see
/// [`read_history_batches`].
#[derive(Debug)]
pub struct HistoryBatches {
    /// Files still to read, grouped by segment.
    groups: VecDeque<Vec<PathBuf>>,
    /// Batches of the segment being read.
    pending: VecDeque<OwnedBatch>,
}

impl Iterator for HistoryBatches {
    type Item = Result<OwnedBatch, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(Ok(b));
            }
            let group = self.groups.pop_front()?;
            match load_group(&group) {
                Ok(batches) => self.pending = batches,
                Err(e) => {
                    self.groups.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Every readings file under `history_dir/readings/`, as the batches they were pushed in:
/// rows ordered by `seq` and grouped by `batch`. Files are read one segment at a time (a
/// batch never spans segments, and a later segment holds later arrivals), so memory holds
/// one segment's readings, not the whole history. An empty or missing history yields no
/// batches.
pub fn read_history_batches(history_dir: &Path) -> Result<HistoryBatches, HistoryError> {
    let files = history_files(history_dir, Kind::Readings)?;
    let mut groups: VecDeque<Vec<PathBuf>> = VecDeque::new();
    let mut last = None;
    for f in files {
        let s = segment_of(&f);
        if last != Some(s) {
            groups.push_back(Vec::new());
            last = Some(s);
        }
        if let Some(g) = groups.back_mut() {
            g.push(f);
        }
    }
    Ok(HistoryBatches {
        groups,
        pending: VecDeque::new(),
    })
}

struct Row {
    batch: u64,
    received_at: Millis,
    source: String,
    line: u64,
    reading: OwnedReading,
}

fn load_group(files: &[PathBuf]) -> Result<VecDeque<OwnedBatch>, HistoryError> {
    let mut rows = Vec::new();
    for f in files {
        read_file(f, &mut rows)?;
    }
    rows.sort_by_key(|r| r.reading.seq);
    let mut out: VecDeque<OwnedBatch> = VecDeque::new();
    for r in rows {
        match out.back_mut() {
            Some(b) if b.batch == r.batch => b.readings.push(r.reading),
            _ => out.push_back(OwnedBatch {
                batch: r.batch,
                received_at: r.received_at,
                source: r.source,
                line: r.line,
                readings: vec![r.reading],
            }),
        }
    }
    Ok(out)
}

fn read_file(path: &Path, rows: &mut Vec<Row>) -> Result<(), HistoryError> {
    let file = File::open(path).map_err(HistoryError::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(HistoryError::parquet(path))?;
    for batch in reader {
        let batch = batch.map_err(HistoryError::arrow(path))?;
        let c = Columns {
            path,
            batch: &batch,
        };
        let seq = c.u64("seq")?;
        let first = c.u64("batch")?;
        let entity = c.string("entity")?;
        let feed = c.string("feed")?;
        let ts = c.timestamp("ts")?;
        let value = c.column("value", &DataType::Float64)?;
        let value = value.as_primitive::<Float64Type>();
        let text = c.string("text")?;
        let received_at = c.timestamp("received_at")?;
        let source = c.string("source")?;
        let line = c.u64("line")?;
        for i in 0..batch.num_rows() {
            let req = |a: &arrow_array::StringArray, name: &str| {
                opt_str(a, i)
                    .map(str::to_string)
                    .ok_or_else(|| c.null(name))
            };
            rows.push(Row {
                batch: first.value(i),
                received_at: received_at.value(i),
                source: req(source, "source")?,
                line: line.value(i),
                reading: OwnedReading {
                    seq: seq.value(i),
                    entity: req(entity, "entity")?,
                    feed: req(feed, "feed")?,
                    ts: ts.value(i),
                    value: value.is_valid(i).then(|| value.value(i)),
                    text: opt_str(text, i).map(str::to_string),
                },
            });
        }
    }
    Ok(())
}

fn opt_str(a: &arrow_array::StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// Typed access to the columns of a batch read from `path`.
struct Columns<'a> {
    path: &'a Path,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn column(&self, name: &str, ty: &DataType) -> Result<&'a dyn Array, HistoryError> {
        let a = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| HistoryError::Schema {
                path: self.path.to_path_buf(),
                detail: format!("no column {name:?}"),
            })?;
        let ok = match (ty, a.data_type()) {
            (DataType::Timestamp(u, _), DataType::Timestamp(v, _)) => u == v,
            (t, u) => t == u,
        };
        if !ok {
            return Err(HistoryError::Schema {
                path: self.path.to_path_buf(),
                detail: format!("column {name:?} is {}, expected {ty}", a.data_type()),
            });
        }
        Ok(a.as_ref())
    }

    fn null(&self, name: &str) -> HistoryError {
        HistoryError::Schema {
            path: self.path.to_path_buf(),
            detail: format!("column {name:?} holds a null"),
        }
    }

    fn u64(&self, name: &str) -> Result<&'a arrow_array::UInt64Array, HistoryError> {
        let a = self.column(name, &DataType::UInt64)?;
        if a.null_count() > 0 {
            return Err(self.null(name));
        }
        Ok(a.as_primitive::<UInt64Type>())
    }

    fn string(&self, name: &str) -> Result<&'a arrow_array::StringArray, HistoryError> {
        Ok(self.column(name, &DataType::Utf8)?.as_string::<i32>())
    }

    fn timestamp(
        &self,
        name: &str,
    ) -> Result<&'a arrow_array::TimestampMillisecondArray, HistoryError> {
        let a = self.column(name, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        if a.null_count() > 0 {
            return Err(self.null(name));
        }
        Ok(a.as_primitive::<TimestampMillisecondType>())
    }
}

/// Hands engine output on; turns rejections into dead letters located at the batch's source
/// and line, with the rejected reading (as JSON) as raw bytes.
struct BatchContext<'a> {
    out: &'a mut dyn ReplayOutput,
    batch: &'a OwnedBatch,
}

impl Sink for BatchContext<'_> {
    fn warning(&mut self, w: Warning) {
        self.out.warning(w)
    }
    fn status(&mut self, s: StatusEvent) {
        self.out.status(s)
    }
    fn rejected(&mut self, r: Rejection) {
        let raw = if r.tag == self.batch.line {
            self.batch
                .readings
                .iter()
                .find(|x| x.entity == r.entity && x.feed == r.feed && x.ts == r.ts)
                .map(OwnedReading::to_json)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.out
            .dead_letter(DeadLetter::from_rejection(r, &self.batch.source, &raw));
    }
    fn evaluated(&mut self, e: &crate::record::Evaluation<'_>) {
        self.out.evaluated(e)
    }
}

/// Replay the history under `history_dir` into `engine`, batch by batch in arrival order:
/// a batch of one reading with `push`, larger ones with `push_batch` (readings pushed
/// together are pushed together again). Feeds are resolved by name; a reading of a feed the
/// rules do not declare is dead-lettered (`unknown_feed`) and the rest of its batch goes on.
/// Readings are tagged with their line number, so engine rejections become dead letters at
/// the original source and line. Time is event time only: the wall clock is not moved.
///
/// Statistics: `lines` counts batches, `readings` readings handed to the engine, `bad`
/// readings of unknown feeds.
pub fn replay_history(
    engine: &mut dyn ReplayTarget,
    history_dir: &Path,
    out: &mut dyn ReplayOutput,
) -> Result<SourceStats, HistoryError> {
    let mut stats = SourceStats::default();
    for b in read_history_batches(history_dir)? {
        let b = b?;
        stats.lines += 1;
        let mut readings = Vec::with_capacity(b.readings.len());
        for r in &b.readings {
            match engine.feed(&r.feed) {
                Some(feed) => readings.push(r.reading(feed, b.line)),
                None => {
                    stats.bad += 1;
                    engine.count_source_rejection(RejectReason::UnknownFeed);
                    out.dead_letter(DeadLetter {
                        source: b.source.clone(),
                        line: b.line,
                        reason: RejectReason::UnknownFeed,
                        detail: format!("feed {:?} is not declared in the rules", r.feed),
                        entity: Some(r.entity.clone()),
                        feed: Some(r.feed.clone()),
                        ts: Some(r.ts),
                        value: r.value_text(),
                        raw: r.to_json(),
                    });
                }
            }
        }
        stats.readings += readings.len() as u64;
        let mut sink = BatchContext {
            out: &mut *out,
            batch: &b,
        };
        match readings.as_slice() {
            [] => {}
            [one] => engine.push(one, &mut sink),
            many => engine.push_batch(many, &mut sink),
        }
    }
    Ok(stats)
}

/// Samples to warm windows a rule reload lengthened ([`crate::engine::Warmup`] spans): for
/// every (entity, feed, ts) with `ts` in a span's `(from, to]`, the value in force among the
/// readings that arrived before arrival number `before` (the reload's place in the input:
/// a crash recovery replaying the reload gets the same samples). Reads the Parquet files of
/// the days the spans cover and the journal segments not sealed yet.
pub fn warm_samples(
    history_dir: &Path,
    spans: &[crate::engine::Warmup],
    before: u64,
) -> Result<Vec<crate::engine::WarmSample>, HistoryError> {
    use std::collections::BTreeMap;
    // (seq, entity, feed, ts, value, outcome)
    type Arrival = (u64, String, String, Millis, f64, String);
    let wanted = |feed: &str, ts: Millis| {
        spans
            .iter()
            .any(|s| s.feed == feed && ts > s.from && ts <= s.to)
    };
    let mut rows: Vec<Arrival> = Vec::new();
    // Parquet: only the day partitions the spans touch
    let mut days = std::collections::BTreeSet::new();
    for s in spans {
        let (Some(a), Some(b)) = (super::day_of(s.from + 1), super::day_of(s.to)) else {
            continue;
        };
        let mut d = a;
        loop {
            days.insert(format!("date={d}"));
            match d.succ_opt() {
                Some(next) if d < b => d = next,
                _ => break,
            }
        }
    }
    for f in history_files(history_dir, Kind::Readings)? {
        let day = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !days.contains(&day) {
            continue;
        }
        let file = File::open(&f).map_err(HistoryError::io(&f))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(HistoryError::parquet(&f))?;
        for batch in reader {
            let batch = batch.map_err(HistoryError::arrow(&f))?;
            let c = Columns {
                path: &f,
                batch: &batch,
            };
            let seq = c.u64("seq")?;
            let entity = c.string("entity")?;
            let feed = c.string("feed")?;
            let ts = c.timestamp("ts")?;
            let value = c.column("value", &DataType::Float64)?;
            let value = value.as_primitive::<Float64Type>();
            let text = c.string("text")?;
            let outcome = c.string("outcome")?;
            for i in 0..batch.num_rows() {
                let (Some(e), Some(fd)) = (opt_str(entity, i), opt_str(feed, i)) else {
                    continue;
                };
                if seq.value(i) >= before || !wanted(fd, ts.value(i)) {
                    continue;
                }
                let v = if value.is_valid(i) {
                    value.value(i)
                } else {
                    match opt_str(text, i).and_then(|t| t.trim().parse().ok()) {
                        Some(v) => v,
                        None => continue,
                    }
                };
                rows.push((
                    seq.value(i),
                    e.to_string(),
                    fd.to_string(),
                    ts.value(i),
                    v,
                    opt_str(outcome, i).unwrap_or("").to_string(),
                ));
            }
        }
    }
    // the journal segments not sealed yet (a sealed one may still be there: its rows are
    // then read twice, which the value-in-force map below makes harmless)
    let journal = history_dir.join("_journal");
    for s in crate::durable::journal::list_segments(&journal).map_err(HistoryError::io(&journal))? {
        let path = journal.join(crate::durable::journal::segment_name(s));
        let bytes = crate::durable::journal::read_segment_bytes(&path)?;
        crate::durable::journal::scan_segment(&path, &bytes, 0, |_, e| {
            if let crate::durable::Entry::Batch(b) = e {
                for (i, r) in b.readings.iter().enumerate() {
                    let seq = b.seq + i as u64;
                    if seq >= before || !r.outcome.accepted() || !wanted(&r.feed, r.ts) {
                        continue;
                    }
                    let v = match (r.value, &r.text) {
                        (Some(v), _) => v,
                        (None, Some(t)) => match t.trim().parse() {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                        (None, None) => continue,
                    };
                    rows.push((
                        seq,
                        r.entity.to_string(),
                        r.feed.to_string(),
                        r.ts,
                        v,
                        r.outcome.as_str().to_string(),
                    ));
                }
            }
            Ok(())
        })?;
    }
    rows.sort_by_key(|r| r.0);
    rows.dedup_by_key(|r| r.0);
    let mut in_force: BTreeMap<(String, String, Millis), f64> = BTreeMap::new();
    for (_, entity, feed, ts, v, outcome) in rows {
        let key = (entity, feed, ts);
        match outcome.as_str() {
            "on_time" | "late" | "replaced" | "held" => {
                in_force.insert(key, v);
            }
            "added" => *in_force.entry(key).or_insert(0.0) += v,
            _ => {} // duplicate, ignored: nothing changed
        }
    }
    Ok(in_force
        .into_iter()
        .map(|((entity, feed, ts), value)| crate::engine::WarmSample {
            entity,
            feed,
            ts,
            value,
        })
        .collect())
}
