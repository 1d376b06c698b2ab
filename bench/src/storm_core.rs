//! `storm core`: the storm rules alone, in process, with the input already in memory.
//!
//! The events file is decoded first (untimed) into pre-resolved readings — an index into a
//! table of station names, the event time and the value — so what is timed is only what the
//! engine does: [`Engine::push`] for every reading in file order, then [`Engine::finish`].
//!
//! With more than one thread the gauges are split by a hash of the station id, as the
//! daemon's shards split entities (SipHash with fixed keys, `hash % shards`), into one engine
//! per thread, each with its own pre-partitioned input. Like the daemon's router, every shard
//! is told the newest event time of the whole stream as it moves on
//! ([`Engine::observe_stream_time`]), so its watermark — and with it every time-driven
//! evaluation — is the one a single engine would have: the edges are the same whatever the
//! number of threads. The threads start together; the wall time is that of the slower.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use forewarn_engine::{Engine, Reading, Value};
use forewarn_rules::ir::{FeedId, Plan};

use crate::storm::{self, PerRule, StormSink};

/// One reading of the events file, its station resolved to an index into
/// [`Decoded::names`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pre {
    /// Index into [`Decoded::names`].
    pub entity: u32,
    /// Event time, UTC ms.
    pub ts: i64,
    /// Rain in mm.
    pub value: f64,
}

/// A whole events file in memory, in file order.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Station ids, in order of first appearance.
    pub names: Vec<String>,
    /// The readings, in file order.
    pub readings: Vec<Pre>,
}

impl Decoded {
    /// Oldest and newest event time (`(0, 0)` when empty).
    pub fn time_range(&self) -> (i64, i64) {
        let lo = self.readings.iter().map(|p| p.ts).min().unwrap_or(0);
        let hi = self.readings.iter().map(|p| p.ts).max().unwrap_or(0);
        (lo, hi)
    }

    /// The reading `p` as the engine takes it.
    pub fn reading(&self, p: &Pre, feed: FeedId) -> Reading<'_> {
        Reading {
            entity: &self.names[p.entity as usize],
            feed,
            ts: p.ts,
            value: Value::Num(p.value),
            tag: 0,
        }
    }
}

/// Read a whole events file (CSV or Parquet) into memory.
pub fn decode_file(path: &Path) -> anyhow::Result<Decoded> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut d = Decoded::default();
    storm::read_events(path, |station, ts, value| {
        let entity = match ids.get(station) {
            Some(&i) => i,
            None => {
                let i = d.names.len() as u32;
                d.names.push(station.to_string());
                ids.insert(station.to_string(), i);
                i
            }
        };
        d.readings.push(Pre { entity, ts, value });
    })?;
    Ok(d)
}

