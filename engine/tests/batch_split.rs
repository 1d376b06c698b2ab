//! Engine-level properties on random rain / stage streams for a few entities.
//!
//! What `docs/semantics.md` (and the shared reference) guarantee, and what is tested here:
//!
//! **(a) Splitting does not matter — per entity, with each entity's instant kept whole.**
//! A `push_batch` applies its readings in event-time order, all readings of one instant
//! before the single evaluation at that instant; a reading stamped `T` that arrives
//! *separately later* evaluates at `T` again ("one instant, one evaluation" is per arrival
//! unit). So a split of event-time-ordered input into `push` / `push_batch` calls is
//! invisible only if it never separates the readings of one entity at one instant (its
//! *atom*): an atom of several readings (two feeds, or a redelivery with another value) is
//! always delivered inside one `push_batch`; atoms of different entities at the same instant
//! may go to different calls. Under that condition, for every split (random chunk sizes,
//! whole input in one batch, single pushes, empty batches in between) the sequence of
//! warnings of each (rule, entity) — kind, from, to, event time, seq, late, values, message —
//! and the sequence of data-status events of each (entity, feed) are identical. The
//! interleaving of *different* entities in the output is not part of the guarantee and is
//! not compared: a batch applies every atom of an instant (and so fires each entity's own
//! earlier deadlines) before evaluating any, while single pushes evaluate entity by entity,
//! so another entity's watermark-driven deadlines can come out in between. This needs a
//! positive watermark delay (1 ms to 5 min are generated): with a delay of 0 a deadline at
//! `T` fires as soon as *any* reading stamped `T` arrives, before this entity's own readings
//! stamped `T` (see [`instants`]).
//!
//! **(b) Reorder delay.** With `reorder d` on both feeds and input shuffled with lateness at
//! most `d` (every reading arrives before any reading stamped more than `d` after it; ties
//! are arranged so that lateness of exactly `d` occurs), split into random calls (any split:
//! held readings are regrouped by instant), the per-(rule, entity) warnings and per-(entity,
//! feed) status events equal those of the time-sorted input without reorder delay, one batch
//! per instant; nothing is late, for lateness up to `d` inclusive (held readings wait until
//! the watermark *passes* `ts + d`; `reorder_lateness_exactly_d_with_zero_watermark_delay`
//! pins the boundary).
//!
//! **(c) Replay.** Running the same input (shuffled, with late and too-late readings, any
//! split) twice through two engines gives the same outputs — warnings, status events and
//! rejections, in the same global order — apart from `emitted_at`.
//!
//! Each property runs 160 cases (about 5 s in a debug build on 2 cores);
//! `BATCH_SPLIT_CASES=3000` runs more.

use std::collections::BTreeMap;
use std::sync::Arc;

use forewarn_engine::{DataStatus, Engine, EngineConfig, Output, Reading, TransitionKind, Value};
use forewarn_rules::ir::{Millis, Plan};
use forewarn_rules::{compile, TableData, TableLoader};
use proptest::prelude::*;

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const START: Millis = 1_719_792_000_000; // 2024-07-01T00:00:00Z
const ENTITIES: [&str; 3] = ["E1", "E2", "E3"];

/// The rules: `sum`, `max`, `last`, `for`, `clear after`, `exit when` (hysteresis) and
/// `clear when … for`, over a depth feed and a level feed with staleness budgets.
/// `{reorder}` is replaced by a feed option (or nothing).
const RULES: &str = "
feed rain: depth mm, range 0 .. 200, interval 5m, stale 30m, offline 2h{reorder}
feed stage: level m, range -10 .. 50, stale 20m, offline 1h{reorder}

levels cma: blue < yellow < orange < red

rule storm on rain levels cma:
    let s1 = sum(rain, 1h)
    red    when s1 >= 40 mm
    orange when s1 >= 25 mm exit when s1 < 20 mm
    yellow when sum(rain, 3h) >= 30 mm
    blue   when max(rain, 30m) >= 4 mm for 10m
    clear after 20m

rule burst on rain:
    warn when max(rain, 15m) >= 6 mm for 5m
    clear after 15m

rule river on stage levels watch < flood:
    flood when last(stage) >= 5.5 m exit when last(stage) < 5.3 m
    watch when max(stage, 1h) >= 4.5 m
    clear when max(stage, 1h) < 4.2 m for 30m
";

struct NoTables;

