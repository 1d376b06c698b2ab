//! `forewarn serve` with `[history]`: nothing acknowledged is lost, nothing is repeated.
//!
//! ```text
//!  MQTT ─▶ intake ── append to the input log ─▶ route ─▶ shards ─▶ sink ─▶ history journal,
//!            │        (fsync, then ack: group                         JSON Lines, MQTT
//!            │         commit every few ms)
//!            └─ every checkpoint-every readings: Barrier(n) to every shard ─▶ each shard
//!               snapshots its engine and passes the barrier on ─▶ the sink, holding every
//!               shard's snapshot for n, syncs its outputs and writes checkpoint n
//! ```
//!
//! A barrier travels behind every message routed before it (Chandy–Lamport / Flink-style
//! aligned barriers over FIFO channels), so checkpoint n is a consistent cut: engine states
//! after exactly the messages up to its input position, and outputs of exactly those.
//!
//! On start the newest sound checkpoint is restored (engines, intake state), the history
//! journal and output files are cut back to it, and the input log after its position is
//! replayed through the same decoding and routing before the MQTT connection opens; then
//! the broker redelivers what was never acknowledged. A redelivery (DUP flag) of a message
//! the log already holds — journaled, but the crash came before its ack — is acknowledged
//! and not evaluated again.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use forewarn_rules::ir::{Millis, Plan};
use serde::{Deserialize, Serialize};

use super::config::ServeConfig;
use crate::config::HistoryConfig;
use crate::durable::checkpoint::{checkpoint_name, list_checkpoints, read_checkpoint};
use crate::durable::journal::{
    list_segments, read_segment_bytes, scan_records, segment_name, JournalWriter,
};
use crate::durable::store::{prune_journal, reopen_at, seal, DataDir, JournalPosition};
use crate::engine::Engine;
use crate::loader::RuleSnapshot;

/// Checkpoint kind tag of `forewarn serve` checkpoints.
pub(crate) const SERVE_CHECKPOINT: u32 = 2;

/// Roll the input log at a checkpoint once its segment is this large.
const INPUT_SEGMENT_BYTES: u64 = 64 << 20;

/// Redeliveries are looked up among this many recent messages.
const SEEN_WINDOW: usize = 1 << 16;

/// One record of the input log.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InputRecord<'a> {
    /// An MQTT message, as received.
    Message {
        /// The intake's message number.
        seq: u64,
        /// Wall-clock time of receipt, UTC ms.
        received_at: Millis,
        /// MQTT packet id (redeliveries carry the same one).
        pkid: u16,
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(borrow)]
        payload: Cow<'a, [u8]>,
    },
    /// The wall clock moved (wall clock only).
    Tick {
        /// UTC ms.
        now: Millis,
    },
    /// New rules in force from here on (their snapshot is under `_rules/`).
    Reload {
        #[serde(borrow)]
        ruleset: Cow<'a, str>,
    },
}

/// What the intake knows that a restart needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct IntakeState {
    /// Messages received.
    pub(crate) seq: u64,
    /// Readings routed (the next reading's arrival number).
    pub(crate) readings: u64,
    /// The newest plausible event time of the stream.
    pub(crate) stream_time: Option<Millis>,
    /// Per shard: the stream time last sent.
    pub(crate) sent_time: Vec<Option<Millis>>,
}

/// A checkpoint barrier, sent by the intake through every shard to the sink.
#[derive(Debug)]
pub(crate) struct Barrier {
    /// Checkpoint number.
    pub(crate) n: u64,
    /// The input log position after the last message before the barrier.
    pub(crate) input: JournalPosition,
    /// The intake's state at that point.
    pub(crate) intake: IntakeState,
    /// The last barrier before a graceful stop: the history journal is sealed too.
    pub(crate) last: bool,
    /// The rule set in force at the barrier.
    pub(crate) ruleset: String,
}

