//! `forewarn serve`: the warning daemon (feature `daemon`).
//!
//! ```text
//!  broker ──MQTT (QoS 1, persistent session)──▶ intake thread ── decode, route by entity/group
//!                                                   │ bounded crossbeam channels (one per shard)
//!                     ticker (wall clock) ────────▶ ▼
//!                                        shard threads: one Engine each (same Plan)
//!                                                   │ bounded channel
//!                                                   ▼
//!                           sink thread: MQTT publish · JSON Lines · webhook queues (own threads)
//!  axum on its own small tokio runtime: /healthz · /metrics · /warnings (snapshots, 1 s)
//! ```
//!
//! Evaluation never runs on the async runtime (style §19): the intake, the shards and the
//! sink are plain threads; every queue between them is bounded, so a slow sink or a burst
//! slows the intake down (and the broker keeps the QoS 1 messages) instead of growing memory.
//! Webhooks are the exception by design: their queues drop (and count) rather than block.

pub mod config;
mod durable;
mod files;
mod http;
mod intake;
mod shard;
mod sink;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use forewarn_rules::ir::{Millis, Plan};

use crate::engine::{ActiveWarning, ClockMode, Counters, Engine};
use crate::record::{DataStatus, RejectReason};
use crate::time::Zone;

pub use config::ServeConfig;

/// What one shard last published for `/warnings` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardSnapshot {
    pub(crate) counters: Counters,
    pub(crate) active: Vec<ActiveWarning>,
    pub(crate) status: Vec<(String, String, DataStatus, Option<Millis>)>,
    pub(crate) watermark: Option<Millis>,
}

/// Returns a queue's current length.
pub(crate) type QueueProbe = Box<dyn Fn() -> usize + Send>;

