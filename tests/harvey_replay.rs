//! The main job on real data: Hurricane Harvey through `config/forewarn.toml`, compared
//! exactly with the transitions computed independently by `tests/harvey/oracle.py`
//! (a naive stdlib-Python recomputation from the raw samples; see tests/harvey/README.md).

use std::collections::BTreeSet;
use std::path::Path;

use forewarn_engine::config::RunConfig;
use forewarn_engine::run::run;
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

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

#[test]
fn harvey_replay_matches_the_independent_oracle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let out = tempfile::tempdir().expect("tempdir");
    let mut cfg =
        RunConfig::load(&root.join("config/forewarn.toml")).expect("default config loads");
    cfg.output.warnings = Some(out.path().join("warnings.jsonl"));
    cfg.output.status = Some(out.path().join("status.jsonl"));
    cfg.output.dead_letter = Some(out.path().join("dead-letter.jsonl"));
    cfg.output.console = false;
    cfg.output.cap = Some(out.path().join("cap"));
    let summary = run(&cfg).expect("the replay runs");

    let got: Vec<Value> = read_jsonl(&out.path().join("warnings.jsonl"));
    let expected: Vec<Value> = read_jsonl(&root.join("tests/harvey/expected_warnings.jsonl"));
    let got_keys: BTreeSet<Key> = got.iter().map(key).collect();
    let want_keys: BTreeSet<Key> = expected.iter().map(key).collect();
    assert_eq!(got.len(), got_keys.len(), "no transition is emitted twice");
    let missing: Vec<_> = want_keys.difference(&got_keys).take(10).collect();
    let extra: Vec<_> = got_keys.difference(&want_keys).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "engine and oracle disagree ({} vs {} transitions)\nmissing (first 10): {missing:#?}\nunexpected (first 10): {extra:#?}",
        got_keys.len(),
        want_keys.len()
    );

    // The one physically implausible reading (gauge 520, 3.96 in in 5 min) is dead-lettered
    // with its reason, and nothing else is rejected.
    let oracle_summary: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/harvey/expected_summary.json")).expect("summary"),
    )
    .expect("summary JSON");
    let dead = read_jsonl(&out.path().join("dead-letter.jsonl"));
    let want_dead = &oracle_summary["rejected_readings"]["readings"];
    assert_eq!(
        dead.len(),
        want_dead.as_array().map_or(0, |a| a.len()),
        "{dead:?}"
    );
    for (d, w) in dead.iter().zip(want_dead.as_array().into_iter().flatten()) {
        assert_eq!(d["reason"], "out_of_range");
        assert_eq!(d["entity"], w["entity"]);
        assert_eq!(d["value"].as_str(), w["value_in"].as_str());
    }

    // Warnings still active at the end, as the oracle lists them.
    let mut active: Vec<(String, String, String)> = summary
        .active
        .iter()
        .map(|a| (a.rule.clone(), a.entity.clone(), a.level.clone()))
        .collect();
    let mut want_active: Vec<(String, String, String)> = oracle_summary["active_at_end"]
        ["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let s = |k: &str| w[k].as_str().unwrap_or_default().to_string();
            (s("rule"), s("entity"), s("level"))
        })
        .collect();
    active.sort();
    want_active.sort();
    assert_eq!(active, want_active);
    assert_eq!(summary.counters.read, 150 * 1440);
    assert_eq!(
        summary.counters.accepted + summary.counters.rejected_total(),
        150 * 1440
    );

    // Every record carries provenance and a schema version.
    assert!(got.iter().all(|w| w["schema"] == 1
        && w["provenance"]["ruleset"]
            .as_str()
            .is_some_and(|h| h.len() == 64)));

    // CAP output is on in the shipped configuration: every rule of harvey.rules has a CAP
    // mapping and none is shadow, so every transition is one valid CAP 1.2 file.
    let cap = summary.cap.as_ref().expect("CAP output configured");
    assert_eq!(
        (cap.written, cap.failed),
        (got.len() as u64, 0),
        "{:?}",
        cap.errors
    );
    let mut files: Vec<_> = std::fs::read_dir(out.path().join("cap"))
        .expect("CAP directory")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), got.len());
    let xsd = root.join("fixtures/cap-1.2/CAP-v1.2.xsd");
    for chunk in files.chunks(500) {
        let o = std::process::Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&xsd)
            .args(chunk)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run xmllint ({e}): install it with `apt-get install libxml2-utils`")
            });
        assert!(
            o.status.success(),
            "CAP files fail the CAP 1.2 schema:\n{}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .filter(|l| !l.ends_with(" validates"))
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
