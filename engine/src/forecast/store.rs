//! Per-entity forecast storage and the as-of queries rules make.

use std::sync::Arc;

use forewarn_rules::ir::{Millis, HOUR};
use serde::{Deserialize, Serialize};

use super::{Forecast, ForecastError, ForecastInterval, Location};

/// Which time makes a forecast usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AsOf {
    /// Live: from its arrival (`received`; `issued` when it has none, and never before
    /// `issued`).
    #[default]
    Received,
    /// Backtests: from its issue time.
    Issued,
}

/// Store settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Which time makes a forecast usable.
    pub as_of: AsOf,
    /// How far before the watermark a query window may start (queries promise
    /// `from >= watermark - keep_back`); forecasts with nothing after that are dropped.
    pub keep_back: Millis,
    /// At most this many forecasts per entity (at least 1); the oldest by as-of go first.
    pub max_per_entity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            as_of: AsOf::Received,
            keep_back: 24 * HOUR,
            max_per_entity: 32,
        }
    }
}

/// A query answer: the value and the issue time of the forecast it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastValue {
    /// The sum, maximum or rate.
    pub value: f64,
    /// Issue time of the forecast used (for lead-time reporting).
    pub issued: Millis,
}

#[derive(Debug, Clone)]
struct Entry {
    as_of: Millis,
    issued: Millis,
    seq: u64,
    forecast: Arc<Forecast>,
}

impl Entry {
    fn key(&self) -> (Millis, Millis, u64) {
        (self.as_of, self.issued, self.seq)
    }
}

/// A [`ForecastStore`] as plain data, inside an engine snapshot: settings `(as_of,
/// keep_back, max_per_entity)`, insertion counter, watermark, and per slot the entries
/// `(as_of, issued, seq, forecast index)` in order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoreState {
    feed: String,
    config: (AsOf, Millis, u64),
    seq: u64,
    watermark: Millis,
    slots: Vec<Vec<(Millis, Millis, u64, u32)>>,
}

/// The forecasts of one feed, per dense entity slot (the engine's interned entity ids).
///
/// Selection (semantics.md, "Forecasts"): among the slot's forecasts with as-of ≤ τ, the
/// latest (by as-of, ties by issue time, then insertion order) whose intervals cover the whole
/// window `(from, to]` without a gap. Queries do not allocate.
#[derive(Debug, Clone)]
pub struct ForecastStore {
    feed: String,
    config: StoreConfig,
    slots: Vec<Vec<Entry>>,
    seq: u64,
    watermark: Millis,
}

impl ForecastStore {
    /// An empty store for `feed`.
    pub fn new(feed: impl Into<String>, config: StoreConfig) -> Self {
        ForecastStore {
            feed: feed.into(),
            config,
            slots: Vec::new(),
            seq: 0,
            watermark: Millis::MIN,
        }
    }

    /// The feed this store holds.
    pub fn feed(&self) -> &str {
        &self.feed
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// How many forecasts a slot holds.
    pub fn len(&self, slot: usize) -> usize {
        self.slots.get(slot).map_or(0, Vec::len)
    }

    /// Whether no slot holds a forecast.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Vec::is_empty)
    }

    /// The watermark: later queries promise `tau >= watermark` and
    /// `from >= watermark - keep_back`.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// Raise the watermark (never lowers it). Pruning against it happens on the next
    /// [`insert`](Self::insert) into a slot, or for all slots with [`prune`](Self::prune).
    pub fn set_watermark(&mut self, watermark: Millis) {
        self.watermark = self.watermark.max(watermark);
    }

