//! Readings per second sustained through mosquitto, and reading → warning latency.
//!
//! Starts its own mosquitto (Debian package) on an ephemeral loopback port and the daemon
//! in-process (event clock, the Harvey rules), then publishes the Harvey HCFCD export — every
//! 5-minute row one JSON batch of ~150 readings, `--repeat` times shifted by 5 days — as fast
//! as one QoS 1 publisher can, and reports:
//!
//! * throughput: readings offered / seconds from the first publish until the daemon has read
//!   them all (so it covers broker, decoding, routing and evaluation);
//! * latency (HDR histograms): the daemon's own reading → warning latency (MQTT message
//!   receipt to the warning handed to the sink), and end to end: publish of the batch whose
//!   instant a warning carries → that warning received back from the broker.
//!
//! ```sh
//! cargo run --release -p forewarn-bench --bin mqtt_throughput -- --repeat 10 --shards 2
//! cargo run --release -p forewarn-bench --bin mqtt_throughput -- --repeat 2 --rate 1000
//! ```
//!
//! Unpaced, the latency figures are those of a burst (queueing included); `--rate` paces
//! the publisher to measure latency at a steady load below saturation.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forewarn_engine::daemon::{Daemon, ServeConfig};
use hdrhistogram::Histogram;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("response");
    r
}

fn main() {
    let repeat = arg("--repeat", 3);
    let shards = arg("--shards", 2);
    // messages per second; 0 = as fast as the publisher can (throughput run)
    let rate = arg("--rate", 0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();

    // mosquitto of our own
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("m.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\nmax_inflight_messages 100\nuser root\n"
        ),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.path().join("m.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt-get install mosquitto)");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }

    // the warnings coming back: (receipt, event time)
    let back: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let mut o = MqttOptions::new("bench-watch", "127.0.0.1", port);
    o.set_max_packet_size(1 << 24, 1 << 24);
    let (watch, mut wconn) = Client::new(o, 1000);
    {
        let back = Arc::clone(&back);
        let watch = watch.clone();
        std::thread::spawn(move || {
            for ev in wconn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = watch.try_subscribe("bench/warnings/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        let t = v["time"].as_str().unwrap_or_default().to_string();
                        back.lock().unwrap().push((now, t));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
    }

    let config = format!(
        r#"
rules = "{}"
[engine]
clock = "event"
shards = {shards}
queue = 1024
[mqtt]
port = {port}
client-id = "bench-fw"
[[subscription]]
topic = "bench-in/{{feed}}"
[http]
listen = "127.0.0.1:0"
[output.mqtt]
prefix = "bench"
"#,
        root.join("config/harvey.rules").display()
    );
    let cfg = ServeConfig::parse(&config, &dir.path().join("serve.toml")).unwrap();
    let daemon = Daemon::start(cfg).unwrap();
    let http = daemon.http_addr().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // the messages, serialized before timing
    let csv =
        std::fs::read_to_string(root.join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let t_col = header.iter().position(|h| *h == "end_time").unwrap();
    let rows: Vec<Vec<&str>> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new(); // (UTC time key, payload)
    let mut readings = 0u64;
    for rep in 0..repeat {
        for cells in &rows {
            let local =
                chrono::NaiveDateTime::parse_from_str(cells[t_col], "%Y-%m-%d %H:%M:%S").unwrap();
            let utc = local + chrono::Duration::hours(5) + chrono::Duration::days(5 * rep as i64);
            let ts = utc.and_utc().timestamp_millis();
            let batch: Vec<serde_json::Value> = header
                .iter()
                .zip(cells)
                .filter(|(h, c)| **h != "begin_time" && **h != "end_time" && !c.is_empty())
                .map(|(h, c)| {
                    let v: f64 = c.parse().unwrap_or(f64::NAN);
                    serde_json::json!({"entity": h, "ts": ts, "value": v})
                })
                .collect();
            readings += batch.len() as u64;
            messages.push((
                utc.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                serde_json::to_vec(&batch).unwrap(),
            ));
        }
    }
    let bytes: usize = messages.iter().map(|m| m.1.len()).sum();

    let mut o = MqttOptions::new("bench-pub", "127.0.0.1", port);
    o.set_max_packet_size(1 << 24, 1 << 24);
    o.set_inflight(100);
    let (publisher, mut pconn) = Client::new(o, 100_000);
    let acked = Arc::new(AtomicU64::new(0));
    {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            for ev in pconn.iter() {
                if let Ok(Event::Incoming(Packet::PubAck(_))) = ev {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut sent_at: std::collections::HashMap<String, Instant> = Default::default();
    let start = Instant::now();
    for (i, (t, payload)) in messages.iter().enumerate() {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        sent_at.insert(t.clone(), Instant::now());
        publisher
            .publish("bench-in/rain", QoS::AtLeastOnce, false, payload.clone())
            .unwrap();
    }
    let published = start.elapsed();
    while daemon.readings_in() < readings {
        std::thread::sleep(Duration::from_millis(5));
        if start.elapsed() > Duration::from_secs(600) {
            panic!("only {} of {readings} readings", daemon.readings_in());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500)); // let the last warnings and snapshots arrive
    let metrics = http_get(http, "/metrics");

    let mut e2e = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let back = back.lock().unwrap().clone();
    for (at, t) in &back {
        if let Some(s) = sent_at.get(t) {
            if *at >= *s {
                e2e.record((*at - *s).as_micros().max(1) as u64).unwrap();
            }
        }
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "forewarn MQTT throughput benchmark (mosquitto on loopback, event clock, Harvey rules)"
    );
    println!(
        "machine: {} cores; shards: {shards}; repeat: {repeat}; rate: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if rate > 0 {
            format!("{rate} messages/s")
        } else {
            "unpaced".into()
        }
    );
    println!(
        "published {} messages ({:.1} MB, {readings} readings) in {:.2} s",
        messages.len(),
        bytes as f64 / 1e6,
        published.as_secs_f64()
    );
    println!(
        "all readings read by the daemon after {secs:.2} s: {:.0} readings/s, {:.0} messages/s",
        readings as f64 / secs,
        messages.len() as f64 / secs
    );
    println!("warnings received back over MQTT: {}", back.len());
    println!("reading -> warning latency inside the daemon (receipt to sink), from /metrics:");
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("forewarn_reading_to_warning_seconds"))
    {
        println!("  {l}");
    }
    println!(
        "end to end (publish of the batch -> warning received back), {} warnings: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        e2e.len(),
        q(&e2e, 0.5),
        q(&e2e, 0.9),
        q(&e2e, 0.99),
        q(&e2e, 0.999),
        e2e.max() as f64 / 1000.0
    );
    daemon.shutdown().unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
}