/// State shared by the threads and read by the HTTP endpoints.
pub(crate) struct Shared {
    /// The rules in force (replaced by a reload).
    plan: std::sync::RwLock<Arc<Plan>>,
    /// Reload requests, served by the intake thread (which orders them among the input).
    pub(crate) reload_tx: crossbeam_channel::Sender<ReloadRequest>,
    pub(crate) reload_rx: crossbeam_channel::Receiver<ReloadRequest>,
    /// Reloads done and refused.
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
    pub(crate) zone: Zone,
    pub(crate) clock: ClockMode,
    pub(crate) started: Instant,
    /// MQTT messages received.
    pub(crate) messages: AtomicU64,
    /// Payload bytes received.
    pub(crate) bytes: AtomicU64,
    /// Rejections before the engine (decoding, size, topic), by [`RejectReason::index`].
    pub(crate) intake_rejected: Vec<AtomicU64>,
    /// Forecasts decoded, checked against the rules and handed to the shards.
    pub(crate) forecasts: AtomicU64,
    /// Entities the shards applied forecasts to (an area forecast counts each entity once,
    /// in the shard owning it).
    pub(crate) forecast_targets: AtomicU64,
    /// Forecasts rejected (dead-lettered), by [`RejectReason::index`].
    pub(crate) forecasts_rejected: Vec<AtomicU64>,
    pub(crate) intake_connected: AtomicBool,
    pub(crate) intake_connects: AtomicU64,
    pub(crate) intake_errors: AtomicU64,
    pub(crate) output_connected: AtomicBool,
    pub(crate) output_connects: AtomicU64,
    pub(crate) output_errors: AtomicU64,
    /// Acks that could not be queued (the broker redelivers those messages).
    pub(crate) ack_failures: AtomicU64,
    pub(crate) snapshots: Mutex<Vec<ShardSnapshot>>,
    /// Reading → warning latency in microseconds (message receipt to hand-over to the sink).
    pub(crate) latency: Mutex<hdrhistogram::Histogram<u64>>,
    pub(crate) warnings_out: AtomicU64,
    pub(crate) status_out: AtomicU64,
    pub(crate) dead_out: AtomicU64,
    pub(crate) mqtt_published: AtomicU64,
    pub(crate) webhook_delivered: AtomicU64,
    pub(crate) webhook_failed: AtomicU64,
    pub(crate) webhook_dropped: AtomicU64,
    pub(crate) webhook_retries: AtomicU64,
    /// CAP messages made and delivered (`[output.cap]`), and those that could not be made
    /// or written.
    pub(crate) cap_messages: AtomicU64,
    pub(crate) cap_failures: AtomicU64,
    /// The `[cap]` settings when `[output.cap]` is on: a reload to rules with a published
    /// level that has no CAP mapping is refused.
    pub(crate) cap: Option<crate::config::CapSettings>,
    /// Queue depth probes: name and a function returning the current length.
    pub(crate) queues: Mutex<Vec<(String, QueueProbe)>>,
    /// Readings further ahead of the system clock than this do not move the stream time the
    /// intake forwards to the shards (they will be rejected `future_dated`).
    pub(crate) future_skew: Millis,
    /// Whether an intake / output MQTT connection is configured (for `/healthz`).
    pub(crate) intake_configured: bool,
    pub(crate) output_configured: bool,
    /// Milliseconds since `started` when the connection was last lost (or never made);
    /// `u64::MAX` while connected.
    pub(crate) intake_down_since: AtomicU64,
    pub(crate) output_down_since: AtomicU64,
    /// The output connection (re)connected: the sink republishes the retained levels and
    /// data statuses (a broker without persistence forgets them on restart).
    pub(crate) republish: AtomicBool,
    /// Publishes refused because their topic is not a valid MQTT topic name.
    pub(crate) bad_topics: AtomicU64,
    /// Checkpoints written, and the size of the last one (`[history]`).
    pub(crate) checkpoints: AtomicU64,
    /// Number of the last checkpoint written.
    pub(crate) last_checkpoint: AtomicU64,
    pub(crate) checkpoint_bytes: AtomicU64,
    /// Redeliveries of journaled messages acknowledged without evaluating them again.
    pub(crate) redeliveries: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// A request to reload the rules; the outcome goes to `reply` (if any): a summary, or why
/// the new rules were refused (the old ones stay in force).
#[derive(Debug)]
pub(crate) struct ReloadRequest {
    pub(crate) reply: Option<crossbeam_channel::Sender<Result<String, String>>>,
}

impl Shared {
    /// The rules in force.
    pub(crate) fn plan(&self) -> Arc<Plan> {
        Arc::clone(&self.plan.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put new rules in force (for decoding and reporting; the shards get them in order).
    pub(crate) fn set_plan(&self, plan: Arc<Plan>) {
        *self.plan.write().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    fn new(plan: Arc<Plan>, cfg: &ServeConfig, shards: usize) -> Shared {
        let (zone, clock) = (cfg.display_zone, cfg.engine.clock);
        let (reload_tx, reload_rx) = crossbeam_channel::bounded(16);
        Shared {
            plan: std::sync::RwLock::new(plan),
            reload_tx,
            reload_rx,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            zone,
            clock,
            started: Instant::now(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            intake_rejected: RejectReason::ALL
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            forecasts: AtomicU64::new(0),
            forecast_targets: AtomicU64::new(0),
            forecasts_rejected: RejectReason::ALL
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            intake_connected: AtomicBool::new(false),
            intake_connects: AtomicU64::new(0),
            intake_errors: AtomicU64::new(0),
            output_connected: AtomicBool::new(false),
            output_connects: AtomicU64::new(0),
            output_errors: AtomicU64::new(0),
            ack_failures: AtomicU64::new(0),
            snapshots: Mutex::new(vec![ShardSnapshot::default(); shards]),
            latency: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("valid histogram bounds"),
            ),
            warnings_out: AtomicU64::new(0),
            status_out: AtomicU64::new(0),
            dead_out: AtomicU64::new(0),
            mqtt_published: AtomicU64::new(0),
            webhook_delivered: AtomicU64::new(0),
            webhook_failed: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
            webhook_retries: AtomicU64::new(0),
            cap_messages: AtomicU64::new(0),
            cap_failures: AtomicU64::new(0),
            cap: cfg.output.cap.as_ref().and(cfg.cap.clone()),
            queues: Mutex::new(Vec::new()),
            future_skew: cfg
                .engine
                .future_skew
                .unwrap_or(crate::engine::DEFAULT_FUTURE_SKEW),
            intake_configured: cfg.mqtt.is_some(),
            output_configured: cfg.mqtt.is_some() && cfg.output.mqtt_prefix.is_some(),
            intake_down_since: AtomicU64::new(0),
            output_down_since: AtomicU64::new(0),
            republish: AtomicBool::new(false),
            bad_topics: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            last_checkpoint: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
        }
    }

    /// Record a connection state change (`down_since` of the intake or output connection).
    pub(crate) fn mark(&self, down_since: &AtomicU64, connected: bool) {
        let v = if connected {
            u64::MAX
        } else {
            self.started.elapsed().as_millis() as u64
        };
        if connected || down_since.load(Ordering::Relaxed) == u64::MAX {
            down_since.store(v, Ordering::Relaxed);
        }
    }

    /// The configured MQTT connections that have been down for longer than `grace`.
    pub(crate) fn degraded(&self, grace: Duration) -> Vec<&'static str> {
        let now = self.started.elapsed().as_millis() as u64;
        let down = |a: &AtomicU64| {
            let since = a.load(Ordering::Relaxed);
            since != u64::MAX && now.saturating_sub(since) > grace.as_millis() as u64
        };
        let mut v = Vec::new();
        if self.intake_configured && down(&self.intake_down_since) {
            v.push("mqtt intake disconnected");
        }
        if self.output_configured && down(&self.output_down_since) {
            v.push("mqtt output disconnected");
        }
        v
    }

    /// The newest event time of a message that the shards may be told about: times further
    /// ahead of the system clock than the future skew are left out (those readings are
    /// rejected `future_dated`; one bad clock must not move every shard's watermark).
    pub(crate) fn plausible_newest(&self, ts: impl Iterator<Item = Millis>) -> Option<Millis> {
        let limit = now_ms().saturating_add(self.future_skew);
        ts.filter(|&t| t <= limit).max()
    }

    pub(crate) fn count_intake_rejection(&self, reason: RejectReason) {
        self.intake_rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Engine counters summed over the shards.
    pub(crate) fn counters(&self) -> Counters {
        let snaps = lock(&self.snapshots);
        let mut total = Counters::default();
        for s in snaps.iter() {
            let c = &s.counters;
            total.read += c.read;
            total.accepted += c.accepted;
            total.late += c.late;
            total.duplicate += c.duplicate;
            total.replaced += c.replaced;
            total.ignored += c.ignored;
            total.added += c.added;
            total.coerced += c.coerced;
            total.evaluations += c.evaluations;
            for (t, x) in total.rejected.iter_mut().zip(c.rejected.iter()) {
                *t += x;
            }
            if total.transitions.len() < c.transitions.len() {
                total.transitions.resize(c.transitions.len(), [0; 4]);
                total.entered.resize(c.entered.len(), Vec::new());
            }
            for (t, x) in total.transitions.iter_mut().zip(&c.transitions) {
                for k in 0..4 {
                    t[k] += x[k];
                }
            }
            for (t, x) in total.entered.iter_mut().zip(&c.entered) {
                if t.len() < x.len() {
                    t.resize(x.len(), 0);
                }
                for (a, b) in t.iter_mut().zip(x) {
                    *a += b;
                }
            }
        }
        total
    }
}

/// Lock a mutex, recovering the data if a thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wall clock in UTC ms.
pub(crate) fn now_ms() -> Millis {
    crate::engine::system_now()
}

/// Sleep up to `d`, waking early when `stop` is set. Returns whether to stop.
pub(crate) fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
    true
}

/// A running daemon. [`Daemon::shutdown`] stops it gracefully; [`serve`] runs one until
/// SIGINT or SIGTERM.
#[derive(Debug)]
pub struct Daemon {
    /// The data directory's lock (`[history]`), held while the daemon runs.
    _lock: Option<std::fs::File>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    intake: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    shards: Vec<JoinHandle<()>>,
    drain_shards: Arc<AtomicBool>,
    sink: Option<JoinHandle<anyhow::Result<()>>>,
    drain_sink: Arc<AtomicBool>,
    http: Option<http::HttpServer>,
}

impl Daemon {
    /// Load the rules, connect to the broker, start every thread and the HTTP endpoints.
    pub fn start(cfg: ServeConfig) -> anyhow::Result<Daemon> {
        install_crypto_provider();
        let (disk_plan, snapshot) = match crate::loader::load_rules_snapshot(&cfg.rules) {
            Ok((compiled, snapshot)) => (Arc::new(compiled.plan), Some(snapshot)),
            Err(e) => {
                // With a checkpoint whose rules are kept, a broken rule file does not stop
                // the daemon: it runs under those rules (as a refused reload would leave it).
                let kept = cfg.history.as_ref().and_then(|h| {
                    durable::checkpoint_rules(&crate::durable::store::DataDir::new(&h.dir))
                });
                let text = render_load_error(e);
                match kept {
                    Some(plan) => {
                        eprintln!(
                            "forewarn serve: the rule file does not load; running under the rules of the last checkpoint (rule set {}) until it is fixed and reloaded:\n{text}",
                            plan.ruleset_hash
                        );
                        (plan, None)
                    }
                    None => anyhow::bail!("{text}"),
                }
            }
        };
        let shards_n = cfg.shards.max(1);
        check_feeds(&cfg, &disk_plan)?;
        check_cap(&cfg, &disk_plan)?;

        // `[history]`: the state to start from (checkpoint, or fresh), the history journal,
        // the output files' lengths and the input log to replay. The engines are restored
        // under the rules of their checkpoint; rules changed on disk meanwhile are reloaded
        // after the replay.
        let mut dir_lock = None;
        let recovered = match &cfg.history {
            Some(h) => {
                let data = crate::durable::store::DataDir::new(&h.dir);
                dir_lock = Some(data.lock().map_err(anyhow::Error::msg)?);
                if let Some(snapshot) = &snapshot {
                    durable::save_rules(&data, snapshot, &disk_plan.ruleset_hash)?;
                }
                let r = durable::recover(h, &disk_plan, &cfg)?;
                eprintln!("forewarn serve: {}", r.start);
                Some((h.clone(), data, r))
            }
            None => None,
        };
        let plan = recovered
            .as_ref()
            .map_or_else(|| Arc::clone(&disk_plan), |(_, _, r)| Arc::clone(&r.plan));
        if plan.ruleset_hash != disk_plan.ruleset_hash {
            check_cap(&cfg, &plan)?;
        }
        let shared = Arc::new(Shared::new(Arc::clone(&plan), &cfg, shards_n));
        let stop = Arc::new(AtomicBool::new(false));

        // sink (and the output MQTT connection, webhooks)
        let (sink_tx, sink_rx) = crossbeam_channel::bounded::<(usize, sink::SinkMsg)>(cfg.queue);
        let sink_tx = sink::SinkTx::new(sink_tx);
        {
            let rx = sink_rx.clone();
            lock(&shared.queues).push(("sink".into(), Box::new(move || rx.len())));
        }
        let (mut engines, sink_history, cut, durable_intake) = match recovered {
            Some((h, data, r)) => {
                let (log, replay) = durable::InputLog::open(&data, &h, r.input, r.checkpoint_no)?;
                let sink_history = durable::SinkHistory::new(
                    r.history,
                    data.clone(),
                    h,
                    durable::fingerprint(&cfg),
                    r.rows_in_segment,
                    shards_n,
                );
                let then_reload =
                    (r.plan.ruleset_hash != disk_plan.ruleset_hash).then(|| Arc::clone(&disk_plan));
                let intake = intake::DurableIntake {
                    log,
                    replay,
                    state: r.intake,
                    data,
                    then_reload,
                    replay_from: r.input,
                    skip: r.skip,
                };
                (r.engines, Some(sink_history), r.outputs, Some(intake))
            }
            None => (Vec::new(), None, None, None),
        };
        let durable_mode = sink_history.is_some();
        // the warnings open in the restored engines: their episodes go on in the CAP output
        let active: Vec<_> = engines.iter().flat_map(Engine::active_warnings).collect();
        let sink = sink::Sink::open(&cfg, Arc::clone(&shared), sink_history, cut, &plan, &active)?;
        let drain_sink = Arc::new(AtomicBool::new(false));
        let drain = Arc::clone(&drain_sink);
        let sink_handle = std::thread::Builder::new()
            .name("fw-sink".into())
            .spawn(move || sink.run(sink_rx, drain))
            .context("spawn sink thread")?;

        // shards
        let mut shard_tx = Vec::with_capacity(shards_n);
        let mut shards = Vec::with_capacity(shards_n);
        let drain_shards = Arc::new(AtomicBool::new(false));
        for i in 0..shards_n {
            let (tx, rx) = crossbeam_channel::bounded::<shard::ShardMsg>(cfg.queue);
            {
                let rx = rx.clone();
                lock(&shared.queues).push((format!("shard{i}"), Box::new(move || rx.len())));
            }
            let engine = if engines.is_empty() {
                Engine::new(Arc::clone(&plan), cfg.engine.clone())
            } else {
                engines.remove(0)
            };
            let worker = shard::Shard::new(i, engine, sink_tx.source(i), Arc::clone(&shared))
                .with_journal(durable_mode);
            let drain = Arc::clone(&drain_shards);
            shards.push(
                std::thread::Builder::new()
                    .name(format!("fw-shard{i}"))
                    .spawn(move || worker.run(rx, drain))
                    .context("spawn shard thread")?,
            );
            shard_tx.push(tx);
        }
        let router = shard::Router::new(&plan, shard_tx.clone());

        // file and stdin sources: replayed into the shards, each in its own thread (not
        // joined on shutdown: a read from stdin cannot be interrupted)
        for src in &cfg.sources {
            files::start(
                src.clone(),
                Arc::clone(&plan),
                shard_tx.clone(),
                sink_tx.source(shards_n + 1),
                Arc::clone(&shared),
                Arc::clone(&stop),
            )?;
        }

        // wall-clock ticker: time-driven evaluation without new data, and snapshots
        // With `[history]` the intake sends the ticks (and journals them): one sequence of
        // inputs, replayable in order.
        let ticker = (!durable_mode).then(|| {
            let stop = Arc::clone(&stop);
            let txs = shard_tx;
            std::thread::Builder::new()
                .name("fw-ticker".into())
                .spawn(move || loop {
                    // the first tick goes out before the intake starts: clock checks
                    // (future-skew, max-age) apply from the first reading
                    let now = now_ms();
                    for tx in &txs {
                        // a full queue means the shard is busy: the next tick will do
                        let _ = tx.try_send(shard::ShardMsg::Tick(now));
                    }
                    if sleep_unless(&stop, Duration::from_millis(250)) {
                        break;
                    }
                })
                .context("spawn ticker thread")
        });
        let ticker = ticker.transpose()?;

        // intake
        let intake = match &cfg.mqtt {
            Some(m) => Some(intake::start(
                m,
                &cfg,
                router,
                sink_tx.source(shards_n),
                Arc::clone(&shared),
                Arc::clone(&stop),
                durable_intake,
            )?),
            None => None,
        };
        drop(sink_tx);

        let http = match cfg.http {
            Some(addr) => Some(http::HttpServer::start(addr, Arc::clone(&shared))?),
            None => None,
        };
        Ok(Daemon {
            _lock: dir_lock,
            shared,
            stop,
            intake,
            ticker,
            shards,
            drain_shards,
            sink: Some(sink_handle),
            drain_sink,
            http,
        })
    }

    /// The address the HTTP endpoints listen on, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// Readings read by the engines plus those rejected before them (a cheap progress probe).
    pub fn readings_in(&self) -> u64 {
        let intake: u64 = self
            .shared
            .intake_rejected
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        self.shared.counters().read + intake
    }

    /// Graceful shutdown: stop the intake (the broker keeps the session and queues what comes
    /// next), let the shards drain their queues, flush the sinks (files, MQTT, webhooks),
    /// publish `offline`, stop HTTP. `Engine::finish` is not called: a daemon that stops has
    /// not seen the end of its input.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.intake.take() {
            let _ = h.join();
        }
        if let Some(h) = self.ticker.take() {
            let _ = h.join();
        }
        self.drain_shards.store(true, Ordering::SeqCst);
        for h in self.shards.drain(..) {
            let _ = h.join();
        }
        self.drain_sink.store(true, Ordering::SeqCst);
        let result = match self.sink.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("sink thread panicked"))),
            None => Ok(()),
        };
        if let Some(h) = self.http.take() {
            h.stop();
        }
        result
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Every subscription `feed` must be declared in the rules, and every forecast subscription
/// `feed` be a forecast feed (all problems together).
fn check_feeds(cfg: &ServeConfig, plan: &Plan) -> anyhow::Result<()> {
    let names: Vec<&str> = plan.feeds.iter().map(|f| f.name.as_str()).collect();
    let forecast_names: Vec<&str> = plan
        .feeds
        .iter()
        .filter(|f| f.forecast)
        .map(|f| f.name.as_str())
        .collect();
    let forecast_problems = cfg.forecast_subscriptions.iter().filter_map(|s| {
        let f = s.feed.as_deref()?;
        if plan
            .feed_by_name(f)
            .is_some_and(|id| plan.feeds[id].forecast)
        {
            return None;
        }
        let hint = match forewarn_rules::diag::did_you_mean(f, forecast_names.iter().copied()) {
            Some(m) => format!(" (did you mean {m:?}?)"),
            None if forecast_names.is_empty() => {
                " (the rules declare none: `feed qpf: forecast depth mm`)".to_string()
            }
            None => format!(" (forecast feeds: {})", forecast_names.join(", ")),
        };
        Some(format!(
            "forecast-subscription {:?}: feed {f:?} is not a forecast feed of the rules{hint}",
            s.topic.text
        ))
    });
    let problems: Vec<String> = cfg
        .subscriptions
        .iter()
        .filter_map(|s| {
            let f = s.feed.as_deref()?;
            if plan.feed_by_name(f).is_some() {
                return None;
            }
            let hint = match forewarn_rules::diag::did_you_mean(f, names.iter().copied()) {
                Some(m) => format!(" (did you mean {m:?}?)"),
                None => format!(" (declared: {})", names.join(", ")),
            };
            Some(format!(
                "subscription {:?}: feed {f:?} is not declared in the rules{hint}",
                s.topic.text
            ))
        })
        .chain(forecast_problems)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("configuration: {}", problems.join("; "))
    }
}

