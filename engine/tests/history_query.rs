//! `forewarn query` (feature `sql`): DataFusion SQL over a sealed, hand-made history.
//!
//! The README's three example queries run verbatim and are compared with naive computations
//! written here: the largest rolling 3-hour rain total per gauge and UTC day, warnings per
//! level per day, rejected input by reason. The rolling window is half-open, `(t − 3h, t]`
//! (docs/semantics.md): SQL's `RANGE … PRECEDING` frame is closed at both ends, so the
//! queries use `INTERVAL '2 hours 59 minutes 59.999 seconds' PRECEDING` — at millisecond
//! resolution exactly `(t − 3h, t]`. The readings lie on a 5-minute grid, so a reading exactly
//! 3 h before another exists and the boundary is exercised (checked: a closed window would
//! give other answers). Also: docs/history.md's query of the value in force (redeliveries,
//! replacements, other feeds), table/CSV/JSON output, display zones, map columns, errors,
//! empty tables and the command line.

#![cfg(feature = "sql")]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use chrono::DateTime;
use forewarn_engine::durable::{
    Batch, Entry, JournalWriter, Outcome, ReadingRow, RejectedRow, StatusRow, WarningRow,
};
use forewarn_engine::history::query::{query, OutputFormat, QueryError};
use forewarn_engine::history::seal_segment;
use forewarn_engine::time::Zone;
use forewarn_rules::ir::Millis;
use serde_json::Value as Json;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;

