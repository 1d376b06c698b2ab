//! Parquet history as a replay source: a run over the history another run recorded gives
//! that run's warnings (the history keeps arrival order and batches), and new rules can be
//! backfilled over it.
#![cfg(feature = "history")]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_forewarn");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(config: &Path) -> String {
    let out = Command::new(BIN)
        .args(["run", "--quiet", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn warnings(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("emitted_at");
            v.to_string()
        })
        .collect()
}

/// One process per data directory: a second run on the same `[history] dir` is refused
/// while the first holds it.
#[test]
fn a_data_directory_serves_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = format!(
        "rules = \"{}\"\n[[source]]\nname = \"h\"\nformat = \"csv-wide\"\npath = \"{}\"\nfeed = \"rain\"\ntime-column = \"end_time\"\ntime-zone = \"-05:00\"\nskip-columns = [\"begin_time\"]\n[output]\nwarnings = \"w.jsonl\"\n[history]\ndir = \"h\"\n",
        root().join("config/harvey.rules").display(),
        root()
            .join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")
            .display()
    );
    std::fs::write(d.join("r.toml"), config).unwrap();
    let mut first = Command::new(BIN)
        .args(["run", "--quiet", "--config"])
        .arg(d.join("r.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(d.join("h/_lock")).is_ok_and(|t| t.starts_with("pid")) {
        assert!(
            std::time::Instant::now() < end,
            "the first run never locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = Command::new(BIN)
        .args(["run", "--quiet", "--config"])
        .arg(d.join("r.toml"))
        .output()
        .unwrap();
    let still_running = first.try_wait().unwrap().is_none();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("is in use by another forewarn"),
        "{err}"
    );
    // (the Harvey replay takes seconds; the refusal milliseconds)
    assert!(
        still_running,
        "the first run ended before the second was refused"
    );
    assert!(first.wait().unwrap().success());
}

#[test]
fn replaying_the_history_gives_the_recorded_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rules = root().join("config/harvey.rules");
    let first = format!(
        r#"
rules = "{rules}"
[engine]
watermark-delay = "1m"
[[source]]
name = "harvey-hcfcd"
format = "csv-wide"
path = "{data}"
feed = "rain"
time-column = "end_time"
time-zone = "-05:00"
skip-columns = ["begin_time"]
[output]
warnings = "a/warnings.jsonl"
[history]
dir = "a/history"
"#,
        rules = rules.display(),
        data = root()
            .join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")
            .display(),
    );
    std::fs::write(d.join("a.toml"), first).unwrap();
    run(&d.join("a.toml"));

    let second = format!(
        r#"
rules = "{rules}"
[engine]
watermark-delay = "1m"
[[source]]
name = "backfill"
format = "history"
path = "a/history"
[output]
warnings = "b/warnings.jsonl"
[history]
dir = "b/history"
"#,
        rules = rules.display(),
    );
    std::fs::write(d.join("b.toml"), second).unwrap();
    let summary = run(&d.join("b.toml"));
    assert!(summary.contains("215999 read"), "{summary}");
    let a = warnings(&d.join("a/warnings.jsonl"));
    let b = warnings(&d.join("b/warnings.jsonl"));
    assert_eq!(a.len(), 4482);
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the history replay gives other warnings");

    // a run may not read its own data directory (it rewrites it): refused before anything
    let own = "rules = \"new.rules\"\n[[source]]\nname = \"self\"\nformat = \"history\"\npath = \"b/history\"\n[history]\ndir = \"b/history\"\n";
    std::fs::write(d.join("own.toml"), own).unwrap();
    std::fs::write(d.join("new.rules"), "feed rain: depth in\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--quiet", "--config"])
        .arg(d.join("own.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("own [history] dir"),
        "{err}"
    );
    assert!(d.join("b/history/readings").is_dir(), "nothing was deleted");

    // New rules over the same history: a single 24 h threshold, checked against a naive
    // recomputation from the CSV itself.
    let new_rules = "feed rain: depth in, range 0 .. 3.5 in\n\nrule day_total on rain:\n    wet when sum(rain, 24h) >= 300 mm\n";
    std::fs::write(d.join("new.rules"), new_rules).unwrap();
    let third = "rules = \"new.rules\"\n[engine]\nwatermark-delay = \"1m\"\n[[source]]\nname = \"backfill\"\nformat = \"history\"\npath = \"a/history\"\n[output]\nwarnings = \"c/warnings.jsonl\"\n";
    std::fs::write(d.join("c.toml"), third).unwrap();
    run(&d.join("c.toml"));
    let raised: std::collections::BTreeSet<String> = warnings(&d.join("c/warnings.jsonl"))
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["kind"] == "raise").then(|| v["entity"].as_str().unwrap().to_string())
        })
        .collect();
    // naive: per gauge, any 24 h window (288 five-minute values) summing to >= 300 mm
    let csv =
        std::fs::read_to_string(root().join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mut expected = std::collections::BTreeSet::new();
    for (c, name) in header.iter().enumerate() {
        if *name == "begin_time" || *name == "end_time" {
            continue;
        }
        let v: Vec<f64> = rows
            .iter()
            .map(|r| {
                let x: f64 = r[c].trim().parse().unwrap_or(0.0);
                if x > 2.0 {
                    0.0
                } else {
                    x * 25.4
                } // rejected by the recording run's range: not in its history
            })
            .collect();
        let hit = (0..v.len()).any(|i| {
            let from = i.saturating_sub(287);
            v[from..=i].iter().sum::<f64>() >= 300.0 - 1e-9
        });
        if hit {
            expected.insert(name.trim().to_string());
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(raised, expected);
}
