//! Replacing the rules of a running engine, keeping the state the new rules can still use.
//!
//! State is matched **by name**, as a Flink savepoint maps operator state by uid and
//! Prometheus keeps the alert state of a same-named rule across a reload:
//!
//! * samples (and data status, first / last sample) per (entity, feed), for every feed the new
//!   rules still declare under the same name and unit dimension;
//! * level, sequence number, `for` / `clear after` / `clear when` timers per (entity, rule),
//!   for every rule the new rules still declare, level by level name;
//! * counters per rule (and per level) by name.
//!
//! A warning whose rule or level no longer exists (or whose entity lost the table row the rule
//! needs) ends with an explicit `clear`. Every (entity, rule) whose inputs changed — the rule's
//! conditions, a threshold cell of the entity, its group's members, a feed's unit or budgets —
//! is evaluated at once at the entity's evaluation time τ; the others are left exactly as they
//! were, so reloading the same rules changes nothing. `docs/semantics.md` ("Reloading rules")
//! is the user-facing description.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use forewarn_rules::ir::{
    Cell, Expr, FeedDef, FeedId, Millis, Plan, RuleDef, RuleId, TemplatePart,
};
use sha2::{Digest, Sha256};

use super::{
    ClockMode, Counters, Engine, EntityId, EntityState, FeedSlot, GroupIndex, Pending, RuleState,
};
use crate::record::{DataStatus, Provenance, Sink, TransitionKind, Warning};
use crate::window::SampleBuffer;

/// Why a plan cannot replace the running one. The engine is left unchanged.
///
/// Only a plan the compiler would never produce is refused: state is matched by name, so
/// names must be unique, and indices must point into the plan. Reloading the same rules, or
/// rules sharing nothing with the old ones, is not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// Two feeds with one name.
    #[error("the new rules declare feed {0:?} twice (state is matched by feed name)")]
    DuplicateFeed(String),
    /// Two rules with one name.
    #[error("the new rules declare rule {0:?} twice (state is matched by rule name)")]
    DuplicateRule(String),
    /// Two levels of one rule with one name.
    #[error("rule {rule:?} of the new rules has level {level:?} twice")]
    DuplicateLevel {
        /// The rule.
        rule: String,
        /// The repeated level.
        level: String,
    },
    /// An index that points outside the plan (a feed, window or table that does not exist).
    #[error("the new plan is inconsistent: {0}")]
    Inconsistent(String),
}

/// Why a reload ended a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearReason {
    /// The rule is not in the new rules.
    RuleRemoved,
    /// The rule is, but its current level is not (renamed or removed).
    LevelRemoved,
    /// The entity has no row in a table the new rule needs, so the rule no longer evaluates
    /// it.
    NoTableRow {
        /// The table.
        table: String,
    },
}

/// A warning a reload cleared (the `clear` transition itself went to the sink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadClear {
    /// Rule name.
    pub rule: String,
    /// Entity id.
    pub entity: String,
    /// The level that ended.
    pub level: String,
    /// Sequence number of the `clear` transition.
    pub seq: u64,
    /// Its event time: the entity's evaluation time τ.
    pub time: Millis,
    /// Why.
    pub reason: ClearReason,
}

/// History a feed's new windows need that the engine did not keep: samples stamped in
/// `(from, to]` (half-open like a window). The caller may warm it from a history store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmup {
    /// Feed name.
    pub feed: String,
    /// Exclusive start (the oldest instant the new windows reach back to, for the entity
    /// evaluated earliest).
    pub from: Millis,
    /// Inclusive end (the oldest instant the engine kept, for the entity evaluated last).
    pub to: Millis,
}

/// A sample from a history store, to warm a window a reload lengthened.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmSample {
    /// Entity id.
    pub entity: String,
    /// Feed name.
    pub feed: String,
    /// Event time, UTC ms.
    pub ts: Millis,
    /// The value in force at `ts`, in the feed's declared unit (as received).
    pub value: f64,
}

