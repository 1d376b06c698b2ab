//! End-to-end compiles of valid rule files: the plan's contents.

mod common;

use common::MemLoader;
use forewarn_rules::compile;
use forewarn_rules::ir::{BinOp, Expr, Quantity, Unit, WindowFunc};

const GAUGES: &str = "site,area,name,evac_1h,evac_3h,prep_1h,prep_24h\n\
g1,north,Alpha,60,100,30,\n\
g2,north,Beta,50,90,25,120\n\
g3,south,Gamma,70,110,35,140\n";

fn doc_example() -> String {
    let src = include_str!("../../docs/language.md");
    let start = src.find("```\n# Harris").unwrap() + 4;
    let end = start + src[start..].find("```").unwrap();
    src[start..end].to_string()
}

#[test]
fn doc_example_compiles() {
    let loader = MemLoader::new().with("gauges.csv", GAUGES);
    let c = compile(&doc_example(), "harris.rules", &loader)
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
    let p = &c.plan;
    assert_eq!(p.feeds.len(), 1);
    let rain = &p.feeds[0];
    assert_eq!(rain.quantity, Quantity::Depth);
    assert_eq!(rain.unit, Unit::Mm);
    assert_eq!(rain.scale, 25.4);
    assert_eq!(rain.range, Some((0.0, 4.0 * 25.4)));
    assert_eq!(rain.interval, Some(5 * 60_000));
    assert_eq!(rain.late, 6 * 3_600_000);
    assert_eq!(rain.stale, Some(30 * 60_000));
    assert_eq!(rain.offline, Some(2 * 3_600_000));

    assert_eq!(p.rules.len(), 2);
    let rs = &p.rules[0];
    let names: Vec<&str> = rs.levels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["blue", "yellow", "orange", "red"]);
    assert_eq!(rs.clear_after, Some(3_600_000));
    assert_eq!(rs.values[0].0, "s3");
    // window labels deduplicated across rules
    let labels: Vec<&str> = p.windows.iter().map(|w| w.label.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "sum(rain, 3h)",
            "sum(rain, 6h)",
            "sum(rain, 12h)",
            "sum(rain, 1h)",
            "sum(rain, 24h)"
        ]
    );
    // red when s3 >= 100 mm: the let is substituted
    assert_eq!(
        rs.levels[3].when,
        Expr::Binary(
            BinOp::Ge,
            Box::new(Expr::Window(0)),
            Box::new(Expr::Num(100.0))
        )
    );
    assert_eq!(rs.windows, vec![0, 1, 2]);
    assert_eq!(rs.line, 8);
    println!("{p}");

    let ff = &p.rules[1];
    let names: Vec<&str> = ff.levels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["prepare", "evacuate"]);
    let th: Vec<&str> = ff.thresholds.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        th,
        vec![
            "gauge.evac_1h",
            "gauge.evac_3h",
            "gauge.prep_1h",
            "gauge.prep_24h"
        ]
    );
    assert_eq!(ff.required_tables, vec![0]);
    assert_eq!(ff.windows, vec![0, 3, 4]);
    assert_eq!(
        ff.thresholds[3].1,
        Expr::Column {
            table: 0,
            column: 6,
            default: Some(100.0)
        }
    );
    assert!(ff
        .clear_when
        .as_ref()
        .is_some_and(|c| c.hold == Some(2 * 3_600_000)));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(p.ruleset_hash.len(), 64);
}

#[test]
fn five_rules_share_one_window() {
    let mut src = String::from("feed rain: depth mm\n");
    for i in 0..5 {
        src.push_str(&format!(
            "rule r{i} on rain:\n  warn when sum(rain, 3h) >= {} mm\n",
            10 * (i + 1)
        ));
    }
    let c = compile(&src, "x.rules", &MemLoader::new()).unwrap();
    assert_eq!(c.plan.windows.len(), 1);
    assert_eq!(c.plan.windows[0].label, "sum(rain, 3h)");
    assert_eq!(c.plan.windows[0].func, WindowFunc::Sum);
    assert_eq!(c.plan.windows[0].width, Some(3 * 3_600_000));
    for r in &c.plan.rules {
        assert_eq!(r.windows, vec![0]);
        assert_eq!(
            r.values,
            vec![("sum(rain, 3h)".to_string(), Expr::Window(0))]
        );
    }
}

#[test]
fn sum_of_rate_is_refused() {
    let src = "feed rain_intensity: rate mm/h\nrule r on rain_intensity:\n  warn when sum(rain_intensity, 1h) >= 30\n";
    let err = compile(src, "x.rules", &MemLoader::new()).unwrap_err();
    let d: Vec<_> = err.iter().collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, "E305");
    assert!(d[0].help.as_deref().unwrap().contains("integrate"));
}
