//! Span-tag tests: the offending text is marked `⟦…⟧` in the source; the diagnostic with the
//! expected code must point at exactly that text.

mod common;

use common::MemLoader;
use forewarn_rules::{compile, Span};

const GAUGES: &str = "site,name,area,evac_1h,prep_1h\ng1,Alpha,north,60,30\ng2,Beta,north,50,25\n";

/// Strip the markers; return the clean source and the marked span.
fn marked(src: &str) -> (String, Span) {
    let open = src.find('⟦').expect("an opening marker");
    let close = src.find('⟧').expect("a closing marker");
    let clean = src.replace(['⟦', '⟧'], "");
    (clean, Span::new(open, close - '⟦'.len_utf8()))
}

#[track_caller]
fn check(code: &str, src: &str) {
    let (clean, span) = marked(src);
    let loader = MemLoader::new().with("gauges.csv", GAUGES);
    let diags: Vec<_> = match compile(&clean, "t.rules", &loader) {
        Err(d) => d.iter().cloned().collect(),
        Ok(c) => c.warnings,
    };
    let found: Vec<(&str, Span, &str)> = diags
        .iter()
        .map(|d| {
            (
                d.code,
                d.span,
                clean.get(d.span.start..d.span.end).unwrap_or("?"),
            )
        })
        .collect();
    assert!(
        diags.iter().any(|d| d.code == code && d.span == span),
        "expected {code} at {span:?} ({:?}), found {found:?}",
        &clean[span.start..span.end]
    );
}

const FEEDS: &str = "feed rain: depth mm\nfeed stage: level m\nfeed ri: rate mm/h\ntable gauge: \"gauges.csv\", key site\n";

fn rule(body: &str) -> String {
    format!("{FEEDS}rule r on rain, stage, ri:\n    {body}\n")
}

#[test]
fn lexical() {
    check("E001", &rule("warn when sum(rain, 1h) >= 1 ⟦@⟧"));
    check("E002", "feed rain: depth mm\nrule r on rain:\n  warn when sum(rain, 1h) >= 1\n  message ⟦\"oops⟧\n");
    check("E003", &rule("warn when sum(rain, ⟦3hrs⟧) >= 1"));
    check("E003", &rule("warn when since(rain, ⟦25:00⟧ UTC) >= 1"));
}

#[test]
fn syntax() {
    check("E101", &rule("warn when sum(rain, 1h) >= ⟦)⟧"));
    check("E101", &rule("warn ⟦sum⟧(rain, 1h) >= 1"));
    check("E101", &rule("warn when 1 < last(stage) ⟦<⟧ 3"));
}

#[test]
fn names() {
    check("E201", &rule("warn when sum(⟦rian⟧, 1h) >= 1"));
    check("E202", &rule("warn when ⟦summ⟧(rain, 1h) >= 1"));
    check("E203", &rule("warn when sum(rain, 1h) >= ⟦gauges⟧.evac_1h"));
    check("E204", &rule("warn when sum(rain, 1h) >= gauge.⟦evac1h⟧"));
    check("E205", &rule("warn when ⟦s3⟧ >= 1"));
    check("E209", &rule("warn when sum(rain, 1h) >= ⟦gauge.name⟧"));
    check(
        "E210",
        &rule("warn when peer_max(sum(rain, 1h), gauge.⟦area⟧) >= 1"),
    );
    check(
        "E211",
        &rule("warn when since(rain, 08:00 ⟦Mars/Olympus⟧) >= 1"),
    );
}

#[test]
fn types_and_units() {
    check("E301", &rule("warn when ⟦sum(rain)⟧ >= 1"));
    check("E302", &rule("warn when sum(⟦3h⟧, rain) >= 1"));
    check("E302", &rule("warn when last(stage) >= ⟦5m⟧"));
    check("E302", &rule("warn when max(stage, ⟦30 m⟧) >= 5 m"));
    check("E303", &rule("warn when ⟦sum(rain, 1h)⟧"));
    check("E304", &rule("warn when sum(rain, 1h) >= ⟦2 m⟧"));
    check("E305", &rule("warn when sum(⟦ri⟧, 1h) >= 30"));
    check("E305", &rule("warn when rate(⟦rain⟧, 1h) >= 30"));
    check("E306", &rule("warn when sum(rain, ⟦0s⟧) >= 1"));
    check("E306", &rule("warn when sum(rain, 1h) >= 1 for ⟦-5m⟧"));
    check("E307", &rule("warn when decay_sum(rain, 10d, ⟦0⟧) >= 1"));
    check("E308", &rule("warn when integrate(⟦ri⟧, 1h) >= 1"));
}

#[test]
fn levels() {
    check(
        "E401",
        &format!("{FEEDS}rule r on rain levels low < high:\n  high when sum(rain, 3h) >= 50\n  low when ⟦sum(rain, 3h) >= 80 mm⟧\n"),
    );
    check(
        "E402",
        &format!(
            "{FEEDS}rule ⟦r⟧ on rain:\n  a when sum(rain, 1h) >= 1\n  b when sum(rain, 1h) >= 2\n"
        ),
    );
    check(
        "E403",
        &format!("{FEEDS}rule r on rain levels a < ⟦b⟧:\n  a when sum(rain, 1h) >= 1\n"),
    );
    check("E206", &format!("{FEEDS}rule r on rain levels a < b:\n  a when sum(rain, 1h) >= 1\n  ⟦c⟧ when sum(rain, 1h) >= 2\n  b when sum(rain, 1h) >= 3\n"));
    check("E207", "feed rain: depth mm\nfeed ⟦rain⟧: depth mm\nrule r on rain:\n  a when sum(rain, 1h) >= 1\n");
}

#[test]
fn warnings() {
    check(
        "W502",
        "feed rain: depth mm\nfeed ⟦wind⟧: level m\nrule r on rain:\n  a when sum(rain, 1h) >= 1\n",
    );
}
