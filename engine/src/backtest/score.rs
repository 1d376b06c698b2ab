//! Matching candidate spans with reference events, and the counts and scores.

use std::collections::{BTreeMap, BTreeSet};

use forewarn_rules::ir::Millis;

use super::spans::{group, track, EntityTrack, Interval};
use super::stats::{minutes, Tally};
use super::{
    BacktestError, BacktestReport, BtTransition, EntityPeak, EntityScore, Episode, EpisodeHit,
    EventOutcome, LevelScore, Levels, Reference, RuleLevelScore, SpanOutcome, TruthEvent,
};

/// Reference events of one rule for one entity: `events[i]` are the maximal intervals at ≥
/// the candidate rule's level `i`; `peak` is the highest reference level reached (its name).
#[derive(Debug, Default)]
struct RefTrack {
    events: Vec<Vec<Interval>>,
    peak: Option<String>,
}

/// Score candidate transitions against a reference.
///
/// `levels` are the candidate rules' levels (lowest first). Spans and episodes still active at
/// `run_end` end there and are marked open (an open end matches like +∞). Every candidate
/// transition must name a rule of `levels` and one of its levels, and likewise for a
/// reference run's transitions and its own levels; truth rows naming an unknown rule or level
/// are skipped with a note. See `docs/backtest.md` for the definitions.
pub fn score(
    candidate: &[BtTransition],
    levels: &Levels,
    reference: &Reference,
    run_end: Millis,
) -> Result<BacktestReport, BacktestError> {
    let mut notes = Vec::new();

    // Candidate spans and episodes per rule and entity.
    let mut cand: BTreeMap<&str, BTreeMap<&str, EntityTrack>> = BTreeMap::new();
    for ((rule, entity), ts) in group(candidate) {
        let lv = levels.get(rule).ok_or_else(|| BacktestError::UnknownRule {
            source_name: "candidate",
            rule: rule.to_string(),
        })?;
        let tr = track(&ts, lv, run_end, "candidate")?;
        cand.entry(rule).or_default().insert(entity, tr);
    }

    // Which levels are scored, and the reference events per rule and entity.
    let mut scored: BTreeMap<&str, Vec<Result<(), String>>> = BTreeMap::new();
    let mut refs: BTreeMap<&str, BTreeMap<String, RefTrack>> = BTreeMap::new();
    let reference_kind = match reference {
        Reference::Run {
            transitions,
            levels: ref_levels,
        } => {
            // Candidate level index → reference level index.
            let mut maps: BTreeMap<&str, Vec<Option<usize>>> = BTreeMap::new();
            for (rule, lv) in levels {
                let rl = ref_levels.get(rule);
                let map: Vec<Option<usize>> = lv
                    .iter()
                    .map(|l| rl.and_then(|rl| rl.iter().position(|r| r == l)))
                    .collect();
                let why = |l: &String| match rl {
                    None => format!("the reference run has no rule {rule:?}"),
                    Some(_) => format!("the reference rule {rule:?} has no level {l:?}"),
                };
                scored.insert(
                    rule,
                    lv.iter()
                        .zip(&map)
                        .map(|(l, m)| m.map(|_| ()).ok_or_else(|| why(l)))
                        .collect(),
                );
                maps.insert(rule, map);
            }
            for ((rule, entity), ts) in group(transitions) {
                let rl = ref_levels
                    .get(rule)
                    .ok_or_else(|| BacktestError::UnknownRule {
                        source_name: "reference",
                        rule: rule.to_string(),
                    })?;
                let tr = track(&ts, rl, run_end, "reference")?;
                let Some((crule, map)) = maps.get_key_value(rule) else {
                    notes.push(format!(
                        "reference rule {rule:?} has no candidate rule: not scored"
                    ));
                    continue;
                };
                let events = map
                    .iter()
                    .map(|m| m.map(|j| tr.spans[j].clone()).unwrap_or_default())
                    .collect();
                let peak = tr.segments.iter().map(|(l, _)| *l).max();
                refs.entry(crule).or_default().insert(
                    entity.to_string(),
                    RefTrack {
                        events,
                        peak: peak.map(|j| rl[j].clone()),
                    },
                );
            }
            "run"
        }
        Reference::Truth(rows) => {
            for (rule, lv) in levels {
                scored.insert(rule, vec![Ok(()); lv.len()]);
            }
            truth_tracks(rows, levels, run_end, &mut refs, &mut notes);
            "truth"
        }
    };

    let mut report = BacktestReport {
        reference_kind,
        run_end,
        levels: levels.clone(),
        overall: Tally::default().score(),
        by_rule_level: Vec::new(),
        by_level: Vec::new(),
        by_entity: Vec::new(),
        peaks: Vec::new(),
        events: Vec::new(),
        spans: Vec::new(),
        episodes: Vec::new(),
        notes,
    };
    let mut overall = Tally::default();
    let mut by_level: Vec<(String, Tally)> = Vec::new();
    let empty_track = EntityTrack::default();
    let empty_ref = RefTrack::default();

    for (rule, lv) in levels {
        let rule_cand = cand.get(rule.as_str());
        let rule_refs = refs.get(rule.as_str());
        let entities: BTreeSet<&str> = rule_cand
            .into_iter()
            .flat_map(|m| m.keys().copied())
            .chain(
                rule_refs
                    .into_iter()
                    .flat_map(|m| m.keys().map(String::as_str)),
            )
            .collect();
        // Hits credited to each episode: entity → episode index → hits.
        let mut ep_hits: BTreeMap<&str, BTreeMap<usize, Vec<EpisodeHit>>> = BTreeMap::new();

        for (i, level) in lv.iter().enumerate() {
            if let Some(Err(why)) = scored.get(rule.as_str()).and_then(|s| s.get(i)) {
                report.by_rule_level.push(RuleLevelScore {
                    rule: rule.clone(),
                    level: level.clone(),
                    score: None,
                    not_scored: Some(why.clone()),
                });
                continue;
            }
            let mut rl_tally = Tally::default();
            for &entity in &entities {
                let tr = rule_cand
                    .and_then(|m| m.get(entity))
                    .unwrap_or(&empty_track);
                let rf = rule_refs.and_then(|m| m.get(entity)).unwrap_or(&empty_ref);
                let spans: &[Interval] = tr.spans.get(i).map_or(&[], Vec::as_slice);
                let events: &[Interval] = rf.events.get(i).map_or(&[], Vec::as_slice);
                if spans.is_empty() && events.is_empty() {
                    continue;
                }
                let mut t = Tally {
                    warnings: spans.len(),
                    ..Tally::default()
                };
                let mut matched = vec![0usize; spans.len()];
                for ev in events {
                    let mut first: Option<&Interval> = None;
                    for (k, sp) in spans.iter().enumerate() {
                        if sp.intersects(ev) {
                            matched[k] += 1;
                            first = first.or(Some(sp));
                        }
                    }
                    let lead = first.map(|sp| ev.start.saturating_sub(sp.start));
                    match (first, lead) {
                        (Some(sp), Some(lead)) => {
                            t.hits += 1;
                            t.leads.push(lead);
                            if let Some(ep) = tr.episodes.iter().position(|e| {
                                e.span.start <= sp.start
                                    && (sp.start < e.span.end
                                        || e.span.open
                                        || sp.start == e.span.start)
                            }) {
                                ep_hits
                                    .entry(entity)
                                    .or_default()
                                    .entry(ep)
                                    .or_default()
                                    .push(EpisodeHit {
                                        level: level.clone(),
                                        event_start: ev.start,
                                        lead_min: minutes(lead),
                                    });
                            }
                        }
                        _ => t.misses += 1,
                    }
                    report.events.push(EventOutcome {
                        rule: rule.clone(),
                        level: level.clone(),
                        entity: entity.to_string(),
                        start: ev.start,
                        end: (!ev.open).then_some(ev.end),
                        hit: first.is_some(),
                        warned_at: first.map(|s| s.start),
                        lead_min: lead.map(minutes),
                    });
                }
                t.false_alarms = matched.iter().filter(|&&m| m == 0).count();
                for (sp, m) in spans.iter().zip(&matched) {
                    report.spans.push(SpanOutcome {
                        rule: rule.clone(),
                        level: level.clone(),
                        entity: entity.to_string(),
                        start: sp.start,
                        end: sp.end,
                        open: sp.open,
                        matched_events: *m,
                    });
                }
                report.by_entity.push(EntityScore {
                    rule: rule.clone(),
                    level: level.clone(),
                    entity: entity.to_string(),
                    score: t.score(),
                });
                rl_tally.add(&t);
            }
            report.by_rule_level.push(RuleLevelScore {
                rule: rule.clone(),
                level: level.clone(),
                score: Some(rl_tally.score()),
                not_scored: None,
            });
            match by_level.iter_mut().find(|(l, _)| l == level) {
                Some((_, t)) => t.add(&rl_tally),
                None => by_level.push((level.clone(), rl_tally.clone())),
            }
            overall.add(&rl_tally);
        }

        for &entity in &entities {
            let tr = rule_cand.and_then(|m| m.get(entity));
            let rf = rule_refs.and_then(|m| m.get(entity));
            let cpeak = tr
                .and_then(|t| t.segments.iter().map(|(l, _)| *l).max())
                .map(|l| lv[l].clone());
            report.peaks.push(EntityPeak {
                rule: rule.clone(),
                entity: entity.to_string(),
                candidate: cpeak,
                reference: rf.and_then(|r| r.peak.clone()),
            });
            let Some(tr) = tr else { continue };
            for (k, e) in tr.episodes.iter().enumerate() {
                let hits = ep_hits
                    .get_mut(entity)
                    .and_then(|m| m.remove(&k))
                    .unwrap_or_default();
                report.episodes.push(Episode {
                    rule: rule.clone(),
                    entity: entity.to_string(),
                    peak: lv[e.peak].clone(),
                    start: e.span.start,
                    end: e.span.end,
                    open: e.span.open,
                    branch: e.branch.clone(),
                    expected_crossing: e.expected_crossing,
                    hits,
                });
            }
        }
    }

    report.overall = overall.score();
    report.by_level = by_level
        .into_iter()
        .map(|(level, t)| LevelScore {
            level,
            score: t.score(),
        })
        .collect();
    Ok(report)
}

