//! The daemon against a real mosquitto: live (wall-clock) evaluation without new data,
//! retained levels and liveness, broker restarts, persistent sessions, reconnection.
#![cfg(feature = "daemon")]

mod daemon_support;

use std::time::Duration;

use daemon_support::{http_get, stamp, Mosquitto, TestClient, TestDaemon};

const LIVE_RULES: &str = "\
feed rain: depth mm, range 0 .. 500, stale 3s, offline 6s
rule wet on rain:
    warn when sum(rain, 2s) >= 10 mm
";

fn live_config(port: u16, id: &str, prefix: &str) -> String {
    format!(
        r#"
rules = "live.rules"
[engine]
clock = "wall"
watermark-delay = "0s"
shards = 2
heartbeat = "1s"
[mqtt]
host = "127.0.0.1"
port = {port}
client-id = "{id}"
reconnect-min = "100ms"
reconnect-max = "1s"
[[subscription]]
topic = "{prefix}-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "warnings.jsonl"
status = "status.jsonl"
dead-letter = "dead.jsonl"
[output.mqtt]
prefix = "{prefix}"
"#
    )
}

#[test]
fn wall_clock_clears_and_turns_stale_without_new_data() {
    let broker = Mosquitto::start();
    let watch = TestClient::connect(
        broker.port,
        "live-watch",
        &["live/warnings/#", "live/status/#", "live/heartbeat"],
        true,
    );
    let d = TestDaemon::start(
        &[("live.rules", LIVE_RULES)],
        &live_config(broker.port, "live-fw", "live"),
    );
    let online = watch.wait_for(Duration::from_secs(10), |m| m.topic == "live/status");
    assert_eq!(online.map(|m| m.text()).as_deref(), Some("online"));

    let pubc = TestClient::connect(broker.port, "live-pub", &[], true);
    pubc.publish(
        "live-in/G1/rain",
        format!(r#"{{"ts":"{}","value":12}}"#, stamp(0)),
    );
    // data-driven raise, then (no more data) the sample leaves the 2 s window: clear;
    // staleness at 3 s and offline at 6 s after the sample
    let msgs = watch.collect_until(Duration::from_secs(15), |got| {
        got.iter()
            .any(|m| m.topic == "live/status/G1/rain" && m.json()["status"] == "offline")
    });
    let warnings: Vec<_> = msgs
        .iter()
        .filter(|m| m.topic == "live/warnings/wet/G1")
        .map(|m| m.json())
        .collect();
    let kinds: Vec<_> = warnings
        .iter()
        .map(|w| w["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, vec!["raise", "clear"], "{msgs:#?}");
    let t = |w: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(w["time"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    assert_eq!(
        t(&warnings[1]) - t(&warnings[0]),
        2000,
        "clear when the sample leaves the window"
    );
    let statuses: Vec<_> = msgs
        .iter()
        .filter(|m| m.topic == "live/status/G1/rain")
        .map(|m| m.json()["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, vec!["ok", "stale", "offline"]);
    assert!(
        msgs.iter()
            .any(|m| m.topic == "live/heartbeat" && m.json()["status"] == "online"),
        "periodic heartbeat"
    );

    // /warnings: nothing active, the feed offline
    std::thread::sleep(Duration::from_millis(1300));
    let w: serde_json::Value = serde_json::from_str(&http_get(d.http(), "/warnings")).unwrap();
    assert_eq!(w["warnings"].as_array().unwrap().len(), 0, "{w}");
    assert_eq!(w["data_status"][0]["status"], "offline", "{w}");
    assert!(http_get(d.http(), "/healthz").contains("\"status\":\"ok\""));
    let m = d.metrics();
    assert!(
        m.contains("forewarn_warnings_total{rule=\"wet\",level=\"warn\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("forewarn_reading_to_warning_seconds_count 1"),
        "{m}"
    );
}

#[test]
fn retained_level_and_last_will() {
    let broker = Mosquitto::start();
    let mut d = TestDaemon::start(
        &[("live.rules", LIVE_RULES)],
        &live_config(broker.port, "lvl-fw", "lvl"),
    );
    let pubc = TestClient::connect(broker.port, "lvl-pub", &[], true);
    // a long-lived warning: one reading now, another each second for a while is not needed —
    // the retained record is checked right after the raise
    pubc.publish(
        "lvl-in/G2/rain",
        format!(r#"{{"ts":"{}","value":50}}"#, stamp(0)),
    );
    let first = TestClient::connect(broker.port, "lvl-watch1", &["lvl/warnings/#"], true);
    let _ = first;
    std::thread::sleep(Duration::from_millis(500));
    // a dashboard connecting later sees the current level (retained)
    let late = TestClient::connect(broker.port, "lvl-late", &["lvl/level/#"], true);
    let lvl = late
        .wait_for(Duration::from_secs(5), |m| m.topic == "lvl/level/wet/G2")
        .expect("retained level");
    assert!(lvl.retain);
    assert_eq!(lvl.json()["to"], "warn");
    // after the clear (2 s window) the retained level is deleted
    std::thread::sleep(Duration::from_millis(2600));
    let later = TestClient::connect(broker.port, "lvl-later", &["lvl/level/#"], true);
    assert!(
        later
            .wait_for(Duration::from_millis(700), |m| m.topic
                == "lvl/level/wet/G2")
            .is_none(),
        "no retained level after the clear"
    );
    // graceful shutdown says offline (retained)
    d.shutdown();
    let st = TestClient::connect(broker.port, "lvl-st", &["lvl/status"], true);
    let m = st
        .wait_for(Duration::from_secs(5), |m| m.topic == "lvl/status")
        .unwrap();
    assert_eq!(m.text(), "offline");
}
