//! Evaluator shards: each thread owns an [`Engine`] built from the same plan; the intake
//! routes readings to them over bounded channels by a shard key that keeps everything an
//! evaluation reads in one shard.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendError, Sender};
use forewarn_rules::ir::{Cell, Millis, Plan};

use super::durable::Barrier;
use super::sink::{SinkMsg, SinkTx};
use super::{lock, ShardSnapshot, Shared};
use crate::durable::Outcome;
use crate::engine::{ClockMode, Engine};
use crate::forecast::Forecast;
use crate::record::RejectReason;
use crate::record::{Output, Rejection};
use crate::source::{DeadLetter, Decoded};

/// Where a batch came from, for dead letters of readings the engine rejects.
#[derive(Debug)]
pub(crate) struct Origin {
    /// MQTT topic.
    pub(crate) topic: String,
    /// Message sequence number (the readings' tag).
    pub(crate) seq: u64,
    /// The raw payload.
    pub(crate) payload: Vec<u8>,
}

/// What the intake and the ticker send to a shard.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// This shard's readings of one message (a batch when more than one), with the newest
    /// event time the intake has seen on the whole stream.
    Readings {
        readings: Vec<Decoded>,
        stream_time: Millis,
        received: Instant,
        origin: Arc<Origin>,
        /// Arrival number of the first reading (the rest follow in order).
        first_seq: u64,
        /// Wall-clock time of receipt, UTC ms.
        received_at: Millis,
    },
    /// A forecast, to apply to the entities of its target this shard owns (`owned`, chosen
    /// by the intake with [`Router::shard_of`]).
    Forecast {
        forecast: Box<Forecast>,
        owned: Arc<HashSet<String>>,
        origin: Arc<Origin>,
    },
    /// The stream's newest event time moved on (the message had nothing for this shard).
    StreamTime(Millis),
    /// The wall clock (UTC ms); also the cue to publish snapshots.
    Tick(Millis),
    /// A checkpoint barrier: snapshot the engine and pass it on to the sink.
    Barrier(Arc<Barrier>),
    /// New rules, in force from this point of the input on; windows they lengthen are warmed
    /// from the history in `warm` (data directory, and the arrival number of the reload).
    Reload {
        plan: Arc<Plan>,
        warm: Option<(std::path::PathBuf, u64)>,
        /// The checkpoint sent just before (its history is on disk once it is written).
        after: u64,
    },
}

/// How entities map to shards.
#[derive(Debug, Clone)]
enum ShardKey {
    /// By a hash of the entity id.
    Entity,
    /// By the entity's value in `table.column` (group functions read the whole group), or a
    /// hash of the entity when it has none.
    Group { table: usize, column: usize },
    /// Everything in shard 0 (group functions over several columns).
    Single,
}

/// Splits messages into per-shard batches and sends them (blocking: backpressure).
#[derive(Debug)]
pub(crate) struct Router {
    /// After a rebuild from the history: per shard, the last message whose part the shard
    /// already has (its part of such a message is not sent again).
    skip: Vec<u64>,
    plan: Arc<Plan>,
    key: ShardKey,
    senders: Vec<Sender<ShardMsg>>,
    sent_time: Vec<Option<Millis>>,
    parts: Vec<Vec<Decoded>>,
}

