//! Shared by the history tests: a hand-made journal segment and the rows its Parquet history
//! must hold, written out independently of the sealing code.
//!
//! Rows are JSON objects: timestamps as epoch milliseconds, `raw` as lower-case hex, maps as
//! arrays of `[key, value]` pairs (in order), nulls as `null`.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use forewarn_engine::durable::{
    Batch, Entry, JournalWriter, Outcome, ReadingRow, RejectedRow, StatusRow, WarningRow,
};
use forewarn_rules::ir::Millis;
use serde_json::{json, Value as Json};

/// The segment id of the hand-made segment.
pub const SEGMENT: u64 = 7;

/// An RFC 3339 instant as UTC milliseconds.
pub fn t(s: &str) -> Millis {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp_millis()
}

fn c(s: &str) -> Cow<'static, str> {
    Cow::Owned(s.to_string())
}

fn reading(
    entity: &str,
    feed: &str,
    ts: &str,
    value: Option<f64>,
    text: Option<&str>,
    outcome: Outcome,
) -> ReadingRow<'static> {
    ReadingRow {
        entity: c(entity),
        feed: c(feed),
        ts: t(ts),
        value,
        text: text.map(c),
        outcome,
    }
}

/// Non-UTF-8 raw bytes of a dead letter.
pub const BAD_RAW: &[u8] = &[0xff, 0xfe, 0x00, b'{', 0x80, b'\n'];

