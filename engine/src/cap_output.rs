//! CAP output of `forewarn run` and `forewarn serve`: every warning transition of a rule that
//! is not `shadow` becomes one CAP 1.2 message, written to the `[output] cap` directory of a
//! run, or by the daemon's sink thread to `[output.cap] dir` and/or MQTT (`docs/cap.md`,
//! `docs/daemon.md`).
//!
//! What a message needs beyond the warning record is prepared once at start-up from the plan
//! and the `[cap]` settings: each level's severity and response (the rule's `cap` declaration,
//! else the colour-ladder default — a level with neither stops the run before anything is
//! written), the `event` names per language, and where the area description and geocodes
//! come from. The episode start of each open episode (the raise's event time, part of every
//! identifier) is tracked per `(rule, entity)`.

use std::collections::HashMap;
use std::path::Path;

use forewarn_rules::ir::{Cell, Millis, Plan, TableDef};

use crate::cap::{
    default_colour_level, CapDirSink, CapError, CapInfoText, CapLevel, CapMessage, CapResponse,
    CapSeverity, CapTransition, CapWriter,
};
use crate::config::CapSettings;
use crate::engine::ActiveWarning;
use crate::record::{TransitionKind, Warning};

/// What a rule publishes.
#[derive(Debug)]
struct RuleCap {
    /// By level name.
    levels: HashMap<String, CapLevel>,
    /// `event LANG? "…"` as declared.
    events: Vec<(Option<String>, String)>,
    /// The event name when none is declared: the rule name with `_` as spaces.
    fallback_event: String,
    shadow: bool,
}

/// What became of one warning transition.
#[derive(Debug)]
// `forewarn run` only counts outcomes; the daemon (feature `daemon`) publishes the messages
#[cfg_attr(not(feature = "daemon"), allow(dead_code))]
pub(crate) enum CapOutcome {
    /// Nothing to publish: a `shadow` rule, or a rule the output does not know.
    Skipped,
    /// The message was made (and written to the directory, when there is one).
    Written(CapMessage),
    /// The message could not be made (`None`) or not be written to the directory; the
    /// error is counted in `failed`.
    Failed(Option<CapMessage>, String),
}

/// The CAP sink of a run or of the daemon: a writer, a directory (the daemon may publish
/// over MQTT only), and what it needs to know of the rules.
#[derive(Debug)]
pub(crate) struct CapOutput {
    writer: CapWriter,
    dir: Option<CapDirSink>,
    rules: HashMap<String, RuleCap>,
    /// The rule set the rules, areas and geocodes were taken from.
    ruleset: String,
    settings: CapSettings,
    /// Area description of each entity, from `area-column`.
    areas: HashMap<String, String>,
    /// Geocodes of each entity, from `geocodes` (entities with none use the default).
    geocodes: HashMap<String, Vec<(String, String)>>,
    /// Whether `geocodes` is configured (else: `forewarn:entity` = entity id).
    custom_geocodes: bool,
    /// Episode start (raise time) of every open episode.
    episodes: HashMap<(String, String), Millis>,
    /// Messages written.
    pub(crate) written: u64,
    /// Messages that could not be made or written, and the first few errors.
    pub(crate) failed: u64,
    pub(crate) errors: Vec<String>,
}

/// Errors kept for the summary (the count goes on).
const KEEP_ERRORS: usize = 5;

/// Every problem that prevents CAP output from starting: a level of a published rule with no
/// CAP mapping, a declaration that does not parse, a configured column no table has.
pub(crate) fn check(plan: &Plan, settings: &CapSettings) -> Vec<String> {
    let mut problems = Vec::new();
    for rule in &plan.rules {
        if rule.shadow {
            continue;
        }
        for (i, level) in rule.levels.iter().enumerate() {
            match rule.cap.get(i).and_then(Option::as_ref) {
                Some(decl) => {
                    if let Err(e) = decl.severity.parse::<CapSeverity>() {
                        problems.push(format!("rule {}: level {}: {e}", rule.name, level.name));
                    }
                    if let Err(e) = decl.response.parse::<CapResponse>() {
                        problems.push(format!("rule {}: level {}: {e}", rule.name, level.name));
                    }
                }
                None if default_colour_level(&level.name).is_some() => {}
                None => problems.push(format!(
                    "rule {} level {} has no CAP severity/response (only blue, yellow, orange and red have a default): add `cap {}: severity …, response …` to the rule, or mark the rule `shadow`",
                    rule.name, level.name, level.name
                )),
            }
        }
    }
    let has_column = |c: &str| plan.tables.iter().any(|t| t.column(c).is_some());
    if let Some(c) = &settings.area_column {
        if !has_column(c) {
            problems.push(format!(
                "cap.area-column: no table of the rules has a column {c:?}"
            ));
        }
    }
    for (name, c) in &settings.geocodes {
        if !has_column(c) {
            problems.push(format!(
                "cap.geocodes ({name}): no table of the rules has a column {c:?}"
            ));
        }
    }
    problems
}

