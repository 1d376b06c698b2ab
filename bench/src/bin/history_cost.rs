//! What keeping history costs a replay: the Harvey run (216,000 readings through
//! config/harvey.rules) with and without `[history]`, alternated in one invocation, and the
//! history run's own figures — Parquet rows written per second of sealing, checkpoint size
//! and time.
//!
//! ```sh
//! cargo run --release -p forewarn-bench --bin history_cost -- --rounds 5
//! ```

use std::path::{Path, PathBuf};

use forewarn_engine::config::RunConfig;
use forewarn_engine::run::{run_with, RunOptions, Summary};

fn config(root: &Path, out: &Path, history: Option<(u64, u64)>) -> RunConfig {
    let mut text = format!(
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
warnings = "{out}/warnings.jsonl"
status = "{out}/status.jsonl"
dead-letter = "{out}/dead-letter.jsonl"
"#,
        rules = root.join("config/harvey.rules").display(),
        data = root
            .join("fixtures/harvey/hcfcd_harvey_5min_wide.csv")
            .display(),
        out = out.display(),
    );
    if let Some((every, segment)) = history {
        text.push_str(&format!(
            "[history]\ndir = \"{}/history\"\ncheckpoint-every = {every}\ncheckpoint-interval = \"1h\"\nsegment-rows = {segment}\n",
            out.display()
        ));
    }
    RunConfig::parse(&text, &out.join("bench.toml")).expect("bench config")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut rounds = 5usize;
    let mut every = 100_000u64;
    let mut segment = 1_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--rounds" => rounds = num() as usize,
            "--checkpoint-every" => every = num(),
            "--segment-rows" => segment = num(),
            other => panic!(
                "unknown argument {other} (--rounds N --checkpoint-every N --segment-rows N)"
            ),
        }
    }
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().expect("temp dir");
    let plain_cfg = config(&root, &tmp.path().join("plain"), None);
    let hist_cfg = config(&root, &tmp.path().join("hist"), Some((every, segment)));
    let fresh = RunOptions { fresh: true };
    let (mut plain, mut hist) = (Vec::new(), Vec::new());
    let mut last: Option<Summary> = None;
    let (mut rows_per_s, mut ckpt_ms) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let a = run_with(&plain_cfg, fresh).expect("plain run");
        let b = run_with(&hist_cfg, fresh).expect("history run");
        assert_eq!(a.warnings, b.warnings, "the same warnings either way");
        let h = b.history.clone().expect("history stats");
        plain.push(a.seconds);
        hist.push(b.seconds);
        rows_per_s.push(h.parquet_rows as f64 / h.seal_seconds.max(1e-9));
        ckpt_ms.push(1e3 * h.checkpoint_seconds / h.checkpoints.max(1) as f64);
        eprintln!(
            "round {}: without history {:.3} s, with history {:.3} s",
            round + 1,
            a.seconds,
            b.seconds
        );
        last = Some(b);
    }
    let s = last.expect("at least one round");
    let h = s.history.clone().unwrap_or_default();
    let readings = s.counters.read as f64;
    let (p, q) = (median(&mut plain), median(&mut hist));
    println!(
        "Harvey replay, {} readings, {rounds} rounds alternated, medians:",
        s.counters.read
    );
    println!(
        "  without history   {p:.3} s  ({:.0} readings/s)",
        readings / p
    );
    println!(
        "  with history      {q:.3} s  ({:.0} readings/s)  = {:.2}x the time without",
        readings / q,
        q / p
    );
    println!(
        "  Parquet: {} rows in {} segment(s), {:.0} KiB; sealing writes {:.0} rows/s (median)",
        h.parquet_rows,
        h.segments_sealed,
        h.parquet_bytes as f64 / 1024.0,
        median(&mut rows_per_s)
    );
    println!(
        "  checkpoints: {} of {:.0} KiB each (the last), {:.2} ms each (median of rounds' means; snapshot + encode + fsync + rename)",
        h.checkpoints,
        h.checkpoint_bytes as f64 / 1024.0,
        median(&mut ckpt_ms)
    );
}
