//! Bad input through a real mosquitto: each kind is counted under its reason and
//! dead-lettered (reason + raw payload) on the dead-letter topic, the valid readings of the
//! same batch are kept, and the daemon keeps serving (B17).
#![cfg(feature = "daemon")]

mod daemon_support;

use std::time::Duration;

use daemon_support::{http_get, stamp, Mosquitto, Msg, TestClient, TestDaemon};

const RULES: &str = "\
feed rain: depth mm, range 0 .. 500
table gauge: \"gauges.csv\", key site
rule wet on rain:
    warn when sum(rain, 1h) >= 30 mm
";

const GAUGES: &str = "site,name\nG1,one\nG2,two\n";

/// Fields drop in order: the daemon stops (cleanly) before the broker goes.
struct Setup {
    daemon: TestDaemon,
    dead: TestClient,
    publisher: TestClient,
    prefix: String,
    _broker: Mosquitto,
}

fn setup(tag: &str, before: impl FnOnce(u16, &str)) -> Setup {
    let broker = Mosquitto::start();
    let id = format!("{tag}-fw");
    before(broker.port, &id);
    let prefix = format!("{tag}-out");
    let config = format!(
        r#"
rules = "bad.rules"
[engine]
clock = "wall"
future-skew = "10m"
max-age = "1d"
require-known-entities = true
max-payload-bytes = 2048
shards = 2
[mqtt]
port = {}
client-id = "{id}"
[[subscription]]
topic = "{tag}/{{entity}}/{{feed}}"
[[subscription]]
topic = "{tag}-batch/rain"
feed = "rain"
[[subscription]]
topic = "{tag}-senml/{{entity}}"
format = "senml"
feed = "rain"
[http]
listen = "127.0.0.1:0"
[output]
dead-letter = "dead.jsonl"
[output.mqtt]
prefix = "{prefix}"
"#,
        broker.port
    );
    let dead = TestClient::connect(
        broker.port,
        &format!("{tag}-dl"),
        &[&format!("{prefix}/dead-letter")],
        true,
    );
    let daemon = TestDaemon::start(&[("bad.rules", RULES), ("gauges.csv", GAUGES)], &config);
    let publisher = TestClient::connect(broker.port, &format!("{tag}-pub"), &[], true);
    // let the wall clock tick once, so clock checks apply from the first reading
    std::thread::sleep(Duration::from_millis(400));
    Setup {
        daemon,
        dead,
        publisher,
        prefix,
        _broker: broker,
    }
}

fn good(entity: &str, value: f64) -> String {
    format!(
        r#"{{"entity":"{entity}","ts":"{}","value":{value}}}"#,
        stamp(0)
    )
}

