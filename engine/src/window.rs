//! Per-(entity, feed) sample storage and the window functions evaluated over it.
//!
//! A [`SampleBuffer`] holds the samples of one entity's feed in event-time order, with a
//! running prefix sum in fixed-point micro-units (1e-6 of the canonical unit), so that
//! `sum`, `count` and `avg` over any `(t - w, t]` are exact and O(log n), and never drift
//! however many samples pass through (semantics.md: "Sums over long runs must not drift").
//! Other functions scan the (small) window. Nothing here allocates except the buffer's own
//! amortised growth.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use forewarn_rules::ir::{DuplicatePolicy, Millis, WindowFunc, DAY, HOUR};

/// Fixed-point scale: values are held as integer micro-units for exact sums.
pub const MICRO: f64 = 1_000_000.0;

/// Convert a canonical value to micro-units (rounded to the nearest; saturating).
#[inline]
pub fn to_micro(v: f64) -> i64 {
    (v * MICRO).round() as i64
}

/// One sample: 24 bytes, so that a gauge's day of 5-minute samples stays small and a window
/// bound touches few cache lines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Sample {
    ts: Millis,
    value: f64,
    /// Sum of the micro-units of every sample up to and including this one since the buffer's
    /// origin, wrapping: differences of two prefixes are exact whenever the window's own sum
    /// fits in an `i64` (±9.2·10¹² canonical units), however long the buffer has run.
    cum: i64,
}

/// What inserting a sample did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InsertOutcome {
    /// A new timestamp.
    New,
    /// The same timestamp with the same value: nothing changed.
    Duplicate,
    /// The same timestamp with a different value, which replaced the old one.
    Replaced {
        /// The value that was superseded.
        old: f64,
    },
    /// The same timestamp, policy `ignore`: the new value was dropped.
    Ignored,
    /// The same timestamp, policy `add`: the values were added.
    Added,
}

/// Time context a window function needs from its feed.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedTiming {
    /// Staleness budget (bounds the age of a `delta`/`rate`/`twa` baseline).
    pub stale: Option<Millis>,
    /// Reporting interval (each sample covers `(ts - interval, ts]`), for `integrate`.
    pub interval: Option<Millis>,
}

/// The samples of one entity's feed, in event-time order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SampleBuffer {
    samples: VecDeque<Sample>,
    /// The prefix sum just before the oldest sample held (that of the last evicted sample).
    cum_before: i64,
    /// Timestamp of the oldest sample held (meaningless when empty): kept here, beside the
    /// deque's header, so that locating a window start and deciding whether to evict do not
    /// load the oldest sample's cache line.
    first_ts: Millis,
}

/// The result of a window function: a number, a condition, or no value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowValue {
    /// A number in the canonical unit.
    Num(f64),
    /// A condition (`missing`).
    Bool(bool),
    /// No value (e.g. `max` of an empty window).
    None,
}

impl WindowValue {
    /// The number, if any.
    pub fn num(self) -> Option<f64> {
        match self {
            WindowValue::Num(v) => Some(v),
            _ => None,
        }
    }
}

