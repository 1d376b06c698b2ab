//! Ratios and lead-time statistics.

use forewarn_rules::ir::Millis;
use serde::Serialize;

use super::{Score, MINUTE};

/// Lead-time statistics over hits, in minutes (positive: warned ahead; negative: late).
///
/// Quantiles interpolate linearly between the two nearest ranks (`h = (n − 1)·p`, the
/// "type 7" definition of R and NumPy's default): the median of an even count is the mean of
/// the two middle values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadStats {
    /// Number of hits.
    pub count: usize,
    /// Median lead.
    pub median: Option<f64>,
    /// Mean lead.
    pub mean: Option<f64>,
    /// Smallest lead.
    pub min: Option<f64>,
    /// Largest lead.
    pub max: Option<f64>,
    /// 10th percentile.
    pub p10: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// Share of hits warned at least 60 minutes ahead.
    pub share_ge_60min: Option<f64>,
}

impl LeadStats {
    /// Statistics of lead times given in milliseconds.
    pub fn from_leads(leads_ms: &[Millis]) -> LeadStats {
        let mut v: Vec<f64> = leads_ms.iter().map(|&l| minutes(l)).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let q = |p: f64| quantile(&v, p);
        LeadStats {
            count: n,
            median: q(0.5),
            mean: (n > 0).then(|| v.iter().sum::<f64>() / n as f64),
            min: v.first().copied(),
            max: v.last().copied(),
            p10: q(0.1),
            p90: q(0.9),
            share_ge_60min: ratio(leads_ms.iter().filter(|&&l| l >= 60 * MINUTE).count(), n),
        }
    }
}

/// Milliseconds as minutes.
pub(crate) fn minutes(ms: Millis) -> f64 {
    ms as f64 / MINUTE as f64
}

/// `num / den`, `None` when `den` is 0.
pub(crate) fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Linear-interpolation quantile of sorted values (type 7); `None` when empty.
pub(crate) fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// A score from counts and the hits' lead times (ms).
pub(crate) fn make_score(
    hits: usize,
    misses: usize,
    false_alarms: usize,
    warnings: usize,
    leads_ms: &[Millis],
) -> Score {
    Score {
        events: hits + misses,
        hits,
        misses,
        false_alarms,
        warnings,
        pod: ratio(hits, hits + misses),
        far: ratio(false_alarms, warnings),
        csi: ratio(hits, hits + misses + false_alarms),
        lead: LeadStats::from_leads(leads_ms),
    }
}

/// Counts and leads being summed up for a group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub hits: usize,
    pub misses: usize,
    pub false_alarms: usize,
    pub warnings: usize,
    pub leads: Vec<Millis>,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.false_alarms += o.false_alarms;
        self.warnings += o.warnings;
        self.leads.extend_from_slice(&o.leads);
    }

    pub fn score(&self) -> Score {
        make_score(
            self.hits,
            self.misses,
            self.false_alarms,
            self.warnings,
            &self.leads,
        )
    }
}
