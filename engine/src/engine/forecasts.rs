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
//! In wall-clock mode the wall clock ([`Engine::set_wall_clock`]) also counts as the stream
//! reaching a time: a live forecast received now is applied at the next tick even when no
//! reading that new has arrived.
//!
//! [`Engine::push_forecast_for`] restricts the entities a forecast is applied to (a sharded
//! daemon: each shard owns some of an area's entities); [`Engine::push_forecast`] applies it
//! to all of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use forewarn_rules::ir::{FeedId, Millis, Quantity};

use super::{Engine, EntityId};
use serde::{Deserialize, Serialize};

use crate::forecast::{
    AreaMap, Forecast, ForecastError, ForecastStore, ForecastTarget, StoreConfig, StoreState,
};
use crate::record::{EvalCause, Sink};

/// The entities a forecast is applied to, when [`Engine::push_forecast_for`] chose them.
type Targets = Arc<[String]>;

/// The engine's forecast state.
#[derive(Debug, Default)]
pub(crate) struct Forecasts {
    /// Stores by feed name (names survive a rule reload; ids may not).
    stores: HashMap<String, ForecastStore>,
    /// Forecasts not yet usable, by as-of time (stable for equal times), with the entities
    /// to apply each to when [`Engine::push_forecast_for`] restricted them (`None`: every
    /// entity of its target).
    queue: VecDeque<(Millis, Arc<Forecast>, Option<Targets>)>,
    /// Area → entities, from the `group` columns of the plan's tables.
    areas: Option<AreaMap>,
}

/// The engine's forecasts as plain data, inside an engine snapshot: every forecast held once
/// (by the stores or the queue), the stores by feed name, and the queue in order, each entry
/// naming its forecast by index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ForecastsState {
    forecasts: Vec<Forecast>,
    stores: Vec<StoreState>,
    queue: Vec<(Millis, u32, Option<Vec<String>>)>,
}

impl Forecasts {
    /// The state to snapshot (stores ordered by feed name, so equal states encode equally).
    pub(crate) fn state(&self) -> ForecastsState {
        let mut forecasts: Vec<Forecast> = Vec::new();
        let mut seen: HashMap<*const Forecast, u32> = HashMap::new();
        let mut index = |f: &Arc<Forecast>| {
            *seen.entry(Arc::as_ptr(f)).or_insert_with(|| {
                forecasts.push(Forecast::clone(f));
                (forecasts.len() - 1) as u32
            })
        };
        let mut names: Vec<&String> = self.stores.keys().collect();
        names.sort();
        let stores = names
            .into_iter()
            .map(|n| self.stores[n].state(&mut index))
            .collect();
        let queue = self
            .queue
            .iter()
            .map(|(t, f, only)| (*t, index(f), only.as_ref().map(|o| o.to_vec())))
            .collect();
        ForecastsState {
            forecasts,
            stores,
            queue,
        }
    }

    /// The forecasts a snapshot holds; `Err` names what is inconsistent (an index out of
    /// range, a slot past `entities`).
    pub(crate) fn from_state(state: ForecastsState, entities: usize) -> Result<Self, String> {
        let all: Vec<Arc<Forecast>> = state.forecasts.into_iter().map(Arc::new).collect();
        let mut stores = HashMap::new();
        for s in state.stores {
            let store = ForecastStore::from_state(s, &all)
                .ok_or("a forecast store names a forecast the snapshot does not hold")?;
            if store.slot_count() > entities {
                return Err("a forecast store holds a slot past the last entity".into());
            }
            stores.insert(store.feed().to_string(), store);
        }
        let queue = state
            .queue
            .into_iter()
            .map(|(t, i, only)| -> Result<_, String> {
                let f = all
                    .get(i as usize)
                    .ok_or("a queued forecast is not in the snapshot")?;
                Ok((t, Arc::clone(f), only.map(Targets::from)))
            })
            .collect::<Result<VecDeque<_>, String>>()?;
        Ok(Forecasts {
            stores,
            queue,
            areas: None,
        })
    }

    /// No forecast waits.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The rules' tables changed (reload): areas are resolved from the new ones.
    pub(crate) fn forget_areas(&mut self) {
        self.areas = None;
    }
}

