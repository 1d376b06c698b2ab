//! A sharded daemon tells each engine the whole stream's newest event time. A time the engine
//! would itself reject as future-dated must not move its watermark: one gauge with a clock in
//! 2099 would otherwise clear everyone's warnings and make every later reading too late.

use forewarn_engine::{Engine, EngineConfig, Output, Reading, Value};
use forewarn_rules::{compile, TableData, TableLoader};

struct NoTables;
impl TableLoader for NoTables {
    fn load(&self, path: &str) -> Result<TableData, String> {
        Err(format!("no table {path}"))
    }
}

const T0: i64 = 1_719_799_200_000; // 2024-07-01T02:00:00Z
const YEAR_2099: i64 = 4_070_908_800_000;

fn engine() -> Engine {
    let src = "feed rain: depth mm\nrule wet on rain:\n  warn when sum(rain, 1h) >= 10 mm\n";
    let plan = compile(src, "wet.rules", &NoTables).expect("compiles").plan;
    Engine::new(plan, EngineConfig::default())
}

#[test]
fn a_future_stream_time_is_ignored() {
    let mut e = engine();
    let rain = e.feed("rain").expect("feed");
    let mut out: Vec<Output> = Vec::new();
    let r = Reading {
        entity: "G1",
        feed: rain,
        ts: T0,
        value: Value::Num(12.0),
        tag: 0,
    };
    e.push(&r, &mut out).expect("accepted");
    e.observe_stream_time(YEAR_2099, &mut out);
    assert_eq!(
        e.level("wet", "G1"),
        Some("warn"),
        "the warning is not cleared by a 2099 clock"
    );
    assert!(e.watermark().is_some_and(|w| w < T0 + 3_600_000));
    // a plausible stream time still moves the watermark: the 1 h window drains
    e.observe_stream_time(T0 + 2 * 3_600_000, &mut out);
    assert_eq!(e.level("wet", "G1"), None);
    let late = Reading {
        entity: "G2",
        feed: rain,
        ts: T0 + 2 * 3_600_000,
        value: Value::Num(1.0),
        tag: 1,
    };
    assert!(e.push(&late, &mut out).is_ok());
}
