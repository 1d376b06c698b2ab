//! CAP output of `forewarn run`: a small storm that raises, escalates, downgrades and clears
//! becomes Alert, Update, Update, Cancel per published rule, chained as docs/cap.md says;
//! a `shadow` rule is recorded but never published; every file is valid CAP 1.2 (xmllint);
//! a custom level without a `cap` declaration stops the run before anything is written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use forewarn_engine::config::RunConfig;
use forewarn_engine::run::{run, RunError};

const RULES: &str = r#"
feed rain: depth mm, range 0 .. 500, interval 5m, late 1h
table st: "stations.csv", key id, group area
levels cma: blue < yellow < orange < red

rule storm on rain levels cma:
    red    when sum(rain, 1h) >= 40 mm
    orange when sum(rain, 1h) >= 20 mm
    clear when sum(rain, 1h) < 1 mm
    event zh-CN "暴雨"
    event "Rainstorm"
    message zh-CN "{entity} 暴雨{level}：1 小时 {sum(rain, 1h):.0} 毫米"
    message en "{entity} rainstorm {level}: {sum(rain, 1h):.0} mm in 1 h"

rule flash_flood on rain levels watch < act:
    act   when sum(rain, 1h) >= 40 mm
    watch when sum(rain, 1h) >= 20 mm
    clear when sum(rain, 1h) < 1 mm
    cap watch: severity Moderate, response Monitor
    cap act: severity Severe, response Evacuate
    message "{entity} flood {level}"

rule gauge_check on rain:
    odd when sum(rain, 1h) >= 20 mm
    shadow
"#;

/// Readings of station S1 (mm per 5 min). Hand-computed sums over (t - 1h, t]:
/// 00:05 → 25 (raise orange / watch), 00:10 → 25 + 22 = 47 (escalate red / act),
/// 01:05 → 22 + 0 = 22, the 00:05 reading having left (downgrade orange / watch),
/// 01:10 → 0, the 00:10 reading having left (clear).
const READINGS: &str = "entity,ts,value
S1,2024-07-01T00:05:00Z,25
S1,2024-07-01T00:10:00Z,22
S1,2024-07-01T01:05:00Z,0
S1,2024-07-01T01:10:00Z,0
";

const SENDER: &str = "forewarn.test.example";
const PREFIX: &str = "test.forewarn";