/// A `forewarn serve` checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServeCheckpoint {
    pub(crate) fingerprint: String,
    /// The rule set the shards' state was taken under (its snapshot is under `_rules/`).
    pub(crate) ruleset: String,
    pub(crate) input: JournalPosition,
    pub(crate) intake: IntakeState,
    pub(crate) shards: Vec<Vec<u8>>,
    pub(crate) history: JournalPosition,
    pub(crate) rows_in_segment: u64,
    /// Lengths of the warning, status and dead-letter files.
    pub(crate) outputs: Vec<u64>,
}

/// What a serve checkpoint must match to be restored (rules may differ: they are reloaded).
pub(crate) fn fingerprint(cfg: &ServeConfig) -> String {
    format!("shards={} clock={:?}", cfg.shards.max(1), cfg.engine.clock)
}

/// Kind tag of rule snapshot files.
const RULES_FILE: u32 = 3;

/// Keep what a rule set was compiled from, under `_rules/<ruleset>/`, so that a reload can
/// be replayed and a checkpoint restored under its own rules.
pub(crate) fn save_rules(data: &DataDir, snap: &RuleSnapshot, ruleset: &str) -> anyhow::Result<()> {
    let dir = data.root().join("_rules").join(ruleset);
    if crate::durable::checkpoint::read_latest::<RuleSnapshot>(&dir, RULES_FILE)
        .ok()
        .flatten()
        .is_some()
    {
        return Ok(());
    }
    crate::durable::checkpoint::write_checkpoint(&dir, 1, RULES_FILE, snap, 1)?;
    Ok(())
}

/// The rules of a rule set kept by [`save_rules`], compiled.
pub(crate) fn load_rules(data: &DataDir, ruleset: &str) -> anyhow::Result<Arc<Plan>> {
    let dir = data.root().join("_rules").join(ruleset);
    let snap = crate::durable::checkpoint::read_latest::<RuleSnapshot>(&dir, RULES_FILE)?
        .with_context(|| format!("no snapshot of rule set {ruleset} in {}", dir.display()))?
        .1;
    let plan = snap.compile().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        plan.ruleset_hash == ruleset,
        "the snapshot of rule set {ruleset} compiles to {}",
        plan.ruleset_hash
    );
    Ok(Arc::new(plan))
}

/// The rules of the newest sound checkpoint, if they are kept.
pub(crate) fn checkpoint_rules(data: &DataDir) -> Option<Arc<Plan>> {
    let (found, _) = newest_sound(data);
    let (_, c) = found?;
    load_rules(data, &c.ruleset).ok()
}

/// The state the daemon starts from.
pub(crate) struct Recovered {
    /// The rules the engines are under (the checkpoint's; the intake reloads the rules on
    /// disk after replaying the input log if they differ).
    pub(crate) plan: Arc<Plan>,
    pub(crate) engines: Vec<Engine>,
    pub(crate) intake: IntakeState,
    /// Replay the input log from here.
    pub(crate) input: JournalPosition,
    pub(crate) history: JournalWriter,
    pub(crate) rows_in_segment: u64,
    /// Cut the output files back to these lengths (`None`: append).
    pub(crate) outputs: Option<Vec<u64>>,
    pub(crate) checkpoint_no: u64,
    /// What was decided, for the log.
    pub(crate) start: String,
    /// After a rebuild from the history: per shard, the last message whose readings for
    /// that shard the history holds (the replay skips them); empty otherwise.
    pub(crate) skip: Vec<u64>,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// The input log's directory.
pub(crate) fn input_dir(data: &DataDir) -> PathBuf {
    data.root().join("_input")
}

/// The newest sound checkpoint, the previous one if the newest is damaged; a note on what
/// was found.
fn newest_sound(data: &DataDir) -> (Option<(u64, ServeCheckpoint)>, Option<String>) {
    let dir = data.checkpoints();
    let ns = list_checkpoints(&dir).unwrap_or_default();
    let mut notes = Vec::new();
    for &n in ns.iter().rev().take(2) {
        match read_checkpoint::<ServeCheckpoint>(&dir.join(checkpoint_name(n)), SERVE_CHECKPOINT) {
            Ok(c) => {
                let note = (!notes.is_empty()).then(|| notes.join("; "));
                return (Some((n, c)), note);
            }
            Err(e) => notes.push(e.to_string()),
        }
    }
    (None, (!notes.is_empty()).then(|| notes.join("; ")))
}

/// The first free journal segment id of a data directory whose history is kept across
/// starts: after every sealed part and every journal segment.
fn next_history_segment(data: &DataDir) -> anyhow::Result<u64> {
    let mut next = 0;
    for p in data.parts_from(0)? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(id) = name
            .as_deref()
            .and_then(|n| n.trim_start_matches('.').strip_prefix("part-"))
            .and_then(|r| r.get(..16))
            .and_then(|r| r.parse::<u64>().ok())
        {
            next = next.max(id + 1);
        }
    }
    for s in list_segments(&data.journal())? {
        next = next.max(s + 1);
    }
    Ok(next)
}

