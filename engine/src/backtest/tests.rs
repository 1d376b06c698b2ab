//! Hand-made backtest cases; every expected value is worked out in the comments.

use super::stats::make_score;
use super::*;
use crate::record::TransitionKind as K;
use crate::time::Zone;

/// 2017-08-26T00:00:00Z.
const T0: Millis = 1_503_705_600_000;

/// `x` minutes after `T0`.
fn m(x: i64) -> Millis {
    T0 + x * MINUTE
}

fn levels() -> Levels {
    Levels::from([(
        "rain".to_string(),
        vec![
            "yellow".to_string(),
            "orange".to_string(),
            "red".to_string(),
        ],
    )])
}

fn t(entity: &str, at: i64, kind: K, from: Option<&str>, to: Option<&str>) -> BtTransition {
    BtTransition {
        rule: "rain".to_string(),
        entity: entity.to_string(),
        time: m(at),
        kind,
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        branch: None,
        expected_crossing: None,
    }
}

/// A raise to `level` at `a` and a clear at `b` (`None`: never cleared).
fn episode(entity: &str, level: &str, a: i64, b: Option<i64>) -> Vec<BtTransition> {
    let mut v = vec![t(entity, a, K::Raise, None, Some(level))];
    if let Some(b) = b {
        v.push(t(entity, b, K::Clear, Some(level), None));
    }
    v
}

fn run_ref(transitions: Vec<BtTransition>) -> Reference {
    Reference::Run {
        transitions,
        levels: levels(),
    }
}

fn truth(entity: &str, level: &str, a: i64, b: Option<i64>) -> TruthEvent {
    TruthEvent {
        rule: None,
        entity: entity.to_string(),
        level: level.to_string(),
        start: m(a),
        end: b.map(m),
    }
}