impl SampleBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Timestamp of the newest sample.
    pub fn newest_ts(&self) -> Option<Millis> {
        self.samples.back().map(|s| s.ts)
    }

    /// Timestamps and values, oldest first (for tests and debugging).
    pub fn iter(&self) -> impl Iterator<Item = (Millis, f64)> + '_ {
        self.samples.iter().map(|s| (s.ts, s.value))
    }

    /// Index of the first sample with `ts > t`.
    ///
    /// Samples are nearly always evenly spaced, so the search starts where `t` falls by
    /// interpolation between the oldest and newest timestamps and gallops from there: a
    /// window bound costs one or two probes (one cache line) instead of a binary search's
    /// worth, and stays O(log n) however irregular the timestamps.
    #[inline]
    fn after(&self, t: Millis) -> usize {
        let n = self.samples.len();
        let Some(last) = self.samples.back() else {
            return 0;
        };
        if t >= last.ts {
            return n;
        }
        let first_ts = self.first_ts;
        if t < first_ts {
            return 0;
        }
        // From here samples[0].ts <= t < samples[n - 1].ts, so n >= 2.
        let frac = (t - first_ts) as f64 / (last.ts - first_ts) as f64;
        let guess = ((frac * (n - 1) as f64) as usize).min(n - 2);
        if self.samples[guess].ts <= t {
            // gallop forward: samples[lo].ts <= t < samples[hi].ts
            let mut lo = guess;
            let mut step = 1;
            loop {
                let hi = (lo + step).min(n - 1);
                if self.samples[hi].ts > t {
                    return self.first_after(lo + 1, hi, t);
                }
                lo = hi;
                step *= 2;
            }
        } else {
            // gallop back: samples[lo].ts <= t < samples[hi].ts
            let mut hi = guess;
            let mut step = 1;
            loop {
                let lo = hi.saturating_sub(step);
                if self.samples[lo].ts <= t {
                    return self.first_after(lo + 1, hi, t);
                }
                hi = lo;
                step *= 2;
            }
        }
    }

    /// The first index in `lo..=hi` whose sample is stamped after `t`, given that
    /// `samples[hi].ts > t` and `samples[lo - 1].ts <= t`.
    #[inline]
    fn first_after(&self, mut lo: usize, mut hi: usize, t: Millis) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.samples[mid].ts <= t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Insert a sample at its event-time position, applying `policy` to an existing timestamp.
    pub fn insert(&mut self, ts: Millis, value: f64, policy: DuplicatePolicy) -> InsertOutcome {
        let micro = to_micro(value);
        self.grow();
        // Fast path: in-order append.
        match self.samples.back() {
            None => {
                self.samples.push_back(Sample {
                    ts,
                    value,
                    cum: self.cum_before.wrapping_add(micro),
                });
                self.first_ts = ts;
                return InsertOutcome::New;
            }
            Some(last) if last.ts < ts => {
                let cum = last.cum.wrapping_add(micro);
                self.samples.push_back(Sample { ts, value, cum });
                return InsertOutcome::New;
            }
            _ => {}
        }
        let idx = self.samples.partition_point(|s| s.ts < ts);
        if idx < self.samples.len() && self.samples[idx].ts == ts {
            let old = self.samples[idx];
            let (new_value, outcome) = match policy {
                _ if old.value == value && policy != DuplicatePolicy::Add => {
                    return InsertOutcome::Duplicate
                }
                DuplicatePolicy::Replace => (value, InsertOutcome::Replaced { old: old.value }),
                DuplicatePolicy::Ignore => return InsertOutcome::Ignored,
                DuplicatePolicy::Add => (old.value + value, InsertOutcome::Added),
            };
            let old_micro = self.micro_at(idx);
            let new_micro = match policy {
                DuplicatePolicy::Add => old_micro.wrapping_add(micro),
                _ => micro,
            };
            let delta = new_micro.wrapping_sub(old_micro);
            self.samples[idx].value = new_value;
            for s in self.samples.range_mut(idx..) {
                s.cum = s.cum.wrapping_add(delta);
            }
            return outcome;
        }
        let before = self.cum_before_index(idx);
        if idx == 0 {
            self.first_ts = ts;
        }
        self.samples.insert(
            idx,
            Sample {
                ts,
                value,
                cum: before.wrapping_add(micro),
            },
        );
        for s in self.samples.range_mut(idx + 1..) {
            s.cum = s.cum.wrapping_add(micro);
        }
        InsertOutcome::New
    }

    /// Make room for one more sample, growing by a quarter rather than doubling: a buffer
    /// settles at the size its longest window needs (a day of 5-minute samples is ~290), and
    /// doubling would leave up to half of every entity's allocation unused.
    #[inline]
    fn grow(&mut self) {
        let (len, cap) = (self.samples.len(), self.samples.capacity());
        if len == cap {
            self.samples.reserve_exact((len / 4).max(4));
        }
    }

    /// Drop samples stamped at or before `t`.
    pub fn evict_through(&mut self, t: Millis) {
        if self.samples.is_empty() || self.first_ts > t {
            return;
        }
        while self.samples.front().is_some_and(|s| s.ts <= t) {
            if let Some(s) = self.samples.pop_front() {
                self.cum_before = s.cum;
            }
        }
        if let Some(s) = self.samples.front() {
            self.first_ts = s.ts;
        }
    }

    /// Ask the CPU to start loading the newest sample (where an in-order reading is appended).
    #[inline]
    pub fn prefetch_newest(&self) {
        if let Some(last) = self.samples.back() {
            prefetch(last);
        }
    }

    /// Ask the CPU to start loading the samples a window of width `w` at `t` starts at, and
    /// the oldest sample (eviction reads it), without waiting for them. The engine calls this
    /// a few entities ahead of evaluating them when many are evaluated at one instant, so
    /// that the cache misses of different entities overlap instead of queueing.
    #[inline]
    pub fn prefetch_window_start(&self, t: Millis, w: Millis) {
        let n = self.samples.len();
        let Some(last) = self.samples.back() else {
            return;
        };
        let start = t - w;
        if n < 2 || start <= self.first_ts || start >= last.ts {
            return;
        }
        let frac = (start - self.first_ts) as f64 / (last.ts - self.first_ts) as f64;
        let guess = ((frac * (n - 1) as f64) as usize).min(n - 1);
        prefetch(&self.samples[guess]);
        prefetch(&self.samples[0]);
    }

    /// The prefix sum just before sample `idx`.
    #[inline]
    fn cum_before_index(&self, idx: usize) -> i64 {
        match idx {
            0 => self.cum_before,
            i => self.samples[i - 1].cum,
        }
    }

    /// Sample `idx`'s value in micro-units.
    #[inline]
    fn micro_at(&self, idx: usize) -> i64 {
        self.samples[idx]
            .cum
            .wrapping_sub(self.cum_before_index(idx))
    }

    /// Exact micro-unit sum of samples with index in `lo..hi`.
    #[inline]
    fn micro_sum(&self, lo: usize, hi: usize) -> i64 {
        if lo >= hi {
            return 0;
        }
        self.samples[hi - 1]
            .cum
            .wrapping_sub(self.cum_before_index(lo))
    }

    #[inline]
    fn window(&self, t: Millis, w: Millis) -> (usize, usize) {
        (self.after(t - w), self.after(t))
    }

    /// The baseline for `delta`/`rate`/`twa`: the newest sample at or before `t - w`, if it
    /// is not older than the staleness budget.
    fn baseline(&self, lo: usize, start: Millis, timing: FeedTiming) -> Option<Sample> {
        let b = *self.samples.get(lo.checked_sub(1)?)?;
        match timing.stale {
            Some(stale) if start - b.ts > stale => None,
            _ => Some(b),
        }
    }

    /// Evaluate `func` over `(t - width, t]`.
    pub fn eval(
        &self,
        func: &WindowFunc,
        width: Option<Millis>,
        t: Millis,
        timing: FeedTiming,
    ) -> WindowValue {
        use WindowValue::{Bool, None as NoValue, Num};
        let w = width.unwrap_or(0);
        match func {
            WindowFunc::Sum => {
                let (lo, hi) = self.window(t, w);
                Num(micro_to_f64(self.micro_sum(lo, hi)))
            }
            WindowFunc::Count => {
                let (lo, hi) = self.window(t, w);
                Num((hi - lo) as f64)
            }
            WindowFunc::Missing => {
                let (lo, hi) = self.window(t, w);
                Bool(hi == lo)
            }
            WindowFunc::Avg => {
                let (lo, hi) = self.window(t, w);
                if hi == lo {
                    return NoValue;
                }
                let n = (hi - lo) as i64;
                let s = self.micro_sum(lo, hi);
                if s % n == 0 {
                    Num(micro_to_f64(s / n))
                } else {
                    Num(s as f64 / n as f64 / MICRO)
                }
            }
            WindowFunc::Min | WindowFunc::Max => {
                let (lo, hi) = self.window(t, w);
                let it = self.samples.range(lo..hi).map(|s| s.value);
                let v = if matches!(func, WindowFunc::Min) {
                    it.reduce(f64::min)
                } else {
                    it.reduce(f64::max)
                };
                v.map_or(NoValue, Num)
            }
            WindowFunc::Last => {
                let (lo, hi) = match width {
                    Some(w) => self.window(t, w),
                    None => (0, self.after(t)),
                };
                if hi > lo {
                    Num(self.samples[hi - 1].value)
                } else {
                    NoValue
                }
            }
            WindowFunc::First => {
                let (lo, hi) = self.window(t, w);
                if hi > lo {
                    Num(self.samples[lo].value)
                } else {
                    NoValue
                }
            }
            WindowFunc::Delta | WindowFunc::Rate => {
                let (lo, hi) = self.window(t, w);
                if hi == lo {
                    return NoValue;
                }
                let Some(base) = self.baseline(lo, t - w, timing) else {
                    return NoValue;
                };
                let newest = self.samples[hi - 1];
                let delta = newest.value - base.value;
                if matches!(func, WindowFunc::Delta) {
                    Num(delta)
                } else {
                    Num(delta / ((newest.ts - base.ts) as f64 / HOUR as f64))
                }
            }
            WindowFunc::Twa => {
                let start = t - w;
                let (lo, hi) = self.window(t, w);
                if hi == lo {
                    // an empty window has no value (docs/semantics.md), even when a baseline
                    // before it would still "hold"
                    return NoValue;
                }
                let base = self.baseline(lo, start, timing);
                let mut weighted = 0.0;
                let mut total: Millis = 0;
                let mut cursor = start;
                let mut holding = base.map(|b| b.value);
                for s in self.samples.range(lo..hi) {
                    if let Some(v) = holding {
                        weighted += v * (s.ts - cursor) as f64;
                        total += s.ts - cursor;
                    }
                    cursor = s.ts;
                    holding = Some(s.value);
                }
                match holding {
                    None => NoValue,
                    Some(v) => {
                        weighted += v * (t - cursor) as f64;
                        total += t - cursor;
                        if total == 0 {
                            Num(v)
                        } else {
                            Num(weighted / total as f64)
                        }
                    }
                }
            }
            WindowFunc::Integrate => {
                let start = t - w;
                let interval = timing.interval.unwrap_or(0);
                let (lo, hi) = self.window(t, w);
                let mut acc: i128 = 0;
                for i in lo..hi {
                    let ts = self.samples[i].ts;
                    let covered = ts - (ts - interval).max(start);
                    acc += self.micro_at(i) as i128 * covered as i128;
                }
                Num(acc as f64 / HOUR as f64 / MICRO)
            }
            WindowFunc::DecaySum { days, k } => {
                let mut total = 0.0;
                let mut weight = 1.0;
                for i in 1..=*days as i64 {
                    weight *= k;
                    let end = t - i * DAY;
                    let (lo, hi) = self.window(end, DAY);
                    total += weight * micro_to_f64(self.micro_sum(lo, hi));
                }
                Num(total)
            }
            WindowFunc::Since { .. } => {
                // The caller resolves the anchor and passes it as `width = t - anchor`.
                let (lo, hi) = self.window(t, w);
                Num(micro_to_f64(self.micro_sum(lo, hi)))
            }
        }
    }

    /// The earliest instant after `t` at which `func` over this buffer could change with no
    /// new sample (a sample leaving the window, a baseline moving or expiring), if any.
    ///
    /// `twa` and `integrate` also change continuously between these instants; they are
    /// re-evaluated at these instants and with every sample.
    pub fn next_change(
        &self,
        func: &WindowFunc,
        width: Option<Millis>,
        t: Millis,
        timing: FeedTiming,
    ) -> Option<Millis> {
        if let WindowFunc::DecaySum { days, .. } = func {
            let horizon = t - (*days as Millis + 1) * DAY;
            let (first, hi) = (self.after(horizon), self.after(t));
            return self
                .samples
                .range(first..hi)
                .map(|s| s.ts + ((t - s.ts) / DAY + 1) * DAY)
                .min();
        }
        let w = width?;
        let (lo, hi) = self.window(t, w);
        match func {
            WindowFunc::Last | WindowFunc::First if hi > lo => {
                let idx = if matches!(func, WindowFunc::Last) {
                    hi - 1
                } else {
                    lo
                };
                Some(self.samples[idx].ts + w)
            }
            WindowFunc::Last | WindowFunc::First => None,
            WindowFunc::Delta | WindowFunc::Rate | WindowFunc::Twa => {
                let entering = (hi > lo).then(|| self.samples[lo].ts + w);
                let expiring = match (timing.stale, lo.checked_sub(1)) {
                    (Some(stale), Some(b)) => {
                        let at = self.samples[b].ts + stale + w + 1;
                        (at > t).then_some(at)
                    }
                    _ => None,
                };
                min_opt(entering, expiring)
            }
            WindowFunc::Integrate => {
                if hi == lo {
                    return None;
                }
                let s = self.samples[lo].ts;
                let interval = timing.interval.unwrap_or(0);
                let starts_leaving = s - interval + w;
                Some(if starts_leaving > t {
                    starts_leaving
                } else {
                    s + w
                })
            }
            WindowFunc::Since { .. } => None, // the caller schedules the day boundary
            _ => (hi > lo).then(|| self.samples[lo].ts + w),
        }
    }
}