/// What a reload did. Names are in plan order (new plan; old plan for what was removed),
/// entities in the order the engine first saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Rule-set hash before.
    pub ruleset_before: String,
    /// Rule-set hash after.
    pub ruleset_after: String,
    /// Feeds declared before and after, same unit dimension: samples kept.
    pub feeds_kept: Vec<String>,
    /// Feeds declared before and after with another unit dimension (quantity or canonical
    /// unit): their samples, held readings and data status were dropped; they start empty.
    pub feeds_emptied: Vec<String>,
    /// Feeds no longer declared: samples and held readings dropped.
    pub feeds_dropped: Vec<String>,
    /// New feeds (empty).
    pub feeds_added: Vec<String>,
    /// Rules kept with the same level names (in the same order): state kept.
    pub rules_kept: Vec<String>,
    /// Rules kept whose level names changed: state kept level by level name; a warning at a
    /// level that no longer exists was cleared.
    pub rules_relevelled: Vec<String>,
    /// Rules no longer declared: their warnings were cleared, their state and counters dropped.
    pub rules_removed: Vec<String>,
    /// New rules (fresh state, counters at 0).
    pub rules_added: Vec<String>,
    /// Warnings ended by the reload, each with a `clear` transition emitted.
    pub warnings_cleared: Vec<ReloadClear>,
    /// Kept feeds whose new windows reach further back than the samples kept.
    pub needs_warmup: Vec<Warmup>,
    /// Samples put into windows from the caller's history ([`Engine::reload_warm`]).
    pub warmed: u64,
    /// Entities evaluated at once because an input of one of their rules changed.
    pub entities_reevaluated: Vec<String>,
    /// Held (reorder) readings of dropped or emptied feeds, discarded.
    pub pending_discarded: u64,
}

impl ReloadReport {
    /// Nothing changed: same feeds, same rules, no warning cleared, nothing re-evaluated,
    /// nothing missing.
    pub fn is_noop(&self) -> bool {
        self.feeds_emptied.is_empty()
            && self.feeds_dropped.is_empty()
            && self.feeds_added.is_empty()
            && self.rules_relevelled.is_empty()
            && self.rules_removed.is_empty()
            && self.rules_added.is_empty()
            && self.warnings_cleared.is_empty()
            && self.needs_warmup.is_empty()
            && self.entities_reevaluated.is_empty()
            && self.pending_discarded == 0
    }
}

/// Old and new plan matched by name.
struct Mapping {
    /// Per new feed: the old feed of that name and unit dimension.
    feed_old: Vec<Option<FeedId>>,
    /// Per old feed: the new feed it is kept as.
    feed_new: Vec<Option<FeedId>>,
    /// Per new rule: the old rule of that name.
    rule_old: Vec<Option<RuleId>>,
    /// Per old rule: the new rule of that name.
    rule_new: Vec<Option<RuleId>>,
    /// Per new rule, per level: the old level of that name (if the rule is kept).
    level_old: Vec<Vec<Option<usize>>>,
    /// Per old rule, per level: the new level of that name (if the rule is kept).
    level_new: Vec<Vec<Option<usize>>>,
}

fn same_dimension(a: &FeedDef, b: &FeedDef) -> bool {
    a.quantity == b.quantity && a.unit == b.unit
}

impl Mapping {
    fn new(old: &Plan, new: &Plan) -> Mapping {
        let feed_old: Vec<Option<FeedId>> = new
            .feeds
            .iter()
            .map(|f| {
                old.feed_by_name(&f.name)
                    .filter(|&o| same_dimension(&old.feeds[o], f))
            })
            .collect();
        let mut feed_new = vec![None; old.feeds.len()];
        for (f, o) in feed_old.iter().enumerate() {
            if let Some(o) = *o {
                feed_new[o] = Some(f);
            }
        }
        let rule_by_name = |p: &Plan, name: &str| p.rules.iter().position(|r| r.name == name);
        let rule_old: Vec<Option<RuleId>> = new
            .rules
            .iter()
            .map(|r| rule_by_name(old, &r.name))
            .collect();
        let rule_new: Vec<Option<RuleId>> = old
            .rules
            .iter()
            .map(|r| rule_by_name(new, &r.name))
            .collect();
        let levels = |from: &RuleDef, to: Option<&RuleDef>| -> Vec<Option<usize>> {
            from.levels
                .iter()
                .map(|l| to?.levels.iter().position(|m| m.name == l.name))
                .collect()
        };
        let level_old = new
            .rules
            .iter()
            .zip(&rule_old)
            .map(|(r, o)| levels(r, o.map(|o| &old.rules[o])))
            .collect();
        let level_new = old
            .rules
            .iter()
            .zip(&rule_new)
            .map(|(r, n)| levels(r, n.map(|n| &new.rules[n])))
            .collect();
        Mapping {
            feed_old,
            feed_new,
            rule_old,
            rule_new,
            level_old,
            level_new,
        }
    }

