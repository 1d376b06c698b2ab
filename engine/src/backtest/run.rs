//! `forewarn backtest`: replay a configuration's inputs in event time through its rules and
//! score the warnings against a reference — the observed-only version of every rule, or a
//! ground-truth event list — with lead times, POD, FAR and CSI, as JSON and a self-contained
//! HTML report.
//!
//! Three passes over the inputs, each a plain replay (no history is written, no state is
//! kept):
//!
//! 1. the **candidate**: the rules as written, forecasts usable from their *issue* time;
//! 2. the **reference**: each rule reduced to its observed branches ([`observed_only`]) —
//!    skipped with `--truth`;
//! 3. a **traced** candidate replay for the few `(rule, entity)` pairs that are plotted: the
//!    values of every window the rule reads at every evaluation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forewarn_rules::ir::{BinOp, Expr, Millis, Plan, Unit};

use super::{
    level_segments, read_truth_file, render_html, score, BacktestError, BacktestReport,
    BtTransition, Levels, PlotInputs, PlotSeries, Reference,
};
use crate::config::RunConfig;
use crate::engine::{Engine, Reading};
use crate::forecast::AsOf;
use crate::record::{Evaluation, Rejection, Sink, StatusEvent, Warning};
use crate::run::{open_sources, replay_source, RunError};
use crate::source::{DeadLetter, ReplayOutput, ReplayTarget};

/// What to backtest and where the report goes.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    /// Ground-truth events (CSV or JSON Lines) instead of the observed-only reference.
    pub truth: Option<PathBuf>,
    /// Directory for `backtest.json` and `backtest.html`.
    pub out: PathBuf,
    /// How many `(rule, entity)` pairs to plot (the busiest: most events, misses and false
    /// alarms), besides those named in `entities`.
    pub plots: usize,
    /// Entities always plotted (for every scored rule that warned or had events for them).
    pub entities: Vec<String>,
    /// Print progress to stderr (every two seconds of a long pass).
    pub progress: bool,
    /// The command line, shown in the report.
    pub command: String,
}

/// What a backtest produced.
#[derive(Debug)]
pub struct BacktestOutcome {
    /// The scores.
    pub report: BacktestReport,
    /// The JSON report's path.
    pub json: PathBuf,
    /// The HTML report's path.
    pub html: PathBuf,
    /// Readings replayed (per pass).
    pub readings: u64,
    /// Seconds the three passes took.
    pub seconds: f64,
}

