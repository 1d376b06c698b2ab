//! Forecast sources in `forewarn run`: `[[forecast]]` files are loaded, handed to the engine
//! before the replay, and used from their as-of time on — never before. The warning they
//! carry reports the `forecast` branch and the expected crossing, both computed here by hand.

use std::path::{Path, PathBuf};

use forewarn_engine::config::RunConfig;
use forewarn_engine::run::{load_forecasts, run, RunError};

const HOUR: i64 = 3_600_000;

const RULES: &str = r#"
feed rain: depth mm, range 0 .. 500, interval 5m, late 1h
feed qpf: forecast depth mm
table st: "stations.csv", key id, group area

rule wet on rain:
    red when sum(rain, 1h) + forecast(qpf, next 3h) >= 50 mm
"#;

/// Two stations, one per area; the forecast is for `north` only.
const STATIONS: &str = "id,area\nS1,north\nS2,south\n";

/// Both stations get the same rain: 15 mm at 00:30 and at 00:55, nothing after.
const READINGS: &str = "entity,ts,value
S1,2024-07-01T00:30:00Z,15
S2,2024-07-01T00:30:00Z,15
S1,2024-07-01T00:55:00Z,15
S2,2024-07-01T00:55:00Z,15
S1,2024-07-01T01:00:00Z,0
S2,2024-07-01T01:00:00Z,0
S1,2024-07-01T01:20:00Z,0
S2,2024-07-01T01:20:00Z,0
";

/// Issued 01:00, received 01:20: 30 mm over (00:00, 03:00] and 30 mm over (03:00, 06:00],
/// i.e. 10 mm/h throughout. Line 2 has a bad issue time, line 3 an unknown area: both are
/// dead-lettered.
const FORECASTS: &str = r#"{"feed":"qpf","area":"north","issued":"2024-07-01T01:00:00Z","received":"2024-07-01T01:20:00Z","unit":"mm","intervals":[{"start":"2024-07-01T00:00:00Z","end":"2024-07-01T03:00:00Z","value":30},{"valid":"2024-07-01T03:00:00Z/PT3H","value":30}]}
{"feed":"qpf","area":"north","issued":"yesterday","intervals":[]}
{"feed":"qpf","area":"atlantis","issued":"2024-07-01T01:00:00Z","intervals":[{"start":"2024-07-01T00:00:00Z","end":"2024-07-01T03:00:00Z","value":99}]}
"#;

fn utc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