    /// The plan-level part of the report.
    fn report(&self, old: &Plan, new: &Plan) -> ReloadReport {
        let mut rep = ReloadReport {
            ruleset_before: old.ruleset_hash.clone(),
            ruleset_after: new.ruleset_hash.clone(),
            ..ReloadReport::default()
        };
        for (f, feed) in new.feeds.iter().enumerate() {
            let name = feed.name.clone();
            match (self.feed_old[f], old.feed_by_name(&feed.name)) {
                (Some(_), _) => rep.feeds_kept.push(name),
                (None, Some(_)) => rep.feeds_emptied.push(name),
                (None, None) => rep.feeds_added.push(name),
            }
        }
        for feed in &old.feeds {
            if new.feed_by_name(&feed.name).is_none() {
                rep.feeds_dropped.push(feed.name.clone());
            }
        }
        for (r, rule) in new.rules.iter().enumerate() {
            let name = rule.name.clone();
            match self.rule_old[r] {
                None => rep.rules_added.push(name),
                Some(o) => {
                    let names = |x: &RuleDef| -> Vec<String> {
                        x.levels.iter().map(|l| l.name.clone()).collect()
                    };
                    if names(rule) == names(&old.rules[o]) {
                        rep.rules_kept.push(name)
                    } else {
                        rep.rules_relevelled.push(name)
                    }
                }
            }
        }
        for (r, rule) in old.rules.iter().enumerate() {
            if self.rule_new[r].is_none() {
                rep.rules_removed.push(rule.name.clone());
            }
        }
        rep
    }
}

/// Refuse a plan whose names are ambiguous or whose indices point outside it.
fn check_plan(p: &Plan) -> Result<(), ReloadError> {
    let mut seen = HashSet::new();
    for f in &p.feeds {
        if !seen.insert(f.name.as_str()) {
            return Err(ReloadError::DuplicateFeed(f.name.clone()));
        }
    }
    seen.clear();
    for r in &p.rules {
        if !seen.insert(r.name.as_str()) {
            return Err(ReloadError::DuplicateRule(r.name.clone()));
        }
        let mut levels = HashSet::new();
        for l in &r.levels {
            if !levels.insert(l.name.as_str()) {
                return Err(ReloadError::DuplicateLevel {
                    rule: r.name.clone(),
                    level: l.name.clone(),
                });
            }
        }
    }
    let (nf, nw, nt) = (p.feeds.len(), p.windows.len(), p.tables.len());
    if let Some(w) = p.windows.iter().find(|w| w.feed >= nf) {
        return Err(ReloadError::Inconsistent(format!(
            "window {} reads feed #{}, which does not exist",
            w.label, w.feed
        )));
    }
    for r in &p.rules {
        let mut ok = r.feeds.iter().all(|&f| f < nf)
            && r.windows.iter().all(|&w| w < nw)
            && r.required_tables.iter().all(|&t| t < nt);
        r.walk_exprs(&mut |x| match x {
            Expr::Window(w) => ok &= *w < nw,
            Expr::Column { table, .. } => ok &= *table < nt,
            Expr::Group { window, table, .. } => ok &= *window < nw && *table < nt,
            _ => {}
        });
        for part in &r.message {
            if let TemplatePart::Cell { table, .. } = part {
                ok &= *table < nt;
            }
        }
        if !ok {
            return Err(ReloadError::Inconsistent(format!(
                "rule {} refers to a feed, window or table that does not exist",
                r.name
            )));
        }
    }
    Ok(())
}

/// Per group index, per group: a digest of the members' names, in member order (the order a
/// group aggregate combines them in).
fn group_digests(groups: &[GroupIndex], entities: &[EntityState]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| {
            g.members
                .iter()
                .map(|ms| {
                    let mut h = Sha256::new();
                    for &m in ms {
                        h.update(entities[m as usize].name.as_bytes());
                        h.update([0u8]);
                    }
                    format!("{:x}", h.finalize())
                })
                .collect()
        })
        .collect()
}

/// Renders what a rule's transitions depend on for one entity, names and values resolved:
/// two rules (of two plans) with the same key step the same way on the same samples and
/// state. Messages, reported values and reported thresholds are left out (they shape records,
/// not transitions).
struct KeyCtx<'a> {
    plan: &'a Plan,
    groups: &'a [GroupIndex],
    digests: &'a [Vec<String>],
    ent: &'a EntityState,
}

/// A rule key, hashed (a reload keeps one per entity and rule).
type Key = [u8; 32];