/// The shard of a station among `shards`, as the daemon routes entities (SipHash with fixed
/// keys of the entity id, modulo the number of shards).
pub fn shard_of(station: &str, shards: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    station.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// What `storm core` measured.
#[derive(Debug, Clone)]
pub struct CoreResult {
    /// Threads (= engines, shards).
    pub threads: usize,
    /// Readings pushed.
    pub n_events: u64,
    /// Wall time of the slowest thread (pushes and `finish`), seconds.
    pub seconds: f64,
    /// Each thread's own time, seconds.
    pub thread_seconds: Vec<f64>,
    /// Readings per thread.
    pub thread_events: Vec<u64>,
    /// Rising edges (`raise` transitions) per rule, summed over the shards.
    pub edges: PerRule,
    /// `clear` transitions per rule, summed over the shards.
    pub clears: PerRule,
    /// Readings the engines rejected (none expected).
    pub rejected: u64,
    /// Evaluations, summed over the shards.
    pub evaluations: u64,
}

impl CoreResult {
    /// Readings per second of wall time.
    pub fn events_per_s(&self) -> f64 {
        self.n_events as f64 / self.seconds.max(1e-12)
    }

    /// CPU time per reading in ns: threads × wall / readings.
    pub fn ns_per_event(&self) -> f64 {
        self.threads as f64 * self.seconds * 1e9 / (self.n_events.max(1) as f64)
    }
}

/// One shard's input: its readings, and before each the newest event time of the whole
/// stream up to (not including) that reading.
#[derive(Debug, Default)]
struct ShardInput {
    readings: Vec<Pre>,
    stream_before: Vec<i64>,
}

/// Run the decoded input through `threads` engines (the timed part) and sum their answers.
pub fn run_core(decoded: &Decoded, plan: Arc<Plan>, threads: usize) -> anyhow::Result<CoreResult> {
    let threads = threads.max(1);
    let feed = Engine::new(Arc::clone(&plan), storm::engine_config(false))
        .feed("rain")
        .ok_or_else(|| anyhow::anyhow!("storm.rules declares no feed rain"))?;
    // partition (untimed)
    let shard_of_entity: Vec<usize> = decoded.names.iter().map(|n| shard_of(n, threads)).collect();
    let mut inputs: Vec<ShardInput> = (0..threads).map(|_| ShardInput::default()).collect();
    if threads > 1 {
        let mut stream = i64::MIN;
        for p in &decoded.readings {
            let s = &mut inputs[shard_of_entity[p.entity as usize]];
            s.readings.push(*p);
            s.stream_before.push(stream);
            stream = stream.max(p.ts);
        }
    }
    let stream_end = decoded.readings.iter().map(|p| p.ts).max();
    let barrier = Barrier::new(threads);
    let outcomes: Vec<(f64, u64, StormSink, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|input| {
                let plan = Arc::clone(&plan);
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut engine = Engine::new(plan, storm::engine_config(false));
                    let mut sink = StormSink::default();
                    barrier.wait();
                    let start = Instant::now();
                    let n = if threads == 1 {
                        for p in &decoded.readings {
                            // rejections reach the sink and are counted there
                            let _ = engine.push(&decoded.reading(p, feed), &mut sink);
                        }
                        decoded.readings.len() as u64
                    } else {
                        let mut told = i64::MIN;
                        for (p, &stream) in input.readings.iter().zip(&input.stream_before) {
                            if stream > told {
                                engine.observe_stream_time(stream, &mut sink);
                                told = stream;
                            }
                            let _ = engine.push(&decoded.reading(p, feed), &mut sink);
                        }
                        if let Some(end) = stream_end.filter(|&e| e > told) {
                            engine.observe_stream_time(end, &mut sink);
                        }
                        input.readings.len() as u64
                    };
                    engine.finish(&mut sink);
                    let secs = start.elapsed().as_secs_f64();
                    let evaluations = engine.counters().evaluations;
                    (secs, n, sink, evaluations)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("core thread panicked"))
            .collect()
    });
    let mut r = CoreResult {
        threads,
        n_events: 0,
        seconds: 0.0,
        thread_seconds: Vec::new(),
        thread_events: Vec::new(),
        edges: [0; 3],
        clears: [0; 3],
        rejected: 0,
        evaluations: 0,
    };
    for (secs, n, sink, evaluations) in outcomes {
        r.n_events += n;
        r.seconds = r.seconds.max(secs);
        r.thread_seconds.push(secs);
        r.thread_events.push(n);
        for i in 0..3 {
            r.edges[i] += sink.raises[i];
            r.clears[i] += sink.clears[i];
        }
        r.rejected += sink.rejected;
        r.evaluations += evaluations;
    }
    Ok(r)
}

/// `storm core`: decode `events` (untimed), then time the storm rules over it on `threads`
/// threads.
pub fn core(events: &Path, thresholds: &Path, threads: usize) -> anyhow::Result<CoreResult> {
    let plan = Arc::new(storm::load_plan(thresholds)?);
    let decoded = decode_file(events)?;
    run_core(&decoded, plan, threads)
}
