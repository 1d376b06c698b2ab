//! Forecasts over MQTT (`[[forecast-subscription]]`) through a real mosquitto, wall clock,
//! two shards.
//!
//! Rules: `flood`, `sum(rain, 1h) + forecast(qpf, next 3h) >= 50 mm`, and `ahead`,
//! `forecast(qpf, next 3h) >= 30 mm`. Area A has gauges A-x and A-y,
//! chosen so that they live in different shards (the daemon hashes entity ids when the rules
//! use no group function); area B has B1 and B2. Every gauge gets 20 mm, 5 minutes ago: 20 <
//! 50 and no forecast yet (unknown), so nothing is raised.
//!
//! Then a forecast for area A: 80 mm spread evenly over (now − 1 h, now + 5 h], i.e. 40/3 mm/h,
//! 40 mm in any 3 h inside it. At its arrival τ: `flood` 20 + 40 = 60 ≥ 50 and `ahead` 40 ≥ 30,
//! both raised with branch `forecast`, once each, for A-x and A-y only (each by its own
//! shard), not B1/B2. Expected crossing of `flood`: 30 mm more are needed,
//! 30 / (40/3) = 2.25 h after τ; of `ahead`: 30 mm of forecast, the same 2.25 h — τ + 2 h 15 min
//! both, up to the bisection error (16 steps over 3 h: 10 800 000 ms / 65 536 < 165 ms).
//! Each shard applies it to its own gauge only: `forewarn_forecast_targets_total` is 2 (a
//! shard applying it to the whole area would make it 4, and raise nothing more — rules of a
//! gauge without readings in that shard are not active there).
//!
//! Bad forecasts (not JSON, an unknown area, a feed that is not a forecast feed) are counted
//! under `forewarn_forecasts_rejected_total{reason}` and dead-lettered with the topic, the
//! reason and the raw payload; the daemon keeps going: a later forecast for entity B1 raises
//! B1 alone (one more target: 3).
#![cfg(feature = "daemon")]

mod daemon_support;

use std::hash::{Hash, Hasher};
use std::time::Duration;

use daemon_support::{http_get, stamp, Mosquitto, Msg, TestClient, TestDaemon};

const RULES: &str = "\
feed rain: depth mm, range 0 .. 500
feed qpf: forecast depth mm
table gauge: \"gauges.csv\", key site, group area
rule flood on rain:
    warn when sum(rain, 1h) + forecast(qpf, next 3h) >= 50 mm
rule ahead on rain:
    warn when forecast(qpf, next 3h) >= 30 mm
";

/// 2 h 15 min in ms, and the bisection tolerance (3 h / 65 536, rounded up).
const CROSSING_MS: i64 = (2 * 60 + 15) * 60_000;
const TOLERANCE_MS: i64 = 165;

/// The daemon's shard of an entity with two shards and no group function: SipHash (fixed
/// keys) of the id, as `Router::shard_of`. Only used to pick gauge names that split area A
/// over both shards; the assertions do not depend on it.
fn shard_of(entity: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    entity.hash(&mut h);
    h.finish() % 2
}

/// Two area-A gauge names in different shards.
fn area_a_gauges() -> (String, String) {
    let names: Vec<String> = (1..100).map(|i| format!("A-{i}")).collect();
    let first = |s| names.iter().find(|n| shard_of(n) == s).cloned().unwrap();
    (first(0), first(1))
}

fn config(port: u16, id: &str, extra: &str) -> String {
    format!(
        r#"
rules = "fc.rules"
[engine]
clock = "wall"
watermark-delay = "0s"
shards = 2
[mqtt]
port = {port}
client-id = "{id}"
[[subscription]]
topic = "fc-in/{{entity}}/{{feed}}"
[[forecast-subscription]]
topic = "fc-forecasts/#"
feed = "qpf"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "warnings.jsonl"
dead-letter = "dead.jsonl"
[output.mqtt]
prefix = "fc"
{extra}
"#
    )
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"))
        .timestamp_millis()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// 80 mm over (now − 1 h, now + 5 h], issued an hour ago, no `received` (the daemon's
/// clock at arrival is used), no `feed` (the subscription's `qpf`).
fn forecast_for(target: &str) -> String {
    let hour = 3_600_000;
    format!(
        r#"{{{target}, "issued": "{}",
 "intervals": [{{"start": "{}", "end": "{}", "value": 80}}]}}"#,
        stamp(-hour),
        stamp(-hour),
        stamp(5 * hour)
    )
}

