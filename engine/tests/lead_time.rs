//! Projection branches, expected crossing times and the backtest built on them, on small
//! cases whose every number is worked out by hand below.
//!
//! One gauge reports every 10 minutes: 5 mm at 10..60 min and at 200..220 min, 0 mm
//! otherwise, until 300 min. The rule warns when the last hour's rain, continued for an hour
//! at the same intensity, would reach 28 mm (`sum(rain, 1h) + project(rain, 1h, next 1h)`),
//! or when it has (`sum(rain, 1h) >= 28 mm`):
//!
//! * at 30 min: 15 mm so far + 15 mm projected = 30 ≥ 28: raised, branch `projected`; the
//!   shortest horizon that reaches 28 is 13/15 h = 52 min: expected crossing at 82 min;
//! * at 60 min: 30 mm observed (the observed criterion first holds: the reference event);
//! * at 90 min: (30, 90] holds 15 mm, + 15 = 30: held; at 100 min: 10 + 10 = 20: cleared;
//! * at 220 min: 15 + 15 = 30: raised again (projected, crossing 272 min); the observed sum
//!   never passes 15 mm: a false alarm; at 260 min (200, 260] holds 10 mm: cleared.
//!
//! The observed-only reference: raised at 60 min (30 mm), cleared at 70 min (25 mm).

use std::path::Path;

use forewarn_engine::backtest::run::{backtest, BacktestOptions};
use forewarn_engine::config::RunConfig;
use forewarn_engine::record::Branch;
use forewarn_engine::{Engine, EngineConfig, Output, Reading, TransitionKind, Value};
use forewarn_rules::{compile, TableData, TableLoader};

const MIN: i64 = 60_000;
/// 2024-06-01T00:00:00Z
const T0: i64 = 1_717_200_000_000;

const RULES: &str = "feed rain: depth mm, interval 10m\n\
rule flash on rain:\n    \
warn when sum(rain, 1h) >= 28 mm or sum(rain, 1h) + project(rain, 1h, next 1h) >= 28 mm\n";

fn rain(minute: i64) -> f64 {
    if (10..=60).contains(&minute) || (200..=220).contains(&minute) {
        5.0
    } else {
        0.0
    }
}

struct NoTables;
impl TableLoader for NoTables {
    fn load(&self, path: &str) -> Result<TableData, String> {
        Err(format!("no table {path}"))
    }
}

#[test]
fn projected_warnings_carry_their_branch_and_expected_crossing() {
    let plan = compile(RULES, "lead.rules", &NoTables)
        .expect("compiles")
        .plan;
    let mut engine = Engine::new(plan, EngineConfig::default());
    let feed = engine.feed("rain").unwrap();
    let mut out: Vec<Output> = Vec::new();
    for m in (10..=300).step_by(10) {
        let r = Reading {
            entity: "g1",
            feed,
            ts: T0 + m * MIN,
            value: Value::Num(rain(m)),
            tag: m as u64,
        };
        engine.push(&r, &mut out).expect("accepted");
    }
    engine.finish(&mut out);
    let w: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(w) => Some(w),
            _ => None,
        })
        .collect();
    let got: Vec<(TransitionKind, i64, Branch)> = w
        .iter()
        .map(|w| (w.kind, (w.event_time - T0) / MIN, w.branch))
        .collect();
    assert_eq!(
        got,
        [
            (TransitionKind::Raise, 30, Branch::Projected),
            (TransitionKind::Clear, 100, Branch::Observed),
            (TransitionKind::Raise, 220, Branch::Projected),
            (TransitionKind::Clear, 260, Branch::Observed),
        ]
    );
    // 16 bisection steps over a 1 h horizon: within 3600 s / 65536 = 55 ms
    let close = |got: Option<i64>, want: i64| {
        let got = got.expect("a crossing");
        assert!((got - want).abs() <= 55, "crossing {got} vs {want}");
    };
    close(w[0].expected_crossing, T0 + 82 * MIN);
    close(w[2].expected_crossing, T0 + 272 * MIN);
    assert_eq!(w[1].expected_crossing, None);
    // the projection is reported among the values: 15 mm over the last hour continued 1 h
    let v = w[0]
        .values
        .iter()
        .find(|(k, _)| k == "project(rain, 1h, next 1h)")
        .expect("projection reported");
    assert_eq!(v.1, Some(15.0));
}