fn hash_str(s: &str) -> u64 {
    // SipHash with fixed keys: the same entity lands in the same shard in every run.
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Router {
    pub(crate) fn new(plan: &Arc<Plan>, senders: Vec<Sender<ShardMsg>>) -> Router {
        let groups = plan.group_columns();
        let key = match groups.as_slice() {
            [] => ShardKey::Entity,
            [(table, column)] => ShardKey::Group {
                table: *table,
                column: *column,
            },
            _ => ShardKey::Single,
        };
        let n = senders.len();
        Router {
            skip: Vec::new(),
            plan: Arc::clone(plan),
            key,
            senders,
            sent_time: vec![None; n],
            parts: (0..n).map(|_| Vec::new()).collect(),
        }
    }

    /// The shard of an entity.
    pub(crate) fn shard_of(&self, entity: &str) -> usize {
        let n = self.senders.len() as u64;
        let h = match &self.key {
            ShardKey::Single => return 0,
            ShardKey::Entity => hash_str(entity),
            ShardKey::Group { table, column } => {
                match self.plan.tables[*table].cell(entity, *column) {
                    Some(Cell::Text(s)) => hash_str(s),
                    Some(Cell::Num(x)) => hash_str(&x.to_string()),
                    None => hash_str(entity),
                }
            }
        };
        (h % n) as usize
    }

    /// Route one message's readings; every shard learns the stream's newest event time.
    /// `first_seq` is the arrival number of the message's first reading: each shard's part
    /// gets consecutive numbers from it, parts in shard order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route(
        &mut self,
        readings: Vec<Decoded>,
        origin: Arc<Origin>,
        received: Instant,
        received_at: Millis,
        first_seq: u64,
        stream_time: Option<Millis>,
    ) -> Result<(), SendError<ShardMsg>> {
        let done = |s: usize| self.skip.get(s).is_some_and(|&k| origin.seq <= k);
        if self.senders.len() == 1 {
            if !readings.is_empty() && !done(0) {
                self.senders[0].send(ShardMsg::Readings {
                    readings,
                    stream_time: stream_time.unwrap_or(Millis::MIN),
                    received,
                    origin,
                    first_seq,
                    received_at,
                })?;
                self.sent_time[0] = stream_time;
            }
            return Ok(());
        }
        for d in readings {
            let s = self.shard_of(&d.entity);
            self.parts[s].push(d);
        }
        let mut next_seq = first_seq;
        for s in 0..self.senders.len() {
            let part = std::mem::take(&mut self.parts[s]);
            if !part.is_empty() && self.skip.get(s).is_some_and(|&k| origin.seq <= k) {
                // rebuilt from the history already: numbered, not sent again
                next_seq += part.len() as u64;
            } else if !part.is_empty() {
                let n = part.len() as u64;
                self.senders[s].send(ShardMsg::Readings {
                    readings: part,
                    stream_time: stream_time.unwrap_or(Millis::MIN),
                    received,
                    origin: Arc::clone(&origin),
                    first_seq: next_seq,
                    received_at,
                })?;
                next_seq += n;
                self.sent_time[s] = stream_time;
            } else if let Some(t) = stream_time {
                if self.sent_time[s].is_none_or(|p| p < t) {
                    self.senders[s].send(ShardMsg::StreamTime(t))?;
                    self.sent_time[s] = Some(t);
                }
            }
        }
        Ok(())
    }

    /// The shards owning some of `entities` (a forecast's targets), each with the entities it
    /// owns, in shard order.
    pub(crate) fn owners(&self, entities: &[String]) -> Vec<(usize, HashSet<String>)> {
        let mut by_shard: Vec<HashSet<String>> = vec![HashSet::new(); self.senders.len()];
        for e in entities {
            by_shard[self.shard_of(e)].insert(e.clone());
        }
        by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, owned)| !owned.is_empty())
            .collect()
    }

    /// Route a forecast whose targets are `entities` (the entity, or the area's entities) to
    /// every shard owning some of them; each applies it to its own. Returns the number of
    /// shards it went to.
    pub(crate) fn route_forecast(
        &self,
        forecast: Forecast,
        entities: &[String],
        origin: Arc<Origin>,
    ) -> Result<usize, SendError<ShardMsg>> {
        let owners = self.owners(entities);
        let n = owners.len();
        for (shard, owned) in owners {
            self.senders[shard].send(ShardMsg::Forecast {
                forecast: Box::new(forecast.clone()),
                owned: Arc::new(owned),
                origin: Arc::clone(&origin),
            })?;
        }
        Ok(n)
    }

    /// Send the same message to every shard (ticks, barriers).
    pub(crate) fn broadcast(&self, msg: impl Fn() -> ShardMsg) -> Result<(), SendError<ShardMsg>> {
        for tx in &self.senders {
            tx.send(msg())?;
        }
        Ok(())
    }

    /// After a rebuild from the history: per shard, the last message it already has.
    pub(crate) fn set_skip(&mut self, skip: Vec<u64>) {
        self.skip = skip;
    }

    /// Whether message `seq` is already in the history (rebuilt) for some shard.
    pub(crate) fn rebuilt(&self, seq: u64) -> bool {
        self.skip.iter().any(|&k| seq <= k)
    }

    /// The number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Per shard, the stream time last sent (checkpointed with the intake).
    pub(crate) fn sent_time(&self) -> &[Option<Millis>] {
        &self.sent_time
    }

    /// Restore [`Router::sent_time`] from a checkpoint.
    pub(crate) fn set_sent_time(&mut self, t: &[Option<Millis>]) {
        if t.len() == self.sent_time.len() {
            self.sent_time.copy_from_slice(t);
        }
    }
}

