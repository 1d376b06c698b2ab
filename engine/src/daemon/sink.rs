//! The output thread: every warning, status event and dead letter goes to JSON Lines files,
//! to MQTT (own connection, QoS 1) and, for warnings, to the webhook queues.
//!
//! MQTT topics under the configured prefix `P`:
//!
//! | topic | retained | payload |
//! |---|---|---|
//! | `P/warnings/{rule}/{entity}` | no | the warning record (every transition) |
//! | `P/level/{rule}/{entity}` | yes | the record of the transition into the current level; an empty payload on clear (deletes the retained message) |
//! | `P/status/{entity}/{feed}` | yes | the latest data-status event |
//! | `P/dead-letter` | no | reason, detail, topic, raw payload (`raw` text or `raw_base64`) |
//! | `P/status` | yes | `online` / `offline` (Last Will) |
//! | `P/heartbeat` | yes | time, uptime, readings, watermark (every `heartbeat`) |
//! | `P/cap/{rule}/{entity}` | no | the CAP 1.2 XML of every message (`[output.cap] mqtt = true`) |
//!
//! With `[output.cap]` one [`CapOutput`] turns every warning of a published rule into a CAP
//! message (files in `dir`, and/or MQTT). It sees each `(rule, entity)`'s warnings in order —
//! a shard sends them in order and one sink receives them all — so episodes chain as in
//! `forewarn run`. A message that cannot be made or written is counted
//! (`forewarn_cap_failures_total`) and logged; the warning still goes to every other output.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rumqttc::{Client, QoS};
use serde_json::Value as Json;

use super::config::{ServeConfig, WebhookConfig};
use super::durable::{Barrier, SinkHistory};
use super::intake::OutputConnection;
use super::shard::Origin;
use super::{lock, Shared};
use crate::cap_output::{CapOutcome, CapOutput};
use crate::durable::outfile::{Open, OutFile};
use crate::durable::{Batch, Entry, Outcome, ReadingRow, RejectedRow};
use crate::record::{StatusEvent, TransitionKind, Warning};
use crate::source::DeadLetter;
use crate::source::{Decoded, DecodedValue};
use forewarn_rules::ir::Millis;

/// What the shards and the intake hand to the sink.
#[derive(Debug)]
pub(crate) enum SinkMsg {
    Warning(Warning),
    Status(StatusEvent),
    Dead(DeadLetter),
    /// A shard's readings of one message and what the engine did with each (history).
    Readings {
        first_seq: u64,
        received_at: Millis,
        origin: Arc<Origin>,
        readings: Vec<Decoded>,
        outcomes: Vec<Outcome>,
        /// The rules the readings were decoded and evaluated under (feed ids refer to it).
        plan: Arc<forewarn_rules::ir::Plan>,
    },
    /// A shard passed a checkpoint barrier.
    Barrier {
        barrier: Arc<Barrier>,
        shard: usize,
        snapshot: Vec<u8>,
    },
}

/// The sending end of the sink's queue for one source (a shard, the intake, a file source):
/// every message carries its source, so that checkpoint barriers can be aligned.
#[derive(Debug, Clone)]
pub(crate) struct SinkTx {
    tx: Sender<(usize, SinkMsg)>,
    from: usize,
}

impl SinkTx {
    pub(crate) fn new(tx: Sender<(usize, SinkMsg)>) -> SinkTx {
        SinkTx {
            tx,
            from: usize::MAX,
        }
    }

    /// The same queue, for source `from`.
    pub(crate) fn source(&self, from: usize) -> SinkTx {
        SinkTx {
            tx: self.tx.clone(),
            from,
        }
    }

    /// Send (blocking while the queue is full); an error means the sink is gone.
    pub(crate) fn send(&self, msg: SinkMsg) -> Result<(), SinkGone> {
        self.tx.send((self.from, msg)).map_err(|_| SinkGone)
    }
}

/// The sink thread has stopped: nothing more can be delivered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinkGone;

/// Keep at most this much of an oversize payload in its dead letter.
pub(crate) const MAX_DEAD_RAW: usize = 4096;

/// Replace the characters MQTT gives a meaning in topic levels.
pub(crate) fn topic_level(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' | '+' | '#' | '\0' => '_',
            c => c,
        })
        .collect()
}