fn t(s: &str) -> Millis {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

fn day(ms: Millis) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A reading as the test knows it.
#[derive(Debug, Clone)]
struct Rd {
    seq: u64,
    entity: String,
    feed: &'static str,
    ts: Millis,
    value: f64,
    outcome: Outcome,
}

/// A warning as the test knows it.
#[derive(Debug, Clone)]
struct Wn {
    kind: &'static str,
    to: Option<&'static str>,
    time: Millis,
}

/// The hand-made history: its readings, warnings and rejection reasons as the test knows
/// them.
struct Fixture {
    readings: Vec<Rd>,
    warnings: Vec<Wn>,
    rejected: Vec<(&'static str, Millis)>,
}

const GAUGES: [&str; 4] = ["G1", "G2", "G3", "G4"];

/// Rain for four gauges every 5 minutes from 2017-08-26T18:00Z to 2017-08-28T06:00Z (three
/// UTC days), with gaps and storms; values are multiples of 1/8 (sums are exact). With
/// `messy`, also redeliveries (duplicates), corrections (replaced), ignored values and a
/// second feed; warnings and rejections over the same days.
fn fixture(messy: bool) -> (Fixture, Vec<Entry<'static>>) {
    let start = t("2017-08-26T18:00:00Z");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut readings = Vec::new();
    let mut seq = 1u64;
    let mut calls: Vec<Vec<Rd>> = Vec::new();
    for step in 0..(36 * 12) {
        let ts = start + step * 5 * MINUTE;
        let storm = (step / 30) % 3 == 1;
        let mut batch = Vec::new();
        for g in GAUGES {
            if rng.below(10) == 0 {
                continue; // a gap
            }
            let value = if storm {
                rng.below(40) as f64 / 8.0
            } else if rng.below(3) == 0 {
                rng.below(6) as f64 / 8.0
            } else {
                0.0
            };
            batch.push((g.to_string(), "rain", ts, value, Outcome::OnTime));
        }
        if messy {
            if step % 4 == 0 {
                batch.push((
                    "S1".into(),
                    "stage",
                    ts,
                    3.0 + rng.below(9) as f64 / 4.0,
                    Outcome::OnTime,
                ));
            }
            if step > 2 && rng.below(5) == 0 {
                // a correction of an earlier reading of G1
                let prev = ts - 10 * MINUTE;
                batch.push((
                    "G1".into(),
                    "rain",
                    prev,
                    rng.below(40) as f64 / 8.0,
                    Outcome::Replaced,
                ));
            }
            if step > 2 && rng.below(6) == 0 {
                // a redelivery of G2's reading of 5 minutes ago: same value
                let prev = ts - 5 * MINUTE;
                let same = readings
                    .iter()
                    .rev()
                    .find(|r: &&Rd| r.entity == "G2" && r.ts == prev && r.feed == "rain")
                    .map(|r| r.value);
                if let Some(v) = same {
                    batch.push(("G2".into(), "rain", prev, v, Outcome::Duplicate));
                }
            }
            if step > 2 && rng.below(7) == 0 {
                // a different value for G3 dropped by an `ignore` policy
                batch.push(("G3".into(), "rain", ts - 5 * MINUTE, 4.5, Outcome::Ignored));
            }
        }
        let mut call = Vec::new();
        for (entity, feed, ts, value, outcome) in batch {
            let r = Rd {
                seq,
                entity,
                feed,
                ts,
                value,
                outcome,
            };
            seq += 1;
            readings.push(r.clone());
            call.push(r);
        }
        if !call.is_empty() {
            calls.push(call);
        }
    }

    let levels = ["blue", "yellow", "orange", "red"];
    let mut warnings = Vec::new();
    let mut level: BTreeMap<&str, Option<usize>> = BTreeMap::new();
    for k in 0..90 {
        let time = start + k * 25 * MINUTE + rng.below(20) as i64 * MINUTE;
        let g = GAUGES[rng.below(4) as usize];
        let cur = level.get(g).copied().flatten();
        let next = match (cur, rng.below(3)) {
            (None, _) => Some(rng.below(3) as usize),
            (Some(l), 0) if l < 3 => Some(l + 1),
            (Some(l), 1) if l > 0 => Some(l - 1),
            (Some(_), _) => None,
        };
        let kind = match (cur, next) {
            (None, _) => "raise",
            (Some(a), Some(b)) if b > a => "escalate",
            (Some(_), Some(_)) => "downgrade",
            (Some(_), None) => "clear",
        };
        level.insert(g, next);
        warnings.push((
            g,
            Wn {
                kind,
                to: next.map(|l| levels[l]),
                time,
            },
            cur.map(|l| levels[l]),
        ));
    }

    let reasons = [
        ("out_of_range", 7),
        ("malformed", 4),
        ("too_late", 2),
        ("no_offset", 1),
    ];
    let mut rejected = Vec::new();
    for (reason, n) in reasons {
        for i in 0..n {
            let at = start + (i as i64 * 7 + rng.below(5) as i64) * HOUR;
            rejected.push((reason, at));
        }
    }

    let entries = entries(&calls, &warnings, &rejected);
    let fixture = Fixture {
        readings,
        warnings: warnings.into_iter().map(|(_, w, _)| w).collect(),
        rejected,
    };
    (fixture, entries)
}

/// The journal entries of the fixture: one batch per call, then the warnings (with values
/// and thresholds), the rejections and a status event.
fn entries(
    calls: &[Vec<Rd>],
    warnings: &[(&str, Wn, Option<&str>)],
    rejected: &[(&'static str, Millis)],
) -> Vec<Entry<'static>> {
    let mut v = Vec::new();
    for call in calls {
        v.push(Entry::Batch(Batch {
            seq: call[0].seq,
            received_at: call[0].ts + MINUTE,
            source: Cow::Borrowed("test"),
            line: call[0].seq,
            readings: call
                .iter()
                .map(|r| ReadingRow {
                    entity: Cow::Owned(r.entity.clone()),
                    feed: Cow::Borrowed(r.feed),
                    ts: r.ts,
                    value: Some(r.value),
                    text: None,
                    outcome: r.outcome,
                })
                .collect(),
        }));
    }
    for (i, (g, w, from)) in warnings.iter().enumerate() {
        v.push(Entry::Warning(WarningRow {
            rule: Cow::Borrowed("rainstorm"),
            entity: Cow::Owned(g.to_string()),
            seq: i as u64 + 1,
            kind: Cow::Borrowed(w.kind),
            from: from.map(|f| Cow::Owned(f.to_string())),
            to: w.to.map(Cow::Borrowed),
            event_time: w.time,
            emitted_at: w.time + 1500,
            late: false,
            delayed: false,
            values: vec![
                (Cow::Borrowed("sum_3h"), Some(i as f64 * 2.5)),
                (
                    Cow::Borrowed("max_1h"),
                    if i % 2 == 0 { None } else { Some(1.25) },
                ),
            ],
            thresholds: vec![(Cow::Borrowed("critical_1h"), Some(50.0))],
            message: Cow::Owned(format!("{g}: {}", w.kind)),
            ruleset: Cow::Borrowed("abc"),
            branch: "observed".into(),
            expected_crossing: None,
        }));
    }
    for (i, (reason, at)) in rejected.iter().enumerate() {
        let no_ts = *reason == "malformed" || *reason == "no_offset";
        v.push(Entry::Rejected(RejectedRow {
            received_at: *at,
            source: Cow::Borrowed("test"),
            line: i as u64,
            reason: Cow::Borrowed(reason),
            detail: Cow::Borrowed("…"),
            entity: (!no_ts).then_some(Cow::Borrowed("G1")),
            feed: (!no_ts).then_some(Cow::Borrowed("rain")),
            ts: (!no_ts).then_some(*at - HOUR),
            value: None,
            raw: Cow::Owned(vec![b'x'; i + 1]),
        }));
    }
    v.push(Entry::Status(StatusRow {
        entity: Cow::Borrowed("G1"),
        feed: Cow::Borrowed("rain"),
        from: Cow::Borrowed("ok"),
        to: Cow::Borrowed("stale"),
        time: t("2017-08-27T03:00:00Z"),
        last_sample: Some(t("2017-08-27T02:30:00Z")),
    }));
    v
}

/// Seal the fixture's entries (in three journal segments) under `dir/history`.
fn seal(dir: &Path, messy: bool) -> (Fixture, std::path::PathBuf) {
    let (f, entries) = fixture(messy);
    let history = dir.join("history");
    let journal = dir.join("journal");
    let third = entries.len() / 3 + 1;
    for (id, chunk) in entries.chunks(third).enumerate() {
        let mut w = JournalWriter::open(&journal, id as u64, 0).unwrap();
        for e in chunk {
            w.append(e).unwrap();
        }
        w.sync().unwrap();
        seal_segment(&history, &w.path(), id as u64).unwrap();
    }
    (f, history)
}

fn utc() -> Zone {
    Zone::default()
}

fn json_rows(history: &Path, sql: &str) -> Vec<Json> {
    let text = query(history, sql, OutputFormat::Json, &utc()).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str::<Json>(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .as_array()
        .unwrap()
        .clone()
}

/// The README's queries, verbatim.
const README_WARNINGS: &str = "SELECT date, \"to\" AS level, count(*) AS n FROM warnings
    WHERE kind IN ('raise','escalate','downgrade') GROUP BY date, \"to\" ORDER BY date, n DESC";
const README_RAIN: &str = "SELECT entity, date, max(sum3h) * 25.4 AS max_3h_mm FROM (
      SELECT entity, date, sum(value) OVER (PARTITION BY entity ORDER BY ts
             RANGE BETWEEN INTERVAL '2 hours 59 minutes 59.999 seconds' PRECEDING AND CURRENT ROW) AS sum3h
      FROM readings) GROUP BY entity, date ORDER BY max_3h_mm DESC LIMIT 10";
const README_REJECTED: &str =
    "SELECT reason, count(*) AS n FROM rejected GROUP BY reason ORDER BY n DESC";

/// The largest rolling sum per (gauge, UTC day) of `(entity, ts, value)` points: the sum at
/// each point's time over the points in `(t − 3h, t]` (or `[t − 3h, t]` when `closed`).
fn max_3h(points: &[(String, Millis, f64)], closed: bool) -> BTreeMap<(String, String), f64> {
    let mut out: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (e, t, _) in points {
        let s: f64 = points
            .iter()
            .filter(|(e2, t2, _)| {
                e2 == e && *t2 <= *t && (*t2 > *t - 3 * HOUR || (closed && *t2 == *t - 3 * HOUR))
            })
            .map(|(_, _, v)| v)
            .sum();
        let k = (e.clone(), day(*t));
        let m = out.entry(k).or_insert(f64::MIN);
        *m = m.max(s);
    }
    out
}

#[test]
fn readme_max_3h_rain_per_gauge_per_day() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, history) = seal(tmp.path(), false);
    let points: Vec<(String, Millis, f64)> = f
        .readings
        .iter()
        .map(|r| (r.entity.clone(), r.ts, r.value))
        .collect();
    let want = max_3h(&points, false);
    assert_eq!(want.len(), 12, "4 gauges x 3 days");
    assert_ne!(
        want,
        max_3h(&points, true),
        "the window's open end must matter"
    );
    let rows = json_rows(&history, README_RAIN);
    assert_eq!(rows.len(), 10);
    let mut want_top: Vec<f64> = want.values().map(|v| v * 25.4).collect();
    want_top.sort_by(|a, b| b.total_cmp(a));
    want_top.truncate(10);
    // The sums are exact (multiples of 1/8); the product with 25.4 may differ in the last bit.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let got_top: Vec<f64> = rows
        .iter()
        .map(|r| r["max_3h_mm"].as_f64().unwrap())
        .collect();
    assert!(
        got_top.iter().zip(&want_top).all(|(a, b)| close(*a, *b)),
        "ten largest, in descending order: {got_top:?} != {want_top:?}"
    );
    assert!(got_top.windows(2).all(|p| p[0] >= p[1]));
    for r in &rows {
        let k = (
            r["entity"].as_str().unwrap().to_string(),
            r["date"].as_str().unwrap().to_string(),
        );
        let got = r["max_3h_mm"].as_f64().unwrap();
        assert!(
            close(got, want[&k] * 25.4),
            "{k:?}: {got} != {}",
            want[&k] * 25.4
        );
    }
}

#[test]
fn readme_warnings_per_level_per_day() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, history) = seal(tmp.path(), false);
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for w in &f.warnings {
        if w.kind != "clear" {
            *want
                .entry((day(w.time), w.to.unwrap().to_string()))
                .or_default() += 1;
        }
    }
    assert!(want.keys().map(|(d, _)| d).collect::<BTreeSet<_>>().len() >= 2);
    let rows = json_rows(&history, README_WARNINGS);
    let got: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["date"].as_str().unwrap().to_string(),
                    r["level"].as_str().unwrap().to_string(),
                ),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), got.len());
    assert_eq!(got, want);
    // ORDER BY date, n DESC
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (da, db) = (a["date"].as_str().unwrap(), b["date"].as_str().unwrap());
        assert!(da < db || (da == db && a["n"].as_i64() >= b["n"].as_i64()));
    }
}

