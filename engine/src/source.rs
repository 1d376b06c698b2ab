//! Replaying inputs (CSV, wide CSV, JSON Lines; files or stdin) into an [`Engine`].
//!
//! Decoding failures never stop a replay: each bad line or payload is counted under its
//! reason and handed to [`ReplayOutput::dead_letter`] with its location and raw bytes;
//! everything valid around it (even in the same batch) goes on.

// Dead letters are the cold path; returning them by value keeps decoding simple.
#![allow(clippy::result_large_err)]

use std::io::BufRead;

use forewarn_rules::ir::{FeedId, Millis, Plan};
use serde_json::Value as Json;

use crate::config::{SourceConfig, SourceFormat};
use crate::engine::{Engine, Reading, Value};
use crate::record::{RejectReason, Rejection, Sink};
use crate::time::{parse_timestamp, TimeError, Zone};

/// A rejected input, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Source name.
    pub source: String,
    /// 1-based line number in the source.
    pub line: u64,
    /// Why.
    pub reason: RejectReason,
    /// Human-readable explanation.
    pub detail: String,
    /// Entity, when known.
    pub entity: Option<String>,
    /// Feed, when known.
    pub feed: Option<String>,
    /// Event time, when known.
    pub ts: Option<Millis>,
    /// Value, when known.
    pub value: Option<String>,
    /// The raw line or payload.
    pub raw: Vec<u8>,
}

impl DeadLetter {
    /// A dead letter for a reading the engine rejected; `tag` is taken as the line number.
    pub fn from_rejection(r: Rejection, source: &str, raw: &[u8]) -> DeadLetter {
        DeadLetter {
            source: source.to_string(),
            line: r.tag,
            reason: r.reason,
            detail: r.detail,
            entity: Some(r.entity),
            feed: Some(r.feed),
            ts: Some(r.ts),
            value: Some(r.value),
            raw: raw.to_vec(),
        }
    }

    /// As a JSON object (`raw` as text when it is UTF-8, else `raw_hex`).
    pub fn to_json(&self, zone: &Zone) -> Json {
        let mut v = serde_json::json!({
            "source": self.source,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "entity": self.entity,
            "feed": self.feed,
            "ts": self.ts.map(|t| zone.format(t)),
            "value": self.value,
        });
        let raw = &self.raw[..self.raw.len().min(DEAD_LETTER_RAW_MAX)];
        if raw.len() < self.raw.len() {
            v["raw_truncated_from"] = Json::from(self.raw.len());
        }
        match std::str::from_utf8(raw) {
            Ok(s) => v["raw"] = Json::String(s.trim_end_matches(['\r', '\n']).to_string()),
            Err(_) => v["raw_hex"] = Json::String(raw.iter().map(|b| format!("{b:02x}")).collect()),
        }
        v
    }
}

/// At most this much of a rejected payload is kept in a dead-letter record.
pub const DEAD_LETTER_RAW_MAX: usize = 64 * 1024;

/// Read one line (through `\n`) into `buf`, keeping at most `max + 1` bytes of it; returns
/// the line's full length, or `None` at end of input. An oversize line is consumed whole
/// without holding it in memory.
pub fn read_line_bounded(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((total > 0).then_some(total));
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        total += n;
        input.consume(n);
        if done {
            return Ok(Some(total));
        }
    }
}

/// Where a replay's output goes: the engine's [`Sink`] plus dead letters.
pub trait ReplayOutput: Sink {
    /// A rejected input.
    fn dead_letter(&mut self, d: DeadLetter);
    /// Make everything written so far durable (flush and `fsync` output files); returns
    /// where the outputs stand, for a checkpoint to cut them back to on recovery.
    fn commit(&mut self) -> std::io::Result<Committed> {
        Ok(Committed::default())
    }
}

/// Where a replay's outputs stand after [`ReplayOutput::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Length of each output file, in the output's own order.
    pub lengths: Vec<u64>,
    /// Records written: warnings, data-status events, dead letters.
    pub counts: (u64, u64, u64),
}