fn setup(rules: &str, extra_cap: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.rules"), rules).unwrap();
    std::fs::write(
        d.join("stations.csv"),
        "id,name,area\nS1,Hill station,north\n",
    )
    .unwrap();
    std::fs::write(d.join("readings.csv"), READINGS).unwrap();
    let config = format!(
        r#"rules = "r.rules"
[[source]]
name = "readings"
format = "csv"
path = "readings.csv"
feed = "rain"
[output]
warnings = "out/warnings.jsonl"
dead-letter = "out/dead.jsonl"
cap = "out/cap"
[cap]
sender = "{SENDER}"
identifier-prefix = "{PREFIX}"
status = "Exercise"
expires-after = "2h"
area-column = "name"
geocodes = [{{ value-name = "admin", column = "area" }}]
{extra_cap}
"#
    );
    let path = d.join("forewarn.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
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
fn a_storm_becomes_alert_update_update_cancel_and_shadow_rules_are_not_published() {
    let (dir, path) = setup(RULES, "");
    let cfg = RunConfig::load(&path).unwrap();
    let summary = run(&cfg).unwrap();
    let cap_dir = dir.path().join("out/cap");

    // 4 transitions each for storm and flash_flood, 2 for the shadow rule
    assert_eq!(summary.warnings, 10);
    let cap = summary.cap.as_ref().expect("CAP stats");
    assert_eq!((cap.written, cap.failed), (8, 0), "{:?}", cap.errors);

    let storm = format!("{PREFIX}-storm-S1-20240701T000500Z");
    let flood = format!("{PREFIX}-flash_flood-S1-20240701T000500Z");
    let files: BTreeSet<String> = std::fs::read_dir(&cap_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let expected: BTreeSet<String> = (1..=4)
        .flat_map(|seq| [format!("{storm}-{seq}.xml"), format!("{flood}-{seq}.xml")])
        .collect();
    assert_eq!(
        files, expected,
        "no file for the shadow rule, no temporary files"
    );

    let read = |id: &str, seq: u64| {
        std::fs::read_to_string(cap_dir.join(format!("{id}-{seq}.xml"))).unwrap()
    };
    let sent = [
        "2024-07-01T00:05:00-00:00",
        "2024-07-01T00:10:00-00:00",
        "2024-07-01T01:05:00-00:00",
        "2024-07-01T01:10:00-00:00",
    ];
    // (msgType, severity, responseType, level eventCode) per seq
    let storm_expect = [
        ("Alert", "Severe", "Prepare", Some("orange")),
        ("Update", "Extreme", "Evacuate", Some("red")),
        ("Update", "Severe", "Prepare", Some("orange")),
        ("Cancel", "Severe", "AllClear", Some("orange")),
    ];
    let flood_expect = [
        ("Alert", "Moderate", "Monitor", Some("watch")),
        ("Update", "Severe", "Evacuate", Some("act")),
        ("Update", "Moderate", "Monitor", Some("watch")),
        ("Cancel", "Moderate", "AllClear", Some("watch")),
    ];
    for (id, expect) in [(&storm, storm_expect), (&flood, flood_expect)] {
        for (i, (msg_type, severity, response, level)) in expect.into_iter().enumerate() {
            let seq = i as u64 + 1;
            let x = read(id, seq);
            let n_infos = texts(&x, "language").len();
            assert_eq!(one(&x, "identifier"), format!("{id}-{seq}"));
            assert_eq!(one(&x, "sender"), SENDER);
            assert_eq!(one(&x, "sent"), sent[i]);
            assert_eq!(one(&x, "status"), "Exercise");
            assert_eq!(one(&x, "msgType"), msg_type);
            assert_eq!(one(&x, "incidents"), id.as_str());
            if seq == 1 {
                assert!(texts(&x, "references").is_empty());
            } else {
                // the episode's previous message
                assert_eq!(
                    one(&x, "references"),
                    format!("{SENDER},{id}-{},{}", seq - 1, sent[i - 1])
                );
            }
            assert_eq!(texts(&x, "severity"), vec![severity; n_infos]);
            assert_eq!(texts(&x, "responseType"), vec![response; n_infos]);
            let urgency = if msg_type == "Cancel" {
                "Past"
            } else {
                "Immediate"
            };
            assert_eq!(texts(&x, "urgency"), vec![urgency; n_infos]);
            assert_eq!(texts(&x, "certainty"), vec!["Observed"; n_infos]);
            assert_eq!(texts(&x, "effective"), vec![sent[i]; n_infos]);
            // expires-after = 2h
            let expires = format!("2024-07-01T{:02}{}", [2, 2, 3, 3][i], &sent[i][13..]);
            assert_eq!(texts(&x, "expires"), vec![expires; n_infos]);
            assert_eq!(texts(&x, "areaDesc"), vec!["Hill station"; n_infos]);
            let values = texts(&x, "value");
            if let Some(level) = level {
                assert_eq!(values[0], level);
            }
            assert!(values.contains(&"north".to_string()), "geocode admin");
        }
    }

    // storm: one info per language, in declaration order, event by language
    let x = read(&storm, 1);
    assert_eq!(texts(&x, "language"), ["zh-CN", "en"]);
    assert_eq!(texts(&x, "event"), ["暴雨", "Rainstorm"]);
    assert_eq!(
        texts(&x, "headline"),
        [
            "S1 暴雨orange：1 小时 25 毫米",
            "S1 rainstorm orange: 25 mm in 1 h"
        ]
    );
    assert_eq!(
        texts(&x, "description"),
        [
            "S1 暴雨orange：1 小时 25 毫米\nsum(rain, 1h) = 25.0",
            "S1 rainstorm orange: 25 mm in 1 h\nsum(rain, 1h) = 25.0"
        ]
    );
    let x = read(&storm, 2);
    assert_eq!(
        texts(&x, "headline"),
        [
            "S1 暴雨red：1 小时 47 毫米",
            "S1 rainstorm red: 47 mm in 1 h"
        ]
    );
    // parameters: the values, then forewarn's branch and transition
    let names = texts(&x, "valueName");
    let values = texts(&x, "value");
    let i = names.iter().position(|n| n == "sum(rain, 1h)").unwrap();
    assert_eq!(values[i], "47.0");
    // flash_flood has no localized message and no event: one English info, the rule name
    let x = read(&flood, 3);
    assert_eq!(texts(&x, "language"), ["en"]);
    assert_eq!(one(&x, "event"), "flash flood");
    assert_eq!(one(&x, "headline"), "S1 flood watch");

    for f in &files {
        xmllint_valid(&cap_dir.join(f));
    }

    // the shadow rule's warnings are in the warnings output, flagged
    let shadow: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("out/warnings.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["rule"] == "gauge_check")
            .collect();
    let kinds: Vec<&str> = shadow.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["raise", "clear"]);
    assert!(shadow.iter().all(|v| v["shadow"] == true));

    // a second run over the same directory writes the identical messages again: no conflict
    let again = run(&cfg).unwrap();
    assert_eq!(again.cap.unwrap().failed, 0);
}

#[test]
fn a_custom_level_without_cap_refuses_to_start() {
    let rules = RULES.replace("    cap act: severity Severe, response Evacuate\n", "");
    let (dir, path) = setup(&rules, "");
    let cfg = RunConfig::load(&path).unwrap();
    let err = run(&cfg).unwrap_err();
    let RunError::Cap(problems) = &err else {
        panic!("expected a CAP start-up error, got {err}")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert!(
        p.contains("rule flash_flood level act") && p.contains("cap act: severity"),
        "{p}"
    );
    // nothing was written
    assert!(!dir.path().join("out/warnings.jsonl").exists());
    assert!(!dir.path().join("out/cap").exists());

    // the same rule marked shadow needs no mapping
    let rules = rules.replace(
        "    message \"{entity} flood {level}\"\n",
        "    message \"{entity} flood {level}\"\n    shadow\n",
    );
    let (_dir, path) = setup(&rules, "");
    let summary = run(&RunConfig::load(&path).unwrap()).unwrap();
    assert_eq!(summary.cap.unwrap().written, 4, "only storm is published");
}

#[test]
fn bad_cap_settings_are_reported_at_load() {
    let (_dir, path) = setup(RULES, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("status = \"Exercise\"", "status = \"Rehearsal\"")
        .replace(
            &format!("sender = \"{SENDER}\""),
            "sender = \"forewarn example\"",
        );
    let err = RunConfig::parse(&text, &path).unwrap_err().to_string();
    assert!(
        err.contains("cap.status") && err.contains("Rehearsal"),
        "{err}"
    );
    assert!(err.contains("sender"), "{err}");
    // output.cap without a sender
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("sender = \"{SENDER}\"\n"), "");
    let err = RunConfig::parse(&text, &path).unwrap_err().to_string();
    assert!(err.contains("cap.sender: required"), "{err}");
}
