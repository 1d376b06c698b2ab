//! `forewarn serve` with `[history]`, killed with SIGKILL at random points while Harvey
//! streams in through a real mosquitto, and started again each time: in the end its
//! warnings, status events, dead letters and Parquet history equal those of a daemon that
//! ran through — none lost, none repeated — and every reading was evaluated exactly once.
#![cfg(all(feature = "daemon", feature = "history"))]

mod daemon_support;
mod durable_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{free_port, http_get, metric, Mosquitto, TestClient};
use durable_support::{history_rows, newest_checkpoint, Lcg};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    http: SocketAddr,
}

fn setup(broker: u16, client: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let text = format!(
        r#"
rules = "{rules}"
[engine]
clock = "event"
watermark-delay = "1m"
display-zone = "America/Chicago"
shards = 2
[mqtt]
port = {broker}
client-id = "{client}"
[[subscription]]
topic = "harvey/{{feed}}"
time-zone = "-05:00"
[http]
listen = "127.0.0.1:{http}"
[output]
warnings = "out/warnings.jsonl"
status = "out/status.jsonl"
dead-letter = "out/dead.jsonl"
[history]
dir = "history"
checkpoint-every = 5000
checkpoint-interval = "1h"
segment-rows = 60000
"#,
        rules = root().join("config/harvey.rules").display(),
    );
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, text).unwrap();
    Setup {
        dir,
        config,
        http: format!("127.0.0.1:{http}").parse().unwrap(),
    }
}

fn spawn(s: &Setup) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.path().join("serve.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .args(["serve", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("forewarn serve starts")
}

fn log(s: &Setup) -> String {
    std::fs::read_to_string(s.dir.path().join("serve.log")).unwrap_or_default()
}

/// The Harvey export as 1,440 JSON batches; and the number of readings.
fn harvey_batches() -> (Vec<Vec<u8>>, u64) {
    let csv =
        std::fs::read_to_string(root().join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let t_col = header.iter().position(|h| *h == "end_time").unwrap();
    let mut out = Vec::new();
    let mut n = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let ts = cells[t_col];
        let batch: Vec<Value> = header
            .iter()
            .zip(&cells)
            .filter(|(h, c)| **h != "begin_time" && **h != "end_time" && !c.trim().is_empty())
            .map(|(h, c)| {
                let value = c
                    .parse::<f64>()
                    .map_or_else(|_| Value::from(*c), Value::from);
                serde_json::json!({"entity": h, "ts": ts, "value": value})
            })
            .collect();
        n += batch.len() as u64;
        out.push(serde_json::to_vec(&batch).unwrap());
    }
    (out, n)
}

fn metrics(s: &Setup) -> Option<String> {
    // not up yet (or just killed): no answer
    std::net::TcpStream::connect(s.http).ok()?;
    std::panic::catch_unwind(|| http_get(s.http, "/metrics")).ok()
}

/// Wait until the daemon has read `n` readings (counters survive restarts in the
/// checkpointed engines: a reading evaluated twice would overshoot).
fn wait_read(s: &Setup, n: f64, timeout: Duration) {
    wait_metric(s, "forewarn_readings_in_total", n, timeout)
}

fn wait_metric(s: &Setup, series: &str, n: f64, timeout: Duration) {
    let end = Instant::now() + timeout;
    let mut last = 0.0;
    while Instant::now() < end {
        if let Some(m) = metrics(s) {
            last = metric(&m, series);
            if last >= n {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last, n, "{series}; the daemon said:\n{}", log(s));
}

fn sigterm(child: &mut Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            return;
        }
        assert!(Instant::now() < end, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of an output file, without wall-clock fields, sorted (shards interleave).
fn lines(dir: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("out").join(name)).unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("emitted_at");
            }
            v.to_string()
        })
        .collect();
    v.sort();
    v
}

struct Outcome {
    files: Vec<Vec<String>>,
    history: Vec<Vec<String>>,
}

fn outcome(dir: &Path) -> Outcome {
    Outcome {
        files: ["warnings.jsonl", "status.jsonl", "dead.jsonl"]
            .iter()
            .map(|f| lines(dir, f))
            .collect(),
        history: ["readings", "rejected", "warnings", "status"]
            .iter()
            .map(|k| history_rows(&dir.join("history"), k))
            .collect(),
    }
}

