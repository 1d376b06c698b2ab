//! Reloading rules in a running daemon (SIGHUP, `POST /reload`): state is kept, a lowered
//! threshold raises at once, a new 3 h rule sees the readings from before the reload, bad
//! rules are refused with their diagnostics while the old ones stay in force — and with
//! `[history]`, a crash after the reload replays it at its place in the input.
//!
//! Expected warnings are worked out by hand in the comments.
#![cfg(all(feature = "daemon", feature = "history"))]

mod daemon_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{free_port, http_get, metric, Mosquitto, TestClient};
use serde_json::Value;

const V1: &str = "\
feed rain: depth mm
rule wet on rain:
    warn when sum(rain, 1h) >= 10 mm
";

const V2: &str = "\
feed rain: depth mm
rule wet on rain:
    warn when sum(rain, 1h) >= 5 mm
rule soaked on rain:
    warn when sum(rain, 3h) >= 12 mm
";

const BROKEN: &str = "\
feed rain: depth mm
rule wet on rain:
    warn when sum(rain, 1h) >= 5 parsecs
";

fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(70))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|x| x.1.to_string());
    (code, body.unwrap_or_default())
}

struct Serve {
    dir: tempfile::TempDir,
    http: SocketAddr,
    child: Option<Child>,
}

impl Serve {
    fn new(broker: u16) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        std::fs::write(dir.path().join("r.rules"), V1).unwrap();
        let config = format!(
            r#"
rules = "r.rules"
[engine]
clock = "event"
watermark-delay = "0s"
[mqtt]
port = {broker}
client-id = "rl-fw"
[[subscription]]
topic = "rl/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:{http}"
[output]
warnings = "out/warnings.jsonl"
[history]
dir = "history"
checkpoint-every = 100000
"#
        );
        std::fs::write(dir.path().join("serve.toml"), config).unwrap();
        let mut s = Serve {
            dir,
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            child: None,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_forewarn"))
                .args(["serve", "--config"])
                .arg(self.dir.path().join("serve.toml"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(self.http).is_ok() {
                let m = http_get(self.http, "/metrics");
                if metric(&m, "forewarn_mqtt_connected") >= 1.0 {
                    break;
                }
            }
            assert!(Instant::now() < end, "daemon not up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn rules(&self, text: &str) {
        std::fs::write(self.dir.path().join("r.rules"), text).unwrap();
    }

    fn wait_read(&self, n: f64) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let m = http_get(self.http, "/metrics");
            if metric(&m, "forewarn_readings_in_total") >= n {
                return;
            }
            assert!(Instant::now() < end, "readings not read:\n{m}");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn signal(&mut self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args([sig, &pid]).status().unwrap();
    }

    fn kill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn stop(&mut self) {
        self.signal("-TERM");
        let mut c = self.child.take().unwrap();
        let st = c.wait().unwrap();
        assert!(st.success(), "{st}\n{}", self.log());
    }

    /// (rule, kind, local minute offset from T, seq) of every warning written.
    fn warnings(&self, t0: i64) -> Vec<(String, String, i64, u64)> {
        let text =
            std::fs::read_to_string(self.dir.path().join("out/warnings.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let t = chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis();
                (
                    v["rule"].as_str().unwrap().to_string(),
                    v["kind"].as_str().unwrap().to_string(),
                    (t - t0) / 60_000,
                    v["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// T: a round hour, a day ago (event clock; plausible for the future-skew check).
fn t0() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now - now.rem_euclid(3_600_000) - 86_400_000
}

fn reading(t0: i64, minutes: i64, mm: f64) -> Vec<u8> {
    let ts = chrono::DateTime::from_timestamp_millis(t0 + minutes * 60_000)
        .unwrap()
        .to_rfc3339();
    serde_json::to_vec(&serde_json::json!({"ts": ts, "value": mm})).unwrap()
}

fn expected() -> Vec<(String, String, i64, u64)> {
    vec![
        // V2's lowered threshold: 3 + 3 = 6 mm in the hour ending T+10m >= 5: raised at the
        // reload, at the gauge's evaluation time T+10m
        ("wet".into(), "raise".into(), 10, 1),
        // V2's new rule over 3 h: 3 + 3 + 3 + 4 = 13 mm >= 12 at T+30m, counting the two
        // readings from before the reload
        ("soaked".into(), "raise".into(), 30, 1),
    ]
}

#[test]
fn reload_keeps_state_refuses_bad_rules_and_survives_a_crash() {
    let broker = Mosquitto::start();
    let mut d = Serve::new(broker.port);
    let t0 = t0();
    let publ = TestClient::connect(broker.port, "rl-pub", &[], true);
    publ.publish("rl/G1/rain", reading(t0, 0, 3.0));
    publ.publish("rl/G1/rain", reading(t0, 10, 3.0));
    d.wait_read(2.0);
    // V1: 6 mm < 10 mm: nothing yet
    assert!(d.warnings(t0).is_empty());

    // bad rules: refused with the diagnostics (line, caret), the old rules stay
    d.rules(BROKEN);
    let (code, body) = post(d.http, "/reload");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("parsecs") && body.contains('^'), "{body}");

    // good rules over HTTP
    d.rules(V2);
    let (code, body) = post(d.http, "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("rules reloaded"), "{body}");

    publ.publish("rl/G1/rain", reading(t0, 20, 3.0));
    publ.publish("rl/G1/rain", reading(t0, 30, 4.0));
    d.wait_read(4.0);
    let m = http_get(d.http, "/metrics");
    assert_eq!(metric(&m, "forewarn_reloads_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "forewarn_reload_failures_total"), 1.0, "{m}");
    let end = Instant::now() + Duration::from_secs(10);
    while d.warnings(t0).len() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.warnings(t0), expected(), "{}", d.log());

    // a crash: the restart replays the input log — the reload at its place between the
    // readings — and ends with the same warnings, none twice
    d.kill();
    d.start();
    d.wait_read(4.0);
    d.stop();
    assert_eq!(d.warnings(t0), expected(), "{}", d.log());

    // SIGHUP reloads too (back to V1: the wet warning's threshold rises to 10 mm; the
    // hour ending T+30m holds 10 mm, so it stays)
    d.start();
    d.rules(V1);
    d.signal("-HUP");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(d.http, "/metrics");
        if metric(&m, "forewarn_reloads_total") >= 1.0 {
            break;
        }
        assert!(Instant::now() < end, "SIGHUP did not reload:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    let w = d.warnings(t0);
    // soaked no longer exists: its active warning is cleared by the reload
    assert_eq!(w.len(), 3, "{w:?}\n{}", d.log());
    assert_eq!(
        (w[2].0.as_str(), w[2].1.as_str(), w[2].3),
        ("soaked", "clear", 2)
    );
    assert!(Path::new(&d.dir.path().join("history/_rules")).is_dir());
}

#[test]
fn a_new_long_window_is_warmed_from_the_history() {
    let broker = Mosquitto::start();
    let mut d = Serve::new(broker.port);
    let t0 = t0() - 6 * 3_600_000;
    let publ = TestClient::connect(broker.port, "rl-pub2", &[], true);
    // 1 mm every 10 minutes for 6 hours: 36 readings, T+10m .. T+6h
    for k in 1..=36 {
        publ.publish("rl/G1/rain", reading(t0, 10 * k, 1.0));
    }
    d.wait_read(36.0);
    // V1 (1 h window) keeps 2 h of samples. A new rule over 6 h:
    // 36 mm in (T, T+6h] >= 30 mm — only if the 4 older hours come back from the history
    // (the 2 h the engine kept hold 12 mm).
    d.rules(
        "feed rain: depth mm\nrule wet on rain:\n    warn when sum(rain, 1h) >= 10 mm\nrule long on rain:\n    warn when sum(rain, 6h) >= 30 mm\n",
    );
    let (code, body) = post(d.http, "/reload");
    assert_eq!(code, 200, "{body}");
    let end = Instant::now() + Duration::from_secs(10);
    while d.warnings(t0).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    // raised at the reload, at the gauge's evaluation time T+6h
    assert_eq!(
        d.warnings(t0),
        vec![("long".to_string(), "raise".to_string(), 360, 1)],
        "{}",
        d.log()
    );
    assert!(d.log().contains("warmed with 24 samples"), "{}", d.log());
}