/// Errors of a backtest.
#[derive(Debug, thiserror::Error)]
pub enum BacktestRunError {
    /// Loading rules or inputs failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Scoring or rendering failed.
    #[error(transparent)]
    Backtest(#[from] BacktestError),
    /// Writing the report failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The observed-only version of a plan: every level keeps only the top-level `or` branches
/// of its condition that read no forecast and no projection; a level with none left is
/// removed (it is then not scored against the reference). Returns the plan and one note per
/// removed level.
pub fn observed_only(plan: &Plan) -> (Plan, Vec<String>) {
    let mut p = plan.clone();
    let mut notes = Vec::new();
    for rule in &mut p.rules {
        let mut keep = Vec::new();
        let mut cap = Vec::new();
        for (i, level) in rule.levels.iter().enumerate() {
            let observed: Vec<Expr> = level
                .when
                .disjuncts()
                .into_iter()
                .filter(|d| d.looks_ahead().is_none())
                .cloned()
                .collect();
            let Some(when) = observed
                .into_iter()
                .reduce(|a, b| Expr::Binary(BinOp::Or, Box::new(a), Box::new(b)))
            else {
                notes.push(format!(
                    "rule {} level {}: no observed branch, not scored against the reference",
                    rule.name, level.name
                ));
                continue;
            };
            let mut l = level.clone();
            l.when = when;
            keep.push(l);
            cap.push(rule.cap.get(i).cloned().flatten());
        }
        rule.levels = keep;
        rule.cap = cap;
    }
    (p, notes)
}

/// Run a backtest of `cfg`'s rules over `cfg`'s inputs.
pub fn backtest(
    cfg: &RunConfig,
    opts: &BacktestOptions,
) -> Result<BacktestOutcome, BacktestRunError> {
    let started = Instant::now();
    let loaded = crate::loader::load_rules(&cfg.rules, HashMap::new()).map_err(RunError::from)?;
    let plan = Arc::new(loaded.plan);
    let levels: Levels = plan
        .rules
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.levels.iter().map(|l| l.name.clone()).collect(),
            )
        })
        .collect();

    // 1. candidate
    let mut candidate = Collect::default();
    let run_end = replay_pass(cfg, &plan, "candidate rules", None, &mut candidate, opts)?;

    // 2. reference
    let (reference, mut notes) = match &opts.truth {
        Some(path) => (
            Reference::Truth(read_truth_file(path, Some(&cfg.display_zone))?),
            Vec::new(),
        ),
        None => {
            let (ref_plan, notes) = observed_only(&plan);
            let ref_levels: Levels = ref_plan
                .rules
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.levels.iter().map(|l| l.name.clone()).collect(),
                    )
                })
                .collect();
            let ref_plan = Arc::new(ref_plan);
            let mut reference = Collect::default();
            replay_pass(
                cfg,
                &ref_plan,
                "observed-only reference",
                None,
                &mut reference,
                opts,
            )?;
            (
                Reference::Run {
                    transitions: reference.transitions,
                    levels: ref_levels,
                },
                notes,
            )
        }
    };
    let mut report = score(&candidate.transitions, &levels, &reference, run_end)?;
    report.notes.append(&mut notes);
    if let Reference::Truth(events) = &reference {
        let mut unseen: Vec<&str> = events
            .iter()
            .filter(|e| !candidate.entities.contains(&e.entity))
            .map(|e| e.entity.as_str())
            .collect();
        unseen.sort_unstable();
        unseen.dedup();
        if !unseen.is_empty() {
            report.notes.push(format!(
                "truth events for entities with no reading in the input (counted as misses): {}",
                unseen.join(", ")
            ));
        }
        let late: usize = events.iter().filter(|e| e.start > run_end).count();
        if late > 0 {
            report.notes.push(format!(
                "{late} truth event(s) start after the input ends (counted as misses)"
            ));
        }
    }

    // 3. plots
    for e in &opts.entities {
        if !candidate.entities.contains(e) {
            report.notes.push(format!(
                "--entity {e}: no reading of this entity in the input; not plotted"
            ));
        }
    }
    let pairs = pick_plots(&report, opts, &candidate.entities);
    let mut traced = Collect {
        trace: pairs.iter().cloned().collect(),
        ..Collect::default()
    };
    if !pairs.is_empty() {
        replay_pass(
            cfg,
            &plan,
            "plotted entities (traced)",
            Some(()),
            &mut traced,
            opts,
        )?;
    }
    let ref_transitions: &[BtTransition] = match &reference {
        Reference::Run { transitions, .. } => transitions,
        Reference::Truth(_) => &[],
    };
    let ref_levels = match &reference {
        Reference::Run { levels, .. } => levels.clone(),
        Reference::Truth(_) => levels.clone(),
    };
    let cand_segments = level_segments(&candidate.transitions, &levels, run_end)?;
    let ref_segments = level_segments(ref_transitions, &ref_levels, run_end)?;
    let mut entities = Vec::new();
    for (rule, entity) in &pairs {
        let Some(r) = plan.rules.iter().find(|r| &r.name == rule) else {
            continue;
        };
        let mut series: Vec<(String, Vec<(Millis, f64)>)> = Vec::new();
        for &w in &r.windows {
            let node = &plan.windows[w];
            if node.unit == Unit::None && node.func == forewarn_rules::ir::WindowFunc::Missing {
                continue;
            }
            let pts = traced
                .series
                .get(&(rule.clone(), entity.clone(), w))
                .cloned()
                .unwrap_or_default();
            if !pts.is_empty() {
                series.push((format!("{} ({})", node.label, node.unit), pts));
            }
        }
        let thresholds = candidate
            .thresholds
            .get(&(rule.clone(), entity.clone()))
            .cloned()
            .unwrap_or_default();
        let seg = |s: &[super::LevelSegment]| {
            s.iter()
                .filter(|x| &x.rule == rule && &x.entity == entity)
                .map(|x| (x.start, x.end, x.level.clone()))
                .collect::<Vec<_>>()
        };
        let mut reference_bands = seg(&ref_segments);
        if let Reference::Truth(events) = &reference {
            reference_bands = events
                .iter()
                .filter(|e| &e.entity == entity && e.rule.as_ref().is_none_or(|r| r == rule))
                .map(|e| (e.start, e.end.unwrap_or(run_end), e.level.clone()))
                .collect();
        }
        entities.push(PlotSeries {
            entity: entity.clone(),
            title: format!("{rule} — {entity}"),
            series,
            thresholds,
            bands: seg(&cand_segments),
            reference: reference_bands,
        });
    }
    let plots = PlotInputs {
        title: format!("forewarn backtest — {}", cfg.rules.display()),
        subtitle: format!(
            "{} · reference: {} · {} readings, {} warning transitions",
            opts.command,
            match &opts.truth {
                Some(p) => format!("ground truth {}", p.display()),
                None => "observed-only rules".to_string(),
            },
            candidate.readings,
            candidate.transitions.len()
        ),
        entities,
    };
    let html = render_html(&report, &plots, &cfg.display_zone)?;
    let json = report.to_json()?;
    std::fs::create_dir_all(&opts.out).map_err(|source| BacktestRunError::Io {
        path: opts.out.display().to_string(),
        source,
    })?;
    let json_path = opts.out.join("backtest.json");
    let html_path = opts.out.join("backtest.html");
    for (p, text) in [(&json_path, &json), (&html_path, &html)] {
        std::fs::write(p, text).map_err(|source| BacktestRunError::Io {
            path: p.display().to_string(),
            source,
        })?;
    }
    Ok(BacktestOutcome {
        report,
        json: json_path,
        html: html_path,
        readings: candidate.readings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The `(rule, entity)` pairs to plot: named entities first, then the busiest pairs.
fn pick_plots(
    report: &BacktestReport,
    opts: &BacktestOptions,
    seen: &HashSet<String>,
) -> Vec<(String, String)> {
    let mut busy: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &report.by_entity {
        *busy.entry((e.rule.clone(), e.entity.clone())).or_default() +=
            e.score.events + e.score.false_alarms + e.score.misses;
    }
    // named entities: under every rule, busy or quiet, if the input has the entity at all
    let mut out: Vec<(String, String)> = Vec::new();
    for e in opts.entities.iter().filter(|e| seen.contains(*e)) {
        for rule in report.levels.keys() {
            out.push((rule.clone(), e.clone()));
        }
    }
    let named = out.len();
    let mut ranked: Vec<_> = busy.into_iter().filter(|(_, n)| *n > 0).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (pair, _) in ranked {
        if out.len() >= opts.plots + named {
            break;
        }
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// One replay of every source through `plan`; returns the run end (last event time).
fn replay_pass(
    cfg: &RunConfig,
    plan: &Arc<Plan>,
    what: &str,
    trace: Option<()>,
    sink: &mut Collect,
    opts: &BacktestOptions,
) -> Result<Millis, RunError> {
    let mut ecfg = cfg.engine.clone();
    ecfg.forecast_as_of = AsOf::Issued;
    ecfg.trace = trace.is_some();
    let mut engine = Engine::new(Arc::clone(plan), ecfg);
    sink.rule_names = plan.rules.iter().map(|r| r.name.clone()).collect();
    let (forecasts, bad) = crate::run::load_forecasts(cfg)?;
    sink.bad_forecasts += bad.len() as u64;
    for f in forecasts {
        // one that does not fit the rules is counted and skipped (`forewarn run` refuses it)
        if engine.push_forecast(f, sink).is_err() {
            sink.bad_forecasts += 1;
        }
    }
    let mut inputs = open_sources(cfg, plan)?;
    let mut target = Progress {
        engine: &mut engine,
        what,
        show: opts.progress,
        last: Instant::now(),
        readings: 0,
        zone: cfg.display_zone,
    };
    for (src, input) in cfg.sources.iter().zip(inputs.iter_mut()) {
        replay_source(&mut target, src, input, sink).map_err(|source| RunError::Io {
            what: "cannot read source",
            path: src.path.display().to_string(),
            source,
        })?;
    }
    let readings = target.readings;
    engine.finish(sink);
    sink.entities = engine
        .data_status()
        .into_iter()
        .map(|(entity, ..)| entity)
        .collect();
    sink.readings = readings;
    if opts.progress {
        eprintln!("backtest: {what}: {readings} readings replayed");
    }
    Ok(engine.max_event_time().unwrap_or(0))
}

/// The engine, reporting how far the replay has come.
struct Progress<'a> {
    engine: &'a mut Engine,
    what: &'a str,
    show: bool,
    last: Instant,
    readings: u64,
    zone: crate::time::Zone,
}

impl Progress<'_> {
    fn tick(&mut self, t: Millis) {
        if self.show && self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            eprintln!(
                "backtest: {}: {} readings, at {}",
                self.what,
                self.readings,
                self.zone.format(t)
            );
            let _ = std::io::stderr().flush();
        }
    }
}

impl ReplayTarget for Progress<'_> {
    fn plan(&self) -> &Plan {
        self.engine.plan()
    }
    fn count_source_rejection(&mut self, reason: crate::record::RejectReason) {
        self.engine.count_source_rejection(reason)
    }
    fn push(&mut self, r: &Reading<'_>, out: &mut dyn Sink) {
        self.readings += 1;
        let _ = self.engine.push(r, out);
        self.tick(r.ts);
    }
    fn push_batch(&mut self, readings: &[Reading<'_>], out: &mut dyn Sink) {
        self.readings += readings.len() as u64;
        self.engine.push_batch(readings, out);
        if let Some(r) = readings.first() {
            self.tick(r.ts);
        }
    }
    fn set_wall_clock(&mut self, now: Millis, out: &mut dyn Sink) {
        self.engine.set_wall_clock(now, out)
    }
}

/// Collects a pass's transitions (and, when tracing, the plotted windows).
#[derive(Default)]
struct Collect {
    transitions: Vec<BtTransition>,
    /// First thresholds seen per (rule, entity), for the plots.
    thresholds: HashMap<(String, String), Vec<(String, f64)>>,
    /// Pairs whose evaluations are kept.
    trace: HashSet<(String, String)>,
    series: HashMap<(String, String, usize), Vec<(Millis, f64)>>,
    rule_names: Vec<String>,
    /// Entities the pass saw.
    entities: HashSet<String>,
    readings: u64,
    dead_letters: u64,
    bad_forecasts: u64,
}

impl Sink for Collect {
    fn warning(&mut self, w: Warning) {
        let key = (w.rule.clone(), w.entity.clone());
        self.thresholds.entry(key).or_insert_with(|| {
            w.thresholds
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), (*v)?)))
                .collect()
        });
        self.transitions.push(BtTransition {
            rule: w.rule,
            entity: w.entity,
            time: w.event_time,
            kind: w.kind,
            from: w.from,
            to: w.to,
            branch: Some(w.branch.as_str().to_string()),
            expected_crossing: w.expected_crossing,
        });
    }
    fn status(&mut self, _s: StatusEvent) {}
    fn rejected(&mut self, _r: Rejection) {
        self.dead_letters += 1;
    }
    fn evaluated(&mut self, e: &Evaluation<'_>) {
        if self.trace.is_empty() {
            return;
        }
        let key = (e.rule.to_string(), e.entity.to_string());
        if !self.trace.contains(&key) {
            return;
        }
        for &(w, v) in e.windows {
            if let Some(v) = v {
                self.series
                    .entry((key.0.clone(), key.1.clone(), w))
                    .or_default()
                    .push((e.time, v));
            }
        }
    }
}

