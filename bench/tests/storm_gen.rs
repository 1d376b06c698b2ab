//! The storm generator against facts taken from the Python reference: S = 50, H = 6, seed 42.
//!
//! The hashes and counts below come from running the reference generator
//! (`python gen_storm.py -S 50 -H 6 --out …` from /work/shared/peers, numpy 2.4.6,
//! pyarrow 26.0.1) and its `meta.json`; the answer is what `peer_duckdb.py` and
//! `peer_polars.py` print for that Python-generated data. None of them come from this crate.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::types::Int32Type;
use arrow_array::{Array, DictionaryArray, Float64Array, Int64Array, Int8Array, StringArray};
use forewarn_bench::storm_gen::{
    generate, oracle, read_thresholds, GenOptions, StormParams, Thresholds,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

/// sha256 of events.csv / events_sorted.csv / thresholds.csv written by gen_storm.py.
const PY_EVENTS_CSV: &str = "144fd16effaf0aca17c38132c66658f811cbec52bef7e2611bc08b9d6c60ff6d";
const PY_EVENTS_SORTED_CSV: &str =
    "2c4631010b5e67cbbee9606cd3efcc3b9920b915fb876688a07027bbc668aa27";
const PY_THRESHOLDS_CSV: &str = "119efee2c709cb2b07adc42e0e12f3aa5d098ccfc990c47728c9b3eda8fe2a57";

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An event row: (station, ts, value as written in the CSV, late).
type Row = (String, i64, String, i8);

/// Rows of an events CSV.
fn read_csv_rows(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("station,ts,value,late"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].to_string(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

/// Rows of an events Parquet file, values formatted as in the CSV.
fn read_parquet_rows(path: &Path) -> (Vec<Row>, Vec<usize>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let row_groups = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows() as usize)
        .collect();
    let mut rows = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let station = batch
            .column(0)
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .expect("station is dictionary(int32, utf8)");
        let names = station
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let ts = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let value = batch
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let late = batch
            .column(3)
            .as_any()
            .downcast_ref::<Int8Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            assert!(!station.is_null(i) && !ts.is_null(i) && !value.is_null(i) && !late.is_null(i));
            rows.push((
                names.value(station.keys().value(i) as usize).to_string(),
                ts.value(i),
                format!("{}", value.value(i)),
                late.value(i),
            ));
        }
    }
    (rows, row_groups)
}

#[test]
fn s50_h6_matches_the_python_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let meta = generate(&StormParams::new(50, 6, 42), out, &GenOptions::default()).unwrap();

    // meta.json of gen_storm.py
    assert_eq!(meta.n_events, 3596);
    assert_eq!(meta.n_missing, 4);
    assert_eq!(meta.n_late, 3);
    assert_eq!(meta.n_nonzero, 366);
    assert_eq!(meta.max_value, 27.9);
    assert_eq!(meta.n_cells, 55);
    assert_eq!(meta.timestamps, 72);
    assert_eq!(meta.csv_sha256.events.as_deref(), Some(PY_EVENTS_CSV));
    assert_eq!(
        meta.csv_sha256.events_sorted.as_deref(),
        Some(PY_EVENTS_SORTED_CSV)
    );
    // the files really hold those bytes
    assert_eq!(sha256_file(&out.join("events.csv")), PY_EVENTS_CSV);
    assert_eq!(
        sha256_file(&out.join("events_sorted.csv")),
        PY_EVENTS_SORTED_CSV
    );
    assert_eq!(sha256_file(&out.join("thresholds.csv")), PY_THRESHOLDS_CSV);
    let meta_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta_json["n_events"], 3596);
    assert_eq!(meta_json["csv_sha256"]["events.csv"], PY_EVENTS_CSV);

    // expected.json = what DuckDB and Polars answer on the Python-generated files
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected["tool"], "oracle");
    assert_eq!(expected["n_events"], 3596);
    assert_eq!(
        expected["edges"],
        serde_json::json!({"yellow": 5, "orange": 2, "red": 1})
    );
    assert_eq!(
        expected["checksum_micro"],
        serde_json::json!({"1h": 7622000000i64, "3h": 20219100000i64, "24h": 24270800000i64})
    );
    assert_eq!(expected["checksum"], "52111.900000");

    // the Parquet files hold the CSVs' rows, in the same order, in row groups like pyarrow's
    for name in ["events", "events_sorted"] {
        let csv_rows = read_csv_rows(&out.join(format!("{name}.csv")));
        let (pq_rows, row_groups) = read_parquet_rows(&out.join(format!("{name}.parquet")));
        assert_eq!(row_groups, [3596], "{name}");
        assert!(
            csv_rows == pq_rows,
            "{name}.parquet differs from {name}.csv"
        );
    }

    // the oracle over the rows read back from the live-order CSV and the thresholds read back
    // from thresholds.csv gives the same answer as expected.json
    let thresholds: Vec<Thresholds> = read_thresholds(&out.join("thresholds.csv")).unwrap();
    assert_eq!(thresholds.len(), 50);
    assert_eq!(
        thresholds[0],
        Thresholds {
            t1h: 31.65,
            t3h: 67.25,
            t24h: 113.05
        }
    );
    let index: HashMap<String, u32> = (0..50).map(|s| (format!("st{s:05}"), s)).collect();
    let rows = read_csv_rows(&out.join("events.csv"));
    let answer = oracle(
        &thresholds,
        rows.iter()
            .map(|(st, ts, v, _)| (index[st], *ts, v.parse::<f64>().unwrap())),
        1,
    );
    assert_eq!(answer.n_events, 3596);
    assert_eq!(answer.checksum, "52111.900000");
    assert_eq!(
        (answer.edges.yellow, answer.edges.orange, answer.edges.red),
        (5, 2, 1)
    );
}

#[test]
fn output_does_not_depend_on_threads_and_flags() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let params = StormParams::new(23, 3, 7);
    let one = GenOptions {
        threads: 1,
        ..GenOptions::default()
    };
    let csv_only = GenOptions {
        parquet: false,
        expected: false,
        threads: 3,
        ..GenOptions::default()
    };
    let ma = generate(&params, a.path(), &one).unwrap();
    let mb = generate(&params, b.path(), &csv_only).unwrap();
    assert_eq!(ma.csv_sha256, mb.csv_sha256);
    assert_eq!(ma.n_events, mb.n_events);
    assert!(a.path().join("events.parquet").exists() && a.path().join("expected.json").exists());
    assert!(!b.path().join("events.parquet").exists() && !b.path().join("expected.json").exists());
}

#[test]
fn bad_parameters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (s, h) in [(0, 6), (100_000, 6), (10, 0)] {
        assert!(generate(
            &StormParams::new(s, h, 42),
            dir.path(),
            &GenOptions::default()
        )
        .is_err());
    }
}