/// Find the state to start from (see the module docs).
pub(crate) fn recover(
    h: &HistoryConfig,
    plan: &Arc<Plan>,
    cfg: &ServeConfig,
) -> anyhow::Result<Recovered> {
    let data = DataDir::new(&h.dir);
    std::fs::create_dir_all(data.root())
        .with_context(|| format!("create {}", data.root().display()))?;
    let shards = cfg.shards.max(1);
    let fp = fingerprint(cfg);
    let (found, note) = newest_sound(&data);
    let checkpoint_no = list_checkpoints(&data.checkpoints())?
        .last()
        .copied()
        .unwrap_or(0);
    let prefix = note.map(|n| format!("{n}; ")).unwrap_or_default();
    match found {
        Some((n, c))
            if c.fingerprint == fp
                && c.shards.len() == shards
                && (c.ruleset == plan.ruleset_hash || load_rules(&data, &c.ruleset).is_ok()) =>
        {
            let under = if c.ruleset == plan.ruleset_hash {
                Arc::clone(plan)
            } else {
                load_rules(&data, &c.ruleset)?
            };
            let mut engines = Vec::with_capacity(shards);
            for bytes in &c.shards {
                engines.push(
                    Engine::restore(Arc::clone(&under), cfg.engine.clone(), bytes)
                        .with_context(|| format!("restoring checkpoint {n}"))?,
                );
            }
            let history = reopen_at(&data, c.history).map_err(anyhow::Error::msg)?;
            Ok(Recovered {
                skip: Vec::new(),
                plan: under,
                engines,
                intake: c.intake,
                input: c.input,
                history,
                rows_in_segment: c.rows_in_segment,
                outputs: Some(c.outputs),
                checkpoint_no,
                start: format!("{prefix}resumed from checkpoint {n}"),
            })
        }
        other => {
            // No usable state: fresh engines. The history of earlier runs is kept (a daemon's
            // history accumulates); what the input log holds after the last checkpoint (or
            // all of it, without one) is still replayed, so nothing acknowledged is lost.
            let why = match &other {
                None if prefix.is_empty() => "no checkpoint".to_string(),
                None => "no sound checkpoint".to_string(),
                Some((n, c)) if c.shards.len() != shards => format!(
                    "checkpoint {n} has {} shards, the configuration {shards}",
                    c.shards.len()
                ),
                Some((n, c)) if c.fingerprint != fp => {
                    format!("the clock setting changed since checkpoint {n}")
                }
                Some((n, _)) => format!("the rules of checkpoint {n} are not kept"),
            };
            for s in list_segments(&data.journal())? {
                seal(&data, s).map_err(anyhow::Error::msg)?;
            }
            let id = next_history_segment(&data)?;
            let history = JournalWriter::open(&data.journal(), id, 0)?;
            // The whole input log is replayed; what the history already holds is rebuilt
            // from it first (outputs discarded: they were written), and skipped in the replay.
            let input = JournalPosition {
                segment: list_segments(&input_dir(&data))?
                    .first()
                    .copied()
                    .unwrap_or(0),
                offset: 0,
            };
            let rebuilt = rebuild(&data, plan, cfg, shards)?;
            let start = match &rebuilt.summary {
                Some(s) => format!("{prefix}state rebuilt from the history ({why}): {s}"),
                None => format!("{prefix}fresh state ({why})"),
            };
            Ok(Recovered {
                plan: Arc::clone(plan),
                engines: rebuilt.engines,
                intake: rebuilt.intake,
                input,
                history,
                rows_in_segment: 0,
                outputs: None,
                checkpoint_no,
                start,
                skip: rebuilt.skip,
            })
        }
    }
}

