//! Forecast feeds, horizon functions (`forecast`, `forecast_max`, `project`) and the CAP /
//! publication clauses (`cap`, `message LANG`, `event`, `shadow`): what the plan holds.

mod common;

use common::MemLoader;
use forewarn_rules::compile;
use forewarn_rules::ir::{Ahead, AheadKind, BinOp, Expr, Unit, WindowFunc};

const SRC: &str = r#"
feed rain: depth in, range 0 .. 4, interval 5m
feed stage: level ft
feed qpf: forecast depth mm

rule lead on rain, qpf levels yellow < red:
    red    when sum(rain, 1h) >= 50 mm or sum(rain, 1h) + forecast(qpf, next 2h) >= 50 mm
    yellow when forecast_max(qpf, next 6h) >= 20 mm/h or sum(rain, 3h) + project(rain, 1h, next 1h) >= 2 in
    cap red: severity extreme, response Evacuate
    event "Rainstorm"
    event zh-CN "暴雨"
    message zh-CN "{entity} 暴雨{level}"
    message en "{entity}: rainstorm {level}"
    shadow

rule river on stage:
    watch when project(stage, 30m, next 2h) >= 12 ft
"#;

#[test]
fn horizon_functions_compile_to_ahead_nodes() {
    let c = compile(SRC, "lead.rules", &MemLoader::new())
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
    let p = &c.plan;
    assert!(p.feeds[2].forecast && !p.feeds[0].forecast);
    let lead = &p.rules[0];
    // red: observed or (observed + forecast); the forecast horizon is 2 h
    let red = &lead.levels[1].when;
    let d = red.disjuncts();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].looks_ahead(), None);
    assert_eq!(d[1].looks_ahead(), Some(true));
    let Expr::Binary(BinOp::Ge, sum, fifty) = d[1] else {
        panic!("{:?}", d[1])
    };
    assert_eq!(**fifty, Expr::Num(50.0));
    let Expr::Binary(BinOp::Add, _, fc) = &**sum else {
        panic!()
    };
    assert_eq!(
        **fc,
        Expr::Ahead(Ahead {
            kind: AheadKind::ForecastSum { feed: 2 },
            horizon: 2 * 3_600_000
        })
    );
    // yellow: forecast peak intensity in mm/h, and an observed 3 h sum projected 1 h on
    let y = lead.levels[0].when.disjuncts();
    assert_eq!(y[0].looks_ahead(), Some(true));
    assert_eq!(y[1].looks_ahead(), Some(false));
    let Expr::Binary(BinOp::Ge, lhs, rhs) = y[1] else {
        panic!()
    };
    assert_eq!(**rhs, Expr::Num(50.8)); // 2 in
    let Expr::Binary(BinOp::Add, _, pr) = &**lhs else {
        panic!()
    };
    let Expr::Ahead(Ahead {
        kind: AheadKind::ProjectDepth { window, width },
        horizon,
    }) = &**pr
    else {
        panic!("{pr:?}")
    };
    assert_eq!((*width, *horizon), (3_600_000, 3_600_000));
    assert_eq!(p.windows[*window].func, WindowFunc::Sum);
    assert_eq!(p.windows[*window].width, Some(3_600_000));
    // publication clauses
    assert!(lead.shadow);
    assert_eq!(lead.cap[0], None);
    let red_cap = lead.cap[1].as_ref().expect("cap red");
    assert_eq!(
        (red_cap.severity.as_str(), red_cap.response.as_str()),
        ("Extreme", "Evacuate")
    );
    assert_eq!(
        lead.events,
        vec![
            (None, "Rainstorm".to_string()),
            (Some("zh-CN".to_string()), "暴雨".to_string())
        ]
    );
    let langs: Vec<&str> = lead.localized.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(langs, ["zh-CN", "en"]);
    // a level projected from its rate of rise: last + rate(30m) * 2h, in metres
    let river = &p.rules[1];
    let Expr::Binary(BinOp::Ge, proj, level) = &river.levels[0].when else {
        panic!()
    };
    assert!(matches!(**level, Expr::Num(x) if (x - 12.0 * 0.3048).abs() < 1e-12));
    let Expr::Ahead(Ahead {
        kind: AheadKind::ProjectLevel { last, rate },
        horizon,
    }) = &**proj
    else {
        panic!()
    };
    assert_eq!(*horizon, 2 * 3_600_000);
    assert_eq!(p.windows[*last].func, WindowFunc::Last);
    assert_eq!(p.windows[*rate].func, WindowFunc::Rate);
    assert_eq!(p.windows[*rate].unit, Unit::MPerHour);
    assert!(!river.shadow && river.localized.is_empty());
}