impl ReplayOutput for Collect {
    fn dead_letter(&mut self, _d: DeadLetter) {
        self.dead_letters += 1;
    }
}

/// Where the report of `config` goes by default: `out/backtest` beside the config's outputs.
pub fn default_out(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join("../out/backtest")
}

/// A plain-text summary of a backtest: per rule and level, then overall.
pub fn summary(o: &BacktestOutcome) -> String {
    use std::fmt::Write as _;
    let r = &o.report;
    let mut s = String::new();
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    let m = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0}"));
    let _ = writeln!(
        s,
        "{:<18} {:<10} {:>6} {:>5} {:>6} {:>6} {:>5} {:>5} {:>5} {:>11} {:>7}",
        "rule",
        "level",
        "events",
        "hits",
        "misses",
        "false",
        "POD",
        "FAR",
        "CSI",
        "median lead",
        "≥60 min"
    );
    let row = |s: &mut String, rule: &str, level: &str, sc: &super::Score| {
        let _ = writeln!(
            s,
            "{:<18} {:<10} {:>6} {:>5} {:>6} {:>6} {:>5} {:>5} {:>5} {:>7} min {:>7}",
            rule,
            level,
            sc.events,
            sc.hits,
            sc.misses,
            sc.false_alarms,
            f(sc.pod),
            f(sc.far),
            f(sc.csi),
            m(sc.lead.median),
            sc.lead
                .share_ge_60min
                .map_or("-".to_string(), |v| format!("{:.0} %", v * 100.0)),
        );
    };
    for rl in &r.by_rule_level {
        match (&rl.score, &rl.not_scored) {
            (Some(sc), _) => row(&mut s, &rl.rule, &rl.level, sc),
            (None, why) => {
                let _ = writeln!(
                    s,
                    "{:<18} {:<10} not scored: {}",
                    rl.rule,
                    rl.level,
                    why.as_deref().unwrap_or("-")
                );
            }
        }
    }
    row(&mut s, "overall", "", &r.overall);
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(
        s,
        "{} readings replayed per pass, 3 passes in {:.1} s\nreport: {}\n        {}",
        o.readings,
        o.seconds,
        o.html.display(),
        o.json.display()
    );
    s
}