impl TableLoader for NoTables {
    fn load(&self, path: &str) -> Result<TableData, String> {
        Err(format!("no table {path}"))
    }
}

fn plan(reorder: Option<&str>) -> Arc<Plan> {
    let opt = reorder.map_or(String::new(), |d| format!(", reorder {d}"));
    let src = RULES.replace("{reorder}", &opt);
    let compiled =
        compile(&src, "x.rules", &NoTables).unwrap_or_else(|d| panic!("{}", d.render(false)));
    Arc::new(compiled.plan)
}

// ---------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct R {
    entity: usize,
    /// 0 = rain, 1 = stage (feed ids in declaration order).
    feed: usize,
    ts: Millis,
    value: f64,
}

/// All readings of one entity at one instant, in arrival order.
type Atom = Vec<R>;

#[derive(Debug, Clone)]
enum Call {
    Push(R),
    Batch(Vec<R>),
}

/// One generated step: time gap, entity, which feeds, values, and a redelivery.
type Step = (Millis, usize, u8, f64, f64, Option<f64>);

fn step() -> impl Strategy<Value = Step> {
    let gap = prop_oneof![
        3 => Just(0i64),
        3 => Just(5 * MINUTE),
        1 => Just(10 * MINUTE),
        4 => 1..=MINUTE,
        8 => 1..=10 * MINUTE,
        1 => 10 * MINUTE..=3 * HOUR,
    ];
    let rain = prop_oneof![
        3 => Just(0.0),
        3 => (1u32..=10).prop_map(|n| n as f64 * 0.2),
        4 => (0u32..=120).prop_map(|n| n as f64 / 10.0),
    ];
    let stage = (30u32..=65).prop_map(|n| n as f64 / 10.0);
    let feeds = prop_oneof![5 => Just(0u8), 3 => Just(1u8), 2 => Just(2u8)];
    (
        gap,
        0..ENTITIES.len(),
        feeds,
        rain.clone(),
        stage,
        prop::option::weighted(0.05, rain),
    )
}

/// Event-time-ordered atoms; steps at the same instant for the same entity merge.
fn atoms(steps: &[Step]) -> Vec<Atom> {
    let mut ts = START;
    let mut out: Vec<Atom> = Vec::new();
    let mut index: BTreeMap<(usize, Millis), usize> = BTreeMap::new();
    for &(gap, entity, feeds, rain, stage, redelivery) in steps {
        ts += gap;
        let mut rs = Vec::new();
        if feeds != 1 {
            rs.push(R {
                entity,
                feed: 0,
                ts,
                value: rain,
            });
            if let Some(v) = redelivery {
                rs.push(R {
                    entity,
                    feed: 0,
                    ts,
                    value: v,
                });
            }
        }
        if feeds != 0 {
            rs.push(R {
                entity,
                feed: 1,
                ts,
                value: stage,
            });
        }
        match index.get(&(entity, ts)) {
            Some(&i) => out[i].extend(rs),
            None => {
                index.insert((entity, ts), out.len());
                out.push(rs);
            }
        }
    }
    out
}

/// Deliver atoms (never splitting one) in chunks: `knobs[i]` decides whether a new chunk
/// starts at atom `i`, whether that chunk is one `push_batch` or atom-by-atom calls, and
/// whether an empty batch goes in first.
fn split_atoms(atoms: &[Atom], knobs: &[u8]) -> Vec<Call> {
    let knob = |i: usize| knobs.get(i % knobs.len().max(1)).copied().unwrap_or(0);
    let mut calls = Vec::new();
    let mut chunk: Vec<R> = Vec::new();
    let mut singles = false;
    for (i, atom) in atoms.iter().enumerate() {
        let k = knob(i);
        if i == 0 || k % 3 == 0 {
            if !singles && !chunk.is_empty() {
                calls.push(Call::Batch(std::mem::take(&mut chunk)));
            }
            singles = k & 8 != 0;
            if k & 0x30 == 0x30 {
                calls.push(Call::Batch(Vec::new()));
            }
        }
        if singles {
            match atom.as_slice() {
                [r] => calls.push(Call::Push(*r)),
                rs => calls.push(Call::Batch(rs.to_vec())),
            }
        } else {
            chunk.extend(atom.iter().copied());
        }
    }
    if !chunk.is_empty() {
        calls.push(Call::Batch(chunk));
    }
    if knob(atoms.len()) & 0x40 != 0 {
        calls.push(Call::Batch(Vec::new()));
    }
    calls
}

