//! Forecasts survive a snapshot: an engine restored from a checkpoint knows the forecasts
//! the original had stored and those still waiting for their as-of time (what a restarted
//! `forewarn serve` relies on; its forecasts arrive once, over MQTT).
//!
//! Rule `wet`: `sum(rain, 1h) + forecast(qpf, next 3h) >= 50 mm`. Area `north` holds S1
//! and S2, S3 is on its own.
//!
//! * Forecast F1 for `north`, received 01:20: 30 mm over each of (00:00, 03:00] and
//!   (03:00, 06:00], i.e. 10 mm/h, 30 mm in any 3 h inside it.
//! * Forecast F2 for S3, received 02:00: 60 mm over (02:00, 05:00], 20 mm/h.
//!
//! Readings before the snapshot (stream up to 01:20): S1 15 mm at 00:30 and 00:55, S3 0 mm
//! at 01:10, S1 0 mm at 01:20. F1 becomes usable at 01:20: S1 has 30 mm observed + 30 mm
//! forecast and is raised then; F2 waits in the queue. After the snapshot: S2 15 mm at 01:30
//! (15 + 30 = 45: nothing) and 15 mm at 01:50 (30 + 30 = 60: raised at 01:50, branch
//! forecast — only if F1 is still known), then S2 0 mm at 02:05, which takes the stream past
//! 02:00: F2 is applied and S3 evaluated at 02:00, 0 + 60 mm: raised at 02:00 (only if F2 was
//! still queued).
//!
//! The restored engine must give exactly the transitions the uninterrupted one gives after
//! the snapshot point, and those must contain the two hand-computed raises.

use forewarn_engine::forecast::{Forecast, ForecastInterval, ForecastTarget};
use forewarn_engine::record::Branch;
use forewarn_engine::{Engine, EngineConfig, Output, Reading, TransitionKind, Value};
use forewarn_rules::{compile, TableData, TableLoader};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// 2024-07-01T00:00:00Z
const T0: i64 = 1_719_792_000_000;

const RULES: &str = "feed rain: depth mm, range 0 .. 500, interval 5m, late 1h\n\
feed qpf: forecast depth mm\n\
table st: \"stations.csv\", key id, group area\n\
rule wet on rain:\n    red when sum(rain, 1h) + forecast(qpf, next 3h) >= 50 mm\n";

struct Stations;
impl TableLoader for Stations {
    fn load(&self, path: &str) -> Result<TableData, String> {
        assert_eq!(path, "stations.csv");
        let row = |id: &str, area: &str| vec![id.to_string(), area.to_string()];
        Ok(TableData {
            columns: vec!["id".into(), "area".into()],
            rows: vec![row("S1", "north"), row("S2", "north"), row("S3", "east")],
        })
    }
}

fn forecasts() -> [Forecast; 2] {
    let iv = |start: i64, end: i64, value: f64| ForecastInterval {
        start: T0 + start * HOUR,
        end: T0 + end * HOUR,
        value,
    };
    [
        Forecast {
            feed: "qpf".into(),
            target: ForecastTarget::Area("north".into()),
            issued: T0 + HOUR,
            received: Some(T0 + 80 * MIN),
            intervals: vec![iv(0, 3, 30.0), iv(3, 6, 30.0)],
        },
        Forecast {
            feed: "qpf".into(),
            target: ForecastTarget::Entity("S3".into()),
            issued: T0 + 2 * HOUR,
            received: Some(T0 + 2 * HOUR),
            intervals: vec![iv(2, 5, 60.0)],
        },
    ]
}

/// (entity, minute after T0, value) in arrival order: before and after the snapshot.
const BEFORE: &[(&str, i64, f64)] = &[
    ("S1", 30, 15.0),
    ("S1", 55, 15.0),
    ("S3", 70, 0.0),
    ("S1", 80, 0.0),
];
const AFTER: &[(&str, i64, f64)] = &[("S2", 90, 15.0), ("S2", 110, 15.0), ("S2", 125, 0.0)];

/// (kind, entity, minute, branch) of every warning transition.
type Transition = (TransitionKind, String, i64, Branch);

fn push(engine: &mut Engine, readings: &[(&str, i64, f64)]) -> Vec<Transition> {
    let feed = engine.feed("rain").unwrap();
    let mut out: Vec<Output> = Vec::new();
    for &(entity, minute, v) in readings {
        let r = Reading {
            entity,
            feed,
            ts: T0 + minute * MIN,
            value: Value::Num(v),
            tag: 0,
        };
        engine.push(&r, &mut out).expect("accepted");
    }
    out.iter()
        .filter_map(|o| match o {
            Output::Warning(w) => Some((
                w.kind,
                w.entity.clone(),
                (w.event_time - T0) / MIN,
                w.branch,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn stored_and_queued_forecasts_are_restored_from_a_snapshot() {
    let plan = compile(RULES, "wet.rules", &Stations)
        .expect("compiles")
        .plan;
    let cfg = EngineConfig::default();
    let mut engine = Engine::new(plan.clone(), cfg.clone());
    let mut sink: Vec<Output> = Vec::new();
    for f in forecasts() {
        engine.push_forecast(f, &mut sink).expect("forecast taken");
    }
    let before = push(&mut engine, BEFORE);
    assert_eq!(
        before,
        [(TransitionKind::Raise, "S1".into(), 80, Branch::Forecast)],
        "before the snapshot"
    );
    assert_eq!(engine.queued_forecasts(), 1, "F2 waits for 02:00");
    let bytes = engine.snapshot();

    let uninterrupted = push(&mut engine, AFTER);
    let mut restored = Engine::restore(plan, cfg, &bytes).expect("restores");
    assert_eq!(restored.queued_forecasts(), 1);
    let resumed = push(&mut restored, AFTER);
    assert_eq!(resumed, uninterrupted);

    let raises: Vec<&Transition> = resumed
        .iter()
        .filter(|t| t.0 == TransitionKind::Raise)
        .collect();
    assert_eq!(
        raises,
        [
            &(TransitionKind::Raise, "S2".into(), 110, Branch::Forecast),
            &(TransitionKind::Raise, "S3".into(), 120, Branch::Forecast),
        ]
    );
    // and the restored engine encodes to the same bytes as the original at the same point
    assert_eq!(restored.snapshot(), engine.snapshot());
}