#[test]
fn readme_rejected_by_reason_as_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, history) = seal(tmp.path(), false);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, _) in &f.rejected {
        *counts.entry(r).or_default() += 1;
    }
    let mut want: Vec<(&str, usize)> = counts.into_iter().collect();
    want.sort_by_key(|w| std::cmp::Reverse(w.1));
    let mut want_csv = String::from("reason,n\n");
    for (r, n) in &want {
        want_csv.push_str(&format!("{r},{n}\n"));
    }
    let got = query(&history, README_REJECTED, OutputFormat::Csv, &utc()).unwrap();
    assert_eq!(got, want_csv);
    assert_eq!(
        want_csv,
        "reason,n\nout_of_range,7\nmalformed,4\ntoo_late,2\nno_offset,1\n"
    );
}

/// docs/history.md: the value in force at each (gauge, time) — the last arrival among
/// accepted, late, corrected and held readings — before the rolling sum.
const DOCS_RAIN: &str = "WITH rain AS (
  SELECT entity, ts, date, value FROM (
    SELECT entity, ts, date, value,
           row_number() OVER (PARTITION BY entity, ts ORDER BY seq DESC) AS k
    FROM readings
    WHERE feed = 'rain' AND outcome IN ('on_time', 'late', 'replaced', 'held'))
  WHERE k = 1)