/// Whether `topic` may be published to: a valid MQTT topic name of at most 65,535 bytes
/// without wildcards or NUL. A bad topic would make the broker drop the connection (and the
/// client reconnect and resend it forever).
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

/// A dead letter as JSON: `source` is the MQTT topic (or file source), `line` the message
/// sequence number (or line); the raw payload as `raw` (UTF-8 text) or `raw_base64`.
pub(crate) fn dead_letter_json(d: &DeadLetter, zone: &crate::time::Zone) -> Json {
    let mut v = d.to_json(zone);
    if let Some(obj) = v.as_object_mut() {
        if obj.remove("raw_hex").is_some() {
            obj.insert(
                "raw_base64".into(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(&d.raw)),
            );
        }
    }
    v
}

struct Webhook {
    tx: Sender<Arc<String>>,
    handle: JoinHandle<()>,
}

pub(crate) struct Sink {
    shared: Arc<Shared>,
    warnings: Option<OutFile>,
    status: Option<OutFile>,
    dead: Option<OutFile>,
    /// The history journal and checkpoints (`[history]`).
    history: Option<SinkHistory>,
    /// Barrier alignment: which sources (shards, then the intake) have passed the barrier
    /// in progress, and the messages they sent after it.
    passed: Vec<bool>,
    held: Vec<(usize, SinkMsg)>,
    /// The barrier in progress completed (its checkpoint is written).
    aligned: bool,
    mqtt: Option<(Client, String, OutputConnection)>,
    /// Retained topics and their current payload (levels of active warnings, data status),
    /// republished on every (re)connect of the output connection.
    retained: std::collections::BTreeMap<String, Vec<u8>>,
    bad_topic_log: super::RateLog,
    webhooks: Vec<Webhook>,
    webhook_stop: Arc<AtomicBool>,
    /// CAP output (`[output.cap]`), and whether its messages also go over MQTT.
    cap: Option<CapOutput>,
    cap_mqtt: bool,
    cap_log: super::RateLog,
}

fn create(path: &Path, how: Open) -> anyhow::Result<OutFile> {
    OutFile::open(path, how).with_context(|| format!("open {}", path.display()))
}