#[test]
fn backtest_scores_lead_time_and_false_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("lead.rules"), RULES).unwrap();
    let mut csv = String::from("entity,ts,value\n");
    for m in (10..=300).step_by(10) {
        csv.push_str(&format!("g1,{},{}\n", T0 + m * MIN, rain(m)));
    }
    std::fs::write(d.join("rain.csv"), csv).unwrap();
    let cfg_path = d.join("bt.toml");
    std::fs::write(
        &cfg_path,
        "rules = \"lead.rules\"\n\
         [engine]\nclock = \"event\"\n\
         [[source]]\nname = \"rain\"\nformat = \"csv\"\npath = \"rain.csv\"\nfeed = \"rain\"\n\
         [output]\nwarnings = \"warnings.jsonl\"\nconsole = false\n",
    )
    .unwrap();
    let cfg = RunConfig::load(&cfg_path).expect("config");
    let out = d.join("report");
    let o = backtest(
        &cfg,
        &BacktestOptions {
            truth: None,
            out: out.clone(),
            plots: 3,
            entities: vec!["nope".into()],
            progress: false,
            command: "test".into(),
        },
    )
    .expect("backtest");
    let s = &o.report.overall;
    // one reference event [60, 70] min, hit by the span [30, 100) raised 30 min ahead;
    // the span [220, 260) meets no event: a false alarm
    assert_eq!(
        (s.events, s.hits, s.misses, s.false_alarms, s.warnings),
        (1, 1, 0, 1, 2)
    );
    assert_eq!((s.pod, s.far, s.csi), (Some(1.0), Some(0.5), Some(0.5)));
    assert_eq!(s.lead.median, Some(30.0));
    assert_eq!(o.readings, 30);
    // an entity asked for but absent from the input is said so, not silently replaced
    assert!(
        o.report.notes.iter().any(|n| n.contains("--entity nope")),
        "{:?}",
        o.report.notes
    );
    // the report files exist; the HTML plots the gauge
    let html = std::fs::read_to_string(out.join("backtest.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("g1"));
    // the traced pass reached the plot: the window's line is drawn (labelled in the legend)
    assert!(
        html.contains("sum(rain, 1h) (mm)"),
        "no traced series in the plot"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("backtest.json")).unwrap()).unwrap();
    assert_eq!(json["overall"]["false_alarms"], 1);
    assert!(Path::new(&o.html).exists());
}

#[test]
fn backtest_against_a_truth_file() {
    // ground truth says the flood at g1 began at 45 min and another one at 250 min: the
    // first is warned 15 min ahead (span from 30 min), the second 30 min ahead (span from
    // 220 min); nothing is a false alarm
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("lead.rules"), RULES).unwrap();
    let mut csv = String::from("entity,ts,value\n");
    for m in (10..=300).step_by(10) {
        csv.push_str(&format!("g1,{},{}\n", T0 + m * MIN, rain(m)));
    }
    std::fs::write(d.join("rain.csv"), csv).unwrap();
    std::fs::write(
        d.join("truth.csv"),
        "rule,entity,level,start,end\n\
         flash,g1,warn,2024-06-01T00:45:00Z,2024-06-01T01:30:00Z\n\
         *,g1,warn,2024-06-01T04:10:00Z,2024-06-01T04:30:00Z\n",
    )
    .unwrap();
    std::fs::write(
        d.join("bt.toml"),
        "rules = \"lead.rules\"\n[[source]]\nname = \"rain\"\nformat = \"csv\"\npath = \"rain.csv\"\nfeed = \"rain\"\n",
    )
    .unwrap();
    let cfg = RunConfig::load(&d.join("bt.toml")).expect("config");
    let o = backtest(
        &cfg,
        &BacktestOptions {
            truth: Some(d.join("truth.csv")),
            out: d.join("report"),
            plots: 1,
            entities: vec!["g1".into()],
            progress: false,
            command: "test".into(),
        },
    )
    .expect("backtest");
    let s = &o.report.overall;
    assert_eq!((s.events, s.hits, s.misses, s.false_alarms), (2, 2, 0, 0));
    assert_eq!(s.lead.min, Some(15.0));
    assert_eq!(s.lead.max, Some(30.0));
    assert_eq!(s.lead.median, Some(22.5));
}