fn approx(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn warned_70_minutes_ahead_is_a_hit_with_lead_70() {
    // Candidate yellow [0, 200), reference yellow [70, 150): intersect; lead 70 − 0 = 70.
    let cand = episode("G1", "yellow", 0, Some(200));
    let r = score(
        &cand,
        &levels(),
        &run_ref(episode("G1", "yellow", 70, Some(150))),
        m(300),
    )
    .expect("score");
    let s = r.rule_level("rain", "yellow").expect("scored");
    assert_eq!(
        (s.events, s.hits, s.misses, s.false_alarms, s.warnings),
        (1, 1, 0, 0, 1)
    );
    assert_eq!((s.pod, s.far, s.csi), (Some(1.0), Some(0.0), Some(1.0)));
    assert_eq!(s.lead.count, 1);
    assert!(approx(s.lead.median, 70.0));
    assert!(approx(s.lead.share_ge_60min, 1.0));
    assert_eq!(r.events[0].warned_at, Some(m(0)));
    // Orange: no event, no warning: every ratio has a zero denominator.
    let o = r.rule_level("rain", "orange").expect("scored");
    assert_eq!((o.events, o.warnings), (0, 0));
    assert_eq!(
        (o.pod, o.far, o.csi, o.lead.median),
        (None, None, None, None)
    );
    // The episode is credited with the hit.
    assert_eq!(r.episodes.len(), 1);
    assert_eq!(r.episodes[0].hits.len(), 1);
    assert!((r.episodes[0].hits[0].lead_min - 70.0).abs() < 1e-9);
    // Per entity equals per rule here.
    assert_eq!(r.entity("rain", "yellow", "G1"), Some(s));
    // Overall = yellow only.
    assert_eq!(r.overall.hits, 1);
}

#[test]
fn late_warning_has_negative_lead_and_is_kept() {
    // Candidate [110, 200), reference [100, 150): hit, lead 100 − 110 = −10.
    let r = score(
        &episode("G1", "yellow", 110, Some(200)),
        &levels(),
        &run_ref(episode("G1", "yellow", 100, Some(150))),
        m(300),
    )
    .expect("score");
    let s = r.rule_level("rain", "yellow").expect("scored");
    assert_eq!(s.hits, 1);
    assert!(approx(s.lead.min, -10.0));
    assert!(approx(s.lead.share_ge_60min, 0.0));
    assert!(approx(r.events[0].lead_min, -10.0));
}

#[test]
fn miss_and_false_alarm() {
    // Reference [0, 30), candidate [100, 130): no intersection. M = 1, F = 1, W = 1:
    // POD 0/1 = 0, FAR 1/1 = 1, CSI 0/2 = 0.
    let r = score(
        &episode("G1", "yellow", 100, Some(130)),
        &levels(),
        &run_ref(episode("G1", "yellow", 0, Some(30))),
        m(300),
    )
    .expect("score");
    let s = r.rule_level("rain", "yellow").expect("scored");
    assert_eq!((s.hits, s.misses, s.false_alarms, s.warnings), (0, 1, 1, 1));
    assert_eq!((s.pod, s.far, s.csi), (Some(0.0), Some(1.0), Some(0.0)));
    assert_eq!(s.lead.count, 0);
    assert!(!r.events[0].hit);
    assert_eq!(r.spans[0].matched_events, 0);
    // An entity with only a warning is a false alarm for that entity alone.
    let r = score(
        &episode("G2", "yellow", 0, Some(10)),
        &levels(),
        &run_ref(episode("G1", "yellow", 0, Some(30))),
        m(300),
    )
    .expect("score");
    let g1 = r.entity("rain", "yellow", "G1").expect("G1");
    let g2 = r.entity("rain", "yellow", "G2").expect("G2");
    assert_eq!((g1.misses, g1.false_alarms), (1, 0));
    assert_eq!((g2.misses, g2.false_alarms), (0, 1));
    assert_eq!(r.peaks.len(), 2);
    assert_eq!(r.peaks[0].candidate, None);
    assert_eq!(r.peaks[0].reference.as_deref(), Some("yellow"));
}

#[test]
fn escalate_and_downgrade_make_spans_at_two_levels() {
    // Candidate: raise yellow 0, escalate orange 30, downgrade yellow 60, clear 90:
    //   spans ≥ yellow [0, 90), ≥ orange [30, 60); one episode, peak orange.
    // Reference: raise yellow 20, escalate orange 40, clear 80:
    //   ≥ yellow [20, 80) → lead 20 − 0 = 20; ≥ orange [40, 80) → lead 40 − 30 = 10.
    let mut cand = vec![
        t("G1", 0, K::Raise, None, Some("yellow")),
        t("G1", 30, K::Escalate, Some("yellow"), Some("orange")),
        t("G1", 60, K::Downgrade, Some("orange"), Some("yellow")),
        t("G1", 90, K::Clear, Some("yellow"), None),
    ];
    cand[0].branch = Some("forecast".to_string());
    cand[0].expected_crossing = Some(m(25));
    let reference = vec![
        t("G1", 20, K::Raise, None, Some("yellow")),
        t("G1", 40, K::Escalate, Some("yellow"), Some("orange")),
        t("G1", 80, K::Clear, Some("orange"), None),
    ];
    let r = score(&cand, &levels(), &run_ref(reference), m(300)).expect("score");
    let spans: Vec<(&str, Millis, Millis)> = r
        .spans
        .iter()
        .map(|s| (s.level.as_str(), s.start, s.end))
        .collect();
    assert_eq!(
        spans,
        vec![("yellow", m(0), m(90)), ("orange", m(30), m(60))]
    );
    let y = r.rule_level("rain", "yellow").expect("yellow");
    let o = r.rule_level("rain", "orange").expect("orange");
    assert!(approx(y.lead.median, 20.0));
    assert!(approx(o.lead.median, 10.0));
    assert_eq!((r.overall.hits, r.overall.warnings), (2, 2));
    // Overall median of {20, 10} = 15.
    assert!(approx(r.overall.lead.median, 15.0));
    let e = &r.episodes[0];
    assert_eq!(
        (e.peak.as_str(), e.start, e.end, e.open),
        ("orange", m(0), m(90), false)
    );
    assert_eq!(e.branch.as_deref(), Some("forecast"));
    assert_eq!(e.expected_crossing, Some(m(25)));
    let hits: Vec<(&str, f64)> = e
        .hits
        .iter()
        .map(|h| (h.level.as_str(), h.lead_min))
        .collect();
    assert_eq!(hits, vec![("yellow", 20.0), ("orange", 10.0)]);
    assert_eq!(r.peaks[0].candidate.as_deref(), Some("orange"));
    assert_eq!(r.peaks[0].reference.as_deref(), Some("orange"));
    // Exact-level segments for plot bands: yellow [0,30), orange [30,60), yellow [60,90).
    let seg = level_segments(&cand, &levels(), m(300)).expect("segments");
    let seg: Vec<(&str, Millis, Millis)> = seg
        .iter()
        .map(|s| (s.level.as_str(), s.start, s.end))
        .collect();
    assert_eq!(
        seg,
        vec![
            ("yellow", m(0), m(30)),
            ("orange", m(30), m(60)),
            ("yellow", m(60), m(90))
        ]
    );
}

#[test]
fn open_span_at_run_end() {
    // Raised to orange at 0 and never cleared; the run ends at 300: spans ≥ yellow and ≥
    // orange are [0, 300) and open; the open end matches like +∞, so a truth event starting
    // at 320 (after the run end, still ongoing) is hit with lead 320.
    let cand = episode("G1", "orange", 0, None);
    let r = score(
        &cand,
        &levels(),
        &Reference::Truth(vec![truth("G1", "yellow", 320, None)]),
        m(300),
    )
    .expect("score");
    assert_eq!(r.spans.len(), 2);
    assert!(r
        .spans
        .iter()
        .all(|s| s.open && s.start == m(0) && s.end == m(300)));
    let y = r.rule_level("rain", "yellow").expect("yellow");
    assert_eq!((y.hits, y.false_alarms), (1, 0));
    assert!(approx(y.lead.max, 320.0));
    // At orange there is no event: the open orange span is a false alarm.
    let o = r.rule_level("rain", "orange").expect("orange");
    assert_eq!((o.hits, o.false_alarms, o.warnings), (0, 1, 1));
    assert!(r.episodes[0].open);
    assert_eq!(r.episodes[0].end, m(300));
    assert_eq!(r.events[0].end, None);
    let json = r.to_json().expect("json");
    assert!(json.contains("\"open\": true"));
    assert!(json.contains("\"run_end\": \"2017-08-26T05:00:00Z\""));
}

#[test]
fn event_covered_by_two_spans_is_one_hit_with_the_earliest_lead() {
    // Spans [0, 30) and [50, 100) both intersect the event [20, 60]: one hit, lead
    // 20 − 0 = 20; both spans matched, so no false alarm; W = 2.
    let mut cand = episode("G1", "yellow", 0, Some(30));
    cand.extend(episode("G1", "yellow", 50, Some(100)));
    let r = score(
        &cand,
        &levels(),
        &Reference::Truth(vec![truth("G1", "yellow", 20, Some(60))]),
        m(300),
    )
    .expect("score");
    let s = r.rule_level("rain", "yellow").expect("yellow");
    assert_eq!((s.hits, s.misses, s.false_alarms, s.warnings), (1, 0, 0, 2));
    assert!(approx(s.lead.median, 20.0));
    assert_eq!(s.far, Some(0.0));
    // Credited to the first episode only.
    assert_eq!(r.episodes[0].hits.len(), 1);
    assert!(r.episodes[1].hits.is_empty());
}

#[test]
fn span_covering_two_events_is_two_hits_and_no_false_alarm() {
    // Span [0, 200) covers events [30, 60] and [100, 150]: H = 2 (leads 30 and 100),
    // W = 1, F = 0. Leads {30, 100}: median = mean = 65, p10 = 30 + 0.1·70 = 37,
    // p90 = 30 + 0.9·70 = 93, share ≥ 60 min = 1/2.
    let r = score(
        &episode("G1", "yellow", 0, Some(200)),
        &levels(),
        &Reference::Truth(vec![
            truth("G1", "yellow", 30, Some(60)),
            truth("G1", "yellow", 100, Some(150)),
        ]),
        m(300),
    )
    .expect("score");
    let s = r.rule_level("rain", "yellow").expect("yellow");
    assert_eq!((s.hits, s.false_alarms, s.warnings), (2, 0, 1));
    assert!(approx(s.lead.median, 65.0));
    assert!(approx(s.lead.mean, 65.0));
    assert!(approx(s.lead.p10, 37.0));
    assert!(approx(s.lead.p90, 93.0));
    assert!(approx(s.lead.share_ge_60min, 0.5));
    assert_eq!(r.spans[0].matched_events, 2);
}

#[test]
fn truth_events_at_or_above_a_level_merge() {
    // Truth: orange [10, 60] and red [20, 30] (nested), yellow [60, 90] (touching).
    // ≥ yellow: one event [10, 90]; ≥ orange: [10, 60]; ≥ red: [20, 30].
    let r = score(
        &[],
        &levels(),
        &Reference::Truth(vec![
            truth("G1", "orange", 10, Some(60)),
            truth("G1", "red", 20, Some(30)),
            truth("G1", "yellow", 60, Some(90)),
        ]),
        m(300),
    )
    .expect("score");
    let ev: Vec<(&str, Millis, Option<Millis>)> = r
        .events
        .iter()
        .map(|e| (e.level.as_str(), e.start, e.end))
        .collect();
    assert_eq!(
        ev,
        vec![
            ("yellow", m(10), Some(m(90))),
            ("orange", m(10), Some(m(60))),
            ("red", m(20), Some(m(30)))
        ]
    );
    assert_eq!(r.overall.misses, 3);
    assert_eq!(r.peaks[0].reference.as_deref(), Some("red"));
}

#[test]
fn reference_rule_lacking_a_level_is_not_scored() {
    // The reference rule has yellow and orange only: red is not scored, and a red span
    // counts nowhere (not even overall).
    let mut lv = levels();
    lv.insert("wind".to_string(), vec!["yellow".to_string()]);
    let reference = Reference::Run {
        transitions: episode("G1", "orange", 0, Some(60)),
        levels: Levels::from([(
            "rain".to_string(),
            vec!["yellow".to_string(), "orange".to_string()],
        )]),
    };
    let r = score(&episode("G1", "red", 0, Some(60)), &lv, &reference, m(300)).expect("score");
    let red = r
        .by_rule_level
        .iter()
        .find(|x| x.rule == "rain" && x.level == "red")
        .expect("red row");
    assert!(red.score.is_none());
    assert!(red
        .not_scored
        .as_deref()
        .is_some_and(|w| w.contains("no level")));
    assert!(r.rule_level("rain", "orange").is_some());
    // The wind rule has no reference at all.
    let wind = r
        .by_rule_level
        .iter()
        .find(|x| x.rule == "wind")
        .expect("wind");
    assert!(wind.score.is_none());
    // Overall: yellow hit + orange hit, the red span is not counted.
    assert_eq!((r.overall.hits, r.overall.warnings), (2, 2));
    assert!(r.spans.iter().all(|s| s.level != "red"));
}

#[test]
fn unknown_rule_or_level_is_an_error() {
    let mut bad = episode("G1", "purple", 0, Some(10));
    let err = score(&bad, &levels(), &Reference::Truth(vec![]), m(60)).unwrap_err();
    assert!(matches!(err, BacktestError::UnknownLevel { ref level, .. } if level == "purple"));
    bad[0].rule = "snow".to_string();
    bad[0].to = Some("yellow".to_string());
    let err = score(&bad[..1], &levels(), &Reference::Truth(vec![]), m(60)).unwrap_err();
    assert!(matches!(err, BacktestError::UnknownRule { .. }));
}

#[test]
fn truth_csv_and_jsonl() {
    let csv = "rule,entity,level,start,end,comment\n\
               rain,G1,orange,2017-08-26T10:00:00Z,2017-08-26T14:00:00Z,x\n\
               *,G2,yellow,2017-08-26T07:00:00-05:00,,\n\
               ,G3,red,1503741600,\n";
    let jsonl = "{\"rule\":\"rain\",\"entity\":\"G1\",\"level\":\"orange\",\"start\":\"2017-08-26T10:00:00Z\",\"end\":\"2017-08-26T14:00:00Z\"}\n\
                 \n\
                 {\"rule\":\"*\",\"entity\":\"G2\",\"level\":\"yellow\",\"start\":\"2017-08-26T07:00:00-05:00\",\"end\":null}\n\
                 {\"entity\":\"G3\",\"level\":\"red\",\"start\":1503741600}\n";
    // 10:00Z = T0 + 600 min; 14:00Z = +840; 07:00-05:00 = 12:00Z = +720; 1503741600 s =
    // T0 + 36000 s = +600 min.
    let expected = vec![
        TruthEvent {
            rule: Some("rain".to_string()),
            entity: "G1".to_string(),
            level: "orange".to_string(),
            start: m(600),
            end: Some(m(840)),
        },
        TruthEvent {
            rule: None,
            entity: "G2".to_string(),
            level: "yellow".to_string(),
            start: m(720),
            end: None,
        },
        TruthEvent {
            rule: None,
            entity: "G3".to_string(),
            level: "red".to_string(),
            start: m(600),
            end: None,
        },
    ];
    assert_eq!(
        parse_truth(csv, TruthFormat::Csv, None).expect("csv"),
        expected
    );
    assert_eq!(
        parse_truth(jsonl, TruthFormat::JsonLines, None).expect("jsonl"),
        expected
    );
    // Local times need a zone.
    let local = "entity,level,start\nG1,red,2017-08-26 10:00\n";
    assert!(matches!(
        parse_truth(local, TruthFormat::Csv, None),
        Err(BacktestError::Truth { record: 1, .. })
    ));
    let zone: Zone = "+08:00".parse().expect("zone");
    let ev = parse_truth(local, TruthFormat::Csv, Some(&zone)).expect("zoned");
    assert_eq!(ev[0].start, m(120)); // 10:00+08:00 = 02:00Z
                                     // Errors name the record.
    let bad = "rule,entity,level,start,end\nrain,G1,red,soon,\n";
    assert!(matches!(
        parse_truth(bad, TruthFormat::Csv, None),
        Err(BacktestError::Truth { record: 1, .. })
    ));
    let backwards = "{\"entity\":\"G1\",\"level\":\"red\",\"start\":\"2017-08-26T10:00:00Z\",\"end\":\"2017-08-26T09:00:00Z\"}";
    assert!(parse_truth(backwards, TruthFormat::JsonLines, None).is_err());
    assert!(parse_truth("entity,start\nG1,0\n", TruthFormat::Csv, None).is_err());
    assert_eq!(
        TruthFormat::from_path(std::path::Path::new("t.JSONL")),
        TruthFormat::JsonLines
    );
}

#[test]
fn star_rule_applies_to_every_rule_with_the_level() {
    // `*` yellow applies to rain and wind (both have yellow); rain's red row only to rain; a
    // row with a level no rule has is skipped with a note.
    let mut lv = levels();
    lv.insert("wind".to_string(), vec!["yellow".to_string()]);
    let mut rows = vec![
        truth("G1", "yellow", 0, Some(10)),
        truth("G1", "purple", 0, None),
    ];
    rows.push(TruthEvent {
        rule: Some("rain".to_string()),
        ..truth("G1", "red", 100, Some(110))
    });
    let r = score(&[], &lv, &Reference::Truth(rows), m(300)).expect("score");
    assert_eq!(r.rule_level("wind", "yellow").map(|s| s.misses), Some(1));
    // rain ≥ yellow: [0,10] and [100,110] (red counts at ≥ yellow too).
    assert_eq!(r.rule_level("rain", "yellow").map(|s| s.misses), Some(2));
    assert_eq!(r.rule_level("rain", "red").map(|s| s.misses), Some(1));
    assert_eq!(r.notes.len(), 1);
    assert!(r.notes[0].contains("purple"));
}

#[test]
fn ratios_with_zero_denominators() {
    // H 3, M 1, F 2, W 5: POD 3/4, FAR 2/5, CSI 3/6.
    let s = make_score(3, 1, 2, 5, &[]);
    assert_eq!((s.pod, s.far, s.csi), (Some(0.75), Some(0.4), Some(0.5)));
    let s = make_score(0, 0, 0, 0, &[]);
    assert_eq!((s.pod, s.far, s.csi), (None, None, None));
    // Only false alarms: POD undefined, FAR 1, CSI 0.
    let s = make_score(0, 0, 2, 2, &[]);
    assert_eq!((s.pod, s.far, s.csi), (None, Some(1.0), Some(0.0)));
    // Only misses: POD 0, FAR undefined (no warnings), CSI 0.
    let s = make_score(0, 2, 0, 0, &[]);
    assert_eq!((s.pod, s.far, s.csi), (Some(0.0), None, Some(0.0)));
}

#[test]
fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
    // {40, 10, 30, 20} min sorted {10, 20, 30, 40}: median (20 + 30)/2 = 25; mean 25;
    // p10: h = 3·0.1 = 0.3 → 10 + 0.3·10 = 13; p90: h = 2.7 → 30 + 0.7·10 = 37;
    // share ≥ 60 min: 0.
    let l = LeadStats::from_leads(&[40 * MINUTE, 10 * MINUTE, 30 * MINUTE, 20 * MINUTE]);
    assert_eq!(l.count, 4);
    assert!(approx(l.median, 25.0));
    assert!(approx(l.mean, 25.0));
    assert!(approx(l.p10, 13.0));
    assert!(approx(l.p90, 37.0));
    assert_eq!((l.min, l.max), (Some(10.0), Some(40.0)));
    assert!(approx(l.share_ge_60min, 0.0));
    // Odd count: the middle value; exactly 60 min counts as ≥ 60.
    let l = LeadStats::from_leads(&[-10 * MINUTE, 60 * MINUTE, 5 * MINUTE]);
    assert!(approx(l.median, 5.0));
    assert!(approx(l.share_ge_60min, 1.0 / 3.0));
    assert_eq!(LeadStats::from_leads(&[]).median, None);
}

