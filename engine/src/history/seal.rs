//! Sealing a journal segment into Parquet files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, MapArray, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{ArrowError, SchemaRef};
use chrono::{DateTime, Datelike, NaiveDate};
use forewarn_rules::ir::Millis;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::schema::{self, HISTORY_VERSION};
use super::{HistoryError, Kind};
use crate::durable::entry::{Batch, Entry, Outcome, RejectedRow, StatusRow, WarningRow};
use crate::durable::journal;

/// Most rows in one Parquet row group (scans read whole row groups).
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// Rows per Arrow record batch handed to the Parquet writer.
const CHUNK_ROWS: usize = 64 * 1024;
/// zstd level of the history files.
const ZSTD_LEVEL: i32 = 3;

/// What sealing a segment wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealStats {
    /// Valid entries in the segment.
    pub entries: u64,
    /// Bytes after the segment's valid prefix (a torn tail), ignored.
    pub trailing_bytes: u64,
    /// Rows written to `readings` (accepted readings).
    pub readings: u64,
    /// Rows written to `rejected`.
    pub rejected: u64,
    /// Rows written to `warnings`.
    pub warnings: u64,
    /// Rows written to `status`.
    pub status: u64,
    /// The files written (final names), in the order written.
    pub files: Vec<PathBuf>,
    /// Bytes written, all files together.
    pub bytes: u64,
}

impl SealStats {
    /// Rows written to the table of `kind`.
    pub fn rows(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Readings => self.readings,
            Kind::Rejected => self.rejected,
            Kind::Warnings => self.warnings,
            Kind::Status => self.status,
        }
    }
}

/// The UTC day of an instant, when it lies in the years 1..=9999 (a four-digit year).
pub fn day_of(t: Millis) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(t)
        .map(|d| d.date_naive())
        .filter(|d| (1..=9999).contains(&d.year()))
}

/// The day of a row: the first of its candidate times that has one (else 1970-01-01).
fn day(times: &[Option<Millis>]) -> NaiveDate {
    times
        .iter()
        .flatten()
        .find_map(|&t| day_of(t))
        .unwrap_or_default()
}

/// The file name of segment `id`'s part of a partition.
fn part_name(segment_id: u64) -> String {
    format!("part-{segment_id:016}.parquet")
}

/// Seal journal segment `segment_id` (the file `segment_path`) into Parquet files under
/// `history_dir`: `<kind>/date=YYYY-MM-DD/part-<segment_id:016>.parquet` for each table with
/// rows on that UTC day (readings by `ts`, rejected by `ts` or else `received_at`, warnings by
/// event time, status by time). Each file is written under a hidden temporary name, flushed,
/// `fsync`ed and renamed, and its directory `fsync`ed. Sealing the same segment again writes
/// the same names with identical content. A torn tail is ignored (only the valid prefix is
/// sealed); `Clock` entries and readings the engine rejected (their dead letter is a
/// `Rejected` entry) have no rows.
pub fn seal_segment(
    history_dir: &Path,
    segment_path: &Path,
    segment_id: u64,
) -> Result<SealStats, HistoryError> {
    let bytes = journal::read_segment_bytes(segment_path)?;
    let mut entries = Vec::new();
    let end = journal::scan_segment(segment_path, &bytes, 0, |_, e| {
        entries.push(e);
        Ok(())
    })?;

    let mut readings: BTreeMap<NaiveDate, Vec<(&Batch<'_>, usize)>> = BTreeMap::new();
    let mut rejected: BTreeMap<NaiveDate, Vec<&RejectedRow<'_>>> = BTreeMap::new();
    let mut warnings: BTreeMap<NaiveDate, Vec<&WarningRow<'_>>> = BTreeMap::new();
    let mut status: BTreeMap<NaiveDate, Vec<&StatusRow<'_>>> = BTreeMap::new();
    for e in &entries {
        match e {
            Entry::Batch(b) => {
                for (i, r) in b.readings.iter().enumerate() {
                    if r.outcome.accepted() {
                        let d = day(&[Some(r.ts), Some(b.received_at)]);
                        readings.entry(d).or_default().push((b, i));
                    }
                }
            }
            Entry::Rejected(r) => {
                let d = day(&[r.ts, Some(r.received_at)]);
                rejected.entry(d).or_default().push(r);
            }
            Entry::Warning(w) => {
                let d = day(&[Some(w.event_time), Some(w.emitted_at)]);
                warnings.entry(d).or_default().push(w);
            }
            Entry::Status(s) => {
                status.entry(day(&[Some(s.time)])).or_default().push(s);
            }
            Entry::Clock { .. } => {}
        }
    }

    let mut stats = SealStats {
        entries: end.entries,
        trailing_bytes: end.trailing,
        ..SealStats::default()
    };
    let w = Writer {
        history_dir,
        segment_id,
    };
    for (d, rows) in &readings {
        w.write(&mut stats, Kind::Readings, *d, rows, readings_batch)?;
        stats.readings += rows.len() as u64;
    }
    for (d, rows) in &rejected {
        w.write(&mut stats, Kind::Rejected, *d, rows, rejected_batch)?;
        stats.rejected += rows.len() as u64;
    }
    for (d, rows) in &warnings {
        w.write(&mut stats, Kind::Warnings, *d, rows, warnings_batch)?;
        stats.warnings += rows.len() as u64;
    }
    for (d, rows) in &status {
        w.write(&mut stats, Kind::Status, *d, rows, status_batch)?;
        stats.status += rows.len() as u64;
    }
    Ok(stats)
}

struct Writer<'p> {
    history_dir: &'p Path,
    segment_id: u64,
}

