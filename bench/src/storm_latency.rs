//! `storm latency`: reading → decision and reading → warning latency at a fixed offered load,
//! corrected for coordinated omission.
//!
//! Reading `i` has an intended send time `start + i / R`. Latencies are measured from that
//! intended time, never from the moment the reading could actually be sent: when the engine
//! stalls, the readings queued behind the stall are late by the whole stall, and that shows in
//! every one of them. The readings are those of the events file in file order, replayed as
//! many times as the run needs with their event times shifted by the file's time span (plus
//! one 5-minute step) per replay, for `seconds × R` readings in all.
//!
//! The rules are `bench/storm.rules` without the feed's `reorder 15m`, as a live feed runs
//! them: a reorder delay holds every reading back by 15 minutes of event time by design, so
//! with it no reading would cause its warning at once. Readings that arrive late (the file
//! has a few, up to 15 minutes) are then applied late (the feed's default `late 15m`).
//!
//! * **In process** ([`in_process`]): one thread is both the feeder and the engine. It waits
//!   (spinning, yielding when far ahead) until reading `i`'s intended time — or does not wait
//!   at all when the engine is behind, never skipping a reading — pushes it into the
//!   [`Engine`], and records `end of the push − intended time` for every reading (reading →
//!   decision) and, for every transition the push handed to the sink, `time the warning
//!   reached the sink − intended time` (reading → warning). There is no queue between feeder
//!   and engine: the latency is the engine's own (evaluation plus the backlog it builds when
//!   it cannot keep up). With `shards` > 1, one such thread per shard, each with its own
//!   engine and the gauges the daemon would route to it (fed at the same global schedule and
//!   told the stream's newest event time, as the daemon's shards are).
//! * **Through mosquitto** ([`through_mqtt`]): a mosquitto of our own on a loopback port, the
//!   forewarn daemon in-process (event clock, the same rules, subscribed to `storm-in`, output
//!   under `storm/`), a paced publisher and a subscriber to `storm/warnings/#`. Readings are
//!   published as JSON arrays of `batch` consecutive readings (one QoS 1 message), each
//!   message at the intended time of its last reading, so the batching delay counts in the
//!   latency of the earlier readings of a message. The latency of a warning is its arrival at
//!   the subscriber − the intended time of the reading it names (`entity` and `time`; warnings
//!   that name no reading — caused by a late reading or by time passing — are counted, not
//!   measured). The daemon's own figure (MQTT receipt → sink, from `/metrics`, not corrected
//!   for coordinated omission) is reported beside it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forewarn_engine::daemon::{Daemon, ServeConfig};
use forewarn_engine::loader::FsTableLoader;
use forewarn_engine::{
    Engine, Reading, Rejection, Sink, StatusEvent, TransitionKind, Value, Warning,
};
use forewarn_rules::ir::Plan;
use hdrhistogram::Histogram;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use crate::storm::{self, RULES};
use crate::storm_core::{self, shard_of, Decoded};

/// The storm data's time step (5 minutes).
pub const STEP_MS: i64 = 300_000;

/// The text of `bench/storm.rules` without the feed's reorder delay.
pub fn rules_text_no_reorder() -> anyhow::Result<String> {
    let path = storm::rules_path();
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        text.contains(", reorder 15m"),
        "{} no longer declares `, reorder 15m`: update storm_latency",
        path.display()
    );
    Ok(text.replace(", reorder 15m", ""))
}

/// The storm rules without the reorder delay, compiled with the dataset's thresholds.
pub fn plan_no_reorder(thresholds: &Path) -> anyhow::Result<Plan> {
    let text = rules_text_no_reorder()?;
    let rules = storm::rules_path();
    let loader = FsTableLoader {
        base: rules.parent().unwrap_or(Path::new(".")).to_path_buf(),
        overrides: HashMap::from([("thresholds.csv".to_string(), thresholds.to_path_buf())]),
    };
    let compiled = forewarn_rules::compile(&text, "storm.rules (no reorder)", &loader)
        .map_err(|d| anyhow::anyhow!("storm rules without reorder:\n{}", d.render(false)))?;
    for (i, (name, _, _)) in RULES.iter().enumerate() {
        anyhow::ensure!(
            compiled.plan.rules.get(i).map(|r| r.name.as_str()) == Some(name),
            "storm.rules must declare the rules yellow, orange, red in that order"
        );
    }
    anyhow::ensure!(
        compiled.plan.feeds.iter().all(|f| f.reorder == 0),
        "the storm rules still hold readings back"
    );
    Ok(compiled.plan)
}

