//! Data-driven rule cases (`forewarn test`), like `promtool test rules`: a directory holds
//! `case.toml`, `rules.rules`, the input(s) and `expected.txt`; the runner replays the input
//! and compares the transitions exactly. The format is documented in `docs/cases.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;

use crate::config::{SourceConfig, SourceFormat};
use crate::engine::{ClockMode, Counters, Engine, EngineConfig};
use crate::loader::{load_rules, LoadError};
use crate::record::{RejectReason, Rejection, Sink, StatusEvent, TransitionKind, Warning};
use crate::source::{replay, DeadLetter, ReplayOutput};
use crate::time::{parse_duration, parse_timestamp, Zone};

/// Errors that prevent a case from running at all.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A file of the case cannot be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The case's rules do not compile.
    #[error("{0}")]
    Rules(#[from] LoadError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CaseFile {
    description: Option<String>,
    source: Option<String>,
    clock: Option<String>,
    watermark_delay: Option<String>,
    zone: Option<String>,
    date: Option<String>,
    future_skew: Option<String>,
    inputs: Option<Vec<String>>,
    #[serde(default)]
    status: bool,
    #[serde(default)]
    feeds: BTreeMap<String, String>,
    #[serde(default)]
    counters: BTreeMap<String, u64>,
}

/// One expected or produced line.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    key: (String, String, String, String, i64),
    checks: Vec<(String, String)>,
    text: String,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Case directory.
    pub dir: PathBuf,
    /// Description from case.toml.
    pub description: String,
    /// Expected lines not produced, produced lines not expected, failed value checks and
    /// counter mismatches. Empty when the case passes.
    pub failures: Vec<String>,
    /// Every transition produced, in the expected.txt notation (for blessing and debugging).
    pub produced: Vec<String>,
}

impl CaseReport {
    /// True when the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.passed() {
            return write!(f, "PASS {name}");
        }
        writeln!(f, "FAIL {name}: {}", self.description)?;
        for x in &self.failures {
            writeln!(f, "  {x}")?;
        }
        writeln!(f, "  produced:")?;
        for p in &self.produced {
            writeln!(f, "    {p}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Collect {
    warnings: Vec<Warning>,
    status: Vec<StatusEvent>,
    dead: Vec<DeadLetter>,
}

impl Sink for Collect {
    fn warning(&mut self, w: Warning) {
        self.warnings.push(w);
    }
    fn status(&mut self, s: StatusEvent) {
        self.status.push(s);
    }
    fn rejected(&mut self, r: Rejection) {
        self.dead.push(DeadLetter::from_rejection(r, "", &[]));
    }
}

impl ReplayOutput for Collect {
    fn dead_letter(&mut self, d: DeadLetter) {
        self.dead.push(d);
    }
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, rest)) => {
            s.starts_with(pre) && {
                let tail = &s[pre.len()..];
                (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
            }
        }
    }
}

fn read(path: &Path) -> Result<String, CaseError> {
    std::fs::read_to_string(path).map_err(|e| CaseError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Find case directories: `path` itself when it holds `case.toml`, else every directory
/// below it that does (sorted).
pub fn discover(path: &Path) -> Vec<PathBuf> {
    if path.join("case.toml").is_file() {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                found.extend(discover(&e.path()));
            }
        }
    }
    found.sort();
    found
}

