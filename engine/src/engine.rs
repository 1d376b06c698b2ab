//! The evaluation core: readings in, warning transitions and data-status events out.
//!
//! Implements `semantics.md`: per-entity evaluation time τ, data-driven evaluation at once,
//! time-driven deadlines at the watermark, one evaluation per instant, late / duplicate /
//! bad / future-dated readings, reorder delay, and the level ladder with `for`,
//! `clear after`, per-level exits and `clear when`.
//!
//! State lives in dense vectors indexed by interned entity ids; the per-reading path does not
//! allocate (warning records, which are rare, do).

use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use smallvec::SmallVec;

use forewarn_rules::ir::{
    Ahead, AheadKind, BinOp, Cell, Expr, FeedId, GroupFunc, Millis, Plan, RuleDef, TemplatePart,
    WindowFunc, HOUR,
};

use crate::record::{
    Branch, DataStatus, EvalCause, Evaluation, Provenance, RejectReason, Rejection, Sink,
    StatusEvent, TransitionKind, Warning, RECORD_SCHEMA_VERSION,
};
use crate::time::Zone;
use crate::window::{min_opt, FeedTiming, InsertOutcome, SampleBuffer, WindowValue};
use ids::{EntityKey, IdMap};

mod forecasts;
mod ids;
mod reload;
mod snapshot;
pub use reload::{ClearReason, ReloadClear, ReloadError, ReloadReport, WarmSample, Warmup};
pub use snapshot::SnapshotError;

/// How many entities ahead of the one being evaluated the engine prefetches window starts.
const PREFETCH_AHEAD: usize = 4;

/// Interned entity id: an index into the engine's dense per-entity state.
pub type EntityId = u32;

/// How time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Time moves only with the data (replays, backfills, tests, benchmarks).
    #[default]
    Event,
    /// Live: time also follows the wall clock given to [`Engine::set_wall_clock`].
    Wall,
}

/// Engine settings that are not part of the rules.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Event or wall clock.
    pub clock: ClockMode,
    /// The watermark trails the newest event time (and in wall mode the wall clock) by this.
    pub watermark_delay: Millis,
    /// Readings further ahead of the wall clock are rejected as future-dated (wall mode: the
    /// engine's wall clock, no check when `None`; event mode: the system clock,
    /// [`DEFAULT_FUTURE_SKEW`] when `None`).
    pub future_skew: Option<Millis>,
    /// Wall mode: readings further behind the wall clock are rejected as stale-dated.
    pub max_age: Millis,
    /// Wall mode: a warning whose event time is this far behind the wall clock is `delayed`.
    pub delayed_after: Millis,
    /// Reject readings of entities that appear in no table.
    pub require_known_entities: bool,
    /// Wall-clock source for `emitted_at` (UTC ms); defaults to the system clock.
    pub now: fn() -> Millis,
    /// Report every rule evaluation to [`Sink::evaluated`] (window values, cause, level):
    /// for debugging rules and for checking the engine against an independent computation.
    /// Off by default; costs nothing when off.
    pub trace: bool,
    /// When a forecast becomes usable: when received (live, the default) or when issued
    /// (backtests replaying archived forecasts).
    pub forecast_as_of: crate::forecast::AsOf,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            clock: ClockMode::Event,
            watermark_delay: 60_000,
            future_skew: None,
            max_age: 7 * forewarn_rules::ir::DAY,
            delayed_after: 5 * 60_000,
            require_known_entities: false,
            now: system_now,
            trace: false,
            forecast_as_of: crate::forecast::AsOf::Received,
        }
    }
}

/// Future skew allowed when none is configured (event clock: against the system clock).
pub const DEFAULT_FUTURE_SKEW: Millis = 5 * 60_000;

/// Earliest event time accepted (1900-01-01T00:00:00Z).
pub const MIN_TS: Millis = -2_208_988_800_000;
/// Latest event time accepted (9999-12-31T23:59:59.999Z).
pub const MAX_TS: Millis = 253_402_300_799_999;
/// Longest entity id accepted, in bytes.
pub const MAX_ENTITY_BYTES: usize = 256;

/// An entity id must be 1..=256 bytes without control characters or the MQTT wildcards `+`
/// and `#` (ids become parts of output topics).
pub fn check_entity_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty entity id".into());
    }
    if id.len() > MAX_ENTITY_BYTES {
        return Err(format!(
            "entity id of {} bytes (at most {MAX_ENTITY_BYTES})",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| c.is_control() || *c == '+' || *c == '#')
    {
        return Err(format!(
            "entity id contains {c:?} (control characters, `+` and `#` are not allowed)"
        ));
    }
    Ok(())
}

/// A duration for people: `15m`, `1h30m`, `2d`, `250ms`.
pub fn human(ms: Millis) -> String {
    forewarn_rules::format_duration(ms)
}

/// The system clock in UTC milliseconds.
pub fn system_now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A reading value as received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A number (in the feed's declared unit).
    Num(f64),
    /// A number sent as text (coerced unless the feed is strict).
    Text(&'a str),
}

/// One observation of one entity's feed.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// Entity id (gauge, station, sensor).
    pub entity: &'a str,
    /// Feed (index into the plan's feeds; see [`Engine::feed`]).
    pub feed: FeedId,
    /// Event time, UTC ms.
    pub ts: Millis,
    /// The value in the feed's declared unit.
    pub value: Value<'a>,
    /// The caller's tag (e.g. a line number), echoed in rejections.
    pub tag: u64,
}

/// What happened to an accepted reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Applied on time.
    OnTime,
    /// Applied late (within the acceptance horizon); rules re-evaluated at τ.
    Late,
    /// An identical redelivery; nothing changed.
    Duplicate,
    /// Replaced the value at the same timestamp.
    Replaced,
    /// Dropped under the `ignore` duplicate policy.
    Ignored,
    /// Added to the value at the same timestamp (`add` policy).
    Added,
    /// Held by the feed's reorder delay; applied when the watermark passes it.
    Held,
}

/// Counters of everything that went through the engine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Readings offered (accepted or not, parse failures reported by sources included).
    pub read: u64,
    /// Readings accepted (on time, late, replaced, added).
    pub accepted: u64,
    /// Accepted late.
    pub late: u64,
    /// Identical redeliveries.
    pub duplicate: u64,
    /// Values replaced at an existing timestamp.
    pub replaced: u64,
    /// Dropped by the `ignore` policy.
    pub ignored: u64,
    /// Added at an existing timestamp.
    pub added: u64,
    /// Numbers sent as strings and coerced.
    pub coerced: u64,
    /// Rejections by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Evaluations performed.
    pub evaluations: u64,
    /// Per rule: transitions by [`TransitionKind::ALL`] index.
    pub transitions: Vec<[u64; 4]>,
    /// Per rule, per level: times the level was entered.
    pub entered: Vec<Vec<u64>>,
    /// Per rule: entities not evaluated because a table has no row for them.
    pub skipped_no_table: Vec<u64>,
    /// Forecasts applied.
    pub forecasts: u64,
    /// Queued forecasts dropped when they became usable (their feed was removed by a reload).
    pub forecasts_dropped: u64,
}

impl Counters {
    /// Total rejected readings.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejections for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }
}

