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

fn ok(src: &str) -> forewarn_rules::Compiled {
    let loader = MemLoader::new().with("gauges.csv", GAUGES);
    compile(src, "t.rules", &loader).unwrap_or_else(|d| panic!("{}", d.render(false)))
}

fn codes(src: &str) -> Vec<&'static str> {
    let loader = MemLoader::new().with("gauges.csv", GAUGES);
    match compile(src, "t.rules", &loader) {
        Ok(c) => c.warnings.iter().map(|d| d.code).collect(),
        Err(d) => d.iter().map(|d| d.code).collect(),
    }
}

fn when(c: &forewarn_rules::Compiled, rule: usize, level: usize) -> Expr {
    c.plan.rules[rule].levels[level].when.clone()
}

fn ge(l: Expr, r: Expr) -> Expr {
    Expr::Binary(BinOp::Ge, Box::new(l), Box::new(r))
}

#[test]
fn literal_units_convert() {
    let c = ok("feed rain: depth mm\nfeed stage: level m\n\
                rule a on rain, stage levels x < y < z:\n\
                x when sum(rain, 1h) >= 2 in\n\
                y when last(stage) >= 3 ft\n\
                z when sum(rain, 1h) >= 3 cm and last(stage) >= 50 cm\n");
    assert_eq!(when(&c, 0, 0), ge(Expr::Window(0), Expr::Num(50.8)));
    assert_eq!(when(&c, 0, 1), ge(Expr::Window(1), Expr::Num(3.0 * 0.3048)));
    let Expr::Binary(BinOp::And, l, r) = when(&c, 0, 2) else {
        panic!()
    };
    assert_eq!(*l, ge(Expr::Window(0), Expr::Num(30.0)));
    assert_eq!(*r, ge(Expr::Window(1), Expr::Num(0.5)));
    // feed declared in inches: values are scaled at ingest, thresholds stay in mm
    let c = ok("feed rain: depth in, range 0 .. 2\nrule a on rain:\n w when sum(rain, 1h) >= 50\n");
    assert_eq!(c.plan.feeds[0].range, Some((0.0, 50.8)));
    assert_eq!(when(&c, 0, 0), ge(Expr::Window(0), Expr::Num(50.0)));
}

#[test]
fn window_result_units() {
    let c = ok(
        "feed stage: level ft\nfeed ri: rate in/h, interval 5m\nfeed tips: count\n\
                rule a on stage, ri, tips levels v < w < x < y:\n\
                v when rate(stage, 1h) >= 0.5 m/h\n\
                w when integrate(ri, 1h) >= 30 mm\n\
                x when count(tips, 1h) >= 3 and sum(tips, 1h) >= 10\n\
                y when missing(stage, 30m)\n",
    );
    let w = &c.plan.windows;
    assert_eq!(
        (w[0].func.clone(), w[0].unit),
        (WindowFunc::Rate, Unit::MPerHour)
    );
    assert_eq!(
        (w[1].func.clone(), w[1].unit),
        (WindowFunc::Integrate, Unit::Mm)
    );
    assert_eq!(
        (w[2].func.clone(), w[2].unit),
        (WindowFunc::Count, Unit::None)
    );
    assert_eq!(
        (w[3].func.clone(), w[3].unit),
        (WindowFunc::Sum, Unit::None)
    );
    assert_eq!(w[4].func, WindowFunc::Missing);
    assert_eq!(c.plan.feeds[0].scale, 0.3048);
    assert_eq!(c.plan.feeds[1].scale, 25.4);
    // missing is a condition, not a value
    assert!(c.plan.rules[0]
        .values
        .iter()
        .all(|(l, _)| !l.starts_with("missing")));
    assert_eq!(
        codes("feed stage: level m\nrule a on stage:\n w when rate(stage, 1h) >= 0.5 m\n"),
        vec!["E304"]
    );
    assert_eq!(
        codes("feed ri: rate mm/h\nrule a on ri:\n w when integrate(ri, 1h) >= 30 mm\n"),
        vec!["E308"]
    );
    assert_eq!(
        codes("feed tips: count\nrule a on tips:\n w when count(tips, 1h) >= 3 mm\n"),
        vec!["E304"]
    );
    assert_eq!(
        codes("feed r: depth mm\nrule a on r:\n w when missing(r, 1h) >= 3\n"),
        vec!["E303"]
    );
}

