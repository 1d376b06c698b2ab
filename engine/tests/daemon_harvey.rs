//! Hurricane Harvey through MQTT (event clock): every row of the HCFCD export is published
//! as one JSON batch to a real mosquitto; the warnings the daemon publishes, read back from
//! its MQTT sink, equal the file replay's (`tests/harvey/expected_warnings.jsonl`, checked
//! against the independent oracle).
//!
//! End of input never comes over MQTT, so deadlines after the last watermark do not fire:
//! the comparison covers every expected transition up to the last published instant minus
//! the watermark delay (all of them must arrive), and everything that arrives must be
//! expected (data-driven transitions after that instant included).
#![cfg(feature = "daemon")]

mod daemon_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::{Mosquitto, TestClient, TestDaemon};
use serde_json::Value;

type Key = (
    String,
    String,
    u64,
    String,
    Option<String>,
    Option<String>,
    String,
);

fn key(v: &Value) -> Key {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    (
        s("rule").unwrap_or_default(),
        s("entity").unwrap_or_default(),
        v["seq"].as_u64().unwrap_or(0),
        s("kind").unwrap_or_default(),
        s("from"),
        s("to"),
        s("time").unwrap_or_default(),
    )
}

#[test]
fn harvey_over_mqtt_matches_the_file_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let broker = Mosquitto::start();
    let watch = TestClient::connect(broker.port, "hv-watch", &["hv/warnings/#"], true);
    let rules = root.join("config/harvey.rules");
    let config = format!(
        r#"
rules = "{}"
[engine]
clock = "event"
watermark-delay = "1m"
display-zone = "America/Chicago"
shards = 2
[mqtt]
port = {}
client-id = "hv-fw"
[[subscription]]
topic = "hv-in/{{feed}}"
time-zone = "-05:00"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "warnings.jsonl"
dead-letter = "dead.jsonl"
[output.mqtt]
prefix = "hv"
"#,
        rules.display(),
        broker.port
    );
    let d = TestDaemon::start(&[], &config);

    // publish each CSV row as one JSON batch
    let csv = std::fs::read_to_string(root.join("fixtures/harvey/hcfcd_harvey_5min_wide.csv"))
        .expect("Harvey fixture");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let t_col = header.iter().position(|h| *h == "end_time").unwrap();
    let pubc = TestClient::connect(broker.port, "hv-pub", &[], true);
    let mut n = 0u64;
    let mut readings = 0u64;
    let mut last = String::new();
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
        readings += batch.len() as u64;
        pubc.publish("hv-in/rain", serde_json::to_vec(&batch).unwrap());
        n += 1;
        last = ts.to_string();
    }
    pubc.wait_acked(n, Duration::from_secs(120));

    let expected: Vec<Value> =
        std::fs::read_to_string(root.join("tests/harvey/expected_warnings.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    // the last published instant (local -05:00) minus the watermark delay, in UTC
    let last_utc = chrono::NaiveDateTime::parse_from_str(&last, "%Y-%m-%d %H:%M:%S").unwrap()
        + chrono::Duration::hours(5);
    let horizon = (last_utc - chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let all: BTreeSet<Key> = expected.iter().map(key).collect();
    let must: BTreeSet<Key> = all.iter().filter(|k| k.6 <= horizon).cloned().collect();
    assert!(must.len() > 4000, "{} of {}", must.len(), all.len());

    // read the warnings back from the MQTT sink
    let started = Instant::now();
    let mut got: BTreeSet<Key> = BTreeSet::new();
    let mut received = 0usize;
    let deadline = Duration::from_secs(300);
    while !must.is_subset(&got) && started.elapsed() < deadline {
        if let Ok(m) = watch.rx.recv_timeout(Duration::from_millis(200)) {
            received += 1;
            got.insert(key(&m.json()));
        }
    }
    // a little longer: nothing unexpected may trail in
    for m in watch.collect_until(Duration::from_secs(2), |_| false) {
        received += 1;
        got.insert(key(&m.json()));
    }
    let missing: Vec<_> = must.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(&all).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "daemon and file replay disagree ({} received, {} expected up to {horizon})\nmissing: {missing:#?}\nunexpected: {extra:#?}",
        got.len(),
        must.len()
    );
    assert_eq!(received, got.len(), "no warning published twice");

    // counters: every reading read; the one implausible reading dead-lettered
    let m = d.metrics();
    assert_eq!(
        daemon_support::metric(&m, "forewarn_readings_in_total"),
        readings as f64,
        "{m}"
    );
    assert_eq!(
        daemon_support::metric(
            &m,
            "forewarn_readings_rejected_total{reason=\"out_of_range\"}"
        ),
        1.0
    );
    let dead = std::fs::read_to_string(d.path("dead.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("\"entity\":\"520\""), "{dead}");
}
