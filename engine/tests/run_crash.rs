//! `forewarn run` with `[history]`, killed with SIGKILL at random points and started again:
//! the outputs and the history end up exactly those of a run that was never interrupted —
//! no warning lost, none repeated. Damaged checkpoints are detected and never trusted.
//!
//! The reference is an uninterrupted run of the same binary on the same input (the warnings
//! themselves are checked against an independent oracle in tests/harvey_replay.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod durable_support;
use durable_support::{seed, Lcg};

const BIN: &str = env!("CARGO_BIN_EXE_forewarn");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Harvey configuration writing into `dir`, with frequent checkpoints and small journal
/// segments so that kills land around checkpoints, seals and segment rolls.
fn config(dir: &Path) -> PathBuf {
    config_with(dir, 40_000)
}

/// [`config`] with journal segments of `segment_rows` readings.
fn config_with(dir: &Path, segment_rows: u64) -> PathBuf {
    let root = root();
    let text = format!(
        r#"
rules = "{rules}"
[engine]
clock = "event"
watermark-delay = "1m"
display-zone = "America/Chicago"
[[source]]
name = "harvey-hcfcd"
format = "csv-wide"
path = "{data}"
feed = "rain"
time-column = "end_time"
time-zone = "-05:00"
skip-columns = ["begin_time"]
[output]
warnings = "out/warnings.jsonl"
status = "out/status.jsonl"
dead-letter = "out/dead-letter.jsonl"
cap = "out/cap"
[cap]
sender = "forewarn.test.example"
status = "Exercise"
[history]
dir = "history"
checkpoint-every = 3000
checkpoint-interval = "1h"
segment-rows = {segment_rows}
"#,
        rules = root.join("config/harvey.rules").display(),
        data = root
            .join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")
            .display(),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn forewarn(config: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["run", "--quiet", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Run to the end; the summary (stderr).
fn run_to_end(config: &Path) -> String {
    let out = forewarn(config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "forewarn run failed:\n{err}");
    err
}

/// Warnings without their emission wall time.
fn warnings(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("out/warnings.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("emitted_at");
            v.to_string()
        })
        .collect()
}

fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("out").join(name)).unwrap()
}

struct Outcome {
    warnings: Vec<String>,
    status: String,
    dead: String,
    /// The CAP directory: (file name, contents), by name.
    cap: Vec<(String, String)>,
    #[cfg(feature = "history")]
    history: Vec<Vec<String>>,
}

fn cap_files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir.join("out/cap"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn outcome(dir: &Path) -> Outcome {
    Outcome {
        warnings: warnings(dir),
        status: file(dir, "status.jsonl"),
        dead: file(dir, "dead-letter.jsonl"),
        cap: cap_files(dir),
        #[cfg(feature = "history")]
        history: ["readings", "rejected", "warnings", "status"]
            .iter()
            .map(|k| durable_support::history_rows(&dir.join("history"), k))
            .collect(),
    }
}

fn assert_same(reference: &Outcome, got: &Outcome, what: &str) {
    assert_eq!(
        reference.warnings.len(),
        got.warnings.len(),
        "{what}: warning count"
    );
    for (i, (a, b)) in reference.warnings.iter().zip(&got.warnings).enumerate() {
        assert_eq!(a, b, "{what}: warning {} differs", i + 1);
    }
    assert!(
        reference.status == got.status,
        "{what}: status events differ"
    );
    assert!(reference.dead == got.dead, "{what}: dead letters differ");
    // one CAP message per transition, the same files (identifiers, references) as without
    // the kills: episodes open at a checkpoint go on with the identifier of their raise
    let names = |o: &Outcome| o.cap.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(reference),
        names(got),
        "{what}: CAP file names differ"
    );
    for ((name, a), (_, b)) in reference.cap.iter().zip(&got.cap) {
        assert!(a == b, "{what}: CAP message {name} differs");
    }
    #[cfg(feature = "history")]
    for (k, (a, b)) in reference.history.iter().zip(&got.history).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: history kind {k} row count");
        assert!(a == b, "{what}: history kind {k} differs");
    }
}

fn reference() -> (tempfile::TempDir, Outcome, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let t = Instant::now();
    let summary = run_to_end(&cfg);
    let took = t.elapsed();
    assert!(summary.contains("fresh start"), "{summary}");
    let o = outcome(dir.path());
    assert_eq!(o.warnings.len(), 4482, "{summary}");
    assert_eq!(o.cap.len(), 4482, "one CAP message per transition");
    #[cfg(feature = "history")]
    {
        assert_eq!(
            o.history[0].len(),
            215_999,
            "accepted readings in the history"
        );
        assert_eq!(o.history[1].len(), 1, "rejected rows in the history");
        assert_eq!(o.history[2].len(), 4482, "warnings in the history");
        assert_eq!(o.history[3].len(), 150, "status rows in the history");
    }
    (dir, o, took)
}