SELECT entity, date, max(sum_3h) AS max_3h
FROM (SELECT entity, date, sum(value) OVER (PARTITION BY entity ORDER BY ts
        RANGE BETWEEN INTERVAL '2 hours 59 minutes 59.999 seconds' PRECEDING AND CURRENT ROW)
        AS sum_3h
      FROM rain)
GROUP BY entity, date
ORDER BY entity, date";

#[test]
fn docs_max_3h_rain_uses_the_value_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, history) = seal(tmp.path(), true);
    // naive: per (gauge, time) the last accepted value by arrival
    let mut in_force: BTreeMap<(String, Millis), (u64, f64)> = BTreeMap::new();
    let mut outcomes = BTreeSet::new();
    for r in &f.readings {
        outcomes.insert(r.outcome.as_str());
        let counts = matches!(
            r.outcome,
            Outcome::OnTime | Outcome::Late | Outcome::Replaced | Outcome::Held
        );
        if r.feed == "rain" && counts {
            let e = in_force.entry((r.entity.clone(), r.ts)).or_insert((0, 0.0));
            if r.seq > e.0 {
                *e = (r.seq, r.value);
            }
        }
    }
    assert!(outcomes.contains("replaced") && outcomes.contains("duplicate"));
    assert!(outcomes.contains("ignored"));
    let points: Vec<(String, Millis, f64)> = in_force
        .into_iter()
        .map(|((e, t), (_, v))| (e, t, v))
        .collect();
    let want = max_3h(&points, false);
    let rows = json_rows(&history, DOCS_RAIN);
    let got: BTreeMap<(String, String), f64> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["entity"].as_str().unwrap().to_string(),
                    r["date"].as_str().unwrap().to_string(),
                ),
                r["max_3h"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // The README's short form counts redeliveries, ignored values, replaced ones and the
    // stage feed too: on this history it is wrong, which is why docs/history.md has this one.
    let naive = json_rows(&history, README_RAIN);
    let off = naive.iter().filter(|r| {
        let k = (
            r["entity"].as_str().unwrap().to_string(),
            r["date"].as_str().unwrap().to_string(),
        );
        let got = r["max_3h_mm"].as_f64().unwrap();
        want.get(&k).is_none_or(|v| (got - v * 25.4).abs() > 1e-6)
    });
    assert!(off.count() > 0);
}

