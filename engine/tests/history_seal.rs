//! Sealing a journal segment into Parquet history: every field read back with the parquet
//! crate's Arrow reader and compared with rows written out by hand (`history_support`);
//! partitions, codec and timestamp type in the file metadata; idempotence; torn tails;
//! no temporary file left behind; large segments make few, large row groups.

#![cfg(feature = "history")]

mod history_support;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use forewarn_engine::durable::{Batch, Entry, Outcome, ReadingRow};
use forewarn_engine::history::{seal_segment, SealStats};
use history_support::{all_files, entries, expected, expected_columns, t, write_segment, SEGMENT};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, LogicalType, TimeUnit as PqTimeUnit};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{json, Value as Json};

/// An Arrow type as pyarrow names it (only the types the history uses).
fn type_name(t: &DataType) -> String {
    match t {
        DataType::UInt64 => "uint64".into(),
        DataType::Utf8 => "string".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "bool".into(),
        DataType::Binary => "binary".into(),
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) => format!("timestamp[ms, tz={tz}]"),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(f) => format!(
                "map<{}, {}>",
                type_name(f[0].data_type()),
                type_name(f[1].data_type())
            ),
            other => panic!("map entries {other}"),
        },
        other => panic!("unexpected type {other}"),
    }
}

fn cell(a: &dyn Array, i: usize) -> Json {
    if a.is_null(i) {
        return Json::Null;
    }
    match a.data_type() {
        DataType::UInt64 => json!(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Utf8 => json!(a.as_string::<i32>().value(i)),
        DataType::Float64 => json!(a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => json!(a.as_boolean().value(i)),
        DataType::Binary => json!(a
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            json!(a.as_primitive::<TimestampMillisecondType>().value(i))
        }
        DataType::Map(..) => {
            let e = a.as_map().value(i);
            Json::Array(
                (0..e.len())
                    .map(|k| json!([cell(e.column(0).as_ref(), k), cell(e.column(1).as_ref(), k)]))
                    .collect(),
            )
        }
        other => panic!("unexpected type {other}"),
    }
}

fn rows(batch: &RecordBatch) -> Vec<Json> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|i| {
            Json::Object(
                schema
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| (f.name().clone(), cell(c.as_ref(), i)))
                    .collect(),
            )
        })
        .collect()
}

/// A file's columns (name, type) and rows, read with the Arrow reader.
fn read(path: &Path) -> (Vec<(String, String)>, Vec<Json>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), type_name(f.data_type())))
        .collect();
    let mut out = Vec::new();
    for b in reader {
        out.extend(rows(&b.unwrap()));
    }
    (columns, out)
}

fn file_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    all_files(dir)
        .into_iter()
        .map(|f| {
            let b = std::fs::read(dir.join(&f)).unwrap();
            (f, b)
        })
        .collect()
}

#[test]
fn sealed_files_hold_every_field_partitioned_by_utc_day() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), SEGMENT, &entries());
    let hist = tmp.path().join("history");
    let stats = seal_segment(&hist, &seg, SEGMENT).unwrap();

    let want = expected();
    let files: Vec<String> = want
        .keys()
        .map(|(kind, day)| format!("{kind}/date={day}/part-0000000000000007.parquet"))
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(
        all_files(&hist),
        sorted,
        "exactly one file per table and day"
    );

    assert_eq!(stats.entries, 11);
    assert_eq!(stats.trailing_bytes, 0);
    assert_eq!(
        (stats.readings, stats.rejected, stats.warnings, stats.status),
        (10, 3, 2, 2)
    );
    assert_eq!(stats.files.len(), 9);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(hist.join(f)).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, total);

    for ((kind, day), rows_wanted) in &want {
        let path = hist.join(format!("{kind}/date={day}/part-0000000000000007.parquet"));
        let (columns, got) = read(&path);
        let want_cols: Vec<(String, String)> = expected_columns(kind)
            .into_iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(columns, want_cols, "{kind} columns");
        assert_eq!(&got, rows_wanted, "{kind}/date={day}");
    }
}