impl Engine {
    /// Hand the engine a forecast. It is applied when the stream's event time reaches its
    /// as-of time (at once if it already has; with [`ClockMode::Wall`](super::ClockMode), the
    /// wall clock reaching it counts too). Returns how many entities it targets; an
    /// error (nothing is kept) when its feed is not a forecast feed of the rules, or its area
    /// is unknown.
    pub fn push_forecast(
        &mut self,
        forecast: Forecast,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.push_forecast_inner(forecast, None, true, out)
    }

    /// [`Engine::push_forecast`], applied only to the target entities `owns` accepts (for an
    /// entity target: that entity, if accepted; for an area: those of its entities). The
    /// entities are chosen now, from the area as the rules define it now, and kept with the
    /// forecast while it waits for its as-of time. Returns how many entities it will be
    /// applied to (0: nothing is kept). Errors as [`Engine::push_forecast`]: an unknown feed
    /// or area is an error even if `owns` would accept nothing.
    ///
    /// A sharded daemon hands an area forecast to every shard owning some of the area's
    /// entities, each with its own predicate, so every entity gets it exactly once.
    pub fn push_forecast_for(
        &mut self,
        forecast: Forecast,
        owns: &dyn Fn(&str) -> bool,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.push_forecast_inner(forecast, Some(owns), true, out)
    }

    /// Hand back a forecast an engine restored from a snapshot had before, after
    /// [`Engine::forget_forecasts`] (a caller whose forecasts come from files it reads again
    /// on restart): as [`Engine::push_forecast`], except that a forecast whose as-of time
    /// the stream has already passed is stored without evaluating anyone — the evaluations it
    /// caused happened before the snapshot — and is not counted again. (Snapshots keep the
    /// forecasts themselves; the daemon relies on that.)
    pub fn restore_forecast(
        &mut self,
        forecast: Forecast,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.push_forecast_inner(forecast, None, false, out)
    }

    fn push_forecast_inner(
        &mut self,
        forecast: Forecast,
        owns: Option<&dyn Fn(&str) -> bool>,
        evaluate: bool,
        out: &mut dyn Sink,
    ) -> Result<usize, ForecastError> {
        self.forecast_feed(&forecast.feed)?;
        let only: Option<Targets> = match (owns, &forecast.target) {
            (None, _) => None,
            (Some(owns), ForecastTarget::Entity(e)) => {
                Some(owns(e).then(|| e.clone()).into_iter().collect())
            }
            (Some(owns), ForecastTarget::Area(_)) => Some(
                self.areas()
                    .targets(&forecast.target)?
                    .iter()
                    .filter(|e| owns(e))
                    .cloned()
                    .collect(),
            ),
        };
        let n = match (&only, &forecast.target) {
            (Some(only), _) => only.len(),
            (None, ForecastTarget::Entity(_)) => 1,
            (None, ForecastTarget::Area(_)) => self.areas().targets(&forecast.target)?.len(),
        };
        forecast
            .validate()
            .map_err(|problem| ForecastError::Invalid {
                at: Default::default(),
                problem,
            })?;
        if n == 0 {
            return Ok(0);
        }
        let as_of = forecast.as_of(self.cfg.forecast_as_of);
        let f = Arc::new(forecast);
        // wall mode: the wall clock counts as the stream's time too
        let now = match self.cfg.clock {
            super::ClockMode::Wall => self.wall_now(),
            super::ClockMode::Event => self.max_event_time(),
        };
        if now.is_some_and(|t| as_of <= t) {
            self.apply_forecast(as_of, f, only.as_deref(), evaluate, out)?;
        } else {
            let q = &mut self.forecasts.queue;
            let at = q.partition_point(|(t, _, _)| *t <= as_of);
            q.insert(at, (as_of, f, only));
        }
        Ok(n)
    }

    /// Drop every forecast the engine holds, stored or queued (a resumed `forewarn run`
    /// hands its forecast files to the restored engine again, so each is held once).
    pub fn forget_forecasts(&mut self) {
        self.forecasts.stores.clear();
        self.forecasts.queue.clear();
    }

    /// Forecasts waiting for the stream to reach their as-of time.
    pub fn queued_forecasts(&self) -> usize {
        self.forecasts.queue.len()
    }

