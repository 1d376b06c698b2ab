//! Forecasts inside the engine: one [`ForecastStore`] per forecast feed, a queue of forecasts
//! waiting for the stream to reach their as-of time, and the evaluation a forecast triggers
//! when it becomes usable.
//!
//! A forecast becomes usable at its as-of time (live: when it was received; in backtests:
//! when it was issued — [`EngineConfig::forecast_as_of`](crate::EngineConfig)). Forecasts
//! handed to [`Engine::push_forecast`] whose as-of time the stream has already passed are
//! applied at once; later ones wait until the stream's event time reaches them, so a replay
//! sees each forecast exactly when it could have been known, never earlier. When it is
//! applied, every entity it targets is evaluated at `max(τ, as-of)` (cause
//! [`EvalCause::Forecast`]), as a reading would: a forecast can raise a warning by itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use forewarn_rules::ir::{FeedId, Millis, Quantity};

use super::{Engine, EntityId};
use crate::forecast::{
    AreaMap, Forecast, ForecastError, ForecastStore, ForecastTarget, StoreConfig,
};
use crate::record::{EvalCause, Sink};

/// The engine's forecast state.
#[derive(Debug, Default)]
pub(crate) struct Forecasts {
    /// Stores by feed name (names survive a rule reload; ids may not).
    stores: HashMap<String, ForecastStore>,
    /// Forecasts not yet usable, by as-of time (stable for equal times).
    queue: VecDeque<(Millis, Arc<Forecast>)>,
    /// Area → entities, from the `group` columns of the plan's tables.
    areas: Option<AreaMap>,
}

impl Forecasts {
    /// No forecast waits.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Engine {
    /// Hand the engine a forecast. It is applied when the stream's event time reaches its
    /// as-of time (at once if it already has). Returns how many entities it targets; an
    /// error (nothing is kept) when its feed is not a forecast feed of the rules, or its area
    /// is unknown.
    pub fn push_forecast(
        &mut self,
        forecast: Forecast,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.take_forecast(forecast, true, out)
    }

    /// Hand back a forecast an engine restored from a snapshot had before (snapshots do not
    /// keep forecasts): as [`Engine::push_forecast`], except that a forecast whose as-of time
    /// the stream has already passed is stored without evaluating anyone — the evaluations it
    /// caused happened before the snapshot — and is not counted again.
    pub fn restore_forecast(
        &mut self,
        forecast: Forecast,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.take_forecast(forecast, false, out)
    }

    fn take_forecast(
        &mut self,
        forecast: Forecast,
        evaluate: bool,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.forecast_feed(&forecast.feed)?;
        let n = match &forecast.target {
            ForecastTarget::Entity(_) => 1,
            ForecastTarget::Area(_) => self.areas().targets(&forecast.target)?.len(),
        };
        forecast
            .validate()
            .map_err(|problem| ForecastError::Invalid {
                at: Default::default(),
                problem,
            })?;
        let as_of = forecast.as_of(self.cfg.forecast_as_of);
        let f = Arc::new(forecast);
        let now = self.max_event_time();
        if now.is_some_and(|t| as_of <= t) {
            self.apply_forecast(as_of, f, evaluate, out)?;
        } else {
            let q = &mut self.forecasts.queue;
            let at = q.partition_point(|(t, _)| *t <= as_of);
            q.insert(at, (as_of, f));
        }
        Ok(n)
    }

    /// Forecasts waiting for the stream to reach their as-of time.
    pub fn queued_forecasts(&self) -> usize {
        self.forecasts.queue.len()
    }

    /// Apply the queued forecasts usable at `t` (called before readings at `t` are applied).
    pub(crate) fn release_forecasts(&mut self, t: Millis, out: &mut dyn Sink) {
        while self.forecasts.queue.front().is_some_and(|(a, _)| *a <= t) {
            let Some((as_of, f)) = self.forecasts.queue.pop_front() else {
                break;
            };
            // checked when queued; a rule reload may have removed the feed since
            if self.apply_forecast(as_of, f, true, out).is_err() {
                self.counters.forecasts_dropped += 1;
            }
        }
    }

    fn forecast_feed(&self, name: &str) -> Result<FeedId, ForecastError> {
        match self.plan.feed_by_name(name) {
            Some(f) if self.plan.feeds[f].forecast => Ok(f),
            _ => Err(ForecastError::FeedMismatch {
                expected: self
                    .plan
                    .feeds
                    .iter()
                    .filter(|f| f.forecast)
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                got: name.to_string(),
            }),
        }
    }

    fn areas(&mut self) -> &AreaMap {
        if self.forecasts.areas.is_none() {
            let mut map = AreaMap::new();
            for t in &self.plan.tables {
                for g in &t.groups {
                    let Some(c) = t.column(g) else { continue };
                    for (key, &row) in &t.rows {
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
            self.forecasts.areas = Some(map);
        }
        self.forecasts.areas.as_ref().expect("just built")
    }

    fn apply_forecast(
        &mut self,
        as_of: Millis,
        f: Arc<Forecast>,
        evaluate: bool,
        out: &mut dyn Sink,
    ) -> Result<(), ForecastError> {
        let feed = self.forecast_feed(&f.feed)?;
        let targets: Vec<String> = match &f.target {
            ForecastTarget::Entity(e) => vec![e.clone()],
            ForecastTarget::Area(_) => self.areas().targets(&f.target)?.to_vec(),
        };
        let cfg = StoreConfig {
            as_of: self.cfg.forecast_as_of,
            ..StoreConfig::default()
        };
        if evaluate {
            self.counters.forecasts += 1;
        }
        for name in targets {
            if crate::engine::check_entity_id(&name).is_err() {
                continue;
            }
            let e = self.intern(&name);
            let store = self
                .forecasts
                .stores
                .entry(f.feed.clone())
                .or_insert_with(|| ForecastStore::new(f.feed.clone(), cfg));
            store.insert(e as usize, Arc::clone(&f))?;
            if evaluate {
                self.evaluate_for_forecast(e, feed, as_of, out);
            }
        }
        Ok(())
    }

    fn evaluate_for_forecast(
        &mut self,
        e: EntityId,
        feed: FeedId,
        as_of: Millis,
        out: &mut dyn Sink,
    ) {
        self.catch_up(e, as_of, out);
        self.activate_rules(e, feed);
        let ent = &mut self.entities[e as usize];
        let tau = ent.tau.map_or(as_of, |t| t.max(as_of));
        ent.tau = Some(tau);
        self.evaluate(e, tau, false, EvalCause::Forecast, out);
        self.schedule(e);
    }

    /// The forecast over `(t, t + h]` for entity `e`: the amount (`peak` false) or the peak
    /// (intensity in mm/h for a depth feed, the level for a level feed), from the latest
    /// forecast usable at `t` that covers the whole horizon.
    pub(crate) fn forecast_value(
        &self,
        e: EntityId,
        feed: FeedId,
        t: Millis,
        h: Millis,
        peak: bool,
    ) -> Option<f64> {
        let fd = &self.plan.feeds[feed];
        let store = self.forecasts.stores.get(&fd.name)?;
        let v = match (peak, fd.quantity) {
            (false, _) => store.sum(e as usize, t, t, t + h),
            (true, Quantity::Depth) => store.max_rate_per_hour(e as usize, t, t, t + h),
            (true, _) => store.max(e as usize, t, t, t + h),
        };
        v.map(|v| v.value)
    }
}
