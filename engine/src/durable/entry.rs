//! What the journal holds: every input the engine was given and everything it emitted, in
//! order. The journal's open segment is the write-ahead log of the history; sealed segments
//! become Parquet files (feature `history`).
//!
//! Entries borrow their strings where they can ([`Cow`]), so journaling a batch copies its
//! bytes into the journal's buffer without allocating a `String` per reading.

use std::borrow::Cow;

use forewarn_rules::ir::Millis;
use serde::{Deserialize, Serialize};

use crate::engine::{Accepted, Reading, Value};
use crate::record::{DataStatus, RejectReason, StatusEvent, TransitionKind, Warning};
use crate::source::DeadLetter;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry<'a> {
    /// Readings handed to the engine together (one `push_batch` or `push`).
    #[serde(borrow)]
    Batch(Batch<'a>),
    /// An input that was not accepted: undecodable, or refused by the engine.
    #[serde(borrow)]
    Rejected(RejectedRow<'a>),
    /// A warning transition.
    #[serde(borrow)]
    Warning(WarningRow<'a>),
    /// A data-status change.
    #[serde(borrow)]
    Status(StatusRow<'a>),
    /// The wall clock moved (wall mode, `@clock` rows).
    Clock {
        /// The new wall-clock time, UTC ms.
        wall: Millis,
    },
}

/// Readings that arrived together, with their arrival sequence numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch<'a> {
    /// Arrival sequence number of the first reading; reading `i` has `seq + i`.
    pub seq: u64,
    /// Wall-clock time of arrival, UTC ms.
    pub received_at: Millis,
    /// Source name (file source or subscription).
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    /// Line (or message) number within the source.
    pub line: u64,
    /// The readings, in input order.
    #[serde(borrow)]
    pub readings: Vec<ReadingRow<'a>>,
}

/// One reading as received, and what the engine did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow<'a> {
    /// Entity id.
    #[serde(borrow)]
    pub entity: Cow<'a, str>,
    /// Feed name.
    #[serde(borrow)]
    pub feed: Cow<'a, str>,
    /// Event time, UTC ms.
    pub ts: Millis,
    /// The value in the feed's declared unit, when it came as a number.
    pub value: Option<f64>,
    /// The value as text, when it came as text.
    #[serde(borrow)]
    pub text: Option<Cow<'a, str>>,
    /// What the engine did with it.
    pub outcome: Outcome,
}

impl<'a> ReadingRow<'a> {
    /// The row for a reading and its outcome; `feed` is the feed's name.
    pub fn new(r: &Reading<'a>, feed: &'a str, outcome: Outcome) -> Self {
        let (value, text) = match r.value {
            Value::Num(v) => (Some(v), None),
            Value::Text(t) => (None, Some(Cow::Borrowed(t))),
        };
        ReadingRow {
            entity: Cow::Borrowed(r.entity),
            feed: Cow::Borrowed(feed),
            ts: r.ts,
            value,
            text,
            outcome,
        }
    }

    /// The reading to push again (`feed` resolved by the caller), tagged `tag`.
    pub fn reading(&self, feed: forewarn_rules::ir::FeedId, tag: u64) -> Reading<'_> {
        let value = match (&self.value, &self.text) {
            (Some(v), _) => Value::Num(*v),
            (None, Some(t)) => Value::Text(t),
            (None, None) => Value::Num(f64::NAN),
        };
        Reading {
            entity: &self.entity,
            feed,
            ts: self.ts,
            value,
            tag,
        }
    }
}

/// What the engine did with a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied on time.
    OnTime,
    /// Applied late.
    Late,
    /// Identical redelivery.
    Duplicate,
    /// Replaced the value at its timestamp.
    Replaced,
    /// Dropped by the `ignore` policy.
    Ignored,
    /// Added to the value at its timestamp.
    Added,
    /// Held by a reorder delay (applied when the watermark passes it).
    Held,
    /// Refused (its reason is in the matching [`Entry::Rejected`]).
    Rejected,
}

impl Outcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::OnTime => "on_time",
            Outcome::Late => "late",
            Outcome::Duplicate => "duplicate",
            Outcome::Replaced => "replaced",
            Outcome::Ignored => "ignored",
            Outcome::Added => "added",
            Outcome::Held => "held",
            Outcome::Rejected => "rejected",
        }
    }

    /// True when the reading was accepted into the engine's state (or held for it).
    pub fn accepted(self) -> bool {
        !matches!(self, Outcome::Rejected)
    }
}

impl From<Result<Accepted, RejectReason>> for Outcome {
    fn from(r: Result<Accepted, RejectReason>) -> Self {
        match r {
            Ok(Accepted::OnTime) => Outcome::OnTime,
            Ok(Accepted::Late) => Outcome::Late,
            Ok(Accepted::Duplicate) => Outcome::Duplicate,
            Ok(Accepted::Replaced) => Outcome::Replaced,
            Ok(Accepted::Ignored) => Outcome::Ignored,
            Ok(Accepted::Added) => Outcome::Added,
            Ok(Accepted::Held) => Outcome::Held,
            Err(_) => Outcome::Rejected,
        }
    }
}