/// One evaluator thread.
pub(crate) struct Shard {
    index: usize,
    engine: Engine,
    sink: SinkTx,
    shared: Arc<Shared>,
    out: Vec<Output>,
    /// Send each batch's readings and outcomes to the sink (for the history).
    journal: bool,
}

impl Shard {
    pub(crate) fn new(index: usize, engine: Engine, sink: SinkTx, shared: Arc<Shared>) -> Shard {
        Shard {
            index,
            engine,
            sink,
            shared,
            out: Vec::new(),
            journal: false,
        }
    }

    /// Send readings and outcomes to the sink for the history journal.
    pub(crate) fn with_journal(mut self, on: bool) -> Shard {
        self.journal = on;
        self
    }

    /// Evaluate until every sender is gone and the queue is drained.
    /// `drain`: set once nothing routes any more readings that matter (shutdown): the shard
    /// then stops as soon as its queue is empty, even if a source thread still holds a sender.
    pub(crate) fn run(mut self, rx: Receiver<ShardMsg>, drain: Arc<AtomicBool>) {
        let wall = self.engine_clock() == ClockMode::Wall;
        let mut last_snapshot = Instant::now();
        loop {
            let msg = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    if drain.load(Ordering::SeqCst) && rx.is_empty() {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut context: Option<(Instant, Arc<Origin>)> = None;
            let mut tick = false;
            let mut batch = None;
            match msg {
                ShardMsg::Readings {
                    readings,
                    stream_time,
                    received,
                    origin,
                    first_seq,
                    received_at,
                } => {
                    let rs: Vec<_> = readings.iter().map(|d| d.reading(origin.seq)).collect();
                    let outcomes: Vec<Outcome> = match rs.as_slice() {
                        [one] => vec![self.engine.push(one, &mut self.out).into()],
                        many => self
                            .engine
                            .push_batch(many, &mut self.out)
                            .into_iter()
                            .map(Outcome::from)
                            .collect(),
                    };
                    drop(rs);
                    if stream_time != Millis::MIN {
                        self.engine.observe_stream_time(stream_time, &mut self.out);
                    }
                    if self.journal {
                        batch = Some(SinkMsg::Readings {
                            first_seq,
                            received_at,
                            origin: Arc::clone(&origin),
                            readings,
                            outcomes,
                            plan: self.engine.plan_arc(),
                        });
                    }
                    context = Some((received, origin));
                }
                ShardMsg::Reload { plan, warm, after } => match self.engine.reload_warm(
                    plan,
                    &mut |spans| {
                        // the history up to the reload is on disk once the checkpoint sent
                        // just before it is written
                        let end = Instant::now() + Duration::from_secs(60);
                        while self.shared.last_checkpoint.load(Ordering::SeqCst) < after
                            && Instant::now() < end
                        {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        warm_from(warm.as_ref(), spans)
                    },
                    &mut self.out,
                ) {
                    Ok(r) => eprintln!(
                        "forewarn serve: shard {}: rules reloaded: rules kept {:?}, added {:?}, removed {:?}, relevelled {:?}; feeds added {:?}, dropped {:?}, emptied {:?}; {} warnings cleared; lengthened windows of [{}] warmed with {} samples from the history",
                        self.index,
                        r.rules_kept,
                        r.rules_added,
                        r.rules_removed,
                        r.rules_relevelled,
                        r.feeds_added,
                        r.feeds_dropped,
                        r.feeds_emptied,
                        r.warnings_cleared.len(),
                        r.needs_warmup
                            .iter()
                            .map(|w| w.feed.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.warmed
                    ),
                    Err(e) => eprintln!("forewarn serve: shard {}: reload refused: {e}", self.index),
                },
                ShardMsg::Barrier(b) => {
                    let snapshot = self.engine.snapshot();
                    let msg = SinkMsg::Barrier {
                        barrier: b,
                        shard: self.index,
                        snapshot,
                    };
                    if self.sink.send(msg).is_err() {
                        break;
                    }
                }
                ShardMsg::Forecast {
                    forecast,
                    owned,
                    origin,
                } => {
                    let target = forecast.target.clone();
                    let feed = forecast.feed.clone();
                    let applied = self.engine.push_forecast_for(
                        *forecast,
                        &|entity| owned.contains(entity),
                        &mut self.out,
                    );
                    if let Ok(n) = applied {
                        self.shared
                            .forecast_targets
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if let Err(e) = applied {
                        // checked by the intake; the rules may have changed since (a reload)
                        let letter = forecast_letter(&origin, &e, &target, &feed);
                        self.shared.forecasts_rejected[letter.reason.index()]
                            .fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "forewarn serve: shard {}: forecast on {:?} rejected: {e}",
                            self.index, origin.topic
                        );
                        if self.sink.send(SinkMsg::Dead(letter)).is_err() {
                            break;
                        }
                    }
                }
                ShardMsg::StreamTime(t) => self.engine.observe_stream_time(t, &mut self.out),
                ShardMsg::Tick(now) => {
                    if wall {
                        self.engine.set_wall_clock(now, &mut self.out);
                    }
                    tick = true;
                }
            }
            if self.forward(context.as_ref()).is_err() {
                break;
            }
            if let Some(b) = batch {
                if self.sink.send(b).is_err() {
                    break;
                }
            }
            if tick || last_snapshot.elapsed() >= Duration::from_secs(1) {
                self.snapshot();
                last_snapshot = Instant::now();
            }
        }
        self.snapshot();
    }

    fn engine_clock(&self) -> ClockMode {
        self.shared.clock
    }

    /// Hand the engine's output to the sink (blocking when the sink is behind).
    fn forward(&mut self, context: Option<&(Instant, Arc<Origin>)>) -> Result<(), ()> {
        for o in self.out.drain(..) {
            let msg = match o {
                Output::Warning(w) => {
                    if let Some((received, _)) = context {
                        let us = received.elapsed().as_micros() as u64;
                        let _ = lock(&self.shared.latency).record(us.max(1));
                    }
                    SinkMsg::Warning(w)
                }
                Output::Status(s) => SinkMsg::Status(s),
                Output::Rejected(r) => SinkMsg::Dead(rejection_letter(r, context.map(|c| &c.1))),
            };
            self.sink.send(msg).map_err(|_| ())?;
        }
        Ok(())
    }

    fn snapshot(&self) {
        let snap = ShardSnapshot {
            counters: self.engine.counters().clone(),
            active: self.engine.active_warnings(),
            status: self.engine.data_status(),
            watermark: self.engine.watermark(),
        };
        lock(&self.shared.snapshots)[self.index] = snap;
    }
}

/// Samples of the history for the spans a reload's new windows miss (nothing without a
/// history, or when it cannot be read: then the windows fill as data arrives).
fn warm_from(
    warm: Option<&(std::path::PathBuf, u64)>,
    spans: &[crate::engine::Warmup],
) -> Vec<crate::engine::WarmSample> {
    #[cfg(feature = "history")]
    if let Some((dir, before)) = warm {
        match crate::history::warm_samples(dir, spans, *before) {
            Ok(v) => return v,
            Err(e) => eprintln!("forewarn serve: cannot warm windows from the history: {e}"),
        }
    }
    let _ = (warm, spans);
    Vec::new()
}

/// The dead-letter reason of a forecast the engine (or the intake) refuses.
pub(crate) fn forecast_reason(e: &crate::forecast::ForecastError) -> RejectReason {
    use crate::forecast::{ForecastError as E, Problem as P};
    match e {
        E::FeedMismatch { .. } => RejectReason::UnknownFeed,
        E::UnknownArea(_) | E::UnknownEntity(_) => RejectReason::UnknownEntity,
        E::Invalid {
            problem: P::Missing,
            ..
        } => RejectReason::MissingField,
        E::Invalid {
            problem: P::Time(_),
            ..
        } => RejectReason::BadTimestamp,
        E::Invalid {
            problem: P::NotFinite { .. },
            ..
        } => RejectReason::NotFinite,
        _ => RejectReason::Malformed,
    }
}

/// A forecast message refused, as a dead letter: the topic as `source`, the message number
/// as `line`, the target entity (an area is named in `detail`) and feed, the reason and the
/// raw payload.
pub(crate) fn forecast_letter(
    origin: &Origin,
    e: &crate::forecast::ForecastError,
    target: &crate::forecast::ForecastTarget,
    feed: &str,
) -> DeadLetter {
    let entity = match target {
        crate::forecast::ForecastTarget::Entity(e) => Some(e.clone()),
        crate::forecast::ForecastTarget::Area(_) => None,
    };
    DeadLetter {
        source: origin.topic.clone(),
        line: origin.seq,
        reason: forecast_reason(e),
        detail: format!("forecast for {target}: {e}"),
        entity,
        feed: Some(feed.to_string()),
        ts: None,
        value: None,
        raw: origin.payload.clone(),
    }
}

/// A reading the engine rejected, as a dead letter with its message's topic and payload.
fn rejection_letter(r: Rejection, origin: Option<&Arc<Origin>>) -> DeadLetter {
    let here = origin.filter(|o| o.seq == r.tag);
    let (source, raw) = here.map_or(("", &[][..]), |o| (o.topic.as_str(), &o.payload[..]));
    DeadLetter::from_rejection(r, source, raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    #[test]
    fn a_group_stays_in_one_shard() {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/harvey.rules");
        let plan = Arc::new(
            crate::loader::load_rules(&rules, HashMap::new())
                .expect("harvey rules")
                .plan,
        );
        let senders = (0..3).map(|_| crossbeam_channel::bounded(1).0).collect();
        let router = Router::new(&plan, senders);
        assert!(matches!(router.key, ShardKey::Group { .. }));
        let table = &plan.tables[0];
        let area = table.column("area").unwrap();
        let mut shard_of_area: HashMap<String, usize> = HashMap::new();
        let mut used = [false; 3];
        for site in table.rows.keys() {
            let Some(Cell::Text(a)) = table.cell(site, area) else {
                panic!("{site} has no area")
            };
            let s = router.shard_of(site);
            used[s] = true;
            assert_eq!(*shard_of_area.entry(a.clone()).or_insert(s), s, "area {a}");
        }
        assert!(
            used.iter().filter(|u| **u).count() >= 2,
            "groups spread over shards"
        );
        // an entity in no table goes by its own id
        assert!(router.shard_of("not-a-gauge") < 3);
    }

    #[test]
    fn an_area_forecast_goes_to_each_owner_of_its_entities() {
        let src = "feed rain: depth mm\nrule wet on rain:\n  warn when sum(rain, 1h) >= 10 mm\n";
        struct NoTables;
        impl forewarn_rules::TableLoader for NoTables {
            fn load(&self, p: &str) -> Result<forewarn_rules::TableData, String> {
                Err(p.to_string())
            }
        }
        let plan = Arc::new(forewarn_rules::compile(src, "t", &NoTables).unwrap().plan);
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| crossbeam_channel::unbounded()).unzip();
        let router = Router::new(&plan, txs);
        let entities: Vec<String> = (0..12).map(|i| format!("G{i}")).collect();
        let forecast = Forecast {
            feed: "qpf".into(),
            target: crate::forecast::ForecastTarget::Area("A".into()),
            issued: 0,
            received: None,
            intervals: Vec::new(),
        };
        let origin = Arc::new(Origin {
            topic: "f".into(),
            seq: 1,
            payload: Vec::new(),
        });
        let sent = router
            .route_forecast(forecast.clone(), &entities, origin)
            .unwrap();
        // every entity exactly once, in the shard that owns it; only owners get a message
        let mut seen = Vec::new();
        let mut owners = 0;
        for (s, rx) in rxs.iter().enumerate() {
            for msg in rx.try_iter() {
                let ShardMsg::Forecast {
                    forecast: f, owned, ..
                } = msg
                else {
                    panic!("a forecast")
                };
                assert_eq!(*f, forecast);
                owners += 1;
                for e in owned.iter() {
                    assert_eq!(router.shard_of(e), s, "{e}");
                    seen.push(e.clone());
                }
            }
        }
        assert_eq!(sent, owners);
        assert!(owners >= 2, "12 entities hashed over 3 shards use several");
        seen.sort();
        let mut want = entities.clone();
        want.sort();
        assert_eq!(seen, want);
    }
}