impl KeyCtx<'_> {
    /// The rule's key for the entity, hashed; `buf` is scratch space.
    fn digest(&self, rule: &RuleDef, buf: &mut String) -> Key {
        buf.clear();
        self.rule(rule, buf);
        Sha256::digest(buf.as_bytes()).into()
    }

    fn rule(&self, rule: &RuleDef, s: &mut String) {
        let mut feeds: Vec<&FeedDef> = rule.feeds.iter().map(|&f| &self.plan.feeds[f]).collect();
        feeds.sort_by(|a, b| a.name.cmp(&b.name));
        for f in feeds {
            // a feed's status (by its budgets) decides whether `for` runs may start
            let _ = write!(
                s,
                "on {:?} {:?} {:?} {:?} {:?};",
                f.name, f.quantity, f.unit, f.stale, f.offline
            );
        }
        for l in &rule.levels {
            let _ = write!(s, "level {:?} for {:?} when ", l.name, l.hold);
            self.expr(&l.when, s);
            if let Some(x) = &l.exit {
                s.push_str(" exit ");
                self.expr(x, s);
            }
            s.push(';');
        }
        let _ = write!(s, "clear after {:?};", rule.clear_after);
        if let Some(c) = &rule.clear_when {
            let _ = write!(s, "clear when for {:?} ", c.hold);
            self.expr(&c.cond, s);
        }
    }

    fn window(&self, w: usize, s: &mut String) {
        let node = &self.plan.windows[w];
        let f = &self.plan.feeds[node.feed];
        let _ = write!(
            s,
            "[{:?} {:?} {:?} stale {:?} interval {:?} {:?} {:?}]",
            f.name, f.quantity, f.unit, f.stale, f.interval, node.func, node.width
        );
    }

    fn expr(&self, x: &Expr, s: &mut String) {
        match x {
            Expr::Num(v) => {
                let _ = write!(s, "n{:x}", v.to_bits());
            }
            Expr::Bool(b) => {
                let _ = write!(s, "{b}");
            }
            Expr::Window(w) => self.window(*w, s),
            Expr::Column {
                table,
                column,
                default,
            } => {
                // what `eval_num` reads for this entity: the cell, else the default
                let cell = self.ent.table_rows[*table].and_then(|row| {
                    self.plan.tables[*table]
                        .cells
                        .get(*column)?
                        .get(row)?
                        .as_ref()
                });
                let v = match cell {
                    Some(Cell::Num(v)) => Some(*v),
                    _ => *default,
                };
                let _ = write!(s, "c{:?}", v.map(f64::to_bits));
            }
            Expr::Group {
                func,
                window,
                table,
                column,
                exclude_self,
            } => {
                let members = self
                    .groups
                    .iter()
                    .position(|g| g.table == *table && g.column == *column)
                    .and_then(|gi| Some(self.digests[gi][self.ent.groups[gi]?].as_str()));
                let _ = write!(s, "g({func:?} {exclude_self} ");
                self.window(*window, s);
                let _ = write!(s, " {members:?})");
            }
            Expr::Ahead(a) => {
                // the windows a projection reads are state; a forecast is the store's
                let _ = write!(s, "(ahead {} ", a.horizon);
                match &a.kind {
                    forewarn_rules::ir::AheadKind::ForecastSum { feed } => {
                        let _ = write!(s, "fsum {feed}");
                    }
                    forewarn_rules::ir::AheadKind::ForecastMax { feed } => {
                        let _ = write!(s, "fmax {feed}");
                    }
                    forewarn_rules::ir::AheadKind::ProjectDepth { window, width } => {
                        let _ = write!(s, "pdepth {width} ");
                        self.window(*window, s);
                    }
                    forewarn_rules::ir::AheadKind::ProjectLevel { last, rate } => {
                        s.push_str("plevel ");
                        self.window(*last, s);
                        s.push(' ');
                        self.window(*rate, s);
                    }
                    forewarn_rules::ir::AheadKind::TimeTo { last, rate, target } => {
                        s.push_str("timeto ");
                        self.window(*last, s);
                        s.push(' ');
                        self.window(*rate, s);
                        s.push(' ');
                        self.expr(target, s);
                    }
                }
                s.push(')');
            }
            Expr::Neg(a) => {
                s.push_str("(neg ");
                self.expr(a, s);
                s.push(')');
            }
            Expr::Not(a) => {
                s.push_str("(not ");
                self.expr(a, s);
                s.push(')');
            }
            Expr::Binary(op, a, b) => {
                let _ = write!(s, "({op:?} ");
                self.expr(a, s);
                s.push(' ');
                self.expr(b, s);
                s.push(')');
            }
        }
    }
}

fn empty_slot() -> FeedSlot {
    FeedSlot {
        buf: SampleBuffer::new(),
        status: DataStatus::Unknown,
        first_seen: None,
        last_accepted: None,
    }
}

const CLEAR: usize = 3;