/// One `push_batch` per instant, holding every entity's readings of that instant.
///
/// This is the reference for "time-sorted input". With a positive watermark delay it is
/// equivalent (per entity) to any atom-preserving split, property (a). With a delay of 0 it
/// is not: the watermark then *reaches* `T` with the first reading stamped `T`, and the
/// engine fires every deadline due at `T` (`due <= limit` in `Engine::advance_to`) before
/// another entity's readings stamped `T` arrive; those then evaluate at `T` a second time
/// ("arrives separately later"). Example, rule `burst` (`max(rain, 15m) >= 6 mm for 5m`):
/// E3 rain 6.0 at S; then E1 rain 0 at S+5m and E3 rain 6.1 at S+5m as two pushes raise
/// E3 at S+5m with max 6.0 (the `for` deadline fires on E1's reading), one batch raises it
/// with max 6.1.
fn instants(atoms: &[Atom]) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut last_ts = None;
    for a in atoms {
        match calls.last_mut() {
            Some(Call::Batch(rs)) if last_ts == Some(a[0].ts) => rs.extend(a.iter().copied()),
            _ => calls.push(Call::Batch(a.clone())),
        }
        last_ts = Some(a[0].ts);
    }
    calls
}

/// Any split of a reading sequence (for inputs held by a reorder delay).
fn split_any(readings: &[R], knobs: &[u8]) -> Vec<Call> {
    let knob = |i: usize| knobs.get(i % knobs.len().max(1)).copied().unwrap_or(0);
    let mut calls = Vec::new();
    let mut chunk: Vec<R> = Vec::new();
    for (i, r) in readings.iter().enumerate() {
        let k = knob(i);
        if k % 4 == 0 {
            if !chunk.is_empty() {
                calls.push(Call::Batch(std::mem::take(&mut chunk)));
            }
            if k & 0x30 == 0x30 {
                calls.push(Call::Batch(Vec::new()));
            }
        }
        if k & 8 != 0 && chunk.is_empty() {
            calls.push(Call::Push(*r));
        } else {
            chunk.push(*r);
        }
    }
    if !chunk.is_empty() {
        calls.push(Call::Batch(chunk));
    }
    calls
}

/// The readings in arrival order: sorted by `ts + jitter·bound/1000`, so every reading
/// arrives before any reading stamped more than `bound` after it.
fn shuffle_bounded(readings: &[R], jitter: &[u16], bound: Millis) -> Vec<R> {
    let mut keyed: Vec<(Millis, usize, R)> = readings
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let j = jitter
                .get(i % jitter.len().max(1))
                .copied()
                .unwrap_or(0)
                .min(1000);
            (r.ts + bound * j as Millis / 1000, i, *r)
        })
        .collect();
    // ties go to the later reading, so that lateness of exactly `bound` occurs
    keyed.sort_by_key(|k| (k.0, std::cmp::Reverse(k.1)));
    keyed.into_iter().map(|k| k.2).collect()
}

fn readings_of(atoms: &[Atom]) -> Vec<R> {
    atoms.iter().flatten().copied().collect()
}