    /// Apply the queued forecasts usable at `t` (called before readings at `t` are applied).
    pub(crate) fn release_forecasts(&mut self, t: Millis, out: &mut dyn Sink) {
        while self
            .forecasts
            .queue
            .front()
            .is_some_and(|(a, _, _)| *a <= t)
        {
            let Some((as_of, f, only)) = self.forecasts.queue.pop_front() else {
                break;
            };
            // checked when queued; a rule reload may have removed the feed since
            if self
                .apply_forecast(as_of, f, only.as_deref(), true, out)
                .is_err()
            {
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
        let plan = &self.plan;
        self.forecasts
            .areas
            .get_or_insert_with(|| AreaMap::from_plan(plan))
    }

    /// Store the forecast for its targets (`only`: these entities instead, chosen by
    /// [`Engine::push_forecast_for`]) and evaluate them.
    fn apply_forecast(
        &mut self,
        as_of: Millis,
        f: Arc<Forecast>,
        only: Option<&[String]>,
        evaluate: bool,
        out: &mut dyn Sink,
    ) -> Result<(), ForecastError> {
        let feed = self.forecast_feed(&f.feed)?;
        let targets: Vec<String> = match (only, &f.target) {
            (Some(only), _) => only.to_vec(),
            (None, ForecastTarget::Entity(e)) => vec![e.clone()],
            (None, ForecastTarget::Area(_)) => self.areas().targets(&f.target)?.to_vec(),
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
    /// forecast usable at `t` that covers the whole horizon; 0 when there is none.
    pub(crate) fn forecast_value(
        &self,
        e: EntityId,
        feed: FeedId,
        t: Millis,
        h: Millis,
        peak: bool,
    ) -> Option<f64> {
        let fd = &self.plan.feeds[feed];
        // no usable forecast covering the horizon: nothing is forecast (semantics.md)
        let Some(store) = self.forecasts.stores.get(&fd.name) else {
            return Some(0.0);
        };
        let v = match (peak, fd.quantity) {
            (false, _) => store.sum(e as usize, t, t, t + h),
            (true, Quantity::Depth) => store.max_rate_per_hour(e as usize, t, t, t + h),
            (true, _) => store.max(e as usize, t, t, t + h),
        };
        Some(v.map_or(0.0, |v| v.value))
    }
}

#[cfg(test)]
mod tests {
    //! `push_forecast_for` and wall-clock release, on one rule whose numbers are worked out
    //! by hand: 20 mm observed at each gauge, a forecast of 80 mm spread evenly over 6 h
    //! (40/3 mm/h, so 40 mm in the next 3 h): 20 + 40 = 60 ≥ 50 raises (branch `forecast`);
    //! 30 mm more are needed, reached after 30 / (40/3) h = 2 h 15 min.
    use super::*;
    use crate::engine::{ClockMode, EngineConfig};
    use crate::forecast::ForecastInterval;
    use crate::record::{Branch, Output, TransitionKind};
    use crate::{Reading, Value};
    use forewarn_rules::{compile, TableData, TableLoader};

    const MIN: Millis = 60_000;
    const HOUR: Millis = 60 * MIN;
    /// 2024-06-01T00:00:00Z
    const T0: Millis = 1_717_200_000_000;

    const RULES: &str = "feed rain: depth mm\nfeed qpf: forecast depth mm\n\
        table gauge: \"gauges.csv\", key site, group area\n\
        rule flood on rain:\n    warn when sum(rain, 1h) + forecast(qpf, next 3h) >= 50 mm\n";

    struct Gauges;
    impl TableLoader for Gauges {
        fn load(&self, _: &str) -> Result<TableData, String> {
            let row = |s: &str, a: &str| vec![s.to_string(), a.to_string()];
            Ok(TableData {
                columns: vec!["site".into(), "area".into()],
                rows: vec![
                    row("A1", "A"),
                    row("A2", "A"),
                    row("A3", "A"),
                    row("B1", "B"),
                ],
            })
        }
    }

    fn engine(clock: ClockMode) -> Engine {
        let plan = compile(RULES, "t.rules", &Gauges)
            .map_err(|d| d.render(false))
            .expect("rules compile")
            .plan;
        Engine::new(
            Arc::new(plan),
            EngineConfig {
                clock,
                watermark_delay: 0,
                ..EngineConfig::default()
            },
        )
    }

    fn rain(e: &mut Engine, entity: &str, ts: Millis, mm: f64, out: &mut Vec<Output>) {
        let feed = e.feed("rain").expect("rain");
        let r = Reading {
            entity,
            feed,
            ts,
            value: Value::Num(mm),
            tag: 0,
        };
        e.push(&r, out).expect("accepted");
    }

    /// 80 mm over (T0 − 1 h, T0 + 5 h] for area A, received at `received`.
    fn area_a(received: Millis) -> Forecast {
        Forecast {
            feed: "qpf".into(),
            target: ForecastTarget::Area("A".into()),
            issued: T0 - HOUR,
            received: Some(received),
            intervals: vec![ForecastInterval {
                start: T0 - HOUR,
                end: T0 + 5 * HOUR,
                value: 80.0,
            }],
        }
    }

    fn raised(out: &[Output]) -> Vec<(String, Millis, Branch, Option<Millis>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Warning(w) if w.kind == TransitionKind::Raise => Some((
                    w.entity.clone(),
                    w.event_time,
                    w.branch,
                    w.expected_crossing,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn push_forecast_for_applies_to_owned_targets_only() {
        let mut e = engine(ClockMode::Event);
        let mut out = Vec::new();
        for g in ["A1", "A2", "A3", "B1"] {
            rain(&mut e, g, T0 - 10 * MIN, 20.0, &mut out);
        }
        assert!(raised(&out).is_empty(), "20 mm alone, no forecast yet");
        // this engine owns A1 and A3 of area A (and B1, not in A)
        let owns = |x: &str| x != "A2";
        let n = e
            .push_forecast_for(area_a(T0 - 10 * MIN), &owns, &mut out)
            .expect("known feed and area");
        assert_eq!(n, 2);
        let w = raised(&out);
        let names: Vec<&str> = w.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["A1", "A3"]);
        // received when the readings were taken (usable at once), evaluated at
        // max(τ, as-of) = T0 − 10 min; crossing 2 h 15 min later,
        // within 16 bisection steps over 3 h (10 800 000 ms / 65 536 < 165 ms)
        for (_, t, branch, crossing) in &w {
            assert_eq!(*t, T0 - 10 * MIN);
            assert_eq!(*branch, Branch::Forecast);
            let c = crossing.expect("a crossing") - (t + 2 * HOUR + 15 * MIN);
            assert!((0..=165).contains(&c.abs()), "crossing off by {c} ms");
        }
        // nothing it does not own, nor an entity target it does not own
        let mut other = area_a(T0 - 10 * MIN);
        other.target = ForecastTarget::Entity("A2".into());
        assert_eq!(e.push_forecast_for(other, &owns, &mut out), Ok(0));
        assert_eq!(raised(&out).len(), 2);
        // errors as push_forecast: an unknown area even when nothing is owned
        let mut unknown = area_a(T0);
        unknown.target = ForecastTarget::Area("Z".into());
        assert_eq!(
            e.push_forecast_for(unknown, &|_| false, &mut out),
            Err(ForecastError::UnknownArea("Z".into()))
        );
        // push_forecast is unchanged: every entity of the area (A2 is raised now)
        assert_eq!(e.push_forecast(area_a(T0 - 10 * MIN), &mut out), Ok(3));
        let names: Vec<String> = raised(&out).into_iter().map(|x| x.0).collect();
        assert_eq!(names, ["A1", "A3", "A2"]);
    }

    #[test]
    fn a_queued_restricted_forecast_keeps_its_entities_and_the_wall_clock_releases_it() {
        let mut e = engine(ClockMode::Wall);
        let mut out = Vec::new();
        e.set_wall_clock(T0, &mut out);
        for g in ["A1", "A2"] {
            rain(&mut e, g, T0 - 10 * MIN, 20.0, &mut out);
        }
        // received 1 s after the wall clock: waits, although no reading will be that new
        assert_eq!(
            e.push_forecast_for(area_a(T0 + 1000), &|x| x == "A1", &mut out),
            Ok(1)
        );
        assert_eq!(e.queued_forecasts(), 1);
        assert!(raised(&out).is_empty());
        e.set_wall_clock(T0 + 999, &mut out);
        assert_eq!(e.queued_forecasts(), 1, "not before its as-of time");
        e.set_wall_clock(T0 + 1000, &mut out);
        assert_eq!(e.queued_forecasts(), 0);
        let w = raised(&out);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!((w[0].0.as_str(), w[0].1), ("A1", T0 + 1000));
        let c = w[0].3.expect("a crossing") - (T0 + 1000 + 2 * HOUR + 15 * MIN);
        assert!(c.abs() <= 165, "crossing off by {c} ms");
    }
}