/// A small report with two plotted entities (used by the HTML test).
fn small_report() -> (BacktestReport, PlotInputs) {
    let mut cand = episode("G1", "yellow", 0, Some(200));
    cand.push(t("G1", 100, K::Escalate, Some("yellow"), Some("orange")));
    cand.sort_by_key(|x| x.time);
    cand[2].from = Some("orange".to_string());
    cand.extend(episode("G2", "yellow", 30, Some(60)));
    let reference = Reference::Truth(vec![
        truth("G1", "yellow", 70, Some(190)),
        truth("G1", "orange", 120, Some(150)),
        truth("G3", "yellow", 10, Some(20)),
    ]);
    let report = score(&cand, &levels(), &reference, m(300)).expect("score");
    let series =
        |k: f64| -> Vec<(Millis, f64)> { (0..=60).map(|i| (m(i * 5), k * i as f64)).collect() };
    let plots = PlotInputs {
        title: "forewarn backtest rules/rain.fw --truth truth.csv".to_string(),
        subtitle: "window 2017-08-26 <test>".to_string(),
        entities: ["G1", "G2"]
            .iter()
            .map(|e| PlotSeries {
                entity: e.to_string(),
                title: format!("{e}: accumulated rain"),
                series: vec![
                    ("rain 1 h (mm)".to_string(), series(0.5)),
                    ("rain 3 h (mm)".to_string(), series(1.0)),
                ],
                thresholds: vec![("yellow 30 mm".to_string(), 30.0)],
                bands: vec![(m(0), m(100), "yellow".to_string())],
                reference: vec![(m(70), m(190), "yellow".to_string())],
            })
            .collect(),
    };
    (report, plots)
}