/// Engines rebuilt from the history, and where the input log replay goes on from.
struct Rebuilt {
    engines: Vec<Engine>,
    intake: IntakeState,
    skip: Vec<u64>,
    summary: Option<String>,
}

/// The number of the first message the input log holds.
fn first_logged_message(data: &DataDir) -> anyhow::Result<Option<u64>> {
    let dir = input_dir(data);
    for s in list_segments(&dir)? {
        let path = dir.join(segment_name(s));
        let bytes = read_segment_bytes(&path)?;
        let mut first = None;
        scan_records(&path, &bytes, 0, |_, r: InputRecord<'_>| {
            if let (None, InputRecord::Message { seq, .. }) = (first, &r) {
                first = Some(*seq);
            }
            Ok(())
        })?;
        if first.is_some() {
            return Ok(first);
        }
    }
    Ok(None)
}

/// Rebuild the shards' engines from the Parquet history (every accepted reading, batch by
/// batch in arrival order, routed as the intake routes; outputs discarded), when there is no
/// checkpoint to restore: a daemon never runs on empty state while its history says more.
#[cfg(feature = "history")]
fn rebuild(
    data: &DataDir,
    plan: &Arc<Plan>,
    cfg: &ServeConfig,
    shards: usize,
) -> anyhow::Result<Rebuilt> {
    use crate::engine::{Reading, Value};
    let senders = (0..shards)
        .map(|_| crossbeam_channel::bounded(1).0)
        .collect();
    let router = super::shard::Router::new(plan, senders);
    let mut engines: Vec<Engine> = (0..shards)
        .map(|_| Engine::new(Arc::clone(plan), cfg.engine.clone()))
        .collect();
    let first = first_logged_message(data)?;
    let limit = super::now_ms().saturating_add(
        cfg.engine
            .future_skew
            .unwrap_or(crate::engine::DEFAULT_FUTURE_SKEW),
    );
    let mut skip = vec![0u64; shards];
    let mut state = IntakeState {
        sent_time: vec![None; shards],
        ..IntakeState::default()
    };
    let (mut batches, mut readings, mut stream) = (0u64, 0u64, None::<Millis>);
    let mut out: Vec<crate::record::Output> = Vec::new();
    for b in crate::history::read_history_batches(data.root())? {
        let b = b?;
        batches += 1;
        let before_log = first.is_none_or(|f| b.line < f);
        let mut parts: Vec<Vec<Reading<'_>>> = (0..shards).map(|_| Vec::new()).collect();
        for r in &b.readings {
            let Some(feed) = plan.feed_by_name(&r.feed) else {
                continue;
            };
            let value = match (&r.value, &r.text) {
                (Some(v), _) => Value::Num(*v),
                (None, Some(t)) => Value::Text(t),
                (None, None) => continue,
            };
            let s = router.shard_of(&r.entity);
            parts[s].push(Reading {
                entity: &r.entity,
                feed,
                ts: r.ts,
                value,
                tag: b.line,
            });
            skip[s] = skip[s].max(b.line);
            if before_log {
                state.readings = state.readings.max(r.seq + 1);
                if r.ts <= limit {
                    stream = stream.max(Some(r.ts));
                }
            }
            readings += 1;
        }
        for (s, part) in parts.iter().enumerate() {
            match part.as_slice() {
                [] => {}
                [one] => {
                    let _ = engines[s].push(one, &mut out);
                }
                many => {
                    engines[s].push_batch(many, &mut out);
                }
            }
        }
        if let Some(t) = stream {
            for e in engines.iter_mut() {
                e.observe_stream_time(t, &mut out);
            }
        }
        out.clear();
    }
    if batches == 0 {
        return Ok(Rebuilt {
            engines,
            intake: state,
            skip: Vec::new(),
            summary: None,
        });
    }
    state.stream_time = stream;
    // the intake numbers messages on from the log's first one (or after the history's last)
    state.seq = match first {
        Some(f) => f.saturating_sub(1),
        None => skip.iter().copied().max().unwrap_or(0),
    };
    Ok(Rebuilt {
        engines,
        intake: state,
        skip,
        summary: Some(format!("{readings} readings in {batches} batches replayed")),
    })
}