const SAMPLE: &str = "SELECT seq, entity, ts, value, outcome FROM readings ORDER BY seq LIMIT 2";

#[test]
fn table_csv_and_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, history) = seal(tmp.path(), false);
    let (a, b) = (&f.readings[0], &f.readings[1]);
    let fmt = |r: &Rd| Zone::default().format(r.ts);
    let num = |v: f64| {
        if v.fract() == 0.0 {
            format!("{v:.1}")
        } else {
            format!("{v}")
        }
    };

    let csv = query(&history, SAMPLE, OutputFormat::Csv, &utc()).unwrap();
    assert_eq!(
        csv,
        format!(
            "seq,entity,ts,value,outcome\n{},{},{},{},on_time\n{},{},{},{},on_time\n",
            a.seq,
            a.entity,
            fmt(a),
            num(a.value),
            b.seq,
            b.entity,
            fmt(b),
            num(b.value)
        )
    );

    let json = query(&history, SAMPLE, OutputFormat::Json, &utc()).unwrap();
    let want = serde_json::json!([
        {"seq": a.seq, "entity": a.entity, "ts": fmt(a), "value": a.value, "outcome": "on_time"},
        {"seq": b.seq, "entity": b.entity, "ts": fmt(b), "value": b.value, "outcome": "on_time"},
    ]);
    assert_eq!(serde_json::from_str::<Json>(&json).unwrap(), want);
    assert_eq!(json.lines().count(), 4, "one row per line: {json}");
    // keys in column order
    let line = json.lines().nth(1).unwrap();
    let at = |k: &str| line.find(&format!("\"{k}\":")).unwrap();
    assert!(
        at("seq") < at("entity") && at("entity") < at("ts"),
        "{line}"
    );
    assert!(
        at("ts") < at("value") && at("value") < at("outcome"),
        "{line}"
    );

    let table = query(&history, SAMPLE, OutputFormat::Table, &utc()).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(cells(lines[1]), ["seq", "entity", "ts", "value", "outcome"]);
    assert_eq!(
        cells(lines[3]),
        [
            a.seq.to_string(),
            a.entity.clone(),
            fmt(a),
            num(a.value),
            "on_time".into()
        ]
    );
    assert_eq!(
        cells(lines[4]),
        [
            b.seq.to_string(),
            b.entity.clone(),
            fmt(b),
            num(b.value),
            "on_time".into()
        ]
    );
    assert!(lines[0].starts_with("+-") && lines[5] == lines[0]);
    assert!(lines
        .iter()
        .all(|l| l.chars().count() == lines[0].chars().count()));
}

