//! CAP output of `forewarn serve` (`[cap]` + `[output.cap]`) through a real mosquitto, event
//! clock, two shards.
//!
//! Rules: `storm` (colour ladder: yellow at `last(rain) >= 20 mm`, red at `>= 40 mm`, clear
//! below 1 mm; colour defaults for severity/response) and `gauge_check`, a `shadow` rule
//! (`>= 20 mm`). Readings of gauge S1, one per message, each waited for:
//!
//! | time (UTC) | rain | storm | gauge_check |
//! |---|---|---|---|
//! | 00:00 | 25 mm | raise yellow (seq 1) → Alert, Moderate/Prepare | raise (shadow) |
//! | 00:10 | 45 mm | escalate red (seq 2) → Update, Extreme/Evacuate | — |
//! | 00:20 | 0 mm | clear (seq 3) → Cancel, Extreme/AllClear | clear (shadow) |
//!
//! Episode id `test.forewarn-storm-S1-20240701T000000Z` (docs/cap.md): three files
//! `{episode}-{1,2,3}.xml`, the Update referencing the Alert, the Cancel the Update; the same
//! three documents on `capt/cap/storm/S1`; nothing for the shadow rule (its five warnings
//! records still go to the JSON Lines file). Every file is valid CAP 1.2 (xmllint).
//!
//! A rule with custom levels and no `cap` declaration stops the daemon at start-up, naming
//! the rule and each level; a reload to such rules is refused, a good reload keeps open
//! episodes going; a CAP file that cannot be written is counted and the daemon goes on.
#![cfg(feature = "daemon")]

mod daemon_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon_support::{Mosquitto, TestClient, TestDaemon};
use forewarn_engine::daemon::{Daemon, ServeConfig};

const RULES: &str = "\
feed rain: depth mm, range 0 .. 500
levels cma: blue < yellow < orange < red

rule storm on rain levels cma:
    red    when last(rain) >= 40 mm
    yellow when last(rain) >= 20 mm
    clear when last(rain) < 1 mm
    event \"Rainstorm\"
    message \"{entity} rainstorm {level}\"

rule gauge_check on rain:
    odd when last(rain) >= 20 mm
    shadow
";

const SENDER: &str = "forewarn.test.example";
const PREFIX: &str = "test.forewarn";

fn config(port: u16, cap_output: &str) -> String {
    format!(
        r#"
rules = "cap.rules"
[engine]
clock = "event"
watermark-delay = "0s"
shards = 2
[mqtt]
host = "127.0.0.1"
port = {port}
client-id = "capt-fw"
reconnect-min = "100ms"
reconnect-max = "1s"
[[subscription]]
topic = "capt-in/{{entity}}/{{feed}}"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "warnings.jsonl"
[output.mqtt]
prefix = "capt"
{cap_output}
[cap]
sender = "{SENDER}"
identifier-prefix = "{PREFIX}"
status = "Exercise"
expires-after = "2h"
"#
    )
}