impl Engine {
    /// Replace the plan, keeping what the new rules can still use.
    ///
    /// State is matched by name: samples and data status by feed (same unit dimension),
    /// levels, sequence numbers and timers by rule and level, counters by rule. A warning
    /// whose rule or level is gone, or whose entity has no row in a table the new rule needs,
    /// ends with a `clear` sent to `out`; every (entity, rule) whose inputs changed (its
    /// conditions, a threshold cell, its group, a feed's unit or budgets, a new rule) is
    /// evaluated at once at the entity's evaluation time τ, its transitions sent to `out`;
    /// everything else is left as it was, so reloading the same rules changes nothing.
    /// Held (reordered) readings of dropped feeds are discarded; deadlines are recomputed
    /// and those already due fire. Deterministic: the same state and the same plan give the
    /// same outputs and report. See `docs/semantics.md`, "Reloading rules".
    ///
    /// On error (a plan with duplicate names or dangling indices) the engine is unchanged.
    pub fn reload(
        &mut self,
        plan: impl Into<Arc<Plan>>,
        out: &mut dyn Sink,
    ) -> Result<ReloadReport, ReloadError> {
        self.reload_warm(plan, &mut |_| Vec::new(), out)
    }

    /// [`Engine::reload`], warming what the new windows miss: `warm` is asked once for the
    /// samples of the [`ReloadReport::needs_warmup`] spans (from a history store) and they are
    /// put into the windows *before* the new rules are evaluated, so a new 24 h rule sees the
    /// last 24 h at once. Samples of entities the engine does not know, of feeds not asked
    /// for, or outside the spans are ignored; a timestamp the engine still holds keeps its
    /// value. `warmed` in the report counts the samples put in.
    pub fn reload_warm(
        &mut self,
        plan: impl Into<Arc<Plan>>,
        warm: &mut dyn FnMut(&[Warmup]) -> Vec<WarmSample>,
        out: &mut dyn Sink,
    ) -> Result<ReloadReport, ReloadError> {
        let new: Arc<Plan> = plan.into();
        check_plan(&new)?;
        let old = Arc::clone(&self.plan);
        let map = Mapping::new(&old, &new);
        let mut report = map.report(&old, &new);
        let template = Engine::new(Arc::clone(&new), self.cfg.clone());
        let n = self.entities.len();

        // 1. Under the old rules: the history the new windows miss, what every surviving
        //    rule read, and the warnings that end (their values as the old rule saw them).
        report.needs_warmup = self.missing_history(&new, &map);
        let old_digests = group_digests(&self.groups, &self.entities);
        let mut old_keys: Vec<Vec<Option<Key>>> = Vec::with_capacity(n);
        let mut buf = String::new();
        let mut clears: Vec<(EntityId, Option<RuleId>, Warning)> = Vec::new();
        for e in 0..n {
            let ent = &self.entities[e];
            let ctx = KeyCtx {
                plan: &old,
                groups: &self.groups,
                digests: &old_digests,
                ent,
            };
            old_keys.push(
                map.rule_old
                    .iter()
                    .map(|o| {
                        let o = (*o)?;
                        ent.rules[o]
                            .active
                            .then(|| ctx.digest(&old.rules[o], &mut buf))
                    })
                    .collect(),
            );
            let Some(tau) = ent.tau else { continue };
            let mut ending = Vec::new();
            for (r, rs) in ent.rules.iter().enumerate() {
                let Some(l) = rs.level else { continue };
                let reason = match map.rule_new[r] {
                    None => ClearReason::RuleRemoved,
                    Some(r2) => match map.level_new[r][l] {
                        None => ClearReason::LevelRemoved,
                        Some(_) => {
                            let missing = new.rules[r2]
                                .required_tables
                                .iter()
                                .find(|&&t| !new.tables[t].rows.contains_key(&ent.name));
                            match missing {
                                Some(&t) => ClearReason::NoTableRow {
                                    table: new.tables[t].name.clone(),
                                },
                                None => continue,
                            }
                        }
                    },
                };
                ending.push((r, l, rs.seq + 1, reason));
            }
            if ending.is_empty() {
                continue;
            }
            self.scratch.gen += 1;
            for (r, l, seq, reason) in ending {
                let w = self.reload_clear(
                    e as EntityId,
                    &old.rules[r],
                    l,
                    seq,
                    tau,
                    &reason,
                    &template.provenance,
                );
                report.warnings_cleared.push(ReloadClear {
                    rule: w.rule.clone(),
                    entity: w.entity.clone(),
                    level: old.rules[r].levels[l].name.clone(),
                    seq,
                    time: tau,
                    reason,
                });
                clears.push((e as EntityId, map.rule_new[r], w));
            }
        }

        // 2. Swap in the new rules, the state mapped by name.
        let Engine {
            groups,
            timings,
            since_zones,
            retention,
            feed_widths,
            rules_by_feed,
            known,
            provenance,
            scratch: template_scratch,
            mut pending,
            ..
        } = template;
        for (f, queue) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            match map.feed_new[f] {
                Some(f2) => {
                    pending[f2] = queue
                        .into_iter()
                        .map(|p| Pending { feed: f2, ..p })
                        .collect()
                }
                None => report.pending_discarded += queue.len() as u64,
            }
        }
        self.pending = pending;
        // an entity's deadlines wait for the largest reorder delay of its feeds
        let reorder_unchanged =
            old.feeds
                .iter()
                .enumerate()
                .all(|(f, feed)| match map.feed_new[f] {
                    Some(f2) => feed.reorder == new.feeds[f2].reorder,
                    None => feed.reorder == 0,
                });
        let mut pending_delay: Vec<Millis> = vec![0; n];
        for (f, queue) in self.pending.iter().enumerate() {
            for p in queue.iter() {
                let d = &mut pending_delay[p.entity as usize];
                *d = (*d).max(new.feeds[f].reorder);
            }
        }
        self.plan = Arc::clone(&new);
        // areas come from the tables' group columns: built again from the new tables
        self.forecasts.forget_areas();
        self.groups = groups;
        self.timings = timings;
        self.since_zones = since_zones;
        self.retention = retention;
        self.feed_widths = feed_widths;
        self.rules_by_feed = rules_by_feed;
        self.known = known;
        self.provenance = provenance;
        self.scratch.windows = template_scratch.windows;
        let old_counters = std::mem::take(&mut self.counters);
        self.counters = Counters {
            transitions: map
                .rule_old
                .iter()
                .map(|o| o.map_or([0; 4], |o| old_counters.transitions[o]))
                .collect(),
            entered: map
                .rule_old
                .iter()
                .zip(&map.level_old)
                .map(|(o, levels)| {
                    levels
                        .iter()
                        .map(|l| match (o, l) {
                            (Some(o), Some(l)) => old_counters.entered[*o][*l],
                            _ => 0,
                        })
                        .collect()
                })
                .collect(),
            skipped_no_table: vec![0; new.rules.len()],
            ..old_counters
        };
        for (e, &waiting) in pending_delay.iter().enumerate() {
            let name = self.entities[e].name.clone();
            let (rows, groups) = self.place_entity(&name, e as EntityId);
            let ent = &mut self.entities[e];
            ent.table_rows = rows.into();
            ent.groups = groups.into();
            let mut slots: Vec<Option<FeedSlot>> = std::mem::take(&mut ent.feeds)
                .into_iter()
                .map(Some)
                .collect();
            ent.feeds = map
                .feed_old
                .iter()
                .map(|o| o.and_then(|o| slots[o].take()).unwrap_or_else(empty_slot))
                .collect();
            let old_rules = std::mem::take(&mut ent.rules);
            ent.rules = new
                .rules
                .iter()
                .enumerate()
                .map(|(r2, rule)| match map.rule_old[r2] {
                    None => RuleState {
                        hold_since: smallvec::smallvec![None; rule.levels.len()],
                        ..RuleState::default()
                    },
                    Some(r) => {
                        let o = &old_rules[r];
                        let level = o.level.and_then(|l| map.level_new[r][l]);
                        RuleState {
                            active: false,
                            skipped: false,
                            level,
                            seq: o.seq,
                            level_since: o.level_since,
                            episode_start: o.episode_start,
                            hold_since: map.level_old[r2]
                                .iter()
                                .map(|l| l.and_then(|l| o.hold_since[l]))
                                .collect(),
                            exit_since: level.and(o.exit_since),
                            clear_since: o.clear_since,
                        }
                    }
                })
                .collect();
            if !reorder_unchanged {
                let seen = ent
                    .feeds
                    .iter()
                    .zip(&new.feeds)
                    .filter(|(s, _)| s.first_seen.is_some())
                    .map(|(_, f)| f.reorder)
                    .max()
                    .unwrap_or(0);
                ent.delay = seen.max(waiting);
            }
        }
        for (e, r2, w) in &clears {
            if let Some(r2) = *r2 {
                let rs = &mut self.entities[*e as usize].rules[r2];
                rs.level = None;
                rs.seq = w.seq;
                rs.level_since = w.event_time;
                rs.exit_since = None;
                self.counters.transitions[r2][CLEAR] += 1;
            }
        }
        for ent in &mut self.entities {
            for (r2, rule) in new.rules.iter().enumerate() {
                let rows = rule
                    .required_tables
                    .iter()
                    .all(|&t| ent.table_rows[t].is_some());
                let data = rule
                    .feeds
                    .iter()
                    .any(|&f| ent.feeds[f].last_accepted.is_some());
                let rs = &mut ent.rules[r2];
                // a kept warning stays evaluated even if its feeds were emptied
                rs.active = rows && (data || rs.level.is_some());
                rs.skipped = !rows && data;
                if rs.skipped {
                    self.counters.skipped_no_table[r2] += 1;
                }
            }
        }