#[test]
fn holds_lets_groups_and_tables() {
    let c = ok("feed rain: depth mm\ntable gauge: \"gauges.csv\", key site, group area\n\
                rule a on rain levels low < high:\n\
                let s1 = sum(rain, 1h)\n\
                let dry = s1 < 1 mm\n\
                high when s1 >= gauge.evac_1h for 5m\n\
                low when s1 > 0.5 * group_median(max(rain, 2h), gauge.area) and s1 >= gauge.prep_1h ?? 10\n\
                for 15m\n");
    let r = &c.plan.rules[0];
    assert_eq!(r.levels[0].name, "low");
    assert_eq!(r.levels[0].hold, Some(15 * 60_000));
    assert_eq!(r.levels[1].hold, Some(5 * 60_000));
    // numeric lets and windows are values; the condition let is not
    let labels: Vec<&str> = r.values.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(labels, vec!["s1", "sum(rain, 1h)", "max(rain, 2h)"]);
    // the group function's window is read by the rule
    assert_eq!(r.windows, vec![0, 1]);
    assert_eq!(r.required_tables, vec![0]);
    let th: Vec<&str> = r.thresholds.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(th, vec!["gauge.evac_1h", "gauge.prep_1h"]);
    // a rule whose only table reads have defaults needs no table
    let c = ok(
        "feed rain: depth mm\ntable gauge: \"gauges.csv\", key site\n\
                rule a on rain:\n w when sum(rain, 1h) >= gauge.prep_24h ?? 100 mm\n",
    );
    assert!(c.plan.rules[0].required_tables.is_empty());
    // table typing
    let t = &c.plan.tables[0];
    assert_eq!(
        t.cell("g2", t.column("prep_24h").unwrap()),
        Some(&forewarn_rules::ir::Cell::Num(120.0))
    );
    assert_eq!(t.cell("g1", t.column("prep_24h").unwrap()), None);
    assert_eq!(
        t.cell("g1", t.column("name").unwrap()),
        Some(&forewarn_rules::ir::Cell::Text("Alpha".into()))
    );
}

#[test]
fn hash_covers_tables() {
    let src = "feed rain: depth mm\ntable gauge: \"gauges.csv\", key site\nrule a on rain:\n w when sum(rain, 1h) >= gauge.evac_1h\n";
    let a = compile(src, "t", &MemLoader::new().with("gauges.csv", GAUGES)).unwrap();
    let b = compile(
        src,
        "t",
        &MemLoader::new().with("gauges.csv", &GAUGES.replace("60", "61")),
    )
    .unwrap();
    assert_ne!(a.plan.ruleset_hash, b.plan.ruleset_hash);
    let a2 = compile(src, "t", &MemLoader::new().with("gauges.csv", GAUGES)).unwrap();
    assert_eq!(a.plan.ruleset_hash, a2.plan.ruleset_hash);
}

#[test]
fn json_diagnostics() {
    let src = "feed rain: depth mm\nrule a on rain:\n  w when sum(rian, 1h) >= 1\n";
    let err = compile(src, "t.rules", &MemLoader::new()).unwrap_err();
    let j = err.to_json();
    assert_eq!(j[0]["code"], "E201");
    assert_eq!(j[0]["severity"], "error");
    assert_eq!(j[0]["file"], "t.rules");
    assert_eq!(j[0]["line"], 3);
    assert_eq!(j[0]["column"], 14);
    assert_eq!(j[0]["end_line"], 3);
    assert_eq!(j[0]["end_column"], 18);
    assert_eq!(j[0]["help"], "did you mean `rain`?");
    assert_eq!(j[0]["label"], "no feed has this name");
}

#[test]
fn explain_text_is_stable() {
    let c = ok("feed rain: depth mm, stale 30m\n\
                rule a on rain levels low < high:\n\
                let s3 = sum(rain, 3h)\n\
                high when s3 >= 100 mm\n\
                low when s3 >= 50 mm or sum(rain, 1h) >= 30 mm exit when s3 < 40\n\
                clear after 1h\n\
                message \"{entity}: {s3:.0} mm\"\n");
    let text = c.plan.to_string();
    let body: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        body,
        vec![
            "feed 0 rain: depth mm, late 15m, stale 30m",
            "window w0 sum(rain, 3h) on feed 0 (rain) -> mm",
            "window w1 sum(rain, 1h) on feed 0 (rain) -> mm",
            "rule 0 a on rain (line 2)",
            "  level 0 low when w0:sum(rain, 3h) >= 50 or w1:sum(rain, 1h) >= 30 exit when w0:sum(rain, 3h) < 40",
            "  level 1 high when w0:sum(rain, 3h) >= 100",
            "  clear after 1h",
            "  value s3 = w0:sum(rain, 3h)",
            "  value sum(rain, 3h) = w0:sum(rain, 3h)",
            "  value sum(rain, 1h) = w1:sum(rain, 1h)",
            "  windows w0 w1",
            "  message \"{entity}: {w0:sum(rain, 3h):.0} mm\"",
        ]
    );
    assert!(text.starts_with("plan "));
}

#[test]
fn cm_let_is_resolved_where_used() {
    let c = ok(
        "feed stage: level m\nfeed rain: depth mm\nrule a on stage, rain levels x < y:\n\
                let t = 50 cm\n x when last(stage) >= t\n y when sum(rain, 1h) >= t\n",
    );
    assert_eq!(when(&c, 0, 0), ge(Expr::Window(0), Expr::Num(0.5)));
    assert_eq!(when(&c, 0, 1), ge(Expr::Window(1), Expr::Num(500.0)));
    assert!(c.plan.rules[0].values.iter().all(|(l, _)| l != "t"));
    assert_eq!(
        codes("feed r: depth mm\nrule a on r:\n w when 5 cm > 3\n"),
        vec!["E304"]
    );
}