/// Entries over four UTC days (2017-08-25 .. 28), every kind, nulls, text values, a reading
/// the engine rejected, a batch split over two days, every outcome, a non-UTF-8 dead letter
/// and warnings with values and thresholds.
pub fn entries() -> Vec<Entry<'static>> {
    vec![
        Entry::Batch(Batch {
            seq: 100,
            received_at: t("2017-08-27T00:01:00Z"),
            source: c("harvey.csv"),
            line: 12,
            readings: vec![
                reading(
                    "G1",
                    "rain",
                    "2017-08-26T23:55:00Z",
                    Some(1.5),
                    None,
                    Outcome::OnTime,
                ),
                reading(
                    "G2",
                    "rain",
                    "2017-08-26T23:55:00Z",
                    Some(0.0),
                    None,
                    Outcome::OnTime,
                ),
                reading(
                    "G3",
                    "rain",
                    "2017-08-26T23:55:00Z",
                    Some(250.0),
                    None,
                    Outcome::Rejected,
                ),
                reading(
                    "G4",
                    "rain",
                    "2017-08-27T00:00:00Z",
                    Some(0.25),
                    None,
                    Outcome::Late,
                ),
            ],
        }),
        Entry::Rejected(RejectedRow {
            received_at: t("2017-08-27T00:01:00Z"),
            source: c("harvey.csv"),
            line: 12,
            reason: c("out_of_range"),
            detail: c("250 mm is outside 0 .. 200 mm"),
            entity: Some(c("G3")),
            feed: Some(c("rain")),
            ts: Some(t("2017-08-26T23:55:00Z")),
            value: Some(c("250")),
            raw: Cow::Owned(b"2017-08-26 18:55,1.5,0,250,0.25\n".to_vec()),
        }),
        Entry::Clock {
            wall: t("2017-08-27T00:02:00Z"),
        },
        Entry::Batch(Batch {
            seq: 104,
            received_at: t("2017-08-27T00:06:00Z"),
            source: c("mqtt:gauges/+/rain"),
            line: 3,
            readings: vec![reading(
                "G1",
                "rain",
                "2017-08-27T00:05:00.250Z",
                None,
                Some("2.5"),
                Outcome::OnTime,
            )],
        }),
        Entry::Batch(Batch {
            seq: 105,
            received_at: t("2017-08-27T00:07:30.125Z"),
            source: c("mqtt:harvey/rain"),
            line: 4,
            readings: vec![
                reading(
                    "G1",
                    "rain",
                    "2017-08-27T00:05:00.250Z",
                    Some(2.5),
                    None,
                    Outcome::Duplicate,
                ),
                reading(
                    "G2",
                    "rain",
                    "2017-08-27T00:05:00Z",
                    Some(0.5),
                    None,
                    Outcome::Replaced,
                ),
                reading(
                    "G5",
                    "stage",
                    "2017-08-27T00:05:00Z",
                    Some(-1.25),
                    None,
                    Outcome::Held,
                ),
                reading(
                    "G6",
                    "tips",
                    "2017-08-27T00:05:00Z",
                    Some(0.2),
                    None,
                    Outcome::Added,
                ),
                reading(
                    "G7",
                    "rain",
                    "2017-08-27T00:05:00Z",
                    Some(3.0),
                    None,
                    Outcome::Ignored,
                ),
                reading(
                    "G8",
                    "rain",
                    "2017-08-27T00:05:00Z",
                    None,
                    None,
                    Outcome::OnTime,
                ),
            ],
        }),
        Entry::Rejected(RejectedRow {
            received_at: t("2017-08-28T10:00:00Z"),
            source: c("mqtt:gauges/+/rain"),
            line: 9,
            reason: c("malformed"),
            detail: c("payload is not UTF-8"),
            entity: None,
            feed: None,
            ts: None,
            value: None,
            raw: Cow::Owned(BAD_RAW.to_vec()),
        }),
        Entry::Rejected(RejectedRow {
            received_at: t("2017-08-28T10:00:01Z"),
            source: c("mqtt:gauges/+/rain"),
            line: 10,
            reason: c("too_late"),
            detail: c("reading is 2 days behind the entity's time (limit 6 h)"),
            entity: Some(c("G1")),
            feed: Some(c("rain")),
            ts: Some(t("2017-08-25T12:00:00Z")),
            value: Some(c("1")),
            raw: Cow::Owned(br#"{"ts":"2017-08-25T07:00:00-05:00","value":1}"#.to_vec()),
        }),
        Entry::Warning(WarningRow {
            rule: c("rainstorm"),
            entity: c("G1"),
            seq: 1,
            kind: c("raise"),
            from: None,
            to: Some(c("blue")),
            event_time: t("2017-08-27T00:05:00.250Z"),
            emitted_at: t("2017-08-27T00:06:00.500Z"),
            late: false,
            delayed: true,
            values: vec![
                (c("sum_3h"), Some(12.5)),
                (c("max_1h"), None),
                (c("ratio"), Some(0.1)),
            ],
            thresholds: vec![(c("critical_1h"), Some(50.0))],
            message: c("G1: 12 mm in 3 h — ünïcode"),
            ruleset: c("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            branch: "projected".into(),
            expected_crossing: Some(t("2017-08-27T01:05:00Z")),
        }),
        Entry::Warning(WarningRow {
            rule: c("flash_flood"),
            entity: c("G2"),
            seq: 3,
            kind: c("clear"),
            from: Some(c("prepare")),
            to: None,
            event_time: t("2017-08-28T23:59:59.999Z"),
            emitted_at: t("2017-08-29T00:00:00Z"),
            late: true,
            delayed: false,
            values: vec![],
            thresholds: vec![],
            message: c(""),
            ruleset: c("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            branch: "observed".into(),
            expected_crossing: None,
        }),
        Entry::Status(StatusRow {
            entity: c("G1"),
            feed: c("rain"),
            from: c("unknown"),
            to: c("ok"),
            time: t("2017-08-26T23:55:00Z"),
            last_sample: Some(t("2017-08-26T23:55:00Z")),
        }),
        Entry::Status(StatusRow {
            entity: c("G3"),
            feed: c("rain"),
            from: c("ok"),
            to: c("stale"),
            time: t("2017-08-28T00:00:00Z"),
            last_sample: None,
        }),
    ]
}

/// Write `entries` as journal segment `id` in `dir`; returns the segment file.
pub fn write_segment(dir: &Path, id: u64, entries: &[Entry<'_>]) -> PathBuf {
    let mut w = JournalWriter::open(dir, id, 0).unwrap();
    for e in entries {
        w.append(e).unwrap();
    }
    w.sync().unwrap();
    w.path()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pairs(v: &[(&str, Option<f64>)]) -> Json {
    Json::Array(v.iter().map(|(k, x)| json!([k, x])).collect())
}

/// The rows the history of [`entries`] must hold, by `(table, date)`, in file order: written
/// out by hand, not derived from the entries.
pub fn expected() -> BTreeMap<(&'static str, &'static str), Vec<Json>> {
    let mut m: BTreeMap<(&'static str, &'static str), Vec<Json>> = BTreeMap::new();
    let r = |seq: u64,
             batch: u64,
             entity: &str,
             feed: &str,
             ts: &str,
             value: Option<f64>,
             text: Option<&str>,
             outcome: &str,
             received_at: &str,
             source: &str,
             line: u64| {
        json!({
            "seq": seq, "batch": batch, "entity": entity, "feed": feed, "ts": t(ts),
            "value": value, "text": text, "outcome": outcome, "late": outcome == "late",
            "received_at": t(received_at), "source": source, "line": line,
        })
    };
    let a = "2017-08-27T00:01:00Z";
    m.insert(
        ("readings", "2017-08-26"),
        vec![
            r(
                100,
                100,
                "G1",
                "rain",
                "2017-08-26T23:55:00Z",
                Some(1.5),
                None,
                "on_time",
                a,
                "harvey.csv",
                12,
            ),
            r(
                101,
                100,
                "G2",
                "rain",
                "2017-08-26T23:55:00Z",
                Some(0.0),
                None,
                "on_time",
                a,
                "harvey.csv",
                12,
            ),
        ],
    );
    let b = "2017-08-27T00:06:00Z";
    let c = "2017-08-27T00:07:30.125Z";
    let (s2, s3) = ("mqtt:gauges/+/rain", "mqtt:harvey/rain");
    m.insert(
        ("readings", "2017-08-27"),
        vec![
            r(
                103,
                100,
                "G4",
                "rain",
                "2017-08-27T00:00:00Z",
                Some(0.25),
                None,
                "late",
                a,
                "harvey.csv",
                12,
            ),
            r(
                104,
                104,
                "G1",
                "rain",
                "2017-08-27T00:05:00.250Z",
                None,
                Some("2.5"),
                "on_time",
                b,
                s2,
                3,
            ),
            r(
                105,
                105,
                "G1",
                "rain",
                "2017-08-27T00:05:00.250Z",
                Some(2.5),
                None,
                "duplicate",
                c,
                s3,
                4,
            ),
            r(
                106,
                105,
                "G2",
                "rain",
                "2017-08-27T00:05:00Z",
                Some(0.5),
                None,
                "replaced",
                c,
                s3,
                4,
            ),
            r(
                107,
                105,
                "G5",
                "stage",
                "2017-08-27T00:05:00Z",
                Some(-1.25),
                None,
                "held",
                c,
                s3,
                4,
            ),
            r(
                108,
                105,
                "G6",
                "tips",
                "2017-08-27T00:05:00Z",
                Some(0.2),
                None,
                "added",
                c,
                s3,
                4,
            ),
            r(
                109,
                105,
                "G7",
                "rain",
                "2017-08-27T00:05:00Z",
                Some(3.0),
                None,
                "ignored",
                c,
                s3,
                4,
            ),
            r(
                110,
                105,
                "G8",
                "rain",
                "2017-08-27T00:05:00Z",
                None,
                None,
                "on_time",
                c,
                s3,
                4,
            ),
        ],
    );
    m.insert(
        ("rejected", "2017-08-26"),
        vec![json!({
            "received_at": t(a), "source": "harvey.csv", "line": 12, "reason": "out_of_range",
            "detail": "250 mm is outside 0 .. 200 mm", "entity": "G3", "feed": "rain",
            "ts": t("2017-08-26T23:55:00Z"), "value": "250",
            "raw": hex(b"2017-08-26 18:55,1.5,0,250,0.25\n"),
            "raw_text": "2017-08-26 18:55,1.5,0,250,0.25\n",
        })],
    );
    m.insert(
        ("rejected", "2017-08-28"),
        vec![json!({
            "received_at": t("2017-08-28T10:00:00Z"), "source": s2, "line": 9,
            "reason": "malformed", "detail": "payload is not UTF-8", "entity": null,
            "feed": null, "ts": null, "value": null, "raw": "fffe007b800a", "raw_text": null,
        })],
    );
    let late_raw = r#"{"ts":"2017-08-25T07:00:00-05:00","value":1}"#;
    m.insert(
        ("rejected", "2017-08-25"),
        vec![json!({
            "received_at": t("2017-08-28T10:00:01Z"), "source": s2, "line": 10,
            "reason": "too_late",
            "detail": "reading is 2 days behind the entity's time (limit 6 h)",
            "entity": "G1", "feed": "rain", "ts": t("2017-08-25T12:00:00Z"), "value": "1",
            "raw": hex(late_raw.as_bytes()), "raw_text": late_raw,
        })],
    );
    let ruleset = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    m.insert(
        ("warnings", "2017-08-27"),
        vec![json!({
            "rule": "rainstorm", "entity": "G1", "seq": 1, "kind": "raise", "from": null,
            "to": "blue", "time": t("2017-08-27T00:05:00.250Z"),
            "emitted_at": t("2017-08-27T00:06:00.500Z"), "late": false, "delayed": true,
            "values": pairs(&[("sum_3h", Some(12.5)), ("max_1h", None), ("ratio", Some(0.1))]),
            "thresholds": pairs(&[("critical_1h", Some(50.0))]),
            "message": "G1: 12 mm in 3 h — ünïcode", "ruleset": ruleset,
            "branch": "projected", "expected_crossing": t("2017-08-27T01:05:00Z"),
        })],
    );
    m.insert(
        ("warnings", "2017-08-28"),
        vec![json!({
            "rule": "flash_flood", "entity": "G2", "seq": 3, "kind": "clear",
            "from": "prepare", "to": null, "time": t("2017-08-28T23:59:59.999Z"),
            "emitted_at": t("2017-08-29T00:00:00Z"), "late": true, "delayed": false,
            "values": [], "thresholds": [], "message": "", "ruleset": ruleset,
            "branch": "observed", "expected_crossing": null,
        })],
    );
    m.insert(
        ("status", "2017-08-26"),
        vec![json!({
            "entity": "G1", "feed": "rain", "from": "unknown", "status": "ok",
            "time": t("2017-08-26T23:55:00Z"), "last_sample": t("2017-08-26T23:55:00Z"),
        })],
    );
    m.insert(
        ("status", "2017-08-28"),
        vec![json!({
            "entity": "G3", "feed": "rain", "from": "ok", "status": "stale",
            "time": t("2017-08-28T00:00:00Z"), "last_sample": null,
        })],
    );
    m
}

/// The columns of each table, in order, with their Arrow types as pyarrow names them.
pub fn expected_columns(table: &str) -> Vec<(&'static str, &'static str)> {
    const TS: &str = "timestamp[ms, tz=UTC]";
    const MAP: &str = "map<string, double>";
    match table {
        "readings" => vec![
            ("seq", "uint64"),
            ("batch", "uint64"),
            ("entity", "string"),
            ("feed", "string"),
            ("ts", TS),
            ("value", "double"),
            ("text", "string"),
            ("outcome", "string"),
            ("late", "bool"),
            ("received_at", TS),
            ("source", "string"),
            ("line", "uint64"),
        ],
        "rejected" => vec![
            ("received_at", TS),
            ("source", "string"),
            ("line", "uint64"),
            ("reason", "string"),
            ("detail", "string"),
            ("entity", "string"),
            ("feed", "string"),
            ("ts", TS),
            ("value", "string"),
            ("raw", "binary"),
            ("raw_text", "string"),
        ],
        "warnings" => vec![
            ("rule", "string"),
            ("entity", "string"),
            ("seq", "uint64"),
            ("kind", "string"),
            ("from", "string"),
            ("to", "string"),
            ("time", TS),
            ("emitted_at", TS),
            ("late", "bool"),
            ("delayed", "bool"),
            ("values", MAP),
            ("thresholds", MAP),
            ("message", "string"),
            ("ruleset", "string"),
            ("branch", "string"),
            ("expected_crossing", TS),
        ],
        "status" => vec![
            ("entity", "string"),
            ("feed", "string"),
            ("from", "string"),
            ("status", "string"),
            ("time", TS),
            ("last_sample", TS),
        ],
        other => panic!("no table {other}"),
    }
}

/// Every file under `dir`, relative, sorted.
pub fn all_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