impl Sink {
    /// Open the outputs; `cut` holds the lengths a checkpoint recorded (files are cut back
    /// to them), else files are appended to. `plan` and `active` (the warnings open in
    /// restored engines) are for the CAP output.
    pub(crate) fn open(
        cfg: &ServeConfig,
        shared: Arc<Shared>,
        history: Option<SinkHistory>,
        cut: Option<Vec<u64>>,
        plan: &forewarn_rules::ir::Plan,
        active: &[crate::engine::ActiveWarning],
    ) -> anyhow::Result<Sink> {
        let how = |i: usize| match &cut {
            Some(v) => Open::CutTo(v.get(i).copied().unwrap_or(0)),
            None => Open::Append,
        };
        let o = &cfg.output;
        let mqtt = match (&cfg.mqtt, &o.mqtt_prefix) {
            (Some(m), Some(prefix)) => {
                let (client, conn) =
                    OutputConnection::start(m, prefix, cfg.heartbeat, Arc::clone(&shared))?;
                Some((client, prefix.clone(), conn))
            }
            _ => None,
        };
        let cap = match (&o.cap, &cfg.cap) {
            (Some(out), Some(settings)) => Some(
                CapOutput::new(plan, settings, out.dir.as_deref(), active, false)
                    .context("CAP output ([output.cap])")?,
            ),
            _ => None,
        };
        let cap_mqtt = o.cap.as_ref().is_some_and(|c| c.mqtt);
        let webhook_stop = Arc::new(AtomicBool::new(false));
        let mut webhooks = Vec::new();
        for (i, w) in o.webhooks.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded::<Arc<String>>(w.queue);
            {
                let rx = rx.clone();
                lock(&shared.queues).push((format!("webhook{i}"), Box::new(move || rx.len())));
            }
            let w = w.clone();
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&webhook_stop);
            let handle = std::thread::Builder::new()
                .name(format!("fw-webhook{i}"))
                .spawn(move || run_webhook(w, rx, shared, stop))
                .context("spawn webhook thread")?;
            webhooks.push(Webhook { tx, handle });
        }
        Ok(Sink {
            shared,
            warnings: o
                .warnings
                .as_deref()
                .map(|p| create(p, how(0)))
                .transpose()?,
            status: o.status.as_deref().map(|p| create(p, how(1))).transpose()?,
            dead: o
                .dead_letter
                .as_deref()
                .map(|p| create(p, how(2)))
                .transpose()?,
            passed: if history.is_some() {
                vec![false; cfg.shards.max(1) + 1]
            } else {
                Vec::new()
            },
            held: Vec::new(),
            aligned: false,
            history,
            mqtt,
            retained: Default::default(),
            bad_topic_log: super::RateLog::new("mqtt output", Duration::from_secs(30)),
            webhooks,
            webhook_stop,
            cap,
            cap_mqtt,
            cap_log: super::RateLog::new("cap output", Duration::from_secs(30)),
        })
    }

    /// The CAP message of a warning (`[output.cap]`): written to the directory, and
    /// published on `P/cap/{rule}/{entity}` with `mqtt = true`. Failures are counted and
    /// logged, never fatal.
    fn publish_cap(&mut self, w: &Warning) {
        let Some(cap) = self.cap.as_mut() else {
            return;
        };
        // after a reload: the new rules' levels, areas and geocodes
        let plan = self.shared.plan();
        if plan.ruleset_hash != cap.ruleset() {
            cap.set_plan(&plan);
        }
        let msg = match cap.publish(w) {
            CapOutcome::Skipped => return,
            CapOutcome::Written(msg) => {
                self.shared.cap_messages.fetch_add(1, Ordering::Relaxed);
                msg
            }
            CapOutcome::Failed(msg, e) => {
                self.shared.cap_failures.fetch_add(1, Ordering::Relaxed);
                self.cap_log.log(format_args!("{e}"));
                match msg {
                    // made but not written to the directory: still published over MQTT
                    Some(msg) => msg,
                    None => return,
                }
            }
        };
        if self.cap_mqtt {
            if let Some(p) = self.prefix().map(str::to_string) {
                let topic = format!(
                    "{p}/cap/{}/{}",
                    topic_level(&w.rule),
                    topic_level(&w.entity)
                );
                self.publish(topic, false, msg.xml.into_bytes());
            }
        }
    }

    /// Handle a message from source `from`, aligning checkpoint barriers: once a source
    /// has passed barrier n, its later messages wait until every source has passed it and
    /// the checkpoint is written — so the checkpoint's outputs are exactly those of the
    /// input before the barrier.
    fn dispatch(&mut self, from: usize, msg: SinkMsg) -> anyhow::Result<()> {
        if self.passed.get(from).copied().unwrap_or(false) {
            self.held.push((from, msg));
            return Ok(());
        }
        if matches!(msg, SinkMsg::Barrier { .. }) {
            if let Some(p) = self.passed.get_mut(from) {
                *p = true;
            }
        }
        self.handle(msg)?;
        if self.aligned {
            // the checkpoint is written: what waited behind the barrier goes on, in order
            self.aligned = false;
            self.passed.iter_mut().for_each(|p| *p = false);
            for (f, m) in std::mem::take(&mut self.held) {
                self.dispatch(f, m)?;
            }
        }
        Ok(())
    }

    /// Run until every sender is gone; then flush everything and say `offline`.
    pub(crate) fn run(
        mut self,
        rx: Receiver<(usize, SinkMsg)>,
        drain: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let mut dirty = false;
        let mut last_flush = Instant::now();
        loop {
            if self.shared.republish.swap(false, Ordering::Relaxed) {
                self.republish();
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((from, msg)) => {
                    self.dispatch(from, msg)?;
                    dirty = true;
                    if last_flush.elapsed() > Duration::from_millis(200) {
                        self.flush()?;
                        dirty = false;
                        last_flush = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if drain.load(Ordering::SeqCst) && rx.is_empty() {
                        break;
                    }
                    if dirty {
                        self.flush()?;
                        dirty = false;
                        last_flush = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush()?;
        // webhooks: deliver what is queued, with a deadline
        let deadline = Instant::now() + Duration::from_secs(5);
        let hooks = std::mem::take(&mut self.webhooks);
        let handles: Vec<_> = hooks
            .into_iter()
            .map(|w| {
                drop(w.tx);
                w.handle
            })
            .collect();
        while handles.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.webhook_stop.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.join();
        }
        if let Some((client, prefix, conn)) = self.mqtt.take() {
            let _ = client.publish(
                format!("{prefix}/status"),
                QoS::AtLeastOnce,
                true,
                "offline",
            );
            let _ = client.disconnect();
            conn.finish(Duration::from_secs(5));
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for f in [&mut self.warnings, &mut self.status, &mut self.dead]
            .into_iter()
            .flatten()
        {
            f.flush().context("write output")?;
        }
        Ok(())
    }

    /// Publish the retained levels and data statuses again (after a (re)connect).
    fn republish(&mut self) {
        let Some((client, _, _)) = &self.mqtt else {
            return;
        };
        for (topic, payload) in &self.retained {
            if client
                .publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone())
                .is_ok()
            {
                self.shared.mqtt_published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A retained publish whose payload is remembered for [`Sink::republish`] (an empty
    /// payload deletes the retained message, and is forgotten).
    fn publish_retained(&mut self, topic: String, payload: Vec<u8>) {
        if !valid_topic(&topic) {
            return self.publish(topic, true, payload);
        }
        if payload.is_empty() {
            self.retained.remove(&topic);
        } else {
            self.retained.insert(topic.clone(), payload.clone());
        }
        self.publish(topic, true, payload);
    }

    fn publish(&mut self, topic: String, retain: bool, payload: Vec<u8>) {
        if self.mqtt.is_some() && !valid_topic(&topic) {
            self.shared.bad_topics.fetch_add(1, Ordering::Relaxed);
            let shown: String = topic.chars().take(80).collect();
            self.bad_topic_log.log(format_args!(
                "not published: topic of {} bytes starting {shown:?} is not a valid MQTT topic \
                 (at most 65535 bytes, no +, # or NUL)",
                topic.len()
            ));
            return;
        }
        if let Some((client, _, _)) = &self.mqtt {
            // blocking when the request queue is full: backpressure on evaluation
            if client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok()
            {
                self.shared.mqtt_published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn prefix(&self) -> Option<&str> {
        self.mqtt.as_ref().map(|(_, p, _)| p.as_str())
    }

    fn handle(&mut self, msg: SinkMsg) -> anyhow::Result<()> {
        let zone = self.shared.zone;
        match msg {
            SinkMsg::Warning(w) => {
                self.shared.warnings_out.fetch_add(1, Ordering::Relaxed);
                let json = w.to_json(&zone);
                let line = json.to_string();
                if let Some(f) = self.warnings.as_mut() {
                    f.line(&line).context("write warnings")?;
                }
                if let Some(h) = self.history.as_mut() {
                    h.journal.append(&Entry::Warning((&w).into()))?;
                }
                if let Some(p) = self.prefix().map(str::to_string) {
                    let (rule, entity) = (topic_level(&w.rule), topic_level(&w.entity));
                    self.publish(
                        format!("{p}/warnings/{rule}/{entity}"),
                        false,
                        line.clone().into_bytes(),
                    );
                    let level = if w.kind == TransitionKind::Clear {
                        Vec::new()
                    } else {
                        line.clone().into_bytes()
                    };
                    self.publish_retained(format!("{p}/level/{rule}/{entity}"), level);
                }
                self.publish_cap(&w);
                if !self.webhooks.is_empty() {
                    let body = Arc::new(line);
                    for h in &self.webhooks {
                        match h.tx.try_send(Arc::clone(&body)) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                                self.shared.webhook_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            SinkMsg::Status(s) => {
                self.shared.status_out.fetch_add(1, Ordering::Relaxed);
                let line = s.to_json(&zone).to_string();
                if let Some(f) = self.status.as_mut() {
                    f.line(&line).context("write status")?;
                }
                if let Some(h) = self.history.as_mut() {
                    h.journal.append(&Entry::Status((&s).into()))?;
                }
                if let Some(p) = self.prefix().map(str::to_string) {
                    self.publish_retained(
                        format!(
                            "{p}/status/{}/{}",
                            topic_level(&s.entity),
                            topic_level(&s.feed)
                        ),
                        line.into_bytes(),
                    );
                }
            }
            SinkMsg::Dead(d) => {
                self.shared.dead_out.fetch_add(1, Ordering::Relaxed);
                let line = dead_letter_json(&d, &zone).to_string();
                if let Some(f) = self.dead.as_mut() {
                    f.line(&line).context("write dead letters")?;
                }
                if let Some(h) = self.history.as_mut() {
                    let now = super::now_ms();
                    h.journal
                        .append(&Entry::Rejected(RejectedRow::new(&d, now)))?;
                }
                if let Some(p) = self.prefix().map(str::to_string) {
                    self.publish(format!("{p}/dead-letter"), false, line.into_bytes());
                }
            }
            SinkMsg::Readings {
                first_seq,
                received_at,
                origin,
                readings,
                outcomes,
                plan,
            } => {
                if let Some(h) = self.history.as_mut() {
                    let rows = readings
                        .iter()
                        .zip(&outcomes)
                        .map(|(d, &o)| {
                            let (value, text) = match &d.value {
                                DecodedValue::Num(v) => (Some(*v), None),
                                DecodedValue::Text(t) => {
                                    (None, Some(std::borrow::Cow::Borrowed(t.as_str())))
                                }
                            };
                            ReadingRow {
                                entity: std::borrow::Cow::Borrowed(&d.entity),
                                feed: std::borrow::Cow::Borrowed(&plan.feeds[d.feed].name),
                                ts: d.ts,
                                value,
                                text,
                                outcome: o,
                            }
                        })
                        .collect();
                    h.journal.append(&Entry::Batch(Batch {
                        seq: first_seq,
                        received_at,
                        source: std::borrow::Cow::Borrowed(&origin.topic),
                        line: origin.seq,
                        readings: rows,
                    }))?;
                    h.rows_in_segment += readings.len() as u64;
                }
            }
            SinkMsg::Barrier {
                barrier,
                shard,
                snapshot,
            } => {
                let done = self
                    .history
                    .as_mut()
                    .and_then(|h| h.barrier(barrier, shard, snapshot));
                if let Some((b, snapshots)) = done {
                    self.aligned = true;
                    let mut lengths = Vec::with_capacity(3);
                    for f in [&mut self.warnings, &mut self.status, &mut self.dead] {
                        lengths.push(match f {
                            Some(f) => f.commit().context("sync output")?,
                            None => 0,
                        });
                    }
                    if let Some(h) = self.history.as_mut() {
                        h.checkpoint(&b, snapshots, lengths)
                            .context("write checkpoint")?;
                        self.shared
                            .checkpoints
                            .store(h.written, std::sync::atomic::Ordering::Relaxed);
                        self.shared
                            .checkpoint_bytes
                            .store(h.last_bytes, std::sync::atomic::Ordering::Relaxed);
                        self.shared
                            .last_checkpoint
                            .store(b.n, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Deliver warning records to one webhook: POST JSON, retry with exponential backoff
/// (200 ms, 400 ms, … capped at 30 s), then give up on that record and count it failed.
fn run_webhook(
    w: WebhookConfig,
    rx: Receiver<Arc<String>>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(w.timeout))
        .http_status_as_error(true)
        .build()
        .into();
    let mut log = super::RateLog::new("webhook", Duration::from_secs(30));
    for body in rx.iter() {
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let r = agent
                .post(&w.url)
                .header("content-type", "application/json")
                .send(body.as_bytes());
            match r {
                Ok(_) => {
                    shared.webhook_delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if attempt < w.retries && !stop.load(Ordering::Relaxed) => {
                    if attempt == 0 {
                        log.log(format_args!("POST {}: {e} (retrying)", w.url));
                    }
                    attempt += 1;
                    shared.webhook_retries.fetch_add(1, Ordering::Relaxed);
                    if super::sleep_unless(&stop, backoff) {
                        shared.webhook_failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    log.log(format_args!(
                        "POST {}: {e}; record given up after {attempt} retries",
                        w.url
                    ));
                    shared.webhook_failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}