#[cfg(not(feature = "history"))]
fn rebuild(
    _data: &DataDir,
    plan: &Arc<Plan>,
    cfg: &ServeConfig,
    shards: usize,
) -> anyhow::Result<Rebuilt> {
    Ok(Rebuilt {
        engines: (0..shards)
            .map(|_| Engine::new(Arc::clone(plan), cfg.engine.clone()))
            .collect(),
        intake: IntakeState {
            sent_time: vec![None; shards],
            ..IntakeState::default()
        },
        skip: Vec::new(),
        summary: None,
    })
}

fn message_hash(topic: &str, payload: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// The intake's side: the input log, acknowledgements held until the log is durable, and
/// recognition of redeliveries.
#[derive(Debug)]
pub(crate) struct InputLog {
    pub(crate) writer: JournalWriter,
    pub(crate) cfg: HistoryConfig,
    seen: HashSet<(u16, u64)>,
    seen_order: VecDeque<(u16, u64)>,
    /// Readings since the last barrier.
    pub(crate) since_barrier: u64,
    pub(crate) last_barrier: std::time::Instant,
    pub(crate) checkpoint_no: u64,
}

impl InputLog {
    /// Open the log for appending after its valid records (a torn tail is cut), and
    /// remember the messages it holds (for redeliveries). Returns the log and the records
    /// from `from` on, to replay.
    pub(crate) fn open(
        data: &DataDir,
        cfg: &HistoryConfig,
        from: JournalPosition,
        checkpoint_no: u64,
    ) -> anyhow::Result<(InputLog, Vec<(JournalPosition, OwnedInput)>)> {
        let dir = input_dir(data);
        let segments = list_segments(&dir)?;
        let mut replay = Vec::new();
        let mut seen = HashSet::new();
        let mut seen_order = VecDeque::new();
        let mut end = JournalPosition {
            segment: from.segment,
            offset: 0,
        };
        for &s in &segments {
            let path = dir.join(segment_name(s));
            let bytes = read_segment_bytes(&path)?;
            let start = if s == from.segment { from.offset } else { 0 };
            let replaying = s >= from.segment;
            let mut at = 0;
            let seg_end = scan_records(&path, &bytes, 0, |off, r: InputRecord<'_>| {
                if let InputRecord::Message {
                    pkid,
                    topic,
                    payload,
                    ..
                } = &r
                {
                    let key = (*pkid, message_hash(topic, payload));
                    if seen.insert(key) {
                        seen_order.push_back(key);
                    }
                }
                if replaying && off > start {
                    replay.push((
                        JournalPosition {
                            segment: s,
                            offset: off,
                        },
                        OwnedInput::from(r),
                    ));
                }
                at = off;
                Ok(())
            })?;
            let _ = at;
            if s >= end.segment {
                end = JournalPosition {
                    segment: s,
                    offset: seg_end.valid_len,
                };
            }
        }
        while seen_order.len() > SEEN_WINDOW {
            if let Some(k) = seen_order.pop_front() {
                seen.remove(&k);
            }
        }
        let writer = JournalWriter::open(&dir, end.segment, end.offset)?;
        Ok((
            InputLog {
                writer,
                cfg: cfg.clone(),
                seen,
                seen_order,
                since_barrier: 0,
                last_barrier: std::time::Instant::now(),
                checkpoint_no,
            },
            replay,
        ))
    }

    /// A redelivery of a message the log already holds (journaled before a crash or a
    /// connection loss, never acknowledged).
    pub(crate) fn is_redelivery(&self, dup: bool, pkid: u16, topic: &str, payload: &[u8]) -> bool {
        dup && self.seen.contains(&(pkid, message_hash(topic, payload)))
    }

    /// Journal a message (buffered; [`InputLog::sync`] makes it durable).
    pub(crate) fn message(
        &mut self,
        seq: u64,
        received_at: Millis,
        pkid: u16,
        topic: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        self.writer.append_record(&InputRecord::Message {
            seq,
            received_at,
            pkid,
            topic: Cow::Borrowed(topic),
            payload: Cow::Borrowed(payload),
        })?;
        let key = (pkid, message_hash(topic, payload));
        if self.seen.insert(key) {
            self.seen_order.push_back(key);
            if self.seen_order.len() > SEEN_WINDOW {
                if let Some(k) = self.seen_order.pop_front() {
                    self.seen.remove(&k);
                }
            }
        }
        Ok(())
    }

    /// Journal a reload (the rules' snapshot is saved first).
    pub(crate) fn reload(&mut self, ruleset: &str) -> anyhow::Result<()> {
        self.writer.append_record(&InputRecord::Reload {
            ruleset: Cow::Borrowed(ruleset),
        })?;
        self.writer.sync()?;
        Ok(())
    }

    /// Journal a wall-clock tick.
    pub(crate) fn tick(&mut self, now: Millis) -> anyhow::Result<()> {
        self.writer.append_record(&InputRecord::Tick { now })?;
        Ok(())
    }

    /// Make everything journaled durable.
    pub(crate) fn sync(&mut self) -> anyhow::Result<()> {
        self.writer.sync()?;
        Ok(())
    }

    /// Whether a barrier is due.
    pub(crate) fn barrier_due(&self) -> bool {
        self.since_barrier >= self.cfg.checkpoint_every
            || (self.since_barrier > 0
                && self.last_barrier.elapsed().as_millis() as i64 >= self.cfg.checkpoint_interval)
    }

    /// Sync (rolling a large segment) and return the position a barrier carries; while the
    /// log is being replayed, the position after the record being replayed (`replaying`).
    pub(crate) fn barrier_position(
        &mut self,
        replaying: Option<JournalPosition>,
    ) -> anyhow::Result<JournalPosition> {
        if let Some(p) = replaying {
            self.since_barrier = 0;
            self.last_barrier = std::time::Instant::now();
            self.checkpoint_no += 1;
            return Ok(p);
        }
        if self.writer.offset() >= INPUT_SEGMENT_BYTES {
            self.writer.roll()?;
        } else {
            self.writer.sync()?;
        }
        self.since_barrier = 0;
        self.last_barrier = std::time::Instant::now();
        self.checkpoint_no += 1;
        Ok(JournalPosition {
            segment: self.writer.segment(),
            offset: self.writer.offset(),
        })
    }
}

