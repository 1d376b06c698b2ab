//! Replaying a Parquet history into an engine (`replay_history`): the readings come back in
//! the batches they were pushed in, so a fresh engine replaying the history emits exactly the
//! warnings and status events of the engine that saw the original input.
//!
//! The original run pushes batches (several entities and feeds per instant, some with a late
//! reading, some redelivered — duplicates, or too late — some with a value out of range) and
//! single readings, over two UTC midnights; its journal — batches with each reading's
//! outcome, dead letters, warnings, status events — is written in three segments, each
//! sealed into Parquet. The rejected readings are not in `readings` (they are dead letters);
//! none of them is an entity's first reading, so they make no entity known earlier than its
//! accepted readings do.

#![cfg(feature = "history")]

use std::borrow::Cow;
use std::sync::Arc;

use forewarn_engine::durable::{
    Batch, Entry, JournalWriter, Outcome, ReadingRow, RejectedRow, StatusRow, WarningRow,
};
use forewarn_engine::history::{read_history_batches, replay_history, seal_segment};
use forewarn_engine::record::Sink;
use forewarn_engine::source::{DeadLetter, ReplayOutput};
use forewarn_engine::{
    Engine, EngineConfig, Output, Reading, RejectReason, Rejection, StatusEvent, Value, Warning,
};
use forewarn_rules::ir::{Millis, Plan};
use forewarn_rules::{compile, TableData, TableLoader};

const MINUTE: Millis = 60_000;

const RULES: &str = "
feed rain: depth mm, range 0 .. 200, interval 5m, stale 30m, offline 2h
feed stage: level m, range -10 .. 50, stale 20m, offline 1h

levels cma: blue < yellow < orange < red

rule storm on rain levels cma:
    let s1 = sum(rain, 1h)
    red    when s1 >= 40 mm
    orange when s1 >= 25 mm exit when s1 < 20 mm
    yellow when sum(rain, 3h) >= 30 mm
    blue   when max(rain, 30m) >= 4 mm for 10m
    clear after 20m
    message \"{entity}: {s1:.1} mm in 1 h\"

rule river on stage levels watch < flood:
    flood when last(stage) >= 5.5 m exit when last(stage) < 5.3 m
    watch when max(stage, 1h) >= 4.5 m
    clear when max(stage, 1h) < 4.2 m for 30m
";

const RAIN_ONLY: &str = "
feed rain: depth mm, range 0 .. 200, interval 5m, stale 30m, offline 2h

levels cma: blue < yellow < orange < red

rule storm on rain levels cma:
    let s1 = sum(rain, 1h)
    red    when s1 >= 40 mm
    orange when s1 >= 25 mm exit when s1 < 20 mm
    yellow when sum(rain, 3h) >= 30 mm
    blue   when max(rain, 30m) >= 4 mm for 10m
    clear after 20m
    message \"{entity}: {s1:.1} mm in 1 h\"
";

struct NoTables;

impl TableLoader for NoTables {
    fn load(&self, path: &str) -> Result<TableData, String> {
        Err(format!("no table {path}"))
    }
}

fn plan(src: &str) -> Arc<Plan> {
    let c = compile(src, "x.rules", &NoTables).unwrap_or_else(|d| panic!("{}", d.render(false)));
    Arc::new(c.plan)
}

/// One reading of the generated input.
#[derive(Debug, Clone)]
struct R {
    entity: &'static str,
    feed: &'static str,
    ts: Millis,
    value: f64,
}

/// A reading as compared: (seq, entity, feed, ts, value).
type Row<'a> = (u64, &'a str, &'a str, Millis, f64);