        // 2b. Warm the windows the new rules lengthened from the caller's history.
        if !report.needs_warmup.is_empty() {
            let samples = warm(&report.needs_warmup);
            for w in samples {
                let Some(f) = new.feed_by_name(&w.feed) else {
                    continue;
                };
                let Some(span) = report.needs_warmup.iter().find(|s| s.feed == w.feed) else {
                    continue;
                };
                if w.ts <= span.from || w.ts > span.to || !w.value.is_finite() {
                    continue;
                }
                let Some(&e) = self.ids.get(w.entity.as_str()) else {
                    continue;
                };
                let v = w.value * new.feeds[f].scale;
                let slot = &mut self.entities[e as usize].feeds[f];
                if slot
                    .buf
                    .insert(w.ts, v, forewarn_rules::ir::DuplicatePolicy::Ignore)
                    == crate::window::InsertOutcome::New
                {
                    report.warmed += 1;
                }
            }
        }

        // 3. Per entity: the clears, then every rule whose inputs changed, at τ.
        let digests = group_digests(&self.groups, &self.entities);
        let budgets_changed: Vec<bool> = new
            .feeds
            .iter()
            .zip(&map.feed_old)
            .map(|(f, o)| {
                o.is_some_and(|o| {
                    (old.feeds[o].stale, old.feeds[o].offline) != (f.stale, f.offline)
                })
            })
            .collect();
        let mut clears = clears.into_iter().peekable();
        let mut step: Vec<RuleId> = Vec::new();
        for (e, old_keys) in old_keys.iter().enumerate() {
            while let Some((_, _, w)) = clears.next_if(|c| c.0 as usize == e) {
                out.warning(w);
            }
            let ent = &self.entities[e];
            let Some(tau) = ent.tau else { continue };
            let ctx = KeyCtx {
                plan: &new,
                groups: &self.groups,
                digests: &digests,
                ent,
            };
            step.clear();
            for (r2, rule) in new.rules.iter().enumerate() {
                if ent.rules[r2].active
                    && old_keys[r2]
                        .as_ref()
                        .is_none_or(|k| *k != ctx.digest(rule, &mut buf))
                {
                    step.push(r2);
                }
            }
            let status = ent
                .feeds
                .iter()
                .zip(&budgets_changed)
                .any(|(s, &c)| c && s.first_seen.is_some());
            if step.is_empty() && !status {
                continue;
            }
            self.counters.evaluations += 1;
            if status {
                self.update_status(e as EntityId, tau, out);
            }
            self.scratch.gen += 1;
            for &r2 in &step {
                self.step_rule(e as EntityId, r2, &new.rules[r2], tau, false, out);
            }
            report
                .entities_reevaluated
                .push(self.entities[e].name.clone());
        }