/// What a latency run offers.
#[derive(Debug, Clone, Copy)]
pub struct LatencyOptions {
    /// Offered load, readings per second.
    pub rate: f64,
    /// How long the load is offered, seconds (`rate × seconds` readings).
    pub seconds: f64,
    /// Engines. In process: feeder threads, each with its own engine and the gauges of its
    /// shard (default 1). MQTT: the daemon's evaluator shards (default: the number of cores,
    /// as the daemon).
    pub shards: Option<usize>,
    /// MQTT: readings per message (default: `ceil(rate / 2000)`, about 2,000 messages/s).
    pub batch: Option<usize>,
}

impl LatencyOptions {
    /// Readings in the run.
    pub fn readings(&self) -> u64 {
        (self.rate * self.seconds).round().max(1.0) as u64
    }

    /// MQTT readings per message.
    pub fn batch(&self) -> usize {
        self.batch
            .unwrap_or_else(|| (self.rate / 2000.0).ceil() as usize)
            .max(1)
    }
}

/// Details of a run through mosquitto.
#[derive(Debug, Clone, Serialize)]
pub struct MqttDetails {
    /// Readings per message.
    pub batch: usize,
    /// Messages published.
    pub messages: u64,
    /// Readings per second the publisher managed (readings ÷ time of the last publish).
    pub published_per_s: f64,
    /// Largest delay of a publish behind its intended time, µs.
    pub publisher_max_lag_us: f64,
    /// Warning records received from the broker (the sentinels' excluded).
    pub warnings_received: u64,
    /// Received warnings that name no reading of the run (caused by a late reading or by time
    /// passing), not measured.
    pub warnings_unmatched: u64,
    /// The daemon's own reading → warning latency (MQTT receipt → sink), from `/metrics`.
    pub daemon_p50_us: Option<f64>,
    /// 99th percentile of the same.
    pub daemon_p99_us: Option<f64>,
    /// 99.9th percentile of the same.
    pub daemon_p999_us: Option<f64>,
    /// Maximum of the same.
    pub daemon_max_us: Option<f64>,
    /// Warnings behind the daemon's figures.
    pub daemon_count: Option<u64>,
}

/// What `storm latency` measured. Latencies in µs.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// `in-process` or `mqtt`.
    pub transport: String,
    /// Engines: in process, feeder threads each with its own engine (gauges split as the
    /// daemon splits them); via MQTT, the daemon's evaluator shards.
    pub shards: usize,
    /// What `n` and the percentiles measure.
    pub measures: String,
    /// Offered load, readings/s.
    pub offered_per_s: f64,
    /// Readings processed per second: readings ÷ (end of the last one − start).
    pub achieved_per_s: f64,
    /// Requested duration, seconds.
    pub seconds: f64,
    /// From the first intended send time to the end of the last reading, seconds.
    pub elapsed_s: f64,
    /// Readings offered.
    pub readings: u64,
    /// Times the file was replayed (partly, for the last).
    pub replays: f64,
    /// Latencies measured: every reading in process, every attributable warning via MQTT.
    pub n: u64,
    /// Median latency.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Reading → warning latencies measured (transitions of any kind).
    pub warnings: u64,
    /// Median reading → warning latency.
    pub warning_p50_us: Option<f64>,
    /// 99th percentile of the same.
    pub warning_p99_us: Option<f64>,
    /// Maximum of the same.
    pub warning_max_us: Option<f64>,
    /// `raise` transitions (in process; via MQTT those received).
    pub raises: u64,
    /// Readings the engine rejected.
    pub rejected: u64,
    /// In process: times the feeding thread was preempted during the run (involuntary
    /// context switches, `/proc/thread-self/status`): on a shared machine each one can put
    /// milliseconds into the tail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u64>,
    /// Always true: a latency run is not the workload's answer (no edges to check).
    pub partial: bool,
    /// Through mosquitto only.
    #[serde(flatten)]
    pub mqtt: Option<MqttDetails>,
}

