//! Ground-truth files: observed events per rule, entity and level.
//!
//! CSV (with a header row) or JSON Lines, with the fields `rule, entity, level, start, end`:
//!
//! ```text
//! rule,entity,level,start,end
//! rain_warning,G1,orange,2017-08-26T10:00:00Z,2017-08-26T14:00:00Z
//! *,G2,yellow,2017-08-26T12:00:00-05:00,
//! ```
//!
//! ```text
//! {"rule": "*", "entity": "G2", "level": "yellow", "start": "2017-08-26T12:00:00-05:00", "end": null}
//! ```
//!
//! Times are RFC 3339 with an offset or epoch seconds/milliseconds
//! ([`crate::time::parse_timestamp`]); local times need a zone. An empty or
//! missing `end` means the event is still ongoing. An empty, missing or `*` rule applies to
//! every rule that has the level. Extra CSV columns and JSON fields are ignored.

use std::path::Path;

use forewarn_rules::ir::Millis;
use serde::Serialize;

use super::BacktestError;
use crate::time::{parse_timestamp, Zone};

/// One ground-truth event: the entity was at ≥ `level` during `[start, end]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruthEvent {
    /// The rule; `None` for every rule that has `level`.
    pub rule: Option<String>,
    /// The entity.
    pub entity: String,
    /// The level.
    pub level: String,
    /// Start (UTC ms).
    pub start: Millis,
    /// End (UTC ms); `None` while ongoing.
    pub end: Option<Millis>,
}

/// The layout of a ground-truth file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruthFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl TruthFormat {
    /// The format a file name suggests: `.jsonl`, `.ndjson` and `.json` are JSON Lines,
    /// anything else CSV.
    pub fn from_path(path: &Path) -> TruthFormat {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("jsonl" | "ndjson" | "json") => TruthFormat::JsonLines,
            _ => TruthFormat::Csv,
        }
    }
}

/// Read a ground-truth file; the format follows the extension ([`TruthFormat::from_path`]).
pub fn read_truth_file(path: &Path, zone: Option<&Zone>) -> Result<Vec<TruthEvent>, BacktestError> {
    let text = std::fs::read_to_string(path).map_err(|source| BacktestError::TruthIo {
        path: path.display().to_string(),
        source,
    })?;
    parse_truth(&text, TruthFormat::from_path(path), zone)
}

/// Parse ground-truth text. `zone` reads times without an offset (none: such times are an
/// error).
pub fn parse_truth(
    text: &str,
    format: TruthFormat,
    zone: Option<&Zone>,
) -> Result<Vec<TruthEvent>, BacktestError> {
    match format {
        TruthFormat::Csv => parse_csv(text, zone),
        TruthFormat::JsonLines => parse_jsonl(text, zone),
    }
}

fn bad(record: usize, message: impl Into<String>) -> BacktestError {
    BacktestError::Truth {
        record,
        message: message.into(),
    }
}

/// Check and convert one record's fields.
fn event(
    record: usize,
    rule: Option<&str>,
    entity: Option<&str>,
    level: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    zone: Option<&Zone>,
) -> Result<TruthEvent, BacktestError> {
    fn nonempty(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|s| !s.is_empty())
    }
    let rule = nonempty(rule).filter(|r| *r != "*").map(str::to_string);
    let entity = nonempty(entity).ok_or_else(|| bad(record, "missing entity"))?;
    let level = nonempty(level).ok_or_else(|| bad(record, "missing level"))?;
    let time = |what: &str, v: &str| {
        parse_timestamp(v, zone).map_err(|e| bad(record, format!("{what}: {e}")))
    };
    let start = time(
        "start",
        nonempty(start).ok_or_else(|| bad(record, "missing start"))?,
    )?;
    let end = nonempty(end).map(|v| time("end", v)).transpose()?;
    if let Some(e) = end {
        if e < start {
            return Err(bad(record, "end is before start"));
        }
    }
    Ok(TruthEvent {
        rule,
        entity: entity.to_string(),
        level: level.to_string(),
        start,
        end,
    })
}

fn parse_csv(text: &str, zone: Option<&Zone>) -> Result<Vec<TruthEvent>, BacktestError> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = rd.headers().map_err(|e| bad(0, e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let [rule, entity, level, start, end] = ["rule", "entity", "level", "start", "end"].map(col);
    for (name, c) in [("entity", entity), ("level", level), ("start", start)] {
        if c.is_none() {
            return Err(bad(0, format!("the header has no {name:?} column")));
        }
    }
    let mut out = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        let record = i + 1;
        let rec = rec.map_err(|e| bad(record, e.to_string()))?;
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c));
        out.push(event(
            record,
            get(rule),
            get(entity),
            get(level),
            get(start),
            get(end),
            zone,
        )?);
    }
    Ok(out)
}

fn parse_jsonl(text: &str, zone: Option<&Zone>) -> Result<Vec<TruthEvent>, BacktestError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let record = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(record, e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad(record, "not a JSON object"))?;
        // Strings as they are; numbers (epoch times) as their text; null as missing.
        let field = |name: &str| -> Result<Option<String>, BacktestError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(bad(record, format!("{name}: unexpected value {other}"))),
            }
        };
        let [rule, entity, level, start, end] = [
            field("rule")?,
            field("entity")?,
            field("level")?,
            field("start")?,
            field("end")?,
        ];
        out.push(event(
            record,
            rule.as_deref(),
            entity.as_deref(),
            level.as_deref(),
            start.as_deref(),
            end.as_deref(),
            zone,
        )?);
    }
    Ok(out)
}
