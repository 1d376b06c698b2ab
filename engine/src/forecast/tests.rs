//! Forecast tests; every expected value is worked out by hand in the comments.

use std::path::Path;
use std::sync::Arc;

use forewarn_rules::ir::{Millis, HOUR};

use super::*;
use crate::time::parse_timestamp;

fn t(s: &str) -> Millis {
    parse_timestamp(s, None).unwrap()
}

const MINUTE: Millis = 60_000;
const T0: Millis = 1_503_766_800_000; // 2017-08-26T17:00:00Z

fn iv(start_h: i64, end_h: i64, value: f64) -> ForecastInterval {
    ForecastInterval {
        start: T0 + start_h * HOUR,
        end: T0 + end_h * HOUR,
        value,
    }
}

fn fc(issued: Millis, received: Option<Millis>, intervals: Vec<ForecastInterval>) -> Arc<Forecast> {
    Arc::new(Forecast {
        feed: "qpf".into(),
        target: ForecastTarget::Entity("g1".into()),
        issued,
        received,
        intervals,
    })
}

fn store(as_of: AsOf) -> ForecastStore {
    ForecastStore::new(
        "qpf",
        StoreConfig {
            as_of,
            ..StoreConfig::default()
        },
    )
}

fn h(n: i64) -> Millis {
    T0 + n * HOUR
}

