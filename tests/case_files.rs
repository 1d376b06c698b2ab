//! Every case directory under `tests/cases/` (rules, input, expected transitions), run by the
//! same runner as `forewarn test`. Expected transitions are worked out by hand from
//! `semantics.md` and the shared acceptance cases, never produced by the engine.

use std::path::Path;

use forewarn_engine::cases::{discover, run_case};

#[test]
fn every_case_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    let cases = discover(&root);
    assert!(
        cases.len() >= 10,
        "expected the case directories under {}",
        root.display()
    );
    let mut failed = Vec::new();
    for dir in &cases {
        match run_case(dir) {
            Ok(report) if report.passed() => {}
            Ok(report) => failed.push(report.to_string()),
            Err(e) => failed.push(format!("ERROR {}: {e}", dir.display())),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