/// Truth rows → reference events per candidate rule and entity: for each level `L`, the rows
/// at ≥ `L` merged into maximal intervals (overlapping or touching rows join).
fn truth_tracks<'a>(
    rows: &[TruthEvent],
    levels: &'a Levels,
    run_end: Millis,
    refs: &mut BTreeMap<&'a str, BTreeMap<String, RefTrack>>,
    notes: &mut Vec<String>,
) {
    // (rule, entity) → (level index, interval) rows.
    let mut raw: BTreeMap<(&'a str, &str), Vec<(usize, Interval)>> = BTreeMap::new();
    for row in rows {
        let iv = Interval {
            start: row.start,
            end: row.end.unwrap_or(run_end.max(row.start)),
            open: row.end.is_none(),
        };
        let mut used = false;
        for (rule, lv) in levels {
            if row.rule.as_ref().is_some_and(|r| r != rule) {
                continue;
            }
            if let Some(i) = lv.iter().position(|l| *l == row.level) {
                raw.entry((rule.as_str(), row.entity.as_str()))
                    .or_default()
                    .push((i, iv));
                used = true;
            }
        }
        if !used {
            notes.push(format!(
                "truth event for rule {}, entity {:?}, level {:?} matches no candidate rule level: skipped",
                row.rule.as_deref().unwrap_or("*"),
                row.entity,
                row.level
            ));
        }
    }
    for ((rule, entity), rows) in raw {
        let n = levels.get(rule).map_or(0, Vec::len);
        let events = (0..n)
            .map(|i| {
                let mut ivs: Vec<Interval> = rows
                    .iter()
                    .filter(|(l, _)| *l >= i)
                    .map(|(_, iv)| *iv)
                    .collect();
                ivs.sort_by_key(|iv| iv.start);
                let mut merged: Vec<Interval> = Vec::new();
                for iv in ivs {
                    match merged.last_mut() {
                        Some(last) if iv.start <= last.match_end() => {
                            last.open |= iv.open;
                            last.end = last.end.max(iv.end);
                        }
                        _ => merged.push(iv),
                    }
                }
                merged
            })
            .collect();
        let peak = rows
            .iter()
            .map(|(l, _)| *l)
            .max()
            .and_then(|l| levels.get(rule).map(|lv| lv[l].clone()));
        refs.entry(rule)
            .or_default()
            .insert(entity.to_string(), RefTrack { events, peak });
    }
}
