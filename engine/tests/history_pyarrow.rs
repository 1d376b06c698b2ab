//! The sealed history read by pyarrow (a `python3` subprocess printing JSON), compared field
//! by field with rows written out by hand (`history_support`): the files are plain Parquet
//! that other tools read with the same types and values. Also reads the tables as
//! hive-partitioned pyarrow datasets (the `date` column from the directory names).
//!
//! pyarrow is required: `scripts/test.sh` installs it when missing; without it this test
//! fails (it is never skipped).

#![cfg(feature = "history")]

mod history_support;

use std::path::Path;
use std::process::Command;

use forewarn_engine::history::seal_segment;
use history_support::{entries, expected, expected_columns, write_segment, SEGMENT};
use serde_json::Value as Json;

const SCRIPT: &str = r#"
import json, sys, os
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

root = sys.argv[1]
out = {"files": {}, "datasets": {}}
for dirpath, dirnames, filenames in os.walk(root):
    for name in filenames:
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        table = pq.read_table(path)
        cols = {}
        for field, col in zip(table.schema, table.columns):
            if pa.types.is_timestamp(field.type):
                col = pc.cast(col, pa.int64())
            vals = col.to_pylist()
            if pa.types.is_binary(field.type):
                vals = [None if v is None else v.hex() for v in vals]
            if pa.types.is_map(field.type):
                vals = [None if v is None else [[k, x] for (k, x) in v] for v in vals]
            cols[field.name] = vals
        rows = [{k: cols[k][i] for k in cols} for i in range(table.num_rows)]
        meta = pq.ParquetFile(path).metadata
        codecs = sorted({meta.row_group(g).column(c).compression
                         for g in range(meta.num_row_groups)
                         for c in range(meta.num_columns)})
        ts_logical = {}
        for c in range(meta.num_columns):
            col = meta.schema.column(c)
            if col.physical_type == "INT64" and col.logical_type.type == "TIMESTAMP":
                ts_logical[col.name] = str(col.logical_type)
        out["files"][rel] = {
            "columns": [[f.name, str(f.type)] for f in table.schema],
            "rows": rows,
            "codecs": codecs,
            "ts_logical": ts_logical,
        }
for kind in ["readings", "rejected", "warnings", "status"]:
    d = ds.dataset(os.path.join(root, kind), format="parquet", partitioning="hive")
    t = d.to_table()
    out["datasets"][kind] = {
        "rows": t.num_rows,
        "dates": sorted(set(str(x) for x in t.column("date").to_pylist())),
    }
print(json.dumps(out))
"#;

fn pyarrow(root: &Path) -> Json {
    let check = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .expect("python3 is required for this test");
    assert!(
        check.status.success(),
        "pyarrow is required for this test (scripts/test.sh installs it: \
         python3 -m pip install pyarrow): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pyarrow_reads_every_field() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = write_segment(&tmp.path().join("journal"), SEGMENT, &entries());
    let hist = tmp.path().join("history");
    seal_segment(&hist, &seg, SEGMENT).unwrap();
    let got = pyarrow(&hist);

    let want = expected();
    let files = got["files"].as_object().unwrap();
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let mut want_names: Vec<String> = want
        .keys()
        .map(|(k, d)| format!("{k}/date={d}/part-0000000000000007.parquet"))
        .collect();
    want_names.sort();
    assert_eq!(names, want_names.iter().collect::<Vec<_>>());

    for ((kind, day), rows) in &want {
        let f = &files[&format!("{kind}/date={day}/part-0000000000000007.parquet")];
        let columns: Vec<(String, String)> = f["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let name = c[0].as_str().unwrap();
                // pyarrow's Parquet reader names a map's entries after its column, also in
                // files pyarrow writes itself: `map<string, double ('values')>`.
                let ty = c[1].as_str().unwrap().replace(&format!(" ('{name}')"), "");
                (name.to_string(), ty)
            })
            .collect();
        let want_columns: Vec<(String, String)> = expected_columns(kind)
            .into_iter()
            .map(|(n, t)| (n.into(), t.into()))
            .collect();
        assert_eq!(columns, want_columns, "{kind}: pyarrow types");
        assert_eq!(f["rows"].as_array().unwrap(), rows, "{kind}/date={day}");
        assert_eq!(
            f["codecs"],
            serde_json::json!(["ZSTD"]),
            "{kind}/date={day}"
        );
        let logical = f["ts_logical"].as_object().unwrap();
        assert!(!logical.is_empty());
        for (col, l) in logical {
            let l = l.as_str().unwrap();
            assert!(
                l.contains("isAdjustedToUTC=true") && l.contains("milliseconds"),
                "{kind}.{col}: {l}"
            );
        }
    }

    // As hive-partitioned datasets: all rows, the `date` column from the directories.
    let count = |kind: &str| -> usize {
        want.iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, r)| r.len())
            .sum()
    };
    let dates = |kind: &str| -> Vec<&str> {
        want.keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, d)| *d)
            .collect()
    };
    for kind in ["readings", "rejected", "warnings", "status"] {
        let d = &got["datasets"][kind];
        assert_eq!(d["rows"], serde_json::json!(count(kind)), "{kind}");
        assert_eq!(d["dates"], serde_json::json!(dates(kind)), "{kind}");
    }
}