/// Remove input-log segments before `keep_from` (both checkpoints kept start at or after it).
pub(crate) fn prune_input(data: &DataDir, keep_from: u64) -> std::io::Result<()> {
    let dir = input_dir(data);
    for s in list_segments(&dir)? {
        if s < keep_from {
            std::fs::remove_file(dir.join(segment_name(s)))?;
        }
    }
    Ok(())
}

/// An input record read back for replay.
#[derive(Debug)]
pub(crate) enum OwnedInput {
    Message {
        received_at: Millis,
        topic: String,
        payload: Vec<u8>,
    },
    Tick(Millis),
    Reload(String),
}

impl From<InputRecord<'_>> for OwnedInput {
    fn from(r: InputRecord<'_>) -> Self {
        match r {
            InputRecord::Message {
                received_at,
                topic,
                payload,
                ..
            } => OwnedInput::Message {
                received_at,
                topic: topic.into_owned(),
                payload: payload.into_owned(),
            },
            InputRecord::Tick { now } => OwnedInput::Tick(now),
            InputRecord::Reload { ruleset } => OwnedInput::Reload(ruleset.into_owned()),
        }
    }
}

/// A barrier on its way to the sink, and the snapshots of the sources it has passed.
type PendingBarrier = (Arc<Barrier>, Vec<Option<Vec<u8>>>);