/// The cell of `column` for every entity of every table that has that column (the first
/// table wins when several do).
fn column_values(tables: &[TableDef], column: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for t in tables {
        let Some(c) = t.column(column) else { continue };
        for key in t.rows.keys() {
            if out.contains_key(key) {
                continue;
            }
            let text = match t.cell(key, c) {
                Some(Cell::Text(s)) => s.clone(),
                Some(Cell::Num(x)) => x.to_string(),
                None => continue,
            };
            if !text.trim().is_empty() {
                out.insert(key.clone(), text);
            }
        }
    }
    out
}

impl CapOutput {
    /// The sink for a run (or the daemon); `check` must have passed. `dir`: where the files
    /// go (none: messages are only made, for the daemon's MQTT output). `active` are the
    /// warnings open at the start (after a resume): their episodes go on, with the
    /// identifier of their raise and references to their latest message. `fresh`: a run
    /// that starts over (not resumed) — the messages this configuration's identifier prefix
    /// wrote into `dir` before are removed, as its other outputs are rewritten.
    pub(crate) fn new(
        plan: &Plan,
        settings: &CapSettings,
        dir: Option<&Path>,
        active: &[ActiveWarning],
        fresh: bool,
    ) -> Result<Self, CapError> {
        let mut writer = CapWriter::new(settings.config.clone())?;
        let dir = dir.map(CapDirSink::new).transpose()?;
        if let (Some(dir), true) = (&dir, fresh) {
            dir.clear_messages(&settings.config.identifier_prefix)?;
        }
        for a in active {
            writer.resume_episode(&a.rule, &a.entity, a.episode_start, a.seq, a.since);
        }
        let episodes = active
            .iter()
            .map(|a| ((a.rule.clone(), a.entity.clone()), a.episode_start))
            .collect();
        let mut out = CapOutput {
            writer,
            dir,
            rules: HashMap::new(),
            ruleset: String::new(),
            settings: settings.clone(),
            areas: HashMap::new(),
            geocodes: HashMap::new(),
            custom_geocodes: !settings.geocodes.is_empty(),
            episodes,
            written: 0,
            failed: 0,
            errors: Vec::new(),
        };
        out.set_plan(plan);
        Ok(out)
    }

    /// The rule set whose rules the output knows (the daemon checks it on a reload).
    #[cfg(feature = "daemon")]
    pub(crate) fn ruleset(&self) -> &str {
        &self.ruleset
    }

    /// Take the rules, areas and geocodes of `plan` (at start-up, and after a reload of the
    /// daemon's rules; `check` must have passed for it). Rules the new plan no longer has,
    /// and levels it no longer has, are kept: transitions made under the old rules may still
    /// be on their way. Open episodes are kept.
    pub(crate) fn set_plan(&mut self, plan: &Plan) {
        for rule in &plan.rules {
            let mut levels = self
                .rules
                .remove(&rule.name)
                .map(|r| r.levels)
                .unwrap_or_default();
            for (i, level) in rule.levels.iter().enumerate() {
                let mapped = match rule.cap.get(i).and_then(Option::as_ref) {
                    Some(d) => match (d.severity.parse(), d.response.parse()) {
                        (Ok(severity), Ok(response)) => Some(CapLevel { severity, response }),
                        _ => None,
                    },
                    None => default_colour_level(&level.name),
                };
                if let Some(m) = mapped {
                    levels.insert(level.name.clone(), m);
                }
            }
            self.rules.insert(
                rule.name.clone(),
                RuleCap {
                    levels,
                    events: rule.events.clone(),
                    fallback_event: rule.name.replace('_', " "),
                    shadow: rule.shadow,
                },
            );
        }
        self.areas = self
            .settings
            .area_column
            .as_deref()
            .map(|c| column_values(&plan.tables, c))
            .unwrap_or_default();
        let mut geocodes: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (name, column) in &self.settings.geocodes {
            for (entity, value) in column_values(&plan.tables, column) {
                geocodes
                    .entry(entity)
                    .or_default()
                    .push((name.clone(), value));
            }
        }
        self.geocodes = geocodes;
        self.ruleset = plan.ruleset_hash.clone();
    }