    /// The store as plain data (an engine snapshot). A forecast held by many slots (an area
    /// forecast) is written once: `index` gives its number in the snapshot's forecast list.
    pub(crate) fn state(&self, index: &mut dyn FnMut(&Arc<Forecast>) -> u32) -> StoreState {
        StoreState {
            feed: self.feed.clone(),
            config: (
                self.config.as_of,
                self.config.keep_back,
                self.config.max_per_entity as u64,
            ),
            seq: self.seq,
            watermark: self.watermark,
            slots: self
                .slots
                .iter()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| (e.as_of, e.issued, e.seq, index(&e.forecast)))
                        .collect()
                })
                .collect(),
        }
    }

    /// The store [`state`](Self::state) describes, its forecasts taken from `forecasts`;
    /// `None` when an entry names a forecast the list does not hold.
    pub(crate) fn from_state(state: StoreState, forecasts: &[Arc<Forecast>]) -> Option<Self> {
        let (as_of, keep_back, max_per_entity) = state.config;
        let slots = state
            .slots
            .into_iter()
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(as_of, issued, seq, i)| {
                        Some(Entry {
                            as_of,
                            issued,
                            seq,
                            forecast: Arc::clone(forecasts.get(i as usize)?),
                        })
                    })
                    .collect::<Option<Vec<Entry>>>()
            })
            .collect::<Option<Vec<Vec<Entry>>>>()?;
        Some(ForecastStore {
            feed: state.feed,
            config: StoreConfig {
                as_of,
                keep_back,
                max_per_entity: usize::try_from(max_per_entity).ok()?,
            },
            slots,
            seq: state.seq,
            watermark: state.watermark,
        })
    }

    /// Number of slots (entity ids up to this one, exclusive, may hold forecasts).
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Store a forecast for one entity slot (the same `Arc` for every entity of an area), then
    /// prune that slot. Errors: another feed, or intervals that break the invariants.
    pub fn insert(&mut self, slot: usize, forecast: Arc<Forecast>) -> Result<(), ForecastError> {
        if forecast.feed != self.feed {
            return Err(ForecastError::FeedMismatch {
                expected: self.feed.clone(),
                got: forecast.feed.clone(),
            });
        }
        forecast
            .validate()
            .map_err(|problem| ForecastError::Invalid {
                at: Location::default().at("$.intervals"),
                problem,
            })?;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Vec::new);
        }
        self.seq += 1;
        let entry = Entry {
            as_of: forecast.as_of(self.config.as_of),
            issued: forecast.issued,
            seq: self.seq,
            forecast,
        };
        let entries = &mut self.slots[slot];
        let at = entries.partition_point(|e| e.key() <= entry.key());
        entries.insert(at, entry);
        prune_slot(entries, &self.config, self.watermark);
        Ok(())
    }

    /// Prune every slot against the watermark (see `docs/forecasts.md`, "Memory").
    pub fn prune(&mut self) {
        for entries in &mut self.slots {
            prune_slot(entries, &self.config, self.watermark);
        }
    }

    /// The forecast amount over `(from, to]` as known at `tau`: each interval contributes its
    /// value times the fraction of it inside the window. `None` when no usable forecast covers
    /// the window (or `from >= to`).
    pub fn sum(&self, slot: usize, tau: Millis, from: Millis, to: Millis) -> Option<ForecastValue> {
        self.query(slot, tau, from, to, |acc, iv, overlap| {
            let len = iv.end - iv.start;
            let part = if overlap == len {
                iv.value
            } else {
                iv.value * overlap as f64 / len as f64
            };
            acc.map_or(part, |a| a + part)
        })
    }

    /// The largest interval value among the intervals overlapping `(from, to]`, as given (for
    /// level feeds such as a forecast stage), from the same forecast [`sum`](Self::sum) uses.
    pub fn max(&self, slot: usize, tau: Millis, from: Millis, to: Millis) -> Option<ForecastValue> {
        self.query(slot, tau, from, to, |acc, iv, _| {
            acc.map_or(iv.value, |a| a.max(iv.value))
        })
    }

    /// The largest rate per hour (`value / hours(interval)`) among the intervals overlapping
    /// `(from, to]` (for depth feeds: forecast intensity), from the forecast
    /// [`sum`](Self::sum) uses.
    pub fn max_rate_per_hour(
        &self,
        slot: usize,
        tau: Millis,
        from: Millis,
        to: Millis,
    ) -> Option<ForecastValue> {
        self.query(slot, tau, from, to, |acc, iv, _| {
            let rate = iv.value * HOUR as f64 / (iv.end - iv.start) as f64;
            acc.map_or(rate, |a| a.max(rate))
        })
    }

    /// The issue time of the forecast a query over `(from, to]` at `tau` would use.
    pub fn selected_issued(
        &self,
        slot: usize,
        tau: Millis,
        from: Millis,
        to: Millis,
    ) -> Option<Millis> {
        self.query(slot, tau, from, to, |_, _, _| 0.0)
            .map(|v| v.issued)
    }

    /// The issue time of the latest forecast usable at `tau`, whatever it covers.
    pub fn latest_issued(&self, slot: usize, tau: Millis) -> Option<Millis> {
        let entries = self.slots.get(slot)?;
        let visible = entries.partition_point(|e| e.as_of <= tau);
        entries[..visible].last().map(|e| e.issued)
    }

    fn query(
        &self,
        slot: usize,
        tau: Millis,
        from: Millis,
        to: Millis,
        fold: impl Fn(Option<f64>, &ForecastInterval, Millis) -> f64,
    ) -> Option<ForecastValue> {
        if from >= to {
            return None;
        }
        let entries = self.slots.get(slot)?;
        let visible = entries.partition_point(|e| e.as_of <= tau);
        for e in entries[..visible].iter().rev() {
            if let Some(value) = fold_covered(&e.forecast.intervals, from, to, &fold) {
                return Some(ForecastValue {
                    value,
                    issued: e.issued,
                });
            }
        }
        None
    }
}

