//! Backtest scoring: warning transitions from a replay against reference events.
//!
//! A replay of candidate rules yields [`BtTransition`]s; a reference says when the condition
//! really held — either the transitions of a *reference* run (each rule in an observed-only
//! version) or a ground-truth file ([`truth`]). [`score`] turns both into spans per level,
//! matches them and counts hits, misses and false alarms, with lead times, per rule and level,
//! per entity and overall ([`BacktestReport`]). [`render_html`] renders one self-contained HTML
//! page with SVG plots. The definitions are in `docs/backtest.md`.
//!
//! ```text
//!  candidate transitions ─┐                        ┌─▶ BacktestReport ─▶ to_json()
//!                         ├─ spans at ≥ L ─ match ─┤
//!  reference (run|truth) ─┘                        └─▶ render_html(report, plots, zone)
//! ```

use std::collections::BTreeMap;

use forewarn_rules::ir::Millis;
use serde::Serialize;

use crate::record::TransitionKind;

mod html;
mod plot;
pub mod run;
mod score;
mod spans;
mod stats;
#[cfg(test)]
mod tests;
pub mod truth;

pub use html::render_html;
pub use score::score;
pub use spans::{level_segments, LevelSegment};
pub use stats::LeadStats;
pub use truth::{parse_truth, read_truth_file, TruthEvent, TruthFormat};

/// One minute in milliseconds.
const MINUTE: Millis = 60_000;

/// Each rule's levels, lowest first (rule name → level names).
pub type Levels = BTreeMap<String, Vec<String>>;

/// One level transition of one rule for one entity, as the backtest reads it.
///
/// Transitions are read per `(rule, entity)` in time order (a stable sort by `time` is applied,
/// so transitions at the same instant keep their given order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtTransition {
    /// Rule name.
    pub rule: String,
    /// Entity id.
    pub entity: String,
    /// Event time of the transition (UTC ms).
    pub time: Millis,
    /// Raise, escalate, downgrade or clear.
    pub kind: TransitionKind,
    /// Level before (`None`: no level).
    pub from: Option<String>,
    /// Level after (`None`: no level; the episode ends).
    pub to: Option<String>,
    /// The branch of the rule that fired (e.g. `forecast` or `observed`), if known.
    pub branch: Option<String>,
    /// The crossing time the forecast branch expected, if any.
    pub expected_crossing: Option<Millis>,
}

/// What the candidate run is scored against.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// The transitions of a reference run (observed-only versions of the rules, under the
    /// same rule names). A rule missing here, or a level its reference rule lacks, is not
    /// scored.
    Run {
        /// The reference run's transitions.
        transitions: Vec<BtTransition>,
        /// The reference rules' levels, lowest first.
        levels: Levels,
    },
    /// Ground-truth events ([`truth`]); every level of every candidate rule is scored.
    Truth(Vec<TruthEvent>),
}