/// The texts of every `<name>` element, in document order.
fn texts(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let j = after.find(&close).expect("closed element");
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

fn one(xml: &str, name: &str) -> String {
    let all = texts(xml, name);
    assert_eq!(all.len(), 1, "<{name}> once in\n{xml}");
    all[0].clone()
}

fn xmllint_valid(file: &Path) {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cap-1.2/CAP-v1.2.xsd");
    let out = match Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(file)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "xmllint is not installed: this test validates every CAP file with it. \
             Install it with `apt-get install libxml2-utils` (scripts/test.sh does)."
        ),
        Err(e) => panic!("cannot run xmllint: {e}"),
    };
    assert!(
        out.status.success(),
        "{} is not valid CAP 1.2:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn raise_escalate_clear_become_alert_update_cancel_in_files_and_over_mqtt() {
    let broker = Mosquitto::start();
    let watch = TestClient::connect(
        broker.port,
        "capt-watch",
        &["capt/cap/#", "capt/warnings/#", "capt/status"],
        true,
    );
    let d = TestDaemon::start(
        &[("cap.rules", RULES)],
        &config(broker.port, "[output.cap]\ndir = \"cap\"\nmqtt = true\n"),
    );
    let online = watch.wait_for(Duration::from_secs(10), |m| m.topic == "capt/status");
    assert_eq!(online.map(|m| m.text()).as_deref(), Some("online"));
    let pubc = TestClient::connect(broker.port, "capt-pub", &[], true);
    let readings = [
        ("2024-07-01T00:00:00Z", 25, "raise"),
        ("2024-07-01T00:10:00Z", 45, "escalate"),
        ("2024-07-01T00:20:00Z", 0, "clear"),
    ];
    let mut cap_msgs = Vec::new();
    for (ts, value, kind) in readings {
        pubc.publish(
            "capt-in/S1/rain",
            format!(r#"{{"ts":"{ts}","value":{value}}}"#),
        );
        let got = watch.collect_until(Duration::from_secs(10), |got| {
            got.iter()
                .any(|m| m.topic == "capt/warnings/storm/S1" && m.json()["kind"] == kind)
                && got.iter().any(|m| m.topic.starts_with("capt/cap/"))
        });
        cap_msgs.extend(got.into_iter().filter(|m| m.topic.starts_with("capt/cap/")));
    }
    // the last one is a clear: wait for its CAP message to be counted, then a little for
    // anything the shadow rule might wrongly publish
    assert_eq!(
        d.wait_metric("forewarn_cap_messages_total", 3.0, Duration::from_secs(10)),
        3.0
    );
    std::thread::sleep(Duration::from_millis(500));
    cap_msgs.extend(
        std::iter::from_fn(|| watch.rx.try_recv().ok())
            .filter(|m| m.topic.starts_with("capt/cap/")),
    );
    assert_eq!(d.metric("forewarn_cap_failures_total"), 0.0);

    let episode = format!("{PREFIX}-storm-S1-20240701T000000Z");
    let cap_dir = d.path("cap");
    let files: BTreeSet<String> = std::fs::read_dir(&cap_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let expected: BTreeSet<String> = (1..=3).map(|s| format!("{episode}-{s}.xml")).collect();
    assert_eq!(
        files, expected,
        "no file for the shadow rule, no temporary files"
    );

    let sent = [
        "2024-07-01T00:00:00-00:00",
        "2024-07-01T00:10:00-00:00",
        "2024-07-01T00:20:00-00:00",
    ];
    // expires-after 2h
    let expires = [
        "2024-07-01T02:00:00-00:00",
        "2024-07-01T02:10:00-00:00",
        "2024-07-01T02:20:00-00:00",
    ];
    // (msgType, severity, responseType, urgency, level) per seq: colour defaults
    // yellow = Moderate/Prepare, red = Extreme/Evacuate; a cancel has the cleared level's
    // severity, AllClear and Past
    let expect = [
        ("Alert", "Moderate", "Prepare", "Immediate", "yellow"),
        ("Update", "Extreme", "Evacuate", "Immediate", "red"),
        ("Cancel", "Extreme", "AllClear", "Past", "red"),
    ];
    let mut docs = Vec::new();
    for (i, (msg_type, severity, response, urgency, level)) in expect.into_iter().enumerate() {
        let seq = i + 1;
        let path = cap_dir.join(format!("{episode}-{seq}.xml"));
        xmllint_valid(&path);
        let x = std::fs::read_to_string(&path).unwrap();
        assert_eq!(one(&x, "identifier"), format!("{episode}-{seq}"));
        assert_eq!(one(&x, "sender"), SENDER);
        assert_eq!(one(&x, "sent"), sent[i]);
        assert_eq!(one(&x, "status"), "Exercise");
        assert_eq!(one(&x, "msgType"), msg_type);
        assert_eq!(one(&x, "incidents"), episode);
        if seq == 1 {
            assert!(texts(&x, "references").is_empty(), "{x}");
        } else {
            // the Update references the Alert, the Cancel the Update
            assert_eq!(
                one(&x, "references"),
                format!("{SENDER},{episode}-{},{}", seq - 1, sent[i - 1])
            );
        }
        assert_eq!(one(&x, "event"), "Rainstorm");
        assert_eq!(one(&x, "severity"), severity);
        assert_eq!(one(&x, "responseType"), response);
        assert_eq!(one(&x, "urgency"), urgency);
        assert_eq!(one(&x, "certainty"), "Observed");
        assert_eq!(one(&x, "effective"), sent[i]);
        assert_eq!(one(&x, "expires"), expires[i]);
        // no area column configured: areaDesc and the default geocode are the entity id
        assert_eq!(one(&x, "areaDesc"), "S1");
        let values = texts(&x, "value");
        assert_eq!(values[0], level, "eventCode forewarn:level first");
        assert!(
            values.contains(&"S1".to_string()),
            "geocode forewarn:entity"
        );
        docs.push(x);
    }

    // the same documents over MQTT, in order, on the rule's and entity's topic, not retained
    let topics: Vec<&str> = cap_msgs.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics, ["capt/cap/storm/S1"; 3],
        "nothing for the shadow rule"
    );
    for (m, doc) in cap_msgs.iter().zip(&docs) {
        assert_eq!(&m.text(), doc);
        assert!(!m.retain);
    }

    // the shadow rule's transitions are recorded (raise, clear), never published as CAP
    let records = std::fs::read_to_string(d.path("warnings.jsonl")).unwrap();
    let shadow = records
        .lines()
        .filter(|l| l.contains("\"rule\":\"gauge_check\""))
        .count();
    assert_eq!(shadow, 2, "{records}");
    assert_eq!(records.lines().count(), 5, "{records}");
}

#[test]
fn files_only_without_mqtt() {
    let broker = Mosquitto::start();
    let watch = TestClient::connect(broker.port, "capf-watch", &["capt/#"], true);
    let d = TestDaemon::start(
        &[("cap.rules", RULES)],
        &config(broker.port, "[output.cap]\ndir = \"cap\"\n"),
    );
    let online = watch.wait_for(Duration::from_secs(10), |m| m.topic == "capt/status");
    assert_eq!(online.map(|m| m.text()).as_deref(), Some("online"));
    let pubc = TestClient::connect(broker.port, "capf-pub", &[], true);
    pubc.publish(
        "capt-in/S2/rain",
        r#"{"ts":"2024-07-01T06:30:00Z","value":41}"#,
    );
    // 41 mm ≥ 40: raised straight to red, one Alert
    assert_eq!(
        d.wait_metric("forewarn_cap_messages_total", 1.0, Duration::from_secs(10)),
        1.0
    );
    let path = d.path(&format!("cap/{PREFIX}-storm-S2-20240701T063000Z-1.xml"));
    xmllint_valid(&path);
    let x = std::fs::read_to_string(&path).unwrap();
    assert_eq!(one(&x, "msgType"), "Alert");
    assert_eq!(one(&x, "severity"), "Extreme");
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<_> = std::iter::from_fn(|| watch.rx.try_recv().ok()).collect();
    assert!(
        seen.iter().all(|m| !m.topic.starts_with("capt/cap/")),
        "no CAP topic without mqtt = true"
    );
}

#[test]
fn a_level_without_cap_mapping_refuses_to_start() {
    let rules = "\
feed rain: depth mm, range 0 .. 500
rule flash_flood on rain levels watch < act:
    act   when last(rain) >= 40 mm
    watch when last(rain) >= 20 mm
    cap act: severity Severe, response Evacuate
rule probe on rain levels low < high:
    high when last(rain) >= 40 mm
    low  when last(rain) >= 20 mm
    shadow
";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cap.rules"), rules).unwrap();
    let path = dir.path().join("serve.toml");
    // no broker needed: the check comes before any connection
    let text = config(1, "[output.cap]\ndir = \"cap\"\n");
    let cfg = ServeConfig::parse(&text, &path).unwrap();
    let err = format!("{:#}", Daemon::start(cfg).unwrap_err());
    assert!(
        err.contains("rule flash_flood level watch has no CAP severity/response"),
        "{err}"
    );
    assert!(!err.contains("level act"), "act is declared: {err}");
    assert!(
        !err.contains("probe"),
        "a shadow rule publishes nothing: {err}"
    );
    assert!(!dir.path().join("cap").exists(), "nothing written");
}

