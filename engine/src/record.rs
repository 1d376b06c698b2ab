//! What the engine emits: warning transitions, data-status events and rejected readings.

use std::fmt;

use forewarn_rules::ir::Millis;
use serde::Serialize;

use crate::time::Zone;

/// Version of the warning record layout; bumped on any incompatible change.
pub const RECORD_SCHEMA_VERSION: u32 = 1;

/// The kind of a level transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionKind {
    /// From no level to a level.
    Raise,
    /// To a higher level.
    Escalate,
    /// To a lower level.
    Downgrade,
    /// From a level to none: the episode ends.
    Clear,
}

impl TransitionKind {
    /// All kinds, in a stable order.
    pub const ALL: [TransitionKind; 4] = [
        TransitionKind::Raise,
        TransitionKind::Escalate,
        TransitionKind::Downgrade,
        TransitionKind::Clear,
    ];

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Raise => "raise",
            TransitionKind::Escalate => "escalate",
            TransitionKind::Downgrade => "downgrade",
            TransitionKind::Clear => "clear",
        }
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of evidence raised a level: the branch of the level's condition that held.
///
/// A level's `when` is read as its top-level `or` branches. At a transition the engine
/// reports the first branch that holds, preferring one that reads only observations
/// (`observed`), then one that reads a forecast (`forecast`), then one that extrapolates
/// observations (`projected`). Clears are `observed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    /// The observations alone meet the level's criterion.
    #[default]
    Observed,
    /// A forecast carries the level (`forecast(...)`).
    Forecast,
    /// An extrapolation of the observations carries the level (`project(...)`).
    Projected,
}

impl Branch {
    /// The branch's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Observed => "observed",
            Branch::Forecast => "forecast",
            Branch::Projected => "projected",
        }
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Branch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "observed" => Ok(Branch::Observed),
            "forecast" => Ok(Branch::Forecast),
            "projected" => Ok(Branch::Projected),
            _ => Err(format!(
                "unknown branch `{s}` (observed, forecast, projected)"
            )),
        }
    }
}

/// Where a warning came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// SHA-256 of the rule source and tables.
    pub ruleset: String,
    /// forewarn version.
    pub engine: &'static str,
    /// [`RECORD_SCHEMA_VERSION`].
    pub schema: u32,
}

/// One level transition of one rule for one entity. Identified by `(rule, entity, seq)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// Rule name.
    pub rule: String,
    /// Entity id.
    pub entity: String,
    /// Sequence number of this transition for `(rule, entity)`, from 1.
    pub seq: u64,
    /// Raise, escalate, downgrade or clear.
    pub kind: TransitionKind,
    /// Level before.
    pub from: Option<String>,
    /// Level after.
    pub to: Option<String>,
    /// Event time: τ of the evaluation that made the transition (UTC ms).
    pub event_time: Millis,
    /// Wall-clock time of emission (UTC ms).
    pub emitted_at: Millis,
    /// A late reading caused it.
    pub late: bool,
    /// Its event time is far behind the wall clock (live mode only).
    pub delayed: bool,
    /// The rule's values at the evaluation (`let` bindings and window aggregations).
    pub values: Vec<(String, Option<f64>)>,
    /// The thresholds they were compared with (table cells).
    pub thresholds: Vec<(String, Option<f64>)>,
    /// The rendered message.
    pub message: String,
    /// The rendered `message LANG "…"` templates, `(language, text)`, in declaration order.
    pub messages: Vec<(String, String)>,
    /// Which branch of the level's condition holds (see [`Branch`]).
    pub branch: Branch,
    /// For a forecast or projected branch: when the looked-ahead value is expected to reach
    /// the level's threshold (the shortest horizon at which the branch holds).
    pub expected_crossing: Option<Millis>,
    /// The rule is `shadow`: recorded, never published (CAP).
    pub shadow: bool,
    /// Rule set, engine and schema versions.
    pub provenance: Provenance,
}

/// Data status of one entity's feed, by sample age only (semantics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataStatus {
    /// No accepted sample yet.
    Unknown,
    /// Samples arrive within the staleness budget.
    Ok,
    /// No sample within the staleness budget.
    Stale,
    /// No sample within the offline budget.
    Offline,
}