/// A rejected input (a dead letter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow<'a> {
    /// Wall-clock time it was rejected, UTC ms.
    pub received_at: Millis,
    /// Source name.
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    /// Line (or message) number in the source.
    pub line: u64,
    /// Reason name ([`RejectReason::as_str`]).
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    /// Explanation.
    #[serde(borrow)]
    pub detail: Cow<'a, str>,
    /// Entity, when known.
    #[serde(borrow)]
    pub entity: Option<Cow<'a, str>>,
    /// Feed, when known.
    #[serde(borrow)]
    pub feed: Option<Cow<'a, str>>,
    /// Event time, when known.
    pub ts: Option<Millis>,
    /// Value, when known.
    #[serde(borrow)]
    pub value: Option<Cow<'a, str>>,
    /// The raw line or payload.
    #[serde(borrow)]
    pub raw: Cow<'a, [u8]>,
}

impl<'a> RejectedRow<'a> {
    /// The row of a dead letter.
    pub fn new(d: &'a DeadLetter, received_at: Millis) -> Self {
        RejectedRow {
            received_at,
            source: Cow::Borrowed(&d.source),
            line: d.line,
            reason: Cow::Borrowed(d.reason.as_str()),
            detail: Cow::Borrowed(&d.detail),
            entity: d.entity.as_deref().map(Cow::Borrowed),
            feed: d.feed.as_deref().map(Cow::Borrowed),
            ts: d.ts,
            value: d.value.as_deref().map(Cow::Borrowed),
            raw: Cow::Borrowed(&d.raw),
        }
    }
}

/// A warning transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarningRow<'a> {
    /// Rule name.
    #[serde(borrow)]
    pub rule: Cow<'a, str>,
    /// Entity id.
    #[serde(borrow)]
    pub entity: Cow<'a, str>,
    /// Transition number for `(rule, entity)`, from 1.
    pub seq: u64,
    /// `raise`, `escalate`, `downgrade` or `clear`.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// Level before.
    #[serde(borrow)]
    pub from: Option<Cow<'a, str>>,
    /// Level after.
    #[serde(borrow)]
    pub to: Option<Cow<'a, str>>,
    /// Event time of the evaluation, UTC ms.
    pub event_time: Millis,
    /// Wall-clock time of emission, UTC ms.
    pub emitted_at: Millis,
    /// Caused by a late reading.
    pub late: bool,
    /// Event time far behind the wall clock.
    pub delayed: bool,
    /// Values at the evaluation.
    #[serde(borrow)]
    pub values: Vec<(Cow<'a, str>, Option<f64>)>,
    /// Thresholds compared with.
    #[serde(borrow)]
    pub thresholds: Vec<(Cow<'a, str>, Option<f64>)>,
    /// Rendered message.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
    /// SHA-256 of the rule set.
    #[serde(borrow)]
    pub ruleset: Cow<'a, str>,
    /// `observed`, `forecast` or `projected`.
    #[serde(borrow)]
    pub branch: Cow<'a, str>,
    /// Expected crossing time of a forecast or projected branch, UTC ms.
    pub expected_crossing: Option<Millis>,
}

impl<'a> From<&'a Warning> for WarningRow<'a> {
    fn from(w: &'a Warning) -> Self {
        let pairs = |v: &'a [(String, Option<f64>)]| {
            v.iter()
                .map(|(k, x)| (Cow::Borrowed(k.as_str()), *x))
                .collect()
        };
        WarningRow {
            rule: Cow::Borrowed(&w.rule),
            entity: Cow::Borrowed(&w.entity),
            seq: w.seq,
            kind: Cow::Borrowed(w.kind.as_str()),
            from: w.from.as_deref().map(Cow::Borrowed),
            to: w.to.as_deref().map(Cow::Borrowed),
            event_time: w.event_time,
            emitted_at: w.emitted_at,
            late: w.late,
            delayed: w.delayed,
            values: pairs(&w.values),
            thresholds: pairs(&w.thresholds),
            message: Cow::Borrowed(&w.message),
            ruleset: Cow::Borrowed(&w.provenance.ruleset),
            branch: Cow::Borrowed(w.branch.as_str()),
            expected_crossing: w.expected_crossing,
        }
    }
}

impl WarningRow<'_> {
    /// The transition kind, if the name is known.
    pub fn transition_kind(&self) -> Option<TransitionKind> {
        TransitionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == self.kind)
    }
}

/// A data-status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRow<'a> {
    /// Entity id.
    #[serde(borrow)]
    pub entity: Cow<'a, str>,
    /// Feed name.
    #[serde(borrow)]
    pub feed: Cow<'a, str>,
    /// Status before ([`DataStatus::as_str`]).
    #[serde(borrow)]
    pub from: Cow<'a, str>,
    /// Status after.
    #[serde(borrow)]
    pub to: Cow<'a, str>,
    /// Event time of the change, UTC ms.
    pub time: Millis,
    /// Event time of the newest accepted sample.
    pub last_sample: Option<Millis>,
}

impl<'a> From<&'a StatusEvent> for StatusRow<'a> {
    fn from(s: &'a StatusEvent) -> Self {
        StatusRow {
            entity: Cow::Borrowed(&s.entity),
            feed: Cow::Borrowed(&s.feed),
            from: Cow::Borrowed(status_name(s.from)),
            to: Cow::Borrowed(status_name(s.to)),
            time: s.time,
            last_sample: s.last_sample,
        }
    }
}

fn status_name(s: DataStatus) -> &'static str {
    s.as_str()
}