/// Finds the feed of a reading from its entity and the feed it names, if any; on failure the
/// reason and a human-readable explanation.
pub type Resolve<'a> = dyn Fn(&str, Option<&str>) -> Result<FeedId, (RejectReason, String)> + 'a;

/// Per-source statistics.
#[derive(Debug, Clone, Default)]
pub struct SourceStats {
    /// Lines read (header excluded).
    pub lines: u64,
    /// Readings handed to the engine.
    pub readings: u64,
    /// Lines or payloads that could not be decoded.
    pub bad: u64,
}

/// Adapts a [`ReplayOutput`] so that engine rejections become dead letters carrying the
/// current line's location and raw bytes.
struct LineContext<'a> {
    out: &'a mut dyn ReplayOutput,
    source: &'a str,
    line: u64,
    raw: &'a [u8],
}

impl Sink for LineContext<'_> {
    fn warning(&mut self, w: crate::record::Warning) {
        self.out.warning(w)
    }
    fn status(&mut self, s: crate::record::StatusEvent) {
        self.out.status(s)
    }
    fn rejected(&mut self, r: Rejection) {
        let raw = if r.tag == self.line { self.raw } else { &[] };
        self.out
            .dead_letter(DeadLetter::from_rejection(r, self.source, raw));
    }
    fn evaluated(&mut self, e: &crate::record::Evaluation<'_>) {
        self.out.evaluated(e)
    }
}