/// A latency histogram in ns, 1 ns .. 1 h, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// Wait until `t` (sleeping when more than 2 ms ahead, yielding when more than 200 µs ahead,
/// spinning otherwise); returns the time the wait ended.
pub fn wait_until(t: Instant) -> Instant {
    loop {
        let now = Instant::now();
        if now >= t {
            return now;
        }
        let rem = t - now;
        if rem > Duration::from_millis(2) {
            std::thread::sleep(rem - Duration::from_millis(1));
        } else if rem > Duration::from_micros(200) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The events file replayed: reading `i` is the file's reading `i mod len`, its event time
/// shifted by `(i div len) × span`.
#[derive(Debug)]
pub struct Replay<'a> {
    decoded: &'a Decoded,
    lo: i64,
    span: i64,
}

impl<'a> Replay<'a> {
    /// A replay of `decoded` (not empty).
    pub fn new(decoded: &'a Decoded) -> anyhow::Result<Replay<'a>> {
        anyhow::ensure!(!decoded.readings.is_empty(), "the events file is empty");
        let (lo, hi) = decoded.time_range();
        Ok(Replay {
            decoded,
            lo,
            span: hi - lo + STEP_MS,
        })
    }

    /// Reading `i`: (station index, event time, value).
    pub fn get(&self, i: u64) -> (u32, i64, f64) {
        let len = self.decoded.readings.len() as u64;
        let p = self.decoded.readings[(i % len) as usize];
        (p.entity, p.ts + (i / len) as i64 * self.span, p.value)
    }

    /// The station name of an index.
    pub fn name(&self, entity: u32) -> &'a str {
        &self.decoded.names[entity as usize]
    }

    /// Replays needed for `n` readings.
    pub fn replays(&self, n: u64) -> f64 {
        n as f64 / self.decoded.readings.len() as f64
    }
}

/// Involuntary context switches of the calling thread so far.
fn involuntary_switches() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The intended send time of reading `i` at `rate` readings/s.
fn intended(start: Instant, i: u64, rate: f64) -> Instant {
    start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64)
}

/// Notes when each transition reaches the sink.
#[derive(Debug, Default)]
struct TimedSink {
    warn_at: Vec<Instant>,
    warnings: u64,
    raises: u64,
    rejected: u64,
}

impl Sink for TimedSink {
    fn warning(&mut self, w: Warning) {
        self.warn_at.push(Instant::now());
        self.warnings += 1;
        if w.kind == TransitionKind::Raise {
            self.raises += 1;
        }
    }
    fn status(&mut self, _s: StatusEvent) {}
    fn rejected(&mut self, _r: Rejection) {
        self.rejected += 1;
    }
}

/// What one in-process feeder measured.
#[derive(Debug)]
struct Fed {
    all: Histogram<u64>,
    warn: Histogram<u64>,
    sink: TimedSink,
    end: Instant,
    preempted: Option<u64>,
}

/// Feed the readings of `shard` (of `shards`; all of them with one) into one engine, each at
/// its intended time. With several shards the engine is told the stream's newest event time
/// before each of its readings, as the daemon's shards are.
#[allow(clippy::too_many_arguments)]
fn feed_shard(
    plan: Arc<Plan>,
    replay: &Replay<'_>,
    shard_of_entity: &[usize],
    shard: usize,
    shards: usize,
    n: u64,
    rate: f64,
    start: Instant,
) -> anyhow::Result<Fed> {
    let mut engine = Engine::new(plan, storm::engine_config(false));
    let feed = engine
        .feed("rain")
        .ok_or_else(|| anyhow::anyhow!("storm.rules declares no feed rain"))?;
    let mut sink = TimedSink::default();
    let (mut all, mut warn) = (histogram(), histogram());
    let switches_before = involuntary_switches();
    let (mut stream, mut told) = (i64::MIN, i64::MIN);
    let mut now = Instant::now();
    for i in 0..n {
        let (entity, ts, value) = replay.get(i);
        if shards > 1 {
            if shard_of_entity[entity as usize] != shard {
                stream = stream.max(ts);
                continue;
            }
            if stream > told {
                sink.warn_at.clear();
                engine.observe_stream_time(stream, &mut sink);
                told = stream;
            }
            stream = stream.max(ts);
        }
        let due = intended(start, i, rate);
        if now < due {
            wait_until(due);
        }
        // rejections reach the sink and are counted there
        let _ = engine.push(
            &Reading {
                entity: replay.name(entity),
                feed,
                ts,
                value: Value::Num(value),
                tag: i,
            },
            &mut sink,
        );
        now = Instant::now();
        all.saturating_record(ns(now.saturating_duration_since(due)));
        for &w in &sink.warn_at {
            warn.saturating_record(ns(w.saturating_duration_since(due)));
        }
        sink.warn_at.clear();
    }
    let preempted = involuntary_switches()
        .zip(switches_before)
        .map(|(a, b)| a.saturating_sub(b));
    Ok(Fed {
        all,
        warn,
        sink,
        end: now,
        preempted,
    })
}