/// The first reading of each (entity, feed, ts): no redeliveries, whose outcome would depend
/// on arrival order.
fn without_redeliveries(atoms: &[Atom]) -> Vec<Atom> {
    atoms
        .iter()
        .map(|a| {
            let mut out: Atom = Vec::new();
            for r in a {
                if !out.iter().any(|o| o.feed == r.feed) {
                    out.push(*r);
                }
            }
            out
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Running and comparing
// ---------------------------------------------------------------------------------------

fn reading(r: &R, tag: u64) -> Reading<'static> {
    Reading {
        entity: ENTITIES[r.entity],
        feed: r.feed,
        ts: r.ts,
        value: Value::Num(r.value),
        tag,
    }
}

fn run(plan: &Arc<Plan>, watermark_delay: Millis, calls: &[Call]) -> Vec<Output> {
    run_restarting(plan, watermark_delay, calls, &[])
}

/// Like [`run`], but before each call whose index is in `restarts` the engine is replaced by
/// one restored from its snapshot (bytes only: nothing else carries over).
fn run_restarting(
    plan: &Arc<Plan>,
    watermark_delay: Millis,
    calls: &[Call],
    restarts: &[usize],
) -> Vec<Output> {
    let cfg = EngineConfig {
        watermark_delay,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(Arc::clone(plan), cfg.clone());
    assert_eq!(engine.feed("rain"), Some(0));
    assert_eq!(engine.feed("stage"), Some(1));
    let mut out: Vec<Output> = Vec::new();
    let mut tag = 0;
    for (i, call) in calls.iter().enumerate() {
        if restarts.contains(&i) {
            let bytes = engine.snapshot();
            drop(engine);
            engine = Engine::restore(Arc::clone(plan), cfg.clone(), &bytes)
                .expect("a snapshot restores");
        }
        match call {
            Call::Push(r) => {
                tag += 1;
                let _ = engine.push(&reading(r, tag), &mut out);
            }
            Call::Batch(rs) => {
                let batch: Vec<Reading<'_>> = rs
                    .iter()
                    .map(|r| {
                        tag += 1;
                        reading(r, tag)
                    })
                    .collect();
                engine.push_batch(&batch, &mut out);
            }
        }
    }
    if restarts.contains(&calls.len()) {
        let bytes = engine.snapshot();
        engine = Engine::restore(Arc::clone(plan), cfg, &bytes).expect("a snapshot restores");
    }
    engine.finish(&mut out);
    out
}

type WarningKey = (
    TransitionKind,
    Option<String>,
    Option<String>,
    Millis,
    u64,
    bool,
    Vec<(String, Option<f64>)>,
    String,
);

/// Warnings per (rule, entity), in emission order.
fn warnings(out: &[Output]) -> BTreeMap<(String, String), Vec<WarningKey>> {
    let mut m: BTreeMap<(String, String), Vec<WarningKey>> = BTreeMap::new();
    for o in out {
        if let Output::Warning(w) = o {
            m.entry((w.rule.clone(), w.entity.clone()))
                .or_default()
                .push((
                    w.kind,
                    w.from.clone(),
                    w.to.clone(),
                    w.event_time,
                    w.seq,
                    w.late,
                    w.values.clone(),
                    w.message.clone(),
                ));
        }
    }
    m
}

type StatusKey = (DataStatus, DataStatus, Millis, Option<Millis>);

/// Data-status events per (entity, feed), in emission order.
fn statuses(out: &[Output]) -> BTreeMap<(String, String), Vec<StatusKey>> {
    let mut m: BTreeMap<(String, String), Vec<StatusKey>> = BTreeMap::new();
    for o in out {
        if let Output::Status(s) = o {
            m.entry((s.entity.clone(), s.feed.clone()))
                .or_default()
                .push((s.from, s.to, s.time, s.last_sample));
        }
    }
    m
}

fn rejections(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Rejected(_)))
        .count()
}

fn warning_count(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Warning(_)))
        .count()
}

