//! Problems found in a new user's trial: a future-dated reading must not move the stream
//! time, retained levels survive a broker restart without persistence, `/healthz` reports a
//! broker it cannot reach, and a subscription feed the rules do not declare is refused.
#![cfg(feature = "daemon")]

mod daemon_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use daemon_support::{free_port, http_get, stamp, Mosquitto, TestClient, TestDaemon};
use forewarn_engine::daemon::{Daemon, ServeConfig};

const RULES: &str = "\
feed rain: depth mm, range 0 .. 500
rule wet on rain:
    warn when sum(rain, 1h) >= 10 mm
";

fn config(port: u16, id: &str, prefix: &str, clock: &str) -> String {
    format!(
        r#"
rules = "trial.rules"
[engine]
clock = "{clock}"
shards = 3
heartbeat = "1s"
[mqtt]
port = {port}
client-id = "{id}"
reconnect-min = "100ms"
reconnect-max = "500ms"
[[subscription]]
topic = "{prefix}-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:0"
[output.mqtt]
prefix = "{prefix}"
"#
    )
}

/// GET returning the status line and the body (any status).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn a_future_dated_reading_does_not_move_the_watermark() {
    let broker = Mosquitto::start();
    let d = TestDaemon::start(
        &[("trial.rules", RULES)],
        &config(broker.port, "fut-fw", "fut", "event"),
    );
    let p = TestClient::connect(broker.port, "fut-pub", &[], true);
    p.publish(
        "fut-in/G1/rain",
        format!(r#"{{"ts":"{}","value":1}}"#, stamp(-3_600_000)),
    );
    p.publish(
        "fut-in/G2/rain",
        r#"{"ts":"2099-01-01T00:00:00Z","value":1}"#,
    );
    let rejected = d.wait_metric(
        "forewarn_readings_rejected_total{reason=\"future_dated\"}",
        1.0,
        Duration::from_secs(10),
    );
    assert_eq!(rejected, 1.0, "{}", d.metrics());
    std::thread::sleep(Duration::from_millis(1500)); // snapshots: every second
    let w: serde_json::Value = serde_json::from_str(&http_get(d.http(), "/warnings")).unwrap();
    let wm = w["watermark"].as_str().expect("a watermark");
    let wm = chrono::DateTime::parse_from_rfc3339(wm).unwrap();
    assert!(
        wm < chrono::Utc::now() - chrono::Duration::minutes(30),
        "the 2099 reading moved the watermark: {w}"
    );
}

#[test]
fn retained_levels_and_status_survive_a_broker_without_persistence() {
    let mut broker = Mosquitto::start_volatile();
    let d = TestDaemon::start(
        &[("trial.rules", RULES)],
        &config(broker.port, "ret-fw", "ret", "wall"),
    );
    let p = TestClient::connect(broker.port, "ret-pub", &[], true);
    p.publish(
        "ret-in/G1/rain",
        format!(r#"{{"ts":"{}","value":12}}"#, stamp(0)),
    );
    d.wait_metric(
        "forewarn_warnings_total{rule=\"wet\",level=\"warn\"}",
        1.0,
        Duration::from_secs(10),
    );
    p.disconnect();
    broker.restart(Duration::from_millis(300));
    let back = d.wait_metric(
        "forewarn_mqtt_output_reconnects_total",
        1.0,
        Duration::from_secs(15),
    );
    assert!(back >= 1.0, "{}", d.metrics());
    std::thread::sleep(Duration::from_millis(500));
    let watch = TestClient::connect(
        broker.port,
        "ret-watch",
        &["ret/level/#", "ret/status/#"],
        true,
    );
    let got = watch.collect_until(Duration::from_secs(10), |got| {
        got.iter().any(|m| m.topic == "ret/level/wet/G1")
            && got.iter().any(|m| m.topic == "ret/status/G1/rain")
    });
    let level = got
        .iter()
        .find(|m| m.topic == "ret/level/wet/G1")
        .unwrap_or_else(|| panic!("no retained level after the restart: {got:#?}"));
    assert!(level.retain);
    assert_eq!(level.json()["to"], "warn", "{}", level.text());
    assert!(got
        .iter()
        .any(|m| m.topic == "ret/status/G1/rain" && m.retain));
}

#[test]
fn healthz_is_degraded_while_the_broker_is_unreachable() {
    let port = free_port(); // nothing listens there
    let d = TestDaemon::start(
        &[("trial.rules", RULES)],
        &config(port, "down-fw", "down", "wall"),
    );
    let (status, body) = get(d.http(), "/healthz");
    assert!(status.contains(" 200"), "grace period: {status} {body}");
    std::thread::sleep(Duration::from_millis(6500));
    let (status, body) = get(d.http(), "/healthz");
    assert!(status.contains(" 503"), "{status} {body}");
    assert!(body.contains("\"status\":\"degraded\""), "{body}");
    assert!(d.metric("forewarn_mqtt_connection_errors_total") >= 1.0);
}

#[test]
fn a_subscription_feed_the_rules_do_not_declare_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("trial.rules"), RULES).unwrap();
    let text = format!(
        "rules = \"trial.rules\"\n[mqtt]\nport = {}\n[[subscription]]\ntopic = \"a/{{entity}}\"\nfeed = \"rian\"\n[[subscription]]\ntopic = \"b/{{entity}}\"\nfeed = \"snowfall\"\n",
        free_port()
    );
    let path = dir.path().join("serve.toml");
    let cfg = ServeConfig::parse(&text, &path).unwrap();
    let err = format!("{:#}", Daemon::start(cfg).unwrap_err());
    assert!(
        err.contains("\"rian\"") && err.contains("did you mean \"rain\""),
        "{err}"
    );
    assert!(
        err.contains("\"snowfall\""),
        "both problems together: {err}"
    );
}

#[test]
fn the_shipped_config_parses_with_a_5m_future_skew() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/serve.toml");
    let cfg = ServeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.engine.future_skew, Some(5 * 60_000));
}