#[test]
fn timestamps_are_shown_in_the_display_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, history) = seal(tmp.path(), false);
    // the first reading: 2017-08-26T18:00Z (CDT is UTC-5 in August)
    let sql = "SELECT ts, date_trunc('hour', ts + INTERVAL '250 milliseconds') AS hour,
                      ts + INTERVAL '250 milliseconds' AS later, received_at
               FROM readings ORDER BY seq LIMIT 1";
    let run = |zone: &str, format| {
        let z: Zone = zone.parse().unwrap();
        query(&history, sql, format, &z).unwrap()
    };
    let chicago = run("America/Chicago", OutputFormat::Csv);
    assert_eq!(
        chicago,
        "ts,hour,later,received_at\n\
         2017-08-26T13:00:00-05:00,2017-08-26T13:00:00-05:00,2017-08-26T13:00:00.250-05:00,2017-08-26T13:01:00-05:00\n"
    );
    let plus8 = run("+08:00", OutputFormat::Json);
    assert_eq!(
        serde_json::from_str::<Json>(&plus8).unwrap(),
        serde_json::json!([{
            "ts": "2017-08-27T02:00:00+08:00",
            "hour": "2017-08-27T02:00:00+08:00",
            "later": "2017-08-27T02:00:00.250+08:00",
            "received_at": "2017-08-27T02:01:00+08:00",
        }])
    );
    let utc = run("UTC", OutputFormat::Table);
    assert!(utc.contains("| 2017-08-26T18:00:00+00:00 |"), "{utc}");
    // A zone change inside the result: January is CST (UTC-6).
    let winter = query(
        &history,
        "SELECT ts + INTERVAL '150 days' AS w FROM readings ORDER BY seq LIMIT 1",
        OutputFormat::Csv,
        &"America/Chicago".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(winter, "w\n2018-01-23T12:00:00-06:00\n");
}

#[test]
fn warning_values_are_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, history) = seal(tmp.path(), false);
    // VALUES is an SQL keyword: the column is quoted (or qualified) after the first item
    let rows = json_rows(
        &history,
        "SELECT seq, \"values\"['sum_3h'] AS sum_3h, w.values['max_1h'] AS max_1h,
                thresholds['critical_1h'] AS critical, \"values\"
         FROM warnings w WHERE seq IN (3, 4) ORDER BY seq",
    );
    assert_eq!(
        Json::Array(rows),
        serde_json::json!([
            {"seq": 3, "sum_3h": 5.0, "max_1h": null, "critical": 50.0,
             "values": {"sum_3h": 5.0, "max_1h": null}},
            {"seq": 4, "sum_3h": 7.5, "max_1h": 1.25, "critical": 50.0,
             "values": {"sum_3h": 7.5, "max_1h": 1.25}},
        ])
    );
    // map entries keep their order
    let text = query(
        &history,
        "SELECT \"values\" AS v FROM warnings WHERE seq = 4",
        OutputFormat::Json,
        &utc(),
    )
    .unwrap();
    assert_eq!(text, "[\n{\"v\":{\"sum_3h\":7.5,\"max_1h\":1.25}}\n]\n");
    // unquoted as the first item; a missing key is null
    let rows = json_rows(
        &history,
        "SELECT values['sum_3h'] AS s, \"values\"['nope'] AS n FROM warnings WHERE seq = 5",
    );
    assert_eq!(rows, vec![serde_json::json!({"s": 10.0, "n": null})]);
    let rows = json_rows(
        &history,
        "SELECT count(*) AS n FROM warnings WHERE \"values\"['sum_3h'] >= 100",
    );
    // sum_3h is 2.5 · (seq − 1): seq 41 .. 90
    assert_eq!(rows, vec![serde_json::json!({"n": 50})]);
}

#[test]
fn bad_sql_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, history) = seal(tmp.path(), false);
    let err = |sql: &str| match query(&history, sql, OutputFormat::Table, &utc()) {
        Err(QueryError::Sql(e)) => e.to_string(),
        other => panic!("{sql}: {other:?}"),
    };
    assert!(err("SELEC * FROM readings").contains("SELEC"));
    assert!(err("SELECT * FROM nowhere").contains("nowhere"));
    assert!(err("SELECT no_such_column FROM readings").contains("no_such_column"));
    assert!(err("SELECT sum(entity) FROM readings")
        .to_lowercase()
        .contains("sum"));
    // nothing writes into the history
    let target = tmp.path().join("copy.parquet");
    let copy = format!("COPY readings TO '{}'", target.display());
    assert!(!err(&copy).is_empty());
    assert!(!target.exists());
    assert!(!err("CREATE TABLE x AS SELECT 1").is_empty());
    assert!(!err("SET datafusion.execution.batch_size = 1").is_empty());
}