/// Start loading the cache line holding `p` (a hint: never faults, no effect elsewhere).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it does not dereference `p` and cannot fault.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn micro_to_f64(m: i64) -> f64 {
    m as f64 / MICRO
}

/// The smaller of two optional instants.
pub fn min_opt(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Millis = 60_000;

    proptest::proptest! {
        /// The galloping search finds what a plain binary search finds, wherever `t` falls
        /// and however irregular the timestamps.
        #[test]
        fn after_is_a_partition_point(
            gaps in proptest::collection::vec(1i64..50, 0..80),
            probes in proptest::collection::vec(-10i64..2_600, 1..40),
        ) {
            let mut b = SampleBuffer::new();
            let mut ts = 0;
            for g in gaps {
                ts += g;
                b.insert(ts, 1.0, DuplicatePolicy::Replace);
            }
            for t in probes {
                proptest::prop_assert_eq!(b.after(t), b.samples.partition_point(|s| s.ts <= t));
            }
        }
    }

    fn buf(samples: &[(Millis, f64)]) -> SampleBuffer {
        let mut b = SampleBuffer::new();
        for &(ts, v) in samples {
            b.insert(ts, v, DuplicatePolicy::Replace);
        }
        b
    }

    #[test]
    fn window_is_open_left_closed_right() {
        // B01: samples at 0, 30, 60, 70 min of 10 each.
        let b = buf(&[(0, 10.0), (30 * M, 10.0), (60 * M, 10.0), (70 * M, 10.0)]);
        let t = FeedTiming::default();
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(60 * M), 60 * M, t),
            WindowValue::Num(20.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(60 * M), 70 * M, t),
            WindowValue::Num(30.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(60 * M), 90 * M, t),
            WindowValue::Num(20.0)
        );
        assert_eq!(
            b.next_change(&WindowFunc::Sum, Some(60 * M), 70 * M, t),
            Some(90 * M)
        );
    }

    #[test]
    fn tipping_bucket_sum_is_exact() {
        // B15: 150 tips of 0.2 mm every 24 s; plain f64 gives 29.999999999999925.
        let mut b = SampleBuffer::new();
        for k in 1..=150 {
            b.insert(k * 24_000, 0.2, DuplicatePolicy::Replace);
        }
        let t = FeedTiming::default();
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(60 * M), 60 * M, t),
            WindowValue::Num(30.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(60 * M), 70 * M, t),
            WindowValue::Num(25.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(60 * M), 180 * M, t),
            WindowValue::Num(0.0)
        );
    }

    #[test]
    fn duplicates_follow_policy() {
        let mut b = SampleBuffer::new();
        assert_eq!(
            b.insert(0, 12.0, DuplicatePolicy::Replace),
            InsertOutcome::New
        );
        assert_eq!(
            b.insert(0, 12.0, DuplicatePolicy::Replace),
            InsertOutcome::Duplicate
        );
        assert_eq!(
            b.insert(5, 10.0, DuplicatePolicy::Replace),
            InsertOutcome::New
        );
        assert_eq!(
            b.insert(5, 14.0, DuplicatePolicy::Replace),
            InsertOutcome::Replaced { old: 10.0 }
        );
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(10), 5, FeedTiming::default()),
            WindowValue::Num(26.0)
        );
        assert_eq!(b.insert(5, 1.0, DuplicatePolicy::Add), InsertOutcome::Added);
        assert_eq!(
            b.insert(5, 99.0, DuplicatePolicy::Ignore),
            InsertOutcome::Ignored
        );
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(10), 5, FeedTiming::default()),
            WindowValue::Num(27.0)
        );
    }

    #[test]
    fn integrate_covers_interval_before_each_sample() {
        // B18: 24 mm/h every 5 min for 30 min = 12 mm.
        let b = buf(&(1..=6).map(|k| (k * 5 * M, 24.0)).collect::<Vec<_>>());
        let t = FeedTiming {
            stale: None,
            interval: Some(5 * M),
        };
        assert_eq!(
            b.eval(&WindowFunc::Integrate, Some(60 * M), 30 * M, t),
            WindowValue::Num(12.0)
        );
        // half of the first sample's interval falls outside (2.5 min of 5)
        let v = b
            .eval(&WindowFunc::Integrate, Some(27 * M + 30_000), 30 * M, t)
            .num()
            .unwrap();
        assert!((v - 11.0).abs() < 1e-12, "{v}");
    }

    #[test]
    fn delta_baseline_respects_staleness() {
        let b = buf(&[(0, 1.0), (50 * M, 1.2), (60 * M, 1.5)]);
        let fresh = FeedTiming {
            stale: Some(15 * M),
            interval: None,
        };
        // at 60 min over 1h: baseline is the sample at 0 (exactly t - w), age 0
        assert_eq!(
            b.eval(&WindowFunc::Delta, Some(60 * M), 60 * M, fresh),
            WindowValue::Num(0.5)
        );
        assert_eq!(
            b.eval(&WindowFunc::Rate, Some(60 * M), 60 * M, fresh),
            WindowValue::Num(0.5)
        );
        // at 80 min: baseline at or before 20 min is still the sample at 0, 20 min old > 15
        assert_eq!(
            b.eval(&WindowFunc::Delta, Some(60 * M), 80 * M, fresh),
            WindowValue::None
        );
    }

    #[test]
    fn twa_weights_by_holding_time() {
        // 4.0 held for 50 min, 10.0 held for 10 min -> (200 + 100) / 60 = 5.0 ; avg = 7.0
        let b = buf(&[(0, 4.0), (50 * M, 10.0)]);
        let t = FeedTiming::default();
        assert_eq!(
            b.eval(&WindowFunc::Twa, Some(60 * M), 60 * M, t),
            WindowValue::Num(5.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Avg, Some(61 * M), 60 * M, t),
            WindowValue::Num(7.0)
        );
    }

    #[test]
    fn empty_windows() {
        let b = SampleBuffer::new();
        let t = FeedTiming::default();
        assert_eq!(
            b.eval(&WindowFunc::Sum, Some(M), 0, t),
            WindowValue::Num(0.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Count, Some(M), 0, t),
            WindowValue::Num(0.0)
        );
        assert_eq!(
            b.eval(&WindowFunc::Missing, Some(M), 0, t),
            WindowValue::Bool(true)
        );
        for f in [
            WindowFunc::Avg,
            WindowFunc::Min,
            WindowFunc::Max,
            WindowFunc::Last,
            WindowFunc::Rate,
            WindowFunc::Delta,
        ] {
            assert_eq!(b.eval(&f, Some(M), 0, t), WindowValue::None, "{f:?}");
        }
    }
}