    /// The episode start of a transition: the raise's time, remembered per `(rule, entity)`.
    /// For an episode raised before this process started (a resume from a checkpoint) the
    /// raise is unknown; the time the episode's current level was entered stands in for it
    /// (exact when that was the raise; otherwise that episode's remaining messages get
    /// identifiers of their own, still chained to one another by `incidents`).
    fn episode_start(&mut self, w: &Warning) -> Millis {
        let key = (w.rule.clone(), w.entity.clone());
        match w.kind {
            TransitionKind::Raise => {
                self.episodes.insert(key, w.event_time);
                w.event_time
            }
            TransitionKind::Clear => self.episodes.remove(&key).unwrap_or(w.event_time),
            _ => *self.episodes.entry(key).or_insert(w.event_time),
        }
    }

    /// Publish one warning transition (nothing for a `shadow` rule): make its message and
    /// write it to the directory. Errors are counted and the first few kept; they never stop
    /// the run.
    pub(crate) fn publish(&mut self, w: &Warning) -> CapOutcome {
        let Some(rule) = self.rules.get(&w.rule) else {
            return CapOutcome::Skipped;
        };
        if rule.shadow || w.shadow {
            return CapOutcome::Skipped;
        }
        let episode_start = self.episode_start(w);
        let outcome = match self.message(w, episode_start) {
            Err(e) => Err((None, e)),
            Ok(msg) => match self.dir.as_ref().map(|d| d.write(&msg)) {
                Some(Err(e)) => Err((Some(msg), e)),
                _ => Ok(msg),
            },
        };
        match outcome {
            Ok(msg) => {
                self.written += 1;
                CapOutcome::Written(msg)
            }
            Err((msg, e)) => {
                self.failed += 1;
                let text = format!("{} {} #{}: {e}", w.rule, w.entity, w.seq);
                if self.errors.len() < KEEP_ERRORS {
                    self.errors.push(text.clone());
                }
                CapOutcome::Failed(msg, text)
            }
        }
    }

    fn message(&mut self, w: &Warning, episode_start: Millis) -> Result<CapMessage, CapError> {
        let rule = &self.rules[&w.rule];
        let level = w.to.as_deref().and_then(|l| rule.levels.get(l));
        let from_level = w.from.as_deref().and_then(|l| rule.levels.get(l));
        let parameters: Vec<(String, String)> = w
            .values
            .iter()
            .chain(&w.thresholds)
            .map(|(k, v)| (k.clone(), number(*v)))
            .collect();
        let details = parameters
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let event_for = |lang: &str| -> String {
            rule.events
                .iter()
                .find(|(l, _)| l.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(lang)))
                .or_else(|| rule.events.iter().find(|(l, _)| l.is_none()))
                .map_or_else(|| rule.fallback_event.clone(), |(_, e)| e.clone())
        };
        let texts: Vec<(String, String)> = if w.messages.is_empty() {
            vec![("en".to_string(), w.message.clone())]
        } else {
            w.messages.clone()
        };
        let infos: Vec<CapInfoText> = texts
            .into_iter()
            .map(|(language, text)| CapInfoText {
                event: event_for(&language),
                description: if details.is_empty() {
                    text.clone()
                } else {
                    format!("{text}\n{details}")
                },
                headline: text,
                language,
                instruction: None,
            })
            .collect();
        let default_event = event_for("");
        let area_desc = self.areas.get(&w.entity).map_or("", String::as_str);
        let default_geocodes = [("forewarn:entity".to_string(), w.entity.clone())];
        let geocodes: &[(String, String)] = if self.custom_geocodes {
            self.geocodes.get(&w.entity).map_or(&[], Vec::as_slice)
        } else {
            &default_geocodes
        };
        let t = CapTransition {
            rule: &w.rule,
            event: &default_event,
            entity: &w.entity,
            area_desc,
            geocodes,
            kind: w.kind,
            from: w.from.as_deref(),
            to: w.to.as_deref(),
            level,
            from_level,
            time: w.event_time,
            episode_start,
            seq: w.seq,
            branch: w.branch,
            expected_crossing: w.expected_crossing,
            infos: &infos,
            parameters: &parameters,
        };
        self.writer.message(&t)
    }
}

/// A value as a parameter: up to six decimals, no binary noise; `n/a` when there is none.
fn number(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_string(),
        Some(x) => {
            let r = (x * 1e6).round() / 1e6;
            if r == r.trunc() && r.abs() < 1e15 {
                format!("{r:.1}")
            } else {
                format!("{r}")
            }
        }
    }
}