impl Writer<'_> {
    /// Write one partition file atomically.
    fn write<T>(
        &self,
        stats: &mut SealStats,
        kind: Kind,
        day: NaiveDate,
        rows: &[T],
        build: fn(&[T]) -> Result<RecordBatch, ArrowError>,
    ) -> Result<(), HistoryError> {
        let kind_dir = self.history_dir.join(kind.name());
        let dir = kind_dir.join(format!("date={}", day.format("%Y-%m-%d")));
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(HistoryError::io(&dir))?;
            // make the new directory entries durable too (up to the history directory's own)
            let parent = self
                .history_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            for d in [Some(kind_dir.as_path()), Some(self.history_dir), parent]
                .into_iter()
                .flatten()
            {
                journal::sync_dir(d).map_err(HistoryError::io(d))?;
            }
        }
        let name = part_name(self.segment_id);
        let path = dir.join(&name);
        // Hidden and not `.parquet`: listing tables, DuckDB globs and pyarrow datasets skip it.
        let tmp = dir.join(format!(".{name}.tmp"));
        let bytes = self.write_file(&tmp, kind, rows, build).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        fs::rename(&tmp, &path).map_err(HistoryError::io(&path))?;
        journal::sync_dir(&dir).map_err(HistoryError::io(&dir))?;
        stats.bytes += bytes;
        stats.files.push(path);
        Ok(())
    }

    fn write_file<T>(
        &self,
        tmp: &Path,
        kind: Kind,
        rows: &[T],
        build: fn(&[T]) -> Result<RecordBatch, ArrowError>,
    ) -> Result<u64, HistoryError> {
        let file = File::create(tmp).map_err(HistoryError::io(tmp))?;
        let props = writer_properties(kind, self.segment_id).map_err(HistoryError::parquet(tmp))?;
        let mut writer = ArrowWriter::try_new(file, kind.schema(), Some(props))
            .map_err(HistoryError::parquet(tmp))?;
        for chunk in rows.chunks(CHUNK_ROWS) {
            let batch = build(chunk).map_err(HistoryError::arrow(tmp))?;
            writer.write(&batch).map_err(HistoryError::parquet(tmp))?;
        }
        let file = writer.into_inner().map_err(HistoryError::parquet(tmp))?;
        file.sync_all().map_err(HistoryError::io(tmp))?;
        let len = file.metadata().map_err(HistoryError::io(tmp))?.len();
        Ok(len)
    }
}

fn writer_properties(
    kind: Kind,
    segment_id: u64,
) -> Result<WriterProperties, parquet::errors::ParquetError> {
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            kv("forewarn.history_version", HISTORY_VERSION.to_string()),
            kv("forewarn.kind", kind.name().to_string()),
            kv("forewarn.segment", segment_id.to_string()),
        ]))
        .build())
}

fn utc_ts(v: Vec<Millis>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
}

fn utc_ts_opt(v: Vec<Option<Millis>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
}

