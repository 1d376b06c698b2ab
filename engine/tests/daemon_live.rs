//! The daemon against a real mosquitto: live (wall-clock) evaluation without new data,
//! retained levels and liveness, broker restarts, persistent sessions, reconnection.
#![cfg(feature = "daemon")]

mod daemon_support;

use std::collections::BTreeMap;
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

const COUNT_RULES: &str = "\
feed rain: depth mm, range 0 .. 500
rule wet on rain:
    warn when sum(rain, 1h) >= 1 mm
";

fn event_config(port: u16, id: &str, prefix: &str) -> String {
    format!(
        r#"
rules = "count.rules"
[engine]
clock = "event"
shards = 2
[mqtt]
port = {port}
client-id = "{id}"
keep-alive = "2s"
reconnect-min = "100ms"
reconnect-max = "500ms"
[[subscription]]
topic = "{prefix}-in/{{entity}}"
feed = "rain"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "warnings.jsonl"
[output.mqtt]
prefix = "{prefix}"
"#
    )
}

/// One reading per entity E{i}: each raises exactly one warning.
fn reading(i: u64) -> String {
    format!(r#"{{"ts":"2024-07-01T00:00:00Z","value":{}}}"#, 5 + i % 3)
}

fn warning_keys(msgs: &[daemon_support::Msg]) -> BTreeMap<(String, u64), usize> {
    let mut keys = BTreeMap::new();
    for m in msgs {
        let j = m.json();
        *keys
            .entry((
                j["entity"].as_str().unwrap_or_default().to_string(),
                j["seq"].as_u64().unwrap_or(0),
            ))
            .or_insert(0) += 1;
    }
    keys
}

#[test]
fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    const N: u64 = 400;
    let mut broker = Mosquitto::start();
    let watch = TestClient::connect(broker.port, "rs-watch", &["rs/warnings/#"], false);
    let d = TestDaemon::start(
        &[("count.rules", COUNT_RULES)],
        &event_config(broker.port, "rs-fw", "rs"),
    );
    let pubc = TestClient::connect(broker.port, "rs-pub", &[], false);
    for i in 0..N / 2 {
        pubc.publish(&format!("rs-in/E{i}"), reading(i));
    }
    pubc.wait_acked(N / 2, Duration::from_secs(30));
    // the broker goes away mid-stream (saving its sessions) and comes back on the same port;
    // the second half is queued by the publisher meanwhile
    broker.restart(Duration::from_millis(300));
    for i in N / 2..N {
        pubc.publish(&format!("rs-in/E{i}"), reading(i));
    }
    let msgs = watch.collect_until(Duration::from_secs(60), |got| {
        warning_keys(got).len() as u64 >= N
    });
    let keys = warning_keys(&msgs);
    assert_eq!(
        keys.len() as u64,
        N,
        "every reading's warning arrives once the broker is back"
    );
    assert!(
        keys.keys().all(|(_, seq)| *seq == 1),
        "one transition per entity"
    );
    // evaluation saw every reading exactly once: N accepted, N warnings written
    std::thread::sleep(Duration::from_millis(1200));
    let m = d.metrics();
    assert_eq!(
        daemon_support::metric(&m, "forewarn_readings_accepted_total"),
        N as f64,
        "{m}"
    );
    let file = std::fs::read_to_string(d.path("warnings.jsonl")).unwrap();
    let mut entities: Vec<String> = file
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["entity"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(entities.len() as u64, N, "no warning evaluated twice");
    entities.sort();
    entities.dedup();
    assert_eq!(entities.len() as u64, N, "each entity's warning once");
    assert!(
        daemon_support::metric(&m, "forewarn_mqtt_reconnects_total") >= 1.0,
        "{m}"
    );
    // QoS 1 is at-least-once: a redelivery carries the same (rule, entity, seq) key
    let dup = keys.values().filter(|n| **n > 1).count();
    eprintln!("{} warnings, {dup} redelivered by MQTT", keys.len());
}

#[test]
fn readings_published_while_forewarn_is_down_are_delivered_after_restart() {
    let broker = Mosquitto::start();
    let files = [("count.rules", COUNT_RULES)];
    let cfg = event_config(broker.port, "pd-fw", "pd");
    let mut d = TestDaemon::start(&files, &cfg);
    let pubc = TestClient::connect(broker.port, "pd-pub", &[], true);
    for i in 0..20 {
        pubc.publish(&format!("pd-in/E{i}"), reading(i));
    }
    assert_eq!(
        d.wait_metric(
            "forewarn_readings_accepted_total",
            20.0,
            Duration::from_secs(10)
        ),
        20.0
    );
    d.shutdown();
    // forewarn is down: the broker keeps its persistent session and queues these
    for i in 20..50 {
        pubc.publish(&format!("pd-in/E{i}"), reading(i));
    }
    pubc.wait_acked(50, Duration::from_secs(10));
    let d2 = TestDaemon::start(&files, &cfg);
    assert_eq!(
        d2.wait_metric(
            "forewarn_readings_accepted_total",
            30.0,
            Duration::from_secs(10)
        ),
        30.0,
        "the 30 readings published while forewarn was down"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d2.metric("forewarn_readings_in_total"), 30.0);
}

#[test]
fn a_dropped_connection_is_reconnected_and_counted() {
    let broker = Mosquitto::start();
    let d = TestDaemon::start(
        &[("count.rules", COUNT_RULES)],
        &event_config(broker.port, "rc-fw", "rc"),
    );
    let pubc = TestClient::connect(broker.port, "rc-pub", &[], true);
    pubc.publish("rc-in/A", reading(0));
    assert_eq!(
        d.wait_metric(
            "forewarn_readings_accepted_total",
            1.0,
            Duration::from_secs(10)
        ),
        1.0
    );
    assert_eq!(d.metric("forewarn_mqtt_reconnects_total"), 0.0);
    // broker-side disconnect: another client takes over forewarn's client id (session kept)
    let thief = TestClient::connect(broker.port, "rc-fw", &[], false);
    thief.disconnect();
    assert!(
        d.wait_metric(
            "forewarn_mqtt_reconnects_total",
            1.0,
            Duration::from_secs(10)
        ) >= 1.0,
        "{}",
        d.metrics()
    );
    pubc.publish("rc-in/B", reading(1));
    assert_eq!(
        d.wait_metric(
            "forewarn_readings_accepted_total",
            2.0,
            Duration::from_secs(10)
        ),
        2.0,
        "still evaluating after the reconnect"
    );
    assert_eq!(d.metric("forewarn_mqtt_connected"), 1.0);
}