fn same_per_key(reference: &[Output], other: &[Output], what: &str) -> Result<(), TestCaseError> {
    let (wa, wb) = (warnings(reference), warnings(other));
    prop_assert!(
        wa == wb,
        "{what}: warnings differ\nreference {wa:#?}\nother {wb:#?}"
    );
    let (sa, sb) = (statuses(reference), statuses(other));
    prop_assert!(
        sa == sb,
        "{what}: status events differ\nreference {sa:#?}\nother {sb:#?}"
    );
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("BATCH_SPLIT_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(160),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// (a) Event-time-ordered input: any split into push / push_batch calls that keeps each
    /// entity's instant whole gives the same warnings per (rule, entity), for any positive
    /// watermark delay (see `instants()` for delay 0).
    #[test]
    fn split_into_calls_does_not_change_warnings(
        steps in prop::collection::vec(step(), 1..160),
        knobs in prop::collection::vec(any::<u8>(), 1..64),
        knobs2 in prop::collection::vec(any::<u8>(), 1..64),
        watermark_delay in prop_oneof![3 => Just(MINUTE), 1 => Just(1i64), 1 => 1..=5 * MINUTE],
    ) {
        let plan = plan(None);
        let atoms = atoms(&steps);
        // reference: atom by atom
        let reference_calls: Vec<Call> = atoms
            .iter()
            .map(|a| match a.as_slice() {
                [r] => Call::Push(*r),
                rs => Call::Batch(rs.to_vec()),
            })
            .collect();
        let reference = run(&plan, watermark_delay, &reference_calls);
        prop_assert_eq!(rejections(&reference), 0);
        for (name, calls) in [
            ("random split", split_atoms(&atoms, &knobs)),
            ("another random split", split_atoms(&atoms, &knobs2)),
            ("one batch per instant", instants(&atoms)),
            ("one batch", vec![Call::Batch(readings_of(&atoms))]),
        ] {
            let out = run(&plan, watermark_delay, &calls);
            same_per_key(&reference, &out, name)?;
        }
    }

    /// (b) With `reorder d`, input shuffled with lateness up to `d` (inclusive) and split
    /// anyhow gives the warnings of the time-sorted input without delay (one batch per
    /// instant); nothing is late.
    #[test]
    fn reorder_delay_equals_sorted_input(
        steps in prop::collection::vec(step(), 1..160),
        jitter in prop::collection::vec(prop_oneof![0u16..=1000, Just(1000u16)], 1..64),
        knobs in prop::collection::vec(any::<u8>(), 1..64),
        watermark_delay in prop_oneof![2 => Just(MINUTE), 1 => Just(0i64), 1 => 1..=5 * MINUTE],
    ) {
        let d = 10 * MINUTE;
        // lateness up to d inclusive, whatever the watermark delay (see
        // `reorder_lateness_exactly_d_with_zero_watermark_delay`)
        let bound = d;
        let sorted_plan = plan(None);
        let reorder_plan = plan(Some("10m"));
        let atoms = without_redeliveries(&atoms(&steps));
        let reference = run(&sorted_plan, watermark_delay, &instants(&atoms));
        prop_assert!(
            warnings(&reference).values().flatten().all(|w| !w.5),
            "late in sorted input"
        );

        let shuffled = shuffle_bounded(&readings_of(&atoms), &jitter, bound);
        let out = run(&reorder_plan, watermark_delay, &split_any(&shuffled, &knobs));
        prop_assert_eq!(rejections(&out), 0);
        same_per_key(&reference, &out, "shuffled through reorder")?;

        let atom_calls: Vec<Call> = atoms.iter().map(|a| Call::Batch(a.clone())).collect();
        let out = run(&reorder_plan, watermark_delay, &atom_calls);
        same_per_key(&reference, &out, "sorted through reorder")?;
    }

    /// (c) The same input in the same order, twice: the same outputs, in the same order,
    /// apart from `emitted_at` — with late readings, too-late rejections and redeliveries.
    #[test]
    fn replay_is_deterministic(
        steps in prop::collection::vec(step(), 1..160),
        jitter in prop::collection::vec(0u16..=1000, 1..64),
        knobs in prop::collection::vec(any::<u8>(), 1..64),
        reorder in any::<bool>(),
    ) {
        let plan = plan(reorder.then_some("5m"));
        let shuffled = shuffle_bounded(&readings_of(&atoms(&steps)), &jitter, 30 * MINUTE);
        let calls = split_any(&shuffled, &knobs);
        let normalize = |mut out: Vec<Output>| {
            for o in &mut out {
                if let Output::Warning(w) = o {
                    w.emitted_at = 0;
                }
            }
            out
        };
        let first = normalize(run(&plan, MINUTE, &calls));
        let second = normalize(run(&plan, MINUTE, &calls));
        prop_assert!(first == second, "replay differs:\n{first:#?}\n{second:#?}");
    }

    /// (d) Snapshot and restore: an engine replaced at random points by one restored from
    /// its snapshot gives the same outputs, in the same order, as one that ran through —
    /// with held (reordered) readings, pending `for` / `clear after` timers, late readings
    /// and redeliveries in flight at the cut.
    #[test]
    fn restoring_a_snapshot_changes_nothing(
        steps in prop::collection::vec(step(), 1..160),
        jitter in prop::collection::vec(0u16..=1000, 1..64),
        knobs in prop::collection::vec(any::<u8>(), 1..64),
        cuts in prop::collection::vec(0usize..200, 1..6),
        reorder in any::<bool>(),
    ) {
        let plan = plan(reorder.then_some("5m"));
        let shuffled = shuffle_bounded(&readings_of(&atoms(&steps)), &jitter, 30 * MINUTE);
        let calls = split_any(&shuffled, &knobs);
        let normalize = |mut out: Vec<Output>| {
            for o in &mut out {
                if let Output::Warning(w) = o {
                    w.emitted_at = 0;
                }
            }
            out
        };
        let through = normalize(run(&plan, MINUTE, &calls));
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (calls.len() + 1)).collect();
        let restarted = normalize(run_restarting(&plan, MINUTE, &calls, &cuts));
        prop_assert!(through == restarted, "restore differs at cuts {cuts:?}");
    }
}