/// With `[output.cap]`: every level of every published (not `shadow`) rule needs a CAP
/// severity and response, as in `forewarn run`; the daemon does not start without them.
fn check_cap(cfg: &ServeConfig, plan: &Plan) -> anyhow::Result<()> {
    let (Some(_), Some(settings)) = (&cfg.output.cap, &cfg.cap) else {
        return Ok(());
    };
    let problems = crate::cap_output::check(plan, settings);
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "CAP output ([output.cap]) cannot start:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// Rate-limited error logging: the first message of a kind goes out at once, then at most
/// one every `every`, with the number suppressed in between.
#[derive(Debug)]
pub(crate) struct RateLog {
    what: &'static str,
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    pub(crate) fn new(what: &'static str, every: Duration) -> RateLog {
        RateLog {
            what,
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Log `msg` unless one went out less than `every` ago.
    pub(crate) fn log(&mut self, msg: impl std::fmt::Display) {
        if self.last.is_some_and(|l| l.elapsed() < self.every) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            eprintln!(
                "forewarn serve: {}: {msg} ({} more since the last report)",
                self.what, self.suppressed
            );
        } else {
            eprintln!("forewarn serve: {}: {msg}", self.what);
        }
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }

    /// Forget the rate limit (after a recovery, the next failure is news).
    pub(crate) fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

fn render_load_error(e: crate::loader::LoadError) -> String {
    match e {
        crate::loader::LoadError::Invalid { diagnostics, .. } => diagnostics.render(false),
        other => other.to_string(),
    }
}

/// rustls needs a process-wide crypto provider; forewarn uses ring (no C toolchain beyond cc).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Run the daemon until SIGINT or SIGTERM, then shut down gracefully.
pub fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let daemon = Daemon::start(cfg)?;
    if let Some(a) = daemon.http_addr() {
        eprintln!("forewarn serve: http on http://{a}/ (/healthz /metrics /warnings)");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    let reload = daemon.shared.reload_tx.clone();
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => return r,
                _ = term.recv() => return Ok(()),
                _ = hup.recv() => {
                    eprintln!("forewarn serve: SIGHUP: reloading the rules");
                    let _ = reload.try_send(ReloadRequest { reply: None });
                }
            }
        }
    })
    .context("waiting for a signal")?;
    eprintln!("forewarn serve: shutting down (draining queues, flushing sinks)");
    daemon.shutdown()?;
    eprintln!("forewarn serve: stopped");
    Ok(())
}