/// Fold the intervals overlapping `(from, to]` if they cover it without a gap (`from < to`).
fn fold_covered(
    intervals: &[ForecastInterval],
    from: Millis,
    to: Millis,
    fold: &impl Fn(Option<f64>, &ForecastInterval, Millis) -> f64,
) -> Option<f64> {
    let first = intervals.partition_point(|iv| iv.end <= from);
    let mut covered = from;
    let mut acc = None;
    for iv in &intervals[first..] {
        if iv.start > covered {
            return None; // a gap (or the first interval starts after `from`)
        }
        let overlap = iv.end.min(to) - iv.start.max(from);
        acc = Some(fold(acc, iv, overlap));
        covered = iv.end;
        if covered >= to {
            return acc;
        }
    }
    None
}

fn covers(intervals: &[ForecastInterval], from: Millis, to: Millis) -> bool {
    fold_covered(intervals, from, to, &|_, _, _| 0.0).is_some()
}

/// Drop what can no longer be selected by a query with `tau >= watermark` and
/// `from >= watermark - keep_back`, then enforce the per-slot bound.
fn prune_slot(entries: &mut Vec<Entry>, config: &StoreConfig, watermark: Millis) {
    if watermark != Millis::MIN {
        let horizon = watermark.saturating_sub(config.keep_back);
        // Visible at every allowed tau: as_of <= watermark.
        let visible = entries.partition_point(|e| e.as_of <= watermark);
        let mut keep = vec![true; entries.len()];
        for i in 0..visible {
            let old = &entries[i].forecast.intervals;
            // Nothing after the horizon: no allowed window can use it.
            if old.last().is_none_or(|iv| iv.end <= horizon) {
                keep[i] = false;
                continue;
            }
            // Dominated: one newer visible forecast covers everything it covers after the
            // horizon, so every window it covers is covered by that newer one.
            keep[i] = !entries[i + 1..visible]
                .iter()
                .any(|newer| dominates(&newer.forecast.intervals, old, horizon));
        }
        let mut k = keep.iter();
        entries.retain(|_| k.next().copied().unwrap_or(true));
    }
    let max = config.max_per_entity.max(1);
    if entries.len() > max {
        let excess = entries.len() - max;
        entries.drain(..excess);
    }
}

/// Whether `newer` covers every part of `old`'s intervals after `horizon`.
fn dominates(newer: &[ForecastInterval], old: &[ForecastInterval], horizon: Millis) -> bool {
    old.iter()
        .filter(|iv| iv.end > horizon)
        .all(|iv| covers(newer, iv.start.max(horizon), iv.end))
}
