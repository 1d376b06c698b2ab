//! Writes an example backtest report to `/tmp/backtest-example.html` (and the first entity's
//! plot to `/tmp/backtest-example.svg`) from a made-up storm over three rain gauges.
//!
//! ```text
//! cargo run -p forewarn-engine --no-default-features --example backtest_report [OUT.html]
//! ```
//!
//! The candidate rule warns on `max(observed 3 h rain, forecast 3 h rain an hour ahead)`; the
//! reference is its observed-only version. Gauge G3's forecast overshoots (false alarms), G2's
//! reads its observations 15 minutes late (late warnings).

use forewarn_engine::backtest::{
    level_segments, render_html, score, BtTransition, Levels, PlotInputs, PlotSeries, Reference,
};
use forewarn_engine::time::Zone;
use forewarn_engine::TransitionKind;

/// 2017-08-26T00:00:00Z.
const T0: i64 = 1_503_705_600_000;
const STEP: i64 = 5 * 60_000;
const N: usize = 288; // 24 h of 5-minute steps
const RULE: &str = "heavy_rain";
const LEVELS: [&str; 3] = ["yellow", "orange", "red"];
const THRESHOLDS: [f64; 3] = [50.0, 80.0, 120.0]; // mm in 3 h

/// Rain in mm per 5 minutes: a few storm cells `(centre step, peak mm/5 min, width steps)`.
fn rain(cells: &[(f64, f64, f64)]) -> Vec<f64> {
    (0..N)
        .map(|i| {
            cells
                .iter()
                .map(|(c, p, w)| p * (-((i as f64 - c) / w).powi(2)).exp())
                .sum()
        })
        .collect()
}

/// Sum of the last `k` samples at each step.
fn accumulate(r: &[f64], k: usize) -> Vec<f64> {
    (0..r.len())
        .map(|i| r[i.saturating_sub(k - 1)..=i].iter().sum())
        .collect()
}

fn level_of(v: f64) -> Option<usize> {
    THRESHOLDS.iter().rposition(|&t| v >= t)
}

