//! Forecast ingestion and storage (semantics.md, "Forecasts"; `docs/forecasts.md`).
//!
//! ```text
//!  JSON Lines ──parse_jsonl──┐
//!                            ├──▶ Forecast ──AreaMap::targets──▶ entity ids ──▶ ForecastStore::insert(slot, Arc)
//!  NWS gridpoint ──parse_nws_gridpoint──┘                                                │
//!                                         sum / max / max_rate_per_hour(slot, τ, from, to) ◀┘
//! ```
//!
//! * A [`Forecast`] is one issued message: a feed, a target (an entity or an area), an issue
//!   time, an optional arrival time and amounts over valid intervals `(start, end]`.
//! * [`ForecastStore`] keeps the forecasts of one feed per dense entity slot and answers "sum /
//!   max over `(from, to]` as known at τ" from the latest forecast usable at τ that covers the
//!   whole window, without allocating.
//! * [`parse_jsonl`] reads forewarn's native JSON Lines (one result per line, so bad lines can be
//!   dead-lettered), [`parse_nws_gridpoint`] one layer of an NWS API gridpoint forecast.
//! * [`ForecastSourceConfig`] is the `[[forecast]]` configuration section.

mod config;
mod parse;
mod store;

use std::fmt;
use std::path::PathBuf;

use forewarn_rules::ir::Millis;

use crate::time::TimeError;

pub use config::{ForecastFormat, ForecastSourceConfig};
pub use parse::{
    parse_forecast_json, parse_iso_duration, parse_jsonl, parse_nws_gridpoint, parse_valid_time,
    JsonlDefaults, Unit,
};
pub(crate) use store::StoreState;
pub use store::{AsOf, ForecastStore, ForecastValue, StoreConfig};

/// What a forecast is about: one entity, or an area that maps to entities ([`AreaMap`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ForecastTarget {
    /// One entity by id.
    Entity(String),
    /// An area (a group column value) standing for every entity in it.
    Area(String),
}

impl fmt::Display for ForecastTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForecastTarget::Entity(e) => write!(f, "entity {e:?}"),
            ForecastTarget::Area(a) => write!(f, "area {a:?}"),
        }
    }
}

/// One valid interval of a forecast: `value` is the amount over `(start, end]` (for a depth
/// feed, mm of rain in that interval; for a level feed, the level forecast for it).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForecastInterval {
    /// Exclusive start (UTC ms).
    pub start: Millis,
    /// Inclusive end (UTC ms); greater than `start`.
    pub end: Millis,
    /// The amount (canonical unit, mm for depths) or level; finite.
    pub value: f64,
}

/// One issued forecast message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Forecast {
    /// The feed it forecasts (e.g. `qpf`); a [`ForecastStore`] holds one feed.
    pub feed: String,
    /// The entity or area it is for.
    pub target: ForecastTarget,
    /// Issue time (UTC ms): when the forecaster published it.
    pub issued: Millis,
    /// Arrival time (UTC ms), when known; live stores use it as the forecast's as-of time.
    pub received: Option<Millis>,
    /// Valid intervals, sorted, non-empty each and non-overlapping; gaps allowed.
    pub intervals: Vec<ForecastInterval>,
}

impl Forecast {
    /// Check the interval invariants: every interval non-empty (`start < end`) with a finite
    /// value, sorted by start and non-overlapping (`start >= previous end`).
    pub fn validate(&self) -> Result<(), Problem> {
        let mut prev_end = None;
        for (index, iv) in self.intervals.iter().enumerate() {
            parse::check_interval(index, iv, prev_end)?;
            prev_end = Some(iv.end);
        }
        Ok(())
    }

    /// The forecast's as-of time in a mode: `issued` in backtests; in live mode `received`
    /// (or `issued` when it has none), never earlier than `issued`.
    pub fn as_of(&self, mode: AsOf) -> Millis {
        match (mode, self.received) {
            (AsOf::Received, Some(r)) => r.max(self.issued),
            _ => self.issued,
        }
    }
}

/// Where in the input a problem was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file, when known.
    pub file: Option<PathBuf>,
    /// The 1-based line (JSON Lines), when known.
    pub line: Option<usize>,
    /// The JSON path (`$.properties.updateTime`, `$.intervals[2].end`), when known.
    pub path: Option<String>,
}

impl Location {
    fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            wrote = true;
        }
        if let Some(line) = self.line {
            if wrote {
                write!(f, ":{line}")?;
            } else {
                write!(f, "line {line}")?;
            }
            wrote = true;
        }
        if let Some(path) = &self.path {
            if wrote {
                write!(f, " ")?;
            }
            write!(f, "at {path}")?;
            wrote = true;
        }
        if !wrote {
            write!(f, "forecast")?;
        }
        Ok(())
    }
}