/// Run one case directory.
pub fn run_case(dir: &Path) -> Result<CaseReport, CaseError> {
    let case_path = dir.join("case.toml");
    let case: CaseFile = toml::from_str(&read(&case_path)?).map_err(|e| CaseError::File {
        path: case_path.clone(),
        message: e.to_string(),
    })?;
    let bad = |m: String| CaseError::File {
        path: case_path.clone(),
        message: m,
    };
    let zone: Zone = case
        .zone
        .as_deref()
        .unwrap_or("+00:00")
        .parse()
        .map_err(|e| bad(format!("{e}")))?;
    let date = case
        .date
        .as_deref()
        .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| bad(format!("date: {e}"))))
        .transpose()?;
    let dur = |k: &str, v: &Option<String>| -> Result<Option<i64>, CaseError> {
        v.as_deref()
            .map(|s| parse_duration(s).ok_or_else(|| bad(format!("{k}: bad duration {s:?}"))))
            .transpose()
    };
    let cfg = EngineConfig {
        clock: match case.clock.as_deref() {
            Some("event") => ClockMode::Event,
            None | Some("wall") => ClockMode::Wall,
            Some(other) => {
                return Err(bad(format!(
                    "clock {other:?} is neither \"event\" nor \"wall\""
                )))
            }
        },
        watermark_delay: dur("watermark-delay", &case.watermark_delay)?.unwrap_or(0),
        future_skew: dur("future-skew", &case.future_skew)?,
        ..EngineConfig::default()
    };
    let engine_event = cfg.clock == ClockMode::Event;
    let compiled = load_rules(&dir.join("rules.rules"), HashMap::new())?;
    let mut engine = Engine::new(compiled.plan, cfg);
    let feed_globs: Vec<(String, Option<usize>)> = case
        .feeds
        .iter()
        .map(|(g, f)| (g.clone(), engine.feed(f)))
        .collect();
    let feed_of = |entity: &str| {
        feed_globs
            .iter()
            .find(|(g, _)| glob(g, entity))
            .and_then(|(_, f)| *f)
    };
    let mut out = Collect::default();
    let cfg_event = engine_event;
    for input in case
        .inputs
        .clone()
        .unwrap_or_else(|| vec!["input.csv".into()])
    {
        let path = dir.join(&input);
        if cfg_event
            && std::fs::read(&path)
                .is_ok_and(|b| b.split(|&c| c == b'\n').any(|l| l.starts_with(b"@clock")))
        {
            return Err(CaseError::File {
                path,
                message:
                    "@clock lines move the wall clock: they need clock = \"wall\" in case.toml"
                        .into(),
            });
        }
        let format = if input.ends_with(".jsonl") {
            SourceFormat::Jsonl
        } else {
            SourceFormat::Csv
        };
        let src = SourceConfig {
            name: input.clone(),
            format,
            path: path.clone(),
            feed: None,
            time_column: "ts".into(),
            time_zone: None,
            entity_column: "entity".into(),
            value_column: "value".into(),
            feed_column: None,
            skip_columns: Vec::new(),
            header: false,
            max_line_bytes: 1 << 20,
        };
        let f = File::open(&path).map_err(|e| CaseError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        replay(
            &mut engine,
            &src,
            &mut BufReader::new(f),
            &mut out,
            Some(&feed_of),
        )
        .map_err(|e| CaseError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    engine.finish(&mut out);

    let parse_at = |s: &str| -> Result<i64, String> {
        if s.len() <= 12 && s.contains(':') && !s.contains('T') {
            let d = date.ok_or("short time needs `date` in case.toml")?;
            let t = chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveTime::parse_from_str(s, "%H:%M"))
                .map_err(|e| format!("{s:?}: {e}"))?;
            zone.local_to_utc(d.and_time(t))
                .ok_or_else(|| format!("{s:?} does not exist"))
        } else {
            parse_timestamp(s, Some(&zone)).map_err(|e| e.to_string())
        }
    };
    let exp_path = dir.join("expected.txt");
    let mut expected = Vec::new();
    let mut failures = Vec::new();
    let mut problems = Vec::new();
    let plan = engine.plan();
    for (n, raw) in read(&exp_path)?.lines().enumerate() {
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let line = n + 1;
        let parts: Vec<&str> = text.split('|').map(str::trim).collect();
        if parts.len() < 5 {
            problems.push(format!(
                "line {line}: need 5 fields `entity | rule | level | action | at`: {raw}"
            ));
            continue;
        }
        let at = match parse_at(parts[4]) {
            Ok(at) => at,
            Err(m) => {
                problems.push(format!("line {line}: {m}"));
                continue;
            }
        };
        let checks: Vec<(String, String)> =
            parts[5..].iter().flat_map(|p| parse_checks(p)).collect();
        if parts[2] == "status" {
            if plan.feed_by_name(parts[1]).is_none() {
                problems.push(format!(
                    "line {line}: no feed {:?} in rules.rules",
                    parts[1]
                ));
            }
            if !["ok", "stale", "offline"].contains(&parts[3]) {
                problems.push(format!(
                    "line {line}: status {:?} is not ok, stale or offline",
                    parts[3]
                ));
            }
        } else {
            match plan.rules.iter().find(|r| r.name == parts[1]) {
                None => problems.push(format!(
                    "line {line}: no rule {:?} in rules.rules",
                    parts[1]
                )),
                Some(rule) => {
                    for level in parts[2].split('>') {
                        if !rule.levels.iter().any(|l| l.name == level) {
                            problems.push(format!(
                                "line {line}: rule {} has no level {level:?}",
                                rule.name
                            ));
                        }
                    }
                }
            }
            if !TransitionKind::ALL.iter().any(|k| k.as_str() == parts[3]) {
                problems.push(format!(
                    "line {line}: action {:?} is not raise, escalate, downgrade or clear",
                    parts[3]
                ));
            }
            for (k, v) in &checks {
                if matches!(k.as_str(), "late" | "delayed")
                    && !matches!(v.as_str(), "true" | "false")
                {
                    problems.push(format!("line {line}: {k}={v}: expected true or false"));
                }
            }
        }
        let key = (
            parts[0].into(),
            parts[1].into(),
            parts[2].into(),
            parts[3].into(),
            at,
        );
        if parts[2] == "status" && !case.status {
            continue;
        }
        expected.push(Line {
            key,
            checks,
            text: text.to_string(),
        });
    }
    if !problems.is_empty() {
        return Err(CaseError::File {
            path: exp_path,
            message: problems.join("\n  "),
        });
    }
    let fmt_t = |t: i64| zone.format(t);
    let mut produced: Vec<(Line, Option<&Warning>)> = Vec::new();
    for w in &out.warnings {
        let level = match w.kind {
            TransitionKind::Raise => w.to.clone().unwrap_or_default(),
            TransitionKind::Clear => w.from.clone().unwrap_or_default(),
            _ => format!(
                "{}>{}",
                w.from.as_deref().unwrap_or(""),
                w.to.as_deref().unwrap_or("")
            ),
        };
        let key = (
            w.entity.clone(),
            w.rule.clone(),
            level,
            w.kind.as_str().to_string(),
            w.event_time,
        );
        let text = format!(
            "{} | {} | {} | {} | {}",
            key.0,
            key.1,
            key.2,
            key.3,
            fmt_t(key.4)
        );
        produced.push((
            Line {
                key,
                checks: Vec::new(),
                text,
            },
            Some(w),
        ));
    }
    if case.status {
        for s in &out.status {
            let key = (
                s.entity.clone(),
                s.feed.clone(),
                "status".to_string(),
                s.to.as_str().to_string(),
                s.time,
            );
            let text = format!(
                "{} | {} | status | {} | {}",
                key.0,
                key.1,
                key.3,
                fmt_t(key.4)
            );
            produced.push((
                Line {
                    key,
                    checks: Vec::new(),
                    text,
                },
                None,
            ));
        }
    }
    let mut used = vec![false; produced.len()];
    for e in &expected {
        match (0..produced.len()).find(|&i| !used[i] && produced[i].0.key == e.key) {
            None => failures.push(format!("missing:    {}", e.text)),
            Some(i) => {
                used[i] = true;
                if let Some(w) = produced[i].1 {
                    for (k, v) in &e.checks {
                        if let Err(m) = check_value(w, k, v) {
                            failures.push(format!("value:      {} -> {m}", e.text));
                        }
                    }
                }
            }
        }
    }
    for (i, (p, _)) in produced.iter().enumerate() {
        if !used[i] {
            failures.push(format!("unexpected: {}", p.text));
        }
    }
    let counters = engine.counters();
    for (name, want) in &case.counters {
        match counter(counters, name) {
            None => failures.push(format!("counter:    unknown counter {name:?}")),
            Some(got) if got != *want => {
                failures.push(format!("counter:    {name} = {got}, expected {want}"))
            }
            _ => {}
        }
    }
    let _ = case.source;
    Ok(CaseReport {
        dir: dir.to_path_buf(),
        description: case.description.unwrap_or_default(),
        failures,
        produced: produced.into_iter().map(|(l, _)| l.text).collect(),
    })
}

/// `sum(rain, 1h)=30 late=true` → pairs; labels may contain spaces, values may not.
fn parse_checks(field: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut key = String::new();
    for tok in field.split_whitespace() {
        match tok.split_once('=') {
            Some((k, v)) => {
                if !key.is_empty() {
                    key.push(' ');
                }
                key.push_str(k);
                out.push((std::mem::take(&mut key), v.to_string()));
            }
            None => {
                if !key.is_empty() {
                    key.push(' ');
                }
                key.push_str(tok);
            }
        }
    }
    out
}

fn check_value(w: &Warning, k: &str, v: &str) -> Result<(), String> {
    match k {
        "late" => (w.late.to_string() == v)
            .then_some(())
            .ok_or_else(|| format!("late = {}", w.late)),
        "delayed" => (w.delayed.to_string() == v)
            .then_some(())
            .ok_or_else(|| format!("delayed = {}", w.delayed)),
        "seq" => (w.seq.to_string() == v)
            .then_some(())
            .ok_or_else(|| format!("seq = {}", w.seq)),
        _ => {
            let got = w
                .values
                .iter()
                .chain(&w.thresholds)
                .find(|(l, _)| l == k)
                .map(|(_, x)| *x);
            let Some(got) = got else {
                let labels: Vec<&str> = w
                    .values
                    .iter()
                    .chain(&w.thresholds)
                    .map(|(l, _)| l.as_str())
                    .collect();
                return Err(format!("no value {k:?} in the record (has {labels:?})"));
            };
            let want: Option<f64> = if v == "none" {
                None
            } else {
                Some(v.parse().map_err(|_| format!("bad number {v:?}"))?)
            };
            match (got, want) {
                (None, None) => Ok(()),
                (Some(a), Some(b)) if (a - b).abs() <= 1e-9 * b.abs().max(1.0) => Ok(()),
                (got, _) => Err(format!(
                    "{k} = {}, expected {v}",
                    got.map_or("none".to_string(), |g| g.to_string())
                )),
            }
        }
    }
}

fn counter(c: &Counters, name: &str) -> Option<u64> {
    Some(match name {
        "read" => c.read,
        "accepted" => c.accepted,
        "late" => c.late,
        "duplicate" => c.duplicate,
        "replaced" => c.replaced,
        "ignored" => c.ignored,
        "added" => c.added,
        "coerced" => c.coerced,
        "rejected" => c.rejected_total(),
        other => c.rejected(
            RejectReason::ALL
                .into_iter()
                .find(|r| r.as_str() == other)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn checks_with_spaces_in_labels() {
        assert_eq!(
            super::parse_checks("sum(rain, 1h)=30 late=true"),
            vec![
                ("sum(rain, 1h)".to_string(), "30".to_string()),
                ("late".to_string(), "true".to_string())
            ]
        );
    }

    #[test]
    fn globs() {
        assert!(glob("G*", "G1"));
        assert!(glob("*", "anything"));
        assert!(glob("L*x", "L12x"));
        assert!(!glob("G*", "L1"));
        assert!(glob("G1", "G1"));
    }
}