/// In process: one thread (with `shards`, one per shard, gauges split as the daemon splits
/// them) feeds the readings at their intended times into its engine.
pub fn in_process(
    events: &Path,
    thresholds: &Path,
    opts: &LatencyOptions,
) -> anyhow::Result<LatencyReport> {
    anyhow::ensure!(
        opts.rate > 0.0 && opts.seconds > 0.0,
        "rate and seconds must be > 0"
    );
    let plan = Arc::new(plan_no_reorder(thresholds)?);
    let decoded = storm_core::decode_file(events)?;
    let replay = Replay::new(&decoded)?;
    let n = opts.readings();
    let shards = opts.shards.unwrap_or(1).max(1);
    let shard_of_entity: Vec<usize> = decoded
        .names
        .iter()
        .map(|name| shard_of(name, shards))
        .collect();
    let start = Instant::now() + Duration::from_millis(if shards > 1 { 20 } else { 1 });
    let fed: Vec<Fed> = if shards == 1 {
        vec![feed_shard(
            plan,
            &replay,
            &shard_of_entity,
            0,
            1,
            n,
            opts.rate,
            start,
        )?]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..shards)
                .map(|s| {
                    let plan = Arc::clone(&plan);
                    let (replay, shard_of_entity) = (&replay, &shard_of_entity);
                    scope.spawn(move || {
                        feed_shard(
                            plan,
                            replay,
                            shard_of_entity,
                            s,
                            shards,
                            n,
                            opts.rate,
                            start,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("feeder thread panicked"))
                .collect::<anyhow::Result<Vec<Fed>>>()
        })?
    };
    let (mut all, mut warn) = (histogram(), histogram());
    let mut sink = TimedSink::default();
    let mut end = start;
    let mut preempted = Some(0u64);
    for f in &fed {
        all.add(&f.all)
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        warn.add(&f.warn)
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        sink.raises += f.sink.raises;
        sink.rejected += f.sink.rejected;
        end = end.max(f.end);
        preempted = preempted.zip(f.preempted).map(|(a, b)| a + b);
    }
    let elapsed = end.saturating_duration_since(start).as_secs_f64();
    let some = |h: &Histogram<u64>, q: f64| (!h.is_empty()).then(|| us(h, q));
    Ok(LatencyReport {
        transport: "in-process".into(),
        shards,
        measures: "every reading: end of its evaluation - its intended send time (reading -> \
                   decision); warning_*: each transition handed to the sink - the intended \
                   send time of the reading being pushed"
            .into(),
        offered_per_s: opts.rate,
        achieved_per_s: n as f64 / elapsed.max(1e-12),
        seconds: opts.seconds,
        elapsed_s: elapsed,
        readings: n,
        replays: replay.replays(n),
        n: all.len(),
        p50_us: us(&all, 0.5),
        p90_us: us(&all, 0.9),
        p99_us: us(&all, 0.99),
        p999_us: us(&all, 0.999),
        max_us: all.max() as f64 / 1e3,
        warnings: warn.len(),
        warning_p50_us: some(&warn, 0.5),
        warning_p99_us: some(&warn, 0.99),
        warning_max_us: (!warn.is_empty()).then(|| warn.max() as f64 / 1e3),
        raises: sink.raises,
        rejected: sink.rejected,
        preempted,
        partial: true,
        mqtt: None,
    })
}

/// The mosquitto binary: `/usr/sbin/mosquitto` or `mosquitto` on `PATH`.
pub fn mosquitto_binary() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
    })
}

/// A mosquitto of our own on an ephemeral loopback port (anonymous, no persistence), killed
/// on drop.
#[derive(Debug)]
pub struct Mosquitto {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start one and wait until it accepts connections.
    pub fn start() -> anyhow::Result<Mosquitto> {
        let bin = mosquitto_binary().ok_or_else(|| {
            anyhow::anyhow!("mosquitto is not installed (apt-get install mosquitto)")
        })?;
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 1000000\nmax_inflight_messages 100\nuser root\n"
            ),
        )?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
        let m = Mosquitto {
            port,
            child,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < end,
                "mosquitto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r)
}