/// A daemon on a broker of its own (the same topics and client ids in every test, so that
/// records naming them compare equal), with the whole Harvey stream published to it.
fn start_streaming(batches: &[Vec<u8>]) -> (Mosquitto, Setup, Child) {
    let broker = Mosquitto::start();
    let s = setup(broker.port, "dc");
    let child = spawn(&s);
    // the daemon's session must exist before publishing (its first start subscribes)
    let end = Instant::now() + Duration::from_secs(30);
    while metrics(&s).is_none_or(|m| metric(&m, "forewarn_mqtt_connected") < 1.0) {
        assert!(Instant::now() < end, "daemon never connected:\n{}", log(&s));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let publisher = TestClient::connect(broker.port, "dc-pub", &[], true);
    for b in batches {
        publisher.publish("harvey/rain", b.clone());
    }
    publisher.wait_acked(batches.len() as u64, Duration::from_secs(120));
    (broker, s, child)
}

/// What a daemon that is never interrupted ends with.
fn reference(batches: &[Vec<u8>], readings: u64) -> Outcome {
    let (_broker, s, mut child) = start_streaming(batches);
    wait_read(&s, readings as f64, Duration::from_secs(300));
    sigterm(&mut child);
    let o = outcome(s.dir.path());
    assert!(o.files[0].len() > 4000, "{} warnings", o.files[0].len());
    assert_eq!(
        o.history[0].len() as u64,
        readings - 1,
        "accepted readings in the history"
    );
    assert_eq!(
        o.history[2].len(),
        o.files[0].len(),
        "warnings in the history"
    );
    o
}

#[test]
fn killed_at_random_points_the_daemon_ends_as_if_never_interrupted() {
    let (batches, readings) = harvey_batches();

    let reference = reference(&batches, readings);

    // The same stream into a daemon killed again and again.
    let seed = durable_support::seed();
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let (_broker, s, mut child) = start_streaming(&batches);
    let mut kills = Vec::new();
    while kills.len() < 10 {
        let target = newest_checkpoint(&s.dir.path().join("history")) + 1 + rng.next() % 3;
        let deadline = Instant::now() + Duration::from_secs(60);
        while newest_checkpoint(&s.dir.path().join("history")) < target && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        if newest_checkpoint(&s.dir.path().join("history")) < target {
            break; // the stream is done: no more checkpoints come
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push(newest_checkpoint(&s.dir.path().join("history")));
        child = spawn(&s);
    }
    eprintln!("killed after checkpoints {kills:?}");
    assert!(kills.len() >= 10, "only {} kills landed", kills.len());
    wait_read(&s, readings as f64, Duration::from_secs(300));
    let m = metrics(&s).unwrap_or_default();
    eprintln!(
        "redeliveries recognised: {}",
        metric(&m, "forewarn_mqtt_redeliveries_total")
    );
    sigterm(&mut child);
    let got = outcome(s.dir.path());
    for (i, name) in ["warnings", "status", "dead letters"].iter().enumerate() {
        if reference.files[i] != got.files[i] {
            let mut extra = got.files[i].clone();
            for l in &reference.files[i] {
                if let Some(p) = extra.iter().position(|x| x == l) {
                    extra.remove(p);
                }
            }
            let mut missing = reference.files[i].clone();
            for l in &got.files[i] {
                if let Some(p) = missing.iter().position(|x| x == l) {
                    missing.remove(p);
                }
            }
            let dump = std::env::temp_dir().join(format!("daemon_crash_{name}.diff"));
            let _ = std::fs::write(
                &dump,
                format!(
                    "extra:\n{}\nmissing:\n{}\n",
                    extra.join("\n"),
                    missing.join("\n")
                ),
            );
            eprintln!(
                "{name}: {} extra, e.g. {:?}\n{} missing, e.g. {:?}",
                extra.len(),
                extra.iter().take(3).collect::<Vec<_>>(),
                missing.len(),
                missing.iter().take(3).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            reference.files[i].len(),
            got.files[i].len(),
            "{name}: count (seed {seed})"
        );
        assert!(
            reference.files[i] == got.files[i],
            "{name} differ (seed {seed})"
        );
    }
    for (i, kind) in ["readings", "rejected", "warnings", "status"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            reference.history[i].len(),
            got.history[i].len(),
            "history {kind}: rows (seed {seed})"
        );
        assert!(
            reference.history[i] == got.history[i],
            "history {kind} differs (seed {seed})"
        );
    }
}

/// Both checkpoints damaged after a kill: the daemon rebuilds its state from the Parquet
/// history (the readings every shard has there, in arrival order), skips those readings when
/// it replays its input log, and goes on: every reading is in the history exactly once and
/// every warning of the uninterrupted run is there. (The transitions written in the instant
/// before the crash may be in the history twice: the history's last entries before the cut
/// can hold a shard's warnings without the readings that caused them.)
#[test]
fn both_checkpoints_damaged_the_daemon_rebuilds_from_its_history() {
    let (batches, readings) = harvey_batches();
    let reference = reference(&batches, readings);
    let (_broker, s, mut child) = start_streaming(&batches);
    // let it seal a segment (60,000 readings) and go on a little, then kill it
    let end = Instant::now() + Duration::from_secs(120);
    while newest_checkpoint(&s.dir.path().join("history")) < 15 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(37));
    child.kill().unwrap();
    child.wait().unwrap();
    for e in std::fs::read_dir(s.dir.path().join("history/_checkpoints")).unwrap() {
        std::fs::write(e.unwrap().path(), b"FWCKPT\0\0 damaged").unwrap();
    }
    let mut child = spawn(&s);
    wait_metric(
        &s,
        "forewarn_readings_accepted_total",
        (readings - 1) as f64,
        Duration::from_secs(300),
    );
    sigterm(&mut child);
    assert!(
        log(&s).contains("state rebuilt from the history"),
        "{}",
        log(&s)
    );
    let got = outcome(s.dir.path());
    // readings: exactly once each
    assert_eq!(
        reference.history[0].len(),
        got.history[0].len(),
        "history readings"
    );
    assert!(
        reference.history[0] == got.history[0],
        "history readings differ"
    );
    // warnings and status: all of them, at most the crash instant's twice
    for (i, kind) in [(2, "warnings"), (3, "status")] {
        let mut g = got.history[i].clone();
        g.dedup();
        assert!(
            reference.history[i] == g,
            "history {kind} differ (duplicates removed)"
        );
        assert!(
            got.history[i].len() - reference.history[i].len() <= 20,
            "history {kind}: {} rows, {} expected",
            got.history[i].len(),
            reference.history[i].len()
        );
    }
}