#[test]
fn killed_at_random_points_the_run_ends_as_if_never_interrupted() {
    let (_ref_dir, reference, took) = reference();
    let seed = seed();
    eprintln!("CRASH_SEED={seed} (reference run {took:?})");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // The reference wrote 73 checkpoints (216,000 readings / 3,000): about this long apart.
    let gap = (took.as_millis() as u64 / 73).max(1);
    let mut kills = Vec::new();
    while kills.len() < 12 {
        // Each start makes some progress (1 to 4 checkpoints), then dies at a random moment
        // between checkpoints: while reading, journaling, checkpointing or sealing Parquet.
        let target =
            durable_support::newest_checkpoint(&dir.path().join("history")) + 1 + rng.next() % 4;
        let mut child = forewarn(&cfg).spawn().unwrap();
        let deadline = Instant::now() + took * 3;
        while durable_support::newest_checkpoint(&dir.path().join("history")) < target
            && Instant::now() < deadline
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % (2 * gap)));
        if child.try_wait().unwrap().is_some() {
            break; // it reached the end before the kill
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push(durable_support::newest_checkpoint(
            &dir.path().join("history"),
        ));
    }
    assert!(
        kills.len() >= 10,
        "only {} kills landed before the end (seed {seed})",
        kills.len()
    );
    eprintln!("killed after checkpoints {kills:?}");
    let summary = run_to_end(&cfg);
    assert!(
        summary.contains("resumed from checkpoint"),
        "the final start resumes:\n{summary}"
    );
    assert_same(&reference, &outcome(dir.path()), &format!("seed {seed}"));
}

#[test]
fn a_damaged_checkpoint_is_reported_and_never_trusted() {
    let (_ref_dir, reference, took) = reference();
    let part = took.as_millis() as u64 / 3;

    // 1. The newest checkpoint is damaged, and it is one that sealed a journal segment into
    //    Parquet: the previous checkpoint lies inside that segment. (Segments of 6,000
    //    readings, a checkpoint every 3,000: even-numbered checkpoints seal.)
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(dir.path(), 6000);
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries < 20, "never stopped right after a sealing checkpoint");
        let mut child = forewarn(&cfg).spawn().unwrap();
        let start = durable_support::newest_checkpoint(&dir.path().join("history"));
        let deadline = Instant::now() + took * 3;
        // wait for a sealing checkpoint and for its segment's Parquet files
        let sealed = |n: u64| {
            let seg = format!("part-{:016}.parquet", n / 2 - 1);
            std::fs::read_dir(dir.path().join("history/readings"))
                .map(|days| {
                    days.filter_map(Result::ok)
                        .any(|d| d.path().join(&seg).exists())
                })
                .unwrap_or(false)
        };
        loop {
            let n = durable_support::newest_checkpoint(&dir.path().join("history"));
            if n > start && n >= 2 && n.is_multiple_of(2) && sealed(n) {
                // the readings file is the first of the seal: let it finish
                std::thread::sleep(Duration::from_millis(15));
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        child.wait().unwrap();
        let n = durable_support::newest_checkpoint(&dir.path().join("history"));
        if n >= 2 && n.is_multiple_of(2) {
            break;
        }
    }
    let newest = dir.path().join(format!(
        "history/_checkpoints/ckpt-{:016}.bin",
        durable_support::newest_checkpoint(&dir.path().join("history"))
    ));
    let mut bytes = std::fs::read(&newest).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    std::fs::write(&newest, &bytes).unwrap();
    let summary = run_to_end(&cfg);
    assert!(
        summary.contains("is unusable: checksum mismatch")
            && summary.contains("resumed from the previous checkpoint"),
        "{summary}"
    );
    assert_same(
        &reference,
        &outcome(dir.path()),
        "after a damaged checkpoint",
    );

    // 2. Both checkpoints damaged (one truncated, one overwritten): rebuilt from the start.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(dir2.path());
    let mut child = forewarn(&cfg2).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(part));
    child.kill().unwrap();
    child.wait().unwrap();
    let ck2 = dir2.path().join("history/_checkpoints");
    // (a kill during a checkpoint's write may leave its hidden temporary file too)
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ck2)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "two checkpoints are kept");
    let len = std::fs::metadata(&files[1]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    std::fs::write(&files[0], b"FWCKPT\0\0garbage").unwrap();
    let summary = run_to_end(&cfg2);
    assert!(
        summary.contains("is unusable: truncated") && summary.contains("rebuilding from the start"),
        "{summary}"
    );
    assert_same(
        &reference,
        &outcome(dir2.path()),
        "after both checkpoints were damaged",
    );
}