/// The generator is not vacuous: a canned storm drives every rule through raise, escalate,
/// downgrade and clear.
#[test]
fn rules_fire_on_a_storm() {
    let plan = plan(None);
    let mut calls = Vec::new();
    for k in 1..=72 {
        let rain = if k <= 12 { 6.5 } else { 0.0 };
        let stage = if k <= 10 { 3.0 + 0.3 * k as f64 } else { 4.0 };
        calls.push(Call::Batch(vec![
            R {
                entity: 0,
                feed: 0,
                ts: START + k * 5 * MINUTE,
                value: rain,
            },
            R {
                entity: 0,
                feed: 1,
                ts: START + k * 5 * MINUTE,
                value: stage,
            },
        ]));
    }
    let out = run(&plan, MINUTE, &calls);
    let w = warnings(&out);
    for rule in ["storm", "burst", "river"] {
        let seq = &w[&(rule.to_string(), "E1".to_string())];
        assert!(
            seq.iter().any(|x| x.0 == TransitionKind::Raise),
            "{rule}: {seq:?}"
        );
        assert!(
            seq.iter().any(|x| x.0 == TransitionKind::Clear),
            "{rule}: {seq:?}"
        );
    }
    let storm = &w[&("storm".to_string(), "E1".to_string())];
    assert!(
        storm.iter().any(|x| x.0 == TransitionKind::Escalate),
        "{storm:?}"
    );
    assert!(
        storm.iter().any(|x| x.0 == TransitionKind::Downgrade),
        "{storm:?}"
    );
}

/// The boundary of (a): a redelivery stamped T that arrives separately is evaluated at T
/// again; in the same batch, the instant is evaluated once with the last value.
#[test]
fn separate_arrivals_at_one_instant_evaluate_twice() {
    let plan = plan(None);
    let first = R {
        entity: 0,
        feed: 0,
        ts: START,
        value: 45.0,
    };
    let again = R {
        value: 5.0,
        ..first
    };
    let together = run(&plan, MINUTE, &[Call::Batch(vec![first, again])]);
    assert_eq!(warning_count(&together), 0);
    let apart = run(&plan, MINUTE, &[Call::Push(first), Call::Push(again)]);
    let w = warnings(&apart);
    let storm = &w[&("storm".to_string(), "E1".to_string())];
    assert_eq!(storm.len(), 1, "{storm:?}");
    assert_eq!((storm[0].0, storm[0].3), (TransitionKind::Raise, START));
}

/// Regression: semantics.md says readings are "held until the watermark *passes* their
/// timestamp + d … Results then equal those of time-sorted input for any lateness up to d".
/// The engine once released a held reading (and fired a delayed entity's deadline) when the
/// watermark merely *reached* `ts + d`: with watermark delay 0, a reading exactly `d` late
/// then missed its own instant.
///
/// Minimal input (reorder 10m, watermark delay 0, rule `storm`, S = START):
///   arrivals: E1 rain 45 @ S; E2 rain 0 @ S+90m; E1 rain 45 @ S+80m (lateness exactly 10m)
///   time-sorted (one batch per instant):  storm/E1: raise red @ S, and nothing else.
#[test]
fn reorder_lateness_exactly_d_with_zero_watermark_delay() {
    let e1 = |ts, value| R {
        entity: 0,
        feed: 0,
        ts,
        value,
    };
    let e2 = |ts| R {
        entity: 1,
        feed: 0,
        ts,
        value: 0.0,
    };
    let t = START + 80 * MINUTE;
    let atoms = vec![
        vec![e1(START, 45.0)],
        vec![e1(t, 45.0)],
        vec![e2(t + 10 * MINUTE)],
    ];
    let reference = run(&plan(None), 0, &instants(&atoms));
    let arrivals = [e1(START, 45.0), e2(t + 10 * MINUTE), e1(t, 45.0)];
    let calls: Vec<Call> = arrivals.into_iter().map(Call::Push).collect();
    let out = run(&plan(Some("10m")), 0, &calls);
    let storm = |o: &[Output]| warnings(o)[&("storm".to_string(), "E1".to_string())].clone();
    assert_eq!(storm(&reference).len(), 1);
    assert_eq!(storm(&out), storm(&reference));
}