/// The sink's side: the history journal and the checkpoints.
#[derive(Debug)]
pub(crate) struct SinkHistory {
    pub(crate) journal: JournalWriter,
    pub(crate) data: DataDir,
    pub(crate) cfg: HistoryConfig,
    pub(crate) fingerprint: String,
    pub(crate) rows_in_segment: u64,
    shards: usize,
    /// Barriers on their way: the barrier and the snapshots of the shards it has passed.
    pending: Vec<PendingBarrier>,
    /// Input-log and history-journal segments of the previous checkpoint (what lies before
    /// them is no longer needed).
    prev: Option<(u64, u64)>,
    /// Checkpoints written, and the size of the last one.
    pub(crate) written: u64,
    pub(crate) last_bytes: u64,
}

impl SinkHistory {
    pub(crate) fn new(
        journal: JournalWriter,
        data: DataDir,
        cfg: HistoryConfig,
        fingerprint: String,
        rows_in_segment: u64,
        shards: usize,
    ) -> Self {
        SinkHistory {
            journal,
            data,
            cfg,
            fingerprint,
            rows_in_segment,
            shards,
            pending: Vec::new(),
            prev: None,
            written: 0,
            last_bytes: 0,
        }
    }

    /// A shard passed barrier `b` with its engine's snapshot; the barrier and all the
    /// snapshots once every shard has.
    pub(crate) fn barrier(
        &mut self,
        b: Arc<Barrier>,
        shard: usize,
        snapshot: Vec<u8>,
    ) -> Option<(Arc<Barrier>, Vec<Vec<u8>>)> {
        // one slot per shard, and one for the intake (its marker carries no snapshot)
        let i = match self.pending.iter().position(|(p, _)| p.n == b.n) {
            Some(i) => i,
            None => {
                self.pending.push((b, vec![None; self.shards + 1]));
                self.pending.len() - 1
            }
        };
        if let Some(slot) = self.pending[i].1.get_mut(shard) {
            *slot = Some(snapshot);
        }
        if self.pending[i].1.iter().all(Option::is_some) {
            let (b, snaps) = self.pending.remove(i);
            let shards = snaps.into_iter().take(self.shards).flatten().collect();
            return Some((b, shards));
        }
        None
    }

    /// Write the checkpoint of a completed barrier; `outputs` are the synced lengths of the
    /// output files. Seals the history journal into Parquet when its segment is full.
    pub(crate) fn checkpoint(
        &mut self,
        b: &Barrier,
        shards: Vec<Vec<u8>>,
        outputs: Vec<u64>,
    ) -> anyhow::Result<()> {
        let sealed = if self.rows_in_segment >= self.cfg.segment_rows
            || (b.last && self.journal.offset() > crate::durable::journal::HEADER_LEN)
        {
            self.rows_in_segment = 0;
            Some(self.journal.roll()?)
        } else {
            self.journal.sync()?;
            None
        };
        let ckpt_history_segment = self.journal.segment();
        let ckpt = ServeCheckpoint {
            fingerprint: self.fingerprint.clone(),
            ruleset: b.ruleset.clone(),
            input: b.input,
            intake: b.intake.clone(),
            shards,
            history: JournalPosition {
                segment: self.journal.segment(),
                offset: self.journal.offset(),
            },
            rows_in_segment: self.rows_in_segment,
            outputs,
        };
        self.last_bytes = crate::durable::checkpoint::write_checkpoint(
            &self.data.checkpoints(),
            b.n,
            SERVE_CHECKPOINT,
            &ckpt,
            2,
        )?;
        self.written += 1;
        if let Some(s) = sealed {
            seal(&self.data, s).map_err(anyhow::Error::msg)?;
        }
        // Both kept checkpoints replay from their positions: older input and history
        // journal segments can go.
        if let Some((input, history)) = self.prev {
            prune_input(&self.data, input)?;
            prune_journal(&self.data, history).map_err(anyhow::Error::msg)?;
        }
        self.prev = Some((b.input.segment, ckpt_history_segment));
        Ok(())
    }
}