impl DataStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataStatus::Unknown => "unknown",
            DataStatus::Ok => "ok",
            DataStatus::Stale => "stale",
            DataStatus::Offline => "offline",
        }
    }
}

/// A change of data status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvent {
    /// Entity id.
    pub entity: String,
    /// Feed name.
    pub feed: String,
    /// Status before.
    pub from: DataStatus,
    /// Status after.
    pub to: DataStatus,
    /// Event time of the change.
    pub time: Millis,
    /// Event time of the newest accepted sample, if any.
    pub last_sample: Option<Millis>,
}

/// Why a reading was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// NaN or ±infinity.
    NotFinite,
    /// Outside the feed's declared range.
    OutOfRange,
    /// A value that is not a number.
    NotNumeric,
    /// A number sent as a string to a `strict` feed.
    StrictString,
    /// Older than the acceptance horizon.
    TooLate,
    /// Ahead of the wall clock by more than the future skew.
    FutureDated,
    /// Behind the wall clock by more than the maximum age.
    StaleDated,
    /// An entity not in any table while the config demands known entities.
    UnknownEntity,
    /// A feed the rules do not declare.
    UnknownFeed,
    /// A payload or line that cannot be decoded.
    Malformed,
    /// A required field (entity, timestamp, value) is missing.
    MissingField,
    /// A timestamp without a UTC offset and no zone configured.
    NoOffset,
    /// A timestamp that cannot be read.
    BadTimestamp,
    /// A payload larger than the configured maximum.
    TooLarge,
    /// An MQTT message on a topic no subscription template matches (e.g. left over in a
    /// persistent session from an earlier configuration).
    UnknownTopic,
}

impl RejectReason {
    /// Every reason, in a stable order.
    pub const ALL: [RejectReason; 15] = [
        RejectReason::NotFinite,
        RejectReason::OutOfRange,
        RejectReason::NotNumeric,
        RejectReason::StrictString,
        RejectReason::TooLate,
        RejectReason::FutureDated,
        RejectReason::StaleDated,
        RejectReason::UnknownEntity,
        RejectReason::UnknownFeed,
        RejectReason::Malformed,
        RejectReason::MissingField,
        RejectReason::NoOffset,
        RejectReason::BadTimestamp,
        RejectReason::TooLarge,
        RejectReason::UnknownTopic,
    ];

    /// The reason's name, as counted and dead-lettered.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotFinite => "not_finite",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::NotNumeric => "not_numeric",
            RejectReason::StrictString => "strict_string",
            RejectReason::TooLate => "too_late",
            RejectReason::FutureDated => "future_dated",
            RejectReason::StaleDated => "stale_dated",
            RejectReason::UnknownEntity => "unknown_entity",
            RejectReason::UnknownFeed => "unknown_feed",
            RejectReason::Malformed => "malformed",
            RejectReason::MissingField => "missing_field",
            RejectReason::NoOffset => "no_offset",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnknownTopic => "unknown_topic",
        }
    }

    /// Index into [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reading the engine refused (semantic checks: range, finiteness, lateness, clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// Entity id.
    pub entity: String,
    /// Feed name.
    pub feed: String,
    /// Event time.
    pub ts: Millis,
    /// The value as received (canonical units for numbers).
    pub value: String,
    /// A human-readable explanation.
    pub detail: String,
    /// The caller's tag of the reading (e.g. its line number), to locate it.
    pub tag: u64,
}

/// Everything the engine emits, in emission order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A level transition.
    Warning(Warning),
    /// A data-status change.
    Status(StatusEvent),
    /// A rejected reading.
    Rejected(Rejection),
}

/// Why the engine evaluated an entity's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalCause {
    /// One or more readings of the entity were applied (data-driven).
    Reading,
    /// A deadline passed: a sample leaving a window, a `for` / `clear after` timer, staleness
    /// (time-driven).
    Deadline,
    /// A forecast for the entity became usable.
    Forecast,
}

