//! The per-reading path allocates nothing: after a warm-up that brings every buffer to its
//! steady-state capacity, pushing readings (and the evaluations, deadlines and eviction they
//! cause) performs zero heap allocations. Counted by a global allocator, on this thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use forewarn_engine::{Engine, EngineConfig, Output, Reading, Value};
use forewarn_rules::{compile, TableData, TableLoader};

struct Counting;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if ACTIVE.with(Cell::get) {
        COUNT.with(|c| c.set(c.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct NoTables;
impl TableLoader for NoTables {
    fn load(&self, path: &str) -> Result<TableData, String> {
        Err(format!("no table {path}"))
    }
}

const RULES: &str = "
feed rain: depth mm, range 0 .. 200, stale 30m, offline 2h
levels cma: blue < yellow < orange < red
rule storm on rain levels cma:
    red    when sum(rain, 3h) >= 100 mm
    orange when sum(rain, 3h) >= 50 mm
    yellow when sum(rain, 6h) >= 50 mm
    blue   when sum(rain, 24h) >= 50 mm or max(rain, 1h) >= 30 mm
    clear after 1h
rule burst on rain:
    warn when sum(rain, 1h) >= 30 mm for 10m exit when sum(rain, 1h) < 25 mm
";

#[test]
fn pushing_readings_allocates_nothing() {
    let plan = compile(RULES, "alloc.rules", &NoTables)
        .expect("rules compile")
        .plan;
    let mut engine = Engine::new(plan, EngineConfig::default());
    let rain = engine.feed("rain").expect("feed");
    let names: Vec<String> = (0..64).map(|i| format!("G{i}")).collect();
    let mut out: Vec<Output> = Vec::with_capacity(1 << 16);
    let step = 300_000; // 5 min
    let mut t = 0;
    // Warm-up: two days of light rain, then a burst, so every path has run once.
    let push_round = |engine: &mut Engine, out: &mut Vec<Output>, t: i64, v: f64| {
        for n in &names {
            let r = Reading {
                entity: n,
                feed: rain,
                ts: t,
                value: Value::Num(v),
                tag: 0,
            };
            let _ = engine.push(&r, out);
        }
    };
    for k in 0..(2 * 288) {
        t += step;
        push_round(&mut engine, &mut out, t, if k % 7 == 0 { 0.2 } else { 0.0 });
    }
    out.clear();
    ACTIVE.with(|a| a.set(true));
    for k in 0..288 {
        t += step;
        push_round(&mut engine, &mut out, t, if k % 7 == 0 { 0.2 } else { 0.0 });
    }
    ACTIVE.with(|a| a.set(false));
    let allocations = COUNT.with(Cell::get);
    assert!(
        out.is_empty(),
        "the measured day emits nothing: {:?}",
        out.first()
    );
    assert_eq!(
        allocations,
        0,
        "allocations while pushing {} readings",
        288 * names.len()
    );
    assert_eq!(engine.counters().accepted, 3 * 288 * names.len() as u64);
}