/// The raises among `msgs`: (rule/entity, time, branch, expected crossing), times in ms.
fn raises(msgs: &[Msg]) -> Vec<(String, i64, String, Option<i64>)> {
    msgs.iter()
        .filter(|m| m.topic.starts_with("fc/warnings/"))
        .map(|m| m.json())
        .filter(|w| w["kind"] == "raise")
        .map(|w| {
            (
                format!(
                    "{}/{}",
                    w["rule"].as_str().unwrap(),
                    w["entity"].as_str().unwrap()
                ),
                ms(w["time"].as_str().unwrap()),
                w["branch"].as_str().unwrap().to_string(),
                w["expected_crossing"].as_str().map(ms),
            )
        })
        .collect()
}

fn check_crossing(entity: &str, time: i64, crossing: Option<i64>) {
    let c = crossing.unwrap_or_else(|| panic!("{entity}: no expected crossing"));
    let off = c - (time + CROSSING_MS);
    assert!(
        off.abs() <= TOLERANCE_MS,
        "{entity}: expected crossing {c} is {off} ms from τ + 2 h 15 min"
    );
}

/// Wait for two raises, which must be exactly `want` (rule/entity, sorted), made with
/// branch `forecast` at a time between `since` and now, crossing τ + 2 h 15 min.
fn expect_forecast_raises(watch: &TestClient, want: [&str; 2], since: i64) {
    let msgs = watch.collect_until(Duration::from_secs(10), |got| raises(got).len() >= 2);
    let until = now_ms();
    let mut got = raises(&msgs);
    got.sort();
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(names, want, "{msgs:#?}");
    for (entity, time, branch, crossing) in &got {
        assert_eq!(branch, "forecast");
        assert!((since..=until).contains(time), "{entity} at {time}");
        check_crossing(entity, *time, *crossing);
    }
}