/// A value of the Prometheus text `metrics`: the line starting with `name` followed by a
/// space.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Names of sentinel gauges, one per shard (`shard_of(name) == shard`).
fn sentinels(shards: usize) -> Vec<String> {
    (0..shards)
        .map(|s| {
            (0u64..)
                .map(|k| format!("zz-sentinel-{k}"))
                .find(|name| shard_of(name, shards) == s)
                .expect("some name lands in every shard")
        })
        .collect()
}

/// One JSON reading as published.
fn json_reading(out: &mut String, entity: &str, ts: i64, value: f64) {
    use std::fmt::Write as _;
    let entity = serde_json::Value::from(entity);
    let _ = write!(out, r#"{{"entity":{entity},"ts":{ts},"value":{value}}}"#);
}

/// Through mosquitto: the daemon in process, a paced publisher, a subscriber to the
/// warnings. See the module documentation.
pub fn through_mqtt(
    events: &Path,
    thresholds: &Path,
    opts: &LatencyOptions,
) -> anyhow::Result<LatencyReport> {
    anyhow::ensure!(
        opts.rate > 0.0 && opts.seconds > 0.0,
        "rate and seconds must be > 0"
    );
    let decoded = storm_core::decode_file(events)?;
    let replay = Replay::new(&decoded)?;
    let n = opts.readings();
    let batch = opts.batch();
    let shards = opts
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |c| c.get()))
        .max(1);

    // the rules without reorder, next to a copy of the thresholds with one sentinel gauge per
    // shard that every reading puts over all three thresholds: when the sentinels' warnings
    // are back, each shard has evaluated everything published before them
    let dir = tempfile::tempdir()?;
    let sentinel_names = sentinels(shards);
    std::fs::write(dir.path().join("storm.rules"), rules_text_no_reorder()?)?;
    let mut table = std::fs::read_to_string(thresholds)
        .map_err(|e| anyhow::anyhow!("{}: {e}", thresholds.display()))?;
    if !table.ends_with('\n') {
        table.push('\n');
    }
    for s in &sentinel_names {
        table.push_str(&format!("{s},0.05,0.05,0.05\n"));
    }
    std::fs::write(dir.path().join("thresholds.csv"), table)?;

    // the messages, serialized before anything is timed
    let n_messages = n.div_ceil(batch as u64);
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(n_messages as usize);
    let mut s = String::new();
    for m in 0..n_messages {
        s.clear();
        s.push('[');
        for i in m * batch as u64..((m + 1) * batch as u64).min(n) {
            if s.len() > 1 {
                s.push(',');
            }
            let (e, ts, v) = replay.get(i);
            json_reading(&mut s, replay.name(e), ts, v);
        }
        s.push(']');
        messages.push(s.as_bytes().to_vec());
    }
    let last_ts = replay.get(n - 1).1;
    let mut sentinel_msg = String::from("[");
    for (k, name) in sentinel_names.iter().enumerate() {
        if k > 0 {
            sentinel_msg.push(',');
        }
        json_reading(&mut sentinel_msg, name, last_ts, 1.0);
    }
    sentinel_msg.push(']');
    // (entity, event time of the first replay) -> index in the file
    let mut index: HashMap<(u32, i64), u32> = HashMap::with_capacity(decoded.readings.len());
    for (j, p) in decoded.readings.iter().enumerate() {
        index.entry((p.entity, p.ts)).or_insert(j as u32);
    }
    let ids: HashMap<&str, u32> = decoded
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();

    let broker = Mosquitto::start()?;
    let port = broker.port;
    let config = format!(
        r#"
rules = "{rules}"
[engine]
clock = "event"
shards = {shards}
queue = 1024
[mqtt]
port = {port}
client-id = "storm-latency-{pid}"
[[subscription]]
topic = "storm-in"
feed = "rain"
[http]
listen = "127.0.0.1:0"
[output.mqtt]
prefix = "storm"
"#,
        rules = dir.path().join("storm.rules").display(),
        pid = std::process::id(),
    );
    let cfg = ServeConfig::parse(&config, &dir.path().join("serve.toml"))
        .map_err(|e| anyhow::anyhow!("daemon configuration: {e}"))?;
    let daemon = Daemon::start(cfg)?;
    let http = daemon
        .http_addr()
        .ok_or_else(|| anyhow::anyhow!("the daemon has no HTTP address"))?;
    let result = drive(
        &daemon,
        http,
        port,
        &messages,
        &sentinel_msg,
        &sentinel_names,
        n,
        batch,
        opts,
    );
    let shutdown = daemon.shutdown();
    drop(broker);
    let run = result?;
    shutdown?;

    // attribute the warnings (untimed)
    let mut e2e = histogram();
    let (mut received, mut unmatched, mut raises) = (0u64, 0u64, 0u64);
    for (at, payload) in &run.warnings {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let entity = v["entity"].as_str().unwrap_or_default();
        if sentinel_names.iter().any(|s| s == entity) {
            continue;
        }
        received += 1;
        if v["kind"].as_str() == Some("raise") {
            raises += 1;
        }
        let ts = v["time"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        let late = v["late"].as_bool().unwrap_or(false);
        let i = match (ids.get(entity), ts, late) {
            (Some(&e), Some(ts), false) => {
                let k = (ts - replay.lo).div_euclid(replay.span);
                let base = ts - k * replay.span;
                index
                    .get(&(e, base))
                    .map(|&j| k as u64 * decoded.readings.len() as u64 + u64::from(j))
                    .filter(|&i| k >= 0 && i < n)
            }
            _ => None,
        };
        match i {
            Some(i) => {
                let due = intended(run.start, i, opts.rate);
                e2e.saturating_record(ns(at.saturating_duration_since(due)));
            }
            None => unmatched += 1,
        }
    }
    let metrics = run.metrics.as_str();
    let q = |p: &str| {
        metric(
            metrics,
            &format!("forewarn_reading_to_warning_seconds{{quantile=\"{p}\"}}"),
        )
        .map(|s| s * 1e6)
    };
    let some = |h: &Histogram<u64>, p: f64| (!h.is_empty()).then(|| us(h, p));
    let elapsed = run.done.saturating_duration_since(run.start).as_secs_f64();
    Ok(LatencyReport {
        transport: "mqtt".into(),
        shards,
        measures: "every warning that names a reading of the run: its arrival at an MQTT \
                   subscriber - the intended send time of that reading (publisher -> mosquitto \
                   -> daemon -> mosquitto -> subscriber)"
            .into(),
        offered_per_s: opts.rate,
        achieved_per_s: n as f64 / elapsed.max(1e-12),
        seconds: opts.seconds,
        elapsed_s: elapsed,
        readings: n,
        replays: replay.replays(n),
        n: e2e.len(),
        p50_us: some(&e2e, 0.5).unwrap_or(0.0),
        p90_us: some(&e2e, 0.9).unwrap_or(0.0),
        p99_us: some(&e2e, 0.99).unwrap_or(0.0),
        p999_us: some(&e2e, 0.999).unwrap_or(0.0),
        max_us: e2e.max() as f64 / 1e3,
        warnings: e2e.len(),
        warning_p50_us: some(&e2e, 0.5),
        warning_p99_us: some(&e2e, 0.99),
        warning_max_us: (!e2e.is_empty()).then(|| e2e.max() as f64 / 1e3),
        raises,
        rejected: metric(metrics, "forewarn_output_dead_letters_total").unwrap_or(0.0) as u64,
        preempted: None,
        partial: true,
        mqtt: Some(MqttDetails {
            batch,
            messages: messages.len() as u64,
            published_per_s: n as f64
                / run
                    .published
                    .saturating_duration_since(run.start)
                    .as_secs_f64()
                    .max(1e-12),
            publisher_max_lag_us: run.max_lag.as_nanos() as f64 / 1e3,
            warnings_received: received,
            warnings_unmatched: unmatched,
            daemon_p50_us: q("0.5"),
            daemon_p99_us: q("0.99"),
            daemon_p999_us: q("0.999"),
            daemon_max_us: q("1"),
            daemon_count: metric(metrics, "forewarn_reading_to_warning_seconds_count")
                .map(|c| c as u64),
        }),
    })
}