fn strs(v: Vec<&str>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn opt_strs(v: Vec<Option<&str>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(schema, columns)
}

fn readings_batch(rows: &[(&Batch<'_>, usize)]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut seq = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(n);
    let mut entity = Vec::with_capacity(n);
    let mut feed = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut value = Vec::with_capacity(n);
    let mut text = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut late = Vec::with_capacity(n);
    let mut received_at = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut line = Vec::with_capacity(n);
    for &(b, i) in rows {
        let r = &b.readings[i];
        seq.push(b.seq + i as u64);
        first.push(b.seq);
        entity.push(r.entity.as_ref());
        feed.push(r.feed.as_ref());
        ts.push(r.ts);
        value.push(r.value);
        text.push(r.text.as_deref());
        outcome.push(r.outcome.as_str());
        late.push(r.outcome == Outcome::Late);
        received_at.push(b.received_at);
        source.push(b.source.as_ref());
        line.push(b.line);
    }
    batch(
        schema::readings_schema(),
        vec![
            Arc::new(UInt64Array::from(seq)),
            Arc::new(UInt64Array::from(first)),
            strs(entity),
            strs(feed),
            utc_ts(ts),
            Arc::new(Float64Array::from(value)),
            opt_strs(text),
            strs(outcome),
            Arc::new(BooleanArray::from(late)),
            utc_ts(received_at),
            strs(source),
            Arc::new(UInt64Array::from(line)),
        ],
    )
}

fn rejected_batch(rows: &[&RejectedRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut received_at = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut line = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let mut detail = Vec::with_capacity(n);
    let mut entity = Vec::with_capacity(n);
    let mut feed = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut value = Vec::with_capacity(n);
    let mut raw: Vec<&[u8]> = Vec::with_capacity(n);
    let mut raw_text = Vec::with_capacity(n);
    for r in rows {
        received_at.push(r.received_at);
        source.push(r.source.as_ref());
        line.push(r.line);
        reason.push(r.reason.as_ref());
        detail.push(r.detail.as_ref());
        entity.push(r.entity.as_deref());
        feed.push(r.feed.as_deref());
        // A time no four-digit year can show (only a `bad_timestamp` rejection has one) is
        // left out; the raw line keeps it.
        ts.push(r.ts.filter(|&t| day_of(t).is_some()));
        value.push(r.value.as_deref());
        raw.push(r.raw.as_ref());
        raw_text.push(std::str::from_utf8(&r.raw).ok());
    }
    batch(
        schema::rejected_schema(),
        vec![
            utc_ts(received_at),
            strs(source),
            Arc::new(UInt64Array::from(line)),
            strs(reason),
            strs(detail),
            opt_strs(entity),
            opt_strs(feed),
            utc_ts_opt(ts),
            opt_strs(value),
            Arc::new(BinaryArray::from(raw)),
            opt_strs(raw_text),
        ],
    )
}

type Pairs<'a> = [(Cow<'a, str>, Option<f64>)];

/// A `map<utf8, f64?>` column, one map per row, pairs in their order.
fn number_map<'r, 'a: 'r>(rows: impl Iterator<Item = &'r Pairs<'a>>) -> MapArray {
    let names = MapFieldNames {
        entry: "entries".to_string(),
        key: "key".to_string(),
        value: "value".to_string(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), Float64Builder::new());
    for pairs in rows {
        for (k, v) in pairs {
            b.keys().append_value(k);
            b.values().append_option(*v);
        }
        // Infallible: keys and values were appended in pairs.
        let _ = b.append(true);
    }
    b.finish()
}

fn warnings_batch(rows: &[&WarningRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut rule = Vec::with_capacity(n);
    let mut entity = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut from = Vec::with_capacity(n);
    let mut to = Vec::with_capacity(n);
    let mut time = Vec::with_capacity(n);
    let mut emitted_at = Vec::with_capacity(n);
    let mut late = Vec::with_capacity(n);
    let mut delayed = Vec::with_capacity(n);
    let mut message = Vec::with_capacity(n);
    let mut ruleset = Vec::with_capacity(n);
    let mut branch = Vec::with_capacity(n);
    let mut crossing = Vec::with_capacity(n);
    for w in rows {
        branch.push(w.branch.as_ref());
        crossing.push(w.expected_crossing);
        rule.push(w.rule.as_ref());
        entity.push(w.entity.as_ref());
        seq.push(w.seq);
        kind.push(w.kind.as_ref());
        from.push(w.from.as_deref());
        to.push(w.to.as_deref());
        time.push(w.event_time);
        emitted_at.push(w.emitted_at);
        late.push(w.late);
        delayed.push(w.delayed);
        message.push(w.message.as_ref());
        ruleset.push(w.ruleset.as_ref());
    }
    let values = number_map(rows.iter().map(|w| w.values.as_slice()));
    let thresholds = number_map(rows.iter().map(|w| w.thresholds.as_slice()));
    batch(
        schema::warnings_schema(),
        vec![
            strs(rule),
            strs(entity),
            Arc::new(UInt64Array::from(seq)),
            strs(kind),
            opt_strs(from),
            opt_strs(to),
            utc_ts(time),
            utc_ts(emitted_at),
            Arc::new(BooleanArray::from(late)),
            Arc::new(BooleanArray::from(delayed)),
            Arc::new(values),
            Arc::new(thresholds),
            strs(message),
            strs(ruleset),
            strs(branch),
            utc_ts_opt(crossing),
        ],
    )
}

fn status_batch(rows: &[&StatusRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut entity = Vec::with_capacity(n);
    let mut feed = Vec::with_capacity(n);
    let mut from = Vec::with_capacity(n);
    let mut to = Vec::with_capacity(n);
    let mut time = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    for s in rows {
        entity.push(s.entity.as_ref());
        feed.push(s.feed.as_ref());
        from.push(s.from.as_ref());
        to.push(s.to.as_ref());
        time.push(s.time);
        last.push(s.last_sample);
    }
    batch(
        schema::status_schema(),
        vec![
            strs(entity),
            strs(feed),
            strs(from),
            strs(to),
            utc_ts(time),
            utc_ts_opt(last),
        ],
    )
}
