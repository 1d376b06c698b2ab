//! From one rule's transitions for one entity to spans at ≥ each level, episodes and
//! exact-level segments.

use std::collections::BTreeMap;

use forewarn_rules::ir::Millis;

use super::{BacktestError, BtTransition, Levels};

/// An interval `[start, end)`; `open` when still active at the run end (then `end` is the
/// run end, and for matching the end counts as +∞).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    pub start: Millis,
    pub end: Millis,
    pub open: bool,
}

impl Interval {
    /// The end used for intersection: +∞ when open.
    pub fn match_end(&self) -> Millis {
        if self.open {
            Millis::MAX
        } else {
            self.end
        }
    }

    /// `[a, b]` intersects `[c, d]` when `a ≤ d` and `b ≥ c` (ends inclusive).
    pub fn intersects(&self, other: &Interval) -> bool {
        self.start <= other.match_end() && self.match_end() >= other.start
    }
}

/// An episode before scoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEpisode {
    pub peak: usize,
    pub span: Interval,
    pub branch: Option<String>,
    pub expected_crossing: Option<Millis>,
}

/// Spans and episodes of one rule for one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntityTrack {
    /// `spans[i]`: spans at ≥ level `i`, in time order.
    pub spans: Vec<Vec<Interval>>,
    pub episodes: Vec<RawEpisode>,
    /// Exact-level segments `(level index, interval)`.
    pub segments: Vec<(usize, Interval)>,
}

/// Transitions grouped by `(rule, entity)`, each group stably sorted by time.
pub(crate) fn group(ts: &[BtTransition]) -> BTreeMap<(&str, &str), Vec<&BtTransition>> {
    let mut groups: BTreeMap<(&str, &str), Vec<&BtTransition>> = BTreeMap::new();
    for t in ts {
        groups
            .entry((t.rule.as_str(), t.entity.as_str()))
            .or_default()
            .push(t);
    }
    for g in groups.values_mut() {
        g.sort_by_key(|t| t.time);
    }
    groups
}

/// Walk one `(rule, entity)`'s transitions (time order) and derive its spans at ≥ each level,
/// its episodes and its exact-level segments. The level after each transition is its `to`
/// (`from` is not checked); a transition to the current level changes nothing.
pub(crate) fn track(
    ts: &[&BtTransition],
    levels: &[String],
    run_end: Millis,
    source_name: &'static str,
) -> Result<EntityTrack, BacktestError> {
    let n = levels.len();
    let mut out = EntityTrack {
        spans: vec![Vec::new(); n],
        ..EntityTrack::default()
    };
    let mut cur: Option<usize> = None;
    // Start of the current span at ≥ i, for i ≤ cur.
    let mut open_at: Vec<Millis> = vec![0; n];
    let mut seg_start: Millis = 0;
    let mut episode: Option<RawEpisode> = None;
    for t in ts {
        let next = match &t.to {
            None => None,
            Some(name) => Some(levels.iter().position(|l| l == name).ok_or_else(|| {
                BacktestError::UnknownLevel {
                    source_name,
                    rule: t.rule.clone(),
                    entity: t.entity.clone(),
                    level: name.clone(),
                }
            })?),
        };
        if next == cur {
            continue;
        }
        let now = t.time;
        let below = |x: Option<usize>| x.map_or(0, |i| i + 1);
        let (was, will) = (below(cur), below(next));
        // Levels newly reached open a span; levels left close theirs.
        for slot in open_at.iter_mut().take(will).skip(was) {
            *slot = now;
        }
        for (i, spans) in out.spans.iter_mut().enumerate().take(was).skip(will) {
            spans.push(Interval {
                start: open_at[i],
                end: now,
                open: false,
            });
        }
        if let Some(c) = cur {
            out.segments.push((
                c,
                Interval {
                    start: seg_start,
                    end: now,
                    open: false,
                },
            ));
        }
        seg_start = now;
        match (cur, next) {
            (None, Some(l)) => {
                episode = Some(RawEpisode {
                    peak: l,
                    span: Interval {
                        start: now,
                        end: now,
                        open: false,
                    },
                    branch: t.branch.clone(),
                    expected_crossing: t.expected_crossing,
                });
            }
            (Some(_), None) => {
                if let Some(mut e) = episode.take() {
                    e.span.end = now;
                    out.episodes.push(e);
                }
            }
            (Some(_), Some(l)) => {
                if let Some(e) = episode.as_mut() {
                    e.peak = e.peak.max(l);
                }
            }
            (None, None) => {}
        }
        cur = next;
    }
    if let Some(c) = cur {
        let end = |start: Millis| Interval {
            start,
            end: run_end.max(start),
            open: true,
        };
        for (i, spans) in out.spans.iter_mut().enumerate().take(c + 1) {
            spans.push(end(open_at[i]));
        }
        out.segments.push((c, end(seg_start)));
        if let Some(mut e) = episode.take() {
            e.span = end(e.span.start);
            out.episodes.push(e);
        }
    }
    Ok(out)
}

/// A stretch of time during which one rule was at exactly one level for one entity (for
/// plot bands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelSegment {
    /// The rule.
    pub rule: String,
    /// The entity.
    pub entity: String,
    /// The level.
    pub level: String,
    /// Start.
    pub start: Millis,
    /// End (the run end when `open`).
    pub end: Millis,
    /// Still active at the run end.
    pub open: bool,
}

/// The exact-level segments of a run's transitions, by rule and entity in order: the bands
/// to give [`PlotSeries::bands`](super::PlotSeries::bands) or
/// [`PlotSeries::reference`](super::PlotSeries::reference).
pub fn level_segments(
    transitions: &[BtTransition],
    levels: &Levels,
    run_end: Millis,
) -> Result<Vec<LevelSegment>, BacktestError> {
    let mut out = Vec::new();
    for ((rule, entity), ts) in group(transitions) {
        let lv = levels.get(rule).ok_or_else(|| BacktestError::UnknownRule {
            source_name: "plotted",
            rule: rule.to_string(),
        })?;
        let tr = track(&ts, lv, run_end, "plotted")?;
        out.extend(tr.segments.into_iter().map(|(l, iv)| LevelSegment {
            rule: rule.to_string(),
            entity: entity.to_string(),
            level: lv[l].clone(),
            start: iv.start,
            end: iv.end,
            open: iv.open,
        }));
    }
    Ok(out)
}