/// Transitions of a level sequence.
fn transitions(
    entity: &str,
    levels: &[Option<usize>],
    branch: impl Fn(usize) -> (Option<String>, Option<i64>),
) -> Vec<BtTransition> {
    let mut out = Vec::new();
    let mut cur = None;
    for (i, &l) in levels.iter().enumerate() {
        if l == cur {
            continue;
        }
        let kind = match (cur, l) {
            (None, _) => TransitionKind::Raise,
            (_, None) => TransitionKind::Clear,
            (Some(a), Some(b)) if b > a => TransitionKind::Escalate,
            _ => TransitionKind::Downgrade,
        };
        let (branch, expected_crossing) = if kind == TransitionKind::Raise {
            branch(i)
        } else {
            (None, None)
        };
        out.push(BtTransition {
            rule: RULE.to_string(),
            entity: entity.to_string(),
            time: T0 + i as i64 * STEP,
            kind,
            from: cur.map(|c: usize| LEVELS[c].to_string()),
            to: l.map(|c| LEVELS[c].to_string()),
            branch,
            expected_crossing,
        });
        cur = l;
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/backtest-example.html".to_string());
    let zone: Zone = "America/Chicago".parse()?;
    let levels: Levels = [(RULE.to_string(), LEVELS.map(String::from).to_vec())].into();
    let run_end = T0 + N as i64 * STEP;

    // (entity, storm cells, forecast bias)
    let gauges = [
        ("G1", vec![(120.0, 9.0, 14.0), (200.0, 6.0, 10.0)], 1.0),
        ("G2", vec![(150.0, 5.5, 16.0)], 1.0),
        ("G3", vec![(90.0, 3.0, 12.0), (230.0, 2.5, 8.0)], 1.6),
    ];
    let lead_steps = 12; // the forecast sees an hour ahead
    let mut candidate = Vec::new();
    let mut reference = Vec::new();
    let mut plots = Vec::new();
    for (entity, cells, bias) in &gauges {
        let r = rain(cells);
        let (h1, h3, h24) = (accumulate(&r, 12), accumulate(&r, 36), accumulate(&r, 288));
        let forecast: Vec<f64> = (0..N)
            .map(|i| h3[(i + lead_steps).min(N - 1)] * bias)
            .collect();
        let observed: Vec<Option<usize>> = h3.iter().map(|&v| level_of(v)).collect();
        // G2's candidate sees its observations 15 minutes late and has no forecast: late.
        let late = *entity == "G2";
        let warned: Vec<Option<usize>> = (0..N)
            .map(|i| match late {
                true => level_of(h3[i.saturating_sub(3)]),
                false => level_of(h3[i].max(forecast[i])),
            })
            .collect();
        candidate.extend(transitions(entity, &warned, |i| {
            if level_of(h3[i]) >= warned[i] {
                (Some("observed".to_string()), None)
            } else {
                (
                    Some("forecast".to_string()),
                    Some(T0 + (i + lead_steps) as i64 * STEP),
                )
            }
        }));
        reference.extend(transitions(entity, &observed, |_| {
            (Some("observed".to_string()), None)
        }));
        let pts = |v: &[f64]| -> Vec<(i64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, &x)| (T0 + i as i64 * STEP, (x * 10.0).round() / 10.0))
                .collect()
        };
        plots.push(PlotSeries {
            entity: entity.to_string(),
            title: format!("{entity}: accumulated rain, rule {RULE}"),
            series: vec![
                ("rain 1 h (mm)".to_string(), pts(&h1)),
                ("rain 3 h (mm)".to_string(), pts(&h3)),
                ("forecast 3 h, +1 h (mm)".to_string(), pts(&forecast)),
                ("rain 24 h (mm)".to_string(), pts(&h24)),
            ],
            thresholds: LEVELS
                .iter()
                .zip(THRESHOLDS)
                .map(|(l, t)| (format!("{l} ≥ {t} mm / 3 h"), t))
                .collect(),
            bands: Vec::new(),
            reference: Vec::new(),
        });
    }

    let report = score(
        &candidate,
        &levels,
        &Reference::Run {
            transitions: reference.clone(),
            levels: levels.clone(),
        },
        run_end,
    )?;
    let cand_seg = level_segments(&candidate, &levels, run_end)?;
    let ref_seg = level_segments(&reference, &levels, run_end)?;
    for p in &mut plots {
        p.bands = cand_seg
            .iter()
            .filter(|s| s.entity == p.entity)
            .map(|s| (s.start, s.end, s.level.clone()))
            .collect();
        p.reference = ref_seg
            .iter()
            .filter(|s| s.entity == p.entity)
            .map(|s| (s.start, s.end, s.level.clone()))
            .collect();
    }
    let inputs = PlotInputs {
        title: "forewarn backtest — example storm".to_string(),
        subtitle: format!(
            "candidate: {RULE} (observed ∪ forecast 1 h ahead); reference: observed only; \
             thresholds {THRESHOLDS:?} mm / 3 h; zone {zone}"
        ),
        entities: plots,
    };
    let html = render_html(&report, &inputs, &zone)?;
    std::fs::write(&out, &html)?;
    if let (Some(a), Some(b)) = (html.find("<svg"), html.find("</svg>")) {
        // The histogram comes first; the first entity's plot is the second SVG.
        let rest = &html[b + 6..];
        let svg = match (rest.find("<svg"), rest.find("</svg>")) {
            (Some(c), Some(d)) => &rest[c..d + 6],
            _ => &html[a..b + 6],
        };
        std::fs::write("/tmp/backtest-example.svg", svg)?;
    }
    std::fs::write("/tmp/backtest-example.json", report.to_json()?)?;
    println!(
        "wrote {out}: {} events, {} hits, {} misses, {} false alarms, median lead {:?} min",
        report.overall.events,
        report.overall.hits,
        report.overall.misses,
        report.overall.false_alarms,
        report.overall.lead.median
    );
    Ok(())
}
