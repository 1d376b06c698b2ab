//! MQTT intake (rumqttc's sync client in its own thread) and the output connection.
//!
//! The intake subscribes with QoS 1 under a fixed client id and `clean-session = false`, so
//! the broker keeps the session while forewarn is away or reconnecting and delivers what
//! was published meanwhile. Acks are manual: a message is acknowledged once it is decoded
//! and handed to its shards' queues (at-least-once; a redelivered reading is an identical
//! duplicate, which the engine counts and ignores).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use forewarn_rules::ir::{FeedId, Millis, Plan};
use rumqttc::{
    Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, RecvTimeoutError,
    TlsConfiguration, Transport,
};
use serde_json::Value as Json;

use super::config::{ForecastSubscription, MqttConfig, PayloadFormat, ServeConfig, Subscription};
use super::durable::{Barrier, InputLog, IntakeState, OwnedInput};
use super::shard::ShardMsg;
use super::shard::{Origin, Router};
use super::sink::{SinkMsg, SinkTx, MAX_DEAD_RAW};
use super::{now_ms, sleep_unless, Shared};
use crate::forecast::{parse_forecast_json, AreaMap, ForecastTarget, JsonlDefaults};
use crate::record::RejectReason;
use crate::source::{decode_json_payload, DeadLetter, Decoded, DecodedValue, JsonContext};