#[test]
fn time_to_a_level_at_the_current_rate_of_rise() {
    // a stage rising 0.1 m every 10 minutes from 1.0 m: the rate over 30 minutes is 0.6 m/h.
    // `time_to(stage, 30m, 3.05 m) <= 2h`: at 80 min (1.8 m) 1.25 / 0.6 = 2.08 h, no; at
    // 90 min (1.9 m) 1.15 / 0.6 = 1.9167 h = 115 min: raised, projected, expected to cross
    // at 90 + 115 = 205 min. At 200 min (3.0 m) the observed branch would hold only at 3.05 m.
    let rules = "feed stage: level m\n\
        rule river on stage:\n    \
        warn when last(stage) >= 3.05 m or time_to(stage, 30m, 3.05 m) <= 2h\n";
    let plan = compile(rules, "river.rules", &NoTables)
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
        .plan;
    let mut engine = Engine::new(plan, EngineConfig::default());
    let feed = engine.feed("stage").unwrap();
    let mut out: Vec<Output> = Vec::new();
    for m in (0..=200).step_by(10) {
        let r = Reading {
            entity: "s1",
            feed,
            ts: T0 + m * MIN,
            value: Value::Num(1.0 + m as f64 / 100.0),
            tag: m as u64,
        };
        engine.push(&r, &mut out).expect("accepted");
    }
    let w: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (w[0].kind, w[0].event_time),
        (TransitionKind::Raise, T0 + 90 * MIN)
    );
    assert_eq!(w[0].branch, Branch::Projected);
    let crossing = w[0].expected_crossing.expect("crossing");
    assert!((crossing - (T0 + 205 * MIN)).abs() <= 1, "{crossing}");
}

#[test]
fn a_forecast_branch_steps_down_on_the_observations_when_forecasts_run_out() {
    // 40 mm forecast over (0, 2h] (20 mm per hour); rain: 5 mm at 10 and 20 min, then 0.
    // `sum(rain, 1h) + forecast(qpf, next 1h) >= 30 mm`:
    // * 10 min: 5 + 20 = 25; 20 min: 10 + 20 = 30: raised, branch `forecast`, and the shortest
    //   horizon reaching 30 is the whole hour: expected crossing at 80 min;
    // * 60 min: 10 + forecast (60, 120] = 20 → 30: held;
    // * 70 min: 5 (the 20-min reading) + forecast over (70, 130], which no forecast covers: 0
    //   (nothing forecast) → 5: cleared. A missing forecast does not hold the level for ever.
    use forewarn_engine::forecast::{Forecast, ForecastInterval, ForecastTarget};
    let rules = "feed rain: depth mm, interval 10m\nfeed qpf: forecast depth mm\n\
        rule lead on rain, qpf:\n    \
        warn when sum(rain, 1h) + forecast(qpf, next 1h) >= 30 mm\n";
    let plan = compile(rules, "lead.rules", &NoTables)
        .expect("compiles")
        .plan;
    let mut engine = Engine::new(plan, EngineConfig::default());
    let mut out: Vec<Output> = Vec::new();
    engine
        .push_forecast(
            Forecast {
                feed: "qpf".into(),
                target: ForecastTarget::Entity("g1".into()),
                issued: T0,
                received: None,
                intervals: vec![ForecastInterval {
                    start: T0,
                    end: T0 + 120 * MIN,
                    value: 40.0,
                }],
            },
            &mut out,
        )
        .expect("forecast accepted");
    let feed = engine.feed("rain").unwrap();
    for m in (10..=150).step_by(10) {
        let v = if m <= 20 { 5.0 } else { 0.0 };
        let r = Reading {
            entity: "g1",
            feed,
            ts: T0 + m * MIN,
            value: Value::Num(v),
            tag: m as u64,
        };
        engine.push(&r, &mut out).expect("accepted");
    }
    let w: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(w) => Some(w),
            _ => None,
        })
        .collect();
    let got: Vec<(TransitionKind, i64, Branch)> = w
        .iter()
        .map(|w| (w.kind, (w.event_time - T0) / MIN, w.branch))
        .collect();
    assert_eq!(
        got,
        [
            (TransitionKind::Raise, 20, Branch::Forecast),
            (TransitionKind::Clear, 70, Branch::Observed),
        ]
    );
    let c = w[0].expected_crossing.expect("crossing");
    assert!((c - (T0 + 80 * MIN)).abs() <= 55, "{c}");
}