/// Warning records received: (arrival, payload).
type Received = Vec<(Instant, Vec<u8>)>;

/// What the timed part of an MQTT run saw.
#[derive(Debug)]
struct MqttRun {
    start: Instant,
    published: Instant,
    done: Instant,
    max_lag: Duration,
    warnings: Received,
    metrics: String,
}

/// Connect an MQTT client; `on_publish` gets every incoming publish; returns the client once
/// connected (and, with `subscribe`, subscribed).
fn client(
    id: &str,
    port: u16,
    subscribe: Option<&'static str>,
    on_publish: impl Fn(Instant, &[u8]) + Send + 'static,
) -> anyhow::Result<Client> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 24, 1 << 24);
    o.set_inflight(100);
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut conn) = Client::new(o, 100_000);
    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = Arc::clone(&ready);
        let c = c.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        on_publish(Instant::now(), &p.payload)
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => match subscribe {
                        Some(t) => {
                            let _ = c.try_subscribe(t, QoS::AtLeastOnce);
                        }
                        None => ready.store(true, Ordering::SeqCst),
                    },
                    Ok(Event::Incoming(Packet::SubAck(_))) => ready.store(true, Ordering::SeqCst),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !ready.load(Ordering::SeqCst) {
        anyhow::ensure!(Instant::now() < end, "MQTT client {id} did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(c)
}

#[allow(clippy::too_many_arguments)]
fn drive(
    daemon: &Daemon,
    http: SocketAddr,
    port: u16,
    messages: &[Vec<u8>],
    sentinel_msg: &str,
    sentinel_names: &[String],
    n: u64,
    batch: usize,
    opts: &LatencyOptions,
) -> anyhow::Result<MqttRun> {
    // the daemon connected and subscribed
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(http, "/metrics").unwrap_or_default();
        if metric(&m, "forewarn_mqtt_connected") == Some(1.0) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < end,
            "the daemon did not connect to mosquitto"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let warnings: Arc<Mutex<Received>> = Arc::default();
    let sentinel_hits = Arc::new(AtomicU64::new(0));
    let watch = {
        let warnings = Arc::clone(&warnings);
        let hits = Arc::clone(&sentinel_hits);
        let marker: Vec<Vec<u8>> = sentinel_names
            .iter()
            .map(|s| format!("\"entity\":\"{s}\"").into_bytes())
            .collect();
        client(
            "storm-watch",
            port,
            Some("storm/warnings/#"),
            move |at, payload| {
                if marker
                    .iter()
                    .any(|m| payload.windows(m.len()).any(|w| w == m.as_slice()))
                {
                    hits.fetch_add(1, Ordering::SeqCst);
                }
                warnings
                    .lock()
                    .expect("warnings")
                    .push((at, payload.to_vec()));
            },
        )?
    };
    let publisher = client("storm-pub", port, None, |_, _| {})?;

    let start = Instant::now() + Duration::from_millis(5);
    let mut max_lag = Duration::ZERO;
    for (m, payload) in messages.iter().enumerate() {
        let last = ((m as u64 + 1) * batch as u64).min(n) - 1;
        let due = intended(start, last, opts.rate);
        let now = wait_until(due);
        max_lag = max_lag.max(now - due);
        publisher.publish("storm-in", QoS::AtLeastOnce, false, payload.clone())?;
    }
    let published = Instant::now();
    publisher.publish(
        "storm-in",
        QoS::AtLeastOnce,
        false,
        sentinel_msg.as_bytes().to_vec(),
    )?;
    // every shard raises its sentinel's three rules once it has evaluated all before it
    let want = 3 * sentinel_names.len() as u64;
    let limit = Instant::now() + Duration::from_secs_f64((10.0 * opts.seconds).max(120.0));
    while sentinel_hits.load(Ordering::SeqCst) < want {
        anyhow::ensure!(
            Instant::now() < limit,
            "the daemon did not finish: {} of {} readings read, {} of {want} sentinel warnings back",
            daemon.readings_in(),
            n + sentinel_names.len() as u64,
            sentinel_hits.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let done = {
        let w = warnings.lock().expect("warnings");
        w.iter()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or_else(Instant::now)
    };
    // stragglers of the other shards' outputs
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http_get(http, "/metrics")?;
    let _ = publisher.disconnect();
    let _ = watch.disconnect();
    let warnings = std::mem::take(&mut *warnings.lock().expect("warnings"));
    Ok(MqttRun {
        start,
        published,
        done,
        max_lag,
        warnings,
        metrics,
    })
}