impl Setup {
    /// Publish, then expect these reasons on the dead-letter topic and `accepted` readings
    /// accepted; then check that the daemon still serves and evaluates.
    fn expect(&self, topic: &str, payload: &[u8], reasons: &[&str], accepted: f64) -> Vec<Msg> {
        self.publisher.publish(topic, payload.to_vec());
        let got = self
            .dead
            .collect_until(Duration::from_secs(10), |g| g.len() >= reasons.len());
        std::thread::sleep(Duration::from_millis(300));
        let mut got_reasons: Vec<String> = got
            .iter()
            .map(|m| m.json()["reason"].as_str().unwrap_or("?").to_string())
            .collect();
        got_reasons.sort();
        let mut want: Vec<String> = reasons.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got_reasons, want, "{got:#?}");
        for m in &got {
            let j = m.json();
            assert!(
                j.get("raw").is_some() || j.get("raw_base64").is_some(),
                "dead letter keeps the raw payload: {j}"
            );
            assert!(j["detail"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
        }
        let d = &self.daemon;
        for r in &want {
            let n = want.iter().filter(|x| *x == r).count() as f64;
            let series = format!("forewarn_readings_rejected_total{{reason=\"{r}\"}}");
            assert_eq!(
                d.wait_metric(&series, n, Duration::from_secs(5)),
                n,
                "{}",
                d.metrics()
            );
        }
        assert_eq!(
            d.wait_metric(
                "forewarn_readings_accepted_total",
                accepted,
                Duration::from_secs(5)
            ),
            accepted,
            "valid readings of the same message are kept"
        );
        // still serving: health, and a good reading afterwards is evaluated
        assert!(http_get(d.http(), "/healthz").contains("\"mqtt_connected\":true"));
        self.publisher
            .publish(&format!("{}-batch/rain", self.tag()), good("G2", 1.0));
        assert_eq!(
            d.wait_metric(
                "forewarn_readings_accepted_total",
                accepted + 1.0,
                Duration::from_secs(5)
            ),
            accepted + 1.0,
            "the daemon keeps evaluating"
        );
        let file = std::fs::read_to_string(d.path("dead.jsonl")).unwrap_or_default();
        assert_eq!(
            file.lines().count(),
            reasons.len(),
            "dead letters also in the file"
        );
        got
    }

    fn tag(&self) -> &str {
        self.prefix.strip_suffix("-out").unwrap()
    }
}

#[test]
fn garbage_bytes() {
    let s = setup("garb", |_, _| {});
    let got = s.expect(
        "garb/G1/rain",
        &[0xFF, 0xFE, 0x00, 0x12, 0x9C, 0x00, 0x00, 0x01],
        &["malformed"],
        0.0,
    );
    assert_eq!(got[0].json()["raw_base64"], "//4AEpwAAAE=");
    // the topic names the entity and the feed: so does the dead letter
    assert_eq!(got[0].json()["entity"], "G1", "{}", got[0].text());
    assert_eq!(got[0].json()["feed"], "rain", "{}", got[0].text());
}

#[test]
fn truncated_and_invalid_json() {
    let s = setup("trunc", |_, _| {});
    let ts = stamp(0);
    let truncated =
        format!(r#"[{{"entity":"G1","ts":"{ts}","value":1}},{{"entity":"G2","ts":"{ts}""#);
    s.expect(
        "trunc-batch/rain",
        truncated.as_bytes(),
        &["malformed"],
        0.0,
    );
}

#[test]
fn wrong_types_in_a_batch_keep_the_valid_readings() {
    let s = setup("types", |_, _| {});
    let ts = stamp(0);
    let batch = format!(
        r#"[{},
            {{"entity":"G2","ts":"{ts}","value":true}},
            {{"entity":["G2"],"ts":"{ts}","value":1}},
            {{"entity":"G2","ts":true,"value":1}},
            {{"entity":"G2","ts":"{ts}","value":"abc"}},
            {{"entity":"G2","ts":"{ts}"}},
            "G2"]"#,
        good("G1", 2.0)
    );
    s.expect(
        "types-batch/rain",
        batch.as_bytes(),
        &[
            "not_numeric",
            "malformed",
            "bad_timestamp",
            "not_numeric",
            "missing_field",
            "malformed",
        ],
        1.0,
    );
}

#[test]
fn nan_and_infinity() {
    let s = setup("nan", |_, _| {});
    let ts = stamp(0);
    let batch = format!(
        r#"[{},{{"entity":"G2","ts":"{ts}","value":"NaN"}},{{"entity":"G2","ts":"{ts}","value":"-inf"}}]"#,
        good("G1", 2.0)
    );
    s.expect(
        "nan-batch/rain",
        batch.as_bytes(),
        &["not_finite", "not_finite"],
        1.0,
    );
    // bare NaN is not JSON at all
    let bare = format!(r#"{{"entity":"G1","ts":"{ts}","value":NaN}}"#);
    s.publisher.publish("nan-batch/rain", bare.into_bytes());
    let m = s.dead.wait_for(Duration::from_secs(5), |m| {
        m.json()["reason"] == "malformed"
    });
    assert!(m.is_some(), "bare NaN is malformed JSON");
}

#[test]
fn oversize_payload() {
    let s = setup("big", |_, _| {});
    let mut batch = vec![good("G1", 1.0); 60].join(",");
    batch = format!("[{batch}]");
    assert!(batch.len() > 2048);
    let got = s.expect("big-batch/rain", batch.as_bytes(), &["too_large"], 0.0);
    assert!(got[0].json()["detail"]
        .as_str()
        .unwrap()
        .contains("max-payload-bytes"));
}

#[test]
fn unknown_topic_and_unknown_feed() {
    // a subscription left in the persistent session by an earlier configuration
    let s = setup("topic", |port, id| {
        let old = TestClient::connect(port, id, &["topic-old/#"], false);
        old.disconnect();
    });
    s.expect(
        "topic-old/x",
        good("G1", 1.0).as_bytes(),
        &["unknown_topic"],
        0.0,
    );
    s.publisher.publish(
        "topic/G1/snow",
        format!(r#"{{"ts":"{}","value":1}}"#, stamp(0)).into_bytes(),
    );
    let m = s.dead.wait_for(Duration::from_secs(5), |m| {
        m.json()["reason"] == "unknown_feed"
    });
    assert!(m.is_some(), "a {{feed}} the rules do not declare");
}

#[test]
fn unknown_entity() {
    let s = setup("ent", |_, _| {});
    let batch = format!("[{},{}]", good("G1", 1.0), good("G9", 1.0));
    s.expect("ent-batch/rain", batch.as_bytes(), &["unknown_entity"], 1.0);
}

#[test]
fn timestamp_without_offset() {
    let s = setup("tz", |_, _| {});
    let local = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let batch = format!(
        r#"[{},{{"entity":"G2","ts":"{local}","value":5}}]"#,
        good("G1", 1.0)
    );
    s.expect("tz-batch/rain", batch.as_bytes(), &["no_offset"], 1.0);
}

#[test]
fn far_future_and_far_past() {
    let s = setup("far", |_, _| {});
    let batch = format!(
        r#"[{},{{"entity":"G2","ts":"{}","value":5}},{{"entity":"G2","ts":"{}","value":5}}]"#,
        good("G1", 1.0),
        stamp(24 * 3_600_000),
        stamp(-30 * 24 * 3_600_000)
    );
    s.expect(
        "far-batch/rain",
        batch.as_bytes(),
        &["future_dated", "stale_dated"],
        1.0,
    );
}

#[test]
fn senml_bad_records_are_dead_lettered_and_the_rest_kept() {
    let s = setup("senml", |_, _| {});
    // no time: "now" (RFC 8428); then a boolean value and a unit that is not the feed's
    let pack = r#"[{"bn":"","n":"rain","u":"mm","v":2},{"n":"rain","vb":true},{"n":"rain","u":"degC","v":1}]"#;
    s.expect(
        "senml-senml/G1",
        pack.as_bytes(),
        &["not_numeric", "malformed"],
        1.0,
    );
}