#[test]
fn tables_without_files_are_empty_but_queryable() {
    let tmp = tempfile::tempdir().unwrap();
    let history = tmp.path().join("history");
    // only readings
    let mut w = JournalWriter::open(&tmp.path().join("j"), 0, 0).unwrap();
    w.append(&Entry::Batch(Batch {
        seq: 1,
        received_at: t("2017-08-27T00:00:00Z"),
        source: Cow::Borrowed("s"),
        line: 1,
        readings: vec![ReadingRow {
            entity: Cow::Borrowed("G1"),
            feed: Cow::Borrowed("rain"),
            ts: t("2017-08-27T00:00:00Z"),
            value: Some(1.0),
            text: None,
            outcome: Outcome::OnTime,
        }],
    }))
    .unwrap();
    w.sync().unwrap();
    seal_segment(&history, &w.path(), 0).unwrap();
    for table in ["warnings", "rejected", "status"] {
        let rows = json_rows(&history, &format!("SELECT count(*) AS n FROM {table}"));
        assert_eq!(rows, vec![serde_json::json!({"n": 0})], "{table}");
    }
    let csv = query(&history, "SELECT * FROM status", OutputFormat::Csv, &utc()).unwrap();
    assert_eq!(csv, "entity,feed,from,status,time,last_sample,date\n");
    let json = query(
        &history,
        "SELECT * FROM warnings",
        OutputFormat::Json,
        &utc(),
    )
    .unwrap();
    assert_eq!(json, "[]\n");
    let table = query(
        &history,
        "SELECT rule, \"to\" FROM warnings",
        OutputFormat::Table,
        &utc(),
    )
    .unwrap();
    assert!(table.contains("| rule | to |"), "{table}");
    let rows = json_rows(&history, "SELECT entity, value, date FROM readings");
    assert_eq!(
        rows,
        vec![serde_json::json!({"entity": "G1", "value": 1.0, "date": "2017-08-27"})]
    );
    // an empty data directory: all four tables empty
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let rows = json_rows(&empty, "SELECT count(*) AS n FROM readings");
    assert_eq!(rows, vec![serde_json::json!({"n": 0})]);
    // no directory at all: an error naming it
    match query(
        &tmp.path().join("nope"),
        "SELECT 1",
        OutputFormat::Table,
        &utc(),
    ) {
        Err(e @ QueryError::NoHistory(_)) => assert!(e.to_string().contains("nope")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_query_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, history) = seal(tmp.path(), false);
    let bin = env!("CARGO_BIN_EXE_forewarn");
    let run = |args: &[&str]| {
        let o = Command::new(bin).arg("query").args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let h = history.to_str().unwrap();
    let (code, out, _) = run(&["--history", h, "--format", "csv", README_REJECTED]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "reason,n\nout_of_range,7\nmalformed,4\ntoo_late,2\nno_offset,1\n"
    );

    // --config: its [history] dir (relative to the file) and display zone are the defaults
    let conf = tmp.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("forewarn.toml"),
        "rules = \"x.rules\"\n[engine]\ndisplay-zone = \"America/Chicago\"\n\
         [history]\ndir = \"../history\"\n",
    )
    .unwrap();
    let c = conf.join("forewarn.toml");
    let sql = "SELECT ts FROM readings ORDER BY seq LIMIT 1";
    let (code, out, _) = run(&["--config", c.to_str().unwrap(), "--format", "csv", sql]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "ts\n2017-08-26T13:00:00-05:00\n");
    let args = [
        "--config",
        c.to_str().unwrap(),
        "--zone",
        "+08:00",
        "--format",
        "json",
        sql,
    ];
    let (code, out, _) = run(&args);
    assert_eq!(code, Some(0));
    assert_eq!(out, "[\n{\"ts\":\"2017-08-27T02:00:00+08:00\"}\n]\n");

    // bad SQL: exit code 1 and a message on stderr, nothing on stdout
    let (code, out, err) = run(&["--history", h, "SELECT * FROM nowhere"]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(
        err.starts_with("error: ") && err.contains("nowhere"),
        "{err}"
    );
    let (code, _, err) = run(&["--history", &format!("{h}-missing"), "SELECT 1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no history at"), "{err}");
}
