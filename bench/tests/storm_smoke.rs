//! Smoke tests of the `storm` subcommands' library functions (core, latency, memory,
//! history) on a tiny generated dataset (S = 50, H = 6, seed 42). The edges are checked
//! against the generator's `expected.json`, computed by its own independent oracle; the
//! timing figures only for being sane. The MQTT latency run is skipped when mosquitto is not
//! installed.

use std::path::Path;
use std::sync::Arc;

use forewarn_bench::storm::{self, Answer, Edges};
use forewarn_bench::storm_gen::{generate, GenOptions, StormParams};
use forewarn_bench::{storm_core, storm_history, storm_latency, storm_memory};

fn dataset(dir: &Path) -> Answer {
    generate(
        &StormParams::new(50, 6, 42),
        dir,
        &GenOptions {
            threads: 1,
            ..GenOptions::default()
        },
    )
    .expect("generate S=50 H=6");
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

#[test]
fn core_edges_equal_the_oracle_on_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let want = dataset(tmp.path());
    let events = tmp.path().join("events.parquet");
    let thresholds = tmp.path().join("thresholds.csv");
    let plan = Arc::new(storm::load_plan(&thresholds).unwrap());
    let decoded = storm_core::decode_file(&events).unwrap();
    assert_eq!(decoded.readings.len() as u64, want.n_events);
    for threads in [1, 2, 3] {
        let r = storm_core::run_core(&decoded, Arc::clone(&plan), threads).unwrap();
        assert_eq!(r.threads, threads);
        assert_eq!(r.n_events, want.n_events, "{threads} threads");
        assert_eq!(Edges::from(r.edges), want.edges, "{threads} threads");
        assert_eq!(r.thread_events.iter().sum::<u64>(), want.n_events);
        assert_eq!(r.rejected, 0);
        assert!(r.events_per_s() > 0.0 && r.ns_per_event() > 0.0);
    }
    // the CSV gives the same, through the file-level entry point
    let r = storm_core::core(&tmp.path().join("events.csv"), &thresholds, 2).unwrap();
    assert_eq!(Edges::from(r.edges), want.edges);
}

#[test]
fn latency_in_process_measures_every_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let want = dataset(tmp.path());
    let opts = storm_latency::LatencyOptions {
        rate: 10_000.0,
        seconds: 0.5,
        shards: None,
        batch: None,
    };
    let r = storm_latency::in_process(
        &tmp.path().join("events.parquet"),
        &tmp.path().join("thresholds.csv"),
        &opts,
    )
    .unwrap();
    assert_eq!(r.readings, 5_000);
    assert_eq!(r.n, 5_000, "every reading measured");
    assert!(r.replays > 1.0 && (r.replays - 5_000.0 / want.n_events as f64).abs() < 1e-9);
    assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    assert!(r.achieved_per_s > 0.0 && r.partial);
    assert_eq!(r.rejected, 0);
    // a first pass over the file and part of a second: at least the file's edges
    assert!(r.raises >= want.edges.yellow + want.edges.orange + want.edges.red);
    assert!(r.warnings >= r.raises);
    // two feeder threads, gauges split as the daemon splits them: the same transitions
    let two = storm_latency::in_process(
        &tmp.path().join("events.parquet"),
        &tmp.path().join("thresholds.csv"),
        &storm_latency::LatencyOptions {
            shards: Some(2),
            ..opts
        },
    )
    .unwrap();
    assert_eq!((two.shards, two.n), (2, 5_000));
    assert_eq!((two.raises, two.warnings), (r.raises, r.warnings));
}

#[test]
fn rules_without_reorder_hold_nothing_back() {
    let text = storm_latency::rules_text_no_reorder().unwrap();
    assert!(!text.contains("reorder"));
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path());
    let plan = storm_latency::plan_no_reorder(&tmp.path().join("thresholds.csv")).unwrap();
    assert!(plan.feeds.iter().all(|f| f.reorder == 0));
}

#[test]
fn latency_through_mosquitto() {
    if storm_latency::mosquitto_binary().is_none() {
        eprintln!("mosquitto is not installed: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path());
    let opts = storm_latency::LatencyOptions {
        rate: 5_000.0,
        seconds: 0.8,
        shards: Some(2),
        batch: None,
    };
    let r = storm_latency::through_mqtt(
        &tmp.path().join("events.parquet"),
        &tmp.path().join("thresholds.csv"),
        &opts,
    )
    .unwrap();
    assert_eq!(r.transport, "mqtt");
    assert_eq!(r.readings, 4_000);
    let m = r.mqtt.as_ref().unwrap();
    assert_eq!(m.batch, 3);
    assert_eq!(m.messages, 4_000u64.div_ceil(3));
    assert_eq!(m.warnings_received, r.n + m.warnings_unmatched);
    assert!(r.n == 0 || (r.p50_us > 0.0 && r.p50_us <= r.max_us));
    assert!(r.achieved_per_s > 0.0 && r.partial);
}

#[test]
fn memory_per_gauge() {
    let r = storm_memory::memory(300, 2, storm_memory::SnapshotMode::Auto, false).unwrap();
    assert_eq!(r.entities, 300);
    assert_eq!(r.readings, 300 * 24);
    // (RSS figures are not checked: the other tests share the process)
    assert!(r.rss_bytes > 0);
    let cp = r.checkpoint_bytes_per_gauge.unwrap();
    // 24 samples of 2 h at least a few bytes each
    assert!(cp > 24.0 * 4.0, "{cp}");
    let r = storm_memory::memory(10, 1, storm_memory::SnapshotMode::Never, false).unwrap();
    assert!(r.checkpoint_bytes.is_none() && r.checkpoint_skipped.is_some());
}

#[test]
fn history_edges_equal_the_oracle() {
    let tmp = tempfile::tempdir().unwrap();
    let want = dataset(tmp.path());
    let thresholds = tmp.path().join("thresholds.csv");
    let opts = storm_history::HistoryOptions {
        checkpoint_every: 1_000,
        segment_rows: 2_000,
        compare: false,
    };
    // the .csv next to the .parquet
    let r = storm_history::history(&tmp.path().join("events.parquet"), &thresholds, &opts).unwrap();
    assert_eq!(r.n_events, want.n_events);
    assert_eq!(r.edges, want.edges);
    assert!(r.csv.ends_with("events.csv"));
    assert!(r.rows >= r.n_events && r.bytes > 0 && r.rows_per_s > 0.0);
    assert!(r.segments >= 2 && r.checkpoints >= 1);
    // a lone Parquet file is converted first
    let lone = tempfile::tempdir().unwrap();
    std::fs::copy(
        tmp.path().join("events.parquet"),
        lone.path().join("events.parquet"),
    )
    .unwrap();
    let r2 =
        storm_history::history(&lone.path().join("events.parquet"), &thresholds, &opts).unwrap();
    assert_eq!(r2.n_events, want.n_events);
    assert_eq!(r2.edges, want.edges);
    assert_eq!(r2.rows, r.rows);
}