/// Why a backtest could not be scored or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BacktestError {
    /// A transition names a rule that has no level list.
    #[error("{source_name} transition for rule {rule:?}: the rule has no level list")]
    UnknownRule {
        /// `candidate` or `reference`.
        source_name: &'static str,
        /// The rule.
        rule: String,
    },
    /// A transition names a level its rule does not have.
    #[error(
        "{source_name} transition for rule {rule:?}, entity {entity:?}: unknown level {level:?}"
    )]
    UnknownLevel {
        /// `candidate` or `reference`.
        source_name: &'static str,
        /// The rule.
        rule: String,
        /// The entity.
        entity: String,
        /// The level.
        level: String,
    },
    /// A ground-truth file could not be read.
    #[error("truth file, record {record}: {message}")]
    Truth {
        /// The 1-based record (CSV data row or JSON line; 0 for the header).
        record: usize,
        /// What is wrong.
        message: String,
    },
    /// A ground-truth file could not be opened.
    #[error("cannot read truth file {path}: {source}")]
    TruthIo {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw plot {plot:?}: {message}")]
    Plot {
        /// Which plot.
        plot: String,
        /// The drawing error.
        message: String,
    },
    /// The report could not be serialized.
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Hits, misses, false alarms and scores of one group (an entity, a rule and level, a level,
/// or everything).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Reference events (`hits + misses`).
    pub events: usize,
    /// Reference events intersected by a candidate span (H).
    pub hits: usize,
    /// Reference events no candidate span intersects (M).
    pub misses: usize,
    /// Candidate spans that intersect no reference event (F).
    pub false_alarms: usize,
    /// Candidate spans (W).
    pub warnings: usize,
    /// Probability of detection H / (H + M); `None` without events.
    pub pod: Option<f64>,
    /// False-alarm ratio F / W; `None` without warnings.
    pub far: Option<f64>,
    /// Critical success index H / (H + M + F); `None` when all three are 0.
    pub csi: Option<f64>,
    /// Lead times of the hits.
    pub lead: LeadStats,
}

/// Scores of one rule at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleLevelScore {
    /// The rule.
    pub rule: String,
    /// The level (spans at ≥ this level are scored).
    pub level: String,
    /// `None` when this level is not scored (`not_scored` says why).
    pub score: Option<Score>,
    /// Why the level is not scored (e.g. the reference rule lacks it).
    pub not_scored: Option<String>,
}

/// Scores of one level name over every rule that has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelScore {
    /// The level.
    pub level: String,
    /// The pooled scores.
    pub score: Score,
}

/// Scores of one entity for one rule at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityScore {
    /// The rule.
    pub rule: String,
    /// The level.
    pub level: String,
    /// The entity.
    pub entity: String,
    /// Its scores.
    pub score: Score,
}

/// One reference event at ≥ a level, and how the candidate did on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventOutcome {
    /// The rule.
    pub rule: String,
    /// The level (the event is a maximal interval at ≥ this level).
    pub level: String,
    /// The entity.
    pub entity: String,
    /// Event start.
    #[serde(serialize_with = "ser_time")]
    pub start: Millis,
    /// Event end; `None` while ongoing (truth file without an end, or a reference span still
    /// active at the run end).
    #[serde(serialize_with = "ser_opt_time")]
    pub end: Option<Millis>,
    /// Some candidate span at ≥ the level intersects it.
    pub hit: bool,
    /// Start of the earliest intersecting candidate span.
    #[serde(serialize_with = "ser_opt_time")]
    pub warned_at: Option<Millis>,
    /// Lead time in minutes: event start − `warned_at` (negative: late).
    pub lead_min: Option<f64>,
}

/// One candidate span at ≥ a level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanOutcome {
    /// The rule.
    pub rule: String,
    /// The level.
    pub level: String,
    /// The entity.
    pub entity: String,
    /// Span start (the transition that took the level to ≥ `level`).
    #[serde(serialize_with = "ser_time")]
    pub start: Millis,
    /// Span end (the transition that took it below, or the run end when `open`).
    #[serde(serialize_with = "ser_time")]
    pub end: Millis,
    /// Still active at the run end.
    pub open: bool,
    /// Reference events it intersects (0: a false alarm).
    pub matched_events: usize,
}

/// A reference event an episode was credited with (the episode holds the earliest
/// intersecting candidate span).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeHit {
    /// The level at which the event was hit.
    pub level: String,
    /// Event start.
    #[serde(serialize_with = "ser_time")]
    pub event_start: Millis,
    /// Lead time in minutes (negative: late).
    pub lead_min: f64,
}

/// One candidate episode: raise … clear of one rule for one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    /// The rule.
    pub rule: String,
    /// The entity.
    pub entity: String,
    /// The highest level reached.
    pub peak: String,
    /// Time of the raise.
    #[serde(serialize_with = "ser_time")]
    pub start: Millis,
    /// Time of the clear, or the run end when `open`.
    #[serde(serialize_with = "ser_time")]
    pub end: Millis,
    /// Not cleared by the run end.
    pub open: bool,
    /// The branch of the raise.
    pub branch: Option<String>,
    /// The crossing time the raise expected, if any.
    #[serde(serialize_with = "ser_opt_time")]
    pub expected_crossing: Option<Millis>,
    /// Reference events this episode warned of first, with their lead times.
    pub hits: Vec<EpisodeHit>,
}

