//! The `forewarn serve` binary as an operator runs it (graceful SIGTERM, exit 0), and
//! webhooks with retries.
#![cfg(feature = "daemon")]

mod daemon_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::{free_port, http_get, metric, Mosquitto, TestClient, TestDaemon};

const RULES: &str = "\
feed rain: depth mm
rule wet on rain:
    warn when sum(rain, 1h) >= 10 mm
";

#[test]
fn serve_exits_0_on_sigterm_after_flushing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.rules"), RULES).unwrap();
    let http = free_port();
    let config = format!(
        r#"
rules = "r.rules"
[mqtt]
port = {}
client-id = "sig-fw"
[[subscription]]
topic = "sig-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:{http}"
[output]
warnings = "out/warnings.jsonl"
[output.mqtt]
prefix = "sig"
"#,
        broker.port
    );
    let path = dir.path().join("serve.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("forewarn serve starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&(l + "\n"));
            }
        });
    }
    let addr = format!("127.0.0.1:{http}").parse().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < end,
            "serve did not listen: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pubc = TestClient::connect(broker.port, "sig-pub", &[], true);
    pubc.publish(
        "sig-in/G1/rain",
        r#"{"ts":"2024-07-01T10:00:00+08:00","value":12}"#,
    );
    let end = Instant::now() + Duration::from_secs(10);
    while metric(
        &http_get(addr, "/metrics"),
        "forewarn_output_warnings_total",
    ) < 1.0
    {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "exit 0 on SIGTERM: {status}\n{}",
        log.lock().unwrap()
    );
    let warnings = std::fs::read_to_string(dir.path().join("out/warnings.jsonl")).unwrap();
    assert_eq!(warnings.lines().count(), 1, "flushed before exit");
    let st = TestClient::connect(broker.port, "sig-st", &["sig/status"], true);
    let m = st
        .wait_for(Duration::from_secs(5), |m| m.topic == "sig/status")
        .unwrap();
    assert_eq!(m.text(), "offline");
    assert!(log.lock().unwrap().contains("stopped"));
}

/// Requests a receiver saw: the status it answered and the body.
type Seen = Arc<Mutex<Vec<(u16, String)>>>;

/// A webhook receiver that fails the first `fail` requests with 500.
fn receiver(fail: usize) -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { break };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut seen = seen.lock().unwrap();
                let code = if seen.len() < fail { 500 } else { 200 };
                seen.push((code, String::from_utf8_lossy(&body).into_owned()));
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
    }
    (url, seen)
}