/// What a replay feeds readings to: an [`Engine`], or the daemon's shard router (which
/// evaluates them elsewhere, so outcomes are not returned).
pub trait ReplayTarget {
    /// The compiled plan (feeds are resolved against it).
    fn plan(&self) -> &Plan;
    /// The feed id for a feed name.
    fn feed(&self, name: &str) -> Option<FeedId> {
        self.plan().feed_by_name(name)
    }
    /// Count a reading that could not be decoded.
    fn count_source_rejection(&mut self, reason: RejectReason);
    /// One reading that arrived alone.
    fn push(&mut self, r: &Reading<'_>, out: &mut dyn Sink);
    /// Readings that arrived together (a batch).
    fn push_batch(&mut self, readings: &[Reading<'_>], out: &mut dyn Sink);
    /// Move the wall clock (`@clock` rows).
    fn set_wall_clock(&mut self, now: Millis, out: &mut dyn Sink);
    /// Lines up to and including this one (data lines; a header is always read) are read
    /// but not handed over: they were handled before the checkpoint being resumed from.
    fn skip_through(&self) -> u64 {
        0
    }
    /// Line `line` (and everything before it) has been handled completely: a point where a
    /// checkpoint may be taken.
    fn line_done(
        &mut self,
        _line: u64,
        _stats: &SourceStats,
        _out: &mut dyn ReplayOutput,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

impl ReplayTarget for Engine {
    fn plan(&self) -> &Plan {
        Engine::plan(self)
    }
    fn count_source_rejection(&mut self, reason: RejectReason) {
        Engine::count_source_rejection(self, reason)
    }
    fn push(&mut self, r: &Reading<'_>, out: &mut dyn Sink) {
        let _ = Engine::push(self, r, out);
    }
    fn push_batch(&mut self, readings: &[Reading<'_>], out: &mut dyn Sink) {
        Engine::push_batch(self, readings, out);
    }
    fn set_wall_clock(&mut self, now: Millis, out: &mut dyn Sink) {
        Engine::set_wall_clock(self, now, out)
    }
}

/// Resolves the feed of a reading that does not name one (by entity), if the source has no
/// fixed feed.
pub type FeedOf<'a> = &'a dyn Fn(&str) -> Option<FeedId>;

/// Replay one source into the engine. `@clock,<ts>,` rows (CSV) move the wall clock.
pub fn replay(
    engine: &mut dyn ReplayTarget,
    src: &SourceConfig,
    input: &mut dyn BufRead,
    out: &mut dyn ReplayOutput,
    feed_of: Option<FeedOf<'_>>,
) -> std::io::Result<SourceStats> {
    match src.format {
        SourceFormat::CsvWide => replay_wide(engine, src, input, out),
        SourceFormat::Csv => replay_lines(engine, src, input, out, feed_of, Kind::Csv),
        SourceFormat::Jsonl => replay_lines(engine, src, input, out, feed_of, Kind::Jsonl),
        SourceFormat::History => Err(std::io::Error::other(format!(
            "source {}: a history source is replayed by `forewarn run` only",
            src.name
        ))),
    }
}

fn bad(
    source: &str,
    line: u64,
    reason: RejectReason,
    detail: impl Into<String>,
    raw: &[u8],
) -> DeadLetter {
    DeadLetter {
        source: source.to_string(),
        line,
        reason,
        detail: detail.into(),
        entity: None,
        feed: None,
        ts: None,
        value: None,
        raw: raw.to_vec(),
    }
}

/// Count a line or payload that could not be decoded and hand it to the dead letters.
fn reject_line(
    engine: &mut dyn ReplayTarget,
    stats: &mut SourceStats,
    out: &mut dyn ReplayOutput,
    d: DeadLetter,
) {
    stats.bad += 1;
    engine.count_source_rejection(d.reason);
    out.dead_letter(d);
}

/// The dead letter of a line longer than the source allows (only its first bytes are kept).
fn too_large(src: &SourceConfig, line: u64, len: usize, raw: &[u8]) -> DeadLetter {
    let detail = format!("line of {len} bytes (limit {})", src.max_line_bytes);
    bad(&src.name, line, RejectReason::TooLarge, detail, raw)
}

fn time_reason(e: &TimeError) -> RejectReason {
    match e {
        TimeError::NoOffset(_) => RejectReason::NoOffset,
        _ => RejectReason::BadTimestamp,
    }
}

/// Split a CSV line (RFC 4180 quoting) into fields.
fn split_csv(line: &str, fields: &mut Vec<String>) {
    fields.clear();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
}

fn replay_wide(
    engine: &mut dyn ReplayTarget,
    src: &SourceConfig,
    input: &mut dyn BufRead,
    out: &mut dyn ReplayOutput,
) -> std::io::Result<SourceStats> {
    let mut stats = SourceStats::default();
    let feed_name = src.feed.clone().unwrap_or_default();
    let Some(feed) = engine.feed(&feed_name) else {
        engine.count_source_rejection(RejectReason::UnknownFeed);
        out.dead_letter(bad(
            &src.name,
            0,
            RejectReason::UnknownFeed,
            format!("feed {feed_name:?} is not declared in the rules"),
            b"",
        ));
        return Ok(stats);
    };
    let mut raw = Vec::new();
    let mut fields = Vec::new();
    let mut line_no = 0u64;
    // header
    let header: Vec<String> = loop {
        raw.clear();
        let Some(_) = read_line_bounded(input, &mut raw, src.max_line_bytes)? else {
            return Ok(stats);
        };
        line_no += 1;
        let text = String::from_utf8_lossy(&raw);
        if text.trim().is_empty() {
            continue;
        }
        split_csv(text.trim_end_matches(['\r', '\n']), &mut fields);
        break fields.iter().map(|f| f.trim().to_string()).collect();
    };
    let Some(time_col) = header.iter().position(|h| *h == src.time_column) else {
        engine.count_source_rejection(RejectReason::MissingField);
        out.dead_letter(bad(
            &src.name,
            line_no,
            RejectReason::MissingField,
            format!("no time column {:?} in the header", src.time_column),
            &raw,
        ));
        return Ok(stats);
    };
    let entity_cols: Vec<usize> = (0..header.len())
        .filter(|&i| i != time_col && !src.skip_columns.contains(&header[i]))
        .collect();
    let skip = engine.skip_through();
    loop {
        engine.line_done(line_no, &stats, out)?;
        raw.clear();
        let Some(len) = read_line_bounded(input, &mut raw, src.max_line_bytes)? else {
            break;
        };
        line_no += 1;
        if line_no <= skip {
            continue;
        }
        stats.lines += 1;
        if len > src.max_line_bytes {
            reject_line(engine, &mut stats, out, too_large(src, line_no, len, &raw));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&raw) else {
            reject_line(
                engine,
                &mut stats,
                out,
                bad(
                    &src.name,
                    line_no,
                    RejectReason::Malformed,
                    "line is not UTF-8",
                    &raw,
                ),
            );
            continue;
        };
        let text = text.trim_end_matches(['\r', '\n']);
        if text.trim().is_empty() {
            continue;
        }
        split_csv(text, &mut fields);
        if fields.len() != header.len() {
            reject_line(
                engine,
                &mut stats,
                out,
                bad(
                    &src.name,
                    line_no,
                    RejectReason::Malformed,
                    format!(
                        "{} fields where the header has {}",
                        fields.len(),
                        header.len()
                    ),
                    &raw,
                ),
            );
            continue;
        }
        let ts = match parse_timestamp(&fields[time_col], src.time_zone.as_ref()) {
            Ok(ts) => ts,
            Err(e) => {
                reject_line(
                    engine,
                    &mut stats,
                    out,
                    bad(&src.name, line_no, time_reason(&e), e.to_string(), &raw),
                );
                continue;
            }
        };
        let mut readings: Vec<Reading<'_>> = Vec::with_capacity(entity_cols.len());
        for &c in &entity_cols {
            let cell = fields[c].trim();
            if cell.is_empty() {
                continue;
            }
            let value = match cell.parse::<f64>() {
                Ok(v) => Value::Num(v),
                Err(_) => Value::Text(cell),
            };
            readings.push(Reading {
                entity: &header[c],
                feed,
                ts,
                value,
                tag: line_no,
            });
        }
        stats.readings += readings.len() as u64;
        let mut ctx = LineContext {
            out,
            source: &src.name,
            line: line_no,
            raw: &raw,
        };
        engine.push_batch(&readings, &mut ctx);
    }
    Ok(stats)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    Jsonl,
}

/// A decoded reading that owns its strings (it outlives the line or payload it came from).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Entity id.
    pub entity: String,
    /// Feed.
    pub feed: FeedId,
    /// Event time, UTC ms.
    pub ts: Millis,
    /// The value as received.
    pub value: DecodedValue,
}

/// A decoded value: a number, or text the engine coerces (or rejects for a strict feed).
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedValue {
    /// A number.
    Num(f64),
    /// A number sent as text (or not a number at all).
    Text(String),
}

impl Decoded {
    /// The reading to push, borrowing from `self`.
    pub fn reading(&self, tag: u64) -> Reading<'_> {
        Reading {
            entity: &self.entity,
            feed: self.feed,
            ts: self.ts,
            value: match &self.value {
                DecodedValue::Num(v) => Value::Num(*v),
                DecodedValue::Text(s) => Value::Text(s),
            },
            tag,
        }
    }
}

/// Where a JSON payload comes from and how to read it (see [`decode_json_payload`]).
pub struct JsonContext<'a> {
    /// Source name (file source name, or MQTT topic) for dead letters.
    pub source: &'a str,
    /// Line number or message sequence number for dead letters.
    pub line: u64,
    /// Zone for timestamps without an offset.
    pub time_zone: Option<&'a Zone>,
    /// Entity for readings that do not name one (e.g. from an MQTT topic).
    pub entity: Option<&'a str>,
    /// Resolves each reading's feed.
    pub resolve: &'a Resolve<'a>,
}

impl std::fmt::Debug for JsonContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonContext")
            .field("source", &self.source)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// Decode one JSON payload: a reading object, or an array of them (a batch). Valid readings
/// go to `decoded`; every bad one becomes a dead letter (its own JSON as `raw` when it is an
/// item of a batch, the whole payload otherwise) and the rest of the batch is kept.
/// Shared by JSON Lines replay and the daemon's MQTT intake.
pub fn decode_json_payload(
    text: &str,
    raw: &[u8],
    cx: &JsonContext<'_>,
    decoded: &mut Vec<Decoded>,
    dead: &mut Vec<DeadLetter>,
) {
    let whole = |mut d: DeadLetter| {
        d.line = cx.line;
        d.raw = raw.to_vec();
        d
    };
    match serde_json::from_str::<Json>(text) {
        Err(e) => dead.push(whole(bad(
            cx.source,
            cx.line,
            RejectReason::Malformed,
            format!("invalid JSON: {e}"),
            raw,
        ))),
        Ok(Json::Array(items)) => {
            for item in &items {
                match decode_json(item, cx) {
                    Ok(d) => decoded.push(d),
                    Err(mut d) => {
                        d.line = cx.line;
                        d.raw = item.to_string().into_bytes();
                        dead.push(d);
                    }
                }
            }
        }
        Ok(item) => match decode_json(&item, cx) {
            Ok(d) => decoded.push(d),
            Err(d) => dead.push(whole(d)),
        },
    }
}

fn replay_lines(
    engine: &mut dyn ReplayTarget,
    src: &SourceConfig,
    input: &mut dyn BufRead,
    out: &mut dyn ReplayOutput,
    feed_of: Option<FeedOf<'_>>,
    kind: Kind,
) -> std::io::Result<SourceStats> {
    let mut stats = SourceStats::default();
    let fixed_feed = src.feed.as_deref().and_then(|f| engine.feed(f));
    if let (Some(name), None) = (&src.feed, fixed_feed) {
        engine.count_source_rejection(RejectReason::UnknownFeed);
        out.dead_letter(bad(
            &src.name,
            0,
            RejectReason::UnknownFeed,
            format!("feed {name:?} is not declared in the rules"),
            b"",
        ));
        return Ok(stats);
    }
    let mut raw = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut columns: Option<(usize, usize, usize, Option<usize>)> = None;
    // number of fields every data row must have
    let mut width = 3;
    if kind == Kind::Csv && !src.header {
        columns = Some((0, 1, 2, None));
    }
    let mut line_no = 0u64;
    let mut decoded: Vec<Decoded> = Vec::new();
    let skip = engine.skip_through();
    loop {
        if line_no > 0 {
            engine.line_done(line_no, &stats, out)?;
        }
        raw.clear();
        let Some(len) = read_line_bounded(input, &mut raw, src.max_line_bytes)? else {
            break;
        };
        line_no += 1;
        // Resuming: lines already handled are passed over, except that a CSV header not yet
        // read is still read (it may lie within them).
        let skipping = line_no <= skip;
        if skipping && (kind != Kind::Csv || columns.is_some()) {
            continue;
        }
        if len > src.max_line_bytes {
            if skipping {
                continue;
            }
            stats.lines += 1;
            reject_line(engine, &mut stats, out, too_large(src, line_no, len, &raw));
            continue;
        }
        let trimmed = trim_ascii(&raw);
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let text = match std::str::from_utf8(trimmed) {
            Ok(t) => t,
            Err(_) if skipping => continue,
            Err(_) => {
                stats.lines += 1;
                reject_line(
                    engine,
                    &mut stats,
                    out,
                    bad(
                        &src.name,
                        line_no,
                        RejectReason::Malformed,
                        "not UTF-8 text",
                        &raw,
                    ),
                );
                continue;
            }
        };
        if kind == Kind::Csv && columns.is_none() {
            split_csv(text, &mut fields);
            let find = |n: &str| fields.iter().position(|f| f.trim() == n);
            match (
                find(&src.entity_column),
                find(&src.time_column),
                find(&src.value_column),
            ) {
                (Some(e), Some(t), Some(v)) => {
                    let f = src.feed_column.as_deref().and_then(find);
                    columns = Some((e, t, v, f));
                    width = fields.len();
                }
                _ => {
                    engine.count_source_rejection(RejectReason::MissingField);
                    out.dead_letter(bad(
                        &src.name,
                        line_no,
                        RejectReason::MissingField,
                        format!(
                            "header lacks one of the columns {:?}, {:?}, {:?}",
                            src.entity_column, src.time_column, src.value_column
                        ),
                        &raw,
                    ));
                    return Ok(stats);
                }
            }
            continue;
        }
        stats.lines += 1;
        decoded.clear();
        if kind == Kind::Csv {
            split_csv(text, &mut fields);
            if fields.first().map(|f| f.trim()) == Some("@clock") {
                match fields
                    .get(1)
                    .map(|t| parse_timestamp(t, src.time_zone.as_ref()))
                {
                    Some(Ok(t)) => {
                        let mut ctx = LineContext {
                            out,
                            source: &src.name,
                            line: line_no,
                            raw: &raw,
                        };
                        engine.set_wall_clock(t, &mut ctx);
                    }
                    _ => {
                        reject_line(
                            engine,
                            &mut stats,
                            out,
                            bad(
                                &src.name,
                                line_no,
                                RejectReason::BadTimestamp,
                                "bad @clock line",
                                &raw,
                            ),
                        );
                    }
                }
                continue;
            }
        }
        let mut item_errors: Vec<DeadLetter> = Vec::new();
        let plan = engine.plan();
        let resolve =
            |entity: &str, named: Option<&str>| -> Result<FeedId, (RejectReason, String)> {
                if let Some(n) = named {
                    return plan.feed_by_name(n).ok_or_else(|| {
                        (
                            RejectReason::UnknownFeed,
                            format!("feed {n:?} is not declared"),
                        )
                    });
                }
                fixed_feed
                    .or_else(|| feed_of.and_then(|f| f(entity)))
                    .ok_or_else(|| {
                        (
                            RejectReason::UnknownEntity,
                            format!("no feed is configured for entity {entity:?}"),
                        )
                    })
            };
        let result: Result<(), DeadLetter> = match kind {
            Kind::Csv => {
                let (ec, tc, vc, fc) = columns.unwrap_or((0, 1, 2, None));
                if fields.len() <= ec.max(tc).max(vc) {
                    Err(bad(
                        &src.name,
                        line_no,
                        RejectReason::MissingField,
                        format!("{} fields where {width} are expected", fields.len()),
                        &raw,
                    ))
                } else if fields.len() != width {
                    Err(bad(
                        &src.name,
                        line_no,
                        RejectReason::Malformed,
                        format!("{} fields where {width} are expected", fields.len()),
                        &raw,
                    ))
                } else if fields[ec].trim().is_empty() {
                    Err(bad(
                        &src.name,
                        line_no,
                        RejectReason::MissingField,
                        "empty entity",
                        &raw,
                    ))
                } else {
                    let entity = fields[ec].trim().to_string();
                    let named = fc.and_then(|c| fields.get(c)).map(|s| s.trim().to_string());
                    resolve(&entity, named.as_deref())
                        .map_err(|(reason, detail)| bad(&src.name, line_no, reason, detail, &raw))
                        .and_then(|feed| {
                            let ts = parse_timestamp(&fields[tc], src.time_zone.as_ref()).map_err(
                                |e| bad(&src.name, line_no, time_reason(&e), e.to_string(), &raw),
                            )?;
                            let cell = fields[vc].trim();
                            let value = cell.parse::<f64>().map_or_else(
                                |_| DecodedValue::Text(cell.to_string()),
                                DecodedValue::Num,
                            );
                            decoded.push(Decoded {
                                entity,
                                feed,
                                ts,
                                value,
                            });
                            Ok(())
                        })
                }
            }
            Kind::Jsonl => {
                // a batch: every valid item is kept even when others are bad
                let cx = JsonContext {
                    source: &src.name,
                    line: line_no,
                    time_zone: src.time_zone.as_ref(),
                    entity: None,
                    resolve: &resolve,
                };
                decode_json_payload(text, &raw, &cx, &mut decoded, &mut item_errors);
                Ok(())
            }
        };
        for d in item_errors {
            reject_line(engine, &mut stats, out, d);
        }
        if let Err(mut d) = result {
            d.line = line_no;
            d.raw = raw.clone();
            reject_line(engine, &mut stats, out, d);
            continue;
        }
        let readings: Vec<Reading<'_>> = decoded.iter().map(|d| d.reading(line_no)).collect();
        stats.readings += readings.len() as u64;
        let mut ctx = LineContext {
            out,
            source: &src.name,
            line: line_no,
            raw: &raw,
        };
        match readings.as_slice() {
            [one] => {
                engine.push(one, &mut ctx);
            }
            [] => {}
            many => {
                engine.push_batch(many, &mut ctx);
            }
        }
    }
    Ok(stats)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn decode_json(item: &Json, cx: &JsonContext<'_>) -> Result<Decoded, DeadLetter> {
    let src = cx.source;
    let missing = |what: &str| {
        bad(
            src,
            0,
            RejectReason::MissingField,
            format!("missing field {what:?}"),
            b"",
        )
    };
    let Json::Object(map) = item else {
        return Err(bad(
            src,
            0,
            RejectReason::Malformed,
            "a reading must be a JSON object",
            b"",
        ));
    };
    let field = |names: &[&str]| names.iter().find_map(|n| map.get(*n));
    let entity = match field(&["entity", "id", "station", "site"]) {
        Some(Json::String(s)) if s.trim().is_empty() => return Err(missing("entity")),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(bad(
                src,
                0,
                RejectReason::Malformed,
                "entity must be a string",
                b"",
            ))
        }
        None => match cx.entity {
            Some(e) => e.to_string(),
            None => return Err(missing("entity")),
        },
    };
    let feed_name = match field(&["feed", "metric"]) {
        Some(Json::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(bad(
                src,
                0,
                RejectReason::Malformed,
                "feed must be a string",
                b"",
            ))
        }
        None => None,
    };
    let with = |mut d: DeadLetter| {
        d.entity = Some(entity.clone());
        d
    };
    let feed = (cx.resolve)(&entity, feed_name)
        .map_err(|(reason, detail)| with(bad(src, 0, reason, detail, b"")))?;
    let ts = match field(&["ts", "time", "timestamp"]) {
        Some(Json::String(s)) => parse_timestamp(s, cx.time_zone)
            .map_err(|e| with(bad(src, 0, time_reason(&e), e.to_string(), b"")))?,
        Some(Json::Number(n)) => parse_timestamp(&n.to_string(), None)
            .map_err(|e| with(bad(src, 0, RejectReason::BadTimestamp, e.to_string(), b"")))?,
        Some(_) => {
            return Err(with(bad(
                src,
                0,
                RejectReason::BadTimestamp,
                "timestamp must be a string or a number",
                b"",
            )))
        }
        None => return Err(with(missing("ts"))),
    };
    let value = match map.get("value") {
        Some(Json::Number(n)) => DecodedValue::Num(n.as_f64().unwrap_or(f64::NAN)),
        Some(Json::String(s)) => DecodedValue::Text(s.clone()),
        Some(Json::Null) | None => return Err(with(missing("value"))),
        Some(other) => {
            return Err(with(bad(
                src,
                0,
                RejectReason::NotNumeric,
                format!("value {other} is not a number"),
                b"",
            )));
        }
    };
    Ok(Decoded {
        entity,
        feed,
        ts,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let mut f = Vec::new();
        split_csv(r#"a,"b,c","d""e",,f"#, &mut f);
        assert_eq!(f, vec!["a", "b,c", "d\"e", "", "f"]);
    }
}
