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