/// The current level of one rule for one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveWarning {
    /// Rule name.
    pub rule: String,
    /// Entity id.
    pub entity: String,
    /// Current level.
    pub level: String,
    /// Event time of the transition into the current episode's latest level.
    pub since: Millis,
    /// Event time of the raise that opened the episode (equals `since` until it escalates
    /// or downgrades): what identifies the episode in CAP output.
    pub episode_start: Millis,
    /// Sequence number of that transition.
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FeedSlot {
    buf: SampleBuffer,
    status: DataStatus,
    first_seen: Option<Millis>,
    last_accepted: Option<Millis>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RuleState {
    active: bool,
    skipped: bool,
    level: Option<usize>,
    seq: u64,
    level_since: Millis,
    /// Event time of the raise that opened the current episode (meaningless without a level).
    episode_start: Millis,
    hold_since: SmallVec<[Option<Millis>; 4]>,
    exit_since: Option<Millis>,
    clear_since: Option<Millis>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntityState {
    name: String,
    tau: Option<Millis>,
    // Inline up to typical sizes: an entity's state is then one contiguous record, and
    // evaluating it does not chase a pointer per part (the cache misses of a large network).
    feeds: SmallVec<[FeedSlot; 1]>,
    rules: SmallVec<[RuleState; 3]>,
    table_rows: SmallVec<[Option<usize>; 2]>,
    groups: SmallVec<[Option<usize>; 2]>,
    next_deadline: Option<Millis>,
    /// Generation of the entity's live entry in the deadline heap; older entries are stale.
    deadline_gen: u64,
    /// The deadline of the live heap entry, which may be earlier than `next_deadline`: a
    /// deadline that moves later is not pushed again until the earlier entry comes due
    /// (one heap operation per fired deadline instead of one per reading).
    #[serde(default)]
    queued: Option<Millis>,
    delay: Millis,
}

/// Members of the groups of one `(table, column)` used by group functions.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupIndex {
    table: usize,
    column: usize,
    by_value: HashMap<String, usize>,
    members: Vec<Vec<EntityId>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Pending {
    ts: Millis,
    seq: u64,
    entity: EntityId,
    feed: FeedId,
    value: f64,
    tag: u64,
}

/// Readings held by a feed's reorder delay, in `(ts, seq)` order. Nearly every reading
/// arrives in order, so a sorted deque appends and releases in O(1) where a heap paid
/// O(log n) twice; an out-of-order reading is placed by binary search.
#[derive(Debug, Clone, Default)]
struct ReorderQueue {
    items: std::collections::VecDeque<Pending>,
}

impl ReorderQueue {
    fn push(&mut self, p: Pending) {
        match self.items.back() {
            Some(last) if *last > p => {
                let idx = self.items.partition_point(|x| *x <= p);
                self.items.insert(idx, p);
            }
            _ => self.items.push_back(p),
        }
    }

    fn peek(&self) -> Option<&Pending> {
        self.items.front()
    }

    fn pop(&mut self) -> Option<Pending> {
        self.items.pop_front()
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Pending> + '_ {
        self.items.iter()
    }
}

impl FromIterator<Pending> for ReorderQueue {
    fn from_iter<I: IntoIterator<Item = Pending>>(iter: I) -> Self {
        let mut v: Vec<Pending> = iter.into_iter().collect();
        v.sort();
        ReorderQueue { items: v.into() }
    }
}

impl IntoIterator for ReorderQueue {
    type Item = Pending;
    type IntoIter = std::collections::vec_deque::IntoIter<Pending>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// A validated reading on its way in: entity, feed, event time, canonical value, tag.
type Item = (EntityId, FeedId, Millis, f64, u64);

/// Reusable scratch space for one evaluation.
#[derive(Debug, Default)]
struct Scratch {
    gen: u64,
    windows: Vec<(u64, WindowValue)>,
    group_values: Vec<f64>,
    conds: Vec<Option<bool>>,
    touched: Vec<(EntityId, bool)>,
    /// Per entity: 1 + its index in `touched` while a group is applied, else 0.
    touch_index: Vec<u32>,
    batch: Vec<Item>,
    group: Vec<Item>,
    results: Vec<Result<Accepted, RejectReason>>,
    release: Vec<Item>,
    release_results: Vec<Result<Accepted, RejectReason>>,
    /// Horizons of `forecast`/`project` are scaled by this while the expected crossing time
    /// is searched (1 otherwise).
    horizon_scale: Option<f64>,
}

/// The evaluation engine. Build it from a compiled [`Plan`], push readings, advance time,
/// and receive warnings through a [`Sink`].
///
/// ```
/// use forewarn_engine::{Engine, EngineConfig, Output, Reading, Value};
/// use forewarn_rules::{compile, TableData, TableLoader};
///
/// struct NoTables;
/// impl TableLoader for NoTables {
///     fn load(&self, path: &str) -> Result<TableData, String> {
///         Err(format!("no table {path}"))
///     }
/// }
/// let src = "feed rain: depth mm\nrule wet on rain:\n  warn when sum(rain, 1h) >= 10 mm\n";
/// let plan = compile(src, "wet.rules", &NoTables).map_err(|d| d.render(false))?.plan;
/// let mut engine = Engine::new(plan, EngineConfig::default());
/// let rain = engine.feed("rain").unwrap();
/// let mut out: Vec<Output> = Vec::new();
/// let r = Reading { entity: "G1", feed: rain, ts: 0, value: Value::Num(12.0), tag: 1 };
/// engine.push(&r, &mut out).unwrap();
/// assert!(matches!(&out[..], [Output::Status(_), Output::Warning(w)] if w.rule == "wet"));
/// assert_eq!(engine.level("wet", "G1"), Some("warn"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    plan: Arc<Plan>,
    cfg: EngineConfig,
    ids: IdMap,
    entities: Vec<EntityState>,
    groups: Vec<GroupIndex>,
    timings: Vec<FeedTiming>,
    since_zones: Vec<Option<Zone>>,
    retention: Vec<Millis>,
    /// Per feed, the distinct widths of its windows (for prefetching window starts).
    feed_widths: Vec<Vec<Millis>>,
    rules_by_feed: Vec<Vec<usize>>,
    known: Option<std::collections::HashSet<String>>,
    deadlines: BinaryHeap<Reverse<(Millis, Millis, EntityId, u64)>>,
    pending: Vec<ReorderQueue>,
    pending_seq: u64,
    max_ts: Option<Millis>,
    stream_max: Option<Millis>,
    wall: Option<Millis>,
    watermark: Option<Millis>,
    counters: Counters,
    scratch: Scratch,
    provenance: Provenance,
    /// The system clock when last read (event mode's future-dated check).
    clock_seen: Millis,
    forecasts: forecasts::Forecasts,
}

impl Engine {
    /// Build an engine for a compiled plan.
    pub fn new(plan: impl Into<Arc<Plan>>, cfg: EngineConfig) -> Engine {
        let plan: Arc<Plan> = plan.into();
        let timings = plan
            .feeds
            .iter()
            .map(|f| FeedTiming {
                stale: f.stale,
                interval: f.interval,
            })
            .collect();
        let since_zones = plan
            .windows
            .iter()
            .map(|w| match &w.func {
                WindowFunc::Since { zone, .. } => zone.parse::<Zone>().ok(),
                _ => None,
            })
            .collect();
        let retention = (0..plan.feeds.len())
            .map(|f| plan.retention(f) + forewarn_rules::ir::HOUR)
            .collect();
        let mut feed_widths: Vec<Vec<Millis>> = vec![Vec::new(); plan.feeds.len()];
        for w in &plan.windows {
            if let Some(width) = w.width {
                if !feed_widths[w.feed].contains(&width) {
                    feed_widths[w.feed].push(width);
                }
            }
        }
        let mut rules_by_feed = vec![Vec::new(); plan.feeds.len()];
        for (r, rule) in plan.rules.iter().enumerate() {
            for &f in &rule.feeds {
                rules_by_feed[f].push(r);
            }
        }
        let group_keys = plan.group_columns();
        let groups = group_keys
            .into_iter()
            .map(|(table, column)| GroupIndex {
                table,
                column,
                by_value: HashMap::new(),
                members: Vec::new(),
            })
            .collect();
        let known = cfg.require_known_entities.then(|| {
            plan.tables
                .iter()
                .flat_map(|t| t.rows.keys().cloned())
                .collect()
        });
        let counters = Counters {
            transitions: vec![[0; 4]; plan.rules.len()],
            entered: plan.rules.iter().map(|r| vec![0; r.levels.len()]).collect(),
            skipped_no_table: vec![0; plan.rules.len()],
            ..Counters::default()
        };
        let provenance = Provenance {
            ruleset: plan.ruleset_hash.clone(),
            engine: env!("CARGO_PKG_VERSION"),
            schema: RECORD_SCHEMA_VERSION,
        };
        let scratch = Scratch {
            windows: vec![(0, WindowValue::None); plan.windows.len()],
            ..Scratch::default()
        };
        Engine {
            pending: vec![ReorderQueue::default(); plan.feeds.len()],
            plan,
            cfg,
            ids: IdMap::default(),
            entities: Vec::new(),
            groups,
            timings,
            since_zones,
            retention,
            feed_widths,
            rules_by_feed,
            known,
            deadlines: BinaryHeap::new(),
            pending_seq: 0,
            max_ts: None,
            stream_max: None,
            wall: None,
            watermark: None,
            counters,
            scratch,
            provenance,
            clock_seen: Millis::MIN / 2,
            forecasts: forecasts::Forecasts::default(),
        }
    }

    /// The compiled plan, shared.
    pub fn plan_arc(&self) -> Arc<Plan> {
        Arc::clone(&self.plan)
    }

    /// The compiled plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The feed id for a feed name.
    pub fn feed(&self, name: &str) -> Option<FeedId> {
        self.plan.feed_by_name(name)
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The current watermark, if any time has passed.
    pub fn watermark(&self) -> Option<Millis> {
        self.watermark
    }

    /// Newest accepted event time.
    pub fn max_event_time(&self) -> Option<Millis> {
        self.max_ts
    }

    /// Count a reading that a source could not decode (it never reached [`Engine::push`]).
    pub fn count_source_rejection(&mut self, reason: RejectReason) {
        self.counters.read += 1;
        self.counters.rejected[reason.index()] += 1;
    }

    /// Warnings currently active (entity, rule, level), in entity then rule order.
    pub fn active_warnings(&self) -> Vec<ActiveWarning> {
        let mut v = Vec::new();
        for e in &self.entities {
            for (r, rs) in e.rules.iter().enumerate() {
                if let Some(l) = rs.level {
                    let rule = &self.plan.rules[r];
                    v.push(ActiveWarning {
                        rule: rule.name.clone(),
                        entity: e.name.clone(),
                        level: rule.levels[l].name.clone(),
                        since: rs.level_since,
                        episode_start: rs.episode_start,
                        seq: rs.seq,
                    });
                }
            }
        }
        v
    }

    /// Current level of a rule for an entity.
    pub fn level(&self, rule: &str, entity: &str) -> Option<&str> {
        let r = self.plan.rules.iter().position(|x| x.name == rule)?;
        let e = *self.ids.get(entity)?;
        let l = self.entities[e as usize].rules[r].level?;
        Some(&self.plan.rules[r].levels[l].name)
    }

    /// Data status of every (entity, feed) seen: entity, feed, status, newest sample.
    pub fn data_status(&self) -> Vec<(String, String, DataStatus, Option<Millis>)> {
        let mut v = Vec::new();
        for e in &self.entities {
            for (f, slot) in e.feeds.iter().enumerate() {
                if slot.first_seen.is_some() {
                    v.push((
                        e.name.clone(),
                        self.plan.feeds[f].name.clone(),
                        slot.status,
                        slot.last_accepted,
                    ));
                }
            }
        }
        v
    }

    /// Number of entities seen.
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    fn intern(&mut self, name: &str) -> EntityId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.entities.len() as EntityId;
        let (table_rows, groups) = self.place_entity(name, id);
        let plan = &self.plan;
        let rules = plan
            .rules
            .iter()
            .map(|r| RuleState {
                hold_since: smallvec::smallvec![None; r.levels.len()],
                ..RuleState::default()
            })
            .collect();
        let feeds = plan
            .feeds
            .iter()
            .map(|_| FeedSlot {
                buf: SampleBuffer::new(),
                status: DataStatus::Unknown,
                first_seen: None,
                last_accepted: None,
            })
            .collect();
        self.entities.push(EntityState {
            name: name.to_string(),
            tau: None,
            feeds,
            rules,
            table_rows: table_rows.into(),
            groups: groups.into(),
            next_deadline: None,
            deadline_gen: 0,
            queued: None,
            delay: 0,
        });
        self.ids.insert(EntityKey::new(name), id);
        id
    }

    /// Check a reading's value and clock; on success the canonical value.
    /// `known`: the entity is already interned (so its id was checked when it was first seen).
    fn validate(&mut self, r: &Reading<'_>, known: bool) -> Result<f64, (RejectReason, String)> {
        if !(MIN_TS..=MAX_TS).contains(&r.ts) {
            return Err((
                RejectReason::BadTimestamp,
                format!("timestamp {} ms is outside the years 1900..9999", r.ts),
            ));
        }
        if !known {
            if let Err(why) = check_entity_id(r.entity) {
                return Err((RejectReason::Malformed, why));
            }
        }
        if self.plan.feeds.get(r.feed).is_some_and(|f| f.forecast) {
            return Err((
                RejectReason::UnknownFeed,
                format!(
                    "feed {} carries forecasts (issue time, valid intervals), not readings",
                    self.plan.feeds[r.feed].name
                ),
            ));
        }
        let feed = self.plan.feeds.get(r.feed).ok_or_else(|| {
            (
                RejectReason::UnknownFeed,
                format!("feed #{} is not declared", r.feed),
            )
        })?;
        let mut coerced = false;
        let raw = match r.value {
            Value::Num(v) => v,
            Value::Text(s) => {
                let v: f64 = s.trim().parse().map_err(|_| {
                    (
                        RejectReason::NotNumeric,
                        format!("value {s:?} is not a number"),
                    )
                })?;
                if feed.strict {
                    return Err((
                        RejectReason::StrictString,
                        format!("feed {} is strict: number sent as text {s:?}", feed.name),
                    ));
                }
                coerced = true;
                v
            }
        };
        if !raw.is_finite() {
            return Err((
                RejectReason::NotFinite,
                format!("value {raw} is not finite"),
            ));
        }
        let v = raw * feed.scale;
        if let Some((lo, hi)) = feed.range {
            if v < lo || v > hi {
                return Err((
                    RejectReason::OutOfRange,
                    format!(
                        "value {raw} {} is outside the range of feed {}",
                        feed.declared_unit, feed.name
                    ),
                ));
            }
        }
        if let Some(known) = &self.known {
            if !known.contains(r.entity) {
                return Err((
                    RejectReason::UnknownEntity,
                    format!("entity {:?} is in no table", r.entity),
                ));
            }
        }
        match self.cfg.clock {
            ClockMode::Wall => {
                if let Some(now) = self.wall_now() {
                    if let Some(skew) = self.cfg.future_skew {
                        if r.ts > now + skew {
                            return Err((
                                RejectReason::FutureDated,
                                format!("{} ahead of the clock", human(r.ts - now)),
                            ));
                        }
                    }
                    if r.ts < now - self.cfg.max_age {
                        return Err((
                            RejectReason::StaleDated,
                            format!("{} behind the clock", human(now - r.ts)),
                        ));
                    }
                }
            }
            ClockMode::Event => {
                // A replay has no clock but the data's, yet a reading stamped after the real
                // present cannot be a record of the past: it would drag the watermark ahead
                // and make every other reading "too late".
                // The system clock only moves forward: read it again only when a reading
                // looks future-dated against the last reading of it (not once per reading).
                let skew = self.cfg.future_skew.unwrap_or(DEFAULT_FUTURE_SKEW);
                if r.ts > self.clock_seen + skew {
                    self.clock_seen = (self.cfg.now)();
                }
                let now = self.clock_seen;
                if r.ts > now + skew {
                    return Err((
                        RejectReason::FutureDated,
                        format!(
                            "{} ahead of the system clock (event-clock replay)",
                            human(r.ts - now)
                        ),
                    ));
                }
            }
        }
        if coerced {
            self.counters.coerced += 1;
        }
        Ok(v)
    }

    /// The newest event time a reading may carry now: wall clock plus future skew (wall mode,
    /// when a skew is set), system clock plus skew (event mode).
    fn future_limit(&self) -> Option<Millis> {
        match self.cfg.clock {
            ClockMode::Wall => Some(self.wall_now()? + self.cfg.future_skew?),
            ClockMode::Event => {
                Some((self.cfg.now)() + self.cfg.future_skew.unwrap_or(DEFAULT_FUTURE_SKEW))
            }
        }
    }

    fn wall_now(&self) -> Option<Millis> {
        match (self.wall, self.max_ts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn target_watermark(&self) -> Option<Millis> {
        let t = match self.cfg.clock {
            ClockMode::Event => max_opt(self.max_ts, self.stream_max),
            ClockMode::Wall => max_opt(self.wall_now(), self.stream_max),
        }?;
        Some(t - self.cfg.watermark_delay)
    }

    /// Tell the engine the newest event time seen on the whole stream, when readings are
    /// split across several engines (shards): each shard's watermark then follows the stream,
    /// not only its own entities, so its time-driven deadlines fire on time.
    ///
    /// A time the engine would reject as future-dated (or outside the years 1900..9999) is
    /// ignored: one device with a wrong clock must not move anyone's watermark.
    pub fn observe_stream_time(&mut self, t: Millis, out: &mut dyn Sink) {
        if !(MIN_TS..=MAX_TS).contains(&t) || self.future_limit().is_some_and(|limit| t > limit) {
            return;
        }
        if !self.forecasts.is_idle() {
            self.release_forecasts(t, out);
        }
        self.stream_max = Some(self.stream_max.map_or(t, |m| m.max(t)));
        self.advance(out, false);
    }

    fn reject(
        &mut self,
        r: &Reading<'_>,
        reason: RejectReason,
        detail: String,
        out: &mut dyn Sink,
    ) {
        self.counters.rejected[reason.index()] += 1;
        let feed = self
            .plan
            .feeds
            .get(r.feed)
            .map(|f| f.name.clone())
            .unwrap_or_default();
        let value = match r.value {
            Value::Num(v) => v.to_string(),
            Value::Text(s) => s.to_string(),
        };
        if !matches!(
            reason,
            RejectReason::FutureDated
                | RejectReason::StaleDated
                | RejectReason::UnknownFeed
                | RejectReason::UnknownEntity
                | RejectReason::Malformed
                | RejectReason::BadTimestamp
        ) {
            // The entity exists for data-status purposes from its first reading, valid or not.
            let id = self.intern(r.entity);
            let slot = &mut self.entities[id as usize].feeds[r.feed];
            if slot.first_seen.is_none() {
                slot.first_seen = Some(r.ts);
                self.schedule(id);
            }
        }
        out.rejected(Rejection {
            reason,
            entity: r.entity.to_string(),
            feed,
            ts: r.ts,
            value,
            detail,
            tag: r.tag,
        });
    }

    /// Push one reading: validated, then applied at once (or held by the feed's reorder
    /// delay), its entity's rules evaluated, and the watermark advanced.
    pub fn push(&mut self, r: &Reading<'_>, out: &mut dyn Sink) -> Result<Accepted, RejectReason> {
        if !self.forecasts.is_idle() {
            self.release_forecasts(r.ts, out);
        }
        self.counters.read += 1;
        let known = self.ids.get(r.entity).copied();
        let v = match self.validate(r, known.is_some()) {
            Ok(v) => v,
            Err((reason, detail)) => {
                self.reject(r, reason, detail, out);
                return Err(reason);
            }
        };
        let id = match known {
            Some(id) => id,
            None => self.intern(r.entity),
        };
        if self.plan.feeds[r.feed].reorder > 0 {
            self.hold(id, r, v);
            self.advance(out, false);
            return Ok(Accepted::Held);
        }
        if let Some(target) = self.target_watermark() {
            self.advance_to(target.min(r.ts - 1), out, false);
        }
        let mut batch = std::mem::take(&mut self.scratch.batch);
        let mut results = std::mem::take(&mut self.scratch.results);
        batch.clear();
        results.clear();
        batch.push((id, r.feed, r.ts, v, r.tag));
        self.apply_group(r.ts, &batch, &mut results, out);
        let res = results.first().copied().unwrap_or(Ok(Accepted::OnTime));
        self.scratch.batch = batch;
        self.scratch.results = results;
        self.advance(out, false);
        res
    }

    /// Push readings that arrived together (one message, one API call): applied in
    /// event-time order, all readings stamped T before the single evaluation at T.
    /// Returns the outcome of each reading, in input order.
    pub fn push_batch(
        &mut self,
        readings: &[Reading<'_>],
        out: &mut dyn Sink,
    ) -> Vec<Result<Accepted, RejectReason>> {
        if !self.forecasts.is_idle() {
            if let Some(t) = readings.iter().map(|r| r.ts).min() {
                self.release_forecasts(t, out);
            }
        }
        let mut results = vec![Ok(Accepted::OnTime); readings.len()];
        let mut batch = std::mem::take(&mut self.scratch.batch);
        batch.clear();
        for (i, r) in readings.iter().enumerate() {
            self.counters.read += 1;
            let known = self.ids.get(r.entity).copied();
            match self.validate(r, known.is_some()) {
                Err((reason, detail)) => {
                    self.reject(r, reason, detail, out);
                    results[i] = Err(reason);
                }
                Ok(v) => {
                    let id = match known {
                        Some(id) => id,
                        None => self.intern(r.entity),
                    };
                    if self.plan.feeds[r.feed].reorder > 0 {
                        self.hold(id, r, v);
                        results[i] = Ok(Accepted::Held);
                    } else {
                        batch.push((id, r.feed, r.ts, v, i as u64));
                    }
                }
            }
        }
        batch.sort_by_key(|b| b.2);
        let mut start = 0;
        while start < batch.len() {
            let t = batch[start].2;
            let end = start + batch[start..].iter().take_while(|b| b.2 == t).count();
            if let Some(target) = self.target_watermark() {
                self.advance_to(target.min(t - 1), out, false);
            }
            let mut group = std::mem::take(&mut self.scratch.group);
            let mut outcome = std::mem::take(&mut self.scratch.results);
            group.clear();
            outcome.clear();
            group.extend(
                batch[start..end]
                    .iter()
                    .map(|&(e, f, ts, v, i)| (e, f, ts, v, readings[i as usize].tag)),
            );
            self.apply_group(t, &group, &mut outcome, out);
            for (k, o) in outcome.iter().enumerate() {
                results[batch[start + k].4 as usize] = *o;
            }
            self.scratch.group = group;
            self.scratch.results = outcome;
            start = end;
        }
        batch.clear();
        self.scratch.batch = batch;
        self.advance(out, false);
        results
    }

    fn hold(&mut self, id: EntityId, r: &Reading<'_>, v: f64) {
        let d = self.plan.feeds[r.feed].reorder;
        let ent = &mut self.entities[id as usize];
        ent.delay = ent.delay.max(d);
        self.pending_seq += 1;
        self.pending[r.feed].push(Pending {
            ts: r.ts,
            seq: self.pending_seq,
            entity: id,
            feed: r.feed,
            value: v,
            tag: r.tag,
        });
        self.max_ts = Some(self.max_ts.map_or(r.ts, |m| m.max(r.ts)));
    }

    /// Move the wall clock (wall mode): time-driven evaluations up to `now - delay` happen,
    /// and forecasts received by `now` are applied.
    pub fn set_wall_clock(&mut self, now: Millis, out: &mut dyn Sink) {
        self.wall = Some(self.wall.map_or(now, |w| w.max(now)));
        if self.cfg.clock == ClockMode::Wall && !self.forecasts.is_idle() {
            if let Some(t) = self.wall_now() {
                self.release_forecasts(t, out);
            }
        }
        self.advance(out, false);
    }

    /// End of input: readings still held by a reorder delay are applied, then deadlines fire
    /// up to the last event time seen (wall mode: the wall clock). Warnings still active stay
    /// active.
    pub fn finish(&mut self, out: &mut dyn Sink) {
        let end = match self.cfg.clock {
            ClockMode::Event => max_opt(self.max_ts, self.stream_max),
            ClockMode::Wall => max_opt(self.wall_now(), self.stream_max),
        };
        if let Some(end) = end {
            self.advance_to(end, out, true);
            self.watermark = Some(self.watermark.map_or(end, |w| w.max(end)));
        }
    }

    fn advance(&mut self, out: &mut dyn Sink, final_pass: bool) {
        if let Some(t) = self.target_watermark() {
            self.advance_to(t, out, final_pass);
        }
    }

    /// Release held readings and fire deadlines in event-time order up to `limit`.
    fn advance_to(&mut self, limit: Millis, out: &mut dyn Sink, final_pass: bool) {
        loop {
            // the earliest releasable held reading
            let mut best: Option<(Millis, usize)> = None;
            for (f, queue) in self.pending.iter().enumerate() {
                if let Some(p) = queue.peek() {
                    // held until the watermark *passes* ts + d
                    let releasable = final_pass || p.ts + self.plan.feeds[f].reorder < limit;
                    if releasable && best.is_none_or(|(t, _)| p.ts < t) {
                        best = Some((p.ts, f));
                    }
                }
            }
            // the earliest due deadline
            let deadline = loop {
                match self.deadlines.peek() {
                    Some(&Reverse((due, d, e, gen))) => {
                        let ent = &mut self.entities[e as usize];
                        if ent.deadline_gen != gen {
                            self.deadlines.pop();
                            continue;
                        }
                        if ent.next_deadline != Some(d) {
                            // the deadline moved later (or went away) since this was pushed
                            self.deadlines.pop();
                            ent.queued = None;
                            if let Some(next) = ent.next_deadline {
                                self.queue_deadline(e, next);
                            }
                            continue;
                        }
                        let ok = if final_pass { d <= limit } else { due <= limit };
                        break ok.then_some((d, e));
                    }
                    None => break None,
                }
            };
            match (best, deadline) {
                (Some((t, _)), dl) if dl.is_none_or(|(d, _)| t <= d) => {
                    let mut group = std::mem::take(&mut self.scratch.release);
                    let mut results = std::mem::take(&mut self.scratch.release_results);
                    group.clear();
                    results.clear();
                    for f in 0..self.pending.len() {
                        while let Some(p) = self.pending[f].peek() {
                            if p.ts != t {
                                break;
                            }
                            group.push((p.entity, p.feed, p.ts, p.value, p.tag));
                            self.pending[f].pop();
                        }
                    }
                    self.apply_group(t, &group, &mut results, out);
                    self.scratch.release = group;
                    self.scratch.release_results = results;
                }
                (_, Some((d, e))) => {
                    self.deadlines.pop();
                    self.entities[e as usize].queued = None;
                    self.fire(e, d, out);
                }
                _ => break,
            }
        }
        if !final_pass {
            self.watermark = Some(self.watermark.map_or(limit, |w| w.max(limit)));
        }
    }

    /// Apply readings all stamped `t`, then evaluate each touched entity once.
    fn apply_group(
        &mut self,
        t: Millis,
        group: &[Item],
        results: &mut Vec<Result<Accepted, RejectReason>>,
        out: &mut dyn Sink,
    ) {
        let mut touched = std::mem::take(&mut self.scratch.touched);
        touched.clear();
        for (i, &(e, f, ts, v, tag)) in group.iter().enumerate() {
            // Software pipelining over the group's entities (thousands at one instant on a
            // large network): their state is cold, so start loading the entity record a few
            // readings ahead and its feed slot and newest sample closer in.
            if let Some(&(ahead, ..)) = group.get(i + 2 * PREFETCH_AHEAD) {
                crate::window::prefetch(&self.entities[ahead as usize]);
            }
            if let Some(&(ahead, fa, ..)) = group.get(i + PREFETCH_AHEAD) {
                let ent = &self.entities[ahead as usize];
                crate::window::prefetch(&ent.feeds[fa]);
                crate::window::prefetch(ent.rules.as_ptr());
            }
            if let Some(&(ahead, fa, ..)) = group.get(i + PREFETCH_AHEAD / 2) {
                self.entities[ahead as usize].feeds[fa]
                    .buf
                    .prefetch_newest();
            }
            let tau = self.entities[e as usize].tau;
            let late = tau.is_some_and(|tau| ts < tau);
            if late {
                let horizon = self.plan.feeds[f].late;
                let tau = tau.unwrap_or(ts);
                if tau - ts > horizon {
                    let name = self.entities[e as usize].name.clone();
                    let feed = &self.plan.feeds[f];
                    self.counters.rejected[RejectReason::TooLate.index()] += 1;
                    out.rejected(Rejection {
                        reason: RejectReason::TooLate,
                        entity: name,
                        feed: feed.name.clone(),
                        ts,
                        value: (v / feed.scale).to_string(),
                        detail: format!(
                            "{} behind the entity's evaluation time; acceptance horizon {}",
                            human(tau - ts),
                            human(horizon)
                        ),
                        tag,
                    });
                    results.push(Err(RejectReason::TooLate));
                    continue;
                }
            } else {
                self.catch_up(e, ts, out);
            }
            let policy = self.plan.feeds[f].duplicates;
            let slot = &mut self.entities[e as usize].feeds[f];
            let outcome = slot.buf.insert(ts, v, policy);
            let accepted = match outcome {
                InsertOutcome::Duplicate => {
                    self.counters.duplicate += 1;
                    results.push(Ok(Accepted::Duplicate));
                    continue;
                }
                InsertOutcome::Ignored => {
                    self.counters.ignored += 1;
                    results.push(Ok(Accepted::Ignored));
                    continue;
                }
                InsertOutcome::Replaced { .. } => {
                    self.counters.replaced += 1;
                    Accepted::Replaced
                }
                InsertOutcome::Added => {
                    self.counters.added += 1;
                    Accepted::Added
                }
                InsertOutcome::New if late => {
                    self.counters.late += 1;
                    Accepted::Late
                }
                InsertOutcome::New => Accepted::OnTime,
            };
            self.counters.accepted += 1;
            slot.first_seen.get_or_insert(ts);
            slot.last_accepted = Some(slot.last_accepted.map_or(ts, |l| l.max(ts)));
            // Status goes by sample age (semantics.md): a late sample young enough at the
            // entity's evaluation time τ makes the feed ok too (at τ); an older one leaves it
            // as it is (a first sample that old is found stale when the entity is evaluated).
            let now = if late { tau.unwrap_or(ts) } else { ts };
            let feed = &self.plan.feeds[f];
            if slot.status != DataStatus::Ok
                && feed.stale.or(feed.offline).is_none_or(|b| now - ts < b)
            {
                let from = slot.status;
                slot.status = DataStatus::Ok;
                let last_sample = slot.last_accepted;
                let ent = &self.entities[e as usize];
                out.status(StatusEvent {
                    entity: ent.name.clone(),
                    feed: feed.name.clone(),
                    from,
                    to: DataStatus::Ok,
                    time: now,
                    last_sample,
                });
            }
            self.activate_rules(e, f);
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
            let index = &mut self.scratch.touch_index;
            if index.len() <= e as usize {
                index.resize(e as usize + 1, 0);
            }
            match index[e as usize] {
                0 => {
                    touched.push((e, late));
                    index[e as usize] = touched.len() as u32;
                }
                i => touched[i as usize - 1].1 |= late,
            }
            results.push(Ok(accepted));
        }
        for &(e, _) in &touched {
            self.scratch.touch_index[e as usize] = 0;
        }
        for (k, &(e, late)) in touched.iter().enumerate() {
            // Many entities evaluated at one instant: start loading the window starts of one
            // a few places ahead, so that its cache misses overlap with this one's work.
            if let Some(&(ahead, _)) = touched.get(k + 2 * PREFETCH_AHEAD) {
                crate::window::prefetch(&self.entities[ahead as usize]);
            }
            if let Some(&(ahead, _)) = touched.get(k + PREFETCH_AHEAD) {
                let ent = &self.entities[ahead as usize];
                crate::window::prefetch(ent.feeds.as_ptr());
                crate::window::prefetch(ent.rules.as_ptr());
            }
            if let Some(&(ahead, _)) = touched.get(k + PREFETCH_AHEAD / 2) {
                self.prefetch_windows(ahead, t);
            }
            let tau = self.entities[e as usize].tau.map_or(t, |tau| tau.max(t));
            self.entities[e as usize].tau = Some(tau);
            self.evaluate(e, tau, late, EvalCause::Reading, out);
            self.evict(e, tau);
            self.schedule(e);
        }
        self.scratch.touched = touched;
    }

    fn prefetch_windows(&self, e: EntityId, t: Millis) {
        let ent = &self.entities[e as usize];
        for (f, slot) in ent.feeds.iter().enumerate() {
            for &w in &self.feed_widths[f] {
                slot.buf.prefetch_window_start(t, w);
            }
        }
    }

    fn activate_rules(&mut self, e: EntityId, f: FeedId) {
        for i in 0..self.rules_by_feed[f].len() {
            let r = self.rules_by_feed[f][i];
            let ent = &mut self.entities[e as usize];
            if ent.rules[r].active || ent.rules[r].skipped {
                continue;
            }
            let rule = &self.plan.rules[r];
            if rule
                .required_tables
                .iter()
                .any(|&t| ent.table_rows[t].is_none())
            {
                ent.rules[r].skipped = true;
                self.counters.skipped_no_table[r] += 1;
            } else {
                ent.rules[r].active = true;
            }
        }
    }

    fn evict(&mut self, e: EntityId, tau: Millis) {
        let ent = &mut self.entities[e as usize];
        for (f, slot) in ent.feeds.iter_mut().enumerate() {
            // keep the newest sample whatever its age (`last(f)` and data status need it)
            if slot.buf.len() > 1 {
                let cut = (tau - self.retention[f]).min(slot.buf.newest_ts().unwrap_or(tau) - 1);
                slot.buf.evict_through(cut);
            }
        }
    }

    /// Fire the entity's own deadlines strictly before `t`, in order.
    fn catch_up(&mut self, e: EntityId, t: Millis, out: &mut dyn Sink) {
        while let Some(d) = self.entities[e as usize].next_deadline {
            if d >= t {
                break;
            }
            self.fire(e, d, out);
        }
    }

    fn fire(&mut self, e: EntityId, d: Millis, out: &mut dyn Sink) {
        let ent = &mut self.entities[e as usize];
        ent.next_deadline = None;
        let tau = ent.tau.map_or(d, |tau| tau.max(d));
        ent.tau = Some(tau);
        self.evaluate(e, tau, false, EvalCause::Deadline, out);
        self.schedule(e);
    }

    /// Compute and register the entity's next time-driven deadline after τ.
    fn schedule(&mut self, e: EntityId) {
        let plan = &self.plan;
        let ent = &self.entities[e as usize];
        let now = ent
            .tau
            .or_else(|| ent.feeds.iter().filter_map(|s| s.first_seen).min());
        let Some(now) = now else { return };
        let mut next: Option<Millis> = None;
        let later = |x: Millis| (x > now).then_some(x);
        for (f, slot) in ent.feeds.iter().enumerate() {
            let feed = &plan.feeds[f];
            let base = slot.last_accepted.or(slot.first_seen);
            if let Some(base) = base {
                match slot.status {
                    DataStatus::Ok | DataStatus::Unknown => {
                        next = min_opt(next, feed.stale.and_then(|s| later(base + s)));
                        if feed.stale.is_none() {
                            next = min_opt(next, feed.offline.and_then(|s| later(base + s)));
                        }
                    }
                    DataStatus::Stale => {
                        next = min_opt(next, feed.offline.and_then(|s| later(base + s)))
                    }
                    DataStatus::Offline => {}
                }
            }
        }
        for (r, rs) in ent.rules.iter().enumerate() {
            if !rs.active {
                continue;
            }
            let rule = &plan.rules[r];
            for &w in &rule.windows {
                let node = &plan.windows[w];
                let buf = &ent.feeds[node.feed].buf;
                if buf.is_empty() {
                    continue;
                }
                let change = match &node.func {
                    WindowFunc::Since { hour, minute, .. } => self.since_zones[w].map(|z| {
                        let anchor = z.anchor_before(now, *hour, *minute);
                        z.next_anchor(anchor, *hour, *minute) + 1
                    }),
                    f => buf.next_change(f, node.width, now, self.timings[node.feed]),
                };
                next = min_opt(next, change.and_then(later));
            }
            for (i, l) in rule.levels.iter().enumerate() {
                if let (Some(h), Some(s)) = (l.hold, rs.hold_since[i]) {
                    next = min_opt(next, later(s + h));
                }
            }
            if let (Some(d), Some(s)) = (rule.clear_after, rs.exit_since) {
                next = min_opt(next, later(s + d));
            }
            if let (Some(c), Some(s)) = (&rule.clear_when, rs.clear_since) {
                if let Some(h) = c.hold {
                    next = min_opt(next, later(s + h));
                }
            }
        }
        let ent = &mut self.entities[e as usize];
        ent.next_deadline = next;
        if let Some(d) = next {
            if ent.queued.is_none_or(|q| d < q) {
                self.queue_deadline(e, d);
            }
        }
    }

    /// Push the entity's live deadline entry for `d`, superseding any earlier one.
    fn queue_deadline(&mut self, e: EntityId, d: Millis) {
        let ent = &mut self.entities[e as usize];
        ent.deadline_gen += 1;
        ent.queued = Some(d);
        // an entity with a reorder delay waits until the watermark passes D + delay
        let due = if ent.delay > 0 { d + ent.delay + 1 } else { d };
        self.deadlines.push(Reverse((due, d, e, ent.deadline_gen)));
    }

    /// Update data status at `t`, then evaluate every active rule of the entity once.
    fn evaluate(
        &mut self,
        e: EntityId,
        t: Millis,
        late: bool,
        cause: EvalCause,
        out: &mut dyn Sink,
    ) {
        self.counters.evaluations += 1;
        self.update_status(e, t, out);
        self.scratch.gen += 1;
        let plan = Arc::clone(&self.plan);
        for (r, rule) in plan.rules.iter().enumerate() {
            let rs = &self.entities[e as usize].rules[r];
            if !rs.active {
                continue;
            }
            self.step_rule(e, r, rule, t, late, out);
            if self.cfg.trace {
                self.trace_rule(e, r, rule, t, cause, out);
            }
        }
    }

    /// Report one rule evaluation to the sink (trace mode).
    fn trace_rule(
        &mut self,
        e: EntityId,
        r: usize,
        rule: &RuleDef,
        t: Millis,
        cause: EvalCause,
        out: &mut dyn Sink,
    ) {
        let windows: Vec<(usize, Option<f64>)> = rule
            .windows
            .iter()
            .map(|&w| (w, self.window_value(e, w, t).num()))
            .collect();
        let ent = &self.entities[e as usize];
        let level = ent.rules[r].level.map(|l| rule.levels[l].name.as_str());
        out.evaluated(&Evaluation {
            rule: &rule.name,
            rule_index: r,
            entity: &ent.name,
            time: t,
            cause,
            windows: &windows,
            level,
        });
    }

    fn update_status(&mut self, e: EntityId, t: Millis, out: &mut dyn Sink) {
        for f in 0..self.plan.feeds.len() {
            let feed = &self.plan.feeds[f];
            let ent = &mut self.entities[e as usize];
            let slot = &mut ent.feeds[f];
            let Some(base) = slot.last_accepted.or(slot.first_seen) else {
                continue;
            };
            let age = t - base;
            let new = if feed.offline.is_some_and(|o| age >= o) {
                DataStatus::Offline
            } else if feed.stale.is_some_and(|s| age >= s) {
                DataStatus::Stale
            } else {
                slot.status
            };
            if new != slot.status && new != DataStatus::Ok {
                let from = slot.status;
                slot.status = new;
                let last_sample = slot.last_accepted;
                if from == DataStatus::Ok || from == DataStatus::Unknown {
                    // a `for` run is reset when its feed turns stale
                    for &r in &self.rules_by_feed[f] {
                        let rs = &mut ent.rules[r];
                        rs.hold_since.iter_mut().for_each(|h| *h = None);
                        rs.clear_since = None;
                    }
                }
                out.status(StatusEvent {
                    entity: ent.name.clone(),
                    feed: feed.name.clone(),
                    from,
                    to: new,
                    time: t,
                    last_sample,
                });
            }
        }
    }

    fn step_rule(
        &mut self,
        e: EntityId,
        r: usize,
        rule: &RuleDef,
        t: Millis,
        late: bool,
        out: &mut dyn Sink,
    ) {
        let mut conds = std::mem::take(&mut self.scratch.conds);
        conds.clear();
        for l in &rule.levels {
            let c = self.eval_bool(e, &l.when, t);
            conds.push(c);
        }
        // held values of a stale feed do not start (or keep) a `for` run
        let fresh = rule.feeds.iter().all(|&f| {
            !matches!(
                self.entities[e as usize].feeds[f].status,
                DataStatus::Stale | DataStatus::Offline
            )
        });
        let rs = &mut self.entities[e as usize].rules[r];
        // candidate: highest level whose condition has held for its `for`
        let mut candidate: Option<usize> = None;
        for (i, (level, &cond)) in rule.levels.iter().zip(conds.iter()).enumerate() {
            let held = match (level.hold, cond) {
                (_, None) => false,
                (None, Some(c)) => c,
                (Some(h), Some(c)) => {
                    if !c || !fresh {
                        rs.hold_since[i] = None;
                        false
                    } else {
                        let since = *rs.hold_since[i].get_or_insert(t);
                        t - since >= h
                    }
                }
            };
            if held {
                candidate = Some(i);
            }
        }
        let cur = rs.level;
        let cur_level = cur.map_or(-1, |c| c as isize);
        let cand_level = candidate.map_or(-1, |c| c as isize);
        // `clear when ... for d` is a property of the data: its run is tracked at every
        // evaluation, whatever the level.
        let cw = match &rule.clear_when {
            Some(cw) => {
                let v = self.eval_bool(e, &cw.cond, t);
                let rs = &mut self.entities[e as usize].rules[r];
                match v {
                    Some(true) => {
                        let since = *rs.clear_since.get_or_insert(t);
                        cw.hold.is_none_or(|h| t - since >= h)
                    }
                    Some(false) => {
                        rs.clear_since = None;
                        false
                    }
                    None => false,
                }
            }
            None => true,
        };
        let mut next = cur;
        if cand_level > cur_level {
            next = candidate;
        } else if let Some(c) = cur {
            let exit_c = self.exit_holds(e, rule, c, &conds, t);
            let rs = &mut self.entities[e as usize].rules[r];
            let exit_ok = match exit_c {
                Some(true) => {
                    let since = *rs.exit_since.get_or_insert(t);
                    rule.clear_after.is_none_or(|d| t - since >= d)
                }
                Some(false) => {
                    rs.exit_since = None;
                    false
                }
                None => false,
            };
            if exit_ok {
                let mut landing = None;
                for j in (0..c).rev() {
                    if self.exit_holds(e, rule, j, &conds, t) != Some(true) {
                        landing = Some(j);
                        break;
                    }
                }
                // With `clear when`, only that condition ends the episode (and only once no
                // level's entry holds); the rule rests at its lowest level meanwhile.
                next = match landing {
                    None if rule.clear_when.is_some() => {
                        if cw && candidate.is_none() {
                            None
                        } else {
                            Some(candidate.unwrap_or(0))
                        }
                    }
                    l => l,
                };
            }
        }
        self.scratch.conds = conds;
        if next == cur {
            return;
        }
        let kind = match (cur, next) {
            (None, _) => TransitionKind::Raise,
            (_, None) => TransitionKind::Clear,
            (Some(a), Some(b)) if b > a => TransitionKind::Escalate,
            _ => TransitionKind::Downgrade,
        };
        let rs = &mut self.entities[e as usize].rules[r];
        rs.level = next;
        rs.seq += 1;
        rs.level_since = t;
        if kind == TransitionKind::Raise {
            rs.episode_start = t;
        }
        rs.exit_since = None;
        let seq = rs.seq;
        self.counters.transitions[r][TransitionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0)] += 1;
        if let Some(l) = next {
            self.counters.entered[r][l] += 1;
        }
        let (branch, crossing) = match next {
            Some(l) if rule.levels[l].when.looks_ahead().is_some() => {
                self.classify(e, &rule.levels[l].when, t)
            }
            _ => (Branch::Observed, None),
        };
        let mut warning = self.build_warning(e, rule, seq, kind, cur, next, t, late);
        warning.branch = branch;
        warning.expected_crossing = crossing;
        out.warning(warning);
    }

    /// Whether level `i`'s exit holds: its `exit when`, else its `when` no longer holding.
    fn exit_holds(
        &mut self,
        e: EntityId,
        rule: &RuleDef,
        i: usize,
        conds: &[Option<bool>],
        t: Millis,
    ) -> Option<bool> {
        match &rule.levels[i].exit {
            Some(x) => self.eval_bool(e, x, t),
            None => conds[i].map(|c| !c),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_warning(
        &mut self,
        e: EntityId,
        rule: &RuleDef,
        seq: u64,
        kind: TransitionKind,
        from: Option<usize>,
        to: Option<usize>,
        t: Millis,
        late: bool,
    ) -> Warning {
        let values: Vec<(String, Option<f64>)> = rule
            .values
            .iter()
            .map(|(k, x)| (k.clone(), self.eval_num(e, x, t)))
            .collect();
        let thresholds: Vec<(String, Option<f64>)> = rule
            .thresholds
            .iter()
            .map(|(k, x)| (k.clone(), self.eval_num(e, x, t)))
            .collect();
        let level_name = |l: Option<usize>| l.map(|l| rule.levels[l].name.clone());
        let message = self.render(e, rule, &rule.message, to, t);
        let messages = rule
            .localized
            .iter()
            .map(|(lang, parts)| (lang.clone(), self.render(e, rule, parts, to, t)))
            .collect();
        let now = (self.cfg.now)();
        let delayed = self.cfg.clock == ClockMode::Wall
            && self
                .wall_now()
                .is_some_and(|w| w - t > self.cfg.delayed_after);
        Warning {
            rule: rule.name.clone(),
            entity: self.entities[e as usize].name.clone(),
            seq,
            kind,
            from: level_name(from),
            to: level_name(to),
            event_time: t,
            emitted_at: now,
            late,
            delayed,
            values,
            thresholds,
            message,
            messages,
            branch: Branch::Observed,
            expected_crossing: None,
            shadow: rule.shadow,
            provenance: self.provenance.clone(),
        }
    }

    /// A message template rendered for entity `e` at `t`, `to` being the level entered.
    fn render(
        &mut self,
        e: EntityId,
        rule: &RuleDef,
        parts: &[TemplatePart],
        to: Option<usize>,
        t: Millis,
    ) -> String {
        let mut message = String::new();
        for part in parts {
            use std::fmt::Write;
            match part {
                TemplatePart::Lit(s) => message.push_str(s),
                TemplatePart::Entity => message.push_str(&self.entities[e as usize].name),
                TemplatePart::Rule => message.push_str(&rule.name),
                TemplatePart::Level => {
                    message.push_str(to.map_or("clear", |l| rule.levels[l].name.as_str()))
                }
                TemplatePart::Value {
                    expr, precision, ..
                } => match (self.eval_num(e, expr, t), precision) {
                    (Some(v), Some(p)) => {
                        let _ = write!(message, "{v:.*}", *p as usize);
                    }
                    (Some(v), None) => {
                        let _ = write!(message, "{}", round_display(v));
                    }
                    (None, _) => message.push_str("n/a"),
                },
                TemplatePart::Cell { table, column } => {
                    match self.plan.tables[*table].cell(&self.entities[e as usize].name, *column) {
                        Some(Cell::Text(s)) => message.push_str(s),
                        Some(Cell::Num(x)) => {
                            let _ = write!(message, "{}", round_display(*x));
                        }
                        None => message.push_str("n/a"),
                    }
                }
            }
        }
        message
    }

    /// Which branch of a level's condition holds at `t`, and for a forecast or projected
    /// branch the expected crossing time: the shortest horizon at which the branch holds,
    /// found by bisection (16 steps: within 1/65536 of the horizon), assuming, as for rain
    /// accumulations and rising stages, that what is looked ahead at grows with the horizon.
    fn classify(&mut self, e: EntityId, when: &Expr, t: Millis) -> (Branch, Option<Millis>) {
        let mut forecast: Option<Option<Millis>> = None;
        let mut projected: Option<Option<Millis>> = None;
        for d in when.disjuncts() {
            let ahead = d.looks_ahead();
            if self.eval_bool(e, d, t) != Some(true) {
                continue;
            }
            let Some(is_forecast) = ahead else {
                return (Branch::Observed, None);
            };
            let c = self.crossing(e, d, t);
            let slot = if is_forecast {
                &mut forecast
            } else {
                &mut projected
            };
            *slot = Some(match *slot {
                Some(prev) => min_opt(prev, c),
                None => c,
            });
        }
        match (forecast, projected) {
            (Some(c), _) => (Branch::Forecast, c),
            (None, Some(c)) => (Branch::Projected, c),
            _ => (Branch::Observed, None),
        }
    }

    /// The expected crossing time of a branch that holds over its full horizon.
    fn crossing(&mut self, e: EntityId, d: &Expr, t: Millis) -> Option<Millis> {
        let mut horizon: Millis = 0;
        let mut time_to: Option<Ahead> = None;
        d.walk(&mut |x| {
            if let Expr::Ahead(a) = x {
                horizon = horizon.max(a.horizon);
                if matches!(a.kind, AheadKind::TimeTo { .. }) {
                    time_to = Some(a.clone());
                }
            }
        });
        // `time_to(...)` says when: τ plus the time it computes
        if let Some(a) = time_to {
            let hours = self.eval_ahead(e, &a, t)?;
            return hours
                .is_finite()
                .then(|| t + (hours * HOUR as f64).round() as Millis);
        }
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..16 {
            let mid = (lo + hi) / 2.0;
            self.scratch.horizon_scale = Some(mid);
            if self.eval_bool(e, d, t) == Some(true) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.scratch.horizon_scale = None;
        Some(t + (horizon as f64 * hi).round() as Millis)
    }

    /// `forecast`, `forecast_max` and `project` at `t` for entity `e`.
    fn eval_ahead(&mut self, e: EntityId, a: &Ahead, t: Millis) -> Option<f64> {
        let h = match self.scratch.horizon_scale {
            Some(k) => (a.horizon as f64 * k).round() as Millis,
            None => a.horizon,
        };
        match &a.kind {
            AheadKind::ProjectDepth { window, width } => {
                let s = self.window_value(e, *window, t).num()?;
                Some(s * h as f64 / *width as f64)
            }
            AheadKind::ProjectLevel { last, rate } => {
                let l = self.window_value(e, *last, t).num()?;
                let r = self.window_value(e, *rate, t).num()?;
                Some(l + r * h as f64 / HOUR as f64)
            }
            AheadKind::TimeTo { last, rate, target } => {
                let l = self.window_value(e, *last, t).num()?;
                let r = self.window_value(e, *rate, t).num()?;
                let goal = self.eval_num(e, target, t)?;
                Some(if l >= goal {
                    0.0
                } else if r > 0.0 {
                    (goal - l) / r
                } else {
                    f64::INFINITY
                })
            }
            AheadKind::ForecastSum { feed } => self.forecast_value(e, *feed, t, h, false),
            AheadKind::ForecastMax { feed } => self.forecast_value(e, *feed, t, h, true),
        }
    }

    fn window_value(&mut self, e: EntityId, w: usize, t: Millis) -> WindowValue {
        let gen = self.scratch.gen;
        let cached = self.scratch.windows[w];
        if cached.0 == gen {
            return cached.1;
        }
        let v = self.window_at(e, w, t);
        self.scratch.windows[w] = (gen, v);
        v
    }

    fn window_at(&self, e: EntityId, w: usize, t: Millis) -> WindowValue {
        let node = &self.plan.windows[w];
        let buf = &self.entities[e as usize].feeds[node.feed].buf;
        let timing = self.timings[node.feed];
        match &node.func {
            WindowFunc::Since { hour, minute, .. } => match self.since_zones[w] {
                Some(z) => {
                    let anchor = z.anchor_before(t, *hour, *minute);
                    buf.eval(&node.func, Some(t - anchor), t, timing)
                }
                None => WindowValue::None,
            },
            f => buf.eval(f, node.width, t, timing),
        }
    }

    fn eval_num(&mut self, e: EntityId, x: &Expr, t: Millis) -> Option<f64> {
        match x {
            Expr::Num(v) => Some(*v),
            Expr::Bool(_) | Expr::Not(_) => None,
            Expr::Window(w) => self.window_value(e, *w, t).num(),
            Expr::Column {
                table,
                column,
                default,
            } => {
                let row = self.entities[e as usize].table_rows[*table];
                let cell = row.and_then(|row| {
                    self.plan.tables[*table]
                        .cells
                        .get(*column)?
                        .get(row)?
                        .as_ref()
                });
                match cell {
                    Some(Cell::Num(v)) => Some(*v),
                    _ => *default,
                }
            }
            Expr::Group {
                func,
                window,
                table,
                column,
                exclude_self,
            } => {
                let gi = self
                    .groups
                    .iter()
                    .position(|g| g.table == *table && g.column == *column)?;
                let group = self.entities[e as usize].groups[gi]?;
                let mut vals = std::mem::take(&mut self.scratch.group_values);
                vals.clear();
                for &m in &self.groups[gi].members[group] {
                    if *exclude_self && m == e {
                        continue;
                    }
                    if let Some(v) = self.window_at(m, *window, t).num() {
                        vals.push(v);
                    }
                }
                let r = combine(*func, &mut vals);
                self.scratch.group_values = vals;
                r
            }
            Expr::Ahead(a) => self.eval_ahead(e, a, t),
            Expr::Neg(a) => self.eval_num(e, a, t).map(|v| -v),
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.eval_num(e, a, t)?, self.eval_num(e, b, t)?);
                match op {
                    BinOp::Add => Some(a + b),
                    BinOp::Sub => Some(a - b),
                    BinOp::Mul => Some(a * b),
                    BinOp::Div => (b != 0.0).then(|| a / b),
                    _ => None,
                }
            }
        }
    }

    fn eval_bool(&mut self, e: EntityId, x: &Expr, t: Millis) -> Option<bool> {
        match x {
            Expr::Bool(b) => Some(*b),
            Expr::Not(a) => self.eval_bool(e, a, t).map(|b| !b),
            Expr::Window(w) => match self.window_value(e, *w, t) {
                WindowValue::Bool(b) => Some(b),
                _ => None,
            },
            Expr::Binary(BinOp::And, a, b) => match self.eval_bool(e, a, t) {
                Some(false) => Some(false),
                l => match (l, self.eval_bool(e, b, t)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Expr::Binary(BinOp::Or, a, b) => match self.eval_bool(e, a, t) {
                Some(true) => Some(true),
                l => match (l, self.eval_bool(e, b, t)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.eval_num(e, a, t)?, self.eval_num(e, b, t)?);
                Some(match op {
                    BinOp::Lt => a < b,
                    BinOp::Le => a <= b,
                    BinOp::Gt => a > b,
                    BinOp::Ge => a >= b,
                    BinOp::Eq => a == b,
                    BinOp::Ne => a != b,
                    _ => return None,
                })
            }
            _ => None,
        }
    }
}

fn combine(func: GroupFunc, vals: &mut [f64]) -> Option<f64> {
    if func == GroupFunc::Count {
        return Some(vals.len() as f64);
    }
    if vals.is_empty() {
        return None;
    }
    Some(match func {
        GroupFunc::Mean => vals.iter().sum::<f64>() / vals.len() as f64,
        GroupFunc::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
        GroupFunc::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        GroupFunc::Median => {
            vals.sort_by(f64::total_cmp);
            let n = vals.len();
            if n % 2 == 1 {
                vals[n / 2]
            } else {
                (vals[n / 2 - 1] + vals[n / 2]) / 2.0
            }
        }
        GroupFunc::Count => vals.len() as f64,
    })
}

fn max_opt(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn round_display(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}