fn post(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
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

/// A reload to rules with an unmapped level is refused (the rules in force stay); a good
/// reload adds a rule with custom, declared levels, and the episode open across it goes on:
/// `storm` for S3 raised yellow at 06:00 (25 mm) and escalated red at 06:10 (45 mm) after
/// the reload (Update referencing the Alert). The new `flood` rule is evaluated when it
/// takes effect, at stream time 06:00 with last(rain) = 25 ≥ 20 mm: raise `watch`
/// (Moderate/Monitor, as declared), then at 06:10, 45 ≥ 40 mm: escalate `act`
/// (Severe/Evacuate).
#[test]
fn reloads_are_checked_and_episodes_go_on() {
    let broker = Mosquitto::start();
    let watch = TestClient::connect(broker.port, "capr-watch", &["capt/status"], true);
    let d = TestDaemon::start(
        &[("cap.rules", RULES)],
        &config(broker.port, "[output.cap]\ndir = \"cap\"\n"),
    );
    let online = watch.wait_for(Duration::from_secs(10), |m| m.topic == "capt/status");
    assert_eq!(online.map(|m| m.text()).as_deref(), Some("online"));
    let pubc = TestClient::connect(broker.port, "capr-pub", &[], true);
    pubc.publish(
        "capt-in/S3/rain",
        r#"{"ts":"2024-07-01T06:00:00Z","value":25}"#,
    );
    assert_eq!(
        d.wait_metric("forewarn_cap_messages_total", 1.0, Duration::from_secs(10)),
        1.0
    );

    let flood = "
rule flood on rain levels watch < act:
    act   when last(rain) >= 40 mm
    watch when last(rain) >= 20 mm
    cap act: severity Severe, response Evacuate
";
    std::fs::write(d.path("cap.rules"), format!("{RULES}{flood}")).unwrap();
    let (code, body) = post(d.http(), "/reload");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("rule flood level watch has no CAP severity/response"),
        "{body}"
    );
    assert_eq!(d.metric("forewarn_reload_failures_total"), 1.0);

    let flood = flood.replace(
        "    cap act:",
        "    cap watch: severity Moderate, response Monitor\n    cap act:",
    );
    std::fs::write(d.path("cap.rules"), format!("{RULES}{flood}")).unwrap();
    let (code, body) = post(d.http(), "/reload");
    assert_eq!(code, 200, "{body}");
    pubc.publish(
        "capt-in/S3/rain",
        r#"{"ts":"2024-07-01T06:10:00Z","value":45}"#,
    );
    assert_eq!(
        d.wait_metric("forewarn_cap_messages_total", 4.0, Duration::from_secs(10)),
        4.0
    );
    assert_eq!(d.metric("forewarn_cap_failures_total"), 0.0);
    let storm = format!("{PREFIX}-storm-S3-20240701T060000Z");
    let flood_id = format!("{PREFIX}-flood-S3-20240701T060000Z");
    let files: BTreeSet<String> = std::fs::read_dir(d.path("cap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let expected: BTreeSet<String> = [
        format!("{storm}-1.xml"),
        format!("{storm}-2.xml"),
        format!("{flood_id}-1.xml"),
        format!("{flood_id}-2.xml"),
    ]
    .into_iter()
    .collect();
    assert_eq!(files, expected);
    let read = |name: &str| {
        let path = d.path(&format!("cap/{name}.xml"));
        xmllint_valid(&path);
        std::fs::read_to_string(path).unwrap()
    };
    let x = read(&format!("{storm}-2"));
    assert_eq!(one(&x, "msgType"), "Update");
    assert_eq!(
        one(&x, "references"),
        format!("{SENDER},{storm}-1,2024-07-01T06:00:00-00:00")
    );
    assert_eq!(one(&x, "severity"), "Extreme");
    let x = read(&format!("{flood_id}-1"));
    assert_eq!(one(&x, "msgType"), "Alert");
    assert_eq!(one(&x, "sent"), "2024-07-01T06:00:00-00:00");
    assert_eq!(one(&x, "severity"), "Moderate");
    assert_eq!(one(&x, "responseType"), "Monitor");
    assert_eq!(one(&x, "event"), "flood");
    let x = read(&format!("{flood_id}-2"));
    assert_eq!(one(&x, "msgType"), "Update");
    assert_eq!(
        one(&x, "references"),
        format!("{SENDER},{flood_id}-1,2024-07-01T06:00:00-00:00")
    );
    assert_eq!(one(&x, "severity"), "Severe");
    assert_eq!(one(&x, "responseType"), "Evacuate");
}

/// A CAP message that cannot be written (a different file already holds its identifier)
/// does not stop the daemon: it is counted in `forewarn_cap_failures_total`, the warning
/// still reaches the JSON Lines file and the MQTT warning topic, the message made is still
/// published on the CAP topic, and the next transition is written as usual.
#[test]
fn a_failing_cap_write_is_counted_and_the_daemon_goes_on() {
    let broker = Mosquitto::start();
    let watch = TestClient::connect(
        broker.port,
        "cape-watch",
        &["capt/status", "capt/warnings/#", "capt/cap/#"],
        true,
    );
    let d = TestDaemon::start(
        &[("cap.rules", RULES)],
        &config(broker.port, "[output.cap]\ndir = \"cap\"\nmqtt = true\n"),
    );
    let online = watch.wait_for(Duration::from_secs(10), |m| m.topic == "capt/status");
    assert_eq!(online.map(|m| m.text()).as_deref(), Some("online"));
    // the Alert's identifier is taken by a file with other content
    let episode = format!("{PREFIX}-storm-S4-20240701T070000Z");
    let taken = d.path(&format!("cap/{episode}-1.xml"));
    std::fs::write(&taken, "not this message").unwrap();
    let pubc = TestClient::connect(broker.port, "cape-pub", &[], true);
    pubc.publish(
        "capt-in/S4/rain",
        r#"{"ts":"2024-07-01T07:00:00Z","value":25}"#,
    );
    pubc.publish(
        "capt-in/S4/rain",
        r#"{"ts":"2024-07-01T07:10:00Z","value":45}"#,
    );
    let got = watch.collect_until(Duration::from_secs(10), |got| {
        got.iter()
            .filter(|m| m.topic == "capt/cap/storm/S4")
            .count()
            == 2
            && got
                .iter()
                .filter(|m| m.topic == "capt/warnings/storm/S4")
                .count()
                == 2
    });
    let kinds: Vec<String> = got
        .iter()
        .filter(|m| m.topic == "capt/warnings/storm/S4")
        .map(|m| m.json()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["raise", "escalate"]);
    let cap: Vec<String> = got
        .iter()
        .filter(|m| m.topic == "capt/cap/storm/S4")
        .map(|m| one(&m.text(), "msgType"))
        .collect();
    assert_eq!(cap, ["Alert", "Update"]);
    assert_eq!(
        d.wait_metric("forewarn_cap_messages_total", 1.0, Duration::from_secs(10)),
        1.0
    );
    assert_eq!(d.metric("forewarn_cap_failures_total"), 1.0);
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "not this message");
    let update = d.path(&format!("cap/{episode}-2.xml"));
    xmllint_valid(&update);
    std::thread::sleep(Duration::from_millis(300)); // the JSON Lines flush (200 ms)
    let records = std::fs::read_to_string(d.path("warnings.jsonl")).unwrap();
    assert_eq!(
        records
            .lines()
            .filter(|l| l.contains("\"rule\":\"storm\""))
            .count(),
        2,
        "{records}"
    );
}