#[test]
fn webhooks_retry_with_backoff() {
    let broker = Mosquitto::start();
    let (url, seen) = receiver(2);
    let config = format!(
        r#"
rules = "r.rules"
[mqtt]
port = {}
client-id = "wh-fw"
[[subscription]]
topic = "wh-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:0"
[[output.webhook]]
url = "{url}"
retries = 3
timeout = "2s"
"#,
        broker.port
    );
    let d = TestDaemon::start(&[("r.rules", RULES)], &config);
    let pubc = TestClient::connect(broker.port, "wh-pub", &[], true);
    pubc.publish(
        "wh-in/G1/rain",
        r#"{"ts":"2024-07-01T10:00:00+08:00","value":12}"#,
    );
    assert_eq!(
        d.wait_metric(
            "forewarn_webhook_delivered_total",
            1.0,
            Duration::from_secs(10)
        ),
        1.0,
        "{}",
        d.metrics()
    );
    assert_eq!(d.metric("forewarn_webhook_retries_total"), 2.0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    let w: serde_json::Value = serde_json::from_str(&seen[2].1).unwrap();
    assert_eq!(
        (w["rule"].as_str(), w["kind"].as_str()),
        (Some("wet"), Some("raise"))
    );
}

#[test]
fn file_sources_are_replayed_into_the_shards() {
    let input = "\
{\"entity\":\"G1\",\"ts\":\"2024-07-01T10:00:00+08:00\",\"value\":4}
not json
[{\"entity\":\"G1\",\"ts\":\"2024-07-01T10:05:00+08:00\",\"value\":8},{\"entity\":\"G2\",\"ts\":\"2024-07-01T10:05:00+08:00\",\"value\":\"abc\"}]
";
    let config = r#"
rules = "r.rules"
[engine]
shards = 2
[[source]]
name = "history"
format = "jsonl"
path = "in.jsonl"
feed = "rain"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "w.jsonl"
dead-letter = "dead.jsonl"
"#;
    let mut d = TestDaemon::start(&[("r.rules", RULES), ("in.jsonl", input)], config);
    assert_eq!(
        d.wait_metric("forewarn_readings_in_total", 4.0, Duration::from_secs(10)),
        4.0,
        "{}",
        d.metrics()
    );
    assert_eq!(
        d.wait_metric(
            "forewarn_output_warnings_total",
            1.0,
            Duration::from_secs(5)
        ),
        1.0
    );
    d.shutdown();
    let w = std::fs::read_to_string(d.path("w.jsonl")).unwrap();
    assert!(
        w.contains("\"kind\":\"raise\"") && w.contains("\"entity\":\"G1\""),
        "{w}"
    );
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(d.path("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, u64)> = dead
        .iter()
        .map(|x| {
            (
                x["reason"].as_str().unwrap().to_string(),
                x["line"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("malformed".into(), 2), ("not_numeric".into(), 3)]
    );
    assert!(dead.iter().all(|x| x["source"] == "history"), "{dead:?}");
}

#[test]
fn tls_with_username_and_password() {
    let broker = Mosquitto::start_tls();
    let config = format!(
        r#"
rules = "r.rules"
[mqtt]
host = "127.0.0.1"
port = {}
client-id = "tls-fw"
username = "forewarn"
password = "secret"
[mqtt.tls]
ca-file = "{}"
[[subscription]]
topic = "tls-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "w.jsonl"
[output.mqtt]
prefix = "tls"
"#,
        broker.tls_port,
        broker.ca().display()
    );
    let d = TestDaemon::start(&[("r.rules", RULES)], &config);
    let end = Instant::now() + Duration::from_secs(10);
    while d.metric("forewarn_mqtt_connected") < 1.0 {
        assert!(Instant::now() < end, "no TLS connection: {}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-u",
            "forewarn",
            "-P",
            "secret",
            "-q",
            "1",
            "-t",
            "tls-in/G1/rain",
        ])
        .args(["-m", r#"{"ts":"2024-07-01T10:00:00+08:00","value":12}"#])
        .status()
        .expect("mosquitto_pub (mosquitto-clients)");
    assert!(status.success());
    assert_eq!(
        d.wait_metric(
            "forewarn_output_warnings_total",
            1.0,
            Duration::from_secs(10)
        ),
        1.0,
        "{}",
        d.metrics()
    );
    // the output connection is over TLS too
    assert_eq!(
        d.metric("forewarn_mqtt_published_total"),
        3.0,
        "warning, level, data status"
    );
}

#[test]
fn a_stuck_webhook_drops_and_counts_without_blocking_evaluation() {
    let broker = Mosquitto::start();
    // accepts connections and never answers
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    let config = format!(
        r#"
rules = "r.rules"
[mqtt]
port = {}
client-id = "stuck-fw"
[[subscription]]
topic = "stuck-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "w.jsonl"
[[output.webhook]]
url = "{url}"
retries = 0
timeout = "3s"
queue = 2
"#,
        broker.port
    );
    let mut d = TestDaemon::start(&[("r.rules", RULES)], &config);
    let pubc = TestClient::connect(broker.port, "stuck-pub", &[], true);
    for i in 0..20 {
        pubc.publish(
            &format!("stuck-in/E{i}/rain"),
            r#"{"ts":"2024-07-01T10:00:00+08:00","value":12}"#,
        );
    }
    // all 20 warnings are evaluated and written at once, whatever the webhook does
    assert_eq!(
        d.wait_metric(
            "forewarn_output_warnings_total",
            20.0,
            Duration::from_secs(5)
        ),
        20.0
    );
    let dropped = d.metric("forewarn_webhook_dropped_total");
    assert!(
        dropped >= 17.0,
        "one in flight, two queued, the rest dropped: {dropped}"
    );
    d.shutdown();
    assert_eq!(
        std::fs::read_to_string(d.path("w.jsonl"))
            .unwrap()
            .lines()
            .count(),
        20
    );
}