        // 4. Deadlines under the new rules; those already due fire now.
        self.deadlines.clear();
        for e in 0..n {
            let ent = &mut self.entities[e];
            ent.next_deadline = None;
            ent.queued = None;
            ent.deadline_gen += 1;
            self.schedule(e as EntityId);
        }
        self.advance(out, false);
        Ok(report)
    }

    /// An entity's row in every table and its group in every group index of the current
    /// plan; the entity joins those groups (as member `id`). Used by `intern` and `reload`.
    pub(super) fn place_entity(
        &mut self,
        name: &str,
        id: EntityId,
    ) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
        let plan = &self.plan;
        let table_rows = plan
            .tables
            .iter()
            .map(|t| t.rows.get(name).copied())
            .collect();
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in &mut self.groups {
            let t = &plan.tables[g.table];
            let key = match t.cell(name, g.column) {
                Some(Cell::Text(s)) => Some(s.clone()),
                Some(Cell::Num(x)) => Some(x.to_string()),
                None => None,
            };
            groups.push(key.map(|k| {
                let n = g.by_value.len();
                let idx = *g.by_value.entry(k).or_insert(n);
                if idx == g.members.len() {
                    g.members.push(Vec::new());
                }
                g.members[idx].push(id);
                idx
            }));
        }
        (table_rows, groups)
    }

    /// Per kept feed whose new windows need more history than the engine kept: the span
    /// `(τ − need, τ − kept]` over the entities that have samples of it (hull).
    fn missing_history(&self, new: &Plan, map: &Mapping) -> Vec<Warmup> {
        let mut v = Vec::new();
        for (f2, feed) in new.feeds.iter().enumerate() {
            let Some(f) = map.feed_old[f2] else { continue };
            let need = new.retention(f2);
            let kept = self.retention[f];
            if need <= kept {
                continue;
            }
            let mut span: Option<(Millis, Millis)> = None;
            for ent in &self.entities {
                if let (Some(tau), Some(_)) = (ent.tau, ent.feeds[f].last_accepted) {
                    span = Some(span.map_or((tau, tau), |(lo, hi)| (lo.min(tau), hi.max(tau))));
                }
            }
            if let Some((lo, hi)) = span {
                v.push(Warmup {
                    feed: feed.name.clone(),
                    from: lo - need,
                    to: hi - kept,
                });
            }
        }
        v
    }

    /// The `clear` record of a warning a reload ends, with the values and thresholds of the
    /// rule as it was.
    #[allow(clippy::too_many_arguments)]
    fn reload_clear(
        &mut self,
        e: EntityId,
        rule: &RuleDef,
        level: usize,
        seq: u64,
        t: Millis,
        reason: &ClearReason,
        provenance: &Provenance,
    ) -> Warning {
        let values = rule
            .values
            .iter()
            .map(|(k, x)| (k.clone(), self.eval_num(e, x, t)))
            .collect();
        let thresholds = rule
            .thresholds
            .iter()
            .map(|(k, x)| (k.clone(), self.eval_num(e, x, t)))
            .collect();
        let entity = self.entities[e as usize].name.clone();
        let level_name = &rule.levels[level].name;
        let why = match reason {
            ClearReason::RuleRemoved => format!("rule {} no longer exists", rule.name),
            ClearReason::LevelRemoved => format!("level {level_name} no longer exists"),
            ClearReason::NoTableRow { table } => format!("no row for {entity} in table {table}"),
        };
        let delayed = self.cfg.clock == ClockMode::Wall
            && self
                .wall_now()
                .is_some_and(|w| w - t > self.cfg.delayed_after);
        Warning {
            rule: rule.name.clone(),
            message: format!("{entity}: rule reloaded: {why}"),
            entity,
            seq,
            kind: TransitionKind::Clear,
            from: Some(level_name.clone()),
            to: None,
            event_time: t,
            emitted_at: (self.cfg.now)(),
            late: false,
            delayed,
            values,
            thresholds,
            messages: Vec::new(),
            branch: crate::record::Branch::Observed,
            expected_crossing: None,
            shadow: rule.shadow,
            provenance: provenance.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_index_is_clear() {
        assert_eq!(TransitionKind::ALL[CLEAR], TransitionKind::Clear);
    }

    #[test]
    fn mapping_by_name_and_dimension() {
        struct NoTables;
        impl forewarn_rules::TableLoader for NoTables {
            fn load(&self, path: &str) -> Result<forewarn_rules::TableData, String> {
                Err(format!("no table {path}"))
            }
        }
        let c = |src: &str| {
            forewarn_rules::compile(src, "x.rules", &NoTables)
                .unwrap()
                .plan
        };
        let old = c("feed a: depth mm\nfeed b: level m\nfeed c: depth mm\n\
                     rule r on a levels x < y:\n  x when sum(a, 1h) > 1\n  y when sum(a, 1h) > 2\n\
                     rule gone on b:\n  w when last(b) > 1 m\n");
        let new = c("feed b: depth mm\nfeed a: depth in\nfeed d: count\n\
                     rule r on a levels y < z:\n  y when sum(a, 1h) > 2\n  z when sum(a, 1h) > 3\n\
                     rule fresh on d:\n  w when count(d, 1h) > 1\n");
        let m = Mapping::new(&old, &new);
        assert_eq!(m.feed_old, vec![None, Some(0), None]);
        assert_eq!(m.feed_new, vec![Some(1), None, None]);
        assert_eq!(m.rule_old, vec![Some(0), None]);
        assert_eq!(m.level_new[0], vec![None, Some(0)]);
        assert_eq!(m.level_old[0], vec![Some(1), None]);
        let rep = m.report(&old, &new);
        assert_eq!(rep.feeds_kept, ["a"]);
        assert_eq!(rep.feeds_emptied, ["b"]);
        assert_eq!(rep.feeds_added, ["d"]);
        assert_eq!(rep.feeds_dropped, ["c"]);
        assert_eq!(rep.rules_relevelled, ["r"]);
        assert_eq!(rep.rules_removed, ["gone"]);
        assert_eq!(rep.rules_added, ["fresh"]);
    }
}