/// Peak levels of one entity for one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityPeak {
    /// The rule.
    pub rule: String,
    /// The entity.
    pub entity: String,
    /// Highest candidate level reached (`None`: never warned).
    pub candidate: Option<String>,
    /// Highest reference level reached (`None`: no reference event).
    pub reference: Option<String>,
}

/// Everything a backtest found. Times serialize as RFC 3339 UTC, lead times in minutes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    /// `run` (a reference run) or `truth` (a ground-truth file).
    pub reference_kind: &'static str,
    /// End of the replay: spans still active then end here and are marked open.
    #[serde(serialize_with = "ser_time")]
    pub run_end: Millis,
    /// Each candidate rule's levels, lowest first.
    pub levels: Levels,
    /// Over every scored rule and level.
    pub overall: Score,
    /// Per rule and level (in rule order, levels lowest first), scored or not.
    pub by_rule_level: Vec<RuleLevelScore>,
    /// Per level name, pooled over the rules that have it.
    pub by_level: Vec<LevelScore>,
    /// Per rule, level and entity (entities with an event or a warning at that level).
    pub by_entity: Vec<EntityScore>,
    /// Peak candidate and reference level per rule and entity.
    pub peaks: Vec<EntityPeak>,
    /// Every reference event of a scored level.
    pub events: Vec<EventOutcome>,
    /// Every candidate span of a scored level.
    pub spans: Vec<SpanOutcome>,
    /// Candidate episodes.
    pub episodes: Vec<Episode>,
    /// Things the scorer skipped (e.g. truth rows naming an unknown rule or level).
    pub notes: Vec<String>,
}

impl BacktestReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, BacktestError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The score of `rule` at `level`, if scored.
    pub fn rule_level(&self, rule: &str, level: &str) -> Option<&Score> {
        self.by_rule_level
            .iter()
            .find(|r| r.rule == rule && r.level == level)
            .and_then(|r| r.score.as_ref())
    }

    /// The score of `entity` for `rule` at `level`, if it had an event or a warning there.
    pub fn entity(&self, rule: &str, level: &str, entity: &str) -> Option<&Score> {
        self.by_entity
            .iter()
            .find(|e| e.rule == rule && e.level == level && e.entity == entity)
            .map(|e| &e.score)
    }
}

/// Inputs for the HTML report's header and time-series plots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotInputs {
    /// Page title (e.g. the command that ran the backtest).
    pub title: String,
    /// A line under the title (e.g. the config summary).
    pub subtitle: String,
    /// Entities to plot, in order.
    pub entities: Vec<PlotSeries>,
}

/// One entity's time-series plot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotSeries {
    /// The entity.
    pub entity: String,
    /// Plot caption.
    pub title: String,
    /// Lines: label (with its unit in parentheses, e.g. `rain 1 h (mm)`) and points.
    pub series: Vec<(String, Vec<(Millis, f64)>)>,
    /// Horizontal dashed threshold lines: label and value.
    pub thresholds: Vec<(String, f64)>,
    /// Candidate warning bands `(start, end, level)`, drawn behind the lines.
    pub bands: Vec<(Millis, Millis, String)>,
    /// Reference events `(start, end, level)`, drawn as a thin bar along the bottom.
    pub reference: Vec<(Millis, Millis, String)>,
}

fn fmt_utc(t: Millis) -> String {
    crate::time::Zone::default()
        .format(t)
        .replace("+00:00", "Z")
}

fn ser_time<S: serde::Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_utc(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&fmt_utc(*t)),
        None => s.serialize_none(),
    }
}