/// One arrival: a single reading (`push`) or several together (`push_batch`).
#[derive(Debug, Clone)]
enum Call {
    One(R),
    Many(Vec<R>),
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 30 hours from 2017-08-26T20:00Z in 5-minute steps (so over two UTC midnights): rain for
/// three gauges, stage for two, with storms, late and redelivered readings, and values out of
/// range.
fn input() -> Vec<Call> {
    let start = chrono::DateTime::parse_from_rfc3339("2017-08-26T20:00:00Z")
        .unwrap()
        .timestamp_millis();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut calls = Vec::new();
    let mut last: Vec<R> = Vec::new();
    for step in 0..360i64 {
        let ts = start + step * 5 * MINUTE;
        let storm = (step / 40) % 2 == 1;
        let mut rs = Vec::new();
        for entity in ["G1", "G2", "G3"] {
            let v = if storm {
                (rng.below(48) as f64) * 0.25
            } else if rng.below(4) == 0 {
                (rng.below(8) as f64) * 0.25
            } else {
                0.0
            };
            rs.push(R {
                entity,
                feed: "rain",
                ts,
                value: v,
            });
        }
        if step % 3 == 0 {
            for entity in ["S1", "S2"] {
                let base = if (step / 50) % 2 == 1 { 4.0 } else { 3.0 };
                rs.push(R {
                    entity,
                    feed: "stage",
                    ts,
                    value: base + rng.below(24) as f64 * 0.125,
                });
            }
        }
        if step > 0 && rng.below(6) == 0 {
            // a late reading (17 minutes old, between two 5-minute stamps) arrives with this batch
            rs.push(R {
                entity: "G2",
                feed: "rain",
                ts: ts - 17 * MINUTE,
                value: rng.below(8) as f64 * 0.5,
            });
        }
        if step > 0 && rng.below(9) == 0 {
            // a value the engine rejects (never an entity's first reading)
            rs.push(R {
                entity: "G3",
                feed: "rain",
                ts,
                value: 500.0,
            });
        }
        match rng.below(5) {
            // each reading arrives alone
            0 => calls.extend(rs.iter().cloned().map(Call::One)),
            _ => calls.push(Call::Many(rs.clone())),
        }
        if step > 0 && rng.below(7) == 0 {
            // the previous instant redelivered
            calls.push(Call::Many(last.clone()));
        }
        last = rs;
    }
    calls
}

/// Everything an engine emitted; dead letters too.
#[derive(Default)]
struct Collect {
    out: Vec<Output>,
    dead: Vec<DeadLetter>,
}

impl Sink for Collect {
    fn warning(&mut self, w: Warning) {
        self.out.push(Output::Warning(w));
    }
    fn status(&mut self, s: StatusEvent) {
        self.out.push(Output::Status(s));
    }
    fn rejected(&mut self, r: Rejection) {
        self.out.push(Output::Rejected(r));
    }
}

impl ReplayOutput for Collect {
    fn dead_letter(&mut self, d: DeadLetter) {
        self.dead.push(d);
    }
}

/// Warnings (without `emitted_at`, a wall-clock time) and status events, in emission order.
fn transitions(out: &[Output]) -> (Vec<Warning>, Vec<StatusEvent>) {
    let mut w = Vec::new();
    let mut s = Vec::new();
    for o in out {
        match o {
            Output::Warning(x) => w.push(Warning {
                emitted_at: 0,
                ..x.clone()
            }),
            Output::Status(x) => s.push(x.clone()),
            Output::Rejected(_) => {}
        }
    }
    (w, s)
}

/// Push `calls` into a fresh engine, journaling every batch (with outcomes), rejection,
/// warning and status event into segments of `per_segment` calls; seal them under
/// `history`. Returns what the engine emitted, and which readings of each call it accepted.
fn original_run(
    plan: Arc<Plan>,
    calls: &[Call],
    journal: &std::path::Path,
    history: &std::path::Path,
    per_segment: usize,
) -> (Vec<Output>, Vec<Vec<bool>>) {
    let mut engine = Engine::new(plan, EngineConfig::default());
    let mut all = Vec::new();
    let mut accepted = Vec::new();
    let mut segment = 0u64;
    let mut w = JournalWriter::open(journal, segment, 0).unwrap();
    let mut seq = 1u64;
    for (i, call) in calls.iter().enumerate() {
        let line = i as u64 + 1;
        let rs: Vec<R> = match call {
            Call::One(r) => vec![r.clone()],
            Call::Many(rs) => rs.clone(),
        };
        let readings: Vec<Reading<'_>> = rs
            .iter()
            .map(|r| Reading {
                entity: r.entity,
                feed: engine.feed(r.feed).unwrap(),
                ts: r.ts,
                value: Value::Num(r.value),
                tag: line,
            })
            .collect();
        let mut out: Vec<Output> = Vec::new();
        let results = match call {
            Call::One(_) => vec![engine.push(&readings[0], &mut out)],
            Call::Many(_) => engine.push_batch(&readings, &mut out),
        };
        accepted.push(results.iter().map(|r| r.is_ok()).collect());
        let received_at = rs[0].ts + MINUTE;
        w.append(&Entry::Batch(Batch {
            seq,
            received_at,
            source: Cow::Borrowed("generated"),
            line,
            readings: rs
                .iter()
                .zip(&results)
                .map(|(r, res)| ReadingRow {
                    entity: Cow::Borrowed(r.entity),
                    feed: Cow::Borrowed(r.feed),
                    ts: r.ts,
                    value: Some(r.value),
                    text: None,
                    outcome: Outcome::from(*res),
                })
                .collect(),
        }))
        .unwrap();
        seq += rs.len() as u64;
        for o in &out {
            match o {
                Output::Warning(x) => w.append(&Entry::Warning(WarningRow::from(x))).unwrap(),
                Output::Status(x) => w.append(&Entry::Status(StatusRow::from(x))).unwrap(),
                Output::Rejected(x) => {
                    let d = DeadLetter::from_rejection(x.clone(), "generated", b"");
                    w.append(&Entry::Rejected(RejectedRow::new(&d, received_at)))
                        .unwrap()
                }
            }
        }
        all.extend(out);
        if (i + 1) % per_segment == 0 {
            let sealed = w.roll().unwrap();
            seal_segment(history, &journal.join(format!("{sealed:016}.wal")), sealed).unwrap();
            segment = sealed + 1;
        }
    }
    let mut out: Vec<Output> = Vec::new();
    engine.finish(&mut out);
    for o in &out {
        if let Output::Warning(x) = o {
            w.append(&Entry::Warning(WarningRow::from(x))).unwrap();
        }
    }
    all.extend(out);
    w.sync().unwrap();
    seal_segment(history, &w.path(), segment).unwrap();
    (all, accepted)
}

#[test]
fn replaying_the_history_gives_the_original_warnings() {
    let calls = input();
    let tmp = tempfile::tempdir().unwrap();
    let (journal, history) = (tmp.path().join("journal"), tmp.path().join("history"));
    let per_segment = calls.len() / 3 + 1;
    let (original, accepted) = original_run(plan(RULES), &calls, &journal, &history, per_segment);
    let (want_w, want_s) = transitions(&original);
    let rejected = original
        .iter()
        .filter(|o| matches!(o, Output::Rejected(r) if r.reason == RejectReason::OutOfRange))
        .count();
    assert!(want_w.len() >= 20, "only {} warnings", want_w.len());
    assert!(rejected >= 5, "only {rejected} rejections");
    let out_of_range = calls
        .iter()
        .flat_map(|c| match c {
            Call::One(r) => vec![r],
            Call::Many(rs) => rs.iter().collect(),
        })
        .filter(|r| r.value > 200.0)
        .count();
    assert_eq!(rejected, out_of_range);
    let mut reasons = std::collections::BTreeMap::new();
    for o in &original {
        if let Output::Rejected(r) = o {
            *reasons.entry(r.reason.as_str()).or_insert(0) += 1;
        }
    }
    // redeliveries of an instant the entity has moved far past are refused as too late
    assert!(
        reasons.get("too_late").is_some_and(|n| *n > 0),
        "{reasons:?}"
    );
    assert!(want_w.iter().any(|w| w.late), "no late transition");

    // The history comes back as the original batches, minus the rejected readings.
    let batches: Vec<_> = read_history_batches(&history)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Arrivals whose readings were all rejected left no rows: they are not batches.
    let mut want_batches = Vec::new();
    let mut seq = 1u64;
    for (call, ok) in calls.iter().zip(&accepted) {
        let rs: Vec<&R> = match call {
            Call::One(r) => vec![r],
            Call::Many(rs) => rs.iter().collect(),
        };
        let kept: Vec<Row<'_>> = rs
            .iter()
            .enumerate()
            .filter(|(i, _)| ok[*i])
            .map(|(i, r)| (seq + i as u64, r.entity, r.feed, r.ts, r.value))
            .collect();
        if !kept.is_empty() {
            want_batches.push((seq, kept));
        }
        seq += rs.len() as u64;
    }
    assert!(want_batches.len() < calls.len());
    let got_batches: Vec<(u64, Vec<Row<'_>>)> = batches
        .iter()
        .map(|b| {
            let rs = b
                .readings
                .iter()
                .map(|r| {
                    let v = r.value.unwrap();
                    (r.seq, r.entity.as_str(), r.feed.as_str(), r.ts, v)
                })
                .collect();
            (b.batch, rs)
        })
        .collect();
    assert_eq!(got_batches.len(), want_batches.len());
    for (g, w) in got_batches.iter().zip(&want_batches) {
        assert_eq!(g, w);
    }
    assert!(batches.iter().all(|b| b.source == "generated"));

    let mut engine = Engine::new(plan(RULES), EngineConfig::default());
    let mut out = Collect::default();
    let stats = replay_history(&mut engine, &history, &mut out).unwrap();
    engine.finish(&mut out);
    assert_eq!(stats.lines, want_batches.len() as u64);
    assert_eq!(stats.bad, 0);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    let (got_w, got_s) = transitions(&out.out);
    assert_eq!(got_w.len(), want_w.len());
    for (i, (g, w)) in got_w.iter().zip(&want_w).enumerate() {
        assert_eq!(g, w, "warning {i}");
    }
    assert_eq!(got_s, want_s);
}

#[test]
fn readings_of_unknown_feeds_are_dead_lettered_and_the_rest_replayed() {
    let calls = input();
    let tmp = tempfile::tempdir().unwrap();
    let (journal, history) = (tmp.path().join("journal"), tmp.path().join("history"));
    original_run(plan(RULES), &calls, &journal, &history, calls.len() / 2 + 1);

    // The original input without the stage readings, into a rain-only engine.
    let rain_only: Vec<Call> = calls
        .iter()
        .filter_map(|c| match c {
            Call::One(r) if r.feed == "rain" => Some(Call::One(r.clone())),
            Call::One(_) => None,
            Call::Many(rs) => {
                let rs: Vec<R> = rs.iter().filter(|r| r.feed == "rain").cloned().collect();
                match rs.len() {
                    0 => None,
                    1 => Some(Call::One(rs[0].clone())),
                    _ => Some(Call::Many(rs)),
                }
            }
        })
        .collect();
    let (direct, _) = original_run(
        plan(RAIN_ONLY),
        &rain_only,
        &tmp.path().join("j2"),
        &tmp.path().join("h2"),
        usize::MAX,
    );
    let stage_readings = calls
        .iter()
        .flat_map(|c| match c {
            Call::One(r) => vec![r],
            Call::Many(rs) => rs.iter().collect(),
        })
        .filter(|r| r.feed == "stage")
        .count();

    let mut engine = Engine::new(plan(RAIN_ONLY), EngineConfig::default());
    let mut out = Collect::default();
    let stats = replay_history(&mut engine, &history, &mut out).unwrap();
    engine.finish(&mut out);
    assert_eq!(stats.bad, stage_readings as u64);
    assert_eq!(out.dead.len(), stage_readings);
    for d in &out.dead {
        assert_eq!(d.reason, RejectReason::UnknownFeed);
        assert_eq!(d.feed.as_deref(), Some("stage"));
        assert_eq!(d.source, "generated");
        let raw: serde_json::Value = serde_json::from_slice(&d.raw).unwrap();
        assert_eq!(raw["feed"], "stage");
        assert_eq!(raw["entity"], d.entity.as_deref().unwrap());
    }
    assert_eq!(
        engine.counters().rejected(RejectReason::UnknownFeed),
        stage_readings as u64
    );
    let (want_w, _) = transitions(&direct);
    let (got_w, _) = transitions(&out.out);
    assert!(want_w.len() >= 10);
    assert_eq!(got_w, want_w);
}

#[test]
fn an_empty_or_missing_history_replays_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut engine = Engine::new(plan(RULES), EngineConfig::default());
    let mut out = Collect::default();
    let stats = replay_history(&mut engine, &tmp.path().join("nowhere"), &mut out).unwrap();
    assert_eq!((stats.lines, stats.readings, stats.bad), (0, 0, 0));
    assert!(out.out.is_empty() && out.dead.is_empty());
}