#[test]
fn area_forecast_over_mqtt_raises_its_gauges_in_every_shard_and_bad_ones_are_dead_lettered() {
    let broker = Mosquitto::start();
    let (ax, ay) = area_a_gauges();
    let gauges = format!("site,area\n{ax},A\n{ay},A\nB1,B\nB2,B\n");
    let watch = TestClient::connect(
        broker.port,
        "fc-watch",
        &["fc/warnings/#", "fc/dead-letter"],
        true,
    );
    let d = TestDaemon::start(
        &[("fc.rules", RULES), ("gauges.csv", &gauges)],
        &config(broker.port, "fc-fw", ""),
    );
    let pubc = TestClient::connect(broker.port, "fc-pub", &[], true);
    std::thread::sleep(Duration::from_millis(400)); // a first wall-clock tick

    // 20 mm at every gauge, 5 minutes ago: nothing raised (20 < 50, forecast unknown)
    for g in [&ax, &ay, "B1", "B2"] {
        pubc.publish(
            &format!("fc-in/{g}/rain"),
            format!(r#"{{"ts":"{}","value":20}}"#, stamp(-5 * 60_000)),
        );
    }
    pubc.wait_acked(4, Duration::from_secs(10));
    let accepted = d.wait_metric(
        "forewarn_readings_accepted_total",
        4.0,
        Duration::from_secs(10),
    );
    assert_eq!(accepted, 4.0);
    let early = watch.collect_until(Duration::from_millis(700), |_| false);
    assert!(raises(&early).is_empty(), "{early:#?}");

    // the area-A forecast
    let before = now_ms();
    pubc.publish("fc-forecasts/area-a", forecast_for(r#""area": "A""#));
    let msgs = watch.collect_until(Duration::from_secs(10), |got| raises(got).len() >= 4);
    let after = now_ms();
    // anything else (B's gauges, or a second raise from a shard that does not own the
    // gauge) would come at once too
    let more = watch.collect_until(Duration::from_millis(1000), |_| false);
    let mut got = raises(&msgs);
    got.extend(raises(&more));
    got.sort();
    let mut want = vec![
        format!("ahead/{ax}"),
        format!("ahead/{ay}"),
        format!("flood/{ax}"),
        format!("flood/{ay}"),
    ];
    want.sort();
    assert_eq!(
        got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        want,
        "exactly area A's gauges: {msgs:#?} {more:#?}"
    );
    for (entity, time, branch, crossing) in &got {
        assert_eq!(branch, "forecast", "{entity}");
        // τ is the forecast's arrival (its as-of time): between publishing and seeing it
        assert!(
            (before..=after).contains(time),
            "{entity}: τ {time} not in [{before}, {after}]"
        );
        check_crossing(entity, *time, *crossing);
    }
    assert_eq!(d.metric("forewarn_forecasts_total"), 1.0);
    assert_eq!(d.metric("forewarn_forecast_targets_total"), 2.0);

    // bad forecasts: dead-lettered with topic, reason and raw payload; counted
    let not_json = "{\"area\": \"A\", \"issued\": ";
    pubc.publish("fc-forecasts/broken", not_json);
    pubc.publish("fc-forecasts/nowhere", forecast_for(r#""area": "Z""#));
    pubc.publish(
        "fc-forecasts/wrong-feed",
        forecast_for(r#""area": "A", "feed": "rain""#),
    );
    let dead = watch.collect_until(Duration::from_secs(10), |got| {
        got.iter().filter(|m| m.topic == "fc/dead-letter").count() >= 3
    });
    let dead: Vec<serde_json::Value> = dead
        .iter()
        .filter(|m| m.topic == "fc/dead-letter")
        .map(Msg::json)
        .collect();
    let by_source = |topic: &str| {
        dead.iter()
            .find(|d| d["source"] == topic)
            .unwrap_or_else(|| panic!("no dead letter from {topic}: {dead:#?}"))
    };
    let broken = by_source("fc-forecasts/broken");
    assert_eq!(broken["reason"], "malformed");
    assert_eq!(broken["raw"], not_json);
    assert!(
        broken["detail"].as_str().unwrap().contains("not JSON"),
        "{broken}"
    );
    let nowhere = by_source("fc-forecasts/nowhere");
    assert_eq!(nowhere["reason"], "unknown_entity");
    assert!(
        nowhere["detail"].as_str().unwrap().contains("\"Z\""),
        "{nowhere}"
    );
    let wrong = by_source("fc-forecasts/wrong-feed");
    assert_eq!(wrong["reason"], "unknown_feed");
    assert_eq!(wrong["feed"], "rain");
    let m = d.metrics();
    for (reason, n) in [("malformed", 1), ("unknown_entity", 1), ("unknown_feed", 1)] {
        assert!(
            m.contains(&format!(
                "forewarn_forecasts_rejected_total{{reason=\"{reason}\"}} {n}\n"
            )),
            "{reason}: {m}"
        );
    }
    // forecasts are not readings
    assert!(
        m.contains("forewarn_readings_rejected_total{reason=\"malformed\"} 0\n"),
        "{m}"
    );

    // still running: an entity forecast for B1 raises B1 alone
    let before = now_ms();
    pubc.publish("fc-forecasts/b1", forecast_for(r#""entity": "B1""#));
    let msgs = watch.collect_until(Duration::from_secs(10), |got| raises(got).len() >= 2);
    let after = now_ms();
    let more = watch.collect_until(Duration::from_millis(1000), |_| false);
    let mut got = raises(&msgs);
    got.extend(raises(&more));
    got.sort();
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(names, ["ahead/B1", "flood/B1"], "{got:?}");
    for (entity, time, branch, crossing) in &got {
        assert_eq!(branch, "forecast");
        assert!((before..=after).contains(time));
        check_crossing(entity, *time, *crossing);
    }
    assert_eq!(d.metric("forewarn_forecasts_total"), 2.0);
    assert_eq!(d.metric("forewarn_forecast_targets_total"), 3.0);
    assert!(http_get(d.http(), "/healthz").contains("\"status\":\"ok\""));

    // the files say the same: six raises, three dead letters naming their topics
    let mut d = d;
    d.shutdown();
    let lines = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let warnings = lines("warnings.jsonl");
    let mut raised: Vec<String> = warnings
        .iter()
        .filter(|w| w["kind"] == "raise")
        .map(|w| {
            format!(
                "{}/{}",
                w["rule"].as_str().unwrap(),
                w["entity"].as_str().unwrap()
            )
        })
        .collect();
    raised.sort();
    let mut want = vec![
        format!("ahead/{ax}"),
        format!("ahead/{ay}"),
        "ahead/B1".to_string(),
        format!("flood/{ax}"),
        format!("flood/{ay}"),
        "flood/B1".to_string(),
    ];
    want.sort();
    assert_eq!(raised, want);
    let mut sources: Vec<String> = lines("dead.jsonl")
        .iter()
        .map(|d| d["source"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            "fc-forecasts/broken",
            "fc-forecasts/nowhere",
            "fc-forecasts/wrong-feed"
        ]
    );
}

/// With `[history]` a message is journaled before it is evaluated: forecasts take that path
/// too. One gauge of area B with 20 mm, a forecast for area B (B1 and B2; B2 has no reading):
/// `flood` and `ahead` raised for B1, branch `forecast`, crossing τ + 2 h 15 min as above; a
/// forecast that is not JSON is dead-lettered into the file. Restarted, the daemon keeps
/// the forecast (checkpointed with the engines): B2's first reading raises B2 too.
#[test]
fn forecasts_through_the_durable_intake() {
    let broker = Mosquitto::start();
    let gauges = "site,area\nB1,B\nB2,B\n";
    let watch = TestClient::connect(broker.port, "fcd-watch", &["fc/warnings/#"], true);
    let mut d = TestDaemon::start(
        &[("fc.rules", RULES), ("gauges.csv", gauges)],
        &config(broker.port, "fcd-fw", "[history]\ndir = \"history\"\n"),
    );
    let pubc = TestClient::connect(broker.port, "fcd-pub", &[], true);
    std::thread::sleep(Duration::from_millis(400));
    pubc.publish(
        "fc-in/B1/rain",
        format!(r#"{{"ts":"{}","value":20}}"#, stamp(-5 * 60_000)),
    );
    pubc.publish("fc-forecasts/bad", "[1, 2");
    let before = now_ms();
    pubc.publish("fc-forecasts/b", forecast_for(r#""area": "B""#));
    expect_forecast_raises(&watch, ["ahead/B1", "flood/B1"], before);
    assert_eq!(d.metric("forewarn_forecasts_total"), 1.0);
    assert_eq!(d.metric("forewarn_forecast_targets_total"), 2.0);
    assert_eq!(
        d.wait_metric(
            "forewarn_forecasts_rejected_total{reason=\"malformed\"}",
            1.0,
            Duration::from_secs(5)
        ),
        1.0
    );
    d.shutdown();
    let dead = std::fs::read_to_string(d.path("dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (&dead[0]["source"], &dead[0]["reason"], &dead[0]["raw"]),
        (
            &serde_json::json!("fc-forecasts/bad"),
            &serde_json::json!("malformed"),
            &serde_json::json!("[1, 2")
        )
    );

    // Restarted from its shutdown checkpoint, the daemon still knows the area-B forecast
    // (it is not sent again): B2's first reading, 20 mm, makes `flood` 20 + 40 = 60 >= 50
    // and `ahead` 40 >= 30, both raised for B2 with branch `forecast`, crossing as above.
    // Without the forecast both conditions would be unknown and nothing raised.
    d.restart();
    std::thread::sleep(Duration::from_millis(400));
    let before = now_ms();
    pubc.publish(
        "fc-in/B2/rain",
        format!(r#"{{"ts":"{}","value":20}}"#, stamp(0)),
    );
    expect_forecast_raises(&watch, ["ahead/B2", "flood/B2"], before);
    d.shutdown();
}