#[test]
fn file_metadata_zstd_and_utc_millisecond_timestamps() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), SEGMENT, &entries());
    let hist = tmp.path().join("history");
    seal_segment(&hist, &seg, SEGMENT).unwrap();
    let ts_columns = [
        ("readings", vec!["ts", "received_at"]),
        ("rejected", vec!["received_at", "ts"]),
        ("warnings", vec!["time", "emitted_at"]),
        ("status", vec!["time", "last_sample"]),
    ];
    for f in all_files(&hist) {
        let reader = SerializedFileReader::new(File::open(hist.join(&f)).unwrap()).unwrap();
        let meta = reader.metadata();
        assert!(meta.num_row_groups() >= 1);
        for rg in meta.row_groups() {
            for col in rg.columns() {
                assert!(
                    matches!(col.compression(), Compression::ZSTD(_)),
                    "{f}: {} is {:?}",
                    col.column_path(),
                    col.compression()
                );
            }
        }
        let kind = f.split('/').next().unwrap();
        let schema = meta.file_metadata().schema_descr();
        let names: Vec<&str> = ts_columns
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| c.clone())
            .unwrap();
        for i in 0..schema.num_columns() {
            let c = schema.column(i);
            let is_ts = names.contains(&c.name()) && c.path().parts().len() == 1;
            if is_ts {
                assert_eq!(
                    c.logical_type_ref(),
                    Some(&LogicalType::timestamp(true, PqTimeUnit::MILLIS)),
                    "{f}: {}",
                    c.name()
                );
            }
        }
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        let get = |k: &str| {
            kv.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value.clone())
                .unwrap_or_else(|| panic!("{f}: no {k}"))
        };
        assert_eq!(get("forewarn.segment"), "7");
        assert_eq!(get("forewarn.kind"), kind);
        assert_eq!(get("forewarn.history_version"), "1");
    }
}

#[test]
fn sealing_twice_writes_identical_files_and_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), SEGMENT, &entries());
    let hist = tmp.path().join("history");
    let first = seal_segment(&hist, &seg, SEGMENT).unwrap();
    let before = file_bytes(&hist);
    let second = seal_segment(&hist, &seg, SEGMENT).unwrap();
    let after = file_bytes(&hist);
    assert_eq!(first, second);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, v) in &before {
        assert!(after[k] == *v, "{k} changed when sealed again");
    }
    for f in all_files(&hist) {
        let name = f.rsplit('/').next().unwrap();
        assert!(
            name.ends_with(".parquet") && !name.starts_with('.') && !f.contains(".tmp"),
            "left behind: {f}"
        );
    }
}

#[test]
fn a_torn_tail_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = write_segment(&tmp.path().join("j1"), SEGMENT, &entries());
    let clean_hist = tmp.path().join("h1");
    seal_segment(&clean_hist, &clean, SEGMENT).unwrap();

    // The same entries plus one more batch, whose record is then cut short.
    let mut more = entries();
    more.push(Entry::Batch(Batch {
        seq: 200,
        received_at: t("2017-08-29T00:00:00Z"),
        source: Cow::Borrowed("harvey.csv"),
        line: 99,
        readings: vec![ReadingRow {
            entity: Cow::Borrowed("G9"),
            feed: Cow::Borrowed("rain"),
            ts: t("2017-08-29T00:00:00Z"),
            value: Some(1.0),
            text: None,
            outcome: Outcome::OnTime,
        }],
    }));
    let torn = write_segment(&tmp.path().join("j2"), SEGMENT, &more);
    let len = std::fs::metadata(&torn).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let torn_hist = tmp.path().join("h2");
    let stats = seal_segment(&torn_hist, &torn, SEGMENT).unwrap();
    assert_eq!(stats.entries, 11);
    assert!(stats.trailing_bytes > 0);
    assert_eq!(stats.readings, 10);
    assert_eq!(file_bytes(&clean_hist), file_bytes(&torn_hist));
    assert!(!torn_hist.join("readings/date=2017-08-29").exists());
}

