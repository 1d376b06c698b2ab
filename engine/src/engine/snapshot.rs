//! Engine state as bytes, and back: the body of a checkpoint.
//!
//! A snapshot holds everything the engine has learnt from its input — every entity's samples,
//! data status, levels, `for`/`clear after` timers and transition numbers, held (reordered)
//! readings, deadlines, forecasts (stored and waiting for their as-of time), clocks and
//! counters — and nothing derived from the plan, which the
//! restoring side supplies. It names the rule set it was taken under; restoring it under
//! another one is refused (a rule reload maps state by name instead).

use std::cmp::Reverse;
use std::sync::Arc;

use forewarn_rules::ir::{Millis, Plan};
use serde::{Deserialize, Serialize};

use super::forecasts::{Forecasts, ForecastsState};
use super::ids::{EntityKey, IdMap};
use super::{Counters, Engine, EngineConfig, EntityId, EntityState, GroupIndex, Pending};

/// Version of the snapshot layout; bumped on any incompatible change.
/// Version 3 added the forecasts (stored and queued).
pub const SNAPSHOT_VERSION: u32 = 3;

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not decode.
    #[error("engine snapshot does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// Written by an incompatible forewarn.
    #[error("engine snapshot version {found}; this forewarn reads version {expected}")]
    Version {
        /// Version in the snapshot.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// Taken under other rules.
    #[error("engine snapshot was taken under rule set {found}, not {expected}")]
    RuleSet {
        /// Rule set of the snapshot.
        found: String,
        /// Rule set of the plan given.
        expected: String,
    },
    /// Internally inconsistent (sizes that do not match the plan).
    #[error("engine snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    ruleset: &'a str,
    entities: &'a [EntityState],
    groups: &'a [GroupIndex],
    deadlines: Vec<(Millis, Millis, EntityId, u64)>,
    pending: Vec<Vec<Pending>>,
    pending_seq: u64,
    max_ts: Option<Millis>,
    stream_max: Option<Millis>,
    wall: Option<Millis>,
    watermark: Option<Millis>,
    counters: &'a Counters,
    forecasts: ForecastsState,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    version: u32,
    ruleset: String,
    entities: Vec<EntityState>,
    groups: Vec<GroupIndex>,
    deadlines: Vec<(Millis, Millis, EntityId, u64)>,
    pending: Vec<Vec<Pending>>,
    pending_seq: u64,
    max_ts: Option<Millis>,
    stream_max: Option<Millis>,
    wall: Option<Millis>,
    watermark: Option<Millis>,
    counters: Counters,
    forecasts: ForecastsState,
}

impl Engine {
    /// The engine's state as bytes (see [`Engine::restore`]).
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotRef {
            version: SNAPSHOT_VERSION,
            ruleset: &self.plan.ruleset_hash,
            entities: &self.entities,
            groups: &self.groups,
            deadlines: self.deadlines.iter().map(|Reverse(d)| *d).collect(),
            pending: self
                .pending
                .iter()
                .map(|q| q.iter().copied().collect())
                .collect(),
            pending_seq: self.pending_seq,
            max_ts: self.max_ts,
            stream_max: self.stream_max,
            wall: self.wall,
            watermark: self.watermark,
            counters: &self.counters,
            forecasts: self.forecasts.state(),
        };
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(&snap).unwrap_or_default()
    }

    /// An engine for `plan` in the state a [`Engine::snapshot`] taken under the same rule set
    /// recorded: pushing the same input into it gives the same output as into the engine the
    /// snapshot was taken from.
    pub fn restore(
        plan: impl Into<Arc<Plan>>,
        cfg: EngineConfig,
        bytes: &[u8],
    ) -> Result<Engine, SnapshotError> {
        let snap: SnapshotOwned = postcard::from_bytes(bytes)?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: snap.version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let mut engine = Engine::new(plan, cfg);
        if snap.ruleset != engine.plan.ruleset_hash {
            return Err(SnapshotError::RuleSet {
                found: snap.ruleset,
                expected: engine.plan.ruleset_hash.clone(),
            });
        }
        let plan = Arc::clone(&engine.plan);
        let inconsistent = |what: &str| Err(SnapshotError::Inconsistent(what.to_string()));
        if snap.groups.len() != engine.groups.len() || snap.pending.len() != plan.feeds.len() {
            return inconsistent("group or feed count differs from the plan");
        }
        let n = snap.entities.len();
        for e in &snap.entities {
            if e.feeds.len() != plan.feeds.len()
                || e.rules.len() != plan.rules.len()
                || e.table_rows.len() != plan.tables.len()
                || e.groups.len() != engine.groups.len()
                || e.rules
                    .iter()
                    .zip(&plan.rules)
                    .any(|(s, r)| s.hold_since.len() != r.levels.len())
            {
                return inconsistent("an entity's state does not fit the plan");
            }
        }
        let bad_id = |id: EntityId| id as usize >= n;
        if snap.deadlines.iter().any(|d| bad_id(d.2))
            || snap.pending.iter().flatten().any(|p| bad_id(p.entity))
            || snap
                .groups
                .iter()
                .flat_map(|g| g.members.iter().flatten())
                .any(|&id| bad_id(id))
        {
            return inconsistent("an entity id out of range");
        }
        let mut ids = IdMap::default();
        ids.reserve(n);
        for (i, e) in snap.entities.iter().enumerate() {
            ids.insert(EntityKey::new(&e.name), i as EntityId);
        }
        if ids.len() != n {
            return inconsistent("an entity appears twice");
        }
        if snap.counters.transitions.len() != plan.rules.len()
            || snap.counters.entered.len() != plan.rules.len()
        {
            return inconsistent("counters do not fit the plan");
        }
        engine.forecasts =
            Forecasts::from_state(snap.forecasts, n).map_err(SnapshotError::Inconsistent)?;
        engine.ids = ids;
        engine.entities = snap.entities;
        engine.groups = snap.groups;
        engine.deadlines = snap.deadlines.into_iter().map(Reverse).collect();
        engine.pending = snap
            .pending
            .into_iter()
            .map(|v| v.into_iter().collect())
            .collect();
        engine.pending_seq = snap.pending_seq;
        engine.max_ts = snap.max_ts;
        engine.stream_max = snap.stream_max;
        engine.wall = snap.wall;
        engine.watermark = snap.watermark;
        engine.counters = snap.counters;
        Ok(engine)
    }
}