/// One rule evaluated for one entity, reported to [`Sink::evaluated`] only when
/// [`EngineConfig::trace`](crate::EngineConfig::trace) is on. It says what the rule saw, so
/// a run can be checked against an independent computation evaluation by evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// Index of the rule in the plan.
    pub rule_index: usize,
    /// Entity id as given in the readings.
    pub entity: &'a str,
    /// Evaluation time (the entity's evaluation time τ).
    pub time: Millis,
    /// Data- or time-driven.
    pub cause: EvalCause,
    /// The windows the rule reads (plan window ids, in the rule's order) and their values at
    /// `time`; `None` where a window has no value (e.g. `max` of an empty window).
    pub windows: &'a [(usize, Option<f64>)],
    /// The rule's level after this evaluation (`None`: no active warning).
    pub level: Option<&'a str>,
}

/// Receives the engine's output. Implemented for `Vec<Output>` (collect, then iterate) and
/// for closures via [`FnSink`].
pub trait Sink {
    /// A level transition.
    fn warning(&mut self, w: Warning);
    /// A data-status change.
    fn status(&mut self, s: StatusEvent);
    /// A reading rejected by the engine.
    fn rejected(&mut self, r: Rejection);
    /// A rule evaluation (only with [`EngineConfig::trace`](crate::EngineConfig::trace) on);
    /// ignored by default.
    fn evaluated(&mut self, _e: &Evaluation<'_>) {}
}

impl Sink for Vec<Output> {
    fn warning(&mut self, w: Warning) {
        self.push(Output::Warning(w));
    }
    fn status(&mut self, s: StatusEvent) {
        self.push(Output::Status(s));
    }
    fn rejected(&mut self, r: Rejection) {
        self.push(Output::Rejected(r));
    }
}

/// A [`Sink`] that hands every output to a closure.
pub struct FnSink<F: FnMut(Output)>(pub F);

impl<F: FnMut(Output)> fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSink")
    }
}

impl<F: FnMut(Output)> Sink for FnSink<F> {
    fn warning(&mut self, w: Warning) {
        (self.0)(Output::Warning(w))
    }
    fn status(&mut self, s: StatusEvent) {
        (self.0)(Output::Status(s))
    }
    fn rejected(&mut self, r: Rejection) {
        (self.0)(Output::Rejected(r))
    }
}

impl Warning {
    /// The record as JSON, times in UTC (`time`) and in the display zone (`local_time`).
    pub fn to_json(&self, zone: &Zone) -> serde_json::Value {
        let map = |v: &[(String, Option<f64>)]| {
            serde_json::Value::Object(
                v.iter()
                    .map(|(k, x)| {
                        (
                            k.clone(),
                            x.map_or(serde_json::Value::Null, |x| serde_json::json!(round9(x))),
                        )
                    })
                    .collect(),
            )
        };
        serde_json::json!({
            "schema": RECORD_SCHEMA_VERSION,
            "rule": self.rule,
            "entity": self.entity,
            "seq": self.seq,
            "kind": self.kind,
            "from": self.from,
            "to": self.to,
            "time": Zone::default().format(self.event_time).replace("+00:00", "Z"),
            "local_time": zone.format(self.event_time),
            "emitted_at": Zone::default().format(self.emitted_at).replace("+00:00", "Z"),
            "late": self.late,
            "delayed": self.delayed,
            "values": map(&self.values),
            "thresholds": map(&self.thresholds),
            "message": self.message,
            "messages": serde_json::Value::Object(
                self.messages
                    .iter()
                    .map(|(l, m)| (l.clone(), serde_json::Value::String(m.clone())))
                    .collect(),
            ),
            "branch": self.branch,
            "expected_crossing": self.expected_crossing.map(|t| zone.format(t)),
            "shadow": self.shadow,
            "provenance": self.provenance,
        })
    }
}

impl StatusEvent {
    /// The event as JSON.
    pub fn to_json(&self, zone: &Zone) -> serde_json::Value {
        serde_json::json!({
            "schema": RECORD_SCHEMA_VERSION,
            "entity": self.entity,
            "feed": self.feed,
            "from": self.from,
            "status": self.to,
            "time": Zone::default().format(self.time).replace("+00:00", "Z"),
            "local_time": zone.format(self.time),
            "last_sample": self.last_sample.map(|t| zone.format(t)),
        })
    }
}

/// Round away binary noise for display (values are exact in micro-units anyway).
fn round9(x: f64) -> f64 {
    if x.abs() < 1e9 {
        (x * 1e9).round() / 1e9
    } else {
        x
    }
}