#[test]
fn an_empty_segment_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), 1, &[]);
    let hist = tmp.path().join("history");
    let stats = seal_segment(&hist, &seg, 1).unwrap();
    assert_eq!(stats, SealStats::default());
    assert!(!hist.exists() || all_files(&hist).is_empty());
}

#[test]
fn a_large_segment_makes_one_large_row_group_per_file() {
    // 150,000 readings on one day, in batches of 150: more than one Arrow chunk (64 Ki rows)
    // but fewer than a row group's limit (1 Mi rows): one row group.
    let start = t("2017-08-26T00:00:00Z");
    let names: Vec<String> = (0..150).map(|g| format!("G{g:03}")).collect();
    let entries: Vec<Entry<'_>> = (0..1000u64)
        .map(|k| {
            Entry::Batch(Batch {
                seq: k * 150,
                received_at: start + k as i64 * 60_000,
                source: Cow::Borrowed("wide.csv"),
                line: k + 2,
                readings: names
                    .iter()
                    .enumerate()
                    .map(|(g, n)| ReadingRow {
                        entity: Cow::Borrowed(n.as_str()),
                        feed: Cow::Borrowed("rain"),
                        ts: start + k as i64 * 60_000,
                        value: Some(((k as usize * 7 + g) % 13) as f64 * 0.25),
                        text: None,
                        outcome: Outcome::OnTime,
                    })
                    .collect(),
            })
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), 3, &entries);
    let hist = tmp.path().join("history");
    let stats = seal_segment(&hist, &seg, 3).unwrap();
    assert_eq!(stats.readings, 150_000);
    assert_eq!(
        all_files(&hist),
        vec!["readings/date=2017-08-26/part-0000000000000003.parquet"]
    );
    let path = hist.join("readings/date=2017-08-26/part-0000000000000003.parquet");
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 1);
    assert_eq!(meta.row_group(0).num_rows(), 150_000);
    // spot-check: row i is seq i, value ((k*7+g) % 13) / 4
    let (_, got) = read(&path);
    assert_eq!(got.len(), 150_000);
    for i in [0usize, 1, 149, 150, 65_535, 65_536, 99_999, 149_999] {
        let (k, g) = (i / 150, i % 150);
        assert_eq!(got[i]["seq"], json!(i as u64));
        assert_eq!(got[i]["batch"], json!((k * 150) as u64));
        assert_eq!(got[i]["entity"], json!(format!("G{g:03}")));
        assert_eq!(got[i]["value"], json!(((k * 7 + g) % 13) as f64 * 0.25));
        assert_eq!(got[i]["line"], json!(k as u64 + 2));
    }
}

#[test]
fn a_temporary_file_left_by_a_crash_is_invisible_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), SEGMENT, &entries());
    let hist = tmp.path().join("history");
    let day = hist.join("readings/date=2017-08-26");
    std::fs::create_dir_all(&day).unwrap();
    // a crash while writing: half a file under the temporary name
    let leftover = day.join(".part-0000000000000007.parquet.tmp");
    std::fs::write(&leftover, b"PAR1 half a file").unwrap();
    let files =
        forewarn_engine::history::history_files(&hist, forewarn_engine::history::Kind::Readings)
            .unwrap();
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(
        forewarn_engine::history::read_history_batches(&hist)
            .unwrap()
            .count(),
        0
    );
    // sealing (again) writes the file and consumes the temporary name
    seal_segment(&hist, &seg, SEGMENT).unwrap();
    assert!(!leftover.exists());
    let (_, rows) = read(&day.join("part-0000000000000007.parquet"));
    assert_eq!(rows, expected()[&("readings", "2017-08-26")]);
}