/// The largest MQTT packet rumqttc accepts: the protocol maximum. Oversize payloads must
/// reach forewarn to be dead-lettered; a smaller client limit would drop the connection and
/// the broker would redeliver the same message forever. Bound sizes at the broker
/// (`message_size_limit`) and with `max-payload-bytes`.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// rumqttc options shared by the intake and the output connection.
pub(crate) fn mqtt_options(m: &MqttConfig, client_id: &str) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, m.host.clone(), m.port);
    o.set_keep_alive(m.keep_alive);
    o.set_clean_session(m.clean_session);
    o.set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
    if let (Some(u), p) = (&m.username, &m.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if let Some(tls) = &m.tls {
        let ca = std::fs::read(&tls.ca_file)
            .with_context(|| format!("read mqtt.tls.ca-file {}", tls.ca_file.display()))?;
        let client_auth = match &tls.client_auth {
            Some((c, k)) => Some((
                std::fs::read(c).with_context(|| format!("read {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("read {}", k.display()))?,
            )),
            None => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// The output connection's event loop, in its own thread: says `online` (retained) on every
/// connect, publishes the heartbeat, reconnects with backoff. Its Last Will is `offline`.
pub(crate) struct OutputConnection {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl OutputConnection {
    pub(crate) fn start(
        m: &MqttConfig,
        prefix: &str,
        heartbeat: Duration,
        shared: Arc<Shared>,
    ) -> anyhow::Result<(Client, OutputConnection)> {
        let mut o = mqtt_options(m, &format!("{}-out", m.client_id))?;
        let status = format!("{prefix}/status");
        o.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        o.set_inflight(256);
        let (client, conn) = Client::new(o, 1024);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            let (min, max) = (m.reconnect_min, m.reconnect_max);
            let hb_topic = format!("{prefix}/heartbeat");
            let broker = format!("{}:{}", m.host, m.port);
            std::thread::Builder::new()
                .name("fw-mqtt-out".into())
                .spawn(move || {
                    run_output(
                        conn, client, status, hb_topic, heartbeat, min, max, shared, stop, broker,
                    )
                })
                .context("spawn mqtt output thread")?
        };
        Ok((client, OutputConnection { stop, handle }))
    }

    /// Wait for the queued publishes and the disconnect to go out (at most `timeout`).
    pub(crate) fn finish(self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.handle.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
    }
}

#[allow(clippy::too_many_arguments)]
fn run_output(
    mut conn: Connection,
    client: Client,
    status: String,
    hb_topic: String,
    heartbeat: Duration,
    min: Duration,
    max: Duration,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    broker: String,
) {
    let mut backoff = min;
    let mut next_beat = Instant::now() + heartbeat;
    let mut errors = super::RateLog::new("mqtt output connection", Duration::from_secs(30));
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                shared.output_connected.store(true, Ordering::Relaxed);
                shared.mark(&shared.output_down_since, true);
                let n = shared.output_connects.fetch_add(1, Ordering::Relaxed);
                if n > 0 {
                    eprintln!("forewarn serve: mqtt output reconnected");
                }
                errors.reset();
                backoff = min;
                let _ = client.try_publish(&status, QoS::AtLeastOnce, true, "online");
                // on a reconnect, the retained levels and data statuses again: a broker
                // without persistence lost them when it restarted (the sink thread
                // republishes them; on the first connect nothing was published before)
                if n > 0 {
                    shared.republish.store(true, Ordering::Relaxed);
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if shared.output_connected.swap(false, Ordering::Relaxed) {
                    errors.reset();
                    errors.log(format_args!("lost: {e}"));
                } else {
                    errors.log(format_args!("cannot connect to {broker}: {e}"));
                }
                shared.mark(&shared.output_down_since, false);
                shared.output_errors.fetch_add(1, Ordering::Relaxed);
                if sleep_unless(&stop, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(max);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_beat {
            next_beat = Instant::now() + heartbeat;
            if shared.output_connected.load(Ordering::Relaxed) {
                let c = shared.counters();
                let watermark = super::lock(&shared.snapshots)
                    .iter()
                    .filter_map(|s| s.watermark)
                    .min();
                let beat = serde_json::json!({
                    "status": "online",
                    "time": crate::time::Zone::default().format(now_ms()).replace("+00:00", "Z"),
                    "uptime_s": shared.started.elapsed().as_secs(),
                    "readings": c.read,
                    "accepted": c.accepted,
                    "watermark": watermark.map(|w| crate::time::Zone::default().format(w).replace("+00:00", "Z")),
                });
                let _ = client.try_publish(&hb_topic, QoS::AtMostOnce, true, beat.to_string());
            }
        }
    }
    shared.output_connected.store(false, Ordering::Relaxed);
}

/// Start the intake thread.
/// A durable intake's input log, the records to replay before going live, and the state
/// the checkpoint recorded.
#[derive(Debug)]
pub(crate) struct DurableIntake {
    pub(crate) log: InputLog,
    pub(crate) replay: Vec<(crate::durable::store::JournalPosition, OwnedInput)>,
    pub(crate) state: IntakeState,
    pub(crate) data: crate::durable::store::DataDir,
    /// The rules on disk, when they differ from those the checkpoint was taken under: put
    /// in force (and journaled) once the input log is replayed.
    pub(crate) then_reload: Option<Arc<Plan>>,
    /// The checkpoint's input position, where the replay starts.
    pub(crate) replay_from: crate::durable::store::JournalPosition,
    /// After a rebuild from the history: per shard, the last message it already has.
    pub(crate) skip: Vec<u64>,
}

pub(crate) fn start(
    m: &MqttConfig,
    cfg: &ServeConfig,
    mut router: Router,
    sink: SinkTx,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    durable: Option<DurableIntake>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut o = mqtt_options(m, &m.client_id)?;
    o.set_manual_acks(true);
    let (client, conn) = Client::new(o, 4096);
    let (log, replay, state, data, then_reload, replay_from) = match durable {
        Some(d) => {
            router.set_sent_time(&d.state.sent_time);
            router.set_skip(d.skip);
            (
                Some(d.log),
                d.replay,
                d.state,
                Some(d.data),
                d.then_reload,
                d.replay_from,
            )
        }
        None => (
            None,
            Vec::new(),
            IntakeState::default(),
            None,
            None,
            crate::durable::store::JournalPosition {
                segment: 0,
                offset: 0,
            },
        ),
    };
    let intake = Intake {
        replaying: None,
        replay_from,
        rules_path: cfg.rules.clone(),
        data,
        then_reload,
        log,
        replay,
        pending: Vec::new(),
        pending_since: None,
        readings: state.readings,
        wall: cfg.engine.clock == crate::engine::ClockMode::Wall,
        log_errors: super::RateLog::new("input log", Duration::from_secs(30)),
        client,
        subs: cfg.subscriptions.clone(),
        forecast_subs: cfg.forecast_subscriptions.clone(),
        areas: None,
        forecast_errors: super::RateLog::new("forecast intake", Duration::from_secs(10)),
        max_payload: cfg.max_payload_bytes,
        router,
        sink,
        shared,
        stop,
        min: m.reconnect_min,
        max: m.reconnect_max,
        broker: format!("{}:{}", m.host, m.port),
        seq: state.seq,
        stream_time: state.stream_time,
    };
    std::thread::Builder::new()
        .name("fw-intake".into())
        .spawn(move || intake.run(conn))
        .context("spawn intake thread")
}

struct Intake {
    /// The rule file (reloaded on request).
    rules_path: std::path::PathBuf,
    /// The data directory (`[history]`): rule snapshots are kept there.
    data: Option<crate::durable::store::DataDir>,
    /// Rules to put in force after the replay (they changed on disk while forewarn was down).
    then_reload: Option<Arc<Plan>>,
    /// The input log (`[history]`): messages are journaled, and acknowledged once durable.
    log: Option<InputLog>,
    /// Input-log records after the checkpoint, replayed before going live.
    replay: Vec<(crate::durable::store::JournalPosition, OwnedInput)>,
    /// While replaying: the input log position after the record being replayed.
    replaying: Option<crate::durable::store::JournalPosition>,
    /// Where the replay starts (the checkpoint's input position).
    replay_from: crate::durable::store::JournalPosition,
    /// Messages journaled but not yet acknowledged (waiting for the log's fsync).
    pending: Vec<rumqttc::Publish>,
    pending_since: Option<Instant>,
    /// Readings routed so far (the next reading's arrival number).
    readings: u64,
    wall: bool,
    log_errors: super::RateLog,
    client: Client,
    subs: Vec<Subscription>,
    /// `[[forecast-subscription]]`s (matched before `subs`).
    forecast_subs: Vec<ForecastSubscription>,
    /// Areas of the rules in force (area forecasts are routed to the shards of their
    /// entities), built again when the rules change.
    areas: Option<(Arc<Plan>, AreaMap)>,
    /// Rejected forecasts are logged (rate-limited) with their topic.
    forecast_errors: super::RateLog,
    max_payload: usize,
    router: Router,
    sink: SinkTx,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    min: Duration,
    max: Duration,
    broker: String,
    seq: u64,
    stream_time: Option<Millis>,
}

impl Intake {
    fn run(mut self, mut conn: Connection) {
        let mut backoff = self.min;
        let mut subscribed = false;
        let mut errors = super::RateLog::new("mqtt intake connection", Duration::from_secs(30));
        if self.replay_log().is_err() {
            return; // the shards are gone
        }
        if let Some(plan) = self.then_reload.take() {
            // the rules on disk changed while forewarn was down: in force from here on
            match self.reload_to(plan, None) {
                Ok(Some(m)) => {
                    eprintln!("forewarn serve: {m} (the rule file changed while stopped)")
                }
                Ok(None) => {}
                Err(e) => eprintln!("forewarn serve: {e}"),
            }
        }
        // A checkpoint before going live: what was replayed is state now, and every later
        // crash has a checkpoint (with the output files' lengths) to go back to.
        if self.log.is_some() && self.barrier(false).is_err() {
            return;
        }
        let mut last_tick = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.serve_reloads();
            if self.log.is_some() && last_tick.elapsed() >= Duration::from_millis(250) {
                last_tick = Instant::now();
                if self.tick(now_ms()).is_err() {
                    break;
                }
            }
            let wait = match (&self.log, self.pending_since) {
                (Some(_), Some(_)) => Duration::from_millis(2),
                (Some(_), None) => Duration::from_millis(250),
                (None, _) => Duration::from_millis(500),
            };
            match conn.recv_timeout(wait) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    let n = self.shared.intake_connects.fetch_add(1, Ordering::Relaxed);
                    self.shared.intake_connected.store(true, Ordering::Relaxed);
                    self.shared.mark(&self.shared.intake_down_since, true);
                    errors.reset();
                    if n > 0 {
                        eprintln!(
                            "forewarn serve: mqtt reconnected (session present: {})",
                            ack.session_present
                        );
                    }
                    backoff = self.min;
                    // A resumed session keeps its subscriptions; subscribing again would make
                    // the broker resend retained messages.
                    if !subscribed || !ack.session_present {
                        let filters = self.forecast_subs.iter().map(|s| s.topic.filter());
                        for f in filters.chain(self.subs.iter().map(|s| s.topic.filter())) {
                            let _ = self.client.try_subscribe(f, QoS::AtLeastOnce);
                        }
                        subscribed = true;
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if self.log.is_some() {
                        if self.durable_publish(p).is_err() {
                            break; // the shards are gone: shutting down
                        }
                        continue;
                    }
                    if self.handle(&p.topic, &p.payload, now_ms()).is_err() {
                        break; // the shards are gone: shutting down
                    }
                    if p.qos != QoS::AtMostOnce && self.client.try_ack(&p).is_err() {
                        self.shared.ack_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    if self.shared.intake_connected.swap(false, Ordering::Relaxed) {
                        errors.reset();
                        errors.log(format_args!("lost: {e}"));
                    } else {
                        errors.log(format_args!("cannot connect to {}: {e}", self.broker));
                    }
                    self.shared.mark(&self.shared.intake_down_since, false);
                    self.shared.intake_errors.fetch_add(1, Ordering::Relaxed);
                    if sleep_unless(&self.stop, backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(self.max);
                }
                Err(RecvTimeoutError::Timeout) => self.commit(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self
                .pending_since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(2))
                || self.pending.len() >= 256
            {
                self.commit();
            }
        }
        // Make what was journaled durable and acknowledge it; a last checkpoint makes the
        // next start quick.
        if self.log.is_some() {
            self.commit();
            let _ = self.barrier(true);
        }
        // Leave the session to the broker: it queues what is published until we are back.
        if self.shared.intake_connected.load(Ordering::Relaxed) {
            let _ = self.client.try_disconnect();
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                match conn.recv_timeout(Duration::from_millis(200)) {
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(_)) => {}
                }
            }
        }
        self.shared.intake_connected.store(false, Ordering::Relaxed);
    }

    fn dead(&self, d: DeadLetter) -> Result<(), ()> {
        if self.replaying.is_some() && self.router.rebuilt(d.line) {
            return Ok(()); // the history holds it already
        }
        self.shared.count_intake_rejection(d.reason);
        self.sink.send(SinkMsg::Dead(d)).map_err(|_| ())
    }

    /// [`Intake::dead`] for a message that yields no reading.
    fn dead_count(&self, d: DeadLetter) -> Result<usize, ()> {
        self.dead(d).map(|()| 0)
    }

    /// Replay the input log's records after the checkpoint (before going live).
    fn replay_log(&mut self) -> Result<(), ()> {
        let records = std::mem::take(&mut self.replay);
        let result = self.replay_records(records);
        self.replaying = None;
        result
    }

    fn replay_records(
        &mut self,
        records: Vec<(crate::durable::store::JournalPosition, OwnedInput)>,
    ) -> Result<(), ()> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len();
        let mut before = self.replay_from;
        for (pos, r) in records {
            if matches!(r, OwnedInput::Reload(_)) {
                // as when it happened: a checkpoint just before the reload record
                self.replaying = Some(before);
                self.checkpoint_before_reload()?;
            }
            self.replaying = Some(pos);
            before = pos;
            match r {
                OwnedInput::Message {
                    received_at,
                    topic,
                    payload,
                } => {
                    let readings = self.handle(&topic, &payload, received_at)?;
                    if let Some(log) = self.log.as_mut() {
                        log.since_barrier += readings as u64;
                    }
                }
                OwnedInput::Tick(now) => {
                    self.router
                        .broadcast(|| ShardMsg::Tick(now))
                        .map_err(|_| ())?;
                }
                OwnedInput::Reload(ruleset) => {
                    let plan = self
                        .data
                        .as_ref()
                        .map(|d| super::durable::load_rules(d, &ruleset));
                    match plan {
                        Some(Ok(plan)) => self.apply_reload(plan)?,
                        Some(Err(e)) => eprintln!(
                            "forewarn serve: cannot replay the reload to rule set {ruleset}: {e:#}"
                        ),
                        None => {}
                    }
                }
            }
        }
        eprintln!("forewarn serve: replayed {n} journaled input records after the checkpoint");
        Ok(())
    }

    /// Put new rules in force at this point of the input: for decoding here, and in every
    /// shard after what was routed before.
    fn apply_reload(&mut self, plan: Arc<Plan>) -> Result<(), ()> {
        // windows the new rules lengthen are warmed from the history up to this point, made
        // durable by the checkpoint taken just before (see `checkpoint_before_reload`)
        let after = self.log.as_ref().map_or(0, |l| l.checkpoint_no);
        self.shared.set_plan(Arc::clone(&plan));
        let warm = self
            .data
            .as_ref()
            .map(|d| (d.root().to_path_buf(), self.readings));
        self.router
            .broadcast(|| ShardMsg::Reload {
                plan: Arc::clone(&plan),
                warm: warm.clone(),
                after,
            })
            .map_err(|_| ())
    }

    /// A checkpoint just before a reload (with `[history]`): the history up to it is on disk
    /// for warming the new windows, and a restart from it replays the reload.
    fn checkpoint_before_reload(&mut self) -> Result<(), ()> {
        if self.log.is_some() {
            self.commit();
            self.barrier(false)?;
        }
        Ok(())
    }

    /// Load the rule file again; refused (old rules kept) when it does not compile.
    /// `Ok(None)`: the rules are those in force already.
    fn reload_from_disk(&mut self) -> Result<Option<String>, String> {
        let (loaded, snapshot) = crate::loader::load_rules_snapshot(&self.rules_path)
            .map_err(super::render_load_error)?;
        if let Some(settings) = &self.shared.cap {
            let problems = crate::cap_output::check(&loaded.plan, settings);
            if !problems.is_empty() {
                return Err(format!(
                    "CAP output ([output.cap]):\n  {}",
                    problems.join("\n  ")
                ));
            }
        }
        let plan = Arc::new(loaded.plan);
        self.reload_to(plan, Some(snapshot))
    }

    /// Journal (with `[history]`) and apply a reload to `plan`.
    fn reload_to(
        &mut self,
        plan: Arc<Plan>,
        snapshot: Option<crate::loader::RuleSnapshot>,
    ) -> Result<Option<String>, String> {
        let before = self.shared.plan().ruleset_hash.clone();
        if plan.ruleset_hash == before {
            return Ok(None);
        }
        self.checkpoint_before_reload()
            .map_err(|()| "the daemon is stopping".to_string())?;
        if let (Some(log), Some(data)) = (self.log.as_mut(), self.data.as_ref()) {
            if let Some(snap) = &snapshot {
                super::durable::save_rules(data, snap, &plan.ruleset_hash)
                    .map_err(|e| format!("cannot keep the new rules: {e:#}"))?;
            }
            log.reload(&plan.ruleset_hash)
                .map_err(|e| format!("cannot journal the reload: {e:#}"))?;
        }
        let after = plan.ruleset_hash.clone();
        self.apply_reload(plan)
            .map_err(|()| "the daemon is stopping".to_string())?;
        Ok(Some(format!(
            "rules reloaded: rule set {before} -> {after}"
        )))
    }

    /// Serve waiting reload requests (from SIGHUP and `POST /reload`).
    fn serve_reloads(&mut self) {
        while let Ok(req) = self.shared.reload_rx.try_recv() {
            let r = self.reload_from_disk().map(|m| match m {
                Some(m) => {
                    self.shared.reloads.fetch_add(1, Ordering::Relaxed);
                    m
                }
                None => {
                    let hash = self.shared.plan().ruleset_hash.clone();
                    format!("rules unchanged (rule set {hash} is in force)")
                }
            });
            match &r {
                Ok(m) => {
                    eprintln!("forewarn serve: {m}");
                }
                Err(e) => {
                    self.shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("forewarn serve: reload refused, the rules in force stay:\n{e}");
                }
            }
            if let Some(tx) = req.reply {
                let _ = tx.try_send(r);
            }
        }
    }

    /// Journal a message, evaluate it, and hold its ack until the journal is durable; a
    /// redelivery of a journaled message is acknowledged without evaluating it again.
    fn durable_publish(&mut self, p: rumqttc::Publish) -> Result<(), ()> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        if log.is_redelivery(p.dup, p.pkid, &p.topic, &p.payload) {
            self.shared.redeliveries.fetch_add(1, Ordering::Relaxed);
            self.ack_later(p);
            return Ok(());
        }
        let received_at = now_ms();
        let journaled = log.message(self.seq + 1, received_at, p.pkid, &p.topic, &p.payload);
        if let Err(e) = &journaled {
            self.log_errors.log(format_args!(
                "cannot journal a message (it stays unacknowledged): {e:#}"
            ));
        }
        let readings = self.handle(&p.topic, &p.payload, received_at)?;
        if journaled.is_ok() {
            if let Some(log) = self.log.as_mut() {
                log.since_barrier += readings as u64;
            }
            self.ack_later(p);
        }
        if self.log.as_ref().is_some_and(InputLog::barrier_due) {
            self.commit();
            self.barrier(false)?;
        }
        Ok(())
    }

    fn ack_later(&mut self, p: rumqttc::Publish) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        self.pending.push(p);
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Make the journal durable, then acknowledge what it holds (group commit).
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.sync() {
                self.log_errors.log(format_args!(
                    "cannot sync the input log (acks withheld): {e:#}"
                ));
                return;
            }
        }
        for p in self.pending.drain(..) {
            if self.client.try_ack(&p).is_err() {
                self.shared.ack_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.pending_since = None;
    }

    /// Send a checkpoint barrier through every shard (`last`: before a graceful stop).
    fn barrier(&mut self, last: bool) -> Result<(), ()> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let input = match log.barrier_position(self.replaying) {
            Ok(p) => p,
            Err(e) => {
                self.log_errors.log(format_args!(
                    "cannot sync the input log for a checkpoint: {e:#}"
                ));
                return Ok(());
            }
        };
        let b = Arc::new(Barrier {
            n: log.checkpoint_no,
            input,
            intake: IntakeState {
                seq: self.seq,
                readings: self.readings,
                stream_time: self.stream_time,
                sent_time: self.router.sent_time().to_vec(),
            },
            last,
            ruleset: self.shared.plan().ruleset_hash.clone(),
        });
        self.router
            .broadcast(|| ShardMsg::Barrier(Arc::clone(&b)))
            .map_err(|_| ())?;
        // the intake's own marker: its dead letters after this point wait for the checkpoint
        self.sink
            .send(SinkMsg::Barrier {
                barrier: b,
                shard: self.router.shards(),
                snapshot: Vec::new(),
            })
            .map_err(|_| ())
    }

    /// The wall clock moved: journaled (wall clock only) and sent to every shard.
    fn tick(&mut self, now: Millis) -> Result<(), ()> {
        if self.wall {
            if let Some(log) = self.log.as_mut() {
                if let Err(e) = log.tick(now) {
                    self.log_errors
                        .log(format_args!("cannot journal a tick: {e:#}"));
                }
            }
        }
        self.router
            .broadcast(|| ShardMsg::Tick(now))
            .map_err(|_| ())
    }

    /// Decode one message and route its readings; bad input is dead-lettered. Returns the
    /// number of readings routed.
    fn handle(&mut self, topic: &str, payload: &[u8], received_at: Millis) -> Result<usize, ()> {
        let received = Instant::now();
        self.seq += 1;
        let seq = self.seq;
        self.shared.messages.fetch_add(1, Ordering::Relaxed);
        self.shared
            .bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        if let Some(i) = self
            .forecast_subs
            .iter()
            .position(|s| s.topic.matches(topic).is_some())
        {
            return self
                .handle_forecast(i, topic, payload, received_at, seq)
                .map(|()| 0);
        }
        let letter = |reason: RejectReason, detail: String, raw: &[u8]| DeadLetter {
            source: topic.to_string(),
            line: seq,
            reason,
            detail,
            entity: None,
            feed: None,
            ts: None,
            value: None,
            raw: raw.to_vec(),
        };
        if payload.len() > self.max_payload {
            let keep = &payload[..payload.len().min(MAX_DEAD_RAW)];
            return self.dead_count(letter(
                RejectReason::TooLarge,
                format!(
                    "payload of {} bytes is over max-payload-bytes = {} (first {} bytes kept)",
                    payload.len(),
                    self.max_payload,
                    keep.len()
                ),
                keep,
            ));
        }
        let Some((sub, t_entity, t_feed)) = self
            .subs
            .iter()
            .find_map(|s| s.topic.matches(topic).map(|(e, f)| (s, e, f)))
        else {
            return self.dead_count(letter(
                RejectReason::UnknownTopic,
                format!("no subscription template matches topic {topic:?}"),
                payload,
            ));
        };
        // dead letters name the entity and feed the topic (or subscription) supplies
        let fill = |mut d: DeadLetter| {
            if d.entity.is_none() {
                d.entity = t_entity.map(str::to_string);
            }
            if d.feed.is_none() && d.reason != RejectReason::UnknownFeed {
                d.feed = t_feed.or(sub.feed.as_deref()).map(str::to_string);
            }
            d
        };
        let text = match std::str::from_utf8(payload) {
            Ok(t) => t,
            Err(_) => {
                return self.dead_count(fill(letter(
                    RejectReason::Malformed,
                    "payload is not UTF-8 text".into(),
                    payload,
                )))
            }
        };
        let plan = self.shared.plan();
        let fixed = sub.feed.as_deref();
        let resolve =
            |entity: &str, named: Option<&str>| -> Result<FeedId, (RejectReason, String)> {
                resolve_feed(&plan, entity, named.or(t_feed), fixed)
            };
        let mut decoded = Vec::new();
        let mut dead = Vec::new();
        match sub.format {
            PayloadFormat::Json => {
                let cx = JsonContext {
                    source: topic,
                    line: seq,
                    time_zone: sub.time_zone.as_ref(),
                    entity: t_entity,
                    resolve: &resolve,
                };
                decode_json_payload(text, payload, &cx, &mut decoded, &mut dead);
            }
            PayloadFormat::Senml => {
                let cx = SenmlContext {
                    source: topic,
                    line: seq,
                    entity: t_entity,
                    default_feed: t_feed.or(fixed),
                    plan: &plan,
                    now: received_at,
                };
                decode_senml(text, payload, &cx, &mut decoded, &mut dead);
            }
        }
        for d in dead {
            self.dead(fill(d))?;
        }
        if decoded.is_empty() {
            return Ok(0);
        }
        let newest = self.shared.plausible_newest(decoded.iter().map(|d| d.ts));
        self.stream_time = self.stream_time.max(newest);
        let origin = Arc::new(Origin {
            topic: topic.to_string(),
            seq,
            payload: payload.to_vec(),
        });
        let n = decoded.len();
        let first_seq = self.readings;
        self.readings += n as u64;
        self.router
            .route(
                decoded,
                origin,
                received,
                received_at,
                first_seq,
                self.stream_time,
            )
            .map_err(|_| ())?;
        Ok(n)
    }
}

impl Intake {
    /// One forecast message (a `[[forecast-subscription]]` topic): decoded with the JSON
    /// Lines forecast parser (`received` = `received_at` when the payload has none), its feed
    /// and target checked against the rules in force, and routed to the shards owning its
    /// entities. A bad one is counted, logged with its topic and dead-lettered.
    fn handle_forecast(
        &mut self,
        sub: usize,
        topic: &str,
        payload: &[u8],
        received_at: Millis,
        seq: u64,
    ) -> Result<(), ()> {
        let sub = &self.forecast_subs[sub];
        let defaults = JsonlDefaults {
            feed: sub.feed.clone(),
            target: sub.target.clone(),
            received: Some(received_at),
        };
        let origin = |raw: &[u8]| Origin {
            topic: topic.to_string(),
            seq,
            payload: raw.to_vec(),
        };
        if payload.len() > self.max_payload {
            let keep = &payload[..payload.len().min(MAX_DEAD_RAW)];
            let detail = format!(
                "forecast payload of {} bytes is over max-payload-bytes = {} (first {} bytes kept)",
                payload.len(),
                self.max_payload,
                keep.len()
            );
            return self.reject_forecast(
                &origin(keep),
                RejectReason::TooLarge,
                detail,
                (None, None),
            );
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            let detail = "forecast payload is not UTF-8 text".to_string();
            return self.reject_forecast(
                &origin(payload),
                RejectReason::Malformed,
                detail,
                (None, None),
            );
        };
        let forecast = match parse_forecast_json(text, &defaults) {
            Ok(f) => f,
            Err(e) => {
                let reason = super::shard::forecast_reason(&e);
                let detail = format!("forecast: {e}");
                return self.reject_forecast(&origin(payload), reason, detail, (None, None));
            }
        };
        let plan = self.shared.plan();
        // dead letters name the forecast's entity (an area is in the detail) and feed
        let entity = match &forecast.target {
            ForecastTarget::Entity(e) => Some(e.clone()),
            ForecastTarget::Area(_) => None,
        };
        let named = |why: String| (why, (entity.clone(), Some(forecast.feed.clone())));
        if !plan
            .feed_by_name(&forecast.feed)
            .is_some_and(|f| plan.feeds[f].forecast)
        {
            let known: Vec<&str> = plan
                .feeds
                .iter()
                .filter(|f| f.forecast)
                .map(|f| f.name.as_str())
                .collect();
            let (detail, feed) = named(format!(
                "forecast: feed {:?} is not a forecast feed of the rules (forecast feeds: {})",
                forecast.feed,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
            let o = origin(payload);
            return self.reject_forecast(&o, RejectReason::UnknownFeed, detail, feed);
        }
        let entities: Vec<String> = match &forecast.target {
            ForecastTarget::Entity(e) => match crate::engine::check_entity_id(e) {
                Ok(()) => vec![e.clone()],
                Err(why) => {
                    let (detail, feed) = named(format!("forecast for {}: {why}", forecast.target));
                    let o = origin(payload);
                    return self.reject_forecast(&o, RejectReason::Malformed, detail, feed);
                }
            },
            ForecastTarget::Area(_) => {
                if !self
                    .areas
                    .as_ref()
                    .is_some_and(|(p, _)| Arc::ptr_eq(p, &plan))
                {
                    self.areas = Some((Arc::clone(&plan), AreaMap::from_plan(&plan)));
                }
                let areas = self.areas.as_ref().map(|(_, a)| a);
                match areas.map(|a| a.targets(&forecast.target)) {
                    Some(Ok(v)) => v.to_vec(),
                    Some(Err(e)) => {
                        let (detail, feed) =
                            named(format!("forecast: {e} (no table's group column holds it)"));
                        let o = origin(payload);
                        return self.reject_forecast(&o, RejectReason::UnknownEntity, detail, feed);
                    }
                    None => Vec::new(),
                }
            }
        };
        self.shared.forecasts.fetch_add(1, Ordering::Relaxed);
        self.router
            .route_forecast(forecast, &entities, Arc::new(origin(payload)))
            .map(|_| ())
            .map_err(|_| ())
    }

    /// Count, log (rate-limited, with the topic) and dead-letter a refused forecast message.
    fn reject_forecast(
        &mut self,
        origin: &Origin,
        reason: RejectReason,
        detail: String,
        (entity, feed): (Option<String>, Option<String>),
    ) -> Result<(), ()> {
        if self.replaying.is_some() && self.router.rebuilt(origin.seq) {
            return Ok(()); // the history holds it already
        }
        self.shared.forecasts_rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.forecast_errors.log(format_args!(
            "forecast on {:?} (message {}) rejected ({}): {detail}",
            origin.topic,
            origin.seq,
            reason.as_str()
        ));
        self.sink
            .send(SinkMsg::Dead(DeadLetter {
                source: origin.topic.clone(),
                line: origin.seq,
                reason,
                detail,
                entity,
                feed,
                ts: None,
                value: None,
                raw: origin.payload.clone(),
            }))
            .map_err(|_| ())
    }
}

/// The feed of a reading: the one it (or its topic) names, else the subscription's.
fn resolve_feed(
    plan: &Plan,
    entity: &str,
    named: Option<&str>,
    fixed: Option<&str>,
) -> Result<FeedId, (RejectReason, String)> {
    match named.or(fixed) {
        Some(n) => plan.feed_by_name(n).ok_or_else(|| {
            (
                RejectReason::UnknownFeed,
                format!("feed {n:?} is not declared in the rules"),
            )
        }),
        None => Err((
            RejectReason::UnknownEntity,
            format!("no feed is named for entity {entity:?} (payload, topic or subscription)"),
        )),
    }
}

/// How to read a SenML pack (see `docs/daemon.md`).
pub(crate) struct SenmlContext<'a> {
    pub(crate) source: &'a str,
    pub(crate) line: u64,
    /// Entity from the topic: then a record's name is the feed.
    pub(crate) entity: Option<&'a str>,
    /// Feed from the topic or the subscription, for records whose name gives none.
    pub(crate) default_feed: Option<&'a str>,
    pub(crate) plan: &'a Plan,
    /// Receipt time (UTC ms): SenML times below 2²⁸ s are relative to it.
    pub(crate) now: Millis,
}

/// Decode a SenML (RFC 8428) JSON pack: base fields `bn`, `bt`, `bu`, `bv` carry over to the
/// following records; name = `bn` + `n`; time = `bt` + `t` seconds (absolute when ≥ 2²⁸,
/// else relative to receipt); value `v` (+ `bv`) or `vs` (a number as text). Each record is a
/// reading of one batch; bad records are dead-lettered and the rest kept.
pub(crate) fn decode_senml(
    text: &str,
    raw: &[u8],
    cx: &SenmlContext<'_>,
    decoded: &mut Vec<Decoded>,
    dead: &mut Vec<DeadLetter>,
) {
    let letter = |reason: RejectReason, detail: String, raw: Vec<u8>| DeadLetter {
        source: cx.source.to_string(),
        line: cx.line,
        reason,
        detail,
        entity: None,
        feed: None,
        ts: None,
        value: None,
        raw,
    };
    let records = match serde_json::from_str::<Json>(text) {
        Ok(Json::Array(a)) => a,
        Ok(_) => {
            dead.push(letter(
                RejectReason::Malformed,
                "a SenML pack must be a JSON array of records".into(),
                raw.to_vec(),
            ));
            return;
        }
        Err(e) => {
            dead.push(letter(
                RejectReason::Malformed,
                format!("invalid JSON: {e}"),
                raw.to_vec(),
            ));
            return;
        }
    };
    let (mut bn, mut bt, mut bu, mut bv) = (String::new(), 0.0f64, None::<String>, 0.0f64);
    for rec in &records {
        let rec_raw = || rec.to_string().into_bytes();
        let Json::Object(map) = rec else {
            dead.push(letter(
                RejectReason::Malformed,
                "a SenML record must be a JSON object".into(),
                rec_raw(),
            ));
            continue;
        };
        let num = |k: &str| -> Result<Option<f64>, String> {
            match map.get(k) {
                None => Ok(None),
                Some(Json::Number(n)) => Ok(n.as_f64()),
                Some(other) => Err(format!("SenML field {k:?} must be a number, not {other}")),
            }
        };
        let text_field = |k: &str| -> Result<Option<String>, String> {
            match map.get(k) {
                None => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("SenML field {k:?} must be a string, not {other}")),
            }
        };
        let bases = (|| -> Result<(), String> {
            if let Some(s) = text_field("bn")? {
                bn = s;
            }
            if let Some(x) = num("bt")? {
                bt = x;
            }
            if let Some(s) = text_field("bu")? {
                bu = Some(s);
            }
            if let Some(x) = num("bv")? {
                bv = x;
            }
            Ok(())
        })();
        if let Err(e) = bases {
            dead.push(letter(RejectReason::Malformed, e, rec_raw()));
            continue;
        }
        let record = (|| -> Result<Decoded, (RejectReason, String)> {
            let wrong = |e: String| (RejectReason::Malformed, e);
            let name = format!(
                "{bn}{}",
                text_field("n").map_err(wrong)?.unwrap_or_default()
            );
            let (entity, feed_name) = match cx.entity {
                Some(e) => (e.to_string(), (!name.is_empty()).then_some(name.clone())),
                None => {
                    if name.is_empty() {
                        return Err((
                            RejectReason::MissingField,
                            "SenML record without a name (bn + n) and no {entity} in the topic"
                                .into(),
                        ));
                    }
                    match name.rfind(['/', ':']) {
                        Some(i) => {
                            let (e, f) = (&name[..i], &name[i + 1..]);
                            (e.to_string(), (!f.is_empty()).then(|| f.to_string()))
                        }
                        None => (name.clone(), None),
                    }
                }
            };
            let feed = resolve_feed(cx.plan, &entity, feed_name.as_deref(), cx.default_feed)?;
            let unit = text_field("u").map_err(wrong)?.or_else(|| bu.clone());
            if let Some(u) = unit {
                let declared = &cx.plan.feeds[feed].declared_unit;
                if !u.is_empty() && u != *declared {
                    return Err((
                        RejectReason::Malformed,
                        format!(
                            "unit {u:?} is not the unit of feed {} ({declared:?})",
                            cx.plan.feeds[feed].name
                        ),
                    ));
                }
            }
            let t = bt + num("t").map_err(wrong)?.unwrap_or(0.0);
            if !t.is_finite() {
                return Err((
                    RejectReason::BadTimestamp,
                    format!("time {t} is not finite"),
                ));
            }
            let ts = if t >= (1u64 << 28) as f64 {
                (t * 1000.0).round() as Millis
            } else {
                cx.now + (t * 1000.0).round() as Millis
            };
            let value = match (num("v").map_err(wrong)?, map.get("vs"), map.get("vb")) {
                (Some(v), _, _) => DecodedValue::Num(v + bv),
                (None, Some(Json::String(s)), _) => DecodedValue::Text(s.clone()),
                (None, Some(other), _) => {
                    return Err((
                        RejectReason::Malformed,
                        format!("SenML field \"vs\" must be a string, not {other}"),
                    ))
                }
                (None, None, Some(b)) => {
                    return Err((
                        RejectReason::NotNumeric,
                        format!("boolean value {b} is not a number"),
                    ))
                }
                (None, None, None) => {
                    return Err((
                        RejectReason::MissingField,
                        "SenML record without a value (v or vs)".into(),
                    ))
                }
            };
            Ok(Decoded {
                entity,
                feed,
                ts,
                value,
            })
        })();
        match record {
            Ok(d) => decoded.push(d),
            Err((reason, detail)) => dead.push(letter(reason, detail, rec_raw())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_rules::{compile, TableData, TableLoader};

    struct NoTables;
    impl TableLoader for NoTables {
        fn load(&self, path: &str) -> Result<TableData, String> {
            Err(format!("no table {path}"))
        }
    }

    fn plan() -> Plan {
        let src = "feed rain: depth mm\nfeed stage: level m\nrule wet on rain:\n  warn when sum(rain, 1h) >= 10 mm\n";
        compile(src, "t.rules", &NoTables)
            .map_err(|d| d.render(false))
            .unwrap()
            .plan
    }

    fn senml(
        text: &str,
        entity: Option<&str>,
        feed: Option<&str>,
    ) -> (Vec<Decoded>, Vec<DeadLetter>) {
        let plan = plan();
        let cx = SenmlContext {
            source: "t",
            line: 1,
            entity,
            default_feed: feed,
            plan: &plan,
            now: 1_000_000,
        };
        let (mut d, mut e) = (Vec::new(), Vec::new());
        decode_senml(text, text.as_bytes(), &cx, &mut d, &mut e);
        (d, e)
    }

    #[test]
    fn senml_base_name_time_and_value() {
        let (d, e) = senml(
            r#"[{"bn":"G1:","bt":1.5e9,"bu":"mm","n":"rain","v":1.2,"t":0},
                {"n":"rain","v":0.4,"t":300},
                {"n":"stage","u":"m","vs":"2.5","t":300}]"#,
            None,
            None,
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].entity.as_str(), d[0].ts), ("G1", 1_500_000_000_000));
        assert_eq!(d[1].ts, 1_500_000_300_000);
        assert_eq!(d[1].value, DecodedValue::Num(0.4));
        assert_eq!(d[2].value, DecodedValue::Text("2.5".into()));
    }

    #[test]
    fn senml_topic_entity_relative_time_and_bad_records() {
        let (d, e) = senml(
            r#"[{"n":"rain","v":3,"t":-60},{"n":"rain","vb":true},{"n":"snow","v":1},{"n":"rain","u":"in","v":1},{"v":2}]"#,
            Some("G7"),
            Some("rain"),
        );
        assert_eq!(d.len(), 2, "{e:?}");
        assert_eq!((d[0].entity.as_str(), d[0].ts), ("G7", 1_000_000 - 60_000));
        assert_eq!(d[1].ts, 1_000_000);
        let reasons: Vec<_> = e.iter().map(|x| x.reason).collect();
        assert_eq!(
            reasons,
            vec![
                RejectReason::NotNumeric,
                RejectReason::UnknownFeed,
                RejectReason::Malformed
            ]
        );
        // RFC 8428: every time below 2^28 s is relative, negative ones included
        let (d, _) = senml(
            r#"[{"bn":"G3:","n":"rain","v":1,"t":-300000000}]"#,
            None,
            None,
        );
        assert_eq!(d[0].ts, 1_000_000 - 300_000_000_000);
        let (_, e) = senml("{\"n\":1}", None, None);
        assert_eq!(e[0].reason, RejectReason::Malformed);
    }
}