fn errors(src: &str) -> String {
    match compile(src, "bad.rules", &MemLoader::new()) {
        Ok(_) => panic!("compiled: {src}"),
        Err(d) => d.render(false),
    }
}

#[test]
fn mistakes_are_refused_with_their_code() {
    let feeds = "feed rain: depth mm\nfeed qpf: forecast depth mm\nfeed st: level m\n";
    let cases = [
        ("w when sum(qpf, 1h) >= 1", "E305"), // a window over a forecast feed
        ("w when forecast(rain, next 1h) >= 1", "E305"), // forecast of a reading feed
        ("w when project(qpf, 1h, next 1h) >= 1", "E305"),
        ("w when forecast(qpf, 3h) >= 1", "E302"), // horizon without `next`
        ("w when forecast(qpf, next 0s) >= 1", "E306"),
        ("w when forecast(qpf) >= 1", "E301"),
        ("w when project(rain, next 1h) >= 1", "E301"),
        ("w when forecast(qpf, next 1h) >= 1 m", "E304"), // depth vs level
        ("w when sum(rain, 1h) >= next 1h", "E302"),
        ("w when time_to(rain, 1h, 3 m) <= 2h", "E305"), // not a level
        ("w when time_to(st, 1h, 30 mm) <= 2h", "E304"),
        ("w when time_to(st, 1h) <= 2h", "E301"),
        ("w when time_to(st, 1h, 3 m) <= 2 mm", "E304"), // hours vs mm
        ("w when time_to(st, 1h, 3 m) <= 30", "E302"),   // 30 what? a duration is needed
        (
            "w when sum(rain, 1h) >= 1\n    cap w: severity Huge, response Prepare",
            "E309",
        ),
        (
            "w when sum(rain, 1h) >= 1\n    cap w: severity Minor, response Run",
            "E309",
        ),
        (
            "w when sum(rain, 1h) >= 1\n    cap x: severity Minor, response Monitor",
            "E206",
        ),
        (
            "w when sum(rain, 1h) >= 1\n    message en \"a\"\n    message en \"b\"",
            "E207",
        ),
    ];
    for (body, code) in cases {
        let src = format!("{feeds}rule r on rain:\n    {body}\n");
        let out = errors(&src);
        assert!(out.contains(code), "{body}: expected {code}, got\n{out}");
    }
    // forecast feeds: canonical unit (a message names its own unit), no reading options
    let out = errors(
        "feed qpf: forecast depth in\nrule r on qpf:\n    w when forecast(qpf, next 1h) >= 1\n",
    );
    assert!(
        out.contains("E307") && out.contains("bad.rules:1:26"),
        "{out}"
    );
    let out = errors(
        "feed qpf: forecast depth mm, range 0 .. 100\nrule r on qpf:\n    w when forecast(qpf, next 1h) >= 1\n",
    );
    assert!(
        out.contains("E307") && out.contains("bad.rules:1:30"),
        "{out}"
    );
    // a language tag CAP would refuse is refused here, at the tag
    let out = errors("feed rain: depth mm\nrule r on rain:\n    w when sum(rain, 1h) >= 1\n    message zh_CN \"x\"\n");
    assert!(
        out.contains("E309") && out.contains("bad.rules:4:13"),
        "{out}"
    );
    // a forecast feed of counts is refused at its quantity
    let out =
        errors("feed n: forecast count\nrule r on n:\n    w when forecast(n, next 1h) >= 1\n");
    assert!(
        out.contains("E305") && out.contains("bad.rules:1:18"),
        "{out}"
    );
}