fn approx(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn proportional_split_at_both_ends() {
    let mut s = store(AsOf::Issued);
    s.insert(
        0,
        fc(
            T0,
            None,
            vec![iv(0, 6, 12.0), iv(6, 12, 6.0), iv(12, 18, 3.0)],
        ),
    )
    .unwrap();
    // (3h, 14h]: 12 mm × 3/6 + 6 mm + 3 mm × 2/6 = 6 + 6 + 1 = 13 mm.
    let v = s.sum(0, T0, h(3), h(14)).unwrap();
    approx(v.value, 13.0);
    assert_eq!(v.issued, T0);
    // One hour inside the first interval: 12 mm / 6 h = 2 mm.
    approx(s.sum(0, T0, h(1), h(2)).unwrap().value, 2.0);
    // Exactly one interval: its value, unsplit.
    assert_eq!(s.sum(0, T0, h(6), h(12)).unwrap().value, 6.0);
    // max: largest value overlapping (5h, 7h] = 12; rate: 12/6 = 2 mm/h vs 6/6 = 1 mm/h.
    assert_eq!(s.max(0, T0, h(5), h(7)).unwrap().value, 12.0);
    approx(s.max_rate_per_hour(0, T0, h(5), h(7)).unwrap().value, 2.0);
    // (6h, 18h] touches (0, 6h] only at its open end: not overlapping, so max = 6.
    assert_eq!(s.max(0, T0, h(6), h(18)).unwrap().value, 6.0);
    // Empty or reversed windows and unknown slots: None.
    assert_eq!(s.sum(0, T0, h(3), h(3)), None);
    assert_eq!(s.sum(7, T0, h(3), h(4)), None);
}

#[test]
fn full_cover_or_none() {
    let mut s = store(AsOf::Issued);
    // (0, 3h] = 3 mm, a gap (3h, 4h], (4h, 6h] = 2 mm.
    s.insert(0, fc(T0, None, vec![iv(0, 3, 3.0), iv(4, 6, 2.0)]))
        .unwrap();
    approx(s.sum(0, T0, h(1), h(3)).unwrap().value, 2.0); // 3 × 2/3
    approx(s.sum(0, T0, h(4), h(5)).unwrap().value, 1.0); // 2 × 1/2
    assert_eq!(s.sum(0, T0, h(2), h(5)), None, "spans the gap");
    assert_eq!(s.max(0, T0, h(2), h(5)), None, "spans the gap");
    assert_eq!(
        s.sum(0, T0, h(-1), h(1)),
        None,
        "starts before the forecast"
    );
    assert_eq!(s.sum(0, T0, h(5), h(7)), None, "ends after the forecast");
}

#[test]
fn latest_covering_forecast_wins_and_falls_back() {
    let mut s = store(AsOf::Issued);
    let old = T0;
    let new = h(1);
    s.insert(0, fc(old, None, vec![iv(0, 24, 24.0)])).unwrap(); // 1 mm/h
    s.insert(0, fc(new, None, vec![iv(1, 7, 12.0)])).unwrap(); // 2 mm/h
                                                               // (2h, 5h] is covered by the newer one: 12 × 3/6 = 6.
    let v = s.sum(0, h(2), h(2), h(5)).unwrap();
    approx(v.value, 6.0);
    assert_eq!(v.issued, new);
    // (2h, 10h] is not: the older one, 24 × 8/24 = 8.
    let v = s.sum(0, h(2), h(2), h(10)).unwrap();
    approx(v.value, 8.0);
    assert_eq!(v.issued, old);
    assert_eq!(s.selected_issued(0, h(2), h(2), h(10)), Some(old));
    assert_eq!(s.latest_issued(0, h(2)), Some(new));
    // Before the newer one is issued, only the older one is usable: 24 × 3/24 = 3.
    let v = s.sum(0, h(0), h(2), h(5)).unwrap();
    approx(v.value, 3.0);
    assert_eq!(v.issued, old);
    // Equal as-of: the later issue time wins even when inserted first.
    let mut s = store(AsOf::Received);
    s.insert(0, fc(h(1), Some(h(2)), vec![iv(2, 3, 5.0)]))
        .unwrap();
    s.insert(0, fc(h(0), Some(h(2)), vec![iv(2, 3, 9.0)]))
        .unwrap();
    assert_eq!(s.sum(0, h(2), h(2), h(3)).unwrap().value, 5.0);
    // Equal as-of and issue time: the later insertion wins.
    s.insert(0, fc(h(1), Some(h(2)), vec![iv(2, 3, 7.0)]))
        .unwrap();
    assert_eq!(s.sum(0, h(2), h(2), h(3)).unwrap().value, 7.0);
}

#[test]
fn as_of_received_live_issued_in_backtests() {
    // Issued at T0, arrived at T0 + 2 h.
    let f = fc(T0, Some(h(2)), vec![iv(0, 6, 6.0)]);
    let mut live = store(AsOf::Received);
    let mut backtest = store(AsOf::Issued);
    live.insert(0, f.clone()).unwrap();
    backtest.insert(0, f).unwrap();
    // τ = T0 + 1 h: issued before τ but not yet received — live cannot use it.
    assert_eq!(live.sum(0, h(1), h(1), h(2)), None);
    assert_eq!(live.latest_issued(0, h(1)), None);
    approx(backtest.sum(0, h(1), h(1), h(2)).unwrap().value, 1.0);
    // From its arrival on, live uses it too.
    approx(live.sum(0, h(2), h(2), h(3)).unwrap().value, 1.0);
}

#[test]
fn never_a_forecast_issued_after_tau() {
    for mode in [AsOf::Received, AsOf::Issued] {
        let mut s = store(mode);
        // Issued at T0 + 3 h; a bogus arrival time before its issue time is not believed.
        s.insert(0, fc(h(3), Some(h(1)), vec![iv(0, 6, 6.0)]))
            .unwrap();
        assert_eq!(s.sum(0, h(2), h(2), h(4)), None, "{mode:?}");
        assert_eq!(s.sum(0, h(3), h(3), h(4)).unwrap().value, 1.0, "{mode:?}");
    }
    // Without `received`, live uses the issue time.
    let mut s = store(AsOf::Received);
    s.insert(0, fc(h(3), None, vec![iv(0, 6, 6.0)])).unwrap();
    assert_eq!(s.sum(0, h(2), h(3), h(4)), None);
    assert_eq!(s.sum(0, h(3), h(3), h(4)).unwrap().value, 1.0);
}

#[test]
fn iso_8601_durations() {
    assert_eq!(parse_iso_duration("PT6H"), Ok(6 * HOUR));
    assert_eq!(parse_iso_duration("PT3H"), Ok(3 * HOUR));
    assert_eq!(parse_iso_duration("P2DT3H"), Ok(51 * HOUR));
    assert_eq!(parse_iso_duration("P1D"), Ok(24 * HOUR));
    assert_eq!(parse_iso_duration("P7DT14H"), Ok(182 * HOUR));
    assert_eq!(parse_iso_duration("P1W"), Ok(168 * HOUR));
    assert_eq!(parse_iso_duration("P2W1D"), Ok(360 * HOUR));
    assert_eq!(parse_iso_duration("PT1H30M"), Ok(90 * MINUTE));
    assert_eq!(parse_iso_duration("PT90S"), Ok(90_000));
    assert_eq!(parse_iso_duration("PT0.5H"), Ok(30 * MINUTE));
    assert_eq!(parse_iso_duration("PT1,5S"), Ok(1_500));
    assert_eq!(parse_iso_duration("P1DT1M"), Ok(24 * HOUR + MINUTE));
    for bad in [
        "", "P", "PT", "6H", "PT6", "P1Y", "P1M", "PT1M1H", "P1DT", "PT6X", "P1.5DT1H", "PTH",
        "PT1H1H", "P1D2W",
    ] {
        assert!(
            matches!(parse_iso_duration(bad), Err(Problem::Duration { .. })),
            "{bad:?} should be refused"
        );
    }
    // Intervals: start/duration, start/end, duration/end.
    let start = t("2022-02-04T06:00:00+00:00");
    assert_eq!(
        parse_valid_time("2022-02-04T06:00:00+00:00/PT6H"),
        Ok((start, start + 6 * HOUR))
    );
    assert_eq!(
        parse_valid_time("2022-02-04T06:00:00Z/2022-02-04T12:00:00Z"),
        Ok((start, start + 6 * HOUR))
    );
    assert_eq!(
        parse_valid_time("PT6H/2022-02-04T12:00:00Z"),
        Ok((start, start + 6 * HOUR))
    );
    assert!(parse_valid_time("2022-02-04T06:00:00+00:00").is_err());
    assert!(matches!(
        parse_valid_time("2022-02-04T06:00:00/PT6H"),
        Err(Problem::Time(_))
    ));
}

#[test]
fn jsonl_units_forms_and_targets() {
    let text = r#"{"feed":"qpf","area":"North","issued":"2017-08-26T12:00:00-05:00","received":"2017-08-26T12:20:00-05:00","unit":"in","intervals":[{"start":"2017-08-26T12:00:00-05:00","end":"2017-08-26T13:00:00-05:00","value":0.5},{"valid":"2017-08-26T18:00:00Z/PT1H","value":1}]}
{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","unit":"cm","intervals":[{"valid":"2017-08-26T17:00:00Z/PT3H","value":1.5},{"valid":"2017-08-26T20:00:00Z/PT3H","value":null},{"valid":"2017-08-26T23:00:00Z/PT1H","value":0.2}]}
{"feed":"stage","entity":"g2","issued":1503766800,"intervals":[{"start":1503766800,"end":1503770400,"value":12.25}]}
"#;
    let out = parse_jsonl(text, &JsonlDefaults::default());
    assert_eq!(out.len(), 3);
    let a = out[0].as_ref().unwrap();
    assert_eq!(a.target, ForecastTarget::Area("North".into()));
    assert_eq!(a.issued, T0);
    assert_eq!(a.received, Some(T0 + 20 * MINUTE));
    // 0.5 in = 12.7 mm; 1 in = 25.4 mm. 12:00-05:00 = 17:00Z, the second interval 18-19Z.
    assert_eq!(a.intervals, vec![iv(0, 1, 0.5 * 25.4), iv(1, 2, 25.4)]);
    let b = out[1].as_ref().unwrap();
    assert_eq!(b.target, ForecastTarget::Entity("g1".into()));
    assert_eq!(b.received, None);
    // 1.5 cm = 15 mm; the null interval is a gap; 0.2 cm = 2 mm.
    assert_eq!(b.intervals, vec![iv(0, 3, 15.0), iv(6, 7, 2.0)]);
    // No unit: values as given (a level feed); epoch seconds.
    let c = out[2].as_ref().unwrap();
    assert_eq!((c.feed.as_str(), c.issued), ("stage", T0));
    assert_eq!(c.intervals, vec![iv(0, 1, 12.25)]);
    // A store sums around the null gap only where covered.
    let mut s = store(AsOf::Issued);
    s.insert(0, Arc::new(b.clone())).unwrap();
    approx(s.sum(0, T0, h(1), h(3)).unwrap().value, 10.0); // 15 × 2/3
    assert_eq!(s.sum(0, T0, h(2), h(4)), None);
    // Defaults fill in what a line leaves out.
    let defaults = JsonlDefaults {
        feed: Some("qpf".into()),
        target: Some(ForecastTarget::Area("South".into())),
        received: Some(h(1)),
    };
    let out = parse_jsonl(
        r#"{"issued":"2017-08-26T17:00:00Z","intervals":[]}"#,
        &defaults,
    );
    let d = out[0].as_ref().unwrap();
    assert_eq!(
        (d.feed.as_str(), &d.target, d.received),
        ("qpf", &ForecastTarget::Area("South".into()), Some(h(1)))
    );
}

#[test]
fn one_forecast_as_a_document() {
    // an MQTT payload: one object over several lines; `received` from the defaults
    let defaults = JsonlDefaults {
        feed: Some("qpf".into()),
        target: None,
        received: Some(T0 + 5 * MINUTE),
    };
    let f = parse_forecast_json(
        "{\"entity\": \"g1\",\n \"issued\": \"2017-08-26T17:00:00Z\",\n \"unit\": \"cm\",\n \"intervals\": [{\"valid\": \"2017-08-26T17:00:00Z/PT2H\", \"value\": 3}]}\n",
        &defaults,
    )
    .unwrap();
    assert_eq!(f.feed, "qpf");
    assert_eq!(f.target, ForecastTarget::Entity("g1".into()));
    assert_eq!((f.issued, f.received), (T0, Some(T0 + 5 * MINUTE)));
    assert_eq!(f.intervals, vec![iv(0, 2, 30.0)]); // 3 cm = 30 mm
                                                   // errors have the JSON path and no line number
    let r = parse_forecast_json("{\"entity\": \"g1\", \"intervals\": []}", &defaults);
    assert_eq!(invalid(&r), (None, "$.issued".into(), Problem::Missing));
    let r = parse_forecast_json("{\"entity\": ", &defaults);
    assert!(matches!(invalid(&r), (None, p, Problem::Json(_)) if p == "$"));
}

fn invalid(r: &Result<Forecast, ForecastError>) -> (Option<usize>, String, Problem) {
    match r {
        Err(ForecastError::Invalid { at, problem }) => (
            at.line,
            at.path.clone().unwrap_or_default(),
            problem.clone(),
        ),
        other => panic!("expected an invalid line, got {other:?}"),
    }
}

#[test]
fn malformed_lines_carry_line_numbers_and_do_not_stop_the_rest() {
    let ok = r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","intervals":[{"valid":"2017-08-26T17:00:00Z/PT1H","value":1}]}"#;
    let text = [
        ok,
        r#"{"feed":"qpf","entity":"g1","#,
        "",
        r#"{"feed":"qpf","entity":"g1","intervals":[]}"#,
        r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","intervals":[{"valid":"2017-08-26T17:00:00Z/PT2H","value":1},{"valid":"2017-08-26T18:00:00Z/PT1H","value":1}]}"#,
        r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","unit":"ft","intervals":[]}"#,
        r#"{"feed":"qpf","entity":"g1","area":"North","issued":"2017-08-26T17:00:00Z","intervals":[]}"#,
        r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26 17:00:00","intervals":[]}"#,
        r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","intervals":[{"start":"2017-08-26T18:00:00Z","end":"2017-08-26T18:00:00Z","value":1}]}"#,
        r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","intervals":[{"valid":"2017-08-26T17:00:00Z/PT1Y","value":1}]}"#,
        r#"{"feed":"qpf","entity":"g1","issued":"2017-08-26T17:00:00Z","intervals":[{"valid":"2017-08-26T17:00:00Z/PT1H","value":"1"}]}"#,
        r#"[1,2]"#,
        ok,
    ]
    .join("\n");
    let out = parse_jsonl(&text, &JsonlDefaults::default());
    assert_eq!(out.len(), 12, "the blank line 3 yields nothing");
    assert!(out[0].is_ok() && out[11].is_ok());
    assert!(matches!(invalid(&out[1]), (Some(2), p, Problem::Json(_)) if p == "$"));
    assert_eq!(
        invalid(&out[2]),
        (Some(4), "$.issued".into(), Problem::Missing)
    );
    assert_eq!(
        invalid(&out[3]),
        (
            Some(5),
            "$.intervals[1]".into(),
            Problem::Overlap {
                index: 1,
                start: h(1),
                previous_end: h(2)
            }
        )
    );
    assert_eq!(
        invalid(&out[4]),
        (Some(6), "$.unit".into(), Problem::UnknownUnit("ft".into()))
    );
    assert!(matches!(invalid(&out[5]), (Some(7), _, Problem::Target(_))));
    assert!(matches!(
        invalid(&out[6]),
        (Some(8), p, Problem::Time(crate::time::TimeError::NoOffset(_))) if p == "$.issued"
    ));
    assert!(matches!(
        invalid(&out[7]),
        (Some(9), p, Problem::EmptyInterval { index: 0, .. }) if p == "$.intervals[0]"
    ));
    assert!(matches!(
        invalid(&out[8]),
        (Some(10), p, Problem::Duration { .. }) if p == "$.intervals[0].valid"
    ));
    assert!(matches!(
        invalid(&out[9]),
        (Some(11), p, Problem::Type { .. }) if p == "$.intervals[0].value"
    ));
    assert!(matches!(
        invalid(&out[10]),
        (Some(12), _, Problem::Type { .. })
    ));
    // The message names the line and the path.
    let msg = out[3].as_ref().unwrap_err().to_string();
    assert!(
        msg.starts_with("line 5 at $.intervals[1]: interval 1 starts"),
        "{msg}"
    );
}

#[test]
fn store_rejects_bad_forecasts() {
    let mut s = store(AsOf::Issued);
    let nan = fc(T0, None, vec![iv(0, 1, f64::NAN)]);
    assert!(matches!(
        s.insert(0, nan),
        Err(ForecastError::Invalid {
            problem: Problem::NotFinite { index: 0 },
            ..
        })
    ));
    let overlap = fc(T0, None, vec![iv(0, 2, 1.0), iv(1, 3, 1.0)]);
    assert!(matches!(
        s.insert(0, overlap),
        Err(ForecastError::Invalid {
            problem: Problem::Overlap { index: 1, .. },
            ..
        })
    ));
    let unsorted = fc(T0, None, vec![iv(2, 3, 1.0), iv(0, 1, 1.0)]);
    assert!(s.insert(0, unsorted).is_err());
    let empty = fc(T0, None, vec![iv(2, 2, 1.0)]);
    assert!(s.insert(0, empty).is_err());
    let huge = fc(
        T0,
        None,
        vec![ForecastInterval {
            start: Millis::MIN,
            end: Millis::MAX,
            value: 1.0,
        }],
    );
    assert!(matches!(
        s.insert(0, huge),
        Err(ForecastError::Invalid {
            problem: Problem::TooLong { index: 0 },
            ..
        })
    ));
    // Epoch milliseconds that far out parse as timestamps, so the parser must refuse too.
    let out = parse_jsonl(
        r#"{"feed":"qpf","entity":"g1","issued":0,"intervals":[{"start":"-9223372036854775808","end":"9223372036854775807","value":1}]}"#,
        &JsonlDefaults::default(),
    );
    assert!(out[0].is_err(), "{:?}", out[0]);
    let mut other = (*fc(T0, None, vec![])).clone();
    other.feed = "stage".into();
    assert!(matches!(
        s.insert(0, Arc::new(other)),
        Err(ForecastError::FeedMismatch { .. })
    ));
    assert!(s.is_empty());
}

#[test]
fn pruning_keeps_the_store_bounded() {
    // The hard bound: at most `max_per_entity`, the oldest by as-of dropped first.
    let mut s = ForecastStore::new(
        "qpf",
        StoreConfig {
            as_of: AsOf::Issued,
            keep_back: 0,
            max_per_entity: 4,
        },
    );
    for i in 0..6 {
        s.insert(0, fc(h(i), None, vec![iv(i, i + 1, i as f64)]))
            .unwrap();
    }
    assert_eq!(s.len(0), 4);
    // Issued at T0 and T0+1h are gone; T0+2h is the oldest left.
    assert_eq!(s.sum(0, h(9), h(0), h(1)), None);
    assert_eq!(s.sum(0, h(9), h(1), h(2)), None);
    assert_eq!(s.sum(0, h(9), h(2), h(3)).unwrap().value, 2.0);

    // Against a watermark: dominated and expired forecasts go, the others stay.
    let mut s = ForecastStore::new(
        "qpf",
        StoreConfig {
            as_of: AsOf::Issued,
            keep_back: HOUR,
            max_per_entity: 32,
        },
    );
    let a = fc(h(0), None, vec![iv(0, 2, 2.0)]); // ends at 2h
    let b = fc(h(1), None, vec![iv(0, 12, 12.0)]); // reaches past c
    let c = fc(h(4), None, vec![iv(4, 10, 6.0)]);
    let d = fc(h(5), None, vec![iv(5, 8, 3.0)]);
    for f in [a, b, c, d] {
        s.insert(0, f).unwrap();
    }
    assert_eq!(
        s.len(0),
        4,
        "no watermark yet: nothing can be proven unused"
    );
    // Watermark 5h, keep back 1h: windows start at 4h or later. `a` ends at 2h: expired.
    // `b` covers (4h, 12h]: neither `c` (ends 10h) nor `d` covers all of that, so it stays.
    // `c` covers (4h, 10h]; `d` covers only (5h, 8h]: `c` stays. `d` is the newest.
    s.set_watermark(h(5));
    s.prune();
    assert_eq!(s.len(0), 3);
    // Before pruning, (8h, 12h] comes from `b`: 12 × 4/12 = 4.
    approx(s.sum(0, h(5), h(8), h(12)).unwrap().value, 4.0);
    // A newer forecast `e` (as-of 5h, inserted after `d`) covering (3h, 13h] covers all that
    // `b`, `c` and `d` cover after 4h: they can never be selected again and go.
    s.insert(0, fc(h(5), None, vec![iv(3, 13, 10.0)])).unwrap();
    assert_eq!(s.len(0), 1);
    approx(s.sum(0, h(5), h(8), h(12)).unwrap().value, 4.0); // 10 × 4/10
    assert_eq!(s.latest_issued(0, h(5)), Some(h(5)));
}

#[test]
fn area_map_resolves_targets_and_forecasts_are_shared() {
    let map = AreaMap::from_pairs([
        ("g1", "North"),
        ("g2", "North"),
        ("g3", "South"),
        ("g1", "North"),
    ]);
    let north = ForecastTarget::Area("North".into());
    assert_eq!(map.targets(&north).unwrap(), ["g1", "g2"]);
    let g3 = ForecastTarget::Entity("g3".into());
    assert_eq!(map.targets(&g3).unwrap(), ["g3"]);
    assert_eq!(
        map.targets(&ForecastTarget::Area("East".into())),
        Err(ForecastError::UnknownArea("East".into()))
    );
    assert_eq!(
        map.targets(&ForecastTarget::Entity("g9".into())),
        Err(ForecastError::UnknownEntity("g9".into()))
    );
    // One Arc per forecast, shared by every entity of the area.
    let f = Arc::new(Forecast {
        feed: "qpf".into(),
        target: north.clone(),
        issued: T0,
        received: None,
        intervals: vec![iv(0, 6, 6.0)],
    });
    let mut s = store(AsOf::Issued);
    for (slot, _) in map.targets(&f.target).unwrap().iter().enumerate() {
        s.insert(slot, f.clone()).unwrap();
    }
    assert_eq!(Arc::strong_count(&f), 3);
    approx(s.sum(1, T0, h(0), h(1)).unwrap().value, 1.0);
}

const NWS: &str = include_str!("../../../fixtures/nws-gridpoint/detailed_forecast.json");

fn nws_qpf() -> Forecast {
    parse_nws_gridpoint(
        NWS,
        "quantitativePrecipitation",
        "qpf",
        ForecastTarget::Area("Apalachicola".into()),
    )
    .unwrap()
}

#[test]
fn nws_fixture_intervals() {
    let f = nws_qpf();
    assert_eq!(f.issued, t("2022-02-04T03:15:41Z"));
    assert_eq!(f.received, None);
    assert_eq!(f.feed, "qpf");
    // Read from the file: "2022-02-03T21:00:00+00:00/PT3H" 0, "2022-02-04T00:00:00+00:00/PT6H"
    // 0, "…06:00…/PT6H" 2.032, "…12:00…/PT6H" 4.826, "…18:00…/PT6H" 4.826.
    let first = [
        ("2022-02-03T21:00:00Z", "2022-02-04T00:00:00Z", 0.0),
        ("2022-02-04T00:00:00Z", "2022-02-04T06:00:00Z", 0.0),
        ("2022-02-04T06:00:00Z", "2022-02-04T12:00:00Z", 2.032),
        ("2022-02-04T12:00:00Z", "2022-02-04T18:00:00Z", 4.826),
        ("2022-02-04T18:00:00Z", "2022-02-05T00:00:00Z", 4.826),
    ];
    for (i, (a, b, v)) in first.iter().enumerate() {
        assert_eq!(
            f.intervals[i],
            ForecastInterval {
                start: t(a),
                end: t(b),
                value: *v
            },
            "interval {i}"
        );
    }
    // 27 contiguous intervals to 2022-02-10T12:00Z.
    assert_eq!(f.intervals.len(), 27);
    assert_eq!(f.intervals[26].end, t("2022-02-10T12:00:00Z"));
    assert!(f.intervals.windows(2).all(|w| w[0].end == w[1].start));
}

#[test]
fn nws_fixture_queries() {
    let f = Arc::new(nws_qpf());
    let issued = f.issued;
    let mut s = store(AsOf::Issued);
    s.insert(0, f).unwrap();
    let tau = t("2022-02-04T09:00:00Z");
    // (09Z, 14Z] splits two intervals: 2.032 × 3/6 + 4.826 × 2/6 = 1.016 + 1.608666… = 2.624666…
    let v = s.sum(0, tau, tau, t("2022-02-04T14:00:00Z")).unwrap();
    approx(v.value, 1.016 + 4.826 / 3.0);
    assert_eq!(v.issued, issued);
    // Rates: 2.032/6 = 0.3386… and 4.826/6 = 0.8043… mm/h; max value 4.826 mm.
    approx(
        s.max_rate_per_hour(0, tau, tau, t("2022-02-04T14:00:00Z"))
            .unwrap()
            .value,
        4.826 / 6.0,
    );
    assert_eq!(
        s.max(0, tau, tau, t("2022-02-04T14:00:00Z")).unwrap().value,
        4.826
    );
    // The whole forecast: 2.032 + 4.826 + 4.826 + 3.048 + 2.286 + 0.254 + 1.016 + 0.508
    // + 0.254 + 0.254 + 0.508 + 0.254 = 20.066 mm (SOURCE.md: "total 20.07 mm").
    let total = s
        .sum(0, tau, t("2022-02-03T21:00:00Z"), t("2022-02-10T12:00:00Z"))
        .unwrap();
    approx(total.value, 20.066);
    // Past its last interval, or before it was issued: nothing.
    assert_eq!(
        s.sum(0, tau, t("2022-02-10T10:00:00Z"), t("2022-02-10T13:00:00Z")),
        None
    );
    assert_eq!(s.sum(0, t("2022-02-04T03:00:00Z"), tau, tau + HOUR), None);
}

#[test]
fn nws_units_nulls_and_errors() {
    let doc = |uom: &str, values: &str| {
        format!(
            r#"{{"properties":{{"updateTime":"2022-02-04T03:15:41+00:00","x":{{"uom":"{uom}","values":[{values}]}}}}}}"#
        )
    };
    let vals = r#"{"validTime":"2022-02-04T00:00:00+00:00/PT6H","value":0.002},{"validTime":"2022-02-04T06:00:00+00:00/P1DT6H","value":null},{"validTime":"2022-02-05T12:00:00+00:00/PT6H","value":0.001}"#;
    let target = || ForecastTarget::Entity("g1".into());
    let f = parse_nws_gridpoint(&doc("wmoUnit:m", vals), "x", "qpf", target()).unwrap();
    // m → mm ×1000; the null P1DT6H interval (06Z → next day 12Z) is a gap.
    let day = t("2022-02-04T00:00:00Z");
    assert_eq!(f.intervals.len(), 2);
    assert_eq!(
        (f.intervals[0].start, f.intervals[0].end),
        (day, day + 6 * HOUR)
    );
    approx(f.intervals[0].value, 2.0);
    assert_eq!(f.intervals[1].start, day + 36 * HOUR);
    approx(f.intervals[1].value, 1.0);
    let err = parse_nws_gridpoint(&doc("wmoUnit:degC", vals), "x", "qpf", target()).unwrap_err();
    assert_eq!(
        err,
        ForecastError::Invalid {
            at: Location {
                path: Some("$.properties.x.uom".into()),
                ..Location::default()
            },
            problem: Problem::UnknownUnit("wmoUnit:degC".into()),
        }
    );
    assert!(err.to_string().contains("wmoUnit:degC"));
    let err = parse_nws_gridpoint(&doc("wmoUnit:mm", vals), "y", "qpf", target()).unwrap_err();
    assert_eq!(
        err.location().unwrap().path.as_deref(),
        Some("$.properties.y")
    );
    let bad = doc(
        "wmoUnit:mm",
        r#"{"validTime":"2022-02-04T00:00:00+00:00/6H","value":1}"#,
    );
    let err = parse_nws_gridpoint(&bad, "x", "qpf", target()).unwrap_err();
    assert_eq!(
        err.location().unwrap().path.as_deref(),
        Some("$.properties.x.values[0].validTime")
    );
    // The real file's percent layer parses too (34 intervals of mixed length).
    let pop = parse_nws_gridpoint(NWS, "probabilityOfPrecipitation", "pop", target()).unwrap();
    assert_eq!(pop.intervals.len(), 34);
    assert!(parse_nws_gridpoint(NWS, "temperature", "t", target()).is_err());
}

#[test]
fn config_section_loads_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg: ForecastSourceConfig = toml::from_str(
        r#"
name = "tae-qpf"
format = "nws-gridpoint"
path = "fixtures/nws-gridpoint/detailed_forecast.json"
feed = "qpf"
layer = "quantitativePrecipitation"
area = "Apalachicola"
received = "2022-02-04T03:40:00Z"
"#,
    )
    .unwrap();
    let out = cfg.load(&root).unwrap();
    assert_eq!(out.len(), 1);
    let f = out[0].as_ref().unwrap();
    assert_eq!(f.received, Some(t("2022-02-04T03:40:00Z")));
    assert_eq!(f.target, ForecastTarget::Area("Apalachicola".into()));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.jsonl"),
        "{\"issued\":\"2017-08-26T17:00:00Z\",\"intervals\":[]}\nnot json\n",
    )
    .unwrap();
    let cfg = ForecastSourceConfig {
        name: "local".into(),
        format: ForecastFormat::Jsonl,
        path: "f.jsonl".into(),
        feed: Some("qpf".into()),
        layer: None,
        area: None,
        entity: Some("g1".into()),
        received: None,
    };
    let out = cfg.load(dir.path()).unwrap();
    assert_eq!(
        out[0].as_ref().unwrap().target,
        ForecastTarget::Entity("g1".into())
    );
    let at = out[1].as_ref().unwrap_err().location().unwrap().clone();
    assert_eq!(
        (at.file, at.line),
        (Some(dir.path().join("f.jsonl")), Some(2))
    );
    // Section errors.
    let both = ForecastSourceConfig {
        area: Some("North".into()),
        ..cfg.clone()
    };
    assert!(matches!(
        both.load(dir.path()),
        Err(ForecastError::Config { .. })
    ));
    let missing = ForecastSourceConfig {
        path: "nope.jsonl".into(),
        ..cfg.clone()
    };
    assert!(matches!(
        missing.load(dir.path()),
        Err(ForecastError::Io { .. })
    ));
    let no_layer = ForecastSourceConfig {
        format: ForecastFormat::NwsGridpoint,
        ..cfg.clone()
    };
    assert!(matches!(
        no_layer.load(dir.path()),
        Err(ForecastError::Config { .. })
    ));
    // JSON Lines need no section feed when every line names its own; a line without one
    // is then an error of that line (missing field), not of the section.
    std::fs::write(
        dir.path().join("named.jsonl"),
        "{\"feed\":\"stage\",\"issued\":\"2017-08-26T17:00:00Z\",\"intervals\":[]}\n\
         {\"issued\":\"2017-08-26T17:00:00Z\",\"intervals\":[]}\n",
    )
    .unwrap();
    let unnamed = ForecastSourceConfig {
        path: "named.jsonl".into(),
        feed: None,
        ..cfg.clone()
    };
    let out = unnamed.load(dir.path()).unwrap();
    assert_eq!(out[0].as_ref().unwrap().feed, "stage");
    assert_eq!(
        out[1].as_ref().unwrap_err().location().unwrap().line,
        Some(2)
    );
    // An NWS layer needs the section's feed.
    let nws_no_feed = ForecastSourceConfig {
        format: ForecastFormat::NwsGridpoint,
        path: "fixtures/nws-gridpoint/detailed_forecast.json".into(),
        feed: None,
        layer: Some("quantitativePrecipitation".into()),
        area: Some("Apalachicola".into()),
        entity: None,
        ..cfg
    };
    match nws_no_feed.load(&root) {
        Err(ForecastError::Config { message, .. }) => {
            assert!(message.contains("`feed`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// A forecast for the property tests: whole hours from T0, `(gap, len, value)` steps.
fn arb_forecast(
    issued: i64,
    received: Option<i64>,
    start: i64,
    steps: &[(i64, i64, u8)],
) -> Arc<Forecast> {
    let mut at = start;
    let mut intervals = Vec::new();
    for &(gap, len, v) in steps {
        at += gap;
        intervals.push(iv(at, at + len, f64::from(v)));
        at += len;
    }
    fc(h(issued), received.map(|r| h(issued + r)), intervals)
}

/// The naive answer: scan forecasts newest first (as-of, issued, insertion), check every hour
/// cell of the window is inside an interval, and add value / length per cell.
fn oracle(
    forecasts: &[Arc<Forecast>],
    mode: AsOf,
    tau: Millis,
    from: Millis,
    to: Millis,
) -> Option<(f64, Millis)> {
    let mut order: Vec<usize> = (0..forecasts.len()).collect();
    order.sort_by_key(|&i| (forecasts[i].as_of(mode), forecasts[i].issued, i));
    'forecast: for &i in order.iter().rev() {
        let f = &forecasts[i];
        if f.as_of(mode) > tau || from >= to {
            continue;
        }
        let mut sum = 0.0;
        let mut cell = from;
        while cell < to {
            let Some(iv) = f
                .intervals
                .iter()
                .find(|iv| iv.start <= cell && cell + HOUR <= iv.end)
            else {
                continue 'forecast;
            };
            sum += iv.value * HOUR as f64 / (iv.end - iv.start) as f64;
            cell += HOUR;
        }
        return Some((sum, f.issued));
    }
    None
}

type Steps = Vec<(i64, i64, u8)>;

fn arb_forecasts() -> impl proptest::strategy::Strategy<Value = Vec<(i64, Option<i64>, i64, Steps)>>
{
    proptest::collection::vec(
        (
            0i64..20,
            proptest::option::of(0i64..5),
            0i64..12,
            proptest::collection::vec((0i64..3, 1i64..7, 0u8..13), 0..5),
        ),
        1..7,
    )
}

proptest::proptest! {
    /// The store picks the same forecast and sum as the naive scan, in both modes.
    #[test]
    fn store_matches_the_naive_scan(
        specs in arb_forecasts(),
        queries in proptest::collection::vec((0i64..30, 0i64..30, 1i64..10), 1..20),
        backtest in proptest::bool::ANY,
    ) {
        let mode = if backtest { AsOf::Issued } else { AsOf::Received };
        let forecasts: Vec<_> = specs
            .iter()
            .map(|(i, r, s, steps)| arb_forecast(*i, *r, *s, steps))
            .collect();
        let mut s = store(mode);
        for f in &forecasts {
            s.insert(3, f.clone()).unwrap();
        }
        for (tau, from, len) in queries {
            let (tau, from, to) = (h(tau), h(from), h(from + len));
            let got = s.sum(3, tau, from, to).map(|v| (v.value, v.issued));
            let want = oracle(&forecasts, mode, tau, from, to);
            match (got, want) {
                (Some((g, gi)), Some((w, wi))) => {
                    proptest::prop_assert!((g - w).abs() < 1e-9, "{} vs {}", g, w);
                    proptest::prop_assert_eq!(gi, wi);
                }
                (g, w) => proptest::prop_assert_eq!(g, w),
            }
        }
    }

    /// Pruning against a watermark never changes an answer the promise allows
    /// (τ ≥ watermark, window start ≥ watermark − keep_back).
    #[test]
    fn pruning_never_changes_an_allowed_answer(
        specs in arb_forecasts(),
        watermark in 0i64..20,
        keep_back in 0i64..4,
        queries in proptest::collection::vec((0i64..15, 0i64..15, 1i64..10), 1..20),
        prune_first in proptest::bool::ANY,
    ) {
        let config = StoreConfig { as_of: AsOf::Issued, keep_back: keep_back * HOUR, max_per_entity: 64 };
        let mut full = ForecastStore::new("qpf", config);
        let mut pruned = ForecastStore::new("qpf", config);
        if prune_first {
            pruned.set_watermark(h(watermark));
        }
        for (i, r, st, steps) in &specs {
            let f = arb_forecast(*i, *r, *st, steps);
            full.insert(0, f.clone()).unwrap();
            pruned.insert(0, f).unwrap();
        }
        pruned.set_watermark(h(watermark));
        pruned.prune();
        for (dt, back, len) in queries {
            let tau = h(watermark + dt);
            let from = h(watermark - keep_back + back);
            let to = from + len * HOUR;
            proptest::prop_assert_eq!(full.sum(0, tau, from, to), pruned.sum(0, tau, from, to));
            proptest::prop_assert_eq!(full.max(0, tau, from, to), pruned.max(0, tau, from, to));
        }
    }
}