#[test]
fn small_report_counts() {
    // G1: ≥ yellow span [0, 200) hits [70, 190] (lead 70); ≥ orange span [100, 200) hits
    // [120, 150] (lead 20). G2: span [30, 60) is a false alarm. G3: event [10, 20] missed.
    // Yellow: H 1, M 1, F 1, W 2 → POD 0.5, FAR 0.5, CSI 1/3.
    let (r, _) = small_report();
    let y = r.rule_level("rain", "yellow").expect("yellow");
    assert_eq!((y.hits, y.misses, y.false_alarms, y.warnings), (1, 1, 1, 2));
    assert_eq!((y.pod, y.far), (Some(0.5), Some(0.5)));
    assert!(approx(y.csi, 1.0 / 3.0));
    let o = r.rule_level("rain", "orange").expect("orange");
    assert!(approx(o.lead.median, 20.0));
    // Overall: H 2, M 1, F 1, W 3; median lead of {70, 20} = 45.
    assert_eq!(
        (
            r.overall.hits,
            r.overall.misses,
            r.overall.false_alarms,
            r.overall.warnings
        ),
        (2, 1, 1, 3)
    );
    assert!(approx(r.overall.lead.median, 45.0));
}

#[test]
fn html_is_self_contained_with_one_plot_per_entity() {
    let (r, plots) = small_report();
    let zone: Zone = "-05:00".parse().expect("zone");
    let html = render_html(&r, &plots, &zone).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<html") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<body>").count(), 1);
    // Histogram + one plot per entity; each figure and svg closed.
    assert_eq!(html.matches("<svg").count(), 1 + plots.entities.len());
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert_eq!(html.matches("class=\"entity-plot\"").count(), 2);
    assert_eq!(
        html.matches("<figure").count(),
        html.matches("</figure>").count()
    );
    assert_eq!(
        html.matches("<table").count(),
        html.matches("</table>").count()
    );
    // Summary numbers: yellow POD 0.50, FAR 0.50, CSI 0.33; overall median lead 45.
    assert!(html.contains("<td>0.50</td><td>0.50</td><td>0.33</td>"));
    assert!(html.contains("median lead 45 min"));
    // The title is escaped; no external references but the SVG namespace.
    assert!(html.contains("window 2017-08-26 &lt;test&gt;"));
    let stripped = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!stripped.contains("http"));
    assert!(!stripped.contains("<script"));
    assert!(!stripped.contains("<link"));
    // Plot text is SVG text: legend, threshold label and zone-local time labels.
    assert!(html.contains("rain 1 h (mm)"));
    assert!(html.contains("yellow 30 mm"));
    assert!(html.contains("reference: yellow"));
    assert!(html.contains("25 Aug")); // T0 = 26 Aug 00:00Z = 25 Aug 19:00-05:00
                                      // Entities by level: G1 peaks at orange for both, coloured orange (245, 135, 30).
    assert!(html.contains(
        "<td class=\"l\">G1</td><td class=\"lvl\" style=\"background:#f5871e;color:#222\">orange</td>"
    ));
    // No hits: the histogram gives way to a note.
    let empty = score(&[], &levels(), &Reference::Truth(vec![]), m(10)).expect("score");
    let html = render_html(&empty, &PlotInputs::default(), &zone).expect("html");
    assert!(!html.contains("<svg"));
    assert!(html.contains("No hits"));
}