fn setup(as_of: &str, forecast_section: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.rules"), RULES).unwrap();
    std::fs::write(d.join("stations.csv"), STATIONS).unwrap();
    std::fs::write(d.join("readings.csv"), READINGS).unwrap();
    std::fs::create_dir(d.join("fc")).unwrap();
    std::fs::write(d.join("fc/qpf.jsonl"), FORECASTS).unwrap();
    let config = format!(
        r#"rules = "r.rules"
[engine]
forecast-as-of = "{as_of}"
[[source]]
name = "readings"
format = "csv"
path = "readings.csv"
feed = "rain"
[output]
warnings = "out/warnings.jsonl"
dead-letter = "out/dead.jsonl"
{forecast_section}
"#
    );
    let path = d.join("forewarn.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

const QPF: &str = r#"
[[forecast]]
name = "qpf-file"
format = "jsonl"
path = "fc/qpf.jsonl"
feed = "qpf"
"#;

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The expected crossing, within what 16 bisection steps over the horizon can resolve.
fn assert_crossing(got: &serde_json::Value, expected: i64, horizon: i64) {
    let got = utc(got.as_str().expect("an expected crossing"));
    let tolerance = horizon / 65_536 + 1;
    assert!(
        (got - expected).abs() <= tolerance,
        "expected crossing {got} is not within {tolerance} ms of {expected}"
    );
}

/// Backtest mode: usable from its issue time, 01:00.
///
/// At 00:55 the forecast, were it usable, would already make the sum hold: 30 mm observed
/// over (23:55, 00:55] plus 10 mm/h × 3 h = 30 mm over (00:55, 03:55] = 60. It is not used
/// then (issued 01:00), so nothing is raised at 00:55. At 01:00 it becomes usable and S1 is
/// evaluated: observed (00:00, 01:00] = 30, forecast (01:00, 04:00] = 30, 60 >= 50: raise.
/// Expected crossing: 20 mm more are needed at 10 mm/h, 2 h after 01:00 = 03:00.
#[test]
fn a_forecast_is_used_from_its_issue_time_in_backtests() {
    let (dir, path) = setup("issued", QPF);
    let cfg = RunConfig::load(&path).unwrap();
    let summary = run(&cfg).unwrap();
    let w = records(&dir.path().join("out/warnings.jsonl"));
    assert!(!w.is_empty(), "no warning");
    let first = &w[0];
    assert_eq!(first["rule"], "wet");
    assert_eq!(first["entity"], "S1");
    assert_eq!(first["kind"], "raise");
    assert_eq!(
        utc(first["time"].as_str().unwrap()),
        utc("2024-07-01T01:00:00Z")
    );
    assert_eq!(first["branch"], "forecast");
    assert_crossing(
        &first["expected_crossing"],
        utc("2024-07-01T03:00:00Z"),
        3 * HOUR,
    );
    let values = &first["values"];
    assert_eq!(values["sum(rain, 1h)"], 30.0);
    let f = values["forecast(qpf, next 3h)"].as_f64().unwrap();
    assert!((f - 30.0).abs() < 1e-9, "{f}");
    // S2 (south) has no forecast: never raised
    assert!(w.iter().all(|r| r["entity"] == "S1"), "{w:?}");
    // the two bad lines are dead-lettered with their source and line, and counted
    let dead = records(&dir.path().join("out/dead.jsonl"));
    let lines: Vec<(String, u64)> = dead
        .iter()
        .map(|d| {
            (
                d["source"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [("qpf-file".to_string(), 2), ("qpf-file".to_string(), 3)]
    );
    assert!(dead[0]["detail"].as_str().unwrap().contains("yesterday"));
    assert!(dead[1]["detail"].as_str().unwrap().contains("atlantis"));
    assert_eq!(dead[1]["raw"], FORECASTS.lines().nth(2).unwrap());
    assert_eq!((summary.forecasts, summary.bad_forecasts), (1, 2));
    assert_eq!(summary.dead_letters, 2);
}

/// Live mode: usable from its arrival, 01:20. At 01:00 S1 sees no forecast (the condition
/// is unknown, nothing is raised). At 01:20: observed (00:20, 01:20] = 30, forecast
/// (01:20, 04:20] = 10 mm/h × 3 h = 30, 60 >= 50: raise at 01:20, crossing 2 h later, 03:20.
#[test]
fn a_forecast_is_used_from_its_arrival_live() {
    let (dir, path) = setup("received", QPF);
    run(&RunConfig::load(&path).unwrap()).unwrap();
    let w = records(&dir.path().join("out/warnings.jsonl"));
    assert!(!w.is_empty(), "no warning");
    let first = &w[0];
    assert_eq!(
        (first["entity"].as_str(), first["kind"].as_str()),
        (Some("S1"), Some("raise"))
    );
    assert_eq!(
        utc(first["time"].as_str().unwrap()),
        utc("2024-07-01T01:20:00Z")
    );
    assert_eq!(first["branch"], "forecast");
    assert_crossing(
        &first["expected_crossing"],
        utc("2024-07-01T03:20:00Z"),
        3 * HOUR,
    );
}

#[test]
fn load_forecasts_reports_bad_entries_and_missing_files() {
    let (_dir, path) = setup("issued", QPF);
    let cfg = RunConfig::load(&path).unwrap();
    let (good, bad) = load_forecasts(&cfg).unwrap();
    assert_eq!(
        good.len(),
        2,
        "the unknown area is only found by the engine"
    );
    assert_eq!(good[0].issued, utc("2024-07-01T01:00:00Z"));
    assert_eq!(good[0].received, Some(utc("2024-07-01T01:20:00Z")));
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, "qpf-file:2");

    // a missing file is an error
    let (_dir, path) = setup("issued", &QPF.replace("fc/qpf.jsonl", "fc/none.jsonl"));
    let cfg = RunConfig::load(&path).unwrap();
    let err = load_forecasts(&cfg).unwrap_err();
    assert!(
        matches!(&err, RunError::Forecasts(p) if p[0].contains("none.jsonl")),
        "{err}"
    );
    assert!(run(&cfg).is_err());
}

#[test]
fn a_forecast_of_a_reading_feed_is_refused_at_start() {
    let (dir, path) = setup("issued", &QPF.replace("feed = \"qpf\"", "feed = \"rain\""));
    std::fs::write(
        dir.path().join("fc/qpf.jsonl"),
        FORECASTS
            .lines()
            .next()
            .unwrap()
            .replace("\"feed\":\"qpf\",", ""),
    )
    .unwrap();
    let err = run(&RunConfig::load(&path).unwrap()).unwrap_err();
    let RunError::Forecasts(problems) = &err else {
        panic!("{err}")
    };
    assert!(
        problems[0].contains("\"rain\"") && problems[0].contains("not a forecast feed"),
        "{problems:?}"
    );
    assert!(!dir.path().join("out/warnings.jsonl").exists());
}

#[test]
fn bad_forecast_settings_are_reported_at_load() {
    let (_dir, path) = setup(
        "someday",
        &QPF.replace(
            "name = \"qpf-file\"",
            "name = \"qpf-file\"\nentity = \"S1\"\narea = \"north\"",
        ),
    );
    let err = RunConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("engine.forecast-as-of"), "{err}");
    assert!(err.contains("not both"), "{err}");
}

/// The real NWS gridpoint fixture (issued 2022-02-04T03:15:41Z), through the configuration.
///
/// quantitativePrecipitation (mm) has 2.032 over (06:00, 12:00] and 4.826 over
/// (12:00, 18:00] UTC on 2022-02-04. A reading of 8 mm at 09:00 makes
/// 8 + forecast(qpf, next 6h) >= 10 hold at τ = 09:00, where the forecast over
/// (09:00, 15:00] is 2.032 × 3/6 + 4.826 × 3/6 = 1.016 + 2.413 = 3.429 mm.
/// Expected crossing: 2 mm are needed; 1.016 by 12:00, then 0.984 at 4.826/6 mm/h:
/// 0.984 × 6 / 4.826 h = 4404.144… s after 12:00.
#[test]
fn nws_gridpoint_forecast_through_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/nws-gridpoint/detailed_forecast.json");
    std::fs::write(
        d.join("r.rules"),
        r#"
feed rain: depth mm, range 0 .. 500, interval 5m, late 1h
feed qpf: forecast depth mm
table st: "stations.csv", key id, group area
rule wet on rain:
    yellow when sum(rain, 1h) + forecast(qpf, next 6h) >= 10 mm
"#,
    )
    .unwrap();
    std::fs::write(d.join("stations.csv"), "id,area\nAPA1,Apalachicola\n").unwrap();
    std::fs::write(
        d.join("readings.csv"),
        "entity,ts,value\nAPA1,2022-02-04T09:00:00Z,8\nAPA1,2022-02-05T09:00:00Z,0\n",
    )
    .unwrap();
    let config = format!(
        r#"rules = "r.rules"
[[source]]
name = "readings"
format = "csv"
path = "readings.csv"
feed = "rain"
[output]
warnings = "out/warnings.jsonl"
[[forecast]]
name = "tae-qpf"
format = "nws-gridpoint"
path = "{}"
feed = "qpf"
layer = "quantitativePrecipitation"
area = "Apalachicola"
"#,
        fixture.display()
    );
    std::fs::write(d.join("forewarn.toml"), config).unwrap();
    let summary = run(&RunConfig::load(&d.join("forewarn.toml")).unwrap()).unwrap();
    assert_eq!(summary.forecasts, 1);
    let w = records(&d.join("out/warnings.jsonl"));
    let raise = w.iter().find(|r| r["kind"] == "raise").expect("a raise");
    assert_eq!(
        utc(raise["time"].as_str().unwrap()),
        utc("2022-02-04T09:00:00Z")
    );
    let f = raise["values"]["forecast(qpf, next 6h)"].as_f64().unwrap();
    let hand = 2.032 * 3.0 / 6.0 + 4.826 * 3.0 / 6.0;
    assert!((f - hand).abs() < 1e-9, "{f} vs {hand}");
    assert_eq!(raise["values"]["sum(rain, 1h)"], 8.0);
    assert_eq!(raise["branch"], "forecast");
    let crossing = utc("2022-02-04T12:00:00Z") + (0.984 * 6.0 / 4.826 * HOUR as f64).round() as i64;
    assert_crossing(&raise["expected_crossing"], crossing, 6 * HOUR);
}

/// With `[history]` (the durable path of `forewarn run`) and CAP output on, the forecast is
/// used exactly as without: the same warning records, and the forecast-carried raise is
/// published with certainty `Likely` and its expected crossing as `onset`. A second run of
/// the finished configuration starts fresh and ends the same, its CAP files unchanged.
#[test]
fn forecasts_and_cap_with_history() {
    let cap = "\ncap = \"out/cap\"\n";
    let (plain_dir, plain) = setup("issued", QPF);
    run(&RunConfig::load(&plain).unwrap()).unwrap();
    let history =
        format!("[cap]\nsender = \"forewarn.test.example\"\n{QPF}\n[history]\ndir = \"hist\"\n");
    let (dir, path) = setup("issued", &history);
    // `[output] cap` goes under [output]: insert it after the dead-letter line
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "dead-letter = \"out/dead.jsonl\"\n",
        &format!("dead-letter = \"out/dead.jsonl\"{cap}"),
    );
    std::fs::write(&path, text).unwrap();
    let strip = |p: &Path| -> Vec<serde_json::Value> {
        records(p)
            .into_iter()
            .map(|mut v| {
                v.as_object_mut().unwrap().remove("emitted_at");
                v
            })
            .collect()
    };
    let want = strip(&plain_dir.path().join("out/warnings.jsonl"));
    for _ in 0..2 {
        let summary = run(&RunConfig::load(&path).unwrap()).unwrap();
        assert_eq!(strip(&dir.path().join("out/warnings.jsonl")), want);
        assert_eq!(summary.forecasts, 1);
        assert_eq!(summary.cap.as_ref().unwrap().failed, 0);
        assert_eq!(records(&dir.path().join("out/dead.jsonl")).len(), 2);
    }
    let id = "forewarn.test.example-wet-S1-20240701T010000Z-1";
    let x = std::fs::read_to_string(dir.path().join(format!("out/cap/{id}.xml"))).unwrap();
    assert!(x.contains("<certainty>Likely</certainty>"), "{x}");
    // crossing 03:00 (+ at most 165 ms, cut to whole seconds); 2 h ahead: urgency Future
    assert!(
        x.contains("<onset>2024-07-01T03:00:00-00:00</onset>"),
        "{x}"
    );
    assert!(x.contains("<urgency>Future</urgency>"), "{x}");
    assert!(x.contains("<value>forecast</value>"), "{x}");
}