/// What is wrong with a forecast message (see [`ForecastError::Invalid`] for where).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Not JSON (serde_json's message, with the column).
    #[error("not JSON: {0}")]
    Json(String),
    /// A required field is absent (or null).
    #[error("missing field")]
    Missing,
    /// A field of the wrong JSON type.
    #[error("expected {expected}")]
    Type {
        /// What was expected (`a string`, `an array`, `a number or null`).
        expected: &'static str,
    },
    /// A timestamp that does not parse.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// An ISO-8601 duration or interval that does not parse.
    #[error("not an ISO-8601 duration/interval: {text:?} ({why})")]
    Duration {
        /// The text.
        text: String,
        /// Why.
        why: &'static str,
    },
    /// A unit forewarn does not convert.
    #[error("unknown unit {0:?} (known: mm, cm, m, in; NWS wmoUnit:mm, wmoUnit:cm, wmoUnit:m, wmoUnit:percent)")]
    UnknownUnit(String),
    /// Both `area` and `entity`, or neither.
    #[error("{0}")]
    Target(&'static str),
    /// An interval with `start >= end`.
    #[error("interval {index} is empty: start {start} >= end {end}")]
    EmptyInterval {
        /// Index in the forecast's intervals.
        index: usize,
        /// Start (UTC ms).
        start: Millis,
        /// End (UTC ms).
        end: Millis,
    },
    /// An interval that starts before the previous one ends (overlapping or unsorted).
    #[error("interval {index} starts at {start}, before the previous interval ends ({previous_end}): intervals must be sorted and must not overlap")]
    Overlap {
        /// Index in the forecast's intervals.
        index: usize,
        /// Its start (UTC ms).
        start: Millis,
        /// The previous interval's end (UTC ms).
        previous_end: Millis,
    },
    /// An interval whose length does not fit in 64-bit milliseconds.
    #[error("interval {index} is too long")]
    TooLong {
        /// Index in the forecast's intervals.
        index: usize,
    },
    /// A NaN or infinite value.
    #[error("interval {index} has a value that is not finite")]
    NotFinite {
        /// Index in the forecast's intervals.
        index: usize,
    },
}

/// Errors of forecast parsing, area mapping, storage and loading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// A message that cannot be used, and where.
    #[error("{at}: {problem}")]
    Invalid {
        /// File, line and JSON path.
        at: Location,
        /// What is wrong.
        problem: Problem,
    },
    /// A forecast for an area the [`AreaMap`] does not know.
    #[error("unknown forecast area {0:?}")]
    UnknownArea(String),
    /// A forecast for an entity the [`AreaMap`] does not know.
    #[error("unknown forecast entity {0:?}")]
    UnknownEntity(String),
    /// A forecast of another feed inserted into a store.
    #[error("forecast of feed {got:?} inserted into the store of feed {expected:?}")]
    FeedMismatch {
        /// The store's feed.
        expected: String,
        /// The forecast's feed.
        got: String,
    },
    /// A forecast source file cannot be read.
    #[error("cannot read forecast file {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error as text (kept `Clone`).
        message: String,
    },
    /// A `[[forecast]]` section that makes no sense.
    #[error("forecast source {name:?}: {message}")]
    Config {
        /// The section's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl ForecastError {
    /// The problem's location, if it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ForecastError::Invalid { at, .. } => Some(at),
            _ => None,
        }
    }

    fn with_file(mut self, file: &std::path::Path) -> Self {
        if let ForecastError::Invalid { at, .. } = &mut self {
            at.file = Some(file.to_path_buf());
        }
        self
    }
}

/// Maps areas to the entities in them (built from `(entity, area)` pairs, e.g. a table's group
/// column) and checks entity targets.
#[derive(Debug, Clone, Default)]
pub struct AreaMap {
    areas: std::collections::HashMap<String, Vec<String>>,
    entities: std::collections::HashSet<String>,
}

impl AreaMap {
    /// An empty map.
    pub fn new() -> Self {
        AreaMap::default()
    }

    /// A map from `(entity, area)` pairs; an entity may be in several areas; duplicates are
    /// ignored.
    pub fn from_pairs<E, A>(pairs: impl IntoIterator<Item = (E, A)>) -> Self
    where
        E: Into<String>,
        A: Into<String>,
    {
        let mut map = AreaMap::new();
        for (e, a) in pairs {
            map.add(e.into(), a.into());
        }
        map
    }

    /// The areas of a plan: every entity (row key) of every table, in table row order, in the area its `group`
    /// columns hold (text as is, numbers as written by Rust: `3` for `3.0`). This is how the
    /// engine (and the daemon, routing area forecasts to shards) resolves an area target.
    pub fn from_plan(plan: &forewarn_rules::ir::Plan) -> Self {
        let mut map = AreaMap::new();
        for t in &plan.tables {
            for g in &t.groups {
                let Some(c) = t.column(g) else { continue };
                // in the table's row order: an area's entities are evaluated in a fixed order,
                // so a replay emits the same warnings in the same order every time
                let mut rows: Vec<(&String, usize)> = t.rows.iter().map(|(k, &r)| (k, r)).collect();
                rows.sort_unstable_by_key(|&(_, r)| r);
                for (key, row) in rows {
                    if let Some(Some(cell)) = t.cells[c].get(row) {
                        let area = match cell {
                            forewarn_rules::ir::Cell::Text(s) => s.clone(),
                            forewarn_rules::ir::Cell::Num(x) => x.to_string(),
                        };
                        map.add(key.clone(), area);
                    }
                }
            }
        }
        map
    }

    /// Put an entity in an area (and make it known).
    pub fn add(&mut self, entity: String, area: String) {
        let members = self.areas.entry(area).or_default();
        if !members.contains(&entity) {
            members.push(entity.clone());
        }
        self.entities.insert(entity);
    }

    /// Make an entity known without putting it in an area (it can still be a target).
    pub fn add_entity(&mut self, entity: String) {
        self.entities.insert(entity);
    }

    /// The entities a target stands for, in insertion order for an area; an error for an area
    /// or an entity the map does not know.
    pub fn targets<'a>(
        &'a self,
        target: &'a ForecastTarget,
    ) -> Result<&'a [String], ForecastError> {
        match target {
            ForecastTarget::Area(a) => self
                .areas
                .get(a)
                .map(Vec::as_slice)
                .ok_or_else(|| ForecastError::UnknownArea(a.clone())),
            ForecastTarget::Entity(e) if self.entities.contains(e) => Ok(std::slice::from_ref(e)),
            ForecastTarget::Entity(e) => Err(ForecastError::UnknownEntity(e.clone())),
        }
    }
}

#[cfg(test)]
mod tests;
